"""The one settings object: every environment variable of DESIGN.md §4 is read here and nowhere else.

Secrets (the Stripe key, the SMTP password, the PII key) are deliberately not held here: Dagster
resources receive them through `dagster.EnvVar` so that they never land in run config or metadata.
This object only says *where* things are and which optional behaviours are on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from aisyst_pipelines.billing.client_groups import DEFAULT_CLIENT_GROUPS_FILE
from aisyst_pipelines.billing.thresholds import parse_thresholds
from aisyst_pipelines.billing.tiers import DEFAULT_TIERS_FILE, parse_legacy_price_ids
from aisyst_pipelines.templates import DEFAULT_BRAND_FILE

DEFAULT_METER_EVENT_NAME = "voice_call_minutes"
# With STRIPE_SECRET_KEY unset the local emulator is meant (DESIGN.md §4): this is where it listens
# by default and the test-mode key it accepts (not a secret: it opens nothing but the emulator).
DEFAULT_EMULATOR_URL = "http://127.0.0.1:12111"
EMULATOR_API_KEY = "sk_test_emulator"


def embedded_warehouse_url(home: Path) -> str:
    """The default warehouse: a SQLite file in the home."""
    return f"sqlite:///{home / 'warehouse.db'}"


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse_url: str
    landing_dir: Path
    outbox_dir: Path
    dagster_home: Path
    stripe_api_base: str | None
    meter_event_name: str
    allow_live_mode: bool
    asterisk_timezone: str
    # usage alerts (DESIGN.md §2.5); the SMTP URL holds a password and is bound via dg.EnvVar instead
    brand_file: Path
    alerts_timezone: str
    alert_thresholds: tuple[int, ...]
    ops_email: str | None
    smtp_ca_file: Path | None  # extra CA bundle for a private SMTP certificate authority
    # Stripe (DESIGN.md §2.2): the key itself is bound via dg.EnvVar("STRIPE_SECRET_KEY"); only whether
    # one is set is read here. Unset → the emulator at stripe_api_base (DEFAULT_EMULATOR_URL by default).
    stripe_uses_emulator: bool
    stripe_requests_per_second: float | None  # client-side limit; None → 25/s test keys, 100/s live
    tiers_file: Path
    client_groups_file: Path  # which customers pay which tax rate and read which invoice template
    legacy_tier_price_ids: dict[str, int]  # STRIPE_TIER{1,2,3}_PRICE_ID of the integration guide → tier 1..3
    # nightly reconciliation with Stripe's meter (DESIGN.md §2.3)
    reconciliation_cron: str = "0 2 * * *"  # UTC
    reconciliation_repair: bool = False  # send corrective meter events for under-metered days
    reconciliation_settle_lag_minutes: int = 60  # Stripe aggregates asynchronously: compare up to now - lag
    reconciliation_tolerance_minutes: int = 0  # unrepaired drift per customer-period the asset check allows
    cdr_freshness_hours: float = 6.0  # the cdr_ingestion_fresh check fails when no file was loaded for longer
    # CDR ingestion (docs/ingestion.md); None = unset, resources/ingestion.py's default applies
    cdr_max_reject_share: float | None = None  # limit of the cdr_reject_share check (0.01 = 1 % of a file's rows)
    cdr_future_tolerance_hours: float | None = None  # later calls are rejected (call_in_future)
    cdr_earliest_call: datetime | None = None  # earlier calls are rejected (call_too_old)
    cdr_max_record_bytes: int | None = None  # longer lines are rejected (record_too_long)
    # the Dagster deployment (aisyst_pipelines/deployment.py)
    dagster_url: str | None = None  # a running webserver the commands submit to; unset → `aisyst dev`'s or their own
    sensor_interval_seconds: int = 30  # how often the daemon ticks each sensor at most
    # The two sensors that follow Stripe (draft_invoice_sensor, stripe_events_sensor) tick more often:
    # a renewal draft is editable for one hour from its creation, the mirror is promised current within
    # a minute, and a tick that finds nothing costs one Stripe list request (docs/operations.md)
    stripe_sensor_interval_seconds: int = 5

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("AISYST_HOME", "./.aisyst")).expanduser().resolve()
        return cls(
            home=home,
            warehouse_url=env.get("AISYST_WAREHOUSE_URL") or embedded_warehouse_url(home),
            landing_dir=Path(env.get("AISYST_LANDING_DIR") or home / "landing").resolve(),
            outbox_dir=Path(env.get("AISYST_OUTBOX_DIR") or home / "outbox").resolve(),
            dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").resolve(),
            stripe_api_base=env.get("STRIPE_API_BASE") or (None if env.get("STRIPE_SECRET_KEY") else DEFAULT_EMULATOR_URL),
            meter_event_name=env.get("STRIPE_METER_EVENT_NAME") or DEFAULT_METER_EVENT_NAME,
            allow_live_mode=env.get("AISYST_ALLOW_LIVE_MODE", "").lower() == "true",
            asterisk_timezone=env.get("AISYST_ASTERISK_TIMEZONE") or "UTC",
            brand_file=Path(env.get("AISYST_BRAND_FILE") or DEFAULT_BRAND_FILE).resolve(),
            alerts_timezone=env.get("AISYST_ALERTS_TIMEZONE") or "UTC",
            alert_thresholds=parse_thresholds(env.get("AISYST_ALERT_THRESHOLDS") or "80,100"),
            ops_email=env.get("AISYST_OPS_EMAIL") or None,
            smtp_ca_file=Path(env["AISYST_SMTP_CA_FILE"]).resolve() if env.get("AISYST_SMTP_CA_FILE") else None,
            stripe_uses_emulator=not env.get("STRIPE_SECRET_KEY"),
            stripe_requests_per_second=float(env["AISYST_STRIPE_REQUESTS_PER_SECOND"])
            if env.get("AISYST_STRIPE_REQUESTS_PER_SECOND")
            else None,
            tiers_file=Path(env.get("AISYST_TIERS_FILE") or DEFAULT_TIERS_FILE).resolve(),
            client_groups_file=Path(env.get("AISYST_CLIENT_GROUPS_FILE") or DEFAULT_CLIENT_GROUPS_FILE).resolve(),
            legacy_tier_price_ids=parse_legacy_price_ids(env),
            reconciliation_cron=env.get("AISYST_RECONCILIATION_CRON") or "0 2 * * *",
            reconciliation_repair=env.get("AISYST_RECONCILIATION_REPAIR", "").lower() == "true",
            reconciliation_settle_lag_minutes=int(env.get("AISYST_RECONCILIATION_SETTLE_LAG_MINUTES") or 60),
            reconciliation_tolerance_minutes=int(env.get("AISYST_RECONCILIATION_TOLERANCE_MINUTES") or 0),
            cdr_freshness_hours=float(env.get("AISYST_CDR_FRESHNESS_HOURS") or 6),
            cdr_max_reject_share=_optional(env, "AISYST_CDR_MAX_REJECT_SHARE", float),
            cdr_future_tolerance_hours=_optional(env, "AISYST_CDR_FUTURE_TOLERANCE_HOURS", float),
            cdr_earliest_call=_optional(env, "AISYST_CDR_EARLIEST_CALL", _instant),
            cdr_max_record_bytes=_optional(env, "AISYST_CDR_MAX_RECORD_BYTES", int),
            dagster_url=env.get("AISYST_DAGSTER_URL") or None,
            sensor_interval_seconds=_optional(env, "AISYST_SENSOR_INTERVAL_SECONDS", int) or 30,
            stripe_sensor_interval_seconds=_optional(env, "AISYST_STRIPE_SENSOR_INTERVAL_SECONDS", int) or 5,
        )

    def ensure_dirs(self) -> None:
        """Create the home's folders owner-only (0700): they hold CDRs, e-mails and run logs. A folder
        that exists keeps its mode (an operator may have set up the landing folder for an uploader)."""
        for path in (self.home, self.landing_dir, self.outbox_dir, self.dagster_home):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def uses_embedded_warehouse(self) -> bool:
        return self.warehouse_url == embedded_warehouse_url(self.home)

    def emulator_state_file(self) -> Path:
        """Where the local Stripe emulator of this home keeps its objects between runs."""
        return self.home / "emulator-state.json"

    def pii_key_file(self) -> Path:
        """The generated phone-number key of the embedded warehouse, beside warehouse.db."""
        return self.home / "pii.key"


Value = TypeVar("Value")


def _optional(env: Mapping[str, str], name: str, parse: Callable[[str], Value]) -> Value | None:
    """The variable's value, None when it is unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError as error:
        raise ValueError(f"{name}={text!r} is invalid: {error}") from None


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise ValueError("an ISO 8601 time with an offset is needed, e.g. 2020-01-01T00:00:00Z")
    return value
