"""Daily usage-threshold alerts (DESIGN.md §2.5) as the `usage_alerts` asset and its delivery check.

One run, for every served subscription's current billing period (as the Stripe sync mirrored it,
with the minutes `usage_by_period` computed for exactly that period — the job refreshes both first):
1. pending alerts of periods that are no longer current (renewed, subscription ended) → `expired`;
2. per customer-period, `billing.thresholds.plan_alerts` decides: the highest newly reached
   threshold is notified, lower ones are `superseded`; unlimited and unknown tiers never alert;
3. the customer e-mail goes to the Stripe customer's address, with the next tier as upgrade hint and
   a customer-portal session link; a failed delivery keeps the row `pending` with `last_error`
   (retried by the next run, never marked sent);
4. silence: customers with usage on most of the last 14 days and none in the last 2;
5. one ops digest with every alert whose status ops have not seen yet and every new silence episode.
A second run on the same day finds nothing new and sends nothing.

Time: the run's `as_of` (now, or the configured instant). Customers on a Stripe test clock live at
the clock's frozen time, so their "days left" is counted from it.
"""


from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import dagster as dg
from pydantic import Field

from aisyst_pipelines.billing.alert_messages import (
    CustomerAlert,
    DigestAlert,
    DigestSilence,
    OpsDigest,
    SubscriptionUsage,
    UpgradeHint,
    customer_alert_message,
    format_price,
    next_tier,
    ops_digest_texts,
)
from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.thresholds import (
    DEFAULT_THRESHOLDS,
    AlertStatus,
    SilencePolicy,
    SilentCustomer,
    days_left_in_period,
    find_silent_customers,
    parse_thresholds,
    plan_alerts,
    reached_thresholds,
    usage_percentage,
)
from aisyst_pipelines.billing.tiers import Tier, TierCatalog, load_tier_catalog
from aisyst_pipelines.billing.usage import CallTotals, PeriodUsage
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.templates import Brand, load_brand
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import alerts_store
from aisyst_pipelines.warehouse.alerts_store import AlertFacts, AlertKey, AlertRow, CurrentPeriodUsage
from resources import WarehouseResource
from resources.notifier import Delivery, DeliveryError, NotifierResource
from resources.stripe import StripeResource
from resources.stripe.customers import CustomerGateway
from resources.stripe.portal import PortalGateway

ASSET_KEY = dg.AssetKey("usage_alerts")
DELIVERED_CHECK = "usage_alerts_delivered"
GROUP = "alerts"
OWNERS = ["team:billing-data"]
UPSTREAM = [dg.AssetKey("usage_by_period"), dg.AssetKey("usage_daily")]


class UsageAlertsConfig(dg.Config):
    thresholds: list[int] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS),
        description="Percentages of the included minutes that alert (the schedule passes AISYST_ALERT_THRESHOLDS).",
    )
    as_of: str | None = Field(
        default=None, description="ISO 8601 instant with offset the run evaluates; empty = now."
    )
    silence_window_days: int = Field(default=14, description="Days looked back for silence detection.")
    silence_quiet_days: int = Field(default=2, description="Days without usage that make a customer silent.")
    silence_min_active_days: int = Field(default=8, description="Days with usage the window needs ('most of').")

    def as_of_instant(self) -> datetime:
        if not self.as_of:
            return datetime.now(timezone.utc)
        instant = datetime.fromisoformat(self.as_of)
        if instant.tzinfo is None:
            raise ValueError(f"as_of {self.as_of!r} has no UTC offset")
        return instant.astimezone(timezone.utc)

    def silence_policy(self) -> SilencePolicy:
        return SilencePolicy(self.silence_window_days, self.silence_quiet_days, self.silence_min_active_days)


class AlertStripe(Protocol):
    """The two Stripe gateways of the alerts (StripeResource in production and tests)."""

    @property
    def portal(self) -> PortalGateway: ...
    @property
    def customers(self) -> CustomerGateway: ...


class Log(Protocol):
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


@dataclass(frozen=True)
class FlaggedCustomer:
    """A customer at or above a threshold in the current period (a row of the UI table)."""

    customer_id: str
    customer_name: str | None
    tier_name: str | None
    minutes_used: int
    included_minutes: int
    usage_pct: float
    threshold_pct: int  # the highest reached
    alert_status: str
    days_left: int


@dataclass
class AlertRunOutcome:
    as_of: datetime
    thresholds: tuple[int, ...]
    subscriptions_checked: int = 0
    without_usage: list[str] = field(default_factory=list)  # current period not in usage_by_period yet
    stale: list[str] = field(default_factory=list)  # mirrored period already over: the sync lags
    flagged: list[FlaggedCustomer] = field(default_factory=list)
    sent: Counter[int] = field(default_factory=Counter)  # customer e-mails delivered, per threshold
    superseded: int = 0
    failures: list[tuple[str, int, str]] = field(default_factory=list)  # (customer, threshold, error)
    expired: int = 0
    withdrawn: int = 0
    silent: list[SilentCustomer] = field(default_factory=list)
    digest: Delivery | None = None
    digest_error: str | None = None


def upgrade_hint(included_minutes: int, catalog: TierCatalog) -> UpgradeHint | None:
    tier = next_tier(included_minutes, catalog.tiers)
    if not isinstance(tier, Tier):
        return None
    price = format_price(tier.unit_amount, tier.currency, tier.interval if tier.interval_count == 1 else None)
    return UpgradeHint(tier.name, tier.included_minutes, price)


def subscription_usage(period: CurrentPeriodUsage) -> SubscriptionUsage:
    totals = CallTotals(period.calls or 0, period.billable_seconds or 0, period.minutes_used or 0)
    return SubscriptionUsage(
        period.customer_id,
        period.subscription_id,
        period.tier_name,
        PeriodUsage(Period(period.period_start, period.period_end), period.included_minutes, totals),
    )


def _customer_alert(
    period: CurrentPeriodUsage,
    threshold: int,
    now: datetime,
    brand: Brand,
    catalog: TierCatalog,
    portal: PortalGateway,
    log: Log,
) -> CustomerAlert:
    assert period.included_minutes is not None and period.customer_email
    upgrade = upgrade_hint(period.included_minutes, catalog)
    portal_url = None
    if upgrade is not None:
        try:
            portal_url = portal.session_url(period.customer_id, brand.portal_return_url)
        except Exception as error:  # noqa: BLE001 - the alert matters more than the link
            log.warning(f"no portal link for {period.customer_id} ({type(error).__name__}); the e-mail links the sign-in page")
    return CustomerAlert(subscription_usage(period), threshold, period.customer_name, period.customer_email, now, upgrade, portal_url)


def _deliver(
    warehouse: Warehouse,
    notifier: NotifierResource,
    alert: CustomerAlert | None,
    key: AlertKey,
    missing_reason: str | None,
    brand: Brand,
) -> str | None:
    """Send one customer alert and record the attempt; returns the error (None = delivered)."""
    error = missing_reason
    if alert is not None:
        try:
            notifier.send(customer_alert_message(alert, brand))
        except DeliveryError as failure:
            error = str(failure)
    alerts_store.record_delivery(warehouse, key, datetime.now(timezone.utc), error)
    return error


def _outcome_text(row: AlertRow) -> str:
    if row.status is AlertStatus.NOTIFIED:
        return "e-mail sent" + (f" (after {row.attempts} attempts)" if row.attempts > 1 else "")
    if row.status is AlertStatus.PENDING:
        return f"delivery failed: {row.last_error}" if row.last_error else "not sent yet"
    if row.status is AlertStatus.SUPERSEDED:
        return "recorded, not sent: a higher threshold was reached at the same time"
    if row.status is AlertStatus.WITHDRAWN:
        return "withdrawn before delivery: no longer true (usage corrected or tier changed)"
    return "expired: the period ended before the e-mail could be delivered"


def run_usage_alerts(
    warehouse: Warehouse,
    notifier: NotifierResource,
    stripe: AlertStripe,
    brand: Brand,
    catalog: TierCatalog,
    thresholds: tuple[int, ...],
    policy: SilencePolicy,
    as_of: datetime,
    log: Log,
) -> AlertRunOutcome:
    """The whole daily pass (see the module docstring)."""
    outcome = AlertRunOutcome(as_of=as_of, thresholds=thresholds)
    served = alerts_store.current_period_usage(warehouse)
    clocks = {p.test_clock for p in served if p.test_clock}
    clock_times = stripe.customers.test_clock_times(clocks) if clocks else {}  # test clock id → its frozen time
    periods: list[CurrentPeriodUsage] = []
    seen: set[tuple[str, datetime]] = set()
    for period in served:
        now = clock_times.get(period.test_clock or "", as_of)
        if period.period_end <= now:
            outcome.stale.append(period.subscription_id)
            continue
        if (period.customer_id, period.period_start) in seen:
            # Alerts are per customer and period (the calls are the customer's, not a subscription's).
            log.warning(f"{period.customer_id} has several served subscriptions; alerting on the first only")
            continue
        seen.add((period.customer_id, period.period_start))
        periods.append(period)
    if outcome.stale:
        log.warning(f"{len(outcome.stale)} subscription(s) have a mirrored period that is over; run the Stripe sync")

    outcome.expired = alerts_store.expire_pending(warehouse, seen)
    recorded = alerts_store.recorded_alerts(warehouse, seen)

    for period in periods:
        now = clock_times.get(period.test_clock or "", as_of)
        included = period.included_minutes
        if period.minutes_used is None:
            if included is not None:
                outcome.without_usage.append(period.subscription_id)
            continue
        if included is not None:
            outcome.subscriptions_checked += 1
        plan = plan_alerts(period.minutes_used, included, recorded[(period.customer_id, period.period_start)], thresholds)
        if plan.is_empty:
            continue
        facts = AlertFacts(
            period.customer_id, period.subscription_id, period.period_start, period.period_end, period.tier_name,
            included, period.minutes_used, usage_percentage(period.minutes_used, included) or 0.0,
        )
        alerts_store.record_plan(warehouse, facts, plan, as_of)
        outcome.superseded += sum(status is AlertStatus.SUPERSEDED for _, status in plan.new_alerts)
        outcome.withdrawn += sum(change.status is AlertStatus.WITHDRAWN for change in plan.status_changes)
        if plan.notify is None:
            continue
        assert included is not None
        key = AlertKey(period.customer_id, period.period_start, included, plan.notify)
        if not alerts_store.claim_delivery(warehouse, key, datetime.now(timezone.utc)):
            log.warning(f"{plan.notify} % alert of {period.customer_id} is being delivered by another run")
            continue
        alert = None
        missing = "the Stripe customer has no e-mail address" if not period.customer_email else None
        if missing is None:
            alert = _customer_alert(period, plan.notify, now, brand, catalog, stripe.portal, log)
        error = _deliver(warehouse, notifier, alert, key, missing, brand)
        if error is None:
            outcome.sent[plan.notify] += 1
            log.info(f"{plan.notify} % alert sent to {period.customer_id}")
        else:
            outcome.failures.append((period.customer_id, plan.notify, error))
            log.warning(f"{plan.notify} % alert to {period.customer_id} not delivered (retried next run): {error}")

    outcome.flagged = _flagged(warehouse, periods, thresholds, as_of, clock_times)

    # Silence, among the customers being served (unlimited ones too: an outage hides there as well).
    today = as_of.date()
    first, last = policy.window(today)
    customers = sorted({p.customer_id for p in periods})
    outcome.silent = find_silent_customers(alerts_store.daily_minutes(warehouse, customers, first, last), today, policy)
    alerts_store.record_silence(warehouse, outcome.silent, policy.window_days, as_of)

    _send_digest(warehouse, notifier, brand, periods, outcome, policy, clock_times, log)
    return outcome


def _flagged(
    warehouse: Warehouse,
    periods: list[CurrentPeriodUsage],
    thresholds: tuple[int, ...],
    as_of: datetime,
    clock_times: dict[str, datetime],
) -> list[FlaggedCustomer]:
    reached = {
        (p.customer_id, p.period_start): (p, reached_thresholds(p.minutes_used or 0, p.included_minutes, thresholds))
        for p in periods
    }
    reached = {key: value for key, value in reached.items() if value[1]}
    statuses = {
        (row.customer_id, row.period_start, row.included_minutes, row.threshold_pct): row.status.value
        for row in alerts_store.alerts_in_periods(warehouse, reached)
    }
    flagged = []
    for (customer_id, period_start), (p, hits) in sorted(reached.items()):
        assert p.included_minutes is not None and p.minutes_used is not None
        flagged.append(
            FlaggedCustomer(
                customer_id, p.customer_name, p.tier_name, p.minutes_used, p.included_minutes,
                usage_percentage(p.minutes_used, p.included_minutes) or 0.0, hits[-1],
                statuses.get((customer_id, period_start, p.included_minutes, hits[-1]), "unknown"),
                days_left_in_period(p.period_end, clock_times.get(p.test_clock or "", as_of)),
            )
        )
    return flagged


def _send_digest(
    warehouse: Warehouse,
    notifier: NotifierResource,
    brand: Brand,
    periods: list[CurrentPeriodUsage],
    outcome: AlertRunOutcome,
    policy: SilencePolicy,
    clock_times: dict[str, datetime],
    log: Log,
) -> None:
    """One ops digest with whatever ops have not seen yet; nothing new → no digest."""
    rows = alerts_store.alerts_to_report(warehouse)
    silence = alerts_store.silence_to_report(warehouse, outcome.silent)
    if not rows and not silence:
        return
    names = {p.customer_id: p.customer_name for p in periods}
    clocks = {p.customer_id: clock_times.get(p.test_clock or "", outcome.as_of) for p in periods}
    today = outcome.as_of.date()
    counts = Counter(
        r.threshold_pct for r in rows if r.status in (AlertStatus.NOTIFIED, AlertStatus.PENDING)
    )
    digest = OpsDigest(
        as_of=outcome.as_of,
        alerts=[
            DigestAlert(
                r.customer_id, names.get(r.customer_id), r.tier_name, r.threshold_pct, r.minutes_used,
                r.included_minutes, r.usage_pct, days_left_in_period(r.period_end, clocks.get(r.customer_id, outcome.as_of)),
                _outcome_text(r),
            )
            for r in rows
        ],
        silent=[
            DigestSilence(s.customer_id, names.get(s.customer_id), s.last_usage_date, s.active_days, (today - s.silent_since).days)
            for s in silence
        ],
        counts_by_threshold=[(t, counts.get(t, 0)) for t in outcome.thresholds],
        superseded_count=sum(r.status is AlertStatus.SUPERSEDED for r in rows),
        failed_count=sum(r.status is AlertStatus.PENDING and r.last_error is not None for r in rows),
        silence_window_days=policy.window_days,
    )
    subject, text, html = ops_digest_texts(digest, brand)
    try:
        outcome.digest = notifier.send_ops_alert(subject, text, html)
    except DeliveryError as error:
        # Nothing is marked reported: the next run's digest carries these rows again.
        outcome.digest_error = str(error)
        log.error(f"ops digest not delivered (the next run sends it again): {error}")
        return
    alerts_store.mark_reported(warehouse, rows, silence, datetime.now(timezone.utc))


# --- Dagster ---------------------------------------------------------------------------------------


def alert_metadata(outcome: AlertRunOutcome, channel: str) -> dict[str, dg.MetadataValue]:
    """Stable keys every run: one int per configured threshold, so each plots as a time series."""
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "customer_id": f.customer_id,
                    "customer": f.customer_name or "",
                    "tier": f.tier_name or "",
                    "minutes_used": f.minutes_used,
                    "included_minutes": f.included_minutes,
                    "usage_pct": f.usage_pct,
                    "threshold_pct": f.threshold_pct,
                    "alert_status": f.alert_status,
                    "days_left": f.days_left,
                }
            )
            for f in outcome.flagged
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("customer_id", "string"),
                dg.TableColumn("customer", "string"),
                dg.TableColumn("tier", "string"),
                dg.TableColumn("minutes_used", "int"),
                dg.TableColumn("included_minutes", "int"),
                dg.TableColumn("usage_pct", "float"),
                dg.TableColumn("threshold_pct", "int", description="highest threshold reached this period"),
                dg.TableColumn("alert_status", "string"),
                dg.TableColumn("days_left", "int"),
            ]
        ),
    )
    at_threshold = Counter(f.threshold_pct for f in outcome.flagged)
    metadata: dict[str, dg.MetadataValue] = {
        "flagged_customers": table,
        "as_of": dg.MetadataValue.timestamp(outcome.as_of),
        "delivery_channel": dg.MetadataValue.text(channel),
        "subscriptions_checked": dg.MetadataValue.int(outcome.subscriptions_checked),
        "subscriptions_without_usage": dg.MetadataValue.int(len(outcome.without_usage)),
        "subscriptions_stale": dg.MetadataValue.int(len(outcome.stale)),
        "flagged_customer_count": dg.MetadataValue.int(len(outcome.flagged)),
    }
    for threshold in outcome.thresholds:
        metadata[f"customers_at_{threshold}pct"] = dg.MetadataValue.int(at_threshold.get(threshold, 0))
        metadata[f"alerts_sent_{threshold}pct"] = dg.MetadataValue.int(outcome.sent.get(threshold, 0))
    metadata |= {
        "alerts_superseded": dg.MetadataValue.int(outcome.superseded),
        "alerts_withdrawn": dg.MetadataValue.int(outcome.withdrawn),
        "alerts_expired": dg.MetadataValue.int(outcome.expired),
        "delivery_failures": dg.MetadataValue.int(len(outcome.failures)),
        "silent_customers": dg.MetadataValue.int(len(outcome.silent)),
        "ops_digest_sent": dg.MetadataValue.int(1 if outcome.digest else 0),
    }
    if outcome.digest_error:
        metadata["ops_digest_error"] = dg.MetadataValue.text(outcome.digest_error)
    return metadata


@dg.asset(
    key=ASSET_KEY,
    group_name=GROUP,
    kinds={"sql", "email"},
    owners=OWNERS,
    deps=UPSTREAM,
    description="80 %/100 % usage alerts per customer and billing period (usage_alerts, usage_silence), "
    "the customer e-mails and the ops digest.",
)
def usage_alerts(
    context: dg.AssetExecutionContext,
    config: UsageAlertsConfig,
    warehouse: WarehouseResource,
    notifier: NotifierResource,
    stripe: StripeResource,
) -> dg.MaterializeResult:
    settings = Settings.from_env()
    thresholds = parse_thresholds(config.thresholds)
    outcome = run_usage_alerts(
        warehouse.get(), notifier, stripe, load_brand(settings.brand_file), load_tier_catalog(settings.tiers_file),
        thresholds, config.silence_policy(), config.as_of_instant(), context.log,
    )
    return dg.MaterializeResult(metadata=alert_metadata(outcome, notifier.channel))


@dg.asset_check(asset=ASSET_KEY, name=DELIVERED_CHECK, description="Every reached threshold's e-mail was delivered.")
def usage_alerts_delivered(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    undelivered = alerts_store.undelivered_alerts(warehouse.get())
    listed = [f"{r.customer_id} {r.threshold_pct} % ({r.attempts} attempts): {r.last_error}" for r in undelivered[:20]]
    return dg.AssetCheckResult(
        passed=not undelivered,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "undelivered_alerts": dg.MetadataValue.int(len(undelivered)),
            "undelivered": dg.MetadataValue.md("\n".join(f"- {line}" for line in listed) or "none"),
        },
    )


defs = dg.Definitions(assets=[usage_alerts], asset_checks=[usage_alerts_delivered])
