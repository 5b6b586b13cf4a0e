"""Products, prices (recurring, lookup keys) and tax rates."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store
from aisyst_pipelines.emulator.wire import (
    ApiError,
    as_list,
    in_range,
    invalid,
    merge_metadata,
    opt_bool,
    opt_int,
    range_filter,
    req,
    req_str,
    to_bool,
    to_int,
)

# ------------------------------------------------------------------ products


def new_product(store: Store, params: dict[str, Any], product_id: str | None = None) -> dict[str, Any]:
    now = store.real_now()
    product_id = product_id or store.new_id("prod", 14)
    if store.find("product", product_id):
        raise ApiError(400, f"Product already exists: '{product_id}'", code="resource_already_exists", param="id")
    return store.insert(
        {
            "id": product_id,
            "object": "product",
            "active": to_bool(params.get("active", True), "active"),
            "created": now,
            "default_price": None,
            "description": params.get("description") or None,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": merge_metadata({}, params.get("metadata")),
            "name": req_str(params, "name"),
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "tax_code": params.get("tax_code"),
            "type": "service",
            "unit_label": params.get("unit_label"),
            "updated": now,
            "url": params.get("url"),
        }
    )


@route("POST", "/v1/products", "ProductCreateParams")
def create_product(call: Call) -> dict[str, Any]:
    product = new_product(call.store, call.params, call.params.get("id"))
    call.store.emit("product.created", product)
    return call.store.answer(product, call.params)


@route("GET", "/v1/products/{id}", "ProductRetrieveParams")
def retrieve_product(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("product", call.args["id"]), call.params)


@route("POST", "/v1/products/{id}", "ProductUpdateParams")
def update_product(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    product = store.get("product", call.args["id"])
    for key in ("name", "description", "statement_descriptor", "unit_label", "url"):
        if key in p:
            product[key] = p[key] or None
    if "active" in p:
        product["active"] = to_bool(p["active"], "active")
    if "metadata" in p:
        product["metadata"] = merge_metadata(product["metadata"], p["metadata"])
    if "default_price" in p:
        product["default_price"] = store.get("price", p["default_price"], param="default_price")["id"] if p["default_price"] else None
    product["updated"] = store.real_now()
    store.emit("product.updated", product)
    return store.answer(product, p)


@route("DELETE", "/v1/products/{id}", "ProductDeleteParams")
def delete_product(call: Call) -> dict[str, Any]:
    product = call.store.get("product", call.args["id"])
    if any(price["product"] == product["id"] for price in call.store.tables["price"].values()):
        raise invalid("This product cannot be deleted because it has one or more user-created prices.")
    product["deleted"] = True
    return {"id": product["id"], "object": "product", "deleted": True}


@route("GET", "/v1/products", "ProductListParams")
def list_products(call: Call) -> dict[str, Any]:
    p = call.params
    active = opt_bool(p, "active")
    ids = set(as_list(p.get("ids"), "ids"))
    created = range_filter(p, "created")
    items = [
        x
        for x in call.store.tables["product"].values()
        if not x.get("deleted")
        and (active is None or x["active"] == active)
        and (not ids or x["id"] in ids)
        and in_range(x["created"], created)
    ]
    return call.store.list_answer("/v1/products", items, p)


# ------------------------------------------------------------------ prices


def _recurring(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    interval = value.get("interval")
    if interval not in ("day", "week", "month", "year"):
        raise invalid("Invalid recurring[interval]: must be one of day, month, week, or year", param="recurring[interval]")
    usage_type = value.get("usage_type") or ("metered" if value.get("meter") else "licensed")
    return {
        "interval": interval,
        "interval_count": to_int(value.get("interval_count", 1), "recurring[interval_count]"),
        "meter": value.get("meter"),
        "trial_period_days": opt_int(value, "trial_period_days", "recurring[trial_period_days]"),
        "usage_type": usage_type,
    }


def _take_lookup_key(store: Store, lookup_key: str, transfer: bool, param: str = "lookup_key") -> None:
    holder = next((x for x in store.tables["price"].values() if x["lookup_key"] == lookup_key), None)
    if holder is None:
        return
    if not transfer:
        raise invalid(
            f"A price (`{holder['id']}`) already uses that lookup key.", code="resource_already_exists", param=param
        )
    holder["lookup_key"] = None


def new_price(store: Store, p: dict[str, Any], *, product_id: str | None = None) -> dict[str, Any]:
    if product_id is None:
        if p.get("product_data"):
            product_id = new_product(store, p["product_data"])["id"]
        else:
            product_id = store.get("product", req_str(p, "product"), param="product")["id"]
    unit_amount = opt_int(p, "unit_amount")
    decimal = p.get("unit_amount_decimal")
    if unit_amount is None and decimal is not None:
        unit_amount = int(float(decimal))
    if unit_amount is not None and unit_amount < 0:
        raise invalid("This value must be greater than or equal to 0.", param="unit_amount")
    lookup_key = p.get("lookup_key") or None
    if lookup_key:
        _take_lookup_key(store, lookup_key, to_bool(p.get("transfer_lookup_key", False), "transfer_lookup_key"))
    recurring = _recurring(p.get("recurring"))
    return store.insert(
        {
            "id": store.new_id("price"),
            "object": "price",
            "active": to_bool(p.get("active", True), "active"),
            "billing_scheme": p.get("billing_scheme") or "per_unit",
            "created": store.real_now(),
            "currency": req_str(p, "currency").lower(),
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": lookup_key,
            "metadata": merge_metadata({}, p.get("metadata")),
            "nickname": p.get("nickname") or None,
            "product": product_id,
            "recurring": recurring,
            "tax_behavior": p.get("tax_behavior") or "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": None if unit_amount is None else str(decimal if decimal is not None else unit_amount),
        }
    )


@route("POST", "/v1/prices", "PriceCreateParams")
def create_price(call: Call) -> dict[str, Any]:
    price = new_price(call.store, call.params)
    call.store.emit("price.created", price)
    return call.store.answer(price, call.params)


@route("GET", "/v1/prices/{price}", "PriceRetrieveParams")
def retrieve_price(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("price", call.args["price"]), call.params)


@route("POST", "/v1/prices/{price}", "PriceUpdateParams")
def update_price(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    price = store.get("price", call.args["price"])
    if "active" in p:
        price["active"] = to_bool(p["active"], "active")
    if "nickname" in p:
        price["nickname"] = p["nickname"] or None
    if "metadata" in p:
        price["metadata"] = merge_metadata(price["metadata"], p["metadata"])
    if "tax_behavior" in p:
        price["tax_behavior"] = p["tax_behavior"]
    if "lookup_key" in p:
        new_key = p["lookup_key"] or None
        if new_key and new_key != price["lookup_key"]:
            _take_lookup_key(store, new_key, to_bool(p.get("transfer_lookup_key", False), "transfer_lookup_key"))
        price["lookup_key"] = new_key
    store.emit("price.updated", price)
    return store.answer(price, p)


@route("GET", "/v1/prices", "PriceListParams")
def list_prices(call: Call) -> dict[str, Any]:
    p = call.params
    active = opt_bool(p, "active")
    lookup_keys = set(as_list(p.get("lookup_keys"), "lookup_keys"))
    recurring = asked if isinstance(asked := p.get("recurring"), dict) else {}
    created = range_filter(p, "created")

    def wanted(price: dict[str, Any]) -> bool:
        rec = price["recurring"] or {}
        return (
            (active is None or price["active"] == active)
            and (not lookup_keys or price["lookup_key"] in lookup_keys)
            and (p.get("product") is None or price["product"] == p["product"])
            and (p.get("currency") is None or price["currency"] == p["currency"])
            and (p.get("type") is None or price["type"] == p["type"])
            and all(rec.get(k) == v for k, v in recurring.items())
            and in_range(price["created"], created)
        )

    return call.store.list_table("/v1/prices", "price", wanted, p, created=created)


# ------------------------------------------------------------------ tax rates


@route("POST", "/v1/tax_rates", "TaxRateCreateParams")
def create_tax_rate(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    percentage = float(req_str(p, "percentage"))
    rate = store.insert(
        {
            "id": store.new_id("txr"),
            "object": "tax_rate",
            "active": to_bool(p.get("active", True), "active"),
            "country": p.get("country"),
            "created": store.real_now(),
            "description": p.get("description"),
            "display_name": req_str(p, "display_name"),
            "effective_percentage": percentage,
            "flat_amount": None,
            "inclusive": to_bool(req(p, "inclusive"), "inclusive"),
            "jurisdiction": p.get("jurisdiction"),
            "jurisdiction_level": None,
            "livemode": False,
            "metadata": merge_metadata({}, p.get("metadata")),
            "percentage": percentage,
            "rate_type": "percentage",
            "state": p.get("state"),
            "tax_type": p.get("tax_type"),
        }
    )
    return store.answer(rate, p)


@route("GET", "/v1/tax_rates/{tax_rate}", "TaxRateRetrieveParams")
def retrieve_tax_rate(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("tax_rate", call.args["tax_rate"]), call.params)


@route("POST", "/v1/tax_rates/{tax_rate}", "TaxRateUpdateParams")
def update_tax_rate(call: Call) -> dict[str, Any]:
    rate = call.store.get("tax_rate", call.args["tax_rate"])
    p = call.params
    for key in ("description", "display_name", "jurisdiction", "country", "state", "tax_type"):
        if key in p:
            rate[key] = p[key] or None
    if "active" in p:
        rate["active"] = to_bool(p["active"], "active")
    if "metadata" in p:
        rate["metadata"] = merge_metadata(rate["metadata"], p["metadata"])
    return call.store.answer(rate, p)


@route("GET", "/v1/tax_rates", "TaxRateListParams")
def list_tax_rates(call: Call) -> dict[str, Any]:
    p = call.params
    active, inclusive = opt_bool(p, "active"), opt_bool(p, "inclusive")
    created = range_filter(p, "created")
    items = [
        r
        for r in call.store.tables["tax_rate"].values()
        if (active is None or r["active"] == active)
        and (inclusive is None or r["inclusive"] == inclusive)
        and in_range(r["created"], created)
    ]
    return call.store.list_answer("/v1/tax_rates", items, p)
