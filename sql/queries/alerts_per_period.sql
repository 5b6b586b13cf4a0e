-- alerts_per_period: usage-threshold alerts per billing month and threshold, by outcome.
--
-- Question   How many customers reached 80 % / 100 % of their minutes per billing month, and how many
--            of those alerts were delivered, superseded, withdrawn, expired or are still pending?
-- Grain      one row per (billing_month, threshold_pct).
-- Parameters none.
-- Columns    reached      usage_alerts rows (one per customer, period, included minutes and threshold)
--            notified     the customer e-mail was accepted by the mail server (status 'notified')
--            superseded   reached together with a higher threshold: recorded, never sent
--            pending      reached, not yet delivered (retried by the next run while still true)
--            withdrawn / expired   no longer true before delivery / period ended before delivery
--            ops_listed   listed in a delivered ops digest (ops_notified_at set)
-- Caveats    - billing_month is the UTC month in which the billing period starts ('YYYY-MM'); on
--              PostgreSQL run with `SET TIME ZONE 'UTC'` (the month is cut from the timestamp's text).
--            - A tier change inside a period re-arms the thresholds (included_minutes is in the key),
--              so one customer can have two rows for the same threshold and period.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
SELECT
    SUBSTR(CAST(a.period_start AS VARCHAR(32)), 1, 7) AS billing_month,
    a.threshold_pct,
    COUNT(*) AS reached,
    COUNT(DISTINCT a.customer_id) AS customers,
    SUM(CASE WHEN a.status = 'notified' THEN 1 ELSE 0 END) AS notified,
    SUM(CASE WHEN a.status = 'superseded' THEN 1 ELSE 0 END) AS superseded,
    SUM(CASE WHEN a.status = 'pending' THEN 1 ELSE 0 END) AS pending,
    SUM(CASE WHEN a.status = 'withdrawn' THEN 1 ELSE 0 END) AS withdrawn,
    SUM(CASE WHEN a.status = 'expired' THEN 1 ELSE 0 END) AS expired,
    SUM(CASE WHEN a.ops_notified_at IS NOT NULL THEN 1 ELSE 0 END) AS ops_listed
FROM usage_alerts a
GROUP BY SUBSTR(CAST(a.period_start AS VARCHAR(32)), 1, 7), a.threshold_pct
ORDER BY billing_month, a.threshold_pct
