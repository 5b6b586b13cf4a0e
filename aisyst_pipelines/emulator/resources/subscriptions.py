"""Subscriptions and subscription items."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator import billing, periods
from aisyst_pipelines.emulator.resources.customers import custom_fields, resolve_customer_payment_method
from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store, diff
from aisyst_pipelines.emulator.wire import (
    as_list,
    in_range,
    invalid,
    merge_metadata,
    missing_param,
    opt_int,
    range_filter,
    to_bool,
    to_int,
)


def _invoice_settings(update: Any, current: dict[str, Any]) -> dict[str, Any]:
    """Subscription invoice settings; its custom fields, description and footer go on every invoice it creates."""
    settings = {"account_tax_ids": None, "custom_fields": None, "description": None, "footer": None, "issuer": {"type": "self"}}
    settings.update(current)
    if isinstance(update, dict):
        if "custom_fields" in update:
            settings["custom_fields"] = custom_fields(update["custom_fields"], "invoice_settings[custom_fields]")
        for key in ("description", "footer"):
            if key in update:
                settings[key] = update[key] or None
    return settings


def _new_item(store: Store, subscription: dict[str, Any], spec: dict[str, Any], param: str, start: int, end: int) -> dict[str, Any]:
    if not spec.get("price"):
        raise missing_param(f"{param}[price]")
    price = billing.check_recurring_price(store, spec["price"], f"{param}[price]")
    quantity = to_int(spec.get("quantity", 1), f"{param}[quantity]")
    item = store.insert(
        {
            "id": store.new_id("si", 14),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": start,
            "current_period_end": end,
            "current_period_start": start,
            "discounts": [],
            "metadata": merge_metadata({}, spec.get("metadata")),
            "quantity": quantity,
            "subscription": subscription["id"],
            "_price": price["id"],
            "_tax_rates": billing.tax_rate_ids(store, spec.get("tax_rates"), f"{param}[tax_rates]"),
        }
    )
    subscription["_items"].append(item["id"])
    return item


@route("POST", "/v1/subscriptions", "SubscriptionCreateParams")
def create_subscription(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    customer = store.get_param("customer", p, "customer")
    specs = as_list(p.get("items"), "items")
    if not specs:
        raise missing_param("items")
    clock = customer["test_clock"]
    start = store.now(clock)
    prices = [billing.check_recurring_price(store, s.get("price"), f"items[{i}][price]") for i, s in enumerate(specs)]
    currencies = {price["currency"] for price in prices}
    if len(currencies) > 1:
        raise invalid("All prices on a subscription must have the same currency.", param="items")
    anchor = opt_int(p, "billing_cycle_anchor") or start
    if anchor < start:
        raise invalid("billing_cycle_anchor cannot be in the past.", param="billing_cycle_anchor")
    recurring = prices[0]["recurring"]
    first_end = anchor if anchor > start else periods.next_boundary_after(anchor, recurring["interval"], recurring["interval_count"], start)
    collection_method = p.get("collection_method") or "charge_automatically"
    days_until_due = opt_int(p, "days_until_due")
    if collection_method == "send_invoice" and days_until_due is None:
        raise missing_param("days_until_due")
    default_pm = p.get("default_payment_method")
    subscription = store.insert(
        {
            "id": store.new_id("sub"),
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": anchor,
            "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": start},
            "billing_schedules": [],
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": to_bool(p.get("cancel_at_period_end", False), "cancel_at_period_end"),
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": collection_method,
            "created": start,
            "currency": prices[0]["currency"],
            "customer": customer["id"],
            "customer_account": None,
            "days_until_due": days_until_due,
            "default_payment_method": resolve_customer_payment_method(store, customer, default_pm, "default_payment_method")
            if default_pm
            else None,
            "default_source": None,
            "description": p.get("description"),
            "discounts": [],
            "ended_at": None,
            "invoice_settings": _invoice_settings(p.get("invoice_settings"), {}),
            "latest_invoice": None,
            "livemode": False,
            "metadata": merge_metadata({}, p.get("metadata")),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None, "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": start,
            "status": "incomplete",
            "test_clock": clock,
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
            "_items": [],
            "_default_tax_rates": billing.tax_rate_ids(store, p.get("default_tax_rates"), "default_tax_rates"),
        }
    )
    for index, spec in enumerate(specs):
        _new_item(store, subscription, spec, f"items[{index}]", start, first_end)
    store.emit("customer.subscription.created", subscription, clock_id=clock)
    billing.start_subscription(store, subscription, p.get("payment_behavior") or "allow_incomplete")
    return store.answer(subscription, p)


@route("GET", "/v1/subscriptions/{subscription_exposed_id}", "SubscriptionRetrieveParams")
def retrieve_subscription(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("subscription", call.args["subscription_exposed_id"]), call.params)


@route("POST", "/v1/subscriptions/{subscription_exposed_id}", "SubscriptionUpdateParams")
def update_subscription(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    subscription = store.get("subscription", call.args["subscription_exposed_id"])
    if subscription["status"] in ("canceled", "incomplete_expired"):
        raise invalid("A canceled subscription can only update its cancellation_details and metadata.")
    before = store.render(subscription)
    if "metadata" in p:
        subscription["metadata"] = merge_metadata(subscription["metadata"], p["metadata"])
    if "description" in p:
        subscription["description"] = p["description"] or None
    if "cancel_at_period_end" in p:
        subscription["cancel_at_period_end"] = to_bool(p["cancel_at_period_end"], "cancel_at_period_end")
    if "default_tax_rates" in p:
        subscription["_default_tax_rates"] = billing.tax_rate_ids(store, p["default_tax_rates"], "default_tax_rates")
    if "default_payment_method" in p:
        customer = store.tables["customer"][subscription["customer"]]
        ref = p["default_payment_method"]
        subscription["default_payment_method"] = (
            resolve_customer_payment_method(store, customer, ref, "default_payment_method") if ref else None
        )
    if "invoice_settings" in p:
        subscription["invoice_settings"] = _invoice_settings(p["invoice_settings"], subscription["invoice_settings"])
    if "collection_method" in p:
        subscription["collection_method"] = p["collection_method"]
    if "days_until_due" in p:
        subscription["days_until_due"] = opt_int(p, "days_until_due")
    for index, spec in enumerate(as_list(p.get("items"), "items")):
        _update_item_spec(store, subscription, spec, f"items[{index}]")
    after = store.render(subscription)
    changed = diff(before, after)
    if changed:
        store.emit("customer.subscription.updated", subscription, previous_attributes=changed, clock_id=subscription["test_clock"])
    return store.answer(subscription, p)


def _update_item_spec(store: Store, subscription: dict[str, Any], spec: dict[str, Any], param: str) -> None:
    """One `items[n]` entry of an update: change an item (id), delete it, or add a new one."""
    if spec.get("id"):
        item = store.get("subscription_item", spec["id"], param=f"{param}[id]")
        if item["subscription"] != subscription["id"]:
            raise invalid(f"The subscription item {item['id']} does not belong to this subscription.", param=f"{param}[id]")
        if to_bool(spec.get("deleted", False), f"{param}[deleted]"):
            subscription["_items"].remove(item["id"])
            item["deleted"] = True
            return
        _change_item(store, item, spec, param)
        return
    current = store.tables["subscription_item"][subscription["_items"][0]] if subscription["_items"] else None
    start = current["current_period_start"] if current else store.now(subscription["test_clock"])
    end = current["current_period_end"] if current else start
    _new_item(store, subscription, spec, param, start, end)


def _change_item(store: Store, item: dict[str, Any], spec: dict[str, Any], param: str) -> None:
    """Switch price / quantity / metadata. No proration: the new price bills from the next renewal."""

    def name(key: str) -> str:
        return f"{param}[{key}]" if param else key

    if spec.get("price"):
        item["_price"] = billing.check_recurring_price(store, spec["price"], name("price"))["id"]
    if "quantity" in spec:
        item["quantity"] = to_int(spec["quantity"], name("quantity"))
    if "metadata" in spec:
        item["metadata"] = merge_metadata(item["metadata"], spec["metadata"], name("metadata"))
    if "tax_rates" in spec:
        item["_tax_rates"] = billing.tax_rate_ids(store, spec["tax_rates"], name("tax_rates"))


@route("DELETE", "/v1/subscriptions/{subscription_exposed_id}", "SubscriptionCancelParams")
def cancel(call: Call) -> dict[str, Any]:
    store = call.store
    subscription = store.get("subscription", call.args["subscription_exposed_id"])
    if subscription["status"] == "canceled":
        raise invalid(f"This subscription is already canceled: {subscription['id']}", param="subscription")
    billing.cancel_subscription(store, subscription)
    return store.answer(subscription, call.params)


SUBSCRIPTION_STATUSES = {"active", "canceled", "incomplete", "incomplete_expired", "past_due", "paused", "trialing", "unpaid"}


@route("GET", "/v1/subscriptions", "SubscriptionListParams")
def list_subscriptions(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    status = p.get("status")
    created = range_filter(p, "created")
    period_start, period_end = range_filter(p, "current_period_start"), range_filter(p, "current_period_end")
    clock, customer = p.get("test_clock"), p.get("customer")

    def status_ok(value: str) -> bool:
        if status is None:
            return value not in ("canceled", "incomplete_expired")
        if status == "all":
            return True
        if status == "ended":
            return value in ("canceled", "incomplete_expired")
        return value == status

    def wanted(sub: dict[str, Any]) -> bool:
        items = [store.tables["subscription_item"][i] for i in sub["_items"]]
        # Subscriptions on a test clock are listed only when the clock or the customer is named.
        if clock is not None and sub["test_clock"] != clock:
            return False
        if clock is None and customer is None and sub["test_clock"] is not None:
            return False
        return (
            status_ok(sub["status"])
            and (customer is None or sub["customer"] == customer)
            and (p.get("price") is None or any(i["_price"] == p["price"] for i in items))
            and in_range(sub["created"], created)
            and in_range(max((i["current_period_start"] for i in items), default=None), period_start)
            and in_range(min((i["current_period_end"] for i in items), default=None), period_end)
        )

    return store.list_table("/v1/subscriptions", "subscription", wanted, p, created=created)


# ------------------------------------------------------------------ subscription items


@route("GET", "/v1/subscription_items", "SubscriptionItemListParams")
def list_items(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    subscription = store.get("subscription", p.get("subscription"), param="subscription")
    items = [store.tables["subscription_item"][i] for i in subscription["_items"]]
    return store.list_answer("/v1/subscription_items", items, p)


@route("GET", "/v1/subscription_items/{item}", "SubscriptionItemRetrieveParams")
def retrieve_item(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("subscription_item", call.args["item"]), call.params)


@route("POST", "/v1/subscription_items/{item}", "SubscriptionItemUpdateParams")
def update_item(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    item = store.get("subscription_item", call.args["item"])
    subscription = store.tables["subscription"][item["subscription"]]
    before = store.render(subscription)
    _change_item(store, item, p, "")
    changed = diff(before, store.render(subscription))
    if changed:
        store.emit("customer.subscription.updated", subscription, previous_attributes=changed, clock_id=subscription["test_clock"])
    return store.answer(item, p)
