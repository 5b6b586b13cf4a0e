"""The voice platform's metering, simulated for tests and the demo (issue 4, point 5).

The voice server sends one meter event per answered call when the call ends: identifier = the
call id, value = the call's billable minutes (rounded up per call, as the CDRs are rated),
timestamp = the call's `ended_at`. Real platforms lose and repeat some of them; this module plans
the sends with those faults injected, and says exactly which drift they must cause:

* drop — the event is never sent: its day is under-metered by the call's minutes;
* late duplicate — the same event (same identifier, same timestamp) sent again after Stripe's
  24 h identifier window has passed, so Stripe counts it twice: over-metered by the minutes;
* delay — the event is sent late (still stamped at call end): under-metered until it is sent,
  then matching.

Pure: the plan is data. `replay` drives the sending through callables (the StripeResource's
meter-event method, a test clock's advance) so that this module imports no client.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from aisyst_pipelines.billing.periods import utc
from aisyst_pipelines.billing.reconciliation import STRIPE_IDENTIFIER_WINDOW, STRIPE_TIMESTAMP_WINDOW


@dataclass(frozen=True)
class MeteredCall:
    call_id: str
    customer_id: str
    ended_at: datetime
    billable_minutes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ended_at", utc(self.ended_at))
        if self.billable_minutes < 0:
            raise ValueError(f"call {self.call_id}: negative minutes")


class SendKind(StrEnum):
    ON_TIME = "on_time"
    DELAYED = "delayed"
    LATE_DUPLICATE = "late_duplicate"


@dataclass(frozen=True, order=True)
class MeterEventSend:
    """One `POST /v1/billing/meter_events` the voice server makes, at `send_at`."""

    send_at: datetime
    identifier: str
    customer_id: str
    value: int
    timestamp: datetime
    kind: SendKind

    @property
    def delivery_key(self) -> str:
        """The idempotency key of this delivery attempt. A late duplicate is a new HTTP request
        (its own key), so only Stripe's identifier check stands between it and a double count —
        as with a real voice server; replaying the same simulation reuses the keys (a retry)."""
        return f"voice-server-{self.identifier}-{self.kind.value}-{int(self.send_at.timestamp())}"


@dataclass(frozen=True)
class VoiceServerFaults:
    """Faults to inject: by rate (seeded, reproducible) and/or by explicit call ids."""

    drop_rate: float = 0.0
    late_duplicate_rate: float = 0.0
    delay_rate: float = 0.0
    delay: timedelta = timedelta(hours=3)
    duplicate_after: timedelta = timedelta(hours=30)
    seed: int = 0
    drop: frozenset[str] = frozenset()
    duplicate: frozenset[str] = frozenset()
    delayed: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("drop_rate", "late_duplicate_rate", "delay_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if not STRIPE_IDENTIFIER_WINDOW < self.duplicate_after < STRIPE_TIMESTAMP_WINDOW:
            raise ValueError("a late duplicate must come after Stripe's 24 h identifier window and within 35 days")
        if not timedelta(0) < self.delay < STRIPE_TIMESTAMP_WINDOW:
            raise ValueError("delay must be positive and shorter than Stripe's 35 days")


@dataclass(frozen=True)
class VoiceServerPlan:
    sends: tuple[MeterEventSend, ...]  # in send order
    calls: tuple[MeteredCall, ...]  # the calls that produce meter events (billable minutes > 0)
    dropped: frozenset[str] = field(default_factory=frozenset)
    duplicated: frozenset[str] = field(default_factory=frozenset)
    delayed: frozenset[str] = field(default_factory=frozenset)

    def sends_by(self, moment: datetime) -> tuple[MeterEventSend, ...]:
        moment = utc(moment)
        return tuple(send for send in self.sends if send.send_at <= moment)

    def expected_drift(self, as_of: datetime | None = None) -> dict[tuple[str, date], int]:
        """CDR minus Stripe minutes per (customer, UTC day) once the sends up to `as_of` are in.

        Positive = under-metered (drops, delays not yet sent), negative = over-metered (late
        duplicates). Calls that have not ended by `as_of` and days without drift are left out.
        """
        sends = self.sends if as_of is None else self.sends_by(as_of)
        counted: dict[str, int] = {}
        for send in sends:
            counted[send.identifier] = counted.get(send.identifier, 0) + 1
        drift: dict[tuple[str, date], int] = {}
        for call in self.calls:
            if as_of is not None and call.ended_at > utc(as_of):
                continue  # not a call yet
            missing = call.billable_minutes * (1 - counted.get(call.call_id, 0))
            if missing:
                key = (call.customer_id, call.ended_at.date())
                drift[key] = drift.get(key, 0) + missing
        return {key: value for key, value in drift.items() if value}


def plan_meter_events(calls: Iterable[MeteredCall], faults: VoiceServerFaults | None = None) -> VoiceServerPlan:
    """The meter events the voice server sends for `calls`, with `faults` injected.

    Calls with 0 billable minutes (unanswered) send nothing. A dropped call is neither delayed nor
    duplicated; a delayed call's late duplicate follows its delayed send.
    """
    faults = faults or VoiceServerFaults()
    rng = random.Random(faults.seed)
    metered = tuple(sorted((c for c in calls if c.billable_minutes > 0), key=lambda c: (c.ended_at, c.call_id)))
    sends: list[MeterEventSend] = []
    dropped, duplicated, delayed = set(), set(), set()
    for call in metered:
        # Draw all three every time so one rate does not change which calls another picks.
        drop_draw, duplicate_draw, delay_draw = rng.random(), rng.random(), rng.random()
        if call.call_id in faults.drop or drop_draw < faults.drop_rate:
            dropped.add(call.call_id)
            continue
        send_at, kind = call.ended_at, SendKind.ON_TIME
        if call.call_id in faults.delayed or delay_draw < faults.delay_rate:
            send_at, kind = call.ended_at + faults.delay, SendKind.DELAYED
            delayed.add(call.call_id)
        sends.append(MeterEventSend(send_at, call.call_id, call.customer_id, call.billable_minutes, call.ended_at, kind))
        if call.call_id in faults.duplicate or duplicate_draw < faults.late_duplicate_rate:
            sends.append(MeterEventSend(send_at + faults.duplicate_after, call.call_id, call.customer_id,
                                        call.billable_minutes, call.ended_at, SendKind.LATE_DUPLICATE))
            duplicated.add(call.call_id)
    sends.sort()
    return VoiceServerPlan(tuple(sends), metered, frozenset(dropped), frozenset(duplicated), frozenset(delayed))


def replay(
    sends: Iterable[MeterEventSend],
    send: Callable[[MeterEventSend], None],
    advance_to: Callable[[datetime], None] | None = None,
    step: timedelta = timedelta(hours=1),
) -> int:
    """Send `sends` in order; with a test clock, advance it before each batch.

    Sends are batched by `step`: the clock is advanced to the end of the batch's step (never past
    a later send's time by more than `step`), so every event is in the clock's past and a late
    duplicate reaches Stripe at least `duplicate_after - step` after its original.
    Returns the number of events sent.
    """
    count = 0
    clock: datetime | None = None
    for item in sorted(sends):
        if advance_to is not None:
            due = _ceil_to(item.send_at, step)
            if clock is None or due > clock:
                advance_to(due)
                clock = due
        send(item)
        count += 1
    return count


def _ceil_to(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    steps = -((moment - epoch) // -step)
    return epoch + steps * step
