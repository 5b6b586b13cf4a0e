-- v_customer_dashboard: one row per Stripe customer, with what a customer dashboard shows.
--   plan            the current subscription's tier (active / trialing first, then past_due, unpaid, paused,
--                   then the most recently started one, e.g. a canceled subscription)
--   minutes_used    billable minutes in the current billing period (usage_by_period; 0 before the first call)
--   minutes_included / minutes_unused   NULL for an unlimited tier
--   next_invoice_date   the end of the current period, unless the subscription ends there or has ended
--   next_invoice_amount_due / _total / _tax / _currency   that invoice as Stripe previews it
--                   (stripe_invoice_previews); NULL when no preview of the current period is known
--   country, client_group   the customer's address country and the client group it picked when the brand
--                   fields were last written (client_groups.json: tax rate and invoice template)
--   last_invoice_*, hosted_invoice_url, invoice_pdf   the newest invoice that is not a draft;
--                   last_invoice_subtotal / _tax / _total in minor units (tax: every amount of its total_taxes)
--   overdue_invoices, overdue_amount, days_overdue   the customer's open invoices past their due date
--                   (paid by invoice, e.g. Net 30): how many, the amount unpaid, the most days overdue —
--                   as of the overdue watch's last look (the events sensor, every tick); 0 / 0 / NULL when none
-- Payment history is stripe_invoices itself (one row per invoice, newest `created` first).
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (created by migration 0006, next invoice added by 0008, tax, groups and overdue by 0009).
WITH ranked_subscriptions AS (
    SELECT
        s.subscription_id,
        s.customer_id,
        s.status,
        s.price_id,
        s.tier_name,
        s.included_minutes,
        s.current_period_start,
        s.current_period_end,
        s.cancel_at_period_end,
        ROW_NUMBER() OVER (
            PARTITION BY s.customer_id
            ORDER BY
                CASE s.status
                    WHEN 'active' THEN 0 WHEN 'trialing' THEN 0 WHEN 'past_due' THEN 1
                    WHEN 'unpaid' THEN 2 WHEN 'paused' THEN 3 ELSE 4
                END,
                CASE WHEN s.current_period_start IS NULL THEN 1 ELSE 0 END,
                s.current_period_start DESC,
                s.subscription_id
        ) AS position
    FROM stripe_subscriptions s
),
ranked_invoices AS (
    SELECT
        i.invoice_id,
        i.customer_id,
        i.number,
        i.status,
        i.amount_due,
        i.amount_paid,
        i.amount_remaining,
        i.subtotal,
        i.tax,
        i.total,
        i.currency,
        i.created,
        i.paid_at,
        i.hosted_invoice_url,
        i.invoice_pdf,
        ROW_NUMBER() OVER (PARTITION BY i.customer_id ORDER BY i.created DESC, i.invoice_id DESC) AS position
    FROM stripe_invoices i
    WHERE i.status NOT IN ('draft', 'deleted')
),
overdue AS (
    SELECT
        i.customer_id,
        COUNT(*) AS overdue_invoices,
        SUM(i.amount_remaining) AS overdue_amount,
        MAX(i.days_overdue) AS days_overdue
    FROM stripe_invoices i
    WHERE i.status = 'open' AND i.overdue_at IS NOT NULL
    GROUP BY i.customer_id
)
SELECT
    c.customer_id,
    c.account_code,
    c.name,
    c.email,
    c.country,
    b.client_group,
    s.subscription_id,
    s.status AS subscription_status,
    s.tier_name AS plan,
    s.price_id,
    s.current_period_start,
    s.current_period_end,
    COALESCE(u.minutes_used, 0) AS minutes_used,
    s.included_minutes AS minutes_included,
    CASE
        WHEN s.subscription_id IS NULL OR s.included_minutes IS NULL THEN NULL
        WHEN COALESCE(u.minutes_used, 0) >= s.included_minutes THEN 0
        ELSE s.included_minutes - COALESCE(u.minutes_used, 0)
    END AS minutes_unused,
    COALESCE(u.overage_minutes, 0) AS overage_minutes,
    u.usage_pct,
    CASE
        WHEN s.status IN ('active', 'trialing', 'past_due', 'unpaid') AND s.cancel_at_period_end = 0
        THEN s.current_period_end
    END AS next_invoice_date,
    p.amount_due AS next_invoice_amount_due,
    p.total AS next_invoice_total,
    p.tax AS next_invoice_tax,
    p.currency AS next_invoice_currency,
    li.invoice_id AS last_invoice_id,
    li.number AS last_invoice_number,
    li.status AS last_invoice_status,
    li.amount_due AS last_invoice_amount_due,
    li.amount_paid AS last_invoice_amount_paid,
    li.subtotal AS last_invoice_subtotal,
    li.tax AS last_invoice_tax,
    li.total AS last_invoice_total,
    li.currency AS last_invoice_currency,
    li.created AS last_invoice_created,
    li.paid_at AS last_invoice_paid_at,
    li.hosted_invoice_url,
    li.invoice_pdf,
    COALESCE(o.overdue_invoices, 0) AS overdue_invoices,
    COALESCE(o.overdue_amount, 0) AS overdue_amount,
    o.days_overdue
FROM stripe_customers c
LEFT JOIN ranked_subscriptions s ON s.customer_id = c.customer_id AND s.position = 1
LEFT JOIN usage_by_period u ON u.subscription_id = s.subscription_id AND u.period_start = s.current_period_start
LEFT JOIN ranked_invoices li ON li.customer_id = c.customer_id AND li.position = 1
LEFT JOIN stripe_invoice_previews p
    ON p.subscription_id = s.subscription_id
    AND p.period_end = s.current_period_end
    AND s.status IN ('active', 'trialing', 'past_due', 'unpaid') AND s.cancel_at_period_end = 0
LEFT JOIN invoice_branding b ON b.subscription_id = s.subscription_id
LEFT JOIN overdue o ON o.customer_id = c.customer_id
WHERE c.deleted = 0
