"""The emulator's state: objects by kind, ids, time (real or test-clock), events, lists, expand.

One `Store` per server. The HTTP layer holds `store.lock` for the whole of a request, so the
code here and in the route handlers is written single-threaded. Objects are kept as the JSON
dicts Stripe would answer, plus private keys starting with "_" (never rendered).

Time: an object attached to a test clock (through its customer) lives at that clock's frozen
time; everything else at real time. Scheduled work (renewals, finalizations) sits in one heap
per clock (`None` = real time) and runs when the clock advances or, for real time, on the next
request or tick.
"""

from __future__ import annotations

import bisect
import heapq
import json
import random
import string
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aisyst_pipelines.emulator.dunning import RevenueRecovery
from aisyst_pipelines.emulator.wire import Bounds, as_list, invalid, missing_param, no_such, opt_int

API_VERSION = "2026-10-28.endive"

# id prefix → object kind, so that `expand` can find any id it meets.
PREFIX_KIND = {
    "cus": "customer",
    "pm": "payment_method",
    "prod": "product",
    "price": "price",
    "txr": "tax_rate",
    "sub": "subscription",
    "si": "subscription_item",
    "in": "invoice",
    "ii": "invoiceitem",
    "mtr": "billing.meter",
    "evt": "event",
    "clock": "test_helpers.test_clock",
    "bps": "billing_portal.session",
    "we": "webhook_endpoint",
}

KIND_LABEL = {  # how Stripe names a kind in "No such …" messages
    "customer": "customer",
    "payment_method": "PaymentMethod",
    "product": "product",
    "price": "price",
    "tax_rate": "tax rate",
    "subscription": "subscription",
    "subscription_item": "subscription item",
    "invoice": "invoice",
    "invoiceitem": "invoiceitem",
    "billing.meter": "billing.meter",
    "event": "event",
    "test_helpers.test_clock": "test_clock",
    "billing_portal.session": "billing portal session",
    "webhook_endpoint": "webhook endpoint",
}

Renderer = Callable[["Store", dict[str, Any]], dict[str, Any]]
Action = Callable[["Store", str, int], None]

RENDERERS: dict[str, Renderer] = {}
ACTIONS: dict[str, Action] = {}


def renderer(kind: str) -> Callable[[Renderer], Renderer]:
    def register(function: Renderer) -> Renderer:
        RENDERERS[kind] = function
        return function

    return register


def action(name: str) -> Callable[[Action], Action]:
    def register(function: Action) -> Action:
        ACTIONS[name] = function
        return function

    return register


def copy_json(value: Any) -> Any:
    """A deep copy for JSON-shaped data (much faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: copy_json(v) for k, v in obj.items() if not k.startswith("_")}


@dataclass
class RequestContext:
    """What an event's `request` field says: the API request that caused it (None = automatic)."""

    request_id: str | None = None
    idempotency_key: str | None = None


@dataclass
class MeterEventRecord:
    event_name: str
    identifier: str
    customer: str
    value: int
    timestamp: int
    received_clock: int  # the customer's clock time at receipt (dedupe, adjustment windows)
    received_real: float  # real time at receipt (aggregation lag)
    payload: dict[str, str]
    canceled: bool = False


@dataclass
class Store:
    seed: int | None = None
    base_url: str = "http://127.0.0.1"
    summary_lag_seconds: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    # What happens to a failed renewal charge: Smart Retries, then cancel / unpaid / past due (dunning.py).
    revenue_recovery: RevenueRecovery = field(default_factory=RevenueRecovery)
    # Called with each event as it is recorded, under the lock (webhook delivery queues it).
    event_listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # The test clock being advanced by the request holding the lock (read without the lock by the
    # requests waiting for it: server.ADVANCE_LOCK_WAIT_SECONDS).
    advancing_clock: str | None = None

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.seed)
        self.tables: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        # Each table's (created, _seq, id) keys in ascending order: Stripe lists newest first, and a page
        # of a 100,000-event table is found by walking from its cursor instead of sorting the table.
        self._order: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        self._seq = 0
        self._schedule: dict[str | None, list[tuple[int, int, str, str]]] = defaultdict(list)
        self._time_override: dict[str | None, int] = {}
        self.meter_events: list[MeterEventRecord] = []
        # The same records indexed by (event_name, customer): a summaries request reads one customer's
        # events only, so 10,000 customers' summaries don't each scan every stored event.
        self.meter_events_by_customer: dict[tuple[str, str], list[MeterEventRecord]] = defaultdict(list)
        self.identifiers: dict[str, MeterEventRecord] = {}
        self.request = RequestContext()

    # ---------------------------------------------------------------- state kept between runs

    def snapshot(self) -> dict[str, Any]:
        """Everything the store knows, as JSON-shaped data (`restore` takes it back)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "format": 1,
            "rng": [version, list(internal), gauss],
            "tables": self.tables,
            "seq": self._seq,
            "schedule": {"" if clock is None else clock: heap for clock, heap in self._schedule.items()},
            "time_override": {"" if clock is None else clock: when for clock, when in self._time_override.items()},
            "meter_events": [vars(record) for record in self.meter_events],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """The store as `snapshot` found it (JSON only: a state file is data, never code)."""
        if state.get("format") != 1:
            raise ValueError("not an emulator state file of format 1")
        self.reset()
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        for event in state["tables"].get("event", {}).values():
            if "data" in event:  # a state file written before events kept their snapshot as text
                event["_data"] = _event_data_text(event.pop("data"))
        for kind, objects in state["tables"].items():
            self.tables[kind].update(objects)
            self._order[kind] = sorted(_order_key(obj) for obj in objects.values())
        self._seq = int(state["seq"])
        for clock, heap in state["schedule"].items():
            self._schedule[clock or None] = [tuple(entry) for entry in heap]  # type: ignore[misc]
        self._time_override = {clock or None: int(when) for clock, when in state["time_override"].items()}
        for fields in state["meter_events"]:
            record = MeterEventRecord(**fields)
            self.meter_events.append(record)
            self.meter_events_by_customer[(record.event_name, record.customer)].append(record)
            self.identifiers[record.identifier] = record

    # ---------------------------------------------------------------- ids and objects

    def new_id(self, prefix: str, length: int = 24) -> str:
        alphabet = string.ascii_letters + string.digits
        return f"{prefix}_1" + "".join(self.rng.choice(alphabet) for _ in range(length - 1))

    def token(self, length: int = 16) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(length))

    def insert(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        obj["_seq"] = self._seq
        self.tables[obj["object"]][obj["id"]] = obj
        bisect.insort(self._order[obj["object"]], _order_key(obj))
        return obj

    def find(self, kind: str, object_id: str) -> dict[str, Any] | None:
        return self.tables[kind].get(object_id)

    def get(self, kind: str, object_id: Any, *, param: str | None = None) -> dict[str, Any]:
        """The object, or `resource_missing` (404 for a path id, 400 when named by a param)."""
        obj = self.tables[kind].get(object_id) if isinstance(object_id, str) else None
        if obj is None or obj.get("deleted"):
            raise no_such(KIND_LABEL.get(kind, kind), str(object_id), param=param, status=400 if param else 404)
        return obj

    def get_param(self, kind: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        """The object a required parameter names: `parameter_missing` when absent, else as `get`."""
        if not params.get(key):
            raise missing_param(key)
        return self.get(kind, params[key], param=key)

    # ---------------------------------------------------------------- time

    def real_now(self) -> int:
        return int(time.time())

    def now(self, clock_id: str | None) -> int:
        """The current time for objects on `clock_id` (None = real time)."""
        if clock_id in self._time_override:
            return self._time_override[clock_id]
        if clock_id is None:
            return self.real_now()
        clock = self.tables["test_helpers.test_clock"].get(clock_id)
        return clock["frozen_time"] if clock else self.real_now()

    def customer_clock(self, customer_id: str | None) -> str | None:
        customer = self.tables["customer"].get(customer_id or "")
        return customer.get("test_clock") if customer else None

    def schedule(self, clock_id: str | None, when: int, name: str, object_id: str) -> None:
        self._seq += 1
        heapq.heappush(self._schedule[clock_id], (when, self._seq, name, object_id))

    def next_due(self, clock_id: str | None) -> int | None:
        heap = self._schedule.get(clock_id)
        return heap[0][0] if heap else None

    def run_due(self, clock_id: str | None, until: int) -> int:
        """Run scheduled actions of a clock due at or before `until`, in time order.

        Each action runs with the clock's time set to the moment it was due, so the invoices
        and events it creates carry that moment (an advance that jumps over several renewals
        creates each one at its own date). Actions may schedule further actions, which run in
        the same pass when they are due too. Returns the number of actions run.
        """
        heap = self._schedule.get(clock_id)
        ran = 0
        try:
            while heap and heap[0][0] <= until:
                when, _, name, object_id = heapq.heappop(heap)
                self._time_override[clock_id] = when
                ACTIONS[name](self, object_id, when)
                ran += 1
        finally:
            self._time_override.pop(clock_id, None)
        return ran

    @contextmanager
    def at(self, clock_id: str | None, moment: int) -> Iterator[None]:
        """Objects of `clock_id` read `moment` as now meanwhile (a preview dated at the renewal it shows)."""
        saved = self._time_override.get(clock_id)
        self._time_override[clock_id] = moment
        try:
            yield
        finally:
            if saved is None:
                self._time_override.pop(clock_id, None)
            else:
                self._time_override[clock_id] = saved

    def tick(self) -> int:
        """Run real-time work that has come due (renewals and finalizations without a clock)."""
        due = self.next_due(None)
        if due is None or due > self.real_now():
            return 0
        return self.run_due(None, self.real_now())

    # ---------------------------------------------------------------- rendering and expand

    def render(self, obj: dict[str, Any]) -> dict[str, Any]:
        function = RENDERERS.get(obj["object"])
        return function(self, obj) if function else public(obj)

    def render_id(self, object_id: str) -> dict[str, Any] | None:
        kind = PREFIX_KIND.get(object_id.split("_", 1)[0])
        obj = self.tables[kind].get(object_id) if kind else None
        return self.render(obj) if obj else None

    def answer(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Render one object with the request's `expand[]` applied."""
        rendered = self.render(obj)
        for path in as_list(params.get("expand"), "expand"):
            self.expand(rendered, path.split("."), path)
        return rendered

    def expand(self, node: Any, parts: list[str], full: str) -> None:
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if isinstance(node, dict) and node.get("object") == "list" and head == "data":
            for item in node["data"]:
                self.expand(item, rest, full)
            return
        if not isinstance(node, dict) or head not in node:
            raise invalid(f"This property cannot be expanded ({full}).", param="expand")
        value = node[head]
        if isinstance(value, str):
            expanded = self.render_id(value)
            if expanded is None:
                raise invalid(f"This property cannot be expanded ({full}).", param="expand")
            node[head] = value = expanded
        elif value is None:
            return
        elif not isinstance(value, dict | list):
            raise invalid(f"This property cannot be expanded ({full}).", param="expand")
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    self.expand(item, rest, full)
            return
        self.expand(value, rest, full)

    def list_answer(
        self,
        url: str,
        items: Iterable[dict[str, Any]],
        params: dict[str, Any],
        *,
        render: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        presorted: bool = False,
    ) -> dict[str, Any]:
        """A list envelope: newest first, `limit` 1-100 (default 10), cursors by object id."""
        ordered = list(items) if presorted else sorted(items, key=_order_key, reverse=True)
        limit, after, before = _page_params(params)
        if after or before:
            cursor = after or before
            position = next((i for i, o in enumerate(ordered) if o["id"] == cursor), None)
            if position is None:
                raise no_such("object", str(cursor), param="starting_after" if after else "ending_before", status=400)
            if after:
                window = ordered[position + 1 : position + 1 + limit]
                has_more = position + 1 + limit < len(ordered)
            else:
                start = max(0, position - limit)
                window = ordered[start:position]
                has_more = start > 0
        else:
            window = ordered[:limit]
            has_more = len(ordered) > limit
        return self._list_envelope(url, window, has_more, params, render or self.render)

    def _list_envelope(
        self,
        url: str,
        window: list[dict[str, Any]],
        has_more: bool,
        params: dict[str, Any],
        draw: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        data = [draw(o) for o in window]
        expand = [p for p in as_list(params.get("expand"), "expand")]
        for path in expand:
            parts = path.split(".")
            if parts[0] != "data":
                raise invalid(f"This property cannot be expanded ({path}).", param="expand")
            for item in data:
                self.expand(item, parts[1:], path)
        return {"object": "list", "data": data, "has_more": has_more, "url": url}

    def list_table(
        self,
        url: str,
        kind: str,
        wanted: Callable[[dict[str, Any]], bool],
        params: dict[str, Any],
        *,
        created: Bounds = (None, None, None, None),
    ) -> dict[str, Any]:
        """`list_answer` of the objects of a whole table that are `wanted`, without sorting the table: the
        page is found by walking the table's order from the cursor (within the `created` bounds, which
        `wanted` must check too). The same answers, at the cost of one page instead of the table's."""
        limit, after, before = _page_params(params)
        table, order = self.tables[kind], self._order[kind]
        low, high = _index_bounds(order, created)

        def matching(indexes: range) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for index in indexes:
                _, seq, object_id = order[index]
                obj = table.get(object_id)
                # A key whose object is gone (a deleted draft) or was inserted again is stale: skip it.
                if obj is not None and obj["_seq"] == seq and wanted(obj):
                    found.append(obj)
                    if len(found) > limit:
                        break
            return found

        cursor_id = after or before
        if cursor_id:
            cursor = table.get(cursor_id)
            if cursor is None or not wanted(cursor):
                raise no_such("object", cursor_id, param="starting_after" if after else "ending_before", status=400)
            position = bisect.bisect_left(order, _order_key(cursor))
            if after:  # the older ones, newest first
                found = matching(range(position - 1, low - 1, -1))
                window = found[:limit]
            else:  # the `limit` just newer than the cursor, newest first
                found = matching(range(position + 1, high))
                window = found[:limit][::-1]
        else:
            found = matching(range(high - 1, low - 1, -1))
            window = found[:limit]
        return self._list_envelope(url, window, len(found) > limit, params, self.render)

    # ---------------------------------------------------------------- events

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous_attributes: dict[str, Any] | None = None,
        clock_id: str | None = None,
    ) -> dict[str, Any]:
        """Record an event with a snapshot of `obj` (rendered now) at the object's clock time.

        The snapshot is kept as JSON text (`_data`, inflated by `render_event`): an event is never changed
        after it is emitted, and as text it takes a third of the memory of the same dicts — at a
        100,000-customer month start the events are most of what the emulator holds."""
        data: dict[str, Any] = {"object": self.render(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        automatic = clock_id in self._time_override
        event = {
            "id": self.new_id("evt"),
            "object": "event",
            "account": None,
            "api_version": API_VERSION,
            "context": None,
            "created": self.now(clock_id),
            "_data": _event_data_text(data),
            "livemode": False,
            "pending_webhooks": 0,
            "request": {
                "id": None if automatic else self.request.request_id,
                "idempotency_key": None if automatic else self.request.idempotency_key,
            },
            "type": event_type,
        }
        self.insert(event)
        for listener in self.event_listeners:
            listener(event)
        return event


def _event_data_text(data: dict[str, Any]) -> str:
    """An event's `data` as the store keeps it (see `Store.emit`)."""
    return json.dumps(data, separators=(",", ":"))


@renderer("event")
def render_event(store: Store, event: dict[str, Any]) -> dict[str, Any]:
    rendered = public(event)
    rendered["data"] = json.loads(event["_data"])
    return rendered


def _order_key(obj: dict[str, Any]) -> tuple[int, int, str]:
    return (obj.get("created") or 0, obj.get("_seq", 0), obj["id"])


def _index_bounds(order: list[tuple[int, int, str]], created: Bounds) -> tuple[int, int]:
    """The slice [low, high) of a table's order whose `created` can be within the bounds."""
    gt, gte, lt, lte = created
    low = max(bisect.bisect_left(order, (gt + 1,)) if gt is not None else 0, bisect.bisect_left(order, (gte,)) if gte is not None else 0)
    high = min(
        bisect.bisect_left(order, (lt,)) if lt is not None else len(order),
        bisect.bisect_left(order, (lte + 1,)) if lte is not None else len(order),
    )
    return low, high


def _page_params(params: dict[str, Any]) -> tuple[int, str | None, str | None]:
    """(limit, starting_after, ending_before) of a list request, as Stripe checks them."""
    limit = opt_int(params, "limit")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= 100:
        raise invalid("Invalid integer: limit must be between 1 and 100", code="parameter_invalid_integer", param="limit")
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise invalid(
            "You may only specify one of these parameters: starting_after, ending_before.",
            code="parameters_exclusive",
            param="ending_before",
        )
    return limit, after, before


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`previous_attributes`: the old values of the top-level keys that changed."""
    return {k: before.get(k) for k in after if before.get(k) != after.get(k)}
