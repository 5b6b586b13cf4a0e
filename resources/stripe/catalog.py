"""The catalog gateway: the tiers' products and prices, the meter and the tax rate (`aisyst bootstrap-stripe`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from stripe.params import (
    PriceCreateParams,
    PriceListParams,
    ProductCreateParams,
    ProductListParams,
    TaxRateCreateParams,
    TaxRateListParams,
)
from stripe.params.billing import MeterCreateParams, MeterListParams

from aisyst_pipelines.billing.tiers import (
    INCLUDED_MINUTES_KEY,
    OVERAGE_UNIT_AMOUNT_KEY,
    TIER_KEY,
    TIER_NAME_KEY,
    TaxRateSpec,
    Tier,
    TierCatalog,
)

from .client import PAGE_SIZE, StripeCalls
from .records import CatalogEntry, CatalogIds, StripeMeter, StripePrice, StripeProduct


def find_meter(calls: StripeCalls, event_name: str) -> StripeMeter | None:
    """The meter of an event name, active or not."""
    params: MeterListParams = {"limit": PAGE_SIZE}
    meters = calls.list_all(lambda c: c.v1.billing.meters.list(params), StripeMeter.from_api)
    return next((meter for meter in meters if meter.event_name == event_name), None)


class CatalogGateway:
    def __init__(self, calls: StripeCalls, meter_event_name: str) -> None:
        self._calls = calls
        self._meter_event_name = meter_event_name

    def ensure(self, catalog: TierCatalog) -> CatalogIds:
        """Find or create every product, price, the meter and the tax rate of the tiers file.

        Idempotent: objects are found by the tier key in product metadata, the price lookup key,
        the meter's event name and the tax rate's name/percentage/inclusive — a second run creates
        nothing.
        """
        products = tuple(self._ensure_product(tier) for tier in catalog.tiers)
        prices = tuple(self._ensure_price(tier, product.id) for tier, product in zip(catalog.tiers, products))
        meter = self.ensure_meter()
        tax_rates = tuple(self._ensure_tax_rate(spec) for spec in catalog.tax_rates)
        return CatalogIds(products=products, prices=prices, meter=meter, tax_rates=tax_rates)

    def products(self) -> dict[str, StripeProduct]:
        """All products by id (the subscription sync joins items' prices on it)."""
        params: ProductListParams = {"limit": PAGE_SIZE}
        products = self._calls.list_all(lambda c: c.v1.products.list(params), StripeProduct.from_api)
        return {product.id: product for product in products}

    def ensure_meter(self) -> CatalogEntry:
        """Our voice-minutes meter: sum of `value`, customer in `stripe_customer_id` (reactivated if
        it was deactivated: an event name belongs to one meter for good)."""
        event_name = self._meter_event_name
        existing = find_meter(self._calls, event_name)
        if existing is not None:
            if existing.status != "active":
                self._calls.write(lambda c, o: c.v1.billing.meters.reactivate(existing.id, options=o))
            return CatalogEntry("meter", existing.id, False, event_name)
        params: MeterCreateParams = {
            "display_name": "Voice call minutes",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
        created = self._calls.write(lambda c, o: c.v1.billing.meters.create(params, o))
        return CatalogEntry("meter", created.id, True, event_name)

    def _ensure_product(self, tier: Tier) -> CatalogEntry:
        metadata = _tier_metadata(tier)
        existing = next((p for p in self.products().values() if p.metadata.get(TIER_KEY) == tier.key and p.active), None)
        if existing is not None:
            if any(existing.metadata.get(key) != value for key, value in metadata.items()):
                self._calls.write(lambda c, o: c.v1.products.update(existing.id, {"metadata": metadata}, o))
            return CatalogEntry("product", existing.id, False, tier.name)
        params: ProductCreateParams = {"name": tier.name, "metadata": metadata}
        created = self._calls.write(lambda c, o: c.v1.products.create(params, o))
        return CatalogEntry("product", created.id, True, tier.name)

    def _ensure_price(self, tier: Tier, product_id: str) -> CatalogEntry:
        """The tier's recurring price. A price's amount cannot change in Stripe: when the file's
        amount or interval differs, a new price takes over the lookup key (`transfer_lookup_key`)."""
        metadata = _tier_metadata(tier)
        label = f"{tier.name} {tier.unit_amount / 100:.2f} {tier.currency.upper()}/{tier.interval}"
        lookup: PriceListParams = {"lookup_keys": [tier.lookup_key], "active": True, "limit": 10}
        existing = next(iter(self._calls.list_all(lambda c: c.v1.prices.list(lookup), StripePrice.from_api)), None)
        if existing is not None and _price_matches(existing, tier, product_id):
            if any(existing.metadata.get(key) != value for key, value in metadata.items()):
                self._calls.write(lambda c, o: c.v1.prices.update(existing.id, {"metadata": metadata}, o))
            return CatalogEntry("price", existing.id, False, label)
        params: PriceCreateParams = {
            "product": product_id,
            "currency": tier.currency,
            "unit_amount": tier.unit_amount,
            "recurring": {"interval": tier.interval, "interval_count": tier.interval_count},
            "lookup_key": tier.lookup_key,
            "nickname": tier.name,
            "metadata": metadata,
        }
        if existing is not None:
            params["transfer_lookup_key"] = True
        created = self._calls.write(lambda c, o: c.v1.prices.create(params, o))
        return CatalogEntry("price", created.id, True, label)

    def tax_rate_ids(self, specs: Sequence[TaxRateSpec]) -> dict[str, str]:
        """Tax rate key → the id of the active Stripe tax rate matching it (one listing for all);
        a key bootstrap has not created yet is absent."""
        listed = self._active_tax_rates()
        found = {spec.key: _matching_tax_rate(listed, spec) for spec in specs}
        return {key: rate_id for key, rate_id in found.items() if rate_id is not None}

    def _active_tax_rates(self) -> list[Mapping[str, Any]]:
        listing: TaxRateListParams = {"active": True, "limit": PAGE_SIZE}
        return self._calls.list_all(lambda c: c.v1.tax_rates.list(listing), lambda raw: raw)

    def _ensure_tax_rate(self, spec: TaxRateSpec) -> CatalogEntry:
        label = f"{spec.display_name} {spec.percentage}% {'inclusive' if spec.inclusive else 'exclusive'}"
        existing = _matching_tax_rate(self._active_tax_rates(), spec)
        if existing is not None:
            return CatalogEntry("tax_rate", existing, False, label)
        params: TaxRateCreateParams = {
            "display_name": spec.display_name,
            "percentage": float(spec.percentage),
            "inclusive": spec.inclusive,
        }
        if spec.country:
            params["country"] = spec.country
        if spec.jurisdiction:
            params["jurisdiction"] = spec.jurisdiction
        if spec.description:
            params["description"] = spec.description
        created = self._calls.write(lambda c, o: c.v1.tax_rates.create(params, o))
        return CatalogEntry("tax_rate", created.id, True, label)


def _matching_tax_rate(rates: Sequence[Mapping[str, Any]], spec: TaxRateSpec) -> str | None:
    """The id of the listed tax rate with the spec's name, percentage, inclusiveness and jurisdiction."""
    for rate in rates:
        if (
            rate.get("display_name") == spec.display_name
            and Decimal(str(rate.get("percentage"))) == spec.percentage
            and bool(rate.get("inclusive")) == spec.inclusive
            and rate.get("jurisdiction") == spec.jurisdiction
        ):
            return str(rate["id"])
    return None


def _tier_metadata(tier: Tier) -> dict[str, str]:
    metadata = {TIER_KEY: tier.key, TIER_NAME_KEY: tier.name, INCLUDED_MINUTES_KEY: tier.included_minutes_text()}
    if tier.overage_unit_amount is not None:
        metadata[OVERAGE_UNIT_AMOUNT_KEY] = str(tier.overage_unit_amount)
    return metadata


def _price_matches(price: StripePrice, tier: Tier, product_id: str) -> bool:
    return (
        price.product_id == product_id
        and price.unit_amount == tier.unit_amount
        and price.currency == tier.currency
        and price.interval == tier.interval
        and (price.interval_count or 1) == tier.interval_count
    )
