"""What we write onto a renewal invoice (DESIGN.md §2.4): the usage lines, their metadata, the brand fields.

Plain values in, plain values out; the Stripe wire shape is made in `resources/stripe/invoices.py`.

The period on a renewal invoice. Stripe puts the *previous* billing period on a renewal invoice
(`invoice.period_start`/`period_end`) while its licensed subscription line covers the period ahead
(reference/STRIPE.md §3.2). The usage we report is therefore the invoice's own period — the one that
just ended — as a half-open window [period_start, period_end). Lines carry that window too; Stripe's
line `period.end` is inclusive, so the resource subtracts one second at the edge.

Texts come from jinja2 templates (`templates/invoice/<locale>/`) chosen by the customer's preferred
locale, with English as the fallback. Bumping `ANNOTATION_VERSION` (whenever the lines' wording or
layout changes) makes new annotations recognisable; an invoice already carrying any version is never
annotated again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from babel.dates import format_date

from aisyst_pipelines.templates import Brand, locale_folders, pick_locale, render, template_environment

from .formatting import babel_locale
from .periods import Period
from .usage import CallTotals, PeriodUsage

ANNOTATION_VERSION = "1"
METADATA_VERSION_KEY = "aisyst_annotation_version"  # invoice metadata: which annotation is on it
LINE_KIND_KEY = "aisyst_line"  # line metadata: which of our lines this is (lets anyone count them)
LATE_FROM_KEY = "aisyst_late_minutes_from"  # invoice metadata: the earlier invoices whose late minutes it carries

# Stripe's limits for invoice custom fields (reference/STRIPE.md §3.3).
MAX_CUSTOM_FIELDS = 4
MAX_CUSTOM_FIELD_NAME = 40
MAX_CUSTOM_FIELD_VALUE = 140


class LineKind(StrEnum):
    MINUTES_USED = "minutes_used"
    MINUTES_UNUSED = "minutes_unused"
    OVERAGE = "overage"
    LATE_MINUTES = "late_minutes"


@dataclass(frozen=True)
class TierTerms:
    """What a subscription's tier promises: included minutes (None = unlimited) and, optionally, a
    price per overage minute in the smallest currency unit (None = overage is shown, not charged)."""

    tier_name: str
    included_minutes: int | None
    overage_unit_amount: int | None = None
    currency: str | None = None

    @property
    def unlimited(self) -> bool:
        return self.included_minutes is None


def period_usage(minutes_used: int, terms: TierTerms, period: Period) -> PeriodUsage:
    """The period's minutes against the tier (unused, overage and percentage are `PeriodUsage`'s)."""
    if minutes_used < 0:
        raise ValueError(f"minutes used cannot be negative: {minutes_used}")
    return PeriodUsage(period=period, included_minutes=terms.included_minutes, totals=CallTotals(billable_minutes=minutes_used))


@dataclass(frozen=True)
class InvoiceLine:
    kind: LineKind
    description: str
    amount: int  # smallest currency unit; 0 for informational lines
    period_start: datetime  # half-open [start, end), aware UTC
    period_end: datetime


# --- texts (templates) ------------------------------------------------------------------------------


def template_locale(preferred_locale: str | None) -> str:
    """The invoice template folder for a customer's preferred locale: "de-DE" → "de", "pt-BR" → "en"
    (no Portuguese templates), None → "en"."""
    return pick_locale(preferred_locale, locale_folders("invoice", "lines.txt.j2"))


@dataclass(frozen=True)
class InvoiceTexts:
    """The line texts of one locale (macros of `templates/invoice/<locale>/lines.txt.j2`)."""

    locale: str

    def _macro(self, name: str, *args: Any) -> str:
        return str(getattr(_line_macros(self.locale), name)(*args)).strip()

    def minutes_used(self, usage: PeriodUsage) -> str:
        if usage.included_minutes is None:
            return self._macro("minutes_used_unlimited", usage.minutes_used)
        return self._macro("minutes_used", usage.minutes_used, usage.included_minutes)

    def minutes_unused(self, minutes: int) -> str:
        return self._macro("minutes_unused", minutes)

    def overage(self, minutes: int, terms: TierTerms) -> str:
        if terms.overage_unit_amount:
            return self._macro("overage_priced", minutes, terms.overage_unit_amount, terms.currency or "")
        return self._macro("overage", minutes)

    def late_minutes(self, period: Period, minutes: int) -> str:
        month = format_date(period.start, "LLLL", locale=babel_locale(self.locale))
        return self._macro("late_minutes", month, minutes)

    def client_id_field(self) -> str:
        return self._macro("client_id_field")

    def tier_field(self) -> str:
        return self._macro("tier_field")


@cache
def _line_macros(locale: str) -> Any:
    """The macros of `invoice/<locale>/lines.txt.j2`, which format numbers and amounts for `locale`."""
    return template_environment().get_template(f"invoice/{locale}/lines.txt.j2").make_module({"locale": locale})


def invoice_texts(preferred_locale: str | None) -> InvoiceTexts:
    return InvoiceTexts(template_locale(preferred_locale))


# --- lines and metadata -----------------------------------------------------------------------------


def invoice_lines(terms: TierTerms, usage: PeriodUsage, texts: InvoiceTexts) -> list[InvoiceLine]:
    """The lines for one renewal invoice, in the order the customer reads them.

    Limited tier: "Voice minutes used: X of Y", then either "Unused minutes: Z" (Z may be 0) or, when
    the allowance was exceeded, "Overage: N minutes" — an overage is shown with amount 0 unless the
    tier has an overage rate. Unlimited tier: one line "Voice minutes used: X (Unlimited plan)".
    """

    def line(kind: LineKind, description: str, amount: int = 0) -> InvoiceLine:
        return InvoiceLine(kind, description, amount, usage.period.start, usage.period.end)

    lines = [line(LineKind.MINUTES_USED, texts.minutes_used(usage))]
    if terms.unlimited:
        return lines
    if usage.overage_minutes:
        amount = usage.overage_minutes * (terms.overage_unit_amount or 0)
        lines.append(line(LineKind.OVERAGE, texts.overage(usage.overage_minutes, terms), amount))
    else:
        lines.append(line(LineKind.MINUTES_UNUSED, texts.minutes_unused(usage.minutes_unused or 0)))
    return lines


@dataclass(frozen=True)
class LateMinutes:
    """Minutes of an earlier period whose CDRs arrived after its invoice was final (the audit's
    `late_cdr`), with what that invoice showed: they go onto the next draft, once."""

    from_invoice_id: str
    period: Period
    invoice_minutes: int  # on the earlier invoice's usage line
    late_minutes: int


def late_minutes_line(late: LateMinutes, terms: TierTerms, texts: InvoiceTexts, current: Period) -> InvoiceLine:
    """"Late-reported minutes from September: 12". Charged only for the overage they add to their
    own period — the minutes beyond the allowance that the earlier invoice did not already show — at
    the tier's overage rate; 0 when the tier prices no overage (or they still fit the allowance)."""
    amount = 0
    if terms.overage_unit_amount and terms.included_minutes is not None:
        before = max(0, late.invoice_minutes - terms.included_minutes)
        after = max(0, late.invoice_minutes + late.late_minutes - terms.included_minutes)
        amount = (after - before) * terms.overage_unit_amount
    return InvoiceLine(LineKind.LATE_MINUTES, texts.late_minutes(late.period, late.late_minutes), amount, current.start, current.end)


def invoice_metadata(terms: TierTerms, usage: PeriodUsage, version: str = ANNOTATION_VERSION) -> dict[str, str]:
    """The invoice metadata written with the lines. Stripe stores strings and treats "" as "unset",
    so figures that do not exist for the tier (unused minutes of an unlimited plan) are left out."""
    metadata = {
        "minutes_used": str(usage.minutes_used),
        "minutes_included": "unlimited" if usage.included_minutes is None else str(usage.included_minutes),
        "tier_name": terms.tier_name,
        METADATA_VERSION_KEY: version,
    }
    if usage.minutes_unused is not None:
        metadata["minutes_unused"] = str(usage.minutes_unused)
    if usage.overage_minutes:
        metadata["overage_minutes"] = str(usage.overage_minutes)
    if usage.usage_pct is not None:
        metadata["usage_percentage"] = f"{usage.usage_pct:.1f}"
    return metadata


def annotation_idempotency_key(invoice_id: str, version: str = ANNOTATION_VERSION) -> str:
    """One key per (invoice, annotation version): every retry and rerun of the same annotation sends
    the same key, so Stripe replays the first answer instead of adding the lines again (for 24 h; after
    that the metadata version on the invoice is what stops a second annotation)."""
    return f"aisyst-annotate-{invoice_id}-v{version}"


def annotation_version_of(metadata: dict[str, str] | None) -> str | None:
    """Our annotation version on an invoice's metadata, or None when we have not annotated it."""
    value = (metadata or {}).get(METADATA_VERSION_KEY)
    return value or None


# --- brand fields: custom fields, memo, footer --------------------------------------------------------


@dataclass(frozen=True)
class CustomField:
    name: str
    value: str


def validate_custom_fields(custom_fields: Sequence[CustomField]) -> list[CustomField]:
    """Check Stripe's limits before sending: at most 4 fields, names 1–40 and values 1–140 characters.
    A field that does not fit is an error here, not a 400 from Stripe in the middle of a sync."""
    if len(custom_fields) > MAX_CUSTOM_FIELDS:
        raise ValueError(f"{len(custom_fields)} custom fields; Stripe allows at most {MAX_CUSTOM_FIELDS}")
    for field in custom_fields:
        if not field.name.strip() or len(field.name) > MAX_CUSTOM_FIELD_NAME:
            raise ValueError(
                f"custom field name {field.name!r} must be 1–{MAX_CUSTOM_FIELD_NAME} characters (has {len(field.name)})"
            )
        if not field.value.strip() or len(field.value) > MAX_CUSTOM_FIELD_VALUE:
            raise ValueError(
                f"custom field {field.name!r}: value must be 1–{MAX_CUSTOM_FIELD_VALUE} characters (has {len(field.value)})"
            )
    return list(custom_fields)


@dataclass(frozen=True)
class InvoiceTemplate:
    """A client group's invoice texts (billing/client_groups.py); None keeps the brand file's text."""

    memo: str | None = None
    footer: str | None = None
    custom_fields: tuple[CustomField, ...] = ()
    stripe_template: str | None = None  # id of an invoice rendering template of the Stripe account (inrtem_…)


@dataclass(frozen=True)
class InvoiceBranding:
    """The invoice settings every invoice of a subscription carries: "Client ID" and "Tier" custom
    fields (then the client group's), the memo (Stripe's `description`), the footer, and the Stripe
    ids of the tax rates its client group pays (the subscription's `default_tax_rates`)."""

    locale: str
    custom_fields: tuple[CustomField, ...]
    memo: str
    footer: str
    tax_rate_ids: tuple[str, ...] = ()
    rendering_template: str | None = None  # Stripe invoice rendering template: the customer's, the invoice's


def invoice_branding(
    account_code: str | None,
    tier_name: str | None,
    preferred_locale: str | None,
    brand: Brand,
    template: InvoiceTemplate | None = None,
    tax_rate_ids: Sequence[str] = (),
) -> InvoiceBranding:
    """The brand fields for one subscription, in the customer's language. A missing account code or
    tier leaves its field out rather than empty (Stripe refuses empty values). The client group's
    `template` wins over the brand file (the guide's order: template > subscription > customer >
    account); its custom fields come after ours, and one it names like ours replaces ours."""
    texts = invoice_texts(preferred_locale)
    fields = [CustomField(texts.client_id_field(), account_code)] if account_code else []
    if tier_name:
        fields.append(CustomField(texts.tier_field(), tier_name))
    template = template or InvoiceTemplate()
    names = {field.name for field in template.custom_fields}
    fields = [field for field in fields if field.name not in names] + list(template.custom_fields)
    locale = texts.locale
    return InvoiceBranding(
        locale=locale,
        custom_fields=tuple(validate_custom_fields(fields)),
        memo=template.memo or render(f"invoice/{locale}/memo.txt.j2", brand=brand).strip(),
        footer=template.footer or render(f"invoice/{locale}/footer.txt.j2", brand=brand).strip(),
        tax_rate_ids=tuple(tax_rate_ids),
        rendering_template=template.stripe_template,
    )
