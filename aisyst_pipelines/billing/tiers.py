"""Subscription tiers: the tiers file, and which tier (and how many included minutes) a Stripe price means.

DESIGN.md §2.2: a tier's included minutes come from the price's or the product's metadata
`aisyst_included_minutes` (a whole number, or `unlimited`), falling back to the tiers file of the
repo (matched by the price's lookup key); the `STRIPE_TIER{1,2,3}_PRICE_ID` variables of the
original integration guide keep working as a last resort (price id → the file's tier 1, 2, 3).

Plain values in, plain values out: the Stripe objects are read by the resource, this module only
decides. Unlimited is `None` everywhere (a NULL `included_minutes` in the warehouse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_TIERS_FILE = Path(__file__).resolve().parents[1] / "tiers.json"

UNLIMITED = "unlimited"
# Metadata keys written by `aisyst bootstrap-stripe` and read by the sync.
INCLUDED_MINUTES_KEY = "aisyst_included_minutes"
OVERAGE_UNIT_AMOUNT_KEY = "aisyst_overage_unit_amount"
TIER_KEY = "aisyst_tier"  # on products and prices: the tier's key in the tiers file
TIER_NAME_KEY = "aisyst_tier_name"

_INTERVALS = ("day", "week", "month", "year")


@dataclass(frozen=True)
class Tier:
    key: str  # stable identifier, e.g. "tier_1"
    name: str  # what customers and invoices see, e.g. "Tier 1"
    lookup_key: str  # the Stripe price's lookup key
    included_minutes: int | None  # None = unlimited
    unit_amount: int  # price per interval in the currency's smallest unit
    currency: str
    interval: str = "month"
    interval_count: int = 1
    overage_unit_amount: int | None = None  # per overage minute; None = overage not charged

    @property
    def is_unlimited(self) -> bool:
        return self.included_minutes is None

    def included_minutes_text(self) -> str:
        """The metadata value: "500" or "unlimited"."""
        return UNLIMITED if self.included_minutes is None else str(self.included_minutes)


@dataclass(frozen=True)
class TaxRateSpec:
    """A Stripe tax rate the tiers file asks for (e.g. GST 10 %, exclusive). `key` is how the client
    groups file (billing/client_groups.py) names it; Stripe finds it by name, percentage, inclusive
    and jurisdiction."""

    key: str
    display_name: str
    percentage: Decimal
    inclusive: bool
    country: str | None = None
    jurisdiction: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class TierCatalog:
    tiers: tuple[Tier, ...]
    tax_rates: tuple[TaxRateSpec, ...] = ()

    def tax_rate(self, key: str) -> TaxRateSpec:
        """The tax rate of `key`; an unknown key is an error naming the keys there are."""
        found = next((rate for rate in self.tax_rates if rate.key == key), None)
        if found is None:
            raise ValueError(f"no tax rate {key!r} in the tiers file (there are: {', '.join(r.key for r in self.tax_rates) or 'none'})")
        return found

    def by_lookup_key(self, lookup_key: str | None) -> Tier | None:
        return next((tier for tier in self.tiers if lookup_key and tier.lookup_key == lookup_key), None)

    def by_key(self, key: str | None) -> Tier | None:
        return next((tier for tier in self.tiers if key and tier.key == key), None)

    def by_number(self, number: int) -> Tier | None:
        """Tier `number` as the integration guide counts them: 1 is the first tier of the file."""
        return self.tiers[number - 1] if 1 <= number <= len(self.tiers) else None


def parse_included_minutes(value: object) -> int | None:
    """`500`, `"500"` → 500; `"unlimited"` → None. Anything else is an error, never a guess."""
    if isinstance(value, bool):
        raise ValueError(f"included minutes {value!r} is neither a whole number nor {UNLIMITED!r}")
    if isinstance(value, int):
        minutes = value
    elif isinstance(value, str) and value.strip().lower() == UNLIMITED:
        return None
    elif isinstance(value, str) and value.strip().isdigit():
        minutes = int(value.strip())
    else:
        raise ValueError(f"included minutes {value!r} is neither a whole number nor {UNLIMITED!r}")
    if minutes < 0:
        raise ValueError(f"included minutes {minutes} is negative")
    return minutes


def _whole_amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole, non-negative amount in the smallest currency unit, got {value!r}")
    return value


def parse_tier_catalog(document: Mapping[str, Any]) -> TierCatalog:
    """Validate a tiers document (the JSON of tiers.json) into a catalog; errors name the field."""
    currency = str(document.get("currency", "usd")).lower()
    interval = str(document.get("interval", "month"))
    if interval not in _INTERVALS:
        raise ValueError(f"interval {interval!r} is not one of {', '.join(_INTERVALS)}")
    interval_count = _whole_amount(document.get("interval_count", 1), "interval_count") or 1
    raw_tiers = document.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise ValueError("the tiers file needs a non-empty list `tiers`")
    tiers: list[Tier] = []
    for position, raw in enumerate(raw_tiers, start=1):
        try:
            overage = raw.get("overage_unit_amount")
            tiers.append(
                Tier(
                    key=str(raw["key"]),
                    name=str(raw["name"]),
                    lookup_key=str(raw["lookup_key"]),
                    included_minutes=parse_included_minutes(raw["included_minutes"]),
                    unit_amount=_whole_amount(raw["unit_amount"], "unit_amount"),
                    currency=str(raw.get("currency", currency)).lower(),
                    interval=interval,
                    interval_count=interval_count,
                    overage_unit_amount=None if overage is None else _whole_amount(overage, "overage_unit_amount"),
                )
            )
        except KeyError as missing:
            raise ValueError(f"tier {position} lacks the field {missing.args[0]!r}") from None
        except ValueError as error:
            raise ValueError(f"tier {position}: {error}") from None
    for field in ("key", "lookup_key", "name"):
        values = [getattr(tier, field) for tier in tiers]
        if len(set(values)) != len(values):
            raise ValueError(f"two tiers share the same {field}")
    return TierCatalog(tiers=tuple(tiers), tax_rates=_parse_tax_rates(document))


def _parse_tax_rates(document: Mapping[str, Any]) -> tuple[TaxRateSpec, ...]:
    """`tax_rates` (a list, each with a `key`), or the single `tax_rate` object of older tiers files
    (its key is "default")."""
    if "tax_rates" in document:
        raw_rates = document["tax_rates"]
        if not isinstance(raw_rates, list):
            raise ValueError("tax_rates must be a list of tax rate objects")
        rates = tuple(_parse_tax_rate(raw, default_key=None) for raw in raw_rates)
    elif document.get("tax_rate") is not None:
        rates = (_parse_tax_rate(document["tax_rate"], default_key="default"),)
    else:
        rates = ()
    keys = [rate.key for rate in rates]
    if len(set(keys)) != len(keys):
        raise ValueError("two tax rates share the same key")
    return rates


def _parse_tax_rate(raw: object, default_key: str | None) -> TaxRateSpec:
    if not isinstance(raw, Mapping):
        raise ValueError("tax_rate must be an object with display_name, percentage and inclusive")
    try:
        percentage = Decimal(str(raw["percentage"]))
    except KeyError as missing:
        raise ValueError(f"tax_rate lacks the field {missing.args[0]!r}") from None
    except InvalidOperation:
        raise ValueError(f"tax_rate percentage {raw['percentage']!r} is not a number") from None
    if not Decimal(0) <= percentage <= Decimal(100):
        raise ValueError(f"tax_rate percentage {percentage} is outside 0..100")
    if "display_name" not in raw:
        raise ValueError("tax_rate lacks the field 'display_name'")
    key = raw.get("key", default_key)
    if not key:
        raise ValueError(f"tax rate {raw['display_name']!r} lacks the field 'key'")
    return TaxRateSpec(
        key=str(key),
        display_name=str(raw["display_name"]),
        percentage=percentage,
        inclusive=bool(raw.get("inclusive", False)),
        country=raw.get("country"),
        jurisdiction=raw.get("jurisdiction"),
        description=raw.get("description"),
    )


Parsed = TypeVar("Parsed")


def load_json_file(path: Path | str, parse: Callable[[Any], Parsed]) -> Parsed:
    """`parse` of the JSON document in `path`; every error names the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    try:
        return parse(document)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_tier_catalog(path: Path | str = DEFAULT_TIERS_FILE) -> TierCatalog:
    return load_json_file(path, parse_tier_catalog)


def parse_legacy_price_ids(environ: Mapping[str, str], tier_count: int = 3) -> dict[str, int]:
    """`STRIPE_TIER1_PRICE_ID=price_…` (the original integration guide) → {"price_…": 1, …}."""
    price_ids: dict[str, int] = {}
    for number in range(1, tier_count + 1):
        price_id = (environ.get(f"STRIPE_TIER{number}_PRICE_ID") or "").strip()
        if price_id:
            price_ids[price_id] = number
    return price_ids


class TierSource(StrEnum):
    """Where a subscription's included minutes came from (kept in the warehouse for audits)."""

    PRICE_METADATA = "price_metadata"
    PRODUCT_METADATA = "product_metadata"
    TIERS_FILE = "tiers_file"
    LEGACY_PRICE_ID = "legacy_price_id"
    UNKNOWN = "unknown"  # no source knows this price: included minutes NULL, reported, never alerted


@dataclass(frozen=True)
class ResolvedTier:
    tier_name: str | None
    included_minutes: int | None  # None = unlimited (or unknown: see `source`)
    overage_unit_amount: int | None
    source: TierSource

    @property
    def is_known(self) -> bool:
        return self.source is not TierSource.UNKNOWN


@dataclass(frozen=True)
class PriceFacts:
    """What the sync knows of a subscription item's price and product (plain values)."""

    price_id: str
    lookup_key: str | None = None
    nickname: str | None = None
    price_metadata: Mapping[str, str] | None = None
    product_name: str | None = None
    product_metadata: Mapping[str, str] | None = None


def resolve_tier(price: PriceFacts, catalog: TierCatalog, legacy_price_ids: Mapping[str, int]) -> ResolvedTier:
    """Tier name, included minutes and overage rate of a price, first source that knows wins.

    Order: price metadata, product metadata, tiers file by lookup key, legacy price-id variables.
    A metadata value that is not a number nor `unlimited` is an error (a typo must not turn a
    500-minute plan into an unlimited one).
    """
    price_metadata = price.price_metadata or {}
    product_metadata = price.product_metadata or {}
    file_tier = catalog.by_lookup_key(price.lookup_key) or catalog.by_key(
        price_metadata.get(TIER_KEY) or product_metadata.get(TIER_KEY)
    )
    legacy_number = legacy_price_ids.get(price.price_id)
    legacy_tier = catalog.by_number(legacy_number) if legacy_number else None
    catalog_tier = file_tier or legacy_tier

    for source, metadata in ((TierSource.PRICE_METADATA, price_metadata), (TierSource.PRODUCT_METADATA, product_metadata)):
        if INCLUDED_MINUTES_KEY in metadata:
            try:
                included = parse_included_minutes(metadata[INCLUDED_MINUTES_KEY])
            except ValueError as error:
                raise ValueError(f"price {price.price_id}: {source.value} {INCLUDED_MINUTES_KEY}: {error}") from None
            return ResolvedTier(
                tier_name=_tier_name(price, catalog_tier),
                included_minutes=included,
                overage_unit_amount=_overage(price, catalog_tier),
                source=source,
            )
    if catalog_tier is not None:
        return ResolvedTier(
            tier_name=_tier_name(price, catalog_tier),
            included_minutes=catalog_tier.included_minutes,
            overage_unit_amount=_overage(price, catalog_tier),
            source=TierSource.TIERS_FILE if file_tier is not None else TierSource.LEGACY_PRICE_ID,
        )
    return ResolvedTier(
        tier_name=_tier_name(price, None), included_minutes=None, overage_unit_amount=None, source=TierSource.UNKNOWN
    )


def _tier_name(price: PriceFacts, catalog_tier: Tier | None) -> str | None:
    for metadata in (price.price_metadata or {}, price.product_metadata or {}):
        if metadata.get(TIER_NAME_KEY):
            return metadata[TIER_NAME_KEY]
    if catalog_tier is not None:
        return catalog_tier.name
    return price.product_name or price.nickname


def _overage(price: PriceFacts, catalog_tier: Tier | None) -> int | None:
    for metadata in (price.price_metadata or {}, price.product_metadata or {}):
        raw = (metadata.get(OVERAGE_UNIT_AMOUNT_KEY) or "").strip()
        if raw:
            if not raw.isdigit():
                raise ValueError(f"price {price.price_id}: {OVERAGE_UNIT_AMOUNT_KEY} {raw!r} is not a whole amount")
            return int(raw)
    return catalog_tier.overage_unit_amount if catalog_tier is not None else None
