"""The HMAC key for phone-number hashes (DESIGN.md §2.1, §4) as a Dagster resource.

Where the key comes from (definitions.py `pii_key_resource` decides, docs/operations.md explains):

- `AISYST_PII_KEY` set: bound as `dg.EnvVar`, resolved when a run starts, so the key never appears
  in run config, metadata or the UI. Production sets it, the same on every host.
- unset, on the embedded default warehouse (the home's SQLite file): the home's `pii.key`, beside
  `warehouse.db`, created with mode 0600 the first time a run needs it (one log line says so).
- unset, on a configured warehouse (AISYST_WAREHOUSE_URL): no key. A key generated on this host would
  hash the same numbers differently from every other host writing that warehouse, so the run fails
  with "set AISYST_PII_KEY".

Nothing happens when the definitions load: the key is looked up (and created) only when used.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

class PiiKeyResource(dg.ConfigurableResource):
    """Secret key for the keyed hashes of phone numbers. Changing it changes every hash."""

    key: str = Field(default="", description="The key itself: dg.EnvVar('AISYST_PII_KEY') when that is set.")
    local_key_file: str = Field(
        default="",
        description="Embedded default only (AISYST_PII_KEY unset, the home's SQLite warehouse): the key file "
        "beside warehouse.db, created on first use.",
    )

    def key_bytes(self) -> bytes:
        if self.key:
            return self.key.encode("utf-8")
        if self.local_key_file:
            return _local_key(Path(self.local_key_file))
        raise dg.Failure(
            "AISYST_PII_KEY is not set. A configured warehouse (AISYST_WAREHOUSE_URL) may be written from several "
            "hosts, and a key generated on this one would hash the same phone numbers differently: set "
            "AISYST_PII_KEY to the warehouse's key (docs/operations.md, \"The phone-number key\")"
        )


def _local_key(path: Path) -> bytes:
    """The home's key, created on first use: written whole to a 0600 temporary file and linked into
    place, so a concurrent first use either wins or reads the complete key of the one that did."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pii.key.")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as stream:
                stream.write(secrets.token_hex(32))
            os.link(temporary, path)
            dg.get_dagster_logger().warning(
                f"AISYST_PII_KEY is not set: created a new phone-number key in {path} (mode 0600). It belongs to the "
                "warehouse beside it; keep it with that warehouse, and set AISYST_PII_KEY in production."
            )
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip().encode("utf-8")
