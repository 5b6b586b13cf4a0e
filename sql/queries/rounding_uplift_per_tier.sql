-- rounding_uplift_per_tier: how many minutes the per-call ceiling adds, per tier.
--
-- Question   Billable minutes are each call's seconds rounded UP to a whole minute on their own
--            (a 61-second call bills 2 minutes). How much more is that than the raw talk time
--            (billable seconds / 60), per tier?
-- Grain      one row per tier_name (all billing periods in usage_by_period).
-- Parameters none. Add `WHERE u.period_start >= ... AND u.period_start < ...` to restrict the periods.
-- Columns    raw_minutes      SUM(billable_seconds) / 60, rounded to 2 decimals
--            uplift_minutes   minutes_used - raw_minutes (what rounding adds), 2 decimals
--            uplift_pct       uplift as a percentage of the raw minutes, 2 decimals; NULL without seconds
-- Caveats    - Unanswered calls bill 0 minutes and have 0 billable seconds, so they do not move the
--              uplift; their number still counts in `calls`.
--            - Decimals come from the `60.0`/`100.0` literals (NUMERIC on PostgreSQL, REAL on SQLite,
--              where an integer division would truncate); the last decimal may differ on exact halves.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
SELECT
    COALESCE(u.tier_name, '(unknown)') AS tier_name,
    COUNT(DISTINCT u.customer_id) AS customers,
    SUM(u.calls) AS calls,
    SUM(u.billable_seconds) AS billable_seconds,
    ROUND(SUM(u.billable_seconds) / 60.0, 2) AS raw_minutes,
    SUM(u.minutes_used) AS billable_minutes,
    ROUND(SUM(u.minutes_used) - SUM(u.billable_seconds) / 60.0, 2) AS uplift_minutes,
    ROUND(
        100.0 * (SUM(u.minutes_used) * 60 - SUM(u.billable_seconds))
        / NULLIF(SUM(u.billable_seconds), 0),
        2
    ) AS uplift_pct
FROM usage_by_period u
GROUP BY COALESCE(u.tier_name, '(unknown)')
ORDER BY tier_name
