"""Phone numbers leave the reader only as keyed hashes: not in records, not in rejects, not in errors."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd
import pytest

from aisyst_pipelines.cdr import ReadOptions, hash_phone_number, normalise_phone_number
from aisyst_pipelines.simulation import simulate_calls, write_calls

from .conftest import PII_KEY, read_all


def test_numbers_are_normalised_before_hashing():
    assert normalise_phone_number("+1 (415) 555-0100") == "+14155550100"
    assert normalise_phone_number("tel:+1.415.555.0100") == "+14155550100"
    assert normalise_phone_number(" sip:Alice@Example.com ") == "sip:alice@example.com"
    assert normalise_phone_number("   ") is None and normalise_phone_number(None) is None
    same = {hash_phone_number(n, PII_KEY) for n in ("+1 (415) 555-0100", "+14155550100", "tel:+14155550100")}
    assert len(same) == 1


def test_the_hash_is_hmac_sha256_with_the_key():
    expected = hmac.new(PII_KEY, b"+14155550100", hashlib.sha256).hexdigest()
    assert hash_phone_number("+14155550100", PII_KEY) == expected
    assert hash_phone_number("+14155550100", b"another key") != expected
    assert hash_phone_number("", PII_KEY) is None
    with pytest.raises(ValueError):
        hash_phone_number("+14155550100", b"")


def test_the_key_is_required_and_never_shown():
    with pytest.raises(ValueError):
        ReadOptions(pii_key=b"")
    with pytest.raises(TypeError):
        ReadOptions()  # type: ignore[call-arg]
    assert PII_KEY.decode() not in repr(ReadOptions(pii_key=PII_KEY))


@pytest.mark.parametrize("file_format", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_no_phone_number_appears_anywhere_in_the_output(tmp_path, file_format):
    calls = simulate_calls(4, 2, seed=11)
    written = write_calls(calls, tmp_path / f"calls.{file_format}", file_format, malformed_rate=0.2, seed=5)
    result = read_all(written.path)
    assert len(result.rejects) == len(written.malformed) > 10
    numbers = set(calls["caller"]) | set(calls["callee"])
    forms = set()
    for number in numbers:
        digits = number.lstrip("+")
        forms |= {number, digits, digits[1:], f"({digits[1:4]}) {digits[4:7]}-{digits[7:]}"}
    texts = []
    for frame in (result.records, result.rejects):
        for column in frame.columns:
            texts += [str(value) for value in frame[column].tolist() if isinstance(value, str)]
    leaks = [text for text in texts if any(form in text for form in forms)]
    assert leaks == []
    # the hashes are there instead
    expected = {hash_phone_number(n, PII_KEY) for n in numbers}
    assert set(result.records["caller_hash"]) <= expected and set(result.records["callee_hash"]) <= expected


def test_raw_text_of_a_rejected_row_keeps_its_other_fields(write):
    path = write(
        "calls.csv",
        [
            "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee",
            "c1,acct_1,inbound,exploded,2026-10-01T10:00:00Z,,2026-10-01T10:00:30Z,0,+1 (415) 555-0100,sip:bob@example.com",
        ],
    )
    raw = read_all(path).rejects["raw_record"].iloc[0]
    assert raw == "c1,acct_1,inbound,exploded,2026-10-01T10:00:00Z,,2026-10-01T10:00:30Z,0,[redacted],[redacted]"


def test_records_carry_no_number_columns(tmp_path):
    calls = simulate_calls(2, 1, seed=1)
    records = read_all(write_calls(calls, tmp_path / "c.csv", "canonical_csv").path).records
    assert not {"caller", "callee"} & set(records.columns)
    assert pd.Series(records["caller_hash"]).str.fullmatch("[0-9a-f]{64}").all()
