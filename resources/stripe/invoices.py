"""The invoices gateway: renewal drafts for the annotation and the brand fields.

The draft_invoice_sensor pages the invoice list itself (one page per call, so a tick can stop at
its time budget and continue from its cursor); the annotation writes ONE add_lines per invoice and
reads an invoice back only when a previous attempt may have written. Stripe's answers that decide
what happens next are turned into the exceptions below.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, cast
from urllib.parse import quote_plus

import stripe
from stripe.params import (
    CustomerUpdateParams,
    InvoiceAddLinesParams,
    InvoiceAddLinesParamsLine,
    InvoiceCreatePreviewParams,
    InvoiceLineItemListParams,
    InvoiceListParams,
    InvoiceUpdateParams,
    SubscriptionUpdateParams,
    SubscriptionUpdateParamsInvoiceSettings,
)

from aisyst_pipelines.billing.invoice_lines import LINE_KIND_KEY, CustomField, InvoiceBranding, InvoiceLine
from aisyst_pipelines.billing.invoice_printout import PrintedInvoice, PrintedLine, PrintedTax
from aisyst_pipelines.billing.next_invoice import NextInvoice

from .client import PAGE_SIZE, StripeCalls
from .records import InvoicePage, ListedInvoice, StripeInvoice

InvoiceStatus = Literal["draft", "open", "paid", "uncollectible", "void"]


class InvoiceNotEditable(RuntimeError):
    """The invoice is no longer a draft: lines cannot be added any more."""

    def __init__(self, invoice_id: str, status: str | None) -> None:
        super().__init__(f"invoice {invoice_id} is not a draft ({status or 'finalized'})")
        self.invoice_id = invoice_id
        self.status = status


class InvoiceGone(RuntimeError):
    """The invoice does not exist (a deleted draft)."""


class StaleListCursor(RuntimeError):
    """The invoice a list page was to continue after no longer matches the listing (deleted)."""


class AnnotationWriteConflict(RuntimeError):
    """Stripe holds another request under this idempotency key, with other parameters."""


class InvoiceGateway:
    def __init__(self, calls: StripeCalls) -> None:
        self._calls = calls

    def list_page(
        self,
        *,
        created_gte: int | None = None,
        status: str | None = None,
        starting_after: str | None = None,
        limit: int = PAGE_SIZE,
    ) -> InvoicePage:
        """One page of `GET /v1/invoices` (newest first), with whether each invoice carries brand fields."""
        params: InvoiceListParams = {"limit": limit}
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte)}
        if status:
            params["status"] = cast(InvoiceStatus, status)  # a status name the sensor keeps in its cursor
        if starting_after:
            params["starting_after"] = starting_after
        try:
            # Plain JSON: turning 100 invoices into StripeObjects costs ~5x the HTTP round trip in CPU,
            # and the sensor only reads a few fields.
            page = self._calls.get_json("/v1/invoices", params)
        except stripe.InvalidRequestError as error:
            if starting_after and error.param == "starting_after":
                raise StaleListCursor(starting_after) from None
            raise
        invoices = [ListedInvoice(StripeInvoice.from_api(raw), branded=_carries_brand_fields(raw)) for raw in page["data"]]
        return InvoicePage(invoices=invoices, has_more=bool(page["has_more"]))

    def if_exists(self, invoice_id: str) -> StripeInvoice | None:
        """The invoice as Stripe has it now, or None when it was deleted (a deleted draft is gone)."""
        try:
            return StripeInvoice.from_api(self._calls.read(lambda c: c.v1.invoices.retrieve(invoice_id)).to_dict())
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise

    def add_annotation_lines(
        self, invoice_id: str, lines: Sequence[InvoiceLine], invoice_metadata: Mapping[str, str], idempotency_key: str
    ) -> None:
        """Our usage lines (each tagged with its kind in line metadata) and the invoice metadata in one
        `add_lines` call under the caller's idempotency key. Raises InvoiceNotEditable (finalized),
        InvoiceGone (deleted) or AnnotationWriteConflict (the key was used with other parameters)."""
        params: InvoiceAddLinesParams = {
            "lines": [_line_params(line) for line in lines],
            "invoice_metadata": dict(invoice_metadata),
        }
        with _draft_write(invoice_id):
            # The answer (the whole invoice) is not read: as plain JSON it costs the month-start burst's
            # run half the CPU of the SDK's StripeObject (1.3 against 2.7 ms a write, docs/performance.md).
            self._calls.post_json(f"/v1/invoices/{quote_plus(invoice_id)}/add_lines", params, idempotency_key=idempotency_key)

    def write_metadata(self, invoice_id: str, metadata: Mapping[str, str]) -> None:
        """Merge keys into an invoice's metadata (allowed on finalized invoices too)."""
        params: InvoiceUpdateParams = {"metadata": dict(metadata)}
        self._calls.write(lambda c, o: c.v1.invoices.update(invoice_id, params, o))

    def write_branding(self, invoice_id: str, branding: InvoiceBranding) -> None:
        """Brand fields on one draft invoice: only for a draft whose subscription was not branded yet."""
        params: InvoiceUpdateParams = {
            "custom_fields": [{"name": f.name, "value": f.value} for f in branding.custom_fields] or "",
            "description": branding.memo,
            "footer": branding.footer,
        }
        if branding.tax_rate_ids:  # the client group's tax on every line without tax rates of its own
            params["default_tax_rates"] = list(branding.tax_rate_ids)
        if branding.rendering_template:
            params["rendering"] = {"template": branding.rendering_template}
        with _draft_write(invoice_id):
            self._calls.write(lambda c, o: c.v1.invoices.update(invoice_id, params, o))

    def finalize(self, invoice_id: str) -> None:
        self._calls.write(lambda c, o: c.v1.invoices.finalize_invoice(invoice_id, {"auto_advance": True}, o))

    def set_subscription_branding(self, subscription_id: str, branding: InvoiceBranding) -> None:
        """Brand fields on the subscription's invoice settings and its client group's tax rates as its
        default_tax_rates, in one update: every invoice it creates carries them."""
        settings: SubscriptionUpdateParamsInvoiceSettings = {
            "custom_fields": [{"name": f.name, "value": f.value} for f in branding.custom_fields] or "",
            "description": branding.memo,
            "footer": branding.footer,
        }
        # The client group's tax rates in the same write: Stripe copies a subscription's
        # default_tax_rates onto each invoice it creates, where they apply to every line without rates
        # of its own (the tier fee and our usage lines alike). "" clears them when the group pays none.
        params: SubscriptionUpdateParams = {
            "invoice_settings": settings,
            "default_tax_rates": list(branding.tax_rate_ids) or "",
        }
        self._calls.write(lambda c, o: c.v1.subscriptions.update(subscription_id, params, o))

    def printable(self, invoice_id: str) -> PrintedInvoice:
        """The invoice as its customer reads it: every line (all pages), each tier fee by its product's
        name, each tax by its rate's display name and percentage."""
        raw = self._calls.read(lambda c: c.v1.invoices.retrieve(invoice_id)).to_dict()
        params: InvoiceLineItemListParams = {"limit": PAGE_SIZE}
        lines = self._calls.list_all(lambda c: c.v1.invoices.line_items.list(invoice_id, params), lambda line: line)
        rate_ids = {tax["tax_rate_details"]["tax_rate"] for tax in raw.get("total_taxes") or [] if tax.get("tax_rate_details")}
        rates = {rate_id: self._calls.read(lambda c, r=rate_id: c.v1.tax_rates.retrieve(r)).to_dict() for rate_id in rate_ids}
        product_ids = {product for line in lines if (product := _tier_product(line))}
        names = {pid: self._calls.read(lambda c, p=pid: c.v1.products.retrieve(p)).name for pid in product_ids}
        return PrintedInvoice(
            number=raw.get("number") or raw["id"],
            status=raw.get("status") or "",
            customer_name=raw.get("customer_name") or "",
            customer_email=raw.get("customer_email") or "",
            currency=raw["currency"],
            period=(_day(raw["period_start"]), _day(raw["period_end"])),
            custom_fields=tuple(CustomField(f["name"], f["value"]) for f in raw.get("custom_fields") or []),
            memo=raw.get("description"),
            footer=raw.get("footer"),
            lines=tuple(
                PrintedLine(
                    names.get(_tier_product(line) or "") or line.get("description") or "",
                    int(line.get("amount") or 0),
                    (_day(line["period"]["start"]), _day(line["period"]["end"])) if line.get("period") else None,
                )
                for line in lines
            ),
            subtotal=int(raw.get("subtotal") or 0),
            taxes=tuple(
                PrintedTax(
                    display_name=rates[tax["tax_rate_details"]["tax_rate"]]["display_name"],
                    percentage=Decimal(str(rates[tax["tax_rate_details"]["tax_rate"]]["percentage"])),
                    inclusive=tax.get("tax_behavior") == "inclusive",
                    amount=int(tax["amount"]),
                )
                for tax in raw.get("total_taxes") or []
                if tax.get("tax_rate_details")
            ),
            total=int(raw.get("total") or 0),
            amount_paid=int(raw.get("amount_paid") or 0),
            amount_remaining=int(raw.get("amount_remaining") or 0),
            due_date=_day(raw["due_date"]) if raw.get("due_date") else None,
        )

    def set_customer_rendering_template(self, customer_id: str, template_id: str) -> None:
        """The invoice rendering template every new invoice of the customer uses (subscriptions cannot
        name one: Stripe takes it from the customer's invoice settings)."""
        params: CustomerUpdateParams = {"invoice_settings": {"rendering_options": {"template": template_id}}}
        self._calls.write(lambda c, o: c.v1.customers.update(customer_id, params, o))

    def preview_next(self, subscription_id: str) -> NextInvoice | None:
        """The subscription's next renewal invoice as Stripe previews it (`create_preview`: a POST
        that creates nothing), or None when it will not renew (`invoice_upcoming_none`: canceled, or
        set to end with its period)."""
        params: InvoiceCreatePreviewParams = {"subscription": subscription_id}
        try:
            raw = self._calls.write(lambda c, o: c.v1.invoices.create_preview(params, o)).to_dict()
        except stripe.InvalidRequestError as error:
            if error.code == "invoice_upcoming_none":
                return None
            raise
        return _next_invoice(subscription_id, raw)

    def annotation_lines(self, invoice_id: str) -> list[tuple[str, str, int]]:
        """(kind, description, amount) of our lines on an invoice, all pages — to count them."""
        params: InvoiceLineItemListParams = {"limit": PAGE_SIZE}
        lines = self._calls.list_all(lambda c: c.v1.invoices.line_items.list(invoice_id, params), _annotation_line)
        return [line for line in lines if line is not None]


def _line_params(line: InvoiceLine) -> InvoiceAddLinesParamsLine:
    # Stripe's line period is inclusive at both ends; ours is [start, end).
    inclusive_end = line.period_end - timedelta(seconds=1)
    return {
        "description": line.description,
        "amount": int(line.amount),
        "period": {"start": int(line.period_start.timestamp()), "end": int(inclusive_end.timestamp())},
        "metadata": {LINE_KIND_KEY: line.kind.value},
    }


@contextmanager
def _draft_write(invoice_id: str) -> Iterator[None]:
    """Stripe's answers to a write on a draft that decide what the annotation does next."""
    try:
        yield
    except stripe.IdempotencyError:
        raise AnnotationWriteConflict(invoice_id) from None
    except stripe.InvalidRequestError as error:
        if error.http_status == 404:
            raise InvoiceGone(invoice_id) from None
        if error.code == "invoice_not_editable":
            raise InvoiceNotEditable(invoice_id, None) from None
        raise


def _next_invoice(subscription_id: str, raw: Mapping[str, Any]) -> NextInvoice:
    invoice = StripeInvoice.from_api(raw)
    assert invoice.period_start is not None and invoice.period_end is not None
    return NextInvoice(
        subscription_id=subscription_id,
        customer_id=invoice.customer_id,
        invoice_date=invoice.created,  # a preview is dated when the renewal will be created
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        amount_due=invoice.amount_due,
        total=invoice.total,
        tax=sum(int(tax.get("amount") or 0) for tax in raw.get("total_taxes") or []),
        currency=invoice.currency,
    )


def _carries_brand_fields(raw: Mapping[str, Any]) -> bool:
    return bool(raw.get("custom_fields")) and bool(raw.get("footer"))


def _tier_product(line: Mapping[str, Any]) -> str | None:
    """The product of a subscription item's line (a tier's fee); None for any other line."""
    if (line.get("parent") or {}).get("type") != "subscription_item_details":
        return None
    return ((line.get("pricing") or {}).get("price_details") or {}).get("product")


def _day(seconds: int) -> date:
    return datetime.fromtimestamp(seconds, timezone.utc).date()


def _annotation_line(raw: Mapping[str, Any]) -> tuple[str, str, int] | None:
    kind = (raw.get("metadata") or {}).get(LINE_KIND_KEY)
    return (kind, raw.get("description") or "", int(raw.get("amount") or 0)) if kind else None
