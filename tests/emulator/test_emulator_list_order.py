"""`Store.list_table` walks a table's (created, _seq) order from the cursor instead of sorting the whole
table per page; these tests hold it to the answers of sorting (`list_answer`), the reference."""

from __future__ import annotations

import random
from typing import Any

import pytest

from aisyst_pipelines.emulator.store import Store
from aisyst_pipelines.emulator.wire import ApiError, in_range


def _store_with_events(rng: random.Random, count: int) -> Store:
    store = Store(seed=1)
    for _ in range(count):
        # Test clocks make `created` jump back and forth between inserts, and many share a second.
        store.insert({"id": store.new_id("evt"), "object": "event", "created": rng.randint(100, 130), "type": rng.choice("abc"), "_data": "{}"})
    return store


def _answer(store: Store, listing: str, wanted: Any, params: dict[str, Any], created: Any) -> Any:
    try:
        if listing == "table":
            page = store.list_table("/v1/events", "event", wanted, params, created=created)
        else:
            items = [e for e in store.tables["event"].values() if wanted(e)]
            page = store.list_answer("/v1/events", items, params)
    except ApiError as error:
        return ("error", error.status, error.body("req")["error"].get("param"))
    return ([e["id"] for e in page["data"]], page["has_more"])


@pytest.mark.parametrize("seed", range(40))
def test_a_page_is_what_sorting_the_whole_table_gives(seed: int) -> None:
    rng = random.Random(seed)
    store = _store_with_events(rng, rng.randint(0, 60))
    ids = list(store.tables["event"])
    for _ in range(30):
        types = set(rng.sample("abc", rng.randint(1, 3)))
        created = rng.choice([(None, None, None, None), (None, rng.randint(100, 130), None, None), (rng.randint(100, 130), None, rng.randint(100, 131), None), (None, None, None, rng.randint(100, 130))])

        def wanted(event: dict[str, Any], types: set[str] = types, created: Any = created) -> bool:
            return event["type"] in types and in_range(event["created"], created)

        params: dict[str, Any] = {"limit": rng.choice([1, 2, 3, 10, 100])}
        cursor = rng.choice(ids + ["evt_gone", None, None]) if ids else None
        if cursor is not None:
            params[rng.choice(["starting_after", "ending_before"])] = cursor
        assert _answer(store, "table", wanted, params, created) == _answer(store, "sorted", wanted, params, created)


def test_paging_both_ways_visits_every_wanted_object_once() -> None:
    rng = random.Random(5)
    store = _store_with_events(rng, 250)
    del store.tables["event"][next(iter(store.tables["event"]))]  # a deleted object leaves its key behind

    def wanted(event: dict[str, Any]) -> bool:
        return event["type"] != "c"

    expected = [e["id"] for e in sorted(store.tables["event"].values(), key=lambda e: (e["created"], e["_seq"]), reverse=True) if wanted(e)]
    older: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        page = store.list_table("/v1/events", "event", wanted, params)
        older += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        params = {"limit": 7, "starting_after": older[-1]}
    assert older == expected
    newer: list[str] = []
    params = {"limit": 7, "ending_before": expected[-1]}
    while True:
        page = store.list_table("/v1/events", "event", wanted, params)
        newer = [e["id"] for e in page["data"]] + newer
        if not page["has_more"]:
            break
        params = {"limit": 7, "ending_before": newer[0]}
    assert newer == expected[:-1]


def test_the_order_survives_a_snapshot() -> None:
    store = _store_with_events(random.Random(3), 40)
    restored = Store(seed=1)
    restored.restore(store.snapshot())
    params = {"limit": 100}
    assert restored.list_table("/v1/events", "event", lambda e: True, params) == store.list_table("/v1/events", "event", lambda e: True, params)
