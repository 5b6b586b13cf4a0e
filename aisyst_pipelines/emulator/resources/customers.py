"""Customers, the test payment methods they pay with, and billing-portal sessions."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store, diff
from aisyst_pipelines.emulator.wire import ApiError, as_list, in_range, invalid, merge_metadata, range_filter

# Stripe's test PaymentMethod tokens: (brand, last4, every charge fails). Attaching a token
# creates a fresh `pm_…` for the customer, as Stripe does.
TEST_CARDS: dict[str, tuple[str, str, bool]] = {
    "pm_card_visa": ("visa", "4242", False),
    "pm_card_visa_debit": ("visa", "5556", False),
    "pm_card_mastercard": ("mastercard", "4444", False),
    "pm_card_amex": ("amex", "8431", False),
    # 4000 0000 0000 0341: attaches fine, every charge is declined.
    "pm_card_chargeCustomerFail": ("visa", "0341", True),
}
DECLINED_AT_ATTACH = {"pm_card_visa_chargeDeclined", "pm_card_chargeDeclined"}


def _invoice_settings(update: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = dict(current or {"custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None})
    if not isinstance(update, dict):
        return settings
    if "custom_fields" in update:
        settings["custom_fields"] = custom_fields(update["custom_fields"], "invoice_settings[custom_fields]")
    if "footer" in update:
        settings["footer"] = update["footer"] or None
    if "rendering_options" in update:
        settings["rendering_options"] = update["rendering_options"] or None
    return settings


ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def _address(value: Any, current: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A customer's address: the given fields replace the stored ones; "" clears the address."""
    if not isinstance(value, dict):
        return None
    address = dict(current or dict.fromkeys(ADDRESS_FIELDS))
    for key, given in value.items():
        if key not in ADDRESS_FIELDS:
            raise invalid(f"Received unknown parameter: address[{key}]", code="parameter_unknown", param=f"address[{key}]")
        address[key] = given or None
    return address


def custom_fields(value: Any, param: str) -> list[dict[str, str]] | None:
    """Invoice custom fields: up to 4, name ≤ 40 and value ≤ 140 characters; "" clears."""
    items = as_list(value, param)
    if not items:
        return None
    if len(items) > 4:
        raise invalid("You can only specify up to 4 custom fields.", param=param)
    fields = []
    for index, item in enumerate(items):
        name, text = item.get("name", ""), item.get("value", "")
        if not name or len(name) > 40:
            raise invalid("Custom field names must be 1 to 40 characters long.", param=f"{param}[{index}][name]")
        if not text or len(text) > 140:
            raise invalid("Custom field values must be 1 to 140 characters long.", param=f"{param}[{index}][value]")
        fields.append({"name": name, "value": text})
    return fields


def attach_payment_method(store: Store, token: str, customer: dict[str, Any], param: str) -> dict[str, Any]:
    """Attach a test token (or an existing unattached pm_…) to `customer`; returns the PaymentMethod."""
    if token in DECLINED_AT_ATTACH:
        raise ApiError(402, "Your card was declined.", type="card_error", code="card_declined", param=param)
    if token in TEST_CARDS:
        brand, last4, fails = TEST_CARDS[token]
        method = store.insert(
            {
                "id": store.new_id("pm"),
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None},
                    "email": None,
                    "name": None,
                    "phone": None,
                    "tax_id": None,
                },
                "card": {
                    "brand": brand,
                    "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                    "country": "US",
                    "display_brand": brand,
                    "exp_month": 12,
                    "exp_year": 2034,
                    "fingerprint": store.token(16),
                    "funding": "credit",
                    "last4": last4,
                    "networks": {"available": [brand], "preferred": None},
                    "wallet": None,
                },
                "created": store.now(customer.get("test_clock")),
                "customer": customer["id"],
                "livemode": False,
                "metadata": {},
                "type": "card",
                "_token": token,
                "_fails": fails,
            }
        )
    else:
        method = store.get("payment_method", token, param=param)
        if method["customer"] not in (None, customer["id"]):
            raise invalid("The payment method you provided has already been attached to a customer.", param=param)
        method["customer"] = customer["id"]
    # The customer keeps the ids of what was ever attached to it, in attach order, so that resolving a
    # default looks at its own few methods, not at every customer's (a scan that made creating 100,000
    # customers quadratic). A detached method stays listed; resolving checks it is still attached.
    attached = customer.setdefault("_payment_methods", [])
    if method["id"] not in attached:
        attached.append(method["id"])
    return method


def resolve_customer_payment_method(store: Store, customer: dict[str, Any], ref: str, param: str) -> str:
    """A pm id or test token named as a default: it must be attached to this customer."""
    methods = store.tables["payment_method"]
    for method_id in customer.get("_payment_methods", []):
        method = methods[method_id]
        if method["customer"] == customer["id"] and (method["id"] == ref or method.get("_token") == ref):
            return method["id"]
    raise invalid(
        f"No such PaymentMethod: '{ref}'; it must be attached to the customer first.",
        code="resource_missing",
        param=param,
    )


@route("POST", "/v1/customers", "CustomerCreateParams")
def create_customer(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    clock = p.get("test_clock")
    if clock:
        store.get("test_helpers.test_clock", clock, param="test_clock")
    customer = store.insert(
        {
            "id": store.new_id("cus", 14),
            "object": "customer",
            "address": _address(p.get("address")),
            "balance": 0,
            "created": store.now(clock),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": p.get("description"),
            "discount": None,
            "email": p.get("email") or None,
            "invoice_prefix": store.token(8).upper(),
            "invoice_settings": _invoice_settings(p.get("invoice_settings")),
            "livemode": False,
            "metadata": merge_metadata({}, p.get("metadata")),
            "name": p.get("name") or None,
            "next_invoice_sequence": 1,
            "phone": p.get("phone"),
            "preferred_locales": as_list(p.get("preferred_locales"), "preferred_locales"),
            "shipping": None,
            "tax_exempt": p.get("tax_exempt") or "none",
            "test_clock": clock,
        }
    )
    if p.get("payment_method"):
        attach_payment_method(store, p["payment_method"], customer, "payment_method")
    default = (p.get("invoice_settings") or {}).get("default_payment_method") if isinstance(p.get("invoice_settings"), dict) else None
    if default:
        customer["invoice_settings"]["default_payment_method"] = resolve_customer_payment_method(
            store, customer, default, "invoice_settings[default_payment_method]"
        )
    store.emit("customer.created", customer, clock_id=clock)
    return store.answer(customer, p)


@route("GET", "/v1/customers/{customer}", "CustomerRetrieveParams")
def retrieve_customer(call: Call) -> dict[str, Any]:
    customer = call.store.find("customer", call.args["customer"])
    if customer is None:
        call.store.get("customer", call.args["customer"])
    assert customer is not None
    if customer.get("deleted"):
        return {"id": customer["id"], "object": "customer", "deleted": True}
    return call.store.answer(customer, call.params)


@route("POST", "/v1/customers/{customer}", "CustomerUpdateParams")
def update_customer(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    customer = store.get("customer", call.args["customer"])
    before = store.render(customer)
    for key in ("email", "name", "description", "phone"):
        if key in p:
            customer[key] = p[key] or None
    if "metadata" in p:
        customer["metadata"] = merge_metadata(customer["metadata"], p["metadata"])
    if "preferred_locales" in p:
        customer["preferred_locales"] = as_list(p["preferred_locales"], "preferred_locales")
    if "address" in p:
        customer["address"] = _address(p["address"], customer["address"])
    if "invoice_settings" in p:
        settings = p["invoice_settings"] if isinstance(p["invoice_settings"], dict) else {}
        customer["invoice_settings"] = _invoice_settings(settings, customer["invoice_settings"])
        if "default_payment_method" in settings:
            ref = settings["default_payment_method"]
            customer["invoice_settings"]["default_payment_method"] = (
                resolve_customer_payment_method(store, customer, ref, "invoice_settings[default_payment_method]") if ref else None
            )
    if "payment_method" in p:
        raise invalid("Received unknown parameter: payment_method", code="parameter_unknown", param="payment_method")
    after = store.render(customer)
    changed = diff(before, after)
    if changed:
        store.emit("customer.updated", customer, previous_attributes=changed, clock_id=customer["test_clock"])
    return store.answer(customer, p)


@route("DELETE", "/v1/customers/{customer}", "CustomerDeleteParams")
def delete_customer(call: Call) -> dict[str, Any]:
    store = call.store
    customer = store.get("customer", call.args["customer"])
    for subscription in store.tables["subscription"].values():
        if subscription["customer"] == customer["id"] and subscription["status"] not in ("canceled", "incomplete_expired"):
            from aisyst_pipelines.emulator.billing import cancel_subscription

            cancel_subscription(store, subscription)
    customer["deleted"] = True
    store.emit("customer.deleted", customer, clock_id=customer["test_clock"])
    return {"id": customer["id"], "object": "customer", "deleted": True}


@route("GET", "/v1/customers", "CustomerListParams")
def list_customers(call: Call) -> dict[str, Any]:
    p = call.params
    created = range_filter(p, "created")
    clock = p.get("test_clock")

    def wanted(c: dict[str, Any]) -> bool:
        return (
            not c.get("deleted")
            and c["test_clock"] == clock  # customers on a clock only when that clock is asked for
            and (p.get("email") is None or c["email"] == p["email"])
            and in_range(c["created"], created)
        )

    return call.store.list_table("/v1/customers", "customer", wanted, p, created=created)


# ------------------------------------------------------------------ payment methods


@route("POST", "/v1/payment_methods/{payment_method}/attach", "PaymentMethodAttachParams")
def attach(call: Call) -> dict[str, Any]:
    store = call.store
    customer = store.get("customer", call.params.get("customer"), param="customer")
    method = attach_payment_method(store, call.args["payment_method"], customer, "payment_method")
    return store.answer(method, call.params)


@route("POST", "/v1/payment_methods/{payment_method}/detach", "PaymentMethodDetachParams")
def detach(call: Call) -> dict[str, Any]:
    method = call.store.get("payment_method", call.args["payment_method"])
    method["customer"] = None
    return call.store.answer(method, call.params)


@route("GET", "/v1/payment_methods/{payment_method}", "PaymentMethodRetrieveParams")
def retrieve_payment_method(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("payment_method", call.args["payment_method"]), call.params)


@route("GET", "/v1/customers/{customer}/payment_methods", "CustomerPaymentMethodListParams")
def list_customer_payment_methods(call: Call) -> dict[str, Any]:
    customer = call.store.get("customer", call.args["customer"])
    items = [m for m in call.store.tables["payment_method"].values() if m["customer"] == customer["id"]]
    return call.store.list_answer(f"/v1/customers/{customer['id']}/payment_methods", items, call.params)


# ------------------------------------------------------------------ billing portal


@route("POST", "/v1/billing_portal/sessions", "billing_portal.SessionCreateParams")
def create_portal_session(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    customer = store.get("customer", p.get("customer"), param="customer")
    session_id = store.new_id("bps")
    session = store.insert(
        {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": "bpc_emulator",
            "created": store.now(customer["test_clock"]),
            "customer": customer["id"],
            "customer_account": None,
            "flow": None,
            "livemode": False,
            "locale": p.get("locale"),
            "on_behalf_of": p.get("on_behalf_of"),
            "return_url": p.get("return_url"),
            "url": f"{store.base_url}/_emulator/portal/{session_id}",
        }
    )
    return store.answer(session, p)
