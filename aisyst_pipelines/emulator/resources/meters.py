"""Billing meters, meter events, meter event adjustments and meter event summaries.

The windows Stripe documents are enforced synchronously (Stripe validates some of them
asynchronously; an emulator that fails fast is the more useful test partner):

- timestamp within [now − 35 days, now + 5 minutes], "now" being the customer's test-clock
  time when the customer is on a clock;
- identifiers unique for 24 hours of (clock) time — a duplicate answers 400
  `resource_already_exists`; after that the identifier is forgotten, as Stripe forgets it;
- adjustments cancel an event only within 24 hours of its receipt.

Summaries aggregate per the meter's formula over `[start_time, end_time)` (minute aligned;
hour- or UTC-day-aligned with `value_grouping_window`), newest window first, and leave out
events received less than `summary_lag_seconds` ago ("Stripe still processing").
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import MeterEventRecord, Store
from aisyst_pipelines.emulator.wire import invalid, missing_param, req_str, to_int

PAST_WINDOW = 35 * 86400
FUTURE_WINDOW = 300
IDENTIFIER_MEMORY = 24 * 3600
CANCEL_WINDOW = 24 * 3600


@route("POST", "/v1/billing/meters", "billing.MeterCreateParams")
def create_meter(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    event_name = req_str(p, "event_name")
    display_name = req_str(p, "display_name")
    if len(display_name) > 250:
        raise invalid("display_name can be at most 250 characters.", param="display_name")
    if len(event_name) > 100:
        raise invalid("event_name can be at most 100 characters.", param="event_name")
    if any(m["event_name"] == event_name for m in store.tables["billing.meter"].values()):
        raise invalid(
            f"A meter with event_name '{event_name}' already exists.", code="resource_already_exists", param="event_name"
        )
    formula = (p.get("default_aggregation") or {}).get("formula")
    if formula not in ("count", "sum", "last"):
        raise missing_param("default_aggregation[formula]") if formula is None else invalid(
            "Invalid default_aggregation[formula]: must be one of count, sum or last", param="default_aggregation[formula]"
        )
    now = store.real_now()
    meter = store.insert(
        {
            "id": store.new_id("mtr"),
            "object": "billing.meter",
            "created": now,
            "customer_mapping": {
                "event_payload_key": (p.get("customer_mapping") or {}).get("event_payload_key") or "stripe_customer_id",
                "type": "by_id",
            },
            "default_aggregation": {"formula": formula},
            "display_name": display_name,
            "event_name": event_name,
            "event_time_window": p.get("event_time_window"),
            "livemode": False,
            "status": "active",
            "status_transitions": {"deactivated_at": None},
            "updated": now,
            "value_settings": {"event_payload_key": (p.get("value_settings") or {}).get("event_payload_key") or "value"},
        }
    )
    store.emit("billing.meter.created", meter)
    return store.answer(meter, p)


@route("GET", "/v1/billing/meters", "billing.MeterListParams")
def list_meters(call: Call) -> dict[str, Any]:
    status = call.params.get("status")
    items = [m for m in call.store.tables["billing.meter"].values() if status is None or m["status"] == status]
    return call.store.list_answer("/v1/billing/meters", items, call.params)


@route("GET", "/v1/billing/meters/{id}", "billing.MeterRetrieveParams")
def retrieve_meter(call: Call) -> dict[str, Any]:
    return call.store.answer(call.store.get("billing.meter", call.args["id"]), call.params)


@route("POST", "/v1/billing/meters/{id}", "billing.MeterUpdateParams")
def update_meter(call: Call) -> dict[str, Any]:
    store = call.store
    meter = store.get("billing.meter", call.args["id"])
    if "display_name" in call.params:
        meter["display_name"] = req_str(call.params, "display_name")
        meter["updated"] = store.real_now()
        store.emit("billing.meter.updated", meter)
    return store.answer(meter, call.params)


def _set_status(call: Call, status: str) -> dict[str, Any]:
    store = call.store
    meter = store.get("billing.meter", call.args["id"])
    if meter["status"] == status:
        raise invalid(f"This meter is already {status}.")
    now = store.real_now()
    meter.update(status=status, updated=now)
    meter["status_transitions"]["deactivated_at"] = now if status == "inactive" else None
    store.emit("billing.meter.deactivated" if status == "inactive" else "billing.meter.reactivated", meter)
    return store.answer(meter, call.params)


@route("POST", "/v1/billing/meters/{id}/deactivate", "billing.MeterDeactivateParams")
def deactivate(call: Call) -> dict[str, Any]:
    return _set_status(call, "inactive")


@route("POST", "/v1/billing/meters/{id}/reactivate", "billing.MeterReactivateParams")
def reactivate(call: Call) -> dict[str, Any]:
    return _set_status(call, "active")


def _active_meter(store: Store, event_name: str) -> dict[str, Any]:
    for meter in store.tables["billing.meter"].values():
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    raise invalid(f"No active meter was found for event_name '{event_name}'.", code="resource_missing", param="event_name")


# ------------------------------------------------------------------ meter events


@route("POST", "/v1/billing/meter_events", "billing.MeterEventCreateParams")
def create_meter_event(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    event_name = req_str(p, "event_name")
    payload = p.get("payload")
    if not isinstance(payload, dict):
        raise missing_param("payload")
    meter = _active_meter(store, event_name)
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    if not payload.get(customer_key):
        raise missing_param(f"payload[{customer_key}]")
    customer = store.get("customer", payload[customer_key], param=f"payload[{customer_key}]")
    raw_value = payload.get(value_key)
    if raw_value is None:
        if meter["default_aggregation"]["formula"] != "count":
            raise missing_param(f"payload[{value_key}]")
        raw_value = "1"
    value = to_int(raw_value, f"payload[{value_key}]")  # whole numbers only; negatives correct earlier usage
    now = store.now(customer["test_clock"])
    timestamp = to_int(p["timestamp"], "timestamp") if p.get("timestamp") is not None else now
    if timestamp < now - PAST_WINDOW:
        raise invalid(
            "Meter event timestamps must be within the past 35 days.", code="timestamp_too_far_in_past", param="timestamp"
        )
    if timestamp > now + FUTURE_WINDOW:
        raise invalid("Meter event timestamps may be at most 5 minutes in the future.", code="timestamp_in_future", param="timestamp")
    identifier = p.get("identifier") or store.new_id("mevt")[5:]
    earlier = store.identifiers.get(identifier)
    if earlier is not None and store.now(store.customer_clock(earlier.customer)) - earlier.received_clock < IDENTIFIER_MEMORY:
        raise invalid(
            f"A meter event with identifier '{identifier}' was already received; identifiers must be unique "
            "within 24 hours.",
            code="resource_already_exists",
            param="identifier",
        )
    record = MeterEventRecord(
        event_name=event_name,
        identifier=identifier,
        customer=customer["id"],
        value=value,
        timestamp=timestamp,
        received_clock=now,
        received_real=time.time(),
        payload={k: str(v) for k, v in payload.items()},
    )
    store.meter_events.append(record)
    store.meter_events_by_customer[(event_name, record.customer)].append(record)
    store.identifiers[identifier] = record
    return {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": record.payload,
        "timestamp": timestamp,
    }


@route("POST", "/v1/billing/meter_event_adjustments", "billing.MeterEventAdjustmentCreateParams")
def create_adjustment(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    event_name = req_str(p, "event_name")
    if p.get("type", "cancel") != "cancel":
        raise invalid("Only type=cancel is supported.", param="type")
    identifier = (p.get("cancel") or {}).get("identifier")
    if not identifier:
        raise missing_param("cancel[identifier]")
    record = store.identifiers.get(identifier)
    if record is None or record.event_name != event_name:
        raise invalid(f"No meter event with identifier '{identifier}' was found.", code="resource_missing", param="cancel[identifier]")
    if store.now(store.customer_clock(record.customer)) - record.received_clock >= CANCEL_WINDOW:
        raise invalid(
            "Meter events can only be canceled within 24 hours of being received.", param="cancel[identifier]"
        )
    record.canceled = True
    return {
        "id": store.new_id("mtrea"),
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }


# ------------------------------------------------------------------ summaries


def _aggregate(formula: str, records: list[MeterEventRecord]) -> float:
    if formula == "count":
        return float(len(records))
    if formula == "sum":
        return float(sum(r.value for r in records))
    latest = max(records, key=lambda r: (r.timestamp, r.received_real), default=None)
    return float(latest.value) if latest else 0.0


def _pre_aggregated(meter: dict[str, Any], records: list[MeterEventRecord]) -> list[MeterEventRecord]:
    """With an `event_time_window`, the newest event of each hour/day replaces the earlier ones."""
    window = {"hour": 3600, "day": 86400}.get(meter["event_time_window"] or "")
    if not window:
        return records
    newest: dict[int, MeterEventRecord] = {}
    for record in sorted(records, key=lambda r: r.received_real):
        newest[record.timestamp // window] = record
    return list(newest.values())


@route("GET", "/v1/billing/meters/{id}/event_summaries", "billing.MeterEventSummaryListParams")
def list_summaries(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    meter = store.get("billing.meter", call.args["id"])
    customer_id = req_str(p, "customer")
    store.get("customer", customer_id, param="customer")
    if p.get("start_time") is None:
        raise missing_param("start_time")
    if p.get("end_time") is None:
        raise missing_param("end_time")
    start, end = to_int(p["start_time"], "start_time"), to_int(p["end_time"], "end_time")
    grouping = p.get("value_grouping_window")
    step = {"hour": 3600, "day": 86400, None: 60}.get(grouping)
    if step is None:
        raise invalid("Invalid value_grouping_window: must be one of day or hour", param="value_grouping_window")
    for name, moment in (("start_time", start), ("end_time", end)):
        if moment % step:
            unit = {60: "minute", 3600: "hour", 86400: "day (00:00 UTC)"}[step]
            raise invalid(f"{name} must be aligned with {unit} boundaries.", param=name)
    if end <= start:
        raise invalid("end_time must be after start_time.", param="end_time")
    visible_before = time.time() - store.summary_lag_seconds
    records = [
        r
        for r in store.meter_events_by_customer.get((meter["event_name"], customer_id), ())
        if not r.canceled
        and start <= r.timestamp < end
        and r.received_real <= visible_before
    ]
    records = _pre_aggregated(meter, records)
    windows = [(start, end)] if grouping is None else [(t, min(t + step, end)) for t in range(start, end, step)]
    formula = meter["default_aggregation"]["formula"]
    summaries = []
    for window_start, window_end in reversed(windows):  # newest window first, like the docs' example
        inside = [r for r in records if window_start <= r.timestamp < window_end]
        digest = hashlib.sha1(f"{meter['id']}|{customer_id}|{window_start}|{window_end}".encode()).hexdigest()[:24]
        summaries.append(
            {
                "id": f"mtrusg_{digest}",
                "object": "billing.meter_event_summary",
                "aggregated_value": _aggregate(formula, inside),
                "end_time": window_end,
                "livemode": False,
                "meter": meter["id"],
                "start_time": window_start,
            }
        )
    return store.list_answer(f"/v1/billing/meters/{meter['id']}/event_summaries", summaries, p, render=dict, presorted=True)


