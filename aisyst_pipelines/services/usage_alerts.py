"""The daily usage-threshold alerts (DESIGN.md §2.5): one pass over every served subscription.

For each served subscription's current billing period (as the Stripe sync mirrored it, with the
minutes `usage_by_period` computed for exactly that period — the job refreshes both first):
1. pending alerts of periods that are no longer current (renewed, subscription ended) → `expired`;
2. per customer-period, `billing.thresholds.plan_alerts` decides: the highest newly reached
   threshold is notified, lower ones are `superseded`; unlimited and unknown tiers never alert;
3. the customer e-mail goes to the Stripe customer's address, with the next invoice as Stripe
   previews it (amount, tax, date), the next tier as upgrade hint and a customer-portal session link; a failed delivery keeps the row `pending` with `last_error`
   (retried by the next run, never marked sent);
4. silence: customers with usage on most of the last 14 days and none in the last 2;
5. one ops digest with every alert whose status ops have not seen yet and every new silence episode.
A second pass on the same day finds nothing new and sends nothing.

Time: the pass's `as_of`. Customers on a Stripe test clock live at the clock's frozen time, so their
"days left" is counted from it.

Called by the `usage_alerts` asset and the alerts benchmark.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

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
    AlertStatus,
    RecordedAlert,
    SilencePolicy,
    SilentCustomer,
    days_left_in_period,
    find_silent_customers,
    plan_alerts,
    reached_thresholds,
    usage_percentage,
)
from aisyst_pipelines.billing.tiers import TierCatalog
from aisyst_pipelines.billing.usage import CallTotals, PeriodUsage
from aisyst_pipelines.mail import Delivery, DeliveryError, Notifier
from aisyst_pipelines.services.invoice_previews import NextInvoices
from aisyst_pipelines.templates import Brand
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import usage_alerts_store as store
from aisyst_pipelines.warehouse.usage_alerts_store import AlertFacts, AlertKey, AlertRow, CurrentPeriodUsage


class ClockTimes(Protocol):
    """The Stripe customers gateway (`StripeResource.customers`), as far as the alerts use it."""

    def test_clock_times(self, clock_ids: Iterable[str]) -> dict[str, datetime]: ...


class PortalLinks(Protocol):
    """The Stripe portal gateway (`StripeResource.portal`)."""

    def session_url(self, customer_id: str, return_url: str) -> str: ...


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


@dataclass(frozen=True)
class _Pass:
    """What every step of one pass shares."""

    warehouse: Warehouse
    notifier: Notifier
    portal: PortalLinks
    next_invoices: NextInvoices
    brand: Brand
    catalog: TierCatalog
    log: Log
    as_of: datetime
    clock_times: dict[str, datetime]  # test clock id → its frozen time

    def now_of(self, period: CurrentPeriodUsage) -> datetime:
        """The customer's time: its test clock's, else the pass's as_of."""
        return self.clock_times.get(period.test_clock or "", self.as_of)


def run_usage_alerts(
    warehouse: Warehouse,
    notifier: Notifier,
    clocks: ClockTimes,
    portal: PortalLinks,
    next_invoices: NextInvoices,
    *,
    brand: Brand,
    catalog: TierCatalog,
    thresholds: tuple[int, ...],
    policy: SilencePolicy,
    as_of: datetime,
    log: Log,
) -> AlertRunOutcome:
    """The whole daily pass (see the module docstring)."""
    outcome = AlertRunOutcome(as_of=as_of, thresholds=thresholds)
    served = store.current_period_usage(warehouse)
    test_clocks = {p.test_clock for p in served if p.test_clock}
    run = _Pass(
        warehouse, notifier, portal, next_invoices, brand, catalog, log, as_of,
        clocks.test_clock_times(test_clocks) if test_clocks else {},
    )
    periods = _current_periods(run, served, outcome)
    current = {(p.customer_id, p.period_start) for p in periods}
    outcome.expired = store.expire_pending(warehouse, current)
    recorded = store.recorded_alerts(warehouse, current)
    for period in periods:
        _alert_period(run, period, recorded[(period.customer_id, period.period_start)], outcome)
    outcome.flagged = _flagged(run, periods, thresholds)

    # Silence, among the customers being served (unlimited ones too: an outage hides there as well).
    today = as_of.date()
    first, last = policy.window(today)
    customers = sorted({p.customer_id for p in periods})
    outcome.silent = find_silent_customers(store.daily_minutes(warehouse, customers, first, last), today, policy)
    store.record_silence(warehouse, outcome.silent, policy.window_days, as_of)

    _send_digest(run, periods, outcome, policy)
    return outcome


def _current_periods(run: _Pass, served: list[CurrentPeriodUsage], outcome: AlertRunOutcome) -> list[CurrentPeriodUsage]:
    """The periods still running at their customer's time, one per customer and period."""
    periods: list[CurrentPeriodUsage] = []
    seen: set[tuple[str, datetime]] = set()
    for period in served:
        if period.period_end <= run.now_of(period):
            outcome.stale.append(period.subscription_id)
            continue
        if (period.customer_id, period.period_start) in seen:
            # Alerts are per customer and period (the calls are the customer's, not a subscription's).
            run.log.warning(f"{period.customer_id} has several served subscriptions; alerting on the first only")
            continue
        seen.add((period.customer_id, period.period_start))
        periods.append(period)
    if outcome.stale:
        run.log.warning(f"{len(outcome.stale)} subscription(s) have a mirrored period that is over; run the Stripe sync")
    return periods


def _alert_period(run: _Pass, period: CurrentPeriodUsage, recorded: list[RecordedAlert], outcome: AlertRunOutcome) -> None:
    """Decide and record the period's alerts, then deliver the one to notify (if any)."""
    included = period.included_minutes
    if period.minutes_used is None:
        if included is not None:
            outcome.without_usage.append(period.subscription_id)
        return
    if included is not None:
        outcome.subscriptions_checked += 1
    plan = plan_alerts(period.minutes_used, included, recorded, outcome.thresholds)
    if plan.is_empty:
        return
    facts = AlertFacts(
        period.customer_id, period.subscription_id, period.period_start, period.period_end, period.tier_name,
        included, period.minutes_used, usage_percentage(period.minutes_used, included) or 0.0,
    )
    store.record_plan(run.warehouse, facts, plan, outcome.as_of)
    outcome.superseded += sum(status is AlertStatus.SUPERSEDED for _, status in plan.new_alerts)
    outcome.withdrawn += sum(change.status is AlertStatus.WITHDRAWN for change in plan.status_changes)
    if plan.notify is None:
        return
    assert included is not None
    key = AlertKey(period.customer_id, period.period_start, included, plan.notify)
    if not store.claim_delivery(run.warehouse, key, datetime.now(timezone.utc)):
        run.log.warning(f"{plan.notify} % alert of {period.customer_id} is being delivered by another run")
        return
    error = _deliver(run, period, key, run.now_of(period))
    if error is None:
        outcome.sent[plan.notify] += 1
        run.log.info(f"{plan.notify} % alert sent to {period.customer_id}")
    else:
        outcome.failures.append((period.customer_id, plan.notify, error))
        run.log.warning(f"{plan.notify} % alert to {period.customer_id} not delivered (retried next run): {error}")


def _deliver(run: _Pass, period: CurrentPeriodUsage, key: AlertKey, now: datetime) -> str | None:
    """Send one claimed customer alert and record the attempt; returns the error (None = delivered)."""
    if not period.customer_email:
        error: str | None = "the Stripe customer has no e-mail address"
    else:
        try:
            run.notifier.send(customer_alert_message(_customer_alert(run, period, key.threshold_pct, now), run.brand))
            error = None
        except DeliveryError as failure:
            error = str(failure)
    store.record_delivery(run.warehouse, key, datetime.now(timezone.utc), error)
    return error


def upgrade_hint(included_minutes: int, catalog: TierCatalog, locale: str | None = None) -> UpgradeHint | None:
    """The next tier up, its price written for the customer's `locale`."""
    tier = next_tier(included_minutes, catalog.tiers)
    if tier is None:
        return None
    price = format_price(tier.unit_amount, tier.currency, tier.interval if tier.interval_count == 1 else None, locale)
    return UpgradeHint(tier.name, tier.included_minutes, price)


def subscription_usage(period: CurrentPeriodUsage) -> SubscriptionUsage:
    totals = CallTotals(period.calls or 0, period.billable_seconds or 0, period.minutes_used or 0)
    return SubscriptionUsage(
        period.customer_id,
        period.subscription_id,
        period.tier_name,
        PeriodUsage(Period(period.period_start, period.period_end), period.included_minutes, totals),
    )


def _customer_alert(run: _Pass, period: CurrentPeriodUsage, threshold: int, now: datetime) -> CustomerAlert:
    assert period.included_minutes is not None and period.customer_email
    upgrade = upgrade_hint(period.included_minutes, run.catalog, period.preferred_locale)
    portal_url = None
    if upgrade is not None:
        try:
            portal_url = run.portal.session_url(period.customer_id, run.brand.portal_return_url)
        except Exception as error:  # noqa: BLE001 - the alert matters more than the link
            run.log.warning(f"no portal link for {period.customer_id} ({type(error).__name__}); the e-mail links the sign-in page")
    try:
        next_invoice = run.next_invoices.preview_next(period.subscription_id)
    except Exception as error:  # noqa: BLE001 - the alert matters more than the preview
        next_invoice = None
        run.log.warning(f"no next-invoice preview for {period.subscription_id} ({type(error).__name__}); the e-mail goes without it")
    return CustomerAlert(
        subscription_usage(period), threshold, period.customer_name, period.customer_email, now, upgrade, portal_url, next_invoice,
        preferred_locale=period.preferred_locale,
    )


def _flagged(run: _Pass, periods: list[CurrentPeriodUsage], thresholds: tuple[int, ...]) -> list[FlaggedCustomer]:
    reached = {
        (p.customer_id, p.period_start): (p, reached_thresholds(p.minutes_used or 0, p.included_minutes, thresholds))
        for p in periods
    }
    reached = {key: value for key, value in reached.items() if value[1]}
    statuses = {
        (row.customer_id, row.period_start, row.included_minutes, row.threshold_pct): row.status.value
        for row in store.alerts_in_periods(run.warehouse, reached)
    }
    flagged = []
    for (customer_id, period_start), (p, hits) in sorted(reached.items()):
        assert p.included_minutes is not None and p.minutes_used is not None
        flagged.append(
            FlaggedCustomer(
                customer_id, p.customer_name, p.tier_name, p.minutes_used, p.included_minutes,
                usage_percentage(p.minutes_used, p.included_minutes) or 0.0, hits[-1],
                statuses.get((customer_id, period_start, p.included_minutes, hits[-1]), "unknown"),
                days_left_in_period(p.period_end, run.now_of(p)),
            )
        )
    return flagged


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


def _send_digest(run: _Pass, periods: list[CurrentPeriodUsage], outcome: AlertRunOutcome, policy: SilencePolicy) -> None:
    """One ops digest with whatever ops have not seen yet; nothing new → no digest."""
    rows = store.alerts_to_report(run.warehouse)
    silence = store.silence_to_report(run.warehouse, outcome.silent)
    if not rows and not silence:
        return
    names = {p.customer_id: p.customer_name for p in periods}
    clocks = {p.customer_id: run.now_of(p) for p in periods}
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
    subject, text, html = ops_digest_texts(digest, run.brand)
    try:
        outcome.digest = run.notifier.send_ops_alert(subject, text, html)
    except DeliveryError as error:
        # Nothing is marked reported: the next run's digest carries these rows again.
        outcome.digest_error = str(error)
        run.log.error(f"ops digest not delivered (the next run sends it again): {error}")
        return
    store.mark_reported(run.warehouse, rows, silence, datetime.now(timezone.utc))
