-- v_unmapped_usage: calls no Stripe customer is charged for (call_records.customer_id IS NULL), per
-- account code. They are kept, never dropped and never billed to a guessed customer (DESIGN.md §2.1);
-- the voice server may still have metered them to Stripe, which the reconciliation reports as
-- over-metering with cause unmapped_account_code.
--   mapped_customers      live Stripe customers whose metadata.aisyst_account_code is this code now:
--                         0 = nobody has it yet; 1 = mapped since the calls were loaded (the next
--                         customer sync attributes them); > 1 = ambiguous, never attributed
--   mapped_customer_id    that customer when there is exactly one
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (created by migration 0004).
WITH unmapped AS (
    SELECT
        cr.account_code,
        COUNT(*) AS calls,
        SUM(CASE WHEN cr.billable_minutes > 0 THEN 1 ELSE 0 END) AS billable_calls,
        SUM(cr.billable_seconds) AS billable_seconds,
        SUM(cr.billable_minutes) AS billable_minutes,
        MIN(cr.ended_at) AS first_call_ended_at,
        MAX(cr.ended_at) AS last_call_ended_at,
        MAX(cr.ingested_at) AS last_ingested_at
    FROM call_records cr
    WHERE cr.customer_id IS NULL
    GROUP BY cr.account_code
),
mapped AS (
    SELECT
        sc.account_code,
        COUNT(*) AS customers,
        MIN(sc.customer_id) AS customer_id
    FROM stripe_customers sc
    WHERE sc.deleted = 0 AND sc.account_code IS NOT NULL
    GROUP BY sc.account_code
)
SELECT
    unmapped.account_code,
    unmapped.calls,
    unmapped.billable_calls,
    unmapped.billable_seconds,
    unmapped.billable_minutes,
    unmapped.first_call_ended_at,
    unmapped.last_call_ended_at,
    unmapped.last_ingested_at,
    COALESCE(mapped.customers, 0) AS mapped_customers,
    CASE WHEN mapped.customers = 1 THEN mapped.customer_id END AS mapped_customer_id
FROM unmapped
LEFT JOIN mapped ON mapped.account_code = unmapped.account_code
