"""Events: `GET /v1/events` (type, types[], created ranges, cursors) and `GET /v1/events/{id}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.wire import as_list, in_range, invalid, range_filter


def _type_filter(patterns: list[str]) -> Callable[[str], bool]:
    """`invoice.*` matches every invoice event; other patterns match exactly. Built once per request:
    the events sensor lists 20 types against every stored event on each page (70,000 in the renewal
    bench), where a set lookup per event is a small fraction of a per-pattern loop."""
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    if not patterns:
        return lambda event_type: True
    return lambda event_type: event_type in exact or event_type.startswith(prefixes)


@route("GET", "/v1/events", "EventListParams")
def list_events(call: Call) -> dict[str, Any]:
    p = call.params
    types = as_list(p.get("types"), "types")
    if types and p.get("type"):
        raise invalid("You may only specify one of these parameters: type, types.", code="parameters_exclusive", param="types")
    if len(types) > 20:
        raise invalid("You may pass at most 20 event types.", param="types")
    patterns = types or ([p["type"]] if p.get("type") else [])
    created = range_filter(p, "created")
    matches = _type_filter(patterns)
    return call.store.list_table(
        "/v1/events", "event", lambda e: matches(e["type"]) and in_range(e["created"], created), p, created=created
    )


@route("GET", "/v1/events/{id}", "EventRetrieveParams")
def retrieve_event(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("event", call.args["id"]), call.params)
