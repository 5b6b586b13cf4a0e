-- monthly_minutes_per_tier: billable minutes per tier and billing month.
--
-- Question   How many minutes did each tier use per billing month, how many subscriptions and calls,
--            and how many of those minutes were overage?
-- Grain      one row per (billing_month, tier_name).
-- Parameters none.
-- Source     usage_by_period (one row per subscription and billing period; see docs/tables.md).
-- Caveats    - billing_month is the UTC month in which the billing period STARTS ('YYYY-MM'): with
--              anniversary billing a period starting 2026-01-20 runs into February and is counted
--              entirely in '2026-01'. For calendar months use usage_daily instead (UTC days).
--            - The month is cut from the timestamp's text; on PostgreSQL that text follows the session
--              time zone, so run it with `SET TIME ZONE 'UTC'` (the warehouse's own connections are UTC).
--            - Minutes are the per-call ceiling minutes (each answered call rounded up on its own), the
--              same numbers the meter and the invoice annotation use; see rounding_uplift_*.sql.
--            - tier_name is the tier recorded for that period (a closed period keeps the tier it was
--              billed on); NULL tiers (unknown price) are shown as '(unknown)'.
--            - The current period is still growing: its row is as of usage_by_period.computed_at.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
SELECT
    SUBSTR(CAST(u.period_start AS VARCHAR(32)), 1, 7) AS billing_month,
    COALESCE(u.tier_name, '(unknown)') AS tier_name,
    COUNT(*) AS subscriptions,
    SUM(u.calls) AS calls,
    SUM(u.billable_seconds) AS billable_seconds,
    SUM(u.minutes_used) AS minutes_used,
    SUM(u.overage_minutes) AS overage_minutes,
    SUM(CASE WHEN u.overage_minutes > 0 THEN 1 ELSE 0 END) AS subscriptions_in_overage
FROM usage_by_period u
GROUP BY SUBSTR(CAST(u.period_start AS VARCHAR(32)), 1, 7), COALESCE(u.tier_name, '(unknown)')
ORDER BY billing_month, tier_name
