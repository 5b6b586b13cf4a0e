"""Invoices (list, retrieve, create, update, add_lines, lines, finalize, pay, void) and invoice items."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator import billing
from aisyst_pipelines.emulator.resources.customers import custom_fields, resolve_customer_payment_method
from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store, diff, public, renderer
from aisyst_pipelines.emulator.wire import (
    ApiError,
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



def not_editable(invoice: dict[str, Any], what: str = "modified") -> ApiError:
    return ApiError(
        400,
        f"This invoice can no longer be {what} because it is {invoice['status']}; "
        "only draft invoices can be changed (finalized invoices accept metadata and auto_advance only).",
        code="invoice_not_editable",
        param=None,
    )


def _priced_amount(store: Store, spec: dict[str, Any], param: str, currency: str) -> tuple[int, int, dict[str, Any] | None, str]:
    """(amount, quantity, price, unit_amount_decimal) of a line spec: amount, pricing[price] or price_data."""
    quantity = to_int(spec.get("quantity", 1), f"{param}[quantity]")
    if spec.get("amount") is not None:
        amount = to_int(spec["amount"], f"{param}[amount]")
        return amount, quantity, None, str(amount if quantity == 1 else amount / quantity)
    pricing = spec.get("pricing") or {}
    if pricing.get("price"):
        price = store.get("price", pricing["price"], param=f"{param}[pricing][price]")
        if price["currency"] != currency:
            raise invalid(f"The price's currency ({price['currency']}) differs from the invoice's ({currency}).", param=f"{param}[pricing][price]")
        return (price["unit_amount"] or 0) * quantity, quantity, price, price["unit_amount_decimal"] or "0"
    data = spec.get("price_data")
    if data:
        if data.get("currency") and data["currency"] != currency:
            raise invalid(f"price_data currency must be {currency}", param=f"{param}[price_data][currency]")
        if data.get("product"):
            store.get("product", data["product"], param=f"{param}[price_data][product]")
        elif not data.get("product_data"):
            raise missing_param(f"{param}[price_data][product]")
        if data.get("unit_amount") is not None:
            unit = to_int(data["unit_amount"], f"{param}[price_data][unit_amount]")
            decimal = str(unit)
        elif data.get("unit_amount_decimal") is not None:
            decimal = str(data["unit_amount_decimal"])
            unit = int(float(decimal))
        else:
            raise missing_param(f"{param}[price_data][unit_amount]")
        return unit * quantity, quantity, None, decimal
    raise invalid(
        f"You must specify either `amount`, `pricing`, or `price_data` for {param or 'the invoice item'}.",
        code="parameter_missing",
        param=f"{param}[amount]" if param else "amount",
    )


def _period(spec: dict[str, Any], param: str, default: int) -> tuple[int, int]:
    period = spec.get("period")
    if not period:
        return default, default
    start = to_int(period.get("start"), f"{param}[period][start]")
    end = to_int(period.get("end"), f"{param}[period][end]")
    if end < start:
        raise invalid("The period end must be on or after the period start.", param=f"{param}[period][end]")
    return start, end


def new_invoice_item(store: Store, customer: dict[str, Any], spec: dict[str, Any], param: str, currency: str, invoice: dict[str, Any] | None) -> dict[str, Any]:
    amount, quantity, price, decimal = _priced_amount(store, spec, param, currency)
    now = store.now(customer["test_clock"])
    if invoice is not None:
        subscription_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    else:
        subscription_id = spec.get("subscription")
    return store.insert(
        {
            "id": store.new_id("ii"),
            "object": "invoiceitem",
            "amount": amount,
            "currency": currency,
            "customer": customer["id"],
            "customer_account": None,
            "date": now,
            "description": spec.get("description"),
            "discountable": True,
            "discounts": [],
            "frozen_fields": None,
            "invoice": invoice["id"] if invoice else None,
            "invoicing_rules": None,
            "livemode": False,
            "metadata": merge_metadata({}, spec.get("metadata"), f"{param}[metadata]" if param else "metadata"),
            "net_amount": amount,
            "parent": {"subscription_details": {"subscription": subscription_id, "subscription_item": None}, "type": "subscription_details"}
            if subscription_id
            else None,
            "period": dict(zip(("start", "end"), _period(spec, param, now), strict=True)),
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]} if price else None,
                "type": "price_details",
                "unit_amount_decimal": decimal,
            },
            "proration": False,
            "proration_details": {"credited_items": None},
            "quantity": quantity,
            "quantity_decimal": str(quantity),
            "test_clock": customer["test_clock"],
            "_tax_rates": billing.tax_rate_ids(store, spec["tax_rates"], f"{param}[tax_rates]" if param else "tax_rates")
            if spec.get("tax_rates")
            else None,
        }
    )


@renderer("invoiceitem")
def render_invoice_item(store: Store, item: dict[str, Any]) -> dict[str, Any]:
    out = public(item)
    out["tax_rates"] = [store.render(store.tables["tax_rate"][t]) for t in item["_tax_rates"] or []]
    return out


# ------------------------------------------------------------------ invoices


@route("POST", "/v1/invoices", "InvoiceCreateParams")
def create_invoice(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    customer = store.get_param("customer", p, "customer")
    subscription = store.get("subscription", p["subscription"], param="subscription") if p.get("subscription") else None
    invoice = billing.new_invoice(
        store,
        customer,
        billing_reason="manual",
        currency=(p.get("currency") or (subscription or {}).get("currency") or customer.get("currency") or "usd").lower(),
        subscription=subscription,
        auto_advance=to_bool(p.get("auto_advance", False), "auto_advance"),
        collection_method=p.get("collection_method") or "charge_automatically",
        default_tax_rates=billing.tax_rate_ids(store, p.get("default_tax_rates"), "default_tax_rates"),
        description=p.get("description"),
        metadata=merge_metadata({}, p.get("metadata")),
        days_until_due=opt_int(p, "days_until_due"),
    )
    if "footer" in p:
        invoice["footer"] = p["footer"] or None
    if "custom_fields" in p:
        invoice["custom_fields"] = custom_fields(p["custom_fields"], "custom_fields")
    if p.get("pending_invoice_items_behavior") == "include":
        billing.attach_pending_items(store, invoice)
    billing.recompute(store, invoice)
    store.emit("invoice.created", invoice, clock_id=invoice["test_clock"])
    return store.answer(invoice, p)


@route("GET", "/v1/invoices/{invoice}", "InvoiceRetrieveParams")
def retrieve_invoice(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("invoice", call.args["invoice"]), call.params)


@route("GET", "/v1/invoices", "InvoiceListParams")
def list_invoices(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    created, due = range_filter(p, "created"), range_filter(p, "due_date")

    def wanted(invoice: dict[str, Any]) -> bool:
        subscription = ((invoice["parent"] or {}).get("subscription_details") or {}).get("subscription")
        return (
            not invoice.get("deleted")
            and (p.get("status") is None or invoice["status"] == p["status"])
            and (p.get("customer") is None or invoice["customer"] == p["customer"])
            and (p.get("subscription") is None or subscription == p["subscription"])
            and (p.get("collection_method") is None or invoice["collection_method"] == p["collection_method"])
            and in_range(invoice["created"], created)
            and (due == (None, None, None, None) or in_range(invoice["due_date"], due))
        )

    return store.list_table("/v1/invoices", "invoice", wanted, p, created=created)


DRAFT_ONLY_FIELDS = (
    "description",
    "footer",
    "custom_fields",
    "automatically_finalizes_at",
    "days_until_due",
    "due_date",
    "collection_method",
    "default_payment_method",
    "default_tax_rates",
)


@route("POST", "/v1/invoices/{invoice}", "InvoiceUpdateParams")
def update_invoice(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    invoice = store.get("invoice", call.args["invoice"])
    settable = {k for k in p if k != "expand"}
    if invoice["status"] != "draft":
        blocked = settable - {"metadata", "auto_advance"}
        if blocked or ("auto_advance" in p and invoice["status"] != "open"):
            raise not_editable(invoice, "updated")
    before = store.render(invoice)
    clock = invoice["test_clock"]
    now = store.now(clock)
    if "metadata" in p:
        invoice["metadata"] = merge_metadata(invoice["metadata"], p["metadata"])
    for key in ("description", "footer"):
        if key in p:
            invoice[key] = p[key] or None
    if "custom_fields" in p:
        invoice["custom_fields"] = custom_fields(p["custom_fields"], "custom_fields")
    if "collection_method" in p:
        invoice["collection_method"] = p["collection_method"]
    if "days_until_due" in p:
        days = opt_int(p, "days_until_due")
        invoice["due_date"] = invoice["created"] + days * 86400 if days else None
    if "due_date" in p:
        invoice["due_date"] = opt_int(p, "due_date")
    if "default_payment_method" in p:
        customer = store.tables["customer"][invoice["customer"]]
        ref = p["default_payment_method"]
        invoice["default_payment_method"] = resolve_customer_payment_method(store, customer, ref, "default_payment_method") if ref else None
    if "default_tax_rates" in p:
        invoice["_default_tax_rates"] = billing.tax_rate_ids(store, p["default_tax_rates"], "default_tax_rates")
        billing.recompute(store, invoice)
    if "rendering" in p:  # the invoice rendering template of this invoice (rendering[template], [template_version])
        rendering = p["rendering"] if isinstance(p["rendering"], dict) else {}
        invoice["rendering"] = {"amount_tax_display": rendering.get("amount_tax_display"), "pdf": rendering.get("pdf"),
                                "template": rendering.get("template"), "template_version": opt_int(rendering, "template_version")} if rendering else None
    if "auto_advance" in p:
        invoice["auto_advance"] = to_bool(p["auto_advance"], "auto_advance")
        if invoice["status"] == "draft":
            if not invoice["auto_advance"]:
                invoice["automatically_finalizes_at"] = None
            elif invoice["automatically_finalizes_at"] is None:
                _schedule_finalization(store, invoice, max(invoice["created"] + billing.AUTO_FINALIZE_DELAY, now))
    if "automatically_finalizes_at" in p:
        when = to_int(p["automatically_finalizes_at"], "automatically_finalizes_at")
        if when < now:
            raise invalid("automatically_finalizes_at must be in the future.", param="automatically_finalizes_at")
        if when > now + 5 * 366 * 86400:
            raise invalid("automatically_finalizes_at can be at most 5 years in the future.", param="automatically_finalizes_at")
        invoice["auto_advance"] = True
        _schedule_finalization(store, invoice, when)
    changed = diff(before, store.render(invoice))
    if changed:
        store.emit("invoice.updated", invoice, previous_attributes=changed, clock_id=clock)
    return store.answer(invoice, p)


def _schedule_finalization(store: Store, invoice: dict[str, Any], when: int) -> None:
    invoice["automatically_finalizes_at"] = when
    store.schedule(invoice["test_clock"], when, "finalize_invoice", invoice["id"])


@route("DELETE", "/v1/invoices/{invoice}", "InvoiceDeleteParams")
def delete_invoice(call: Call) -> dict[str, Any]:
    store = call.store
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] != "draft":
        raise invalid(f"You can only delete draft invoices. This invoice is {invoice['status']}; void it instead.")
    invoice["deleted"] = True
    store.emit("invoice.deleted", invoice, clock_id=invoice["test_clock"])
    return {"id": invoice["id"], "object": "invoice", "deleted": True}


@route("POST", "/v1/invoices/{invoice}/add_lines", "InvoiceAddLinesParams")
def add_lines(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] != "draft":
        raise not_editable(invoice)
    specs = as_list(p.get("lines"), "lines")
    if not specs:
        raise missing_param("lines")
    if len(invoice["_lines"]) + len(specs) > billing.MAX_INVOICE_ITEMS:
        raise invalid(f"An invoice can have at most {billing.MAX_INVOICE_ITEMS} invoice items.", param="lines")
    before = store.render(invoice)
    customer = store.tables["customer"][invoice["customer"]]
    created_items = []
    for index, spec in enumerate(specs):
        param = f"lines[{index}]"
        if spec.get("invoice_item"):
            item = store.get("invoiceitem", spec["invoice_item"], param=f"{param}[invoice_item]")
            if item["invoice"] is not None:
                raise invalid("This invoice item is already on an invoice.", param=f"{param}[invoice_item]")
            item["invoice"] = invoice["id"]
        else:
            item = new_invoice_item(store, customer, spec, param, invoice["currency"], invoice)
        if "period" not in spec and spec.get("invoice_item") is None:
            item["period"] = {"start": invoice["period_start"], "end": invoice["period_end"]}
        billing.put_item_on_invoice(store, invoice, item)
        created_items.append(item)
    if "invoice_metadata" in p:
        invoice["metadata"] = merge_metadata(invoice["metadata"], p["invoice_metadata"], "invoice_metadata")
    billing.recompute(store, invoice)
    for item in created_items:
        store.emit("invoiceitem.created", item, clock_id=invoice["test_clock"])
    store.emit("invoice.updated", invoice, previous_attributes=diff(before, store.render(invoice)), clock_id=invoice["test_clock"])
    return store.answer(invoice, p)


@route("GET", "/v1/invoices/{invoice}/lines", "InvoiceLineItemListParams")
def list_lines(call: Call) -> dict[str, Any]:
    invoice = call.store.get("invoice", call.args["invoice"])
    return call.store.list_answer(
        f"/v1/invoices/{invoice['id']}/lines", invoice["_lines"], call.params, render=public, presorted=True
    )


@route("POST", "/v1/invoices/{invoice}/finalize", "InvoiceFinalizeInvoiceParams")
def finalize_invoice(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] != "draft":
        raise invalid("This invoice is already finalized, you can't re-finalize a non-draft invoice.", code="invoice_not_editable")
    if "auto_advance" in p:
        invoice["auto_advance"] = to_bool(p["auto_advance"], "auto_advance")
    billing.finalize(store, invoice)
    return store.answer(invoice, p)


@route("POST", "/v1/invoices/{invoice}/pay", "InvoicePayParams")
def pay_invoice(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] == "draft":
        billing.finalize(store, invoice)
    if invoice["status"] == "paid":
        raise invalid("Invoice is already paid")
    if invoice["status"] == "void":
        raise invalid("This invoice has been voided and cannot be paid.")
    if to_bool(p.get("paid_out_of_band", False), "paid_out_of_band"):
        billing.mark_paid(store, invoice, out_of_band=True)
        return store.answer(invoice, p)
    method = None
    if p.get("payment_method"):
        customer = store.tables["customer"][invoice["customer"]]
        method = resolve_customer_payment_method(store, customer, p["payment_method"], "payment_method")
    if not billing.pay(store, invoice, method):
        raise ApiError(402, "Your card was declined.", type="card_error", code="card_declined")
    return store.answer(invoice, p)


@route("POST", "/v1/invoices/{invoice}/void", "InvoiceVoidInvoiceParams")
def void_invoice(call: Call) -> dict[str, Any]:
    store = call.store
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid(f"You can only void open or uncollectible invoices; this one is {invoice['status']}.")
    now = store.now(invoice["test_clock"])
    invoice.update(status="void", amount_remaining=0, auto_advance=False, next_payment_attempt=None)
    invoice["status_transitions"]["voided_at"] = now
    store.emit("invoice.voided", invoice, clock_id=invoice["test_clock"])
    return store.answer(invoice, call.params)


@route("POST", "/v1/invoices/{invoice}/mark_uncollectible", "InvoiceMarkUncollectibleParams")
def mark_uncollectible(call: Call) -> dict[str, Any]:
    store = call.store
    invoice = store.get("invoice", call.args["invoice"])
    if invoice["status"] != "open":
        raise invalid(f"You can only mark open invoices uncollectible; this one is {invoice['status']}.")
    billing.mark_uncollectible(store, invoice)
    return store.answer(invoice, call.params)


# ------------------------------------------------------------------ invoice items


@route("POST", "/v1/invoiceitems", "InvoiceItemCreateParams")
def create_invoice_item(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    customer = store.get_param("customer", p, "customer")
    invoice = store.get("invoice", p["invoice"], param="invoice") if p.get("invoice") else None
    if invoice is not None:
        if invoice["status"] != "draft":
            raise not_editable(invoice)
        if invoice["customer"] != customer["id"]:
            raise invalid("The invoice belongs to another customer.", param="invoice")
    currency = (invoice or {}).get("currency") or (p.get("currency") or "usd").lower()
    item = new_invoice_item(store, customer, p, "", currency, invoice)
    if invoice is not None:
        billing.put_item_on_invoice(store, invoice, item)
        billing.recompute(store, invoice)
    store.emit("invoiceitem.created", item, clock_id=customer["test_clock"])
    return store.answer(item, p)


@route("GET", "/v1/invoiceitems/{invoiceitem}", "InvoiceItemRetrieveParams")
def retrieve_invoice_item(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("invoiceitem", call.args["invoiceitem"]), call.params)


@route("DELETE", "/v1/invoiceitems/{invoiceitem}", "InvoiceItemDeleteParams")
def delete_invoice_item(call: Call) -> dict[str, Any]:
    store = call.store
    item = store.get("invoiceitem", call.args["invoiceitem"])
    invoice = store.tables["invoice"].get(item["invoice"] or "")
    if invoice is not None:
        if invoice["status"] != "draft":
            raise not_editable(invoice)
        invoice["_lines"] = [
            line
            for line in invoice["_lines"]
            if (line["parent"].get("invoice_item_details") or {}).get("invoice_item") != item["id"]
        ]
        billing.recompute(store, invoice)
    item["deleted"] = True
    return {"id": item["id"], "object": "invoiceitem", "deleted": True}


@route("GET", "/v1/invoiceitems", "InvoiceItemListParams")
def list_invoice_items(call: Call) -> dict[str, Any]:
    p = call.params
    pending = p.get("pending")
    pending_only = None if pending is None else to_bool(pending, "pending")
    created = range_filter(p, "created")
    items = [
        i
        for i in call.store.tables["invoiceitem"].values()
        if not i.get("deleted")
        and (p.get("customer") is None or i["customer"] == p["customer"])
        and (p.get("invoice") is None or i["invoice"] == p["invoice"])
        and (pending_only is None or (i["invoice"] is None) == pending_only)
        and in_range(i["date"], created)
    ]
    return call.store.list_answer("/v1/invoiceitems", items, p)
