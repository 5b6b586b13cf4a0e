"""`stripe_events_sensor` (DESIGN.md §2.6): invoices, payment failures and subscription status from Stripe.

Every 5 s (AISYST_STRIPE_SENSOR_INTERVAL_SECONDS) the sensor reads the Events API for the invoice.* and customer.subscription.* events
newer than its cursor and applies them, oldest first, to stripe_invoices and stripe_subscriptions;
then it sends the ops alerts those events raised. Nothing has to be reachable from the internet.

Why the sensor applies the events itself instead of requesting a run (DAGSTER.md §4, §9.1): an
event is one or two single-row upserts in one transaction, so a tick's whole work is a few list
calls plus milliseconds of SQL — a run would cost seconds of launch overhead for that, fill the run
history with a run every 30 s, and add a queue between Stripe and the table that the "current
within a minute" promise does not need. The 60 s evaluation limit is respected by a budget per tick
(`TICK_TIME_BUDGET_SECONDS`, `MAX_EVENTS_PER_TICK` events, `MAX_SCAN_PAGES_PER_TICK` pages while
looking for the oldest event); a backlog is worked through over several ticks, the cursor moving only
over applied events — and over an event that cannot be read, skipped with a warning and an
`event_unreadable` ops alert rather than failing every tick. A page of events is applied in one transaction.

The tick's work is `apply_new_events` (services/stripe_events.py, where the budgets are); the sensor
reads its cursor and resources, logs what the tick did and reports it as a stripe_invoices event.

Exactly once: each event is applied in the same transaction as its `stripe_events_applied` row, so
when a tick dies after applying but before Dagster stores the new cursor, the next tick lists those
events again and finds them applied; the webhook receiver may deliver the same events too.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from aisyst_pipelines.assets.common import row_count_metadata
from aisyst_pipelines.assets.stripe_events import STRIPE_INVOICES
from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.deployment import Deployment, DeploymentError
from aisyst_pipelines.services.stripe_events import apply_new_events
from aisyst_pipelines.services.stripe_sync import subscription_mirror_row
from jobs.cursors import state_of, utc_time, with_readable
from resources import CatalogResource, NotifierResource, StripeResource, WarehouseResource


SENSOR_NAME = "stripe_events_sensor"


def build_stripe_events_sensor(interval_seconds: int = 5) -> dg.SensorDefinition:
    """The sensor, ticking at most every `interval_seconds` (definitions.py: AISYST_STRIPE_SENSOR_INTERVAL_SECONDS)."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Applies Stripe invoice.* and customer.subscription.* events (Events API, oldest first, each "
            "exactly once) to stripe_invoices and stripe_subscriptions, and e-mails ops about failed "
            "payments, past_due/unpaid subscriptions, failed finalizations, renewal invoices finalized "
            "without our usage lines and invoices paid by invoice that pass their due date (once each). "
            "Cursor: the last applied event (JSON)."
        ),
    )
    def stripe_events_sensor(
        context: dg.SensorEvaluationContext,
        stripe: StripeResource,
        warehouse: WarehouseResource,
        notifier: NotifierResource,
        catalog: CatalogResource,
    ) -> dg.SensorResult:
        return events_tick(context, stripe, warehouse, notifier, catalog)

    return stripe_events_sensor


def events_tick(
    context: dg.SensorEvaluationContext,
    stripe: StripeResource,
    warehouse: WarehouseResource,
    notifier: NotifierResource,
    catalog: CatalogResource,
) -> dg.SensorResult:
    mirror_row = subscription_mirror_row(stripe.catalog, catalog.tiers(), catalog.legacy_tier_price_ids)
    tick = apply_new_events(
        stripe.events, warehouse.get(), notifier, EventsCursor.from_json(state_of(context.cursor)),
        now=datetime.now(timezone.utc), mirror_row=mirror_row,
    )
    result, delivery = tick.poll, tick.delivery
    context.log.info(tick.summary())
    for skipped in result.unreadable:
        context.log.warning(f"Stripe event {skipped.reference} cannot be read, skipped (ops alerted): {skipped.reason}")
    if delivery.last_error:
        context.log.warning(f"ops alert delivery failed, retried next tick: {delivery.last_error}")
    for invoice_id in tick.newly_overdue:
        context.log.warning(f"invoice {invoice_id} is past its due date and unpaid (ops alerted)")

    if result.rate_limited:
        context.log.warning("Stripe answered 429 (rate limit) through every retry: the tick ends here, the next one continues")
    if not tick.new_events and not delivery.sent and not result.unreadable:
        if result.rate_limited:
            reason = f"paused by Stripe's rate limit ({result.pages} page(s) read, continuing next tick)"
        elif result.cursor.scanning and result.more_waiting:
            reason = f"looking for the oldest listed Stripe event ({result.pages} page(s) read, continuing next tick)"
        else:
            reason = f"no new Stripe events ({result.pages} page(s) read)"
        return dg.SensorResult(cursor=readable_cursor(result.cursor), skip_reason=dg.SkipReason(reason))
    asset_events = []
    if tick.new_events:
        asset_events.append(dg.AssetMaterialization(
            asset_key=STRIPE_INVOICES.key,
            description="Stripe events applied by stripe_events_sensor",
            metadata={
                "events_applied": dg.MetadataValue.int(len(result.applied)),
                "events_stale": dg.MetadataValue.int(result.counts().get("stale", 0)),
                "events_duplicate": dg.MetadataValue.int(result.counts().get("duplicate", 0)),
                "events_unreadable": dg.MetadataValue.int(len(result.unreadable)),
                "events_by_type": dg.MetadataValue.json(result.by_type()),
                "ops_alerts_raised": dg.MetadataValue.int(sum(len(o.alerts) for o in result.outcomes)),
                "ops_alerts_sent": dg.MetadataValue.int(delivery.sent),
                "last_event_id": dg.MetadataValue.text(result.cursor.last_event_id or ""),
                "backlog_left": dg.MetadataValue.bool(result.more_waiting),
                "retention_gap": dg.MetadataValue.bool(result.retention_gap),
                **row_count_metadata(warehouse.get(), "stripe_invoices"),
            },
        ))
    return dg.SensorResult(cursor=readable_cursor(result.cursor), asset_events=asset_events)


def readable_cursor(cursor: EventsCursor) -> str:
    """The events cursor with what it means in words (jobs/cursors.py)."""
    return with_readable(cursor.to_json(), {
        "last_applied_event": cursor.last_event_id,
        "its_created_time": utc_time(cursor.last_created),
        "mode": "looking for the oldest listed event" if cursor.scanning else "following new events",
    })


stripe_events_sensor = build_stripe_events_sensor()


def events_applied_since(deployment: Deployment, since: float) -> dict[str, int]:
    """What the daemon's ticks of the sensor applied since `since` (a time.time()), once a tick that
    started after it found no backlog: events applied and ops alerts sent, summed."""
    ticks = deployment.wait_for_ticks(SENSOR_NAME, since=since)
    while True:
        for tick in ticks:
            if tick.status == "FAILURE":
                raise DeploymentError(f"a tick of {SENSOR_NAME} failed: {tick.error}")
        records = deployment.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=STRIPE_INVOICES.key, after_timestamp=since), limit=1000, ascending=True
        ).records
        metadata = [r.event_log_entry.asset_materialization.metadata for r in records if r.event_log_entry.asset_materialization]
        if not metadata or not metadata[-1]["backlog_left"].value:
            return {
                "events_applied": sum(int(m["events_applied"].value) for m in metadata),  # type: ignore[arg-type]
                "ops_alerts_sent": sum(int(m["ops_alerts_sent"].value) for m in metadata),  # type: ignore[arg-type]
            }
        ticks = deployment.wait_for_ticks(SENSOR_NAME, since=ticks[-1].timestamp)
