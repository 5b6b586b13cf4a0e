"""The billing engine: subscription periods, invoices and their totals, finalization, payment.

Shared by the subscription, invoice and test-clock routes. Renewals and automatic
finalizations are scheduled actions (`store.schedule`) that run when their clock reaches them:

- at a period end, `renew_subscription` opens the next period (anniversary arithmetic from the
  cycle anchor) and creates the renewal invoice as a draft: billing_reason subscription_cycle,
  invoice period = the period that ended, subscription line period = the new one,
  `automatically_finalizes_at` = created + 1 h; `invoice.created` is emitted;
- one clock-hour later `finalize_invoice` finalizes it (`invoice.finalized`) and charges the
  default payment method: `invoice.paid`, or `invoice.payment_failed` and a past_due
  subscription when the card fails every charge; then Smart Retries (`retry_payment`, dunning.py)
  until it is paid or the revenue-recovery settings end it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aisyst_pipelines.emulator import dunning, periods
from aisyst_pipelines.emulator.store import Store, action, diff, public, renderer
from aisyst_pipelines.emulator.wire import ApiError, as_list, invalid

AUTO_FINALIZE_DELAY = 3600  # Stripe keeps renewal drafts open for about an hour
LINES_EMBEDDED = 10  # an invoice embeds its first 10 lines; the rest via GET …/lines
MAX_INVOICE_ITEMS = 250


def money(amount: int, currency: str) -> str:
    return f"${amount / 100:,.2f}" if currency == "usd" else f"{amount / 100:,.2f} {currency.upper()}"


# ------------------------------------------------------------------ rendering


def render_plan(price: dict[str, Any]) -> dict[str, Any]:
    recurring = price["recurring"] or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": dict(price["metadata"]),
        "meter": recurring.get("meter"),
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type"),
    }


@renderer("subscription_item")
def render_item(store: Store, item: dict[str, Any]) -> dict[str, Any]:
    out = public(item)
    price = store.tables["price"][item["_price"]]
    out["price"] = store.render(price)
    out["plan"] = render_plan(price)
    out["tax_rates"] = [store.render(store.tables["tax_rate"][t]) for t in item["_tax_rates"]]
    return out


@renderer("subscription")
def render_subscription(store: Store, sub: dict[str, Any]) -> dict[str, Any]:
    out = public(sub)
    items = [store.tables["subscription_item"][i] for i in sub["_items"]]
    out["items"] = {
        "object": "list",
        "data": [render_item(store, i) for i in items],
        "has_more": False,
        "total_count": len(items),
        "url": f"/v1/subscription_items?subscription={sub['id']}",
    }
    out["default_tax_rates"] = [store.render(store.tables["tax_rate"][t]) for t in sub["_default_tax_rates"]]
    return out


@renderer("invoice")
def render_invoice(store: Store, invoice: dict[str, Any]) -> dict[str, Any]:
    out = public(invoice)
    lines = invoice["_lines"]
    out["lines"] = {
        "object": "list",
        "data": [public(line) for line in lines[:LINES_EMBEDDED]],
        "has_more": len(lines) > LINES_EMBEDDED,
        "total_count": len(lines),
        "url": f"/v1/invoices/{invoice['id']}/lines",
    }
    out["default_tax_rates"] = [store.render(store.tables["tax_rate"][t]) for t in invoice["_default_tax_rates"]]
    return out


# ------------------------------------------------------------------ invoices


def customer_default_payment_method(store: Store, customer_id: str) -> str | None:
    customer = store.tables["customer"].get(customer_id) or {}
    return (customer.get("invoice_settings") or {}).get("default_payment_method")


def new_invoice(
    store: Store,
    customer: dict[str, Any],
    *,
    billing_reason: str,
    currency: str,
    subscription: dict[str, Any] | None = None,
    period_start: int | None = None,
    period_end: int | None = None,
    auto_advance: bool = True,
    collection_method: str = "charge_automatically",
    default_tax_rates: list[str] | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    days_until_due: int | None = None,
) -> dict[str, Any]:
    clock = customer.get("test_clock")
    created = store.now(clock)
    # The subscription's invoice settings win over the customer's.
    customer_settings = customer.get("invoice_settings") or {}
    subscription_settings = (subscription or {}).get("invoice_settings") or {}
    settings = {
        key: subscription_settings.get(key) or customer_settings.get(key) for key in ("custom_fields", "footer")
    }
    description = subscription_settings.get("description") or description
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]),
                "subscription": subscription["id"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        }
    invoice = store.insert(
        {
            "id": store.new_id("in"),
            "object": "invoice",
            "account_country": "US",
            "account_name": "Aisyst (Stripe emulator)",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_paid_off_stripe": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": auto_advance,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
            "automatically_finalizes_at": created + AUTO_FINALIZE_DELAY if auto_advance else None,
            "billing_reason": billing_reason,
            "collection_method": collection_method,
            "confirmation_secret": None,
            "created": created,
            "currency": currency,
            "custom_fields": [dict(f) for f in settings.get("custom_fields") or []] or None,
            "customer": customer["id"],
            "customer_account": None,
            "customer_address": None,
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "customer_phone": customer.get("phone"),
            "customer_shipping": None,
            "customer_tax_exempt": customer.get("tax_exempt", "none"),
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "description": description,
            "discounts": [],
            "due_date": created + days_until_due * 86400 if days_until_due else None,
            "effective_at": None,
            "ending_balance": None,
            "footer": settings.get("footer"),
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "livemode": False,
            "metadata": dict(metadata or {}),
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": parent,
            "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
            "period_end": created if period_end is None else period_end,
            "period_start": created if period_start is None else period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": _rendering_of(customer),
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_details": None,
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": clock,
            "threshold_reason": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": created,
            "_lines": [],
            "_default_tax_rates": list(default_tax_rates or []),
        }
    )
    if auto_advance:
        store.schedule(clock, invoice["automatically_finalizes_at"], "finalize_invoice", invoice["id"])
    return invoice


def _rendering_of(customer: dict[str, Any]) -> dict[str, Any] | None:
    """A new invoice's `rendering`: the invoice rendering template (and tax display) the customer's
    `invoice_settings.rendering_options` name, as Stripe copies them."""
    options = (customer.get("invoice_settings") or {}).get("rendering_options") or {}
    if not options:
        return None
    return {"amount_tax_display": options.get("amount_tax_display"), "pdf": None,
            "template": options.get("template"), "template_version": None}


def add_line(
    store: Store,
    invoice: dict[str, Any],
    *,
    amount: int,
    description: str | None,
    period: tuple[int, int],
    quantity: int = 1,
    price: dict[str, Any] | None = None,
    unit_amount_decimal: str | None = None,
    metadata: dict[str, str] | None = None,
    tax_rates: list[str] | None = None,
    subscription_item: dict[str, Any] | None = None,
    invoice_item: str | None = None,
) -> dict[str, Any]:
    subscription_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if subscription_item is not None:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_item["subscription"],
                "subscription_item": subscription_item["id"],
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": invoice_item,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    line = {
        "id": store.new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": dict(metadata or {}),
        "parent": parent,
        "period": {"end": period[1], "start": period[0]},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]} if price else None,
            "type": "price_details",
            "unit_amount_decimal": unit_amount_decimal
            if unit_amount_decimal is not None
            else (price["unit_amount_decimal"] if price else str(amount)),
        },
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "subscription": subscription_item["subscription"] if subscription_item else subscription_id,
        "subtotal": amount,
        "taxes": [],
        "_tax_rates": tax_rates,  # None → the invoice's default tax rates apply
    }
    invoice["_lines"].append(line)
    return line


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def recompute(store: Store, invoice: dict[str, Any]) -> None:
    """Totals from the lines: subtotal, per-line taxes, total_taxes, total, amount_due."""
    subtotal = exclusive = inclusive = 0
    per_rate: dict[str, dict[str, Any]] = {}
    for line in invoice["_lines"]:
        subtotal += line["amount"]
        rates = line["_tax_rates"] if line["_tax_rates"] is not None else invoice["_default_tax_rates"]
        taxes = []
        for rate_id in rates:
            rate = store.tables["tax_rate"][rate_id]
            percent = Decimal(str(rate["percentage"])) / 100
            if rate["inclusive"]:
                tax = line["amount"] - _round(Decimal(line["amount"]) / (1 + percent))
                taxable = line["amount"] - tax
                inclusive += tax
            else:
                tax = _round(Decimal(line["amount"]) * percent)
                taxable = line["amount"]
                exclusive += tax
            behavior = "inclusive" if rate["inclusive"] else "exclusive"
            taxes.append(
                {
                    "amount": tax,
                    "tax_behavior": behavior,
                    "tax_rate_details": {"tax_rate": rate_id},
                    "taxability_reason": "standard_rated",
                    "taxable_amount": taxable,
                    "type": "tax_rate_details",
                }
            )
            total = per_rate.setdefault(
                rate_id,
                {
                    "amount": 0,
                    "tax_behavior": behavior,
                    "tax_rate_details": {"tax_rate": rate_id},
                    "taxability_reason": "standard_rated",
                    "taxable_amount": 0,
                    "type": "tax_rate_details",
                },
            )
            total["amount"] += tax
            total["taxable_amount"] += taxable
        line["taxes"] = taxes
    invoice["subtotal"] = subtotal
    invoice["subtotal_excluding_tax"] = subtotal - inclusive
    invoice["total_excluding_tax"] = subtotal - inclusive
    invoice["total_taxes"] = list(per_rate.values())
    invoice["total"] = subtotal + exclusive
    invoice["amount_due"] = max(0, invoice["total"])
    invoice["amount_remaining"] = max(0, invoice["amount_due"] - invoice["amount_paid"])


def finalize(store: Store, invoice: dict[str, Any]) -> None:
    """draft → open (a zero-amount invoice is paid at once, as Stripe does)."""
    clock = invoice["test_clock"]
    now = store.now(clock)
    recompute(store, invoice)
    customer = store.tables["customer"][invoice["customer"]]
    sequence = customer["next_invoice_sequence"]
    customer["next_invoice_sequence"] = sequence + 1
    invoice.update(
        status="open",
        number=f"{customer['invoice_prefix']}-{sequence:04d}",
        automatically_finalizes_at=None,
        hosted_invoice_url=f"{store.base_url}/_emulator/invoices/{invoice['id']}",
        invoice_pdf=f"{store.base_url}/_emulator/invoices/{invoice['id']}/pdf",
        effective_at=now,
        ending_balance=0,
    )
    invoice["status_transitions"]["finalized_at"] = now
    store.emit("invoice.finalized", invoice, clock_id=clock)
    if invoice["amount_due"] == 0:
        mark_paid(store, invoice)


def mark_paid(store: Store, invoice: dict[str, Any], *, out_of_band: bool = False) -> None:
    """open → paid; `out_of_band` records a payment made outside Stripe (amount_paid_off_stripe)."""
    clock = invoice["test_clock"]
    now = store.now(clock)
    invoice.update(status="paid", amount_remaining=0, auto_advance=False, next_payment_attempt=None)
    if out_of_band:
        invoice["amount_paid_off_stripe"] = invoice["amount_due"]
    else:
        invoice["amount_paid"] = invoice["amount_due"]
    invoice["status_transitions"]["paid_at"] = now
    store.emit("invoice.paid", invoice, clock_id=clock)
    store.emit("invoice.payment_succeeded", invoice, clock_id=clock)
    subscription = invoice_subscription(store, invoice)
    if subscription is not None and subscription["status"] in ("past_due", "unpaid", "incomplete"):
        set_subscription_status(store, subscription, "active")


def invoice_subscription(store: Store, invoice: dict[str, Any]) -> dict[str, Any] | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return store.tables["subscription"].get(details.get("subscription") or "")


def set_subscription_status(store: Store, subscription: dict[str, Any], status: str) -> None:
    if subscription["status"] == status:
        return
    previous = {"status": subscription["status"]}
    subscription["status"] = status
    store.emit("customer.subscription.updated", subscription, previous_attributes=previous, clock_id=subscription["test_clock"])
    if previous["status"] == "incomplete" and status == "active":
        schedule_renewal(store, subscription)  # its first invoice is paid: the cycle starts


def pay(store: Store, invoice: dict[str, Any], payment_method: str | None = None) -> bool:
    """Charge an open invoice; True when paid. A failing card leaves it open and the subscription
    past_due, with the next Smart Retry scheduled (or, the retries exhausted, the settings applied)."""
    clock = invoice["test_clock"]
    if invoice["amount_remaining"] == 0:
        mark_paid(store, invoice)
        return True
    subscription = invoice_subscription(store, invoice)
    method_id = (
        payment_method
        or invoice["default_payment_method"]
        or (subscription or {}).get("default_payment_method")
        or customer_default_payment_method(store, invoice["customer"])
    )
    method = store.tables["payment_method"].get(method_id or "")
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if method is not None and not method["_fails"]:
        mark_paid(store, invoice)
        return True
    invoice["next_payment_attempt"] = schedule_next_retry(store, invoice, subscription)
    store.emit("invoice.payment_failed", invoice, clock_id=clock)
    if subscription is not None and subscription["status"] == "active":
        set_subscription_status(store, subscription, "past_due")
    if invoice["next_payment_attempt"] is None and dunning.is_dunned(invoice, subscription):
        retries_exhausted(store, invoice, subscription)
    return False


def schedule_next_retry(store: Store, invoice: dict[str, Any], subscription: dict[str, Any] | None) -> int | None:
    """After a failed charge: the time of the next Smart Retry (now scheduled), or None when none is left."""
    if not dunning.is_dunned(invoice, subscription):
        return None
    now = store.now(invoice["test_clock"])
    first_failure = invoice.setdefault("_first_failed_at", now)
    upcoming = [t for t in store.revenue_recovery.retry_times(first_failure) if t > now]
    if not upcoming:
        return None
    store.schedule(invoice["test_clock"], upcoming[0], "retry_payment", invoice["id"])
    return upcoming[0]


def retries_exhausted(store: Store, invoice: dict[str, Any], subscription: dict[str, Any] | None) -> None:
    """The last retry failed: what the revenue-recovery settings say becomes of invoice and subscription."""
    settings = store.revenue_recovery
    if settings.mark_uncollectible:
        mark_uncollectible(store, invoice)
    if subscription is None or subscription["status"] not in ("active", "past_due"):
        return
    if settings.when_exhausted == "cancel":
        cancel_subscription(store, subscription, reason="payment_failed")
    elif settings.when_exhausted == "unpaid":
        set_subscription_status(store, subscription, "unpaid")


@action("retry_payment")
def retry_payment(store: Store, invoice_id: str, when: int) -> None:
    """A Smart Retry: charge the open invoice again with the payment method that is the default now."""
    invoice = store.tables["invoice"].get(invoice_id)
    if not invoice or invoice["status"] != "open" or invoice["next_payment_attempt"] != when:
        return  # paid, voided or marked uncollectible meanwhile, or a stale entry of the heap
    pay(store, invoice)


def mark_uncollectible(store: Store, invoice: dict[str, Any]) -> None:
    """open → uncollectible: no further payment attempts."""
    invoice.update(status="uncollectible", auto_advance=False, next_payment_attempt=None)
    invoice["status_transitions"]["marked_uncollectible_at"] = store.now(invoice["test_clock"])
    store.emit("invoice.marked_uncollectible", invoice, clock_id=invoice["test_clock"])


@action("finalize_invoice")
def auto_finalize(store: Store, invoice_id: str, when: int) -> None:
    invoice = store.tables["invoice"].get(invoice_id)
    if not invoice or invoice["status"] != "draft" or not invoice["auto_advance"]:
        return
    if invoice["automatically_finalizes_at"] != when:
        return  # rescheduled: a later entry of the heap owns it
    finalize(store, invoice)
    if invoice["status"] == "open" and invoice["collection_method"] == "charge_automatically":
        pay(store, invoice)


# ------------------------------------------------------------------ subscriptions


def item_interval(store: Store, item: dict[str, Any]) -> tuple[str, int]:
    recurring = store.tables["price"][item["_price"]]["recurring"]
    return recurring["interval"], recurring["interval_count"]


def subscription_line(store: Store, invoice: dict[str, Any], item: dict[str, Any], amount: int | None = None, description: str | None = None) -> None:
    price = store.tables["price"][item["_price"]]
    product = store.tables["product"].get(price["product"]) or {"name": price["product"]}
    full = (price["unit_amount"] or 0) * item["quantity"]
    interval = (price["recurring"] or {}).get("interval", "month")
    add_line(
        store,
        invoice,
        amount=full if amount is None else amount,
        description=description
        or f"{item['quantity']} × {product['name']} (at {money(price['unit_amount'] or 0, price['currency'])} / {interval})",
        period=(item["current_period_start"], item["current_period_end"]),
        quantity=item["quantity"],
        price=price,
        metadata=item["metadata"],
        tax_rates=item["_tax_rates"] or None,
        subscription_item=item,
    )


def put_item_on_invoice(store: Store, invoice: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """The line of an invoice item on `invoice` (Stripe allows at most 250 items per invoice)."""
    if len(invoice["_lines"]) >= MAX_INVOICE_ITEMS:
        raise invalid(f"An invoice can have at most {MAX_INVOICE_ITEMS} invoice items.", param="invoice")
    item["invoice"] = invoice["id"]
    line = add_line(
        store,
        invoice,
        amount=item["amount"],
        description=item["description"],
        period=(item["period"]["start"], item["period"]["end"]),
        quantity=item["quantity"],
        metadata=item["metadata"],
        tax_rates=item["_tax_rates"],
        invoice_item=item["id"],
    )
    line["pricing"] = dict(item["pricing"])
    return line


def attach_pending_items(store: Store, invoice: dict[str, Any], *, preview: bool = False) -> None:
    """Pending invoice items of the customer go on its next subscription invoice (`preview`: shown on
    it, but left pending)."""
    for item in list(store.tables["invoiceitem"].values()):
        if item["customer"] == invoice["customer"] and item["invoice"] is None and not item.get("deleted"):
            put_item_on_invoice(store, invoice, dict(item) if preview else item)


def tax_rate_ids(store: Store, value: Any, param: str) -> list[str]:
    """The ids of the tax rates named in an array parameter (each must exist)."""
    return [store.get("tax_rate", t, param=f"{param}[{n}]")["id"] for n, t in enumerate(as_list(value, param))]


def schedule_renewal(store: Store, subscription: dict[str, Any]) -> None:
    ends = [store.tables["subscription_item"][i]["current_period_end"] for i in subscription["_items"]]
    if ends:
        store.schedule(subscription["test_clock"], min(ends), "renew_subscription", subscription["id"])


@action("renew_subscription")
def renew_subscription(store: Store, subscription_id: str, when: int) -> None:
    subscription = store.tables["subscription"].get(subscription_id)
    if not subscription or subscription["status"] not in ("active", "past_due", "trialing"):
        return
    items = [store.tables["subscription_item"][i] for i in subscription["_items"]]
    due = [i for i in items if i["current_period_end"] == when]
    if not due or min(i["current_period_end"] for i in items) != when:
        return  # stale heap entry (the period changed since it was scheduled)
    if subscription["cancel_at_period_end"]:
        cancel_subscription(store, subscription)
        return
    before = store.render(subscription)
    ended_start = min(i["current_period_start"] for i in due)
    for item in due:
        item["current_period_start"], item["current_period_end"] = next_period(store, subscription, item, when)
    invoice = renewal_invoice(store, subscription, due, period_start=ended_start, period_end=when)
    subscription["latest_invoice"] = invoice["id"]
    store.emit("invoice.created", invoice, clock_id=subscription["test_clock"])
    store.emit(
        "customer.subscription.updated",
        subscription,
        previous_attributes=diff(before, store.render(subscription)),
        clock_id=subscription["test_clock"],
    )
    schedule_renewal(store, subscription)


def next_period(store: Store, subscription: dict[str, Any], item: dict[str, Any], when: int) -> tuple[int, int]:
    """The period an item renews into at `when` (anniversary arithmetic from the cycle anchor)."""
    interval, count = item_interval(store, item)
    return when, periods.next_boundary_after(subscription["billing_cycle_anchor"], interval, count, when)


def renewal_invoice(
    store: Store,
    subscription: dict[str, Any],
    due: list[dict[str, Any]],
    *,
    period_start: int,
    period_end: int,
    preview: bool = False,
) -> dict[str, Any]:
    """The renewal invoice of the `due` items (their periods already the new ones), dated now: one
    line per item, the customer's pending invoice items, taxes and totals.

    `preview`: the same invoice for `POST /v1/invoices/create_preview` — nothing is scheduled or
    attached; the caller takes it out of the store."""
    customer = store.tables["customer"][subscription["customer"]]
    invoice = new_invoice(
        store,
        customer,
        billing_reason="subscription_cycle",
        currency=subscription["currency"],
        subscription=subscription,
        period_start=period_start,
        period_end=period_end,
        auto_advance=not preview,
        collection_method=subscription["collection_method"],
        default_tax_rates=subscription["_default_tax_rates"],
        days_until_due=subscription["days_until_due"],
    )
    for item in due:
        subscription_line(store, invoice, item)
    attach_pending_items(store, invoice, preview=preview)
    recompute(store, invoice)
    return invoice


def preview_renewal(store: Store, subscription: dict[str, Any]) -> dict[str, Any]:
    """The subscription's next renewal invoice as it would be created at its period end, built by
    `renewal_invoice` (so lines, pending items and taxes are the renewal's own), rendered with the
    preview id Stripe gives it (`upcoming_in_…`) and the time payment will be attempted."""
    items = [store.tables["subscription_item"][i] for i in subscription["_items"]]
    when = min(i["current_period_end"] for i in items)
    due = []
    for item in items:
        if item["current_period_end"] == when:
            start, end = next_period(store, subscription, item, when)
            due.append(dict(item, current_period_start=start, current_period_end=end))
    period_start = min(i["current_period_start"] for i in items if i["current_period_end"] == when)
    with store.at(subscription["test_clock"], when):
        invoice = renewal_invoice(store, subscription, due, period_start=period_start, period_end=when, preview=True)
    del store.tables["invoice"][invoice["id"]]
    rendered = store.render(invoice)
    rendered["id"] = f"upcoming_{invoice['id']}"
    if invoice["collection_method"] == "charge_automatically":
        rendered.update(auto_advance=True, automatically_finalizes_at=None, next_payment_attempt=when + AUTO_FINALIZE_DELAY)
    for line in rendered["lines"]["data"]:
        line["invoice"] = rendered["id"]
    return rendered


def cancel_subscription(store: Store, subscription: dict[str, Any], *, reason: str = "cancellation_requested") -> None:
    """Cancel now; `reason` as Stripe records it (`payment_failed` when the retries ran out)."""
    now = store.now(subscription["test_clock"])
    subscription.update(status="canceled", canceled_at=now, ended_at=now, cancel_at_period_end=False)
    subscription["cancellation_details"] = dict(subscription["cancellation_details"], reason=reason)
    store.emit("customer.subscription.deleted", subscription, clock_id=subscription["test_clock"])


def start_subscription(store: Store, subscription: dict[str, Any], payment_behavior: str) -> None:
    """The first invoice: created, finalized and charged at once (charge_automatically).

    The subscription starts `incomplete`; a successful charge makes it `active`
    (customer.subscription.updated), a failed one leaves it `incomplete` as Stripe's default
    payment_behavior=allow_incomplete does.
    """
    customer = store.tables["customer"][subscription["customer"]]
    start = subscription["start_date"]
    invoice = new_invoice(
        store,
        customer,
        billing_reason="subscription_create",
        currency=subscription["currency"],
        subscription=subscription,
        period_start=start,
        period_end=start,
        auto_advance=subscription["collection_method"] == "send_invoice",
        collection_method=subscription["collection_method"],
        default_tax_rates=subscription["_default_tax_rates"],
        days_until_due=subscription["days_until_due"],
    )
    anchor = subscription["billing_cycle_anchor"]
    for item_id in subscription["_items"]:
        item = store.tables["subscription_item"][item_id]
        if anchor > start:  # first period runs to the anchor: prorated
            price = store.tables["price"][item["_price"]]
            interval, count = item_interval(store, item)
            full_start = periods.boundary(anchor, interval, count, -1)
            share = Decimal(anchor - start) / Decimal(anchor - full_start)
            amount = _round(Decimal((price["unit_amount"] or 0) * item["quantity"]) * share)
            product = store.tables["product"].get(price["product"]) or {"name": price["product"]}
            subscription_line(
                store, invoice, item, amount, f"Remaining time on {item['quantity']} × {product['name']} after {periods.iso(start)}"
            )
        else:
            subscription_line(store, invoice, item)
    recompute(store, invoice)
    subscription["latest_invoice"] = invoice["id"]
    store.emit("invoice.created", invoice, clock_id=subscription["test_clock"])
    if subscription["collection_method"] == "send_invoice":
        set_subscription_status(store, subscription, "active")
        return
    finalize(store, invoice)  # a zero-amount invoice is paid here, which activates the subscription
    if invoice["status"] == "paid" or payment_behavior == "default_incomplete":
        return
    if not pay(store, invoice) and payment_behavior == "error_if_incomplete":
        raise ApiError(402, "Your card was declined.", type="card_error", code="card_declined")


def check_recurring_price(store: Store, price_id: Any, param: str) -> dict[str, Any]:
    price = store.get("price", price_id, param=param)
    if price["type"] != "recurring":
        raise invalid(
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            param=param,
        )
    if not price["active"]:
        raise invalid("The price specified is inactive. This field only accepts active prices.", param=param)
    return price
