"""The events gateway: the Events API, one page per call.

stripe_events_sensor reads one page per call, so that a tick can stop after a bounded number of
events and continue from its cursor. Events come back as plain dicts: the sensor and the webhook
receiver hand the same JSON shape to the same handler.
"""

from __future__ import annotations

from collections.abc import Sequence

import stripe
from stripe.params import EventListParams

from .client import PAGE_SIZE, StripeCalls
from .records import EventPage


class EventCursorGone(RuntimeError):
    """Stripe no longer lists the event used as a list cursor (older than its 30-day retention)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"Stripe no longer lists event {event_id}")
        self.event_id = event_id


class EventGateway:
    def __init__(self, calls: StripeCalls) -> None:
        self._calls = calls

    def list_page(
        self,
        types: Sequence[str],
        *,
        ending_before: str | None = None,
        starting_after: str | None = None,
        created_gte: int | None = None,
        limit: int = PAGE_SIZE,
    ) -> EventPage:
        """One page of `GET /v1/events` of these types (≤ 20 names), newest first as Stripe lists them.

        `ending_before=evt` gives the events just newer than `evt` (the ones to apply next);
        `starting_after=evt` the ones just older. Raises EventCursorGone when Stripe no longer lists
        the event named as cursor (30-day retention)."""
        params: EventListParams = {"types": list(types), "limit": limit}
        if ending_before:
            params["ending_before"] = ending_before
        if starting_after:
            params["starting_after"] = starting_after
        if created_gte is not None:
            params["created"] = {"gte": int(created_gte)}
        try:
            # The JSON as sent: converting a page of 100 events (each with its whole invoice or
            # subscription) into StripeObjects and back cost more CPU than the rest of a tick.
            page = self._calls.get_json("/v1/events", params)
        except stripe.InvalidRequestError as error:
            if error.code == "resource_missing" and error.param in ("ending_before", "starting_after"):
                raise EventCursorGone(ending_before or starting_after or "") from None
            raise
        return EventPage(events=list(page["data"]), has_more=bool(page["has_more"]))
