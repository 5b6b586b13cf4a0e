"""The warehouse tables as SQLAlchemy Core objects: the shape the code reads and writes.

The versioned migrations in `migrations/versions/` create exactly this shape, step by step; the test
`tests/warehouse/test_migrations.py` compares the upgraded database with this module, so the two
cannot drift apart. Table and column names are the analysts' contract (DESIGN.md §3): add freely,
rename only through a migration and a note in docs/tables.md.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from .types import UtcDateTime

metadata = MetaData()

# --- CDR ingestion (migration 0001) ---------------------------------------------------------------

cdr_files = Table(
    "cdr_files",
    metadata,
    Column("sha256", String(64), primary_key=True),  # content hash: a file already loaded is skipped
    Column("file_path", Text, nullable=False),
    Column("format", String(16), nullable=False),  # canonical_csv, canonical_jsonl, twilio, asterisk
    Column("size_bytes", BigInteger, nullable=False),
    Column("rows_total", Integer, nullable=False),
    Column("rows_loaded", Integer, nullable=False),  # new call records inserted
    Column("rows_duplicate", Integer, nullable=False),  # identical copies of calls already loaded
    Column("rows_rejected", Integer, nullable=False),
    Column("ingested_at", UtcDateTime, nullable=False),
    # migration 0007: a file the pipeline could not take keeps a row that says why
    Column("status", String(16), nullable=False, server_default="loaded"),  # loaded | failed
    Column("failure_reason", Text, nullable=True),
)

call_records = Table(
    "call_records",
    metadata,
    Column("call_id", String(128), primary_key=True),
    Column("account_code", String(128), nullable=False),
    Column("customer_id", String(64), nullable=True),  # Stripe customer; NULL while the account is unmapped
    Column("direction", String(16), nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("billable_seconds", Integer, nullable=False),
    Column("billable_minutes", Integer, nullable=False),
    Column("caller_hash", String(64), nullable=True),  # HMAC-SHA256 of the number, never the number
    Column("callee_hash", String(64), nullable=True),
    Column("content_hash", String(64), nullable=False),  # tells an identical re-delivery from a conflicting one
    Column("source_file", Text, nullable=False),
    Column("source_sha256", String(64), nullable=False),  # the cdr_files row (file content) that delivered the call
    Column("source_line", Integer, nullable=False),
    Column("ingested_at", UtcDateTime, nullable=False),
    Index("ix_call_records_customer_ended", "customer_id", "ended_at"),
    # Covers the usage_daily recompute (per account and UTC day): an index-only scan on SQLite.
    Index("ix_call_records_account_ended", "account_code", "ended_at", "disposition", "billable_seconds", "billable_minutes"),
)

call_records_rejected = Table(
    "call_records_rejected",
    metadata,
    Column("source_sha256", String(64), primary_key=True),
    Column("source_line", Integer, primary_key=True),
    Column("source_file", Text, nullable=False),
    Column("call_id", String(128), nullable=True),
    Column("reason_code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw_record", Text, nullable=False),
    Column("ingested_at", UtcDateTime, nullable=False),
    Index("ix_call_records_rejected_reason", "reason_code"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("account_code", String(128), primary_key=True),
    Column("usage_date", Date, primary_key=True),  # UTC day of the calls' ended_at
    Column("customer_id", String(64), nullable=True),
    Column("calls", Integer, nullable=False),
    Column("answered_calls", Integer, nullable=False),
    Column("billable_seconds", BigInteger, nullable=False),
    Column("billable_minutes", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_usage_daily_customer_date", "customer_id", "usage_date"),
)

# --- Stripe mirror and usage per billing period (migration 0002) -----------------------------------

stripe_customers = Table(
    "stripe_customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("account_code", String(128), nullable=True),  # metadata.aisyst_account_code
    Column("name", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("preferred_locale", String(16), nullable=True),
    Column("test_clock", String(64), nullable=True),
    Column("country", String(2), nullable=True),  # address.country: picks the client group (migration 0009)
    Column("deleted", Integer, nullable=False, server_default="0"),
    Column("synced_at", UtcDateTime, nullable=False),
    Index("ix_stripe_customers_account_code", "account_code"),
)

stripe_subscriptions = Table(
    "stripe_subscriptions",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("subscription_item_id", String(64), nullable=True),  # the item whose price is the tier
    Column("price_id", String(64), nullable=True),
    Column("price_lookup_key", String(200), nullable=True),
    Column("product_id", String(64), nullable=True),
    Column("tier_name", Text, nullable=True),
    Column("included_minutes", Integer, nullable=True),  # NULL = unlimited (or unknown: see tier_source)
    Column("tier_source", String(32), nullable=False),  # price_metadata, product_metadata, tiers_file, legacy_price_id, unknown
    Column("overage_unit_amount", Integer, nullable=True),  # cents per overage minute; NULL = no overage price
    Column("currency", String(3), nullable=True),
    Column("current_period_start", UtcDateTime, nullable=True),  # from the item (Stripe has no subscription-level period)
    Column("current_period_end", UtcDateTime, nullable=True),  # exclusive
    Column("billing_cycle_anchor", UtcDateTime, nullable=True),
    Column("billing_interval", String(8), nullable=True),  # the price's recurring interval: day, week, month, year
    Column("billing_interval_count", Integer, nullable=True),
    Column("started_at", UtcDateTime, nullable=True),  # Stripe's start_date
    Column("cancel_at_period_end", Integer, nullable=False, server_default="0"),
    Column("canceled_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("test_clock", String(64), nullable=True),
    Column("synced_at", UtcDateTime, nullable=False),
    Index("ix_stripe_subscriptions_customer", "customer_id"),
)

usage_by_period = Table(
    "usage_by_period",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("period_start", UtcDateTime, primary_key=True),
    Column("period_end", UtcDateTime, nullable=False),  # exclusive: the period is [start, end)
    Column("customer_id", String(64), nullable=False),
    Column("tier_name", Text, nullable=True),
    Column("included_minutes", Integer, nullable=True),  # NULL = unlimited
    Column("calls", Integer, nullable=False),
    Column("billable_seconds", BigInteger, nullable=False),
    Column("minutes_used", BigInteger, nullable=False),
    Column("minutes_unused", BigInteger, nullable=True),  # NULL for unlimited tiers
    Column("overage_minutes", BigInteger, nullable=False),
    Column("usage_pct", Float, nullable=True),  # minutes_used / included_minutes * 100; NULL for unlimited
    Column("computed_at", UtcDateTime, nullable=False),
    Index("ix_usage_by_period_customer", "customer_id", "period_start"),
)

# --- threshold alerts (migration 0003) -------------------------------------------------------------

usage_alerts = Table(
    "usage_alerts",
    metadata,
    # The key re-arms the thresholds at renewal (period_start) and after a tier change (included_minutes).
    Column("customer_id", String(64), primary_key=True),
    Column("period_start", UtcDateTime, primary_key=True),
    Column("threshold_pct", Integer, primary_key=True),
    Column("included_minutes", Integer, primary_key=True),
    Column("subscription_id", String(64), nullable=False),
    Column("period_end", UtcDateTime, nullable=False),  # exclusive
    Column("tier_name", Text, nullable=True),
    Column("minutes_used", BigInteger, nullable=False),  # when first seen crossed
    Column("usage_pct", Float, nullable=False),
    Column("crossed_at", UtcDateTime, nullable=False),  # the run (as-of time) that first saw the crossing
    Column("status", String(16), nullable=False),  # pending, notified, superseded, withdrawn, expired
    Column("attempts", Integer, nullable=False, server_default="0"),  # customer e-mail delivery attempts
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("claimed_at", UtcDateTime, nullable=True),  # a run is delivering it now (no double send)
    Column("notified_at", UtcDateTime, nullable=True),  # the customer e-mail was accepted
    Column("ops_notified_at", UtcDateTime, nullable=True),  # listed in a delivered ops digest
    Column("last_error", Text, nullable=True),  # the last delivery failure (never a credential)
    Index("ix_usage_alerts_status", "status", "period_end"),
)

usage_silence = Table(
    "usage_silence",
    metadata,
    # One row per silence episode: usage on most of the last 14 days, none in the last 2.
    Column("customer_id", String(64), primary_key=True),
    Column("silent_since", Date, primary_key=True),  # first UTC day without usage
    Column("last_usage_date", Date, nullable=False),
    Column("active_days", Integer, nullable=False),  # days with usage in the window
    Column("window_days", Integer, nullable=False),
    Column("detected_at", UtcDateTime, nullable=False),
    Column("ops_notified_at", UtcDateTime, nullable=True),
)

# --- reconciliation with Stripe's meter (migration 0004) -------------------------------------------
# Also created by 0004: the views v_reconciliation_latest and v_unmapped_usage (sql/views/).

meter_reconciliation = Table(
    "meter_reconciliation",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("period_start", UtcDateTime, primary_key=True),  # the Stripe period, to the second
    Column("period_end", UtcDateTime, nullable=False),  # exclusive
    Column("subscription_id", String(64), nullable=True),
    Column("window_start", UtcDateTime, nullable=False),  # period_start floored to the minute
    Column("window_end", UtcDateTime, nullable=False),  # period_end floored to the minute, or the last settled midnight
    Column("window_closed", Integer, nullable=False),  # 1 = the window reaches the period's end
    Column("cdr_minutes", BigInteger, nullable=False),  # call_records minutes over [window_start, window_end)
    Column("stripe_minutes", BigInteger, nullable=False),  # meter event summaries over the same window
    Column("delta_minutes", BigInteger, nullable=False),  # cdr - stripe: positive = under-metered
    Column("drift_minutes", BigInteger, nullable=False),  # sum of |daily delta|: days do not cancel out
    Column("drifting_days", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # match, under_metered, over_metered (sign of delta)
    Column("cause", String(32), nullable=True),  # named cause of the drifting days; 'several'; NULL = unexplained
    Column("detail", Text, nullable=True),  # JSON: the window and every drifting day with evidence and repair
    Column("repaired_minutes", BigInteger, nullable=False, server_default="0"),  # corrections sent or in flight
    Column("unrepaired_drift_minutes", BigInteger, nullable=False, server_default="0"),
    Column("reconciled_at", UtcDateTime, nullable=False),
    Index("ix_meter_reconciliation_customer", "customer_id", "period_start", "reconciled_at"),
    Index("ix_meter_reconciliation_reconciled", "reconciled_at"),
)

meter_corrections = Table(
    "meter_corrections",
    metadata,
    Column("identifier", String(128), primary_key=True),  # deterministic: the n-th correction of a customer-day
    Column("customer_id", String(64), nullable=False),
    Column("usage_date", Date, nullable=False),  # the UTC day corrected
    Column("period_start", UtcDateTime, nullable=False),  # the period whose window holds event_timestamp
    Column("value", BigInteger, nullable=False),  # minutes added
    Column("event_timestamp", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("run_id", String(64), nullable=True),  # the reconciliation run that planned it
    Column("created_at", UtcDateTime, nullable=False),  # recorded (pending) before the send
    Column("sent_at", UtcDateTime, nullable=True),
    Column("status", String(16), nullable=False),  # pending, sent, failed, expired
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Index("ix_meter_corrections_customer_day", "customer_id", "usage_date"),
    Index("ix_meter_corrections_status", "status"),
)

# --- draft invoice annotation (migration 0005) -----------------------------------------------------
# One row per renewal invoice the draft_invoice_sensor picked up; the row is the ledger that makes
# annotation happen once: `queued` (sensor) → `pending` (a run is about to send add_lines: a write
# may have reached Stripe) → `annotated` | `missed` (finalized before we got there) | `skipped`
# (deleted/voided, or carries our version already) | `failed` (retried by the sensor).

invoice_annotations = Table(
    "invoice_annotations",
    metadata,
    Column("invoice_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=True),
    Column("invoice_created", UtcDateTime, nullable=False),  # Stripe's `created` of the invoice
    Column("period_start", UtcDateTime, nullable=False),  # the period that just ended, [start, end)
    Column("period_end", UtcDateTime, nullable=False),
    Column("tier_name", Text, nullable=True),
    Column("minutes_used", BigInteger, nullable=True),
    Column("minutes_included", Integer, nullable=True),  # NULL = unlimited (or not yet known)
    Column("minutes_unused", BigInteger, nullable=True),
    Column("overage_minutes", BigInteger, nullable=True),
    Column("overage_amount", BigInteger, nullable=True),  # smallest currency unit
    Column("usage_pct", Float, nullable=True),
    Column("lines_added", Integer, nullable=True),
    Column("locale", String(16), nullable=True),  # template locale of the line texts
    Column("needs_branding", Boolean, nullable=False, server_default=false()),  # listed without brand fields
    Column("annotation_version", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # queued, pending, annotated, missed, skipped, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("run_id", String(64), nullable=True),  # the Dagster run that last worked on it
    Column("detail", Text, nullable=True),
    Column("queued_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("annotated_at", UtcDateTime, nullable=True),  # when the lines were added (NULL unless annotated)
    Index("ix_invoice_annotations_status", "status", "updated_at"),
)

# The brand fields (custom fields "Client ID" and "Tier", memo, footer) last written to a
# subscription's invoice settings: the branding step writes to Stripe only when they change.
invoice_branding = Table(
    "invoice_branding",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("branding_hash", String(64), nullable=False),  # sha256 of what was sent
    Column("locale", String(16), nullable=False),
    Column("custom_fields", Text, nullable=False),  # JSON [{"name", "value"}], for analysts and support
    Column("applied_at", UtcDateTime, nullable=False),
    Column("client_group", String(64), nullable=True),  # key in client_groups.json (migration 0009)
    Column("tax_rate_ids", Text, nullable=True),  # JSON list: the subscription's default_tax_rates (0009)
)

# The audit of each final renewal invoice (migration 0009, billing/invoice_audit.py): its usage line's
# minutes against the warehouse's and Stripe's meter's, and the cause of each difference.
invoice_audits = Table(
    "invoice_audits",
    metadata,
    Column("invoice_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("period_start", UtcDateTime, nullable=False),  # the invoice's period, [start, end)
    Column("period_end", UtcDateTime, nullable=False),
    Column("finalized_at", UtcDateTime, nullable=False),
    Column("invoice_minutes", BigInteger, nullable=False),  # on its usage line
    Column("warehouse_minutes", BigInteger, nullable=False),  # the period's calls when audited
    Column("late_minutes", BigInteger, nullable=False),  # of those: calls ingested after the usage line was written
    Column("meter_minutes", BigInteger, nullable=False),  # Stripe's meter summary of the period
    Column("causes", String(64), nullable=False),  # comma-separated AuditCause values; "" = they agree
    Column("audited_at", UtcDateTime, nullable=False),
    # The late minutes' ledger: the later renewal invoice whose line carried them (once), and when.
    Column("carried_to_invoice_id", String(64), nullable=True),
    Column("carried_minutes", BigInteger, nullable=True),
    Column("carried_at", UtcDateTime, nullable=True),
    Index("ix_invoice_audits_customer", "customer_id", "period_start"),
)

# --- Stripe events: invoices, the applied-events ledger, ops alerts (migration 0006) -----------------

stripe_invoices = Table(
    "stripe_invoices",
    metadata,
    Column("invoice_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # draft, open, paid, uncollectible, void, deleted
    Column("billing_reason", String(48), nullable=True),
    Column("number", String(64), nullable=True),
    Column("amount_due", BigInteger, nullable=False),  # minor units (cents)
    Column("amount_paid", BigInteger, nullable=False),
    Column("amount_remaining", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    # Tax (migration 0009): subtotal before exclusive tax, and every tax amount (inclusive or not)
    # summed over total_taxes; NULL on rows mirrored before 0009.
    Column("subtotal", BigInteger, nullable=True),
    Column("tax", BigInteger, nullable=True),
    Column("collection_method", String(32), nullable=True),  # send_invoice: paid by invoice, has a due date (0009)
    Column("currency", String(3), nullable=False),
    Column("period_start", UtcDateTime, nullable=True),
    Column("period_end", UtcDateTime, nullable=True),  # exclusive
    Column("hosted_invoice_url", Text, nullable=True),
    Column("invoice_pdf", Text, nullable=True),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("next_payment_attempt", UtcDateTime, nullable=True),
    Column("due_date", UtcDateTime, nullable=True),
    Column("finalized_at", UtcDateTime, nullable=True),
    Column("paid_at", UtcDateTime, nullable=True),
    Column("created", UtcDateTime, nullable=False),
    # The event the row reflects: an older event arriving late never overwrites a newer one.
    Column("last_event_id", String(64), nullable=False),
    Column("last_event_type", String(64), nullable=False),
    Column("last_event_created", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Written by the overdue watch, never by an event (migration 0009): when the pipeline saw the due
    # date pass on an open invoice (and alerted ops, once), and its whole days overdue while open.
    Column("overdue_at", UtcDateTime, nullable=True),
    Column("days_overdue", Integer, nullable=True),
    Index("ix_stripe_invoices_customer", "customer_id", "created"),
    Index("ix_stripe_invoices_subscription", "subscription_id", "created"),
    Index("ix_stripe_invoices_open_due", "status", "due_date"),  # the overdue watch (migration 0009)
)

# One row per Stripe event ever applied, written in the same transaction as the rows it changed:
# whichever path delivers an event first (sensor or webhook) applies it, every later delivery is a no-op.
stripe_events_applied = Table(
    "stripe_events_applied",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("object_id", String(64), nullable=True),  # the invoice or subscription the event is about
    Column("created", UtcDateTime, nullable=False),  # the event's own time
    Column("source", String(16), nullable=False),  # sensor, webhook
    Column("outcome", String(16), nullable=False),  # applied, stale (older than the stored row), ignored
    Column("applied_at", UtcDateTime, nullable=False),
    Index("ix_stripe_events_applied_object", "object_id", "created"),
)

# Ops alerts raised by events, queued in the transaction that applied the event and sent afterwards:
# an alert is neither lost when the mail server is down nor sent twice when an event arrives twice.
stripe_event_alerts = Table(
    "stripe_event_alerts",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),  # payment_failed, subscription_past_due, …
    Column("customer_id", String(64), nullable=True),
    Column("subscription_id", String(64), nullable=True),
    Column("invoice_id", String(64), nullable=True),
    Column("subject", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # pending, sending (claimed by a deliverer), sent
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_at", UtcDateTime, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_stripe_event_alerts_status", "status", "raised_at"),
)


# --- the warehouse's own properties (migration 0007) ------------------------------------------------

warehouse_properties = Table(
    "warehouse_properties",
    metadata,
    Column("name", String(64), primary_key=True),  # e.g. pii_key_fingerprint
    Column("value", Text, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
)


# --- the next invoice of each renewing subscription, as Stripe previews it (migration 0008) ----------

stripe_invoice_previews = Table(
    "stripe_invoice_previews",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("invoice_date", UtcDateTime, nullable=False),  # when the renewal invoice will be created
    Column("period_start", UtcDateTime, nullable=False),  # the period it closes, [start, end)
    Column("period_end", UtcDateTime, nullable=False),
    Column("amount_due", BigInteger, nullable=False),  # minor units (cents)
    Column("total", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("previewed_at", UtcDateTime, nullable=False),
)
