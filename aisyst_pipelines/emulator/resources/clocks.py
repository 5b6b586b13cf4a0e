"""Test clocks: create, retrieve, list, delete, advance.

Advancing runs every renewal and automatic finalization of the clock's objects that falls in
the jump, each at its own moment (see `billing`). The work is done before the answer is sent;
the answer says `advancing` as Stripe's does, and the clock reads `ready` from then on. A request
kept waiting more than a moment by an advance is answered 429 `lock_timeout` (server.py), where
Stripe, advancing in the background, would have answered it.
"""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator import periods
from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store, public
from aisyst_pipelines.emulator.wire import invalid, req, to_int

DELETES_AFTER = 7 * 86400
TWO_YEARS = 2 * 366 * 86400


@route("POST", "/v1/test_helpers/test_clocks", "test_helpers.TestClockCreateParams")
def create_clock(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    created = store.real_now()
    clock = store.insert(
        {
            "id": store.new_id("clock"),
            "object": "test_helpers.test_clock",
            "created": created,
            "deletes_after": created + DELETES_AFTER,
            "frozen_time": to_int(req(p, "frozen_time"), "frozen_time"),
            "livemode": False,
            "name": p.get("name"),
            "status": "ready",
            "status_details": {},
        }
    )
    if p.get("customer"):
        customer = store.get("customer", p["customer"], param="customer")
        if customer["test_clock"]:
            raise invalid("This customer is already attached to a test clock.", param="customer")
        customer["test_clock"] = clock["id"]
    store.emit("test_helpers.test_clock.created", clock)
    return store.answer(clock, p)


@route("GET", "/v1/test_helpers/test_clocks/{test_clock}", "test_helpers.TestClockRetrieveParams")
def retrieve_clock(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("test_helpers.test_clock", call.args["test_clock"]), call.params)


@route("GET", "/v1/test_helpers/test_clocks", "test_helpers.TestClockListParams")
def list_clocks(call: Call) -> dict[str, Any]:
    clocks = [c for c in call.store.tables["test_helpers.test_clock"].values() if not c.get("deleted")]
    return call.store.list_answer("/v1/test_helpers/test_clocks", clocks, call.params)


@route("DELETE", "/v1/test_helpers/test_clocks/{test_clock}", "test_helpers.TestClockDeleteParams")
def delete_clock(call: Call) -> dict[str, Any]:
    store = call.store
    clock = store.get("test_helpers.test_clock", call.args["test_clock"])
    clock["deleted"] = True
    # Deleting a clock deletes the objects it owns.
    for customer in store.tables["customer"].values():
        if customer["test_clock"] == clock["id"]:
            customer["deleted"] = True
    for subscription in store.tables["subscription"].values():
        if subscription["test_clock"] == clock["id"]:
            subscription["status"] = "canceled"
    store.emit("test_helpers.test_clock.deleted", clock)
    return {"id": clock["id"], "object": "test_helpers.test_clock", "deleted": True}


def _advance_limit(store: Store, clock: dict[str, Any]) -> int:
    """Two intervals of the shortest subscription on the clock, else two years."""
    frozen = clock["frozen_time"]
    limits = []
    for subscription in store.tables["subscription"].values():
        if subscription["test_clock"] != clock["id"] or subscription["status"] == "canceled":
            continue
        for item_id in subscription["_items"]:
            recurring = store.tables["price"][store.tables["subscription_item"][item_id]["_price"]]["recurring"]
            limits.append(periods.boundary(frozen, recurring["interval"], recurring["interval_count"], 2))
    return min(limits) if limits else frozen + TWO_YEARS


@route("POST", "/v1/test_helpers/test_clocks/{test_clock}/advance", "test_helpers.TestClockAdvanceParams")
def advance_clock(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    clock = store.get("test_helpers.test_clock", call.args["test_clock"])
    target = to_int(req(p, "frozen_time"), "frozen_time")
    if target <= clock["frozen_time"]:
        raise invalid("The frozen_time must be after the test clock's current frozen time.", param="frozen_time")
    limit = _advance_limit(store, clock)
    if target > limit:
        raise invalid(
            f"Cannot advance more than two intervals of the shortest subscription on this clock "
            f"(at most to {limit}, {periods.iso(limit)}).",
            param="frozen_time",
        )
    store.emit("test_helpers.test_clock.advancing", clock)
    store.advancing_clock = clock["id"]
    try:
        store.run_due(clock["id"], target)
    finally:
        store.advancing_clock = None
    clock["frozen_time"] = target
    answer = public(clock)
    answer.update(status="advancing", status_details={"advancing": {"target_frozen_time": target}})
    store.emit("test_helpers.test_clock.ready", clock)
    return answer
