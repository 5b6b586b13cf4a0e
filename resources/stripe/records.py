"""Plain, typed values that the Stripe gateways return instead of StripeObjects.

The pipelines never see a StripeObject: each gateway method turns Stripe's JSON (as the
pinned API version shapes it, see reference/STRIPE.md §1.2 and §12) into one of these frozen
dataclasses. Stripe times (Unix seconds) become aware UTC datetimes here, at the edge; amounts stay
integers in the currency's smallest unit. The `from_api` constructors take the plain dict of the
object (`StripeObject.to_dict()`), so they hold no SDK dependency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal


def utc_from_unix(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(int(seconds), timezone.utc)


def _metadata(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in (raw.get("metadata") or {}).items()}


def _id_of(value: Any) -> str | None:
    """An expandable field: either the id or the expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value


@dataclass(frozen=True)
class StripeCustomer:
    id: str
    account_code: str | None  # metadata.aisyst_account_code: Aisyst's client account
    name: str | None
    email: str | None
    preferred_locale: str | None
    test_clock: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    country: str | None = None  # address.country (ISO 3166-1 alpha-2): picks the client group

    ACCOUNT_CODE_KEY = "aisyst_account_code"

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "StripeCustomer":
        metadata = _metadata(raw)
        locales = raw.get("preferred_locales") or []
        account_code = (metadata.get(cls.ACCOUNT_CODE_KEY) or "").strip() or None
        return cls(
            id=raw["id"],
            account_code=account_code,
            name=raw.get("name"),
            email=raw.get("email"),
            preferred_locale=locales[0] if locales else None,
            test_clock=_id_of(raw.get("test_clock")),
            metadata=metadata,
            country=((raw.get("address") or {}).get("country") or "").strip().upper() or None,
        )


@dataclass(frozen=True)
class StripeProduct:
    id: str
    name: str
    active: bool
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "StripeProduct":
        return cls(id=raw["id"], name=raw.get("name") or "", active=bool(raw.get("active", True)), metadata=_metadata(raw))


@dataclass(frozen=True)
class StripePrice:
    id: str
    product_id: str | None
    lookup_key: str | None
    nickname: str | None
    unit_amount: int | None
    currency: str
    interval: str | None  # recurring.interval; None for one-time prices
    interval_count: int | None
    active: bool
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "StripePrice":
        recurring = raw.get("recurring") or {}
        return cls(
            id=raw["id"],
            product_id=_id_of(raw.get("product")),
            lookup_key=raw.get("lookup_key"),
            nickname=raw.get("nickname"),
            unit_amount=raw.get("unit_amount"),
            currency=raw.get("currency") or "",
            interval=recurring.get("interval"),
            interval_count=recurring.get("interval_count"),
            active=bool(raw.get("active", True)),
            metadata=_metadata(raw),
        )


@dataclass(frozen=True)
class StripeSubscriptionItem:
    id: str
    price: StripePrice
    product: StripeProduct | None  # joined from the product listing; None if the product is gone
    quantity: int | None
    current_period_start: datetime  # Stripe keeps the period on the item since 2025-03-31.basil
    current_period_end: datetime  # exclusive, as in our tables

    @classmethod
    def from_api(cls, raw: Mapping[str, Any], products: Mapping[str, StripeProduct]) -> "StripeSubscriptionItem":
        price = StripePrice.from_api(raw["price"])
        expanded = raw["price"].get("product")
        product = products.get(price.product_id or "")
        if product is None and isinstance(expanded, Mapping):
            product = StripeProduct.from_api(expanded)
        start, end = utc_from_unix(raw["current_period_start"]), utc_from_unix(raw["current_period_end"])
        assert start is not None and end is not None
        return cls(
            id=raw["id"],
            price=price,
            product=product,
            quantity=raw.get("quantity"),
            current_period_start=start,
            current_period_end=end,
        )


@dataclass(frozen=True)
class StripeSubscription:
    id: str
    customer_id: str
    status: str
    items: tuple[StripeSubscriptionItem, ...]
    billing_cycle_anchor: datetime | None
    start_date: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    test_clock: str | None
    default_tax_rates: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(
        cls, raw: Mapping[str, Any], items: Sequence[Mapping[str, Any]], products: Mapping[str, StripeProduct]
    ) -> "StripeSubscription":
        return cls(
            id=raw["id"],
            customer_id=_id_of(raw["customer"]) or "",
            status=raw["status"],
            items=tuple(StripeSubscriptionItem.from_api(item, products) for item in items),
            billing_cycle_anchor=utc_from_unix(raw.get("billing_cycle_anchor")),
            start_date=utc_from_unix(raw.get("start_date")),
            cancel_at_period_end=bool(raw.get("cancel_at_period_end")),
            canceled_at=utc_from_unix(raw.get("canceled_at")),
            ended_at=utc_from_unix(raw.get("ended_at")),
            test_clock=_id_of(raw.get("test_clock")),
            default_tax_rates=tuple(_id_of(rate) or "" for rate in raw.get("default_tax_rates") or ()),
            metadata=_metadata(raw),
        )

    def recurring_item(self) -> StripeSubscriptionItem | None:
        """The item that carries the tier: the first licensed recurring price (the flat fee)."""
        recurring = [item for item in self.items if item.price.interval]
        return (recurring or list(self.items) or [None])[0]


@dataclass(frozen=True)
class StripeMeter:
    id: str
    event_name: str
    display_name: str
    status: str  # active | inactive

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "StripeMeter":
        return cls(id=raw["id"], event_name=raw["event_name"], display_name=raw.get("display_name") or "", status=raw.get("status") or "active")


@dataclass(frozen=True)
class MeterUsage:
    """One meter event summary: the meter's aggregate for a customer over [start, end)."""

    start: datetime
    end: datetime
    minutes: int  # Stripe sends a float; our meter sums whole minutes

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "MeterUsage":
        start, end = utc_from_unix(raw["start_time"]), utc_from_unix(raw["end_time"])
        assert start is not None and end is not None
        return cls(start=start, end=end, minutes=int(round(float(raw.get("aggregated_value") or 0))))


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    customer_id: str
    subscription_id: str | None  # invoice.parent.subscription_details.subscription (not invoice.subscription)
    status: str | None  # draft, open, paid, uncollectible, void
    billing_reason: str | None
    currency: str
    amount_due: int
    amount_paid: int
    total: int
    period_start: datetime | None  # for a renewal: the period that just ended
    period_end: datetime | None
    created: datetime
    automatically_finalizes_at: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    number: str | None
    test_clock: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "StripeInvoice":
        parent = raw.get("parent") or {}
        details = parent.get("subscription_details") or {}
        created = utc_from_unix(raw["created"])
        assert created is not None
        return cls(
            id=raw["id"],
            customer_id=_id_of(raw.get("customer")) or "",
            subscription_id=_id_of(details.get("subscription")),
            status=raw.get("status"),
            billing_reason=raw.get("billing_reason"),
            currency=raw.get("currency") or "",
            amount_due=int(raw.get("amount_due") or 0),
            amount_paid=int(raw.get("amount_paid") or 0),
            total=int(raw.get("total") or 0),
            period_start=utc_from_unix(raw.get("period_start")),
            period_end=utc_from_unix(raw.get("period_end")),
            created=created,
            automatically_finalizes_at=utc_from_unix(raw.get("automatically_finalizes_at")),
            hosted_invoice_url=raw.get("hosted_invoice_url"),
            invoice_pdf=raw.get("invoice_pdf"),
            number=raw.get("number"),
            test_clock=_id_of(raw.get("test_clock")),
            metadata=_metadata(raw),
        )


@dataclass(frozen=True)
class CatalogEntry:
    """One object `aisyst bootstrap-stripe` ensured: its id and whether this run created it."""

    kind: str  # product, price, meter, tax_rate
    id: str
    created: bool
    label: str


@dataclass(frozen=True)
class CatalogIds:
    """The outcome of a bootstrap: per tier (in file order) its product and price, the meter, the tax rates."""

    products: tuple[CatalogEntry, ...]
    prices: tuple[CatalogEntry, ...]
    meter: CatalogEntry
    tax_rates: tuple[CatalogEntry, ...] = ()

    @property
    def entries(self) -> tuple[CatalogEntry, ...]:
        return self.products + self.prices + (self.meter,) + self.tax_rates

    @property
    def created_count(self) -> int:
        return sum(entry.created for entry in self.entries)

    def env_lines(self) -> list[str]:
        """The environment lines of the original integration guide."""
        lines = [f"STRIPE_TIER{number}_PRICE_ID={price.id}" for number, price in enumerate(self.prices, start=1)]
        lines.append(f"STRIPE_VOICE_METER_ID={self.meter.id}")
        if self.tax_rates:  # the guide knows one tax rate: the file's first
            lines.append(f"STRIPE_TAX_RATE_ID={self.tax_rates[0].id}")
        return lines


@dataclass(frozen=True)
class ListedInvoice:
    invoice: StripeInvoice
    branded: bool  # carries custom fields and a footer (from the subscription's invoice settings)

    @property
    def id(self) -> str:
        return self.invoice.id


@dataclass(frozen=True)
class InvoicePage:
    invoices: list[ListedInvoice]
    has_more: bool


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]  # newest first, each the event's JSON as Stripe sends it
    has_more: bool


@dataclass(frozen=True)
class CorrectionSend:
    """What became of one corrective meter event: sent, already_received, rejected or uncertain."""

    outcome: Literal["sent", "already_received", "rejected", "uncertain"]
    message: str | None

    @property
    def counted(self) -> bool:
        """Stripe has the event (now or from an earlier attempt)."""
        return self.outcome in ("sent", "already_received")
