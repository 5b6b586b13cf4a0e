"""The alert e-mails rendered from the jinja2 templates with the brand settings."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from aisyst_pipelines.billing.alert_messages import (
    CustomerAlert,
    DigestAlert,
    DigestSilence,
    OpsDigest,
    SubscriptionUsage,
    UpgradeHint,
    alert_locale,
    customer_alert_message,
    format_price,
    next_tier,
    ops_digest_texts,
    percent_text,
)
from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.billing.usage import CallTotals, PeriodUsage
from aisyst_pipelines.templates import load_brand

BRAND = load_brand()
PERIOD = Period(datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc))
AS_OF = datetime(2026, 3, 22, 6, 0, tzinfo=timezone.utc)


def subscription(minutes: int, included: int | None = 500, tier: str = "Tier 1") -> SubscriptionUsage:
    return SubscriptionUsage("cus_A", "sub_A", tier, PeriodUsage(PERIOD, included, CallTotals(10, minutes * 60, minutes)))


def bodies(message) -> tuple[str, str]:  # noqa: ANN001
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_customer_alert_at_80_percent_with_upgrade_hint_and_portal_link() -> None:
    alert = CustomerAlert(
        subscription(400), 80, "Ann & Co <Trading>", "billing@ann.example", AS_OF,
        UpgradeHint("Tier 2", 1000, "$499 / month"), "https://billing.stripe.com/p/session/test_abc?x=1&y=2",
    )
    message = customer_alert_message(alert, BRAND)
    assert message["To"] == "billing@ann.example"
    assert message["From"] == BRAND.email_from and message["Reply-To"] == BRAND.support_email
    assert message["Subject"] == "Aisyst: you have used 80 % of your included minutes"
    assert message["Message-ID"] == f"<usage-alert.cus_A.{int(PERIOD.start.timestamp())}.500.80@aisyst.example>"
    text, html = bodies(message)
    assert "Hello Ann & Co <Trading>," in text
    assert "Minutes used:       400 of 500 (80 %)" in text
    assert "Minutes remaining:  100" in text
    assert "Minutes over plan" not in text
    assert "Billing period:     1 March 2026 to 31 March 2026 (UTC)" in text
    assert "Days left:          10 (your plan renews on 1 April 2026)" in text
    assert "Tier 2 includes 1,000 minutes for $499 / month." in text
    assert "https://billing.stripe.com/p/session/test_abc?x=1&y=2" in text
    for brand_text in (BRAND.registration_text, BRAND.tax_text, BRAND.support_email, BRAND.legal_name):
        assert brand_text in text
    assert "Ann &amp; Co &lt;Trading&gt;" in html and "<Trading>" not in html  # escaped in HTML only
    assert 'href="https://billing.stripe.com/p/session/test_abc?x=1&amp;y=2"' in html
    assert "<strong>400 of 500 (80 %)</strong>" in html
    assert BRAND.registration_text in html and BRAND.accent_color in html


def test_customer_alert_at_100_percent_shows_overage_and_unlimited_upgrade() -> None:
    alert = CustomerAlert(
        subscription(1234, 1000, "Tier 2"), 100, None, "ops@client.example", AS_OF,
        UpgradeHint("Tier 3", None, "$899 / month"), None,
    )
    message = customer_alert_message(alert, BRAND)
    assert message["Subject"] == "Aisyst: you have used all included minutes of your Tier 2"
    text, html = bodies(message)
    assert "Hello there," in text
    assert "plan has used all 1,000 included minutes" in text
    assert "Minutes used:       1,234 of 1,000 (123.4 %)" in text
    assert "Minutes remaining:  0" in text
    assert "Minutes over plan:  234" in text
    assert "Tier 3 includes unlimited minutes for $899 / month." in text
    assert f"Change your plan at {BRAND.portal_return_url}." in text  # no portal session: the sign-in page
    assert "width:100%" in html


def test_customer_alert_without_bigger_tier() -> None:
    alert = CustomerAlert(subscription(450), 80, "Bo", "bo@example.com", AS_OF)
    text, _ = bodies(customer_alert_message(alert, BRAND))
    assert "Need more minutes" not in text


def test_next_tier_from_the_catalog() -> None:
    catalog = load_tier_catalog().tiers
    assert next_tier(500, catalog).name == "Tier 2"  # type: ignore[union-attr]
    assert next_tier(1000, catalog).name == "Tier 3"  # type: ignore[union-attr]
    assert next_tier(5000, catalog).name == "Tier 3"  # type: ignore[union-attr]
    assert next_tier(10**9, [t for t in catalog if t.included_minutes is not None]) is None


def test_price_and_percent_texts() -> None:
    assert format_price(29900, "usd") == "$299 / month"
    assert format_price(123456, "eur", "year") == "€1,234.56 / year"
    assert format_price(5000, "chf", None) == "CHF\u00a050"  # CLDR English: the code before, a no-break space
    assert format_price(29900, "jpy") == "¥29,900 / month"  # no minor unit: 29900 is yen, not cents
    assert format_price(1250, "usd", None) == "$12.50"
    assert percent_text(79.96) == "79.9"  # never rounded up to a threshold
    assert percent_text(80.0) == "80" and percent_text(None) == "–"


def test_ops_digest() -> None:
    digest = OpsDigest(
        as_of=AS_OF,
        alerts=[
            DigestAlert("cus_A", "Ann", "Tier 1", 100, 525, 500, 105.0, 10, "e-mail sent"),
            DigestAlert("cus_B", None, "Tier 2", 80, 800, 1000, 80.0, 10, "delivery failed: 550 refused"),
        ],
        silent=[DigestSilence("cus_C", "Cleo <Ltd>", date(2026, 3, 19), 12, 2)],
        counts_by_threshold=[(80, 1), (100, 1)],
        superseded_count=1,
        failed_count=1,
        silence_window_days=14,
    )
    subject, text, html = ops_digest_texts(digest, BRAND)
    assert subject == "[Aisyst ops] usage alerts 2026-03-22: 2 threshold alert(s), 1 undelivered, 1 silent customer(s)"
    assert "- Ann (cus_A): 100 % of Tier 1 — 525 of 500 minutes (105 %), 10 days left — e-mail sent" in text
    assert "- cus_B: 80 % of Tier 2 — 800 of 1,000 minutes (80 %), 10 days left — delivery failed: 550 refused" in text
    assert "1 customer e-mail(s) could not be delivered" in text
    assert "- Cleo <Ltd> (cus_C): last usage 2026-03-19 (12 active days of 14), silent for 2 days" in text
    assert "Counts: 80 %: 1, 100 %: 1; superseded: 1; silent: 1." in text
    assert "Cleo &lt;Ltd&gt; (cus_C)" in html and "delivery failed: 550 refused" in html


def test_empty_ops_digest_says_so() -> None:
    digest = OpsDigest(AS_OF, [], [], [(80, 0), (100, 0)], 0, 0, 14)
    assert digest.is_empty
    _, text, _ = ops_digest_texts(digest, BRAND)
    assert "No new threshold alerts." in text and "silent" in text


@pytest.mark.parametrize(
    ("preferred", "subject", "lines"),
    [
        ("fr-FR", "Aisyst : vous avez utilisé 80 % de vos minutes incluses", [
            "Bonjour Ann,", "  Minutes utilisées:  1\u202f040 sur 1\u202f300 (80 %)\n  Minutes restantes:  260\n  Période de facturation: du",
            "du 1 mars 2026 au 31 mars 2026 (UTC)", "10 (votre forfait se renouvelle le 1 avril 2026)",
            "Tier 2 inclut 2\u202f000 minutes pour 499\u00a0$US / mois.",
        ]),
        ("de-AT", "Aisyst: Sie haben 80 % Ihrer Inklusivminuten genutzt", [
            "Hallo Ann,", "1.040 von 1.300 (80 %)", "1. März 2026 bis 31. März 2026 (UTC)",
            "Tier 2 enthält 2.000 Minuten für $\u00a0499 / Monat.",  # de-AT: the symbol first
        ]),
        ("es", "Aisyst: ha utilizado el 80 % de sus minutos incluidos", [
            "Hola Ann:", "1.040 de 1.300 (80 %)", "por 499\u00a0US$ / mes.", "del 1 de marzo de 2026 al 31 de marzo de 2026 (UTC)",
        ]),
        ("ja-JP", "Aisyst: 無料通話分の 80 % を使用しました", [
            "Ann 様", "1,040 分 / 1,300 分（80 %）", "2026年3月1日〜2026年3月31日（UTC）", "月",
        ]),
        ("pt-BR", "Aisyst: you have used 80 % of your included minutes", ["Hello Ann,", "1,040 of 1,300 (80 %)"]),
    ],
)
def test_the_alert_is_in_the_customers_language(preferred, subject, lines) -> None:
    """Issue 15 item 4: phrases, numbers, money and dates in the customer's preferred locale (Babel);
    English when no folder fits."""
    upgrade = upgrade_hint_for(preferred)
    alert = CustomerAlert(subscription(1040, 1300), 80, "Ann", "ann@example.com", AS_OF, upgrade, None, preferred_locale=preferred)
    message = customer_alert_message(alert, BRAND)
    text, html = bodies(message)
    assert message["Subject"] == subject
    for line in lines:
        assert line in text, line
    assert "Ann" in html and f'lang="{alert_locale(preferred)}"' in html


def upgrade_hint_for(preferred: str | None) -> UpgradeHint:
    return UpgradeHint("Tier 2", 2000, format_price(49900, "usd", "month", preferred))
