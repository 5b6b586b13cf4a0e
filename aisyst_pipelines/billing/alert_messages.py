"""The e-mails of the usage alerts (DESIGN.md §2.5): the customer alert and the ops digest.

Rendered from jinja2 templates (`templates/alerts/*.{txt,html}.j2`, HTML and plain text) with the
brand settings. The customer alert is in the customer's language (the first of Stripe's
`preferred_locales` that has a folder `templates/alerts/<locale>/`: en, de, fr, es, ja; English
otherwise): its phrases come from that folder, its numbers, money and dates are formatted for the
locale by Babel. Plain values in, `email.message.EmailMessage` or texts out; delivery is the
notifier's job (`resources/notifier.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any, Protocol, TypeVar

from babel.dates import format_date
from babel.numbers import format_decimal

from aisyst_pipelines.billing.formatting import babel_locale, format_money
from aisyst_pipelines.billing.next_invoice import NextInvoice
from aisyst_pipelines.billing.thresholds import days_left_in_period
from aisyst_pipelines.billing.usage import PeriodUsage
from aisyst_pipelines.templates import Brand, locale_folders, pick_locale, render, template_environment

class TierOffer(Protocol):
    """What the upgrade hint needs to know about a tier of the catalog."""

    @property
    def name(self) -> str: ...
    @property
    def included_minutes(self) -> int | None: ...  # None = unlimited


Offer = TypeVar("Offer", bound=TierOffer)


@dataclass(frozen=True)
class UpgradeHint:
    tier_name: str
    included_minutes: int | None  # None = unlimited
    price_text: str | None  # e.g. "$499 / month"


def next_tier(included_minutes: int, catalog: Sequence[Offer]) -> Offer | None:
    """The smallest tier of the catalog with more included minutes (unlimited counts as the most)."""
    bigger = [t for t in catalog if t.included_minutes is None or t.included_minutes > included_minutes]
    return min(bigger, key=lambda t: (t.included_minutes is None, t.included_minutes or 0), default=None)


def alert_locale(preferred_locale: str | None) -> str:
    """The folder of the customer alert's phrases for a preferred locale ("fr-CA" → "fr"; else "en")."""
    return pick_locale(preferred_locale, locale_folders("alerts", "customer_alert.j2"))


@cache
def alert_phrases(locale: str) -> Any:
    """The phrases (macros, `day_pattern`, `intervals`) of `alerts/<locale>/customer_alert.j2`."""
    return template_environment().get_template(f"alerts/{locale}/customer_alert.j2").make_module({"locale": locale})


def format_price(unit_amount: int, currency: str, interval: str | None = "month", locale: str | None = None) -> str:
    """29900, "usd", "month" → "$299 / month" ("299 $ / Monat" in German); cents are shown only when
    there are some."""
    amount = format_money(unit_amount, currency, locale, drop_zero_decimals=True)
    if not interval:
        return amount
    return f"{amount} / {alert_phrases(alert_locale(locale)).intervals.get(interval, interval)}"


def percent_text(pct: float | None, locale: str | None = None) -> str:
    """79.96 → "79.9" ("79,9" in German): rounded down, so a customer below a threshold never reads
    the threshold."""
    if pct is None:
        return "–"
    floored = Decimal(math.floor(pct * 10)) / 10
    return format_decimal(floored, format="0.#", locale=babel_locale(locale))


def _day(value: date, locale: str = "en") -> str:
    """A date as the locale writes it in prose: "1 March 2026", "1. März 2026", "2026年3月1日"."""
    return format_date(value, alert_phrases(locale).day_pattern, locale=babel_locale(locale))


def _as_of_text(as_of: datetime) -> str:
    return f"{as_of:%Y-%m-%d %H:%M} UTC"


# --- the customer alert ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionUsage:
    """A limited subscription's current period as the alerts see it: who, which tier, how much."""

    customer_id: str
    subscription_id: str
    tier_name: str | None
    usage: PeriodUsage  # the period, included minutes (None = unlimited) and the minutes used

    @property
    def included_minutes(self) -> int | None:
        return self.usage.included_minutes

    @property
    def minutes_used(self) -> int:
        return self.usage.minutes_used


@dataclass(frozen=True)
class CustomerAlert:
    subscription: SubscriptionUsage
    threshold_pct: int
    customer_name: str | None
    email: str
    as_of: datetime
    upgrade: UpgradeHint | None = None
    portal_url: str | None = None  # a short-lived Stripe customer portal session for this customer
    next_invoice: NextInvoice | None = None  # Stripe's preview of the renewal invoice to come
    preferred_locale: str | None = None  # the customer's first preferred_locales entry in Stripe


def alert_message_id(subscription: SubscriptionUsage, threshold_pct: int, sender: str) -> str:
    """The same Message-ID for every delivery attempt of one alert: should a server accept a message
    whose success we then fail to record, mail systems can recognise the retry as a duplicate."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    stamp = int(subscription.usage.period.start.timestamp())
    key = f"{subscription.customer_id}.{stamp}.{subscription.included_minutes}.{threshold_pct}"
    return f"<usage-alert.{key}@{domain}>"


def customer_alert_subject(alert: CustomerAlert, brand: Brand) -> str:
    phrases = alert_phrases(alert_locale(alert.preferred_locale))
    if alert.threshold_pct >= 100:
        return str(phrases.subject_all(brand.company_name, alert.subscription.tier_name)).strip()
    return str(phrases.subject_pct(brand.company_name, alert.threshold_pct)).strip()


def customer_alert_context(alert: CustomerAlert, brand: Brand) -> dict[str, Any]:
    usage, period = alert.subscription.usage, alert.subscription.usage.period
    last_instant = period.end - timedelta(microseconds=1)  # periods are [start, end)
    pct = usage.usage_pct
    locale = alert_locale(alert.preferred_locale)
    return {
        "brand": brand,
        "locale": locale,
        "t": alert_phrases(locale),
        "subject": customer_alert_subject(alert, brand),
        "customer_name": alert.customer_name,
        "tier_name": alert.subscription.tier_name or "current",
        "threshold_pct": alert.threshold_pct,
        "reached_allowance": alert.threshold_pct >= 100,
        "minutes_used": usage.minutes_used,
        "included_minutes": usage.included_minutes,
        "minutes_remaining": usage.minutes_unused,
        "overage_minutes": usage.overage_minutes,
        "usage_pct_text": percent_text(pct, locale),
        "bar_pct": min(int(pct or 0), 100),
        "period_first_day": _day(period.start.date(), locale),
        "period_last_day": _day(last_instant.date(), locale),
        "renewal_day": _day(period.end.date(), locale),
        "days_left": days_left_in_period(period.end, alert.as_of),
        "as_of_text": _as_of_text(alert.as_of),
        "upgrade": alert.upgrade,
        "portal_url": alert.portal_url,
        "next_invoice_amount": alert.next_invoice.amount_text(locale) if alert.next_invoice else None,
        "next_invoice_day": _day(alert.next_invoice.invoice_date.date(), locale) if alert.next_invoice else None,
    }


def customer_alert_message(alert: CustomerAlert, brand: Brand) -> EmailMessage:
    """The alert e-mail to the customer's billing address: plain text with an HTML alternative."""
    context = customer_alert_context(alert, brand)
    message = EmailMessage()
    message["Subject"] = context["subject"]
    message["From"] = brand.email_from
    message["To"] = alert.email
    message["Reply-To"] = brand.support_email
    message["Message-ID"] = alert_message_id(alert.subscription, alert.threshold_pct, brand.email_from)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(render("alerts/customer_alert.txt.j2", **context))
    message.add_alternative(render("alerts/customer_alert.html.j2", **context), subtype="html")
    return message


# --- the ops digest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestAlert:
    """One alert line of the digest; `outcome` says what happened to the customer e-mail."""

    customer_id: str
    customer_name: str | None
    tier_name: str | None
    threshold_pct: int
    minutes_used: int
    included_minutes: int
    usage_pct: float | None
    days_left: int
    outcome: str  # "e-mail sent", "delivery failed: …", "no e-mail address", …

    @property
    def customer_label(self) -> str:
        return f"{self.customer_name} ({self.customer_id})" if self.customer_name else self.customer_id

    @property
    def usage_pct_text(self) -> str:
        return percent_text(self.usage_pct)


@dataclass(frozen=True)
class DigestSilence:
    customer_id: str
    customer_name: str | None
    last_usage_date: date
    active_days: int
    days_silent: int

    @property
    def customer_label(self) -> str:
        return f"{self.customer_name} ({self.customer_id})" if self.customer_name else self.customer_id


@dataclass(frozen=True)
class OpsDigest:
    as_of: datetime
    alerts: Sequence[DigestAlert]
    silent: Sequence[DigestSilence]
    counts_by_threshold: Sequence[tuple[int, int]]  # (threshold, alerts reached this run)
    superseded_count: int
    failed_count: int
    silence_window_days: int

    @property
    def is_empty(self) -> bool:
        return not self.alerts and not self.silent


def ops_digest_subject(digest: OpsDigest, brand: Brand) -> str:
    parts = [f"{len(digest.alerts)} threshold alert(s)"]
    if digest.failed_count:
        parts.append(f"{digest.failed_count} undelivered")
    if digest.silent:
        parts.append(f"{len(digest.silent)} silent customer(s)")
    return f"[{brand.company_name} ops] usage alerts {digest.as_of:%Y-%m-%d}: " + ", ".join(parts)


def ops_digest_texts(digest: OpsDigest, brand: Brand) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the digest, for `NotifierResource.send_ops_alert`."""
    subject = ops_digest_subject(digest, brand)
    context = {
        "brand": brand,
        "subject": subject,
        "as_of_text": _as_of_text(digest.as_of),
        "alerts": digest.alerts,
        "silent": digest.silent,
        "counts_by_threshold": digest.counts_by_threshold,
        "superseded_count": digest.superseded_count,
        "failed_count": digest.failed_count,
        "silence_window_days": digest.silence_window_days,
    }
    return subject, render("alerts/ops_digest.txt.j2", **context), render("alerts/ops_digest.html.j2", **context)
