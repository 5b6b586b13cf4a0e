-- v_reconciliation_latest: the newest reconciliation of every customer-period (meter_reconciliation
-- keeps one row per nightly run; this is the one to look at).
--   window_start/window_end   the compared window: the period floored to the minute, cut at the last
--                             settled UTC midnight while the period runs (window_closed = 0)
--   cdr_minutes / stripe_minutes   call_records vs Stripe's meter event summaries over that window
--   delta_minutes   cdr - stripe; status is its sign: under_metered (> 0), over_metered (< 0), match
--   drift_minutes   sum of |daily delta|: days drifting both ways do not cancel out here
--   unrepaired_drift_minutes   drift not covered by corrections sent or still in flight
--   cause           unmapped_account_code, late_cdr, period_edge, duplicate_cdr, stripe_processing,
--                   several, or NULL (not explained by the warehouse: e.g. a lost meter event)
--   detail          JSON: the window and each drifting day with evidence, repair, cancel window
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (created by migration 0004).
WITH ranked AS (
    SELECT
        r.*,
        ROW_NUMBER() OVER (
            PARTITION BY r.customer_id, r.period_start
            ORDER BY r.reconciled_at DESC, r.run_id DESC
        ) AS recency
    FROM meter_reconciliation r
)
SELECT
    ranked.customer_id,
    c.account_code,
    ranked.subscription_id,
    ranked.period_start,
    ranked.period_end,
    ranked.window_start,
    ranked.window_end,
    ranked.window_closed,
    ranked.cdr_minutes,
    ranked.stripe_minutes,
    ranked.delta_minutes,
    ranked.drift_minutes,
    ranked.drifting_days,
    ranked.status,
    ranked.cause,
    ranked.repaired_minutes,
    ranked.unrepaired_drift_minutes,
    ranked.detail,
    ranked.run_id,
    ranked.reconciled_at
FROM ranked
LEFT JOIN stripe_customers c ON c.customer_id = ranked.customer_id
WHERE ranked.recency = 1
