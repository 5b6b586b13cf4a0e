"""Webhook endpoints: create (the whsec_ signing secret is answered once, here), retrieve, list,
update (url, enabled_events, disabled, description, metadata), delete. Delivery: emulator/webhooks.py.

The emulator sends to loopback addresses only (it listens on loopback only, and must not become a
way to POST to the rest of the network): a receiver on 127.0.0.1/::1/localhost.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.store import Store
from aisyst_pipelines.emulator.wire import as_list, invalid, merge_metadata, missing_param, req_str, to_bool


def _url(value: Any, param: str = "url") -> str:
    url = req_str({param: value}, param)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"Invalid URL: {url}. URLs must begin with http:// or https://.", code="url_invalid", param=param)
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise invalid(
            f"Invalid URL: {url}. The emulator delivers webhooks to loopback addresses only "
            "(127.0.0.1, ::1, localhost).",
            code="url_invalid",
            param=param,
        )
    return url


def _enabled_events(value: Any) -> list[str]:
    events = as_list(value, "enabled_events")  # each name already checked against the SDK's list
    if not events:
        raise missing_param("enabled_events")
    return list(dict.fromkeys(events))


def _endpoint(store: Store, endpoint_id: str) -> dict[str, Any]:
    return store.get("webhook_endpoint", endpoint_id)


@route("POST", "/v1/webhook_endpoints", "WebhookEndpointCreateParams")
def create_endpoint(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    endpoint = store.insert(
        {
            "id": store.new_id("we"),
            "object": "webhook_endpoint",
            "api_version": p.get("api_version"),
            "application": None,
            "created": store.real_now(),
            "description": p.get("description") or None,
            "enabled_events": _enabled_events(p.get("enabled_events")),
            "livemode": False,
            "metadata": merge_metadata({}, p.get("metadata")),
            "status": "enabled",
            "url": _url(p.get("url")),
            "_secret": "whsec_" + store.token(32),
        }
    )
    answer = store.answer(endpoint, p)
    answer["secret"] = endpoint["_secret"]  # only ever answered here, as Stripe does
    return answer


@route("GET", "/v1/webhook_endpoints/{webhook_endpoint}", "WebhookEndpointRetrieveParams")
def retrieve_endpoint(call: Call) -> dict[str, Any]:
    return call.store.answer(_endpoint(call.store, call.args["webhook_endpoint"]), call.params)


@route("GET", "/v1/webhook_endpoints", "WebhookEndpointListParams")
def list_endpoints(call: Call) -> dict[str, Any]:
    endpoints = [e for e in call.store.tables["webhook_endpoint"].values() if not e.get("deleted")]
    return call.store.list_answer("/v1/webhook_endpoints", endpoints, call.params)


@route("POST", "/v1/webhook_endpoints/{webhook_endpoint}", "WebhookEndpointUpdateParams")
def update_endpoint(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    endpoint = _endpoint(store, call.args["webhook_endpoint"])
    if "url" in p:
        endpoint["url"] = _url(p["url"])
    if "enabled_events" in p:
        endpoint["enabled_events"] = _enabled_events(p["enabled_events"])
    if "disabled" in p:
        endpoint["status"] = "disabled" if to_bool(p["disabled"], "disabled") else "enabled"
    if "description" in p:
        endpoint["description"] = p["description"] or None
    if "metadata" in p:
        endpoint["metadata"] = merge_metadata(endpoint["metadata"], p["metadata"])
    return store.answer(endpoint, p)


@route("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}", "WebhookEndpointDeleteParams")
def delete_endpoint(call: Call) -> dict[str, Any]:
    endpoint = _endpoint(call.store, call.args["webhook_endpoint"])
    endpoint["deleted"] = True
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}

