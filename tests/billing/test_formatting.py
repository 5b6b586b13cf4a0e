"""Money and numbers by locale (billing/formatting.py, Babel): the currency's own decimals, exact
amounts, and each locale's separators and symbol placement."""

from __future__ import annotations

import pytest

from aisyst_pipelines.billing.formatting import babel_locale, format_money, format_number, major_units

NBSP, NNBSP = "\u00a0", "\u202f"  # no-break space; narrow no-break space (French grouping)


@pytest.mark.parametrize(
    ("locale", "number", "price", "yen"),
    [
        ("en", "1,234,567", "$299.00", "¥29,900"),
        ("de", "1.234.567", f"299,00{NBSP}$", f"29.900{NBSP}¥"),
        ("fr", f"1{NNBSP}234{NNBSP}567", f"299,00{NBSP}$US", f"29{NNBSP}900{NBSP}JPY"),
        ("es", "1.234.567", f"299,00{NBSP}US$", f"29.900{NBSP}JPY"),
        ("ja", "1,234,567", "$299.00", "￥29,900"),
    ],
)
def test_each_locale_writes_numbers_and_money_its_own_way(locale: str, number: str, price: str, yen: str) -> None:
    assert format_number(1234567, locale) == number
    assert format_money(29900, "usd", locale) == price
    assert format_money(29900, "jpy", locale) == yen


def test_amounts_are_in_the_currencys_smallest_unit() -> None:
    assert str(major_units(29900, "usd")) == "299.00"
    assert str(major_units(29900, "JPY")) == "29900"  # no minor unit
    assert str(major_units(1250, "kwd")) == "1.250"  # three decimals
    assert format_money(1250, "kwd", iso_code=True) == "1.250 KWD"
    # Exact at any size: a float would round this to ...000.00.
    assert format_money(10**17 + 1, "usd", iso_code=True) == "1,000,000,000,000,000.01 USD"


def test_iso_code_and_whole_amount_styles() -> None:
    assert format_money(29900, "usd", iso_code=True) == "299.00 USD"
    assert format_money(5, "eur", "de", iso_code=True) == "0,05 EUR"
    assert format_money(29900, "usd", drop_zero_decimals=True) == "$299"
    assert format_money(29950, "usd", drop_zero_decimals=True) == "$299.50"
    assert format_money(-1250, "usd") == "-$12.50"


def test_a_symbol_made_of_letters_keeps_a_space_from_the_digits() -> None:
    # CLDR's currency spacing (Babel leaves it out): "CHF 50.00", while "$", "CA$" and "€" touch the digits.
    assert format_money(5000, "chf") == f"CHF{NBSP}50.00"
    assert format_money(-5000, "chf") == f"-CHF{NBSP}50.00"
    assert format_money(5000, "cad") == "CA$50.00"
    assert format_money(5000, "chf", "de") == f"50,00{NBSP}CHF"


@pytest.mark.parametrize("tag", ["de-DE", "de_DE", "de", " de-AT "])
def test_locale_tags_in_stripe_and_babel_spelling(tag: str) -> None:
    assert babel_locale(tag).language == "de"


@pytest.mark.parametrize("tag", [None, "", "xx-YY", "not a locale"])
def test_missing_or_unknown_locales_are_english(tag: str | None) -> None:
    assert babel_locale(tag).language == "en"
    assert format_number(1234, tag) == "1,234"
