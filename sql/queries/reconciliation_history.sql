-- reconciliation_history: every reconciliation of every customer-period, with what changed since the
-- previous run and what the run repaired.
--
-- Question   For a customer, how did the gap between our CDR minutes and Stripe's meter evolve run by
--            run, which cause was named, and how many minutes did corrections add?
-- Grain      one row per (customer_id, period_start, run_id): one meter_reconciliation row.
-- Parameters none; add `WHERE r.customer_id = '<cus_…>'` for one customer.
-- Columns    previous_delta_minutes   delta_minutes of the previous run of the same customer-period
--                                     (NULL for the first run)
--            corrections_planned / corrections_sent_minutes
--                                     meter_corrections the run planned (run_id), and the minutes of
--                                     those that Stripe accepted (status 'sent')
-- Caveats    - delta_minutes = cdr_minutes - stripe_minutes over the run's window, which grows nightly
--              while the period runs (window_end is the last settled UTC midnight): compare deltas of
--              open windows with care. See docs/reconciliation.md for statuses and causes.
--            - Stripe's meter summaries are eventually consistent: a correction sent by one run shows in
--              stripe_minutes of a later run, not its own.
--            - The newest row per customer-period is also in the view v_reconciliation_latest.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (window functions: SQLite >= 3.25).
WITH corrections AS (
    SELECT
        mc.run_id,
        mc.customer_id,
        mc.period_start,
        COUNT(*) AS corrections_planned,
        SUM(CASE WHEN mc.status = 'sent' THEN mc.value ELSE 0 END) AS corrections_sent_minutes
    FROM meter_corrections mc
    WHERE mc.run_id IS NOT NULL
    GROUP BY mc.run_id, mc.customer_id, mc.period_start
)
SELECT
    r.customer_id,
    c.account_code,
    r.subscription_id,
    r.period_start,
    r.period_end,
    r.run_id,
    r.reconciled_at,
    r.window_start,
    r.window_end,
    r.window_closed,
    r.cdr_minutes,
    r.stripe_minutes,
    r.delta_minutes,
    LAG(r.delta_minutes) OVER (
        PARTITION BY r.customer_id, r.period_start ORDER BY r.reconciled_at, r.run_id
    ) AS previous_delta_minutes,
    r.drift_minutes,
    r.drifting_days,
    r.status,
    r.cause,
    r.repaired_minutes,
    r.unrepaired_drift_minutes,
    COALESCE(k.corrections_planned, 0) AS corrections_planned,
    COALESCE(k.corrections_sent_minutes, 0) AS corrections_sent_minutes
FROM meter_reconciliation r
LEFT JOIN stripe_customers c ON c.customer_id = r.customer_id
LEFT JOIN corrections k
    ON k.run_id = r.run_id AND k.customer_id = r.customer_id AND k.period_start = r.period_start
ORDER BY r.customer_id, r.period_start, r.reconciled_at, r.run_id
