"""Form decoding, SDK-typed parameter checks and anniversary arithmetic (plain unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aisyst_pipelines.emulator import periods
from aisyst_pipelines.emulator.params import check
from aisyst_pipelines.emulator.wire import ApiError, as_list, decode_form, merge_metadata, range_filter


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def test_decode_nested_brackets_and_indexed_arrays() -> None:
    params = decode_form(
        "lines[0][amount]=5&lines[0][period][start]=1&lines[0][period][end]=2&lines[0][metadata][k]=v"
        "&lines[1][pricing][price]=price_1&expand[0]=data.lines&expand[1]=customer&invoice_metadata[a]=&flag=true"
    )
    assert as_list(params["lines"], "lines")[0] == {"amount": "5", "period": {"start": "1", "end": "2"}, "metadata": {"k": "v"}}
    assert as_list(params["lines"], "lines")[1] == {"pricing": {"price": "price_1"}}
    assert as_list(params["expand"], "expand") == ["data.lines", "customer"]
    assert params["invoice_metadata"] == {"a": ""}
    assert params["flag"] == "true"


def test_decode_unindexed_arrays_and_ranges() -> None:
    params = decode_form("types[]=invoice.created&types[]=invoice.paid&created[gte]=10&created[lt]=20")
    assert as_list(params["types"], "types") == ["invoice.created", "invoice.paid"]
    assert range_filter(params, "created") == (None, 10, 20, None)
    assert range_filter({"created": "7"}, "created") == (None, 7, None, 7)


def test_metadata_merge_unsets_and_clears() -> None:
    assert merge_metadata({"a": "1", "b": "2"}, {"a": "", "c": "3"}) == {"b": "2", "c": "3"}
    assert merge_metadata({"a": "1"}, "") == {}


def test_params_checked_against_sdk_types() -> None:
    checked = check(decode_form("lines[0][amount]=5&lines[0][description]=x"), "InvoiceAddLinesParams")
    assert checked["lines"] == [{"amount": "5", "description": "x"}]
    with pytest.raises(ApiError) as unknown:
        check(decode_form("lines[0][price]=price_1"), "InvoiceAddLinesParams")
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "lines[0][price]")
    with pytest.raises(ApiError) as missing:
        check({}, "InvoiceAddLinesParams")
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "lines")
    with pytest.raises(ApiError) as not_int:
        check(decode_form("lines[0][amount]=five"), "InvoiceAddLinesParams")
    assert (not_int.value.code, not_int.value.param) == ("parameter_invalid_integer", "lines[0][amount]")
    # A union of a range object and an integer accepts both spellings.
    check(decode_form("created[gte]=1&limit=3"), "SubscriptionListParams")
    check(decode_form("created=1"), "SubscriptionListParams")


def test_monthly_anniversaries_keep_the_anchor_day() -> None:
    anchor = ts(2027, 1, 31, 12)
    boundaries = [periods.boundary(anchor, "month", 1, k) for k in range(4)]
    assert [datetime.fromtimestamp(b, UTC).date().isoformat() for b in boundaries] == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
    ]
    assert periods.next_boundary_after(anchor, "month", 1, ts(2027, 2, 28, 12)) == ts(2027, 3, 31, 12)
    assert periods.next_boundary_after(anchor, "month", 1, ts(2027, 2, 28, 11)) == ts(2027, 2, 28, 12)


def test_leap_years() -> None:
    anchor = ts(2028, 1, 31)
    assert periods.boundary(anchor, "month", 1, 1) == ts(2028, 2, 29)
    assert periods.boundary(ts(2028, 2, 29), "year", 1, 1) == ts(2029, 2, 28)
    assert periods.boundary(ts(2028, 2, 29), "year", 1, 4) == ts(2032, 2, 29)
    assert periods.next_boundary_after(ts(2027, 1, 15), "week", 2, ts(2027, 1, 29)) == ts(2027, 2, 12)
