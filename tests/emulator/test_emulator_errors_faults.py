"""Errors, idempotency, auth and fault injection: what the SDK sees and what the server counted."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe

from aisyst_pipelines.emulator import EmulatorServer, Faults


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's real retry logic with its backoff shortened from 0.5-5 s to 10-50 ms."""
    from stripe._http_client import HTTPClient

    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(HTTPClient, "MAX_DELAY", 0.05)


def test_parameter_errors_map_to_sdk_exceptions(stripe_emulator) -> None:
    client = stripe_emulator.client()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meters.create({"display_name": "Minutes", "default_aggregation": {"formula": "sum"}})
    assert (missing.value.code, missing.value.param, missing.value.http_status) == ("parameter_missing", "event_name", 400)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.create({"nickname": "x"})  # type: ignore[typeddict-unknown-key]
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "nickname")
    with pytest.raises(stripe.InvalidRequestError) as not_integer:
        client.v1.customers.list({"limit": "ten"})  # type: ignore[typeddict-item]
    assert (not_integer.value.code, not_integer.value.param) == ("parameter_invalid_integer", "limit")
    with pytest.raises(stripe.InvalidRequestError) as no_such:
        client.v1.invoices.retrieve("in_missing")
    assert (no_such.value.code, no_such.value.http_status) == ("resource_missing", 404)
    with pytest.raises(stripe.InvalidRequestError) as no_such_param:
        client.v1.subscriptions.create({"customer": "cus_missing", "items": [{"price": "price_x"}]})
    assert (no_such_param.value.code, no_such_param.value.param, no_such_param.value.http_status) == (
        "resource_missing",
        "customer",
        400,
    )
    assert no_such_param.value.request_id.startswith("req_")


def test_authentication(stripe_emulator) -> None:
    with pytest.raises(stripe.AuthenticationError):
        stripe_emulator.client(api_key="sk_live_nope").v1.customers.list()
    assert stripe_emulator.client(api_key="rk_test_restricted").v1.customers.list().data == []
    bare = requests.get(f"{stripe_emulator.url}/v1/customers", timeout=5)
    assert bare.status_code == 401 and bare.headers["Request-Id"].startswith("req_")


def test_idempotent_replay_and_mismatch(stripe_emulator) -> None:
    client = stripe_emulator.client()
    first = client.v1.customers.create({"name": "Once"}, {"idempotency_key": "key-1"})
    again = client.v1.customers.create({"name": "Once"}, {"idempotency_key": "key-1"})
    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.customers.create({"name": "Other"}, {"idempotency_key": "key-1"})
    assert mismatch.value.http_status == 400


def test_validation_errors_are_not_stored_under_the_key(stripe_emulator) -> None:
    client = stripe_emulator.client()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.tax_rates.create({"display_name": "GST", "percentage": 10}, {"idempotency_key": "k"})
    fixed = client.v1.tax_rates.create({"display_name": "GST", "percentage": 10, "inclusive": False}, {"idempotency_key": "k"})
    assert fixed.id.startswith("txr_")


def test_concurrent_duplicate_gets_409_in_use_then_replays(stripe_emulator) -> None:
    stripe_emulator.set_faults(latency_ms=0)
    server: EmulatorServer = stripe_emulator.server
    # Hold the state lock so that the first request stays in flight while the duplicate arrives.
    body = "name=Concurrent"
    headers = {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "dup", "Content-Type": "application/x-www-form-urlencoded"}
    results: dict[str, requests.Response] = {}
    with server.store.lock:
        first = threading.Thread(
            target=lambda: results.__setitem__("first", requests.post(f"{stripe_emulator.url}/v1/customers", data=body, headers=headers, timeout=10))
        )
        first.start()
        deadline = time.monotonic() + 10
        while not server.idempotency.snapshot() and time.monotonic() < deadline:  # the first request claimed the key
            time.sleep(0.01)
        duplicate = requests.post(f"{stripe_emulator.url}/v1/customers", data=body, headers=headers, timeout=10)
    first.join()
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 200
    replay = requests.post(f"{stripe_emulator.url}/v1/customers", data=body, headers=headers, timeout=10)
    assert replay.json()["id"] == results["first"].json()["id"] and replay.headers["Idempotent-Replayed"] == "true"


def test_sdk_retries_429_with_should_retry_header(stripe_emulator, fast_retries) -> None:
    stripe_emulator.set_faults(rate_limit_error_rate=1.0)
    client = stripe_emulator.client(max_network_retries=2)
    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.customers.list()
    assert limited.value.http_status == 429 and limited.value.json_body["error"]["code"] == "rate_limit"
    assert len(stripe_emulator.requests("/v1/customers")) == 3  # the first try and two retries
    stripe_emulator.reset()
    stripe_emulator.set_faults(rate_limit_should_retry=False)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    assert len(stripe_emulator.requests("/v1/customers")) == 1  # no header → the SDK does not retry 429s


def test_sdk_retries_5xx_and_recovers(stripe_emulator, fast_retries) -> None:
    server: EmulatorServer = stripe_emulator.server
    server.set_faults(error_rate=0.3)
    client = stripe_emulator.client(max_network_retries=8)
    created = [client.v1.customers.create({"name": f"c{i}"}).id for i in range(10)]
    log = stripe_emulator.requests("/v1/customers", "POST")
    assert any(e["status"] == 500 for e in log)  # faults happened …
    assert len(set(created)) == 10  # … and every create still ran exactly once
    server.set_faults(error_rate=0.0)
    assert len(client.v1.customers.list({"limit": 100}).data) == 10
    server.set_faults(error_rate=1.0)
    with pytest.raises(stripe.APIError):
        client.v1.customers.list()


def test_dropped_connections_are_retried_and_replayed(stripe_emulator, fast_retries) -> None:
    stripe_emulator.set_faults(drop_rate=0.3)
    client = stripe_emulator.client(max_network_retries=8)
    created = [client.v1.customers.create({"name": f"d{i}"}).id for i in range(10)]
    log = stripe_emulator.requests("/v1/customers", "POST")
    assert any(e["outcome"] == "drop" for e in log)
    assert any(e["outcome"] == "replay" for e in log)  # the answer was lost, the retry replayed it
    stripe_emulator.set_faults(drop_rate=0.0)
    assert sorted(c.id for c in client.v1.customers.list({"limit": 100}).data) == sorted(created)
    stripe_emulator.set_faults(drop_rate=1.0)
    with pytest.raises(stripe.APIConnectionError):
        stripe_emulator.client(max_network_retries=0).v1.customers.list()


def test_rps_limit_answers_stripe_429(stripe_emulator) -> None:
    stripe_emulator.set_faults(rps_limit=2, rate_limit_should_retry=False)
    client = stripe_emulator.client(max_network_retries=0)
    outcomes = []
    for _ in range(6):
        try:
            client.v1.customers.list()
            outcomes.append("ok")
        except stripe.RateLimitError as error:
            assert error.json_body["error"]["type"] == "invalid_request_error"
            outcomes.append("429")
    assert outcomes[:2] == ["ok", "ok"] and "429" in outcomes  # the third of six quick requests is over the limit


def test_latency_is_slept_concurrently(stripe_emulator) -> None:
    stripe_emulator.set_faults(latency_ms=1000)
    url = f"{stripe_emulator.url}/v1/customers"
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(lambda _: requests.get(url, headers={"Authorization": "Bearer sk_test_x"}, timeout=30).status_code, range(30)))
    assert statuses == [200] * 30
    assert stripe_emulator.server.max_in_flight >= 20


def test_faults_are_deterministic_for_a_seed() -> None:
    def pattern() -> list[int]:
        with EmulatorServer(seed=7, faults=Faults(error_rate=0.3, rate_limit_error_rate=0.2)) as server:
            url = f"{server.url}/v1/customers"
            return [requests.get(url, headers={"Authorization": "Bearer sk_test_x"}, timeout=5).status_code for _ in range(20)]

    assert pattern() == pattern()


def test_admin_routes_over_http(stripe_emulator) -> None:
    base = stripe_emulator.url
    answer = requests.post(f"{base}/_emulator/faults", json={"latency_ms": 5, "drop_rate": 0.1}, timeout=5).json()
    assert answer["latency_ms"] == 5 and answer["drop_rate"] == 0.1
    assert stripe_emulator.server.faults.drop_rate == 0.1
    assert requests.post(f"{base}/_emulator/faults", json={"bogus": 1}, timeout=5).status_code == 400
    requests.post(f"{base}/_emulator/faults", json={"latency_ms": 0, "drop_rate": 0}, timeout=5)
    stripe_emulator.client().v1.customers.create({"name": "kept"})
    dump = requests.get(f"{base}/_emulator/dump", timeout=5).json()
    assert [c["name"] for c in dump["objects"]["customer"]] == ["kept"]
    assert requests.post(f"{base}/_emulator/reset", timeout=5).json() == {"reset": True}
    assert stripe_emulator.client().v1.customers.list().data == []


def test_loopback_only() -> None:
    with pytest.raises(ValueError):
        EmulatorServer(host="0.0.0.0")
