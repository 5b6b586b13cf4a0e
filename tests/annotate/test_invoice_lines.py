"""Invoice line texts, metadata, template locales and the custom-field limits (plain pytest)."""

from datetime import datetime, timezone

import pytest

from aisyst_pipelines.billing.invoice_lines import (
    LateMinutes,
    late_minutes_line,
    ANNOTATION_VERSION,
    CustomField,
    LineKind,
    TierTerms,
    annotation_idempotency_key,
    annotation_version_of,
    invoice_branding,
    invoice_lines,
    invoice_metadata,
    invoice_texts,
    template_locale,
    period_usage,
    validate_custom_fields,
)
from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.templates import load_brand

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END = datetime(2026, 4, 1, tzinfo=timezone.utc)
TIER1 = TierTerms("Tier 1", 500)
TIER2 = TierTerms("Tier 2", 1000)
TIER3 = TierTerms("Tier 3", None)
EN = invoice_texts("en")
PERIOD = Period(START, END)


def lines_for(terms, minutes, texts=EN):
    return invoice_lines(terms, period_usage(minutes, terms, PERIOD), texts)


def texts_of(lines):
    return [(line.kind, line.description, line.amount) for line in lines]


def test_limited_tier_under_allowance() -> None:
    lines = lines_for(TIER1, 395, EN)
    assert texts_of(lines) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 395 of 500", 0),
        (LineKind.MINUTES_UNUSED, "Unused minutes: 105", 0),
    ]
    assert all((line.period_start, line.period_end) == (START, END) for line in lines)


def test_tier2_with_grouped_digits_and_exactly_used_up() -> None:
    assert texts_of(lines_for(TIER2, 1000, EN)) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 1,000 of 1,000", 0),
        (LineKind.MINUTES_UNUSED, "Unused minutes: 0", 0),
    ]


def test_zero_usage_shows_the_whole_allowance_unused() -> None:
    assert texts_of(lines_for(TIER1, 0, EN)) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 0 of 500", 0),
        (LineKind.MINUTES_UNUSED, "Unused minutes: 500", 0),
    ]


def test_overage_is_informational_without_a_rate() -> None:
    assert texts_of(lines_for(TIER1, 535, EN)) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 535 of 500", 0),
        (LineKind.OVERAGE, "Overage: 35 minutes", 0),
    ]


def test_overage_is_priced_at_the_tier_rate() -> None:
    terms = TierTerms("Tier 1", 500, overage_unit_amount=12, currency="usd")
    assert texts_of(lines_for(terms, 1735, EN)) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 1,735 of 500", 0),
        (LineKind.OVERAGE, "Overage: 1,235 minutes at 0.12 USD per minute", 1235 * 12),
    ]


def test_unlimited_tier_has_one_line() -> None:
    assert texts_of(lines_for(TIER3, 1234, EN)) == [
        (LineKind.MINUTES_USED, "Voice minutes used: 1,234 (Unlimited plan)", 0),
    ]


def test_german_texts_follow_the_preferred_locale() -> None:
    de = invoice_texts("de-DE")
    assert de.locale == "de"
    assert [line.description for line in lines_for(TIER2, 1234, de)] == [
        "Genutzte Sprachminuten: 1.234 von 1.000",
        "Mehrverbrauch: 234 Minuten",
    ]
    priced = TierTerms("Tier 2", 1000, overage_unit_amount=5, currency="eur")
    assert lines_for(priced, 1001, de)[1].description == "Mehrverbrauch: 1 Minuten zu je 0,05 EUR"


@pytest.mark.parametrize(
    ("preferred", "used_line", "overage_line", "priced_line"),
    [
        ("fr-FR", "Minutes vocales utilisées : 12\u202f345 sur 1\u202f000", "Dépassement : 11\u202f345 minutes",
         "Dépassement : 11\u202f345 minutes à 1\u202f234,50 EUR la minute"),
        ("es-ES", "Minutos de voz utilizados: 12.345 de 1.000", "Exceso: 11.345 minutos",
         "Exceso: 11.345 minutos a 1.234,50 EUR por minuto"),
        ("ja-JP", "音声通話の利用時間: 12,345 分 / 1,000 分", "超過: 11,345 分", "超過: 11,345 分（1 分あたり 1,234.50 EUR）"),
    ],
)
def test_french_spanish_and_japanese_texts_with_the_locales_numbers(preferred, used_line, overage_line, priced_line) -> None:
    """Issue 15 item 4: the customer's language, numbers and money formatted for it by Babel (CLDR):
    French groups with a narrow no-break space, Spanish with dots, Japanese with commas."""
    texts = invoice_texts(preferred)
    assert [line.description for line in lines_for(TIER2, 12345, texts)] == [used_line, overage_line]
    priced = TierTerms("Tier 2", 1000, overage_unit_amount=123450, currency="eur")
    assert lines_for(priced, 12345, texts)[1].description == priced_line


def test_overage_rate_in_a_zero_decimal_currency_is_not_divided_by_100() -> None:
    yen = TierTerms("Tier 1", 500, overage_unit_amount=5, currency="jpy")
    assert lines_for(yen, 1734, EN)[1].description == "Overage: 1,234 minutes at 5 JPY per minute"
    assert lines_for(yen, 1734, invoice_texts("de"))[1].description == "Mehrverbrauch: 1.234 Minuten zu je 5 JPY"
    dinar = TierTerms("Tier 1", 500, overage_unit_amount=1250, currency="kwd")  # three decimals
    assert lines_for(dinar, 501, EN)[1].description == "Overage: 1 minutes at 1.250 KWD per minute"


@pytest.mark.parametrize(
    ("preferred", "locale"),
    [(None, "en"), ("", "en"), ("en-US", "en"), ("de", "de"), ("DE_at", "de"), ("pt-BR", "en"), ("fr-CA", "fr"), ("es-MX", "es"), ("ja-JP", "ja"), ("zh", "en")],
)
def test_template_locale_falls_back_to_english(preferred, locale) -> None:
    assert template_locale(preferred) == locale


def test_bad_periods_and_usage_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Period(START.replace(tzinfo=None), END)
    with pytest.raises(ValueError, match="not after"):
        Period(END, START)
    with pytest.raises(ValueError, match="negative"):
        period_usage(-1, TIER1, PERIOD)


def test_metadata_for_limited_and_unlimited_tiers() -> None:
    assert invoice_metadata(TIER1, period_usage(395, TIER1, PERIOD)) == {
        "minutes_used": "395",
        "minutes_included": "500",
        "minutes_unused": "105",
        "usage_percentage": "79.0",
        "tier_name": "Tier 1",
        "aisyst_annotation_version": ANNOTATION_VERSION,
    }
    over = invoice_metadata(TIER1, period_usage(750, TIER1, PERIOD))
    assert (over["minutes_unused"], over["overage_minutes"], over["usage_percentage"]) == ("0", "250", "150.0")
    unlimited = invoice_metadata(TIER3, period_usage(1234, TIER3, PERIOD))
    assert unlimited == {
        "minutes_used": "1234",
        "minutes_included": "unlimited",
        "tier_name": "Tier 3",
        "aisyst_annotation_version": ANNOTATION_VERSION,
    }
    assert all(value != "" for value in unlimited.values())  # "" would unset a key in Stripe


def test_idempotency_key_and_version_marker() -> None:
    key = annotation_idempotency_key("in_123")
    assert key == annotation_idempotency_key("in_123") != annotation_idempotency_key("in_124")
    assert annotation_idempotency_key("in_123", "2") != key and len(key) <= 255
    assert annotation_version_of({"aisyst_annotation_version": "1"}) == "1"
    assert annotation_version_of({"other": "x"}) is None and annotation_version_of(None) is None


def test_custom_field_limits() -> None:
    ok = [CustomField("n" * 40, "v" * 140)] * 4
    assert validate_custom_fields(ok) == ok
    with pytest.raises(ValueError, match="at most 4"):
        validate_custom_fields([CustomField("a", "b")] * 5)
    with pytest.raises(ValueError, match="name"):
        validate_custom_fields([CustomField("n" * 41, "v")])
    with pytest.raises(ValueError, match="value must be"):
        validate_custom_fields([CustomField("Client ID", "v" * 141)])
    with pytest.raises(ValueError, match="value must be"):
        validate_custom_fields([CustomField("Client ID", "  ")])
    with pytest.raises(ValueError, match="name"):
        validate_custom_fields([CustomField("", "x")])


def test_branding_renders_brand_settings_in_the_customer_language() -> None:
    brand = load_brand()
    en = invoice_branding("ACME-042", "Tier 2", None, brand)
    assert en.custom_fields == (CustomField("Client ID", "ACME-042"), CustomField("Tier", "Tier 2"))
    assert brand.company_name in en.memo and brand.support_email in en.memo
    assert brand.registration_text in en.footer and brand.tax_text in en.footer
    assert "\n" not in en.footer
    de = invoice_branding("ACME-042", "Tier 2", "de-CH", brand)
    assert [f.name for f in de.custom_fields] == ["Kundennummer", "Tarif"]
    assert de.memo.startswith("Vielen Dank")
    assert [f.name for f in invoice_branding(None, "Tier 1", None, brand).custom_fields] == ["Tier"]
    with pytest.raises(ValueError, match="value must be"):
        invoice_branding("X" * 141, "Tier 1", None, brand)


@pytest.mark.parametrize(
    ("shown", "late", "amount"),
    [(395, 12, 0), (495, 12, 7 * 25), (510, 12, 12 * 25)],  # within, crossing and beyond the 500 included
)
def test_late_minutes_are_charged_only_for_the_overage_they_add(shown: int, late: int, amount: int) -> None:
    """Issue 15 item 9: September's late CDRs on October's draft, charged at the overage rate for the
    minutes beyond the allowance that September's invoice did not already show."""
    priced = TierTerms("Tier 1", 500, overage_unit_amount=25, currency="usd")
    september = Period(datetime(2026, 9, 1, tzinfo=timezone.utc), datetime(2026, 10, 1, tzinfo=timezone.utc))
    october = Period(datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc))
    line = late_minutes_line(LateMinutes("in_sep", september, shown, late), priced, EN, october)
    assert (line.kind, line.description, line.amount) == (LineKind.LATE_MINUTES, f"Late-reported minutes from September: {late}", amount)
    assert (line.period_start, line.period_end) == (october.start, october.end)
    assert late_minutes_line(LateMinutes("in_sep", september, shown, late), TierTerms("Tier 1", 500), EN, october).amount == 0
    assert late_minutes_line(LateMinutes("in_sep", september, shown, late), priced, invoice_texts("de"), october).description == (
        f"Nachgemeldete Minuten aus September: {late}"
    )
