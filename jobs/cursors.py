"""Sensor cursors a person can read in the UI (*Automation → the sensor → cursor*).

Each sensor's cursor is its service's JSON state (LandingCursor, ScanCursor, EventsCursor: Unix
seconds and nanoseconds, page ids). The sensors return it with one more key first, `readable`: what
the state means in words and ISO times (UTC). Reading strips that key again, so the services see
exactly the state they wrote, and a cursor stored before this key existed reads as it always did.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

READABLE = "readable"


def with_readable(state: str, view: dict[str, object]) -> str:
    """The service's JSON state with `view` in front under `readable`."""
    return json.dumps({READABLE: view, **json.loads(state)})


def state_of(cursor: str | None) -> str | None:
    """The service's state from a stored cursor (with or without a `readable` key)."""
    if not cursor:
        return cursor
    try:
        data = json.loads(cursor)
    except ValueError:
        return cursor  # not ours: the service decides (e.g. starts over)
    if not isinstance(data, dict) or READABLE not in data:
        return cursor
    data.pop(READABLE)
    return json.dumps(data)


def utc_time(seconds: float | None) -> str | None:
    """Unix seconds as an ISO time in UTC, to the second."""
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
