"""Phone numbers are personal data: the warehouse keeps a keyed hash of them, never the number.

The hash is HMAC-SHA256 with a secret key (AISYST_PII_KEY) over a normalised form of the number, so
that "+1 (415) 555-0100" and "+14155550100" give the same hash while someone without the key cannot
test guesses against the stored values. The warehouse records which key its hashes were made with
as a fingerprint of it (`pii_key_fingerprint`), never the key. Rejected rows keep their raw text for
diagnosis; numbers in it are masked (see `redact_record_text`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
FINGERPRINT_LABEL = b"aisyst pii key fingerprint v1"

_PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]+")
# Belt and braces for raw text whose fields could not be told apart (malformed or undecodable
# rows): a phone-like run of digits and separators (escaped bad bytes included) holding 7 or more
# digits. Runs inside longer tokens (SIDs like CA01234567…), after ":" or "." (times) and ISO dates
# are left alone.
_PHONE_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z:.\\])\+?\(?(?:\d|\\x[0-9a-fA-F]{2})(?:[\d().\-/ ]|\\x[0-9a-fA-F]{2})*\d(?![0-9A-Za-z])"
)
_ESCAPED_BYTE = re.compile(r"\\x[0-9a-fA-F]{2}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?!\d)")
MIN_PHONE_DIGITS = 7


def normalise_phone_number(number: str | None) -> str | None:
    """The form that is hashed: E.164-like digits for numbers, lower case for SIP URIs and client ids.

    "+1 (415) 555-0100" and "tel:+14155550100" both become "+14155550100". No country-code guessing:
    a number written without its country code stays without it.
    """
    if number is None:
        return None
    text = number.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    if not text:
        return None
    if _PHONE_LIKE.fullmatch(text) and any(c.isdigit() for c in text):
        return _PHONE_PUNCTUATION.sub("", text)
    return text.lower()


def hash_phone_number(number: str | None, key: bytes) -> str | None:
    """HMAC-SHA256 (hex) of the normalised number; None for an empty or missing number."""
    if not key:
        raise ValueError("a PII key is required to hash phone numbers")
    normalised = normalise_phone_number(number)
    if normalised is None:
        return None
    return hmac.digest(key, normalised.encode("utf-8"), "sha256").hex()


def pii_key_fingerprint(key: bytes) -> str:
    """HMAC-SHA256 of a fixed label under the key, in hex: tells keys apart without revealing them,
    and the label keeps it distinct from anything else computed with the key (a phone-number hash,
    or a plain sha256 of the key kept somewhere else)."""
    return hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def redact_record_text(raw: str, values: Iterable[str | None] = ()) -> str:
    """The raw text of a rejected row with phone numbers and caller names masked.

    `values` are the row's personal fields as parsed (caller, callee, caller id…); each is masked
    wherever it occurs verbatim, CSV-quoted or JSON-escaped. Then any remaining phone-like
    sequence is masked, which also covers rows too broken to be split into fields.
    """
    for value in values:
        if not value or len(value.strip()) < 3:  # too short to mask without mangling the rest
            continue
        for form in _written_forms(value):
            if form and form in raw:
                raw = raw.replace(form, REDACTED)
    return _PHONE_CANDIDATE.sub(_mask_phone_like, raw)


def _mask_phone_like(match: re.Match[str]) -> str:
    text = match.group(0)
    if _ISO_DATE.match(text.lstrip("+(")):
        return text
    digits = sum(c.isdigit() for c in _ESCAPED_BYTE.sub("", text))
    return REDACTED if digits >= MIN_PHONE_DIGITS else text


def _written_forms(value: str) -> tuple[str, ...]:
    csv_quoted = value.replace('"', '""')
    json_escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return tuple(dict.fromkeys((value, csv_quoted, json_escaped)))
