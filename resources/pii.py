"""The HMAC key for phone-number hashes (DESIGN.md §2.1, §4) as a Dagster resource.

Bound in definitions.py as `PiiKeyResource(key=dg.EnvVar("AISYST_PII_KEY"))`: Dagster resolves the
variable when a run starts, so the key never appears in run config, metadata or the UI. Locally,
`settings.ensure_local_pii_key` generates one into AISYST_HOME and exports the variable.
"""

from __future__ import annotations

import dagster as dg


class PiiKeyResource(dg.ConfigurableResource):
    """Secret key for the keyed hashes of phone numbers. Changing it changes every hash."""

    key: str

    def key_bytes(self) -> bytes:
        if not self.key:
            raise dg.Failure("AISYST_PII_KEY is empty: phone numbers can only be stored as keyed hashes")
        return self.key.encode("utf-8")
