-- v_current_usage: one row per live subscription (not canceled, not incomplete_expired) with the
-- minutes of its current billing period, as the Stripe sync and usage_by_period last computed them.
--   period_start/period_end   the subscription item's current period, [start, end) in UTC
--   minutes_used              billable minutes of calls that ended in the period (0 before the first call)
--   included_minutes          NULL = unlimited, or a price no source knows (tier_source = 'unknown')
--   minutes_unused            NULL for unlimited tiers; overage_minutes 0 for them
--   usage_pct                 minutes_used / included_minutes * 100; NULL for unlimited and 0-minute tiers
--   computed_at               when usage_by_period last recomputed this period (NULL: not yet)
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (created by migration 0002).
SELECT
    s.subscription_id,
    s.customer_id,
    c.account_code,
    c.name AS customer_name,
    s.status,
    s.tier_name,
    s.tier_source,
    s.included_minutes,
    s.current_period_start AS period_start,
    s.current_period_end AS period_end,
    COALESCE(u.calls, 0) AS calls,
    COALESCE(u.minutes_used, 0) AS minutes_used,
    CASE
        WHEN s.included_minutes IS NULL THEN NULL
        WHEN COALESCE(u.minutes_used, 0) >= s.included_minutes THEN 0
        ELSE s.included_minutes - COALESCE(u.minutes_used, 0)
    END AS minutes_unused,
    COALESCE(u.overage_minutes, 0) AS overage_minutes,
    CASE
        WHEN u.subscription_id IS NOT NULL THEN u.usage_pct
        WHEN s.included_minutes > 0 THEN 0.0
    END AS usage_pct,
    u.computed_at
FROM stripe_subscriptions s
LEFT JOIN stripe_customers c ON c.customer_id = s.customer_id
LEFT JOIN usage_by_period u ON u.subscription_id = s.subscription_id AND u.period_start = s.current_period_start
WHERE s.status NOT IN ('canceled', 'incomplete_expired')
