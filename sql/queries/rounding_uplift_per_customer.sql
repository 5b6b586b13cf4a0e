-- rounding_uplift_per_customer: how many minutes the per-call ceiling adds, per customer and tier.
--
-- Question   Which customers pay the most for rounding (many short calls)? Billable minutes are each
--            call's seconds rounded UP on their own; raw minutes are billable seconds / 60.
-- Grain      one row per (customer_id, tier_name) over all billing periods in usage_by_period
--            (a customer who changed tier has one row per tier).
-- Parameters none. Add a WHERE on u.period_start to restrict the periods.
-- Columns    as rounding_uplift_per_tier.sql, plus uplift_per_call_seconds: the average number of
--            seconds rounding adds to a call (0..59 per answered call).
-- Caveats    - The per-call average divides by all calls, unanswered ones included (they add nothing).
--            - Unmapped calls (no customer) are not in usage_by_period: see unmapped_usage_by_month.sql.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
SELECT
    u.customer_id,
    c.account_code,
    COALESCE(u.tier_name, '(unknown)') AS tier_name,
    COUNT(*) AS periods,
    SUM(u.calls) AS calls,
    SUM(u.billable_seconds) AS billable_seconds,
    ROUND(SUM(u.billable_seconds) / 60.0, 2) AS raw_minutes,
    SUM(u.minutes_used) AS billable_minutes,
    ROUND(SUM(u.minutes_used) - SUM(u.billable_seconds) / 60.0, 2) AS uplift_minutes,
    ROUND(
        100.0 * (SUM(u.minutes_used) * 60 - SUM(u.billable_seconds))
        / NULLIF(SUM(u.billable_seconds), 0),
        2
    ) AS uplift_pct,
    ROUND(
        (SUM(u.minutes_used) * 60.0 - SUM(u.billable_seconds)) / NULLIF(SUM(u.calls), 0),
        1
    ) AS uplift_per_call_seconds
FROM usage_by_period u
LEFT JOIN stripe_customers c ON c.customer_id = u.customer_id
GROUP BY u.customer_id, c.account_code, COALESCE(u.tier_name, '(unknown)')
ORDER BY uplift_minutes DESC, u.customer_id
