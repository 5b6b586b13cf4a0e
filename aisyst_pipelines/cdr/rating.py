"""Rating: from billable seconds to billable minutes (DESIGN.md §2.1).

The default is the telecom norm and what the voice server reports to Stripe's meter: every answered
call is rounded up to the next whole minute on its own (a 61-second call is 2 minutes), unanswered
calls are free. The policy is a value object so that a customer contract with other terms can be
rated by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import pandas as pd

from .records import ANSWERED_DISPOSITION

Rounding = Literal["ceil", "nearest", "floor"]


@dataclass(frozen=True)
class RatingPolicy:
    """How the seconds of one answered call become billable minutes.

    rounding: "ceil" (default, per-call ceiling), "nearest" (half a minute rounds up) or "floor".
    free_seconds: calls shorter than this many seconds bill 0 minutes (0 = no free calls).
    """

    rounding: Rounding = "ceil"
    free_seconds: int = 0

    def __post_init__(self) -> None:
        if self.rounding not in ("ceil", "nearest", "floor"):
            raise ValueError(f"unknown rounding {self.rounding!r}: use ceil, nearest or floor")
        if self.free_seconds < 0:
            raise ValueError("free_seconds must not be negative")

    @overload
    def billable_minutes(self, seconds: int) -> int: ...
    @overload
    def billable_minutes(self, seconds: pd.Series) -> pd.Series: ...
    @overload
    def billable_minutes(self, seconds: np.ndarray) -> np.ndarray: ...

    def billable_minutes(self, seconds: int | pd.Series | np.ndarray) -> int | pd.Series | np.ndarray:
        """Billable minutes of calls lasting `seconds` billable seconds each (vectorised; int64).

        Negative seconds are refused: the reader rejects such rows before they are rated.
        """
        if isinstance(seconds, pd.Series):
            return pd.Series(self._minutes(seconds.to_numpy(dtype=np.int64)), index=seconds.index, name=seconds.name)
        if isinstance(seconds, np.ndarray):
            return self._minutes(seconds.astype(np.int64, copy=False))
        return int(self._minutes(np.asarray([int(seconds)], dtype=np.int64))[0])

    def _minutes(self, seconds: np.ndarray) -> np.ndarray:
        if seconds.size and seconds.min() < 0:
            raise ValueError("billable seconds must not be negative")
        if self.rounding == "ceil":
            minutes = (seconds + 59) // 60
        elif self.rounding == "nearest":
            minutes = (seconds + 30) // 60
        else:
            minutes = seconds // 60
        if self.free_seconds:
            minutes = np.where(seconds < self.free_seconds, 0, minutes)
        return minutes.astype(np.int64, copy=False)


def rate_calls(disposition: pd.Series, billable_seconds: pd.Series, policy: RatingPolicy = RatingPolicy()) -> pd.Series:
    """Billable minutes per call: the policy applied to answered (completed) calls, 0 for the rest."""
    minutes = policy.billable_minutes(billable_seconds.to_numpy(dtype=np.int64))
    answered = (disposition == ANSWERED_DISPOSITION).to_numpy(dtype=bool)
    return pd.Series(np.where(answered, minutes, 0).astype(np.int64), index=billable_seconds.index, name="billable_minutes")
