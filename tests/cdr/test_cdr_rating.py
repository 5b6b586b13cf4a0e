"""Rating policies: per-call ceiling by default, nearest/floor and free seconds when configured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aisyst_pipelines.cdr import RatingPolicy, rate_calls

from .conftest import read_all

SECONDS = [0, 1, 29, 30, 59, 60, 61, 89, 90, 119, 120, 3601]


@pytest.mark.parametrize(
    ("policy", "minutes"),
    [
        (RatingPolicy(), [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 61]),
        (RatingPolicy(rounding="nearest"), [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 60]),
        (RatingPolicy(rounding="floor"), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 60]),
        (RatingPolicy(free_seconds=30), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 61]),
        (RatingPolicy(rounding="floor", free_seconds=90), [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 60]),
    ],
)
def test_policies_rate_seconds_to_minutes(policy, minutes):
    assert policy.billable_minutes(pd.Series(SECONDS)).tolist() == minutes
    assert policy.billable_minutes(np.array(SECONDS)).tolist() == minutes
    assert [policy.billable_minutes(s) for s in SECONDS] == minutes
    assert policy.billable_minutes(pd.Series(SECONDS)).dtype == np.int64


def test_series_keep_their_index():
    seconds = pd.Series([61, 30], index=["a", "b"])
    assert RatingPolicy().billable_minutes(seconds).to_dict() == {"a": 2, "b": 1}


def test_bad_policies_and_negative_seconds_are_refused():
    with pytest.raises(ValueError):
        RatingPolicy(rounding="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RatingPolicy(free_seconds=-1)
    with pytest.raises(ValueError):
        RatingPolicy().billable_minutes(-1)


def test_only_completed_calls_are_rated():
    dispositions = pd.Series(["completed", "no_answer", "busy", "failed", "canceled", "completed"])
    seconds = pd.Series([61, 61, 61, 61, 61, 0])
    assert rate_calls(dispositions, seconds).tolist() == [2, 0, 0, 0, 0, 0]


def test_the_reader_applies_the_configured_policy(write):
    path = write(
        "calls.csv",
        [
            "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds",
            "c1,a,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:00Z,2026-10-01T10:01:31Z,91",
            "c2,a,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,5",
        ],
    )
    assert read_all(path).records["billable_minutes"].tolist() == [2, 1]
    assert read_all(path, policy=RatingPolicy(rounding="nearest", free_seconds=6)).records["billable_minutes"].tolist() == [2, 0]
    assert read_all(path, policy=RatingPolicy(rounding="floor")).records["billable_minutes"].tolist() == [1, 0]
