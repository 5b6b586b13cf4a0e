"""`stripe_events_sensor` (DESIGN.md §2.6): invoices, payment failures and subscription status from Stripe.

Every 30 s the sensor reads the Events API for the invoice.* and customer.subscription.* events
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
from dagster._core.definitions.sensor_definition import SensorExecutionData

from aisyst_pipelines.assets.stripe_events import STRIPE_INVOICES
from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.services.stripe_events import apply_new_events
from aisyst_pipelines.services.stripe_sync import subscription_mirror_row
from jobs.sensor_once import evaluate_sensor_once, store_sensor_cursor
from resources import CatalogResource, NotifierResource, StripeResource, WarehouseResource


@dg.sensor(
    name="stripe_events_sensor",
    minimum_interval_seconds=30,
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
    mirror_row = subscription_mirror_row(stripe.catalog, catalog.tiers(), catalog.legacy_tier_price_ids)
    tick = apply_new_events(
        stripe.events, warehouse.get(), notifier, EventsCursor.from_json(context.cursor),
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

    if not tick.new_events and not delivery.sent and not result.unreadable:
        reason = (
            f"looking for the oldest listed Stripe event ({result.pages} page(s) read, continuing next tick)"
            if result.cursor.scanning and result.more_waiting
            else f"no new Stripe events ({result.pages} page(s) read)"
        )
        return dg.SensorResult(cursor=result.cursor.to_json(), skip_reason=dg.SkipReason(reason))
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
            },
        ))
    return dg.SensorResult(cursor=result.cursor.to_json(), asset_events=asset_events)


# Where one-off passes (`aisyst demo`) keep their own cursor in the Dagster instance's key-value
# storage: the daemon's cursor belongs to the running code location.
CLI_CURSOR_KEY = "aisyst/stripe_events_sensor/cli_cursor"


def events_once(instance: dg.DagsterInstance, definitions: dg.Definitions) -> SensorExecutionData:
    """Evaluate `stripe_events_sensor` once in this process against `instance` (as `ingest_once` does
    for the landing sensor): the events are applied, the ops alerts sent, and the tick's asset event
    recorded in the instance so that `dagster dev` shows it."""
    tick = evaluate_sensor_once(instance, definitions, stripe_events_sensor.name, CLI_CURSOR_KEY)
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
    store_sensor_cursor(instance, CLI_CURSOR_KEY, tick)  # after what it stands for is recorded
    return tick
