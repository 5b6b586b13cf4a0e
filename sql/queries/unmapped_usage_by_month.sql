-- unmapped_usage_by_month: minutes of calls nobody is billed for yet, per account code and UTC month.
--
-- Question   Which account codes carry calls that no Stripe customer can be charged for (no customer, or
--            several customers, carry the code in metadata.aisyst_account_code), and how much per month?
-- Grain      one row per (account_code, usage_month) where usage_daily.customer_id IS NULL.
-- Parameters none.
-- Caveats    - usage_month is the UTC calendar month of the calls' ended_at (usage_daily is per UTC day),
--              not a billing period.
--            - Once the account code maps to exactly one customer, the next customer sync back-fills
--              customer_id and the rows leave this result (history is attributed then).
--            - The current mapping state per code is in the view v_unmapped_usage (mapped_customers).
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
SELECT
    d.account_code,
    SUBSTR(CAST(d.usage_date AS VARCHAR(10)), 1, 7) AS usage_month,
    COUNT(*) AS days_with_calls,
    SUM(d.calls) AS calls,
    SUM(d.answered_calls) AS answered_calls,
    SUM(d.billable_seconds) AS billable_seconds,
    SUM(d.billable_minutes) AS billable_minutes,
    MIN(d.usage_date) AS first_day,
    MAX(d.usage_date) AS last_day
FROM usage_daily d
WHERE d.customer_id IS NULL
GROUP BY d.account_code, SUBSTR(CAST(d.usage_date AS VARCHAR(10)), 1, 7)
ORDER BY usage_month, billable_minutes DESC, d.account_code
