"""Money and whole numbers as a reader of a locale writes them (Babel, on the CLDR data).

Amounts are integers in the currency's smallest unit, as Stripe sends them. The currency's own
number of decimal places (ISO 4217: 2 for USD and EUR, 0 for JPY, 3 for KWD) turns them into major
units exactly — through Decimal, never float, and never a fixed `/ 100`.

Locales are BCP 47 tags as Stripe stores them (`preferred_locales`: "de-DE") or Babel names
("de_DE", "de"); a missing or unknown one is English. Separators follow the locale: "1,234" in
English, "1.234" in German and Spanish, "1 234" (narrow no-break space) in French.
"""

from __future__ import annotations

import unicodedata
from copy import copy
from decimal import Decimal
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    NumberPattern,
    format_currency,
    format_decimal,
    get_currency_precision,
    get_currency_symbol,
    parse_pattern,
)

DEFAULT_LOCALE = "en"
NO_BREAK_SPACE = "\u00a0"

# The number in the locale's digits and separators, then the ISO code: "1,234.50 USD", "1.234,50 EUR".
# Texts that name the currency by code (invoice lines, ops alerts) read the same in every currency.
_NUMBER_THEN_CODE = parse_pattern("#,##0.00 ¤¤")


@cache
def babel_locale(tag: str | None) -> Locale:
    """"de-DE", "de_DE" or "de" as a Babel Locale; None, "" or an unknown tag is English."""
    if tag:
        try:
            return Locale.parse(tag.strip().replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            pass
    return Locale.parse(DEFAULT_LOCALE)


def major_units(amount: int, currency: str) -> Decimal:
    """An amount in the smallest unit as major units: 29900 USD → 299.00, 500 JPY → 500, 1000 KWD → 1.000."""
    return Decimal(amount).scaleb(-get_currency_precision(currency.upper()))


def format_number(value: int, locale: str | None = DEFAULT_LOCALE) -> str:
    """A whole number with the locale's grouping: 1234 → "1,234" (en), "1.234" (de)."""
    return format_decimal(value, locale=babel_locale(locale))


def format_money(
    amount: int, currency: str, locale: str | None = DEFAULT_LOCALE, *, iso_code: bool = False, drop_zero_decimals: bool = False
) -> str:
    """`amount` (smallest unit) of `currency` in the locale's format.

    By default with the locale's symbol and placement: 29900 usd → "$299.00" (en), "299,00 $" (de).
    `iso_code`: the number then the code, "299.00 USD" / "299,00 USD". `drop_zero_decimals`: a whole
    amount without its zero decimals, "$299" (for prices; "$12.50" keeps them).
    """
    code = currency.upper()
    value = major_units(amount, code)
    where = babel_locale(locale)
    if iso_code:
        pattern = _NUMBER_THEN_CODE
    else:
        pattern = _spaced(where.currency_formats["standard"], get_currency_symbol(code, where))
    if drop_zero_decimals and value == value.to_integral_value():
        pattern = copy(pattern)
        pattern.frac_prec = (0, 0)
        return format_currency(value, code, format=pattern, locale=where, currency_digits=False)
    return format_currency(value, code, format=pattern, locale=where)


def _spaced(pattern: NumberPattern, symbol: str) -> NumberPattern:
    """CLDR's currency spacing, which Babel does not apply: a symbol that meets the digits with a
    letter is kept a no-break space away from them — "CHF 50.00" but "$50.00" and "CA$50.00"."""
    spaced = copy(pattern)
    if symbol and _is_letter_like(symbol[-1]):
        positive, negative = pattern.prefix
        spaced.prefix = (_gap_after_symbol(positive), _gap_after_symbol(negative))
    if symbol and _is_letter_like(symbol[0]):
        positive, negative = pattern.suffix
        spaced.suffix = (_gap_before_symbol(positive), _gap_before_symbol(negative))
    return spaced


def _gap_after_symbol(prefix: str) -> str:
    return prefix + NO_BREAK_SPACE if prefix.endswith("¤") else prefix


def _gap_before_symbol(suffix: str) -> str:
    return NO_BREAK_SPACE + suffix if suffix.startswith("¤") else suffix


def _is_letter_like(character: str) -> bool:
    """Neither a symbol (S*: "$", "€") nor a space (Z*): CLDR's `[[:^S:]&[:^Z:]]`."""
    return not unicodedata.category(character).startswith(("S", "Z"))
