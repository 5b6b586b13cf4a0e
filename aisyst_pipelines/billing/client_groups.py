"""Client groups: which customers pay which tax rate and read which invoice template (issue 15).

The integration guide keeps "invoice rendering templates" per client group — "Australia Clients"
(footer "ABN: 12 345 678 901", memo "GST included", custom field Region=APAC, GST 10 %), "US
Clients" (footer "Terms: Net 30", memo "Thank you!", Region=US). They live in ONE file beside
tiers.json, `client_groups.json` (or the file named by AISYST_CLIENT_GROUPS_FILE): each group names
the countries of its customers (the ISO 3166-1 code of the Stripe customer's `address.country`), the
key of its tax rate in the tiers file (or none) and its invoice template. A customer whose country no
group names — or who has no address — belongs to the file's `default_group`. A template may also name
an invoice rendering template of the Stripe account by id (`stripe_template`, "inrtem_…", made in the
Dashboard): it is set as the customer's `invoice_settings.rendering_options.template` (and as a
draft's `rendering.template` when the annotation brands a draft itself).

Which value an invoice shows follows the guide's priority: values on the invoice > template >
subscription > customer > account. The pipeline writes the subscription's invoice settings, so there
the template's memo and footer win over the brand file's (the account's), and its custom fields come
after our own "Client ID" and "Tier" (Stripe shows at most four).

Plain values in, plain values out; nothing here talks to Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisyst_pipelines.templates import Brand

from .invoice_lines import (
    MAX_CUSTOM_FIELDS,
    CustomField,
    InvoiceBranding,
    InvoiceTemplate,
    invoice_branding,
    validate_custom_fields,
)
from .tiers import load_json_file

DEFAULT_CLIENT_GROUPS_FILE = Path(__file__).resolve().parents[1] / "client_groups.json"
TEMPLATE_CUSTOM_FIELDS = MAX_CUSTOM_FIELDS - 2  # Stripe shows 4; "Client ID" and "Tier" are ours


@dataclass(frozen=True)
class ClientGroup:
    key: str  # stable identifier, e.g. "australia"
    name: str  # what support reads, e.g. "Australia Clients"
    countries: frozenset[str]  # upper-case ISO 3166-1 alpha-2 codes
    tax_rate: str | None  # key of a tax rate of the tiers file; None = no tax
    template: InvoiceTemplate


@dataclass(frozen=True)
class ClientGroups:
    groups: tuple[ClientGroup, ...]
    default_group: str

    def for_country(self, country: str | None) -> ClientGroup:
        """The group of a customer in `country` (None or unknown → the default group)."""
        code = (country or "").strip().upper()
        found = next((group for group in self.groups if code and code in group.countries), None)
        return found or self.by_key(self.default_group)

    def by_key(self, key: str) -> ClientGroup:
        found = next((group for group in self.groups if group.key == key), None)
        if found is None:
            raise ValueError(f"no client group {key!r}")
        return found

    @property
    def tax_rate_keys(self) -> frozenset[str]:
        return frozenset(group.tax_rate for group in self.groups if group.tax_rate)


class TaxRateNotInStripe(LookupError):
    """A client group pays a tax rate that Stripe does not have yet (`aisyst bootstrap-stripe` creates it)."""

    def __init__(self, group: ClientGroup) -> None:
        super().__init__(
            f"client group {group.key!r} pays tax rate {group.tax_rate!r}, which is not in Stripe: run aisyst bootstrap-stripe"
        )


@dataclass(frozen=True)
class BrandProfiles:
    """What the brand fields of an invoice are made of: the brand file (the account's texts), the
    client groups (their templates and tax rates) and the Stripe id of each tax rate key."""

    brand: Brand
    groups: ClientGroups
    tax_rate_ids: Mapping[str, str]  # tax rate key of the tiers file → Stripe tax rate id

    def branding(
        self, account_code: str | None, tier_name: str | None, preferred_locale: str | None, country: str | None
    ) -> tuple[ClientGroup, InvoiceBranding]:
        """The client group of a customer in `country` and the brand fields of its subscription."""
        group = self.groups.for_country(country)
        tax_rate_ids: tuple[str, ...] = ()
        if group.tax_rate:
            if group.tax_rate not in self.tax_rate_ids:
                raise TaxRateNotInStripe(group)
            tax_rate_ids = (self.tax_rate_ids[group.tax_rate],)
        return group, invoice_branding(account_code, tier_name, preferred_locale, self.brand, group.template, tax_rate_ids)


def parse_client_groups(document: Mapping[str, Any]) -> ClientGroups:
    """Validate a client groups document (the JSON of client_groups.json); errors name the group."""
    raw_groups = document.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise ValueError("the client groups file needs a non-empty list `groups`")
    groups = tuple(_parse_group(position, raw) for position, raw in enumerate(raw_groups, start=1))
    keys = [group.key for group in groups]
    if len(set(keys)) != len(keys):
        raise ValueError("two client groups share the same key")
    seen: dict[str, str] = {}
    for group in groups:
        for country in group.countries:
            if country in seen:
                raise ValueError(f"country {country} is in client groups {seen[country]!r} and {group.key!r}")
            seen[country] = group.key
    default = str(document.get("default_group") or "")
    if default not in keys:
        raise ValueError(f"default_group {default!r} is not one of the groups ({', '.join(keys)})")
    return ClientGroups(groups=groups, default_group=default)


def _parse_group(position: int, raw: object) -> ClientGroup:
    if not isinstance(raw, Mapping):
        raise ValueError(f"client group {position} is not an object")
    try:
        key, name = str(raw["key"]), str(raw["name"])
    except KeyError as missing:
        raise ValueError(f"client group {position} lacks the field {missing.args[0]!r}") from None
    countries = raw.get("countries") or []
    if not isinstance(countries, list) or any(not isinstance(c, str) or len(c.strip()) != 2 for c in countries):
        raise ValueError(f"client group {key!r}: countries must be a list of two-letter ISO 3166-1 codes")
    invoice = raw.get("invoice") or {}
    if not isinstance(invoice, Mapping):
        raise ValueError(f"client group {key!r}: invoice must be an object (memo, footer, custom_fields)")
    fields = invoice.get("custom_fields") or {}
    if not isinstance(fields, Mapping):
        raise ValueError(f"client group {key!r}: custom_fields must be an object of name → value")
    if len(fields) > TEMPLATE_CUSTOM_FIELDS:
        raise ValueError(
            f"client group {key!r}: {len(fields)} custom fields; at most {TEMPLATE_CUSTOM_FIELDS} fit beside Client ID and Tier"
        )
    try:
        custom_fields = tuple(validate_custom_fields([CustomField(str(n), str(v)) for n, v in fields.items()]))
    except ValueError as error:
        raise ValueError(f"client group {key!r}: {error}") from None
    tax_rate = raw.get("tax_rate")
    return ClientGroup(
        key=key,
        name=name,
        countries=frozenset(c.strip().upper() for c in countries),
        tax_rate=str(tax_rate) if tax_rate else None,
        template=InvoiceTemplate(
            memo=_text(invoice.get("memo")), footer=_text(invoice.get("footer")), custom_fields=custom_fields,
            stripe_template=_text(invoice.get("stripe_template")),
        ),
    )


def _text(value: object) -> str | None:
    return str(value).strip() or None if value is not None else None


def load_client_groups(path: Path | str = DEFAULT_CLIENT_GROUPS_FILE) -> ClientGroups:
    return load_json_file(path, parse_client_groups)
