"""The meters gateway: meter events (one at a time per customer), event summaries, corrections.

The nightly reconciliation reads summaries and sends corrective meter events through
`send_correction`, which turns Stripe's answer into what the corrections ledger must record.
"""

from __future__ import annotations

import threading
from datetime import datetime

import stripe
from stripe.params.billing import MeterEventCreateParams, MeterEventSummaryListParams

from .catalog import find_meter
from .client import PAGE_SIZE, StripeCalls
from .records import CorrectionSend, MeterUsage


class MeterNotFound(RuntimeError):
    """Stripe has no meter for our event name."""


# Stripe allows one concurrent meter-event call per customer per meter (process-wide, like the bucket).
_CUSTOMER_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_CUSTOMER_LOCKS_LOCK = threading.Lock()


def _customer_lock(api_base: str, event_name: str, customer_id: str) -> threading.Lock:
    with _CUSTOMER_LOCKS_LOCK:
        return _CUSTOMER_LOCKS.setdefault((api_base, event_name, customer_id), threading.Lock())


class MeterGateway:
    def __init__(self, calls: StripeCalls, meter_event_name: str) -> None:
        self._calls = calls
        self._event_name = meter_event_name

    def meter_id(self) -> str:
        """Our meter's id (found by event name); MeterNotFound until `aisyst bootstrap-stripe` ran."""
        meter = find_meter(self._calls, self._event_name)
        if meter is None:
            raise MeterNotFound(f"no Stripe meter for event name {self._event_name!r}: run `aisyst bootstrap-stripe`")
        return meter.id

    def create_event(
        self, customer_id: str, value: int, timestamp: datetime, identifier: str, idempotency_key: str | None = None
    ) -> str:
        """Report `value` minutes for a customer at `timestamp`, one call at a time per customer.

        `identifier` makes the event unique for Stripe's ≥ 24 h dedupe window; the POST's
        idempotency key (reused on retries) is derived from it too, unless `idempotency_key` names
        a separate delivery attempt (the voice-server simulation's late duplicates).
        """
        params: MeterEventCreateParams = {
            "event_name": self._event_name,
            "payload": {"stripe_customer_id": customer_id, "value": str(int(value))},
            "identifier": identifier,
            "timestamp": int(timestamp.timestamp()),
        }
        with _customer_lock(self._calls.base_url, self._event_name, customer_id):
            key = idempotency_key or f"meter-event-{identifier}"
            self._calls.write(lambda c, o: c.v1.billing.meter_events.create(params, o), idempotency_key=key)
        return identifier

    def summaries(
        self, meter_id: str, customer_id: str, start: datetime, end: datetime, group_by_day: bool = False
    ) -> list[MeterUsage]:
        """The meter's usage for a customer over [start, end) (minute-aligned), oldest first;
        one summary for the whole range, or one per UTC day (start and end must be midnights)."""
        params: MeterEventSummaryListParams = {
            "customer": customer_id,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "limit": PAGE_SIZE,
        }
        if group_by_day:
            params["value_grouping_window"] = "day"
        summaries = self._calls.list_all(
            lambda c: c.v1.billing.meters.event_summaries.list(meter_id, params), MeterUsage.from_api
        )
        return sorted(summaries, key=lambda summary: summary.start)

    def send_correction(self, customer_id: str, value: int, timestamp: datetime, identifier: str) -> CorrectionSend:
        """Send one corrective meter event; never raises for what Stripe answers about it.

        `sent`: accepted. `already_received`: Stripe still holds the identifier (an earlier attempt
        got through), which counts as sent. `rejected`: refused for good (validation), it never
        counted. `uncertain`: the attempt may or may not have arrived (network, 5xx, 429 after the
        retries): the ledger row stays pending and is re-sent under the same identifier.
        """
        try:
            self.create_event(customer_id, value, timestamp, identifier)
        except stripe.InvalidRequestError as error:
            if error.code == "resource_already_exists" or "already exists with identifier" in (error.user_message or ""):
                return CorrectionSend("already_received", error.user_message)
            return CorrectionSend("rejected", error.user_message or str(error))
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as error:
            return CorrectionSend("uncertain", f"{type(error).__name__}: {error.user_message or error}")
        return CorrectionSend("sent", None)
