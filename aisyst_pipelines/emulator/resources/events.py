"""Events: `GET /v1/events` (type, types[], created ranges, cursors) and `GET /v1/events/{id}`."""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.wire import as_list, in_range, invalid, range_filter


def _type_matches(pattern: str, event_type: str) -> bool:
    """`invoice.*` matches every invoice event; other patterns match exactly."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


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
    items = [
        e
        for e in call.store.tables["event"].values()
        if (not patterns or any(_type_matches(t, e["type"]) for t in patterns)) and in_range(e["created"], created)
    ]
    return call.store.list_answer("/v1/events", items, p)


@route("GET", "/v1/events/{id}", "EventRetrieveParams")
def retrieve_event(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("event", call.args["id"]), call.params)
