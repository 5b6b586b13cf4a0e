"""An event keeps the snapshot of its object as it was when the event was emitted (stored as JSON text,
see `Store.emit`), whatever happens to the object afterwards, and through a state file."""

from __future__ import annotations

import json

from aisyst_pipelines.emulator.store import Store


def _store_with_a_customer_event() -> tuple[Store, dict, dict]:
    store = Store(seed=1)
    customer = store.insert({"id": "cus_1", "object": "customer", "created": 100, "name": "Before", "metadata": {"a": "1"}})
    event = store.emit("customer.updated", customer, previous_attributes={"name": "Older"})
    return store, customer, event


def test_an_event_lists_its_object_as_it_was_when_emitted() -> None:
    store, customer, event = _store_with_a_customer_event()
    customer["name"] = "After"
    customer["metadata"]["a"] = "2"

    rendered = store.render(event)

    assert rendered["data"] == {"object": {"id": "cus_1", "object": "customer", "created": 100, "name": "Before", "metadata": {"a": "1"}},
                                "previous_attributes": {"name": "Older"}}
    assert rendered["type"] == "customer.updated" and "_data" not in rendered
    rendered["data"]["object"]["name"] = "changed by a caller"
    assert store.render(event)["data"]["object"]["name"] == "Before"


def test_a_state_file_keeps_the_events_and_one_written_before_text_snapshots_still_loads() -> None:
    store, _, event = _store_with_a_customer_event()
    expected = store.render(event)
    state = json.loads(json.dumps(store.snapshot()))

    restored = Store(seed=1)
    restored.restore(state)
    assert restored.render(restored.tables["event"][event["id"]]) == expected

    older = json.loads(json.dumps(state))  # as an earlier emulator wrote it: the snapshot as an object
    stored = older["tables"]["event"][event["id"]]
    stored["data"] = json.loads(stored.pop("_data"))
    restored = Store(seed=1)
    restored.restore(older)
    assert restored.render(restored.tables["event"][event["id"]]) == expected
