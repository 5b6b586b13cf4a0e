"""The warehouse's own properties (`warehouse_properties`): facts about the warehouse as a whole.

One so far: the fingerprint of the key its phone-number hashes were made with. Hashes made with two
keys cannot be joined (the same number gets two hashes), so a load with another key is refused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select
from aisyst_pipelines.warehouse.upsert import conflict_insert

from aisyst_pipelines.cdr.formats import CdrFileError

from .schema import warehouse_properties

PII_KEY_FINGERPRINT = "pii_key_fingerprint"
_SHOWN_CHARS = 16  # enough to tell two keys apart in a message


class PiiKeyMismatch(CdrFileError):
    """This load's phone-number key is not the one the warehouse's hashes were made with."""

    def __init__(self, recorded: str, offered: str) -> None:
        super().__init__(
            f"this warehouse's phone-number hashes were made with key fingerprint {recorded[:_SHOWN_CHARS]}…; "
            f"this load's key (AISYST_PII_KEY, or the home's pii.key when it is unset) has fingerprint "
            f"{offered[:_SHOWN_CHARS]}…: set AISYST_PII_KEY to the key the warehouse was loaded with "
            "(docs/operations.md, \"The phone-number key\")"
        )
        self.recorded = recorded


def require_pii_key_fingerprint(connection: Connection, fingerprint: str, now: datetime) -> None:
    """Record `fingerprint` if the warehouse has none yet, else insist it is the recorded one.

    Runs inside the load's transaction, before anything of the file is written, so a refused load
    writes nothing (the first-time record rolls back with a failed load, too). Insert-if-absent then
    re-read: two first loads with different keys at once agree on whichever committed first.
    """
    connection.execute(
        conflict_insert(connection.dialect.name, warehouse_properties)
        .values(name=PII_KEY_FINGERPRINT, value=fingerprint, recorded_at=now)
        .on_conflict_do_nothing()
    )
    recorded = connection.scalar(
        select(warehouse_properties.c.value).where(warehouse_properties.c.name == PII_KEY_FINGERPRINT)
    )
    if recorded != fingerprint:
        raise PiiKeyMismatch(str(recorded), fingerprint)
