"""Fault injection for /v1 requests: latency, a requests-per-second limit, 5xx, 429s, drops.

The decisions come from one seeded RNG, so a test that sends its requests one at a time sees
the same faults on every run. Dropped connections are decided before the request runs but
carried out after it: the work is done and the answer is lost on the way, which is what makes
the SDK's retry with the same Idempotency-Key come back as a replay.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Faults:
    latency_ms: float = 0.0  # added to every /v1 request (slept without holding any lock)
    rps_limit: float | None = None  # requests per rolling second; beyond it → Stripe's 429
    error_rate: float = 0.0  # share of requests answered 500 api_error (before they run)
    rate_limit_error_rate: float = 0.0  # share of requests answered 429 at random
    drop_rate: float = 0.0  # share of requests whose connection is closed without an answer
    rate_limit_should_retry: bool = True  # send `Stripe-Should-Retry: true` with 429s
    summary_lag_seconds: float = 0.0  # meter events stay out of summaries this long ("still processing")

    def updated(self, **changes: Any) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        for key in ("error_rate", "rate_limit_error_rate", "drop_rate"):
            if key in changes and not 0.0 <= float(changes[key]) <= 1.0:
                raise ValueError(f"{key} must be within [0, 1]")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    status: int | None = None  # 429 or 500 → answer that instead of running the request
    reason: str = ""
    drop: bool = False


class FaultInjector:
    def __init__(self, faults: Faults, seed: int | None) -> None:
        self.faults = faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()

    def decide(self) -> Decision:
        faults = self.faults
        with self._lock:
            now = time.monotonic()
            if faults.rps_limit is not None:
                while self._arrivals and now - self._arrivals[0] >= 1.0:
                    self._arrivals.popleft()
                if len(self._arrivals) >= faults.rps_limit:
                    return Decision(status=429, reason="rps_limit")
                self._arrivals.append(now)
            draw_429, draw_500, draw_drop = self._rng.random(), self._rng.random(), self._rng.random()
        if draw_429 < faults.rate_limit_error_rate:
            return Decision(status=429, reason="random_rate_limit")
        if draw_500 < faults.error_rate:
            return Decision(status=500, reason="random_error")
        return Decision(drop=draw_drop < faults.drop_rate, reason="drop" if draw_drop < faults.drop_rate else "")
