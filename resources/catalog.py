"""The billing catalog as a Dagster resource: the tiers file and the brand file, visible in the launchpad.

Assets, sensors and schedules get the tier catalog and the brand from here instead of reading the
environment themselves (definitions.py builds it from `Settings` once, when the code location loads).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from aisyst_pipelines.billing.client_groups import DEFAULT_CLIENT_GROUPS_FILE, ClientGroups, load_client_groups
from aisyst_pipelines.billing.tiers import DEFAULT_TIERS_FILE, TierCatalog, load_tier_catalog
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.templates import DEFAULT_BRAND_FILE, Brand, load_brand


class CatalogResource(dg.ConfigurableResource):
    """Where the tiers and the invoice/e-mail brand are defined."""

    tiers_file: str = Field(default=str(DEFAULT_TIERS_FILE), description="JSON file of the tiers (aisyst_pipelines/tiers.json by default).")
    brand_file: str = Field(default=str(DEFAULT_BRAND_FILE), description="JSON file of the brand: company, addresses, invoice texts.")
    client_groups_file: str = Field(
        default=str(DEFAULT_CLIENT_GROUPS_FILE),
        description="JSON file of the client groups: by customer country, the tax rate and the invoice template.",
    )
    legacy_tier_price_ids: dict[str, int] = Field(
        default_factory=dict,
        description="Stripe price id → tier number (1..3), from STRIPE_TIER{1,2,3}_PRICE_ID of the integration guide.",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "CatalogResource":
        return cls(
            tiers_file=str(settings.tiers_file),
            brand_file=str(settings.brand_file),
            client_groups_file=str(settings.client_groups_file),
            legacy_tier_price_ids=dict(settings.legacy_tier_price_ids),
        )

    def tiers(self) -> TierCatalog:
        return load_tier_catalog(self.tiers_file)

    def brand(self) -> Brand:
        return load_brand(self.brand_file)

    def client_groups(self) -> ClientGroups:
        return load_client_groups(self.client_groups_file)
