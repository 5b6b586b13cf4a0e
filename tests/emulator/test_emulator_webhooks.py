"""Webhook endpoints through the SDK, and the signed deliveries a receiver gets (with Stripe's retries)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from aisyst_pipelines.emulator import EmulatorServer
from aisyst_pipelines.emulator.testing import RunningEmulator
from aisyst_pipelines.emulator.webhooks import RETRY_DELAYS_SECONDS


class Receiver:
    """A plain HTTP receiver on loopback: records each POST and answers what `answer` says."""

    def __init__(self, answer: Callable[[int], int] = lambda n: 200) -> None:
        self.answer = answer
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((time.monotonic(), dict(self.headers), body))
                self.send_response(receiver.answer(len(receiver.received)))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/stripe"

    def events(self, secret: str) -> list[stripe.Event]:
        """Every body received, verified as the project's receiver verifies it."""
        return [stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], secret) for _, headers, body in self.received]


@contextmanager
def receiving(answer: Callable[[int], int] = lambda n: 200) -> Iterator[Receiver]:
    receiver = Receiver(answer)
    thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def wait_until(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhook_endpoint_crud(stripe_emulator) -> None:
    client = stripe_emulator.client()
    created = client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:8787/stripe/webhook", "enabled_events": ["invoice.paid", "customer.subscription.updated"],
         "description": "warehouse", "metadata": {"team": "billing"}}
    )
    assert created.id.startswith("we_") and created.secret.startswith("whsec_") and created.status == "enabled"
    assert created.enabled_events == ["invoice.paid", "customer.subscription.updated"]
    fetched = client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in fetched and fetched.url == created.url  # the secret is answered on create only
    updated = client.v1.webhook_endpoints.update(created.id, {"enabled_events": ["*"], "disabled": True})
    assert (updated.enabled_events, updated.status) == (["*"], "disabled")
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [created.id]
    assert client.v1.webhook_endpoints.delete(created.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.webhook_endpoints.retrieve(created.id)
    assert gone.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.webhook_endpoints.create({"url": "http://127.0.0.1:1/x", "enabled_events": ["invoice.nonsense"]})
    assert unknown.value.param == "enabled_events[0]"
    with pytest.raises(stripe.InvalidRequestError) as outside:
        client.v1.webhook_endpoints.create({"url": "https://example.com/hook", "enabled_events": ["*"]})
    assert outside.value.code == "url_invalid"


def test_matching_events_are_delivered_signed(stripe_emulator) -> None:
    client = stripe_emulator.client()
    with receiving() as receiver:
        endpoint = client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["customer.created", "customer.updated"]})
        customer = client.v1.customers.create({"name": "Acme"})
        client.v1.products.create({"name": "not subscribed to"})
        client.v1.customers.update(customer.id, {"name": "Acme Ltd"})
        wait_until(lambda: len(receiver.received) == 2 and stripe_emulator.server.webhooks.idle())
        events = receiver.events(endpoint.secret)
    assert [e.type for e in events] == ["customer.created", "customer.updated"]
    assert events[0].data.object.id == customer.id and events[1].data.object.name == "Acme Ltd"
    listed = {e.id: e for e in client.v1.events.list({"type": "customer.*"}).data}
    assert {e.id for e in events} == set(listed)
    assert all(listed[e.id].pending_webhooks == 0 for e in events)  # taken: nothing pending
    _, headers, _ = receiver.received[0]
    assert headers["Content-Type"].startswith("application/json") and headers["User-Agent"].startswith("Stripe/")
    with pytest.raises(stripe.SignatureVerificationError):  # another endpoint's secret does not verify
        receiver.events("whsec_someone_else")


@pytest.fixture
def quick_retries() -> Iterator[RunningEmulator]:
    """An emulator whose webhook retries come after 0.36 s, 0.72 s and 1.44 s (scale 0.0002)."""
    with EmulatorServer(seed=7, webhook_retry_scale=0.0002) as server:
        yield RunningEmulator(server)


def test_failed_deliveries_are_retried_with_backoff_then_given_up(quick_retries) -> None:
    client = quick_retries.client()
    # The first receiver fails twice (500, then a redirect), then takes the event.
    with receiving(lambda n: 500 if n == 1 else 302 if n == 2 else 200) as flaky:
        endpoint = client.v1.webhook_endpoints.create({"url": flaky.url, "enabled_events": ["customer.created"]})
        client.v1.customers.create({"name": "Retry me"})
        wait_until(lambda: len(flaky.received) == 3 and quick_retries.server.webhooks.idle())
        pending = client.v1.events.list({"type": "customer.created"}).data[0].pending_webhooks
        ids = {e.id for e in flaky.events(endpoint.secret)}
    assert len(ids) == 1 and pending == 0  # the same event three times
    times = [at for at, _, _ in flaky.received]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    expected = [delay * 0.0002 for delay in RETRY_DELAYS_SECONDS[:2]]
    assert all(want <= gap < want + 1.0 for gap, want in zip(gaps, expected, strict=True)), gaps

    # A receiver that is not there at all: the first delivery and three retries, then Stripe gives up.
    client.v1.webhook_endpoints.update(endpoint.id, {"url": "http://127.0.0.1:9/nobody"})
    client.v1.customers.create({"name": "Nobody listens"})
    wait_until(lambda: quick_retries.server.webhooks.idle() and len(quick_retries.server.webhooks.attempts) == 3 + 4)
    attempts = quick_retries.server.webhooks.attempts[3:]
    assert [(a.attempt, a.status, a.delivered) for a in attempts] == [(n, None, False) for n in (1, 2, 3, 4)]
    assert attempts[-1].next_retry_in is None
    assert client.v1.events.list({"type": "customer.created", "limit": 1}).data[0].pending_webhooks == 1


def test_a_deleted_endpoint_gets_no_more_retries(quick_retries) -> None:
    client = quick_retries.client()
    quick_retries.server.webhooks.retry_scale = 0.002  # first retry after 3.6 s: time to delete the endpoint
    with receiving(lambda n: 503) as down:
        endpoint = client.v1.webhook_endpoints.create({"url": down.url, "enabled_events": ["*"]})
        client.v1.products.create({"name": "p"})
        wait_until(lambda: len(down.received) == 1)
        client.v1.webhook_endpoints.delete(endpoint.id)
        wait_until(lambda: quick_retries.server.webhooks.idle(), seconds=20)
        assert len(down.received) == 1
    assert json.loads(down.received[0][2])["type"] == "product.created"
