-- customers_trending_to_overage (PostgreSQL version; customers_trending_to_overage.sqlite.sql is the
-- SQLite one). Time differences need a dialect function: EXTRACT(EPOCH) here, julianday() there.
--
-- Question   Which customers, at the pace of their current billing period so far, will use more than
--            their included minutes by the period's end?
-- Grain      one row per live subscription with a limited tier (included_minutes > 0) whose
--            projected minutes exceed the allowance; most projected overage first.
-- Parameters none. The pace is measured up to usage_by_period.computed_at (when the usage_by_period
--            asset last counted the period), not up to "now".
-- Method     projected_minutes = minutes_used * period_seconds / elapsed_seconds, where
--            elapsed_seconds = computed_at - period_start and period_seconds = period_end - period_start
--            (the period is [start, end)); rounded to whole minutes. projected_overage_minutes =
--            projected_minutes - included_minutes.
-- Caveats    - A straight-line projection: usage that is lumpy (month-end peaks, weekends) is
--              misjudged, and so is a period with less than one day elapsed, which is left out.
--            - Calls not yet ingested at computed_at (CDR lag) make the pace look slower.
--            - Unlimited tiers (included_minutes NULL) and 0-minute tiers never appear.
--            - Already in overage customers appear too (overage_minutes > 0 now).
WITH paced AS (
    SELECT
        v.subscription_id,
        v.customer_id,
        v.account_code,
        v.customer_name,
        v.tier_name,
        v.included_minutes,
        v.period_start,
        v.period_end,
        v.minutes_used,
        v.overage_minutes,
        v.usage_pct,
        v.computed_at,
        EXTRACT(EPOCH FROM (v.computed_at - v.period_start))::double precision AS elapsed_seconds,
        EXTRACT(EPOCH FROM (v.period_end - v.period_start))::double precision AS period_seconds
    FROM v_current_usage v
    WHERE v.included_minutes > 0 AND v.computed_at IS NOT NULL
)
SELECT
    subscription_id,
    customer_id,
    account_code,
    customer_name,
    tier_name,
    included_minutes,
    period_start,
    period_end,
    computed_at,
    minutes_used,
    usage_pct,
    CAST(ROUND(minutes_used * period_seconds / elapsed_seconds) AS BIGINT) AS projected_minutes,
    CAST(ROUND(minutes_used * period_seconds / elapsed_seconds) AS BIGINT) - included_minutes
        AS projected_overage_minutes,
    ROUND(CAST(100.0 * minutes_used * period_seconds / elapsed_seconds / included_minutes AS NUMERIC), 1)
        AS projected_usage_pct
FROM paced
WHERE elapsed_seconds >= 86400
  AND minutes_used * period_seconds / elapsed_seconds > included_minutes
ORDER BY projected_overage_minutes DESC, customer_id
