"""Webhook delivery: every event an enabled endpoint subscribes to, POSTed signed, retried with backoff.

What `stripe listen --forward-to` gives in development, and what Stripe does for a registered
endpoint (`/v1/webhook_endpoints`, resources/webhook_endpoints.py):
- the body is the event as `GET /v1/events/{id}` renders it at the moment it happened;
- `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body" keyed with the endpoint's
  whsec_ secret>` — `stripe.Webhook.construct_event` verifies it;
- any answer but 2xx (a 3xx too: redirects are not followed), a refused connection or no answer
  within `timeout_seconds` is a failure, retried after each of RETRY_DELAYS_SECONDS × `retry_scale`
  (Stripe: "in a sandbox, three times over a few hours"; the exact intervals are not published) and
  then given up. An endpoint deleted or disabled meanwhile gets no further attempts;
- the event's `pending_webhooks` counts the endpoints that have not yet taken it.

Delivery runs in one background thread in real time — test clocks do not touch it, as with Stripe:
an advance that renews a thousand subscriptions sends their events as fast as the receiver answers.
The emitting request only queues (under the store lock); nothing here blocks a request.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aisyst_pipelines.emulator.store import Store
from aisyst_pipelines.emulator.wire import dumps

# Delays before the 1st, 2nd and 3rd retry (test mode: three retries over a few hours).
RETRY_DELAYS_SECONDS: tuple[float, ...] = (30 * 60, 60 * 60, 2 * 60 * 60)
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """Stripe's `Stripe-Signature` value for `body` sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def endpoint_wants(endpoint: dict[str, Any], event_type: str) -> bool:
    return endpoint["status"] == "enabled" and ("*" in endpoint["enabled_events"] or event_type in endpoint["enabled_events"])


@dataclass
class Delivery:
    endpoint_id: str
    event_id: str
    body: bytes
    attempt: int = 1  # 1 = the first delivery, 2 = the first retry, …


@dataclass(frozen=True)
class Attempt:
    """One POST as the receiver saw it (or did not): what tests and `/_emulator/dump` read."""

    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    status: int | None  # the receiver's HTTP status; None: no answer (refused, timed out)
    at: float  # time.time() when the attempt was made
    delivered: bool
    next_retry_in: float | None  # seconds until the next attempt; None: delivered or given up


class WebhookDeliverer:
    """The queue of deliveries and the thread that works it (see the module docstring)."""

    def __init__(self, store: Store, *, retry_scale: float = 1.0, timeout_seconds: float = 10.0) -> None:
        self.store = store
        self.retry_scale = retry_scale
        self.timeout_seconds = timeout_seconds
        self._queue: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._sending = False
        self._thread: threading.Thread | None = None
        self.attempts: list[Attempt] = []
        store.event_listeners.append(self._event_emitted)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="webhook-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_seconds + 5)
            self._thread = None

    def clear(self) -> None:
        with self._condition:
            self._queue.clear()
            self.attempts.clear()

    def idle(self) -> bool:
        """Nothing queued (retries included) and nothing being sent."""
        with self._condition:
            return not self._queue and not self._sending

    # ------------------------------------------------------------------ queueing (under the store lock)

    def _event_emitted(self, event: dict[str, Any]) -> None:
        endpoints = [e for e in self.store.tables["webhook_endpoint"].values() if not e.get("deleted") and endpoint_wants(e, event["type"])]
        if not endpoints:
            return
        event["pending_webhooks"] = len(endpoints)
        body = dumps(self.store.render(event))
        with self._condition:
            for endpoint in endpoints:
                self._push(time.monotonic(), Delivery(endpoint["id"], event["id"], body))
            self._condition.notify_all()

    def _push(self, due: float, delivery: Delivery) -> None:
        heapq.heappush(self._queue, (due, next(self._order), delivery))

    # ------------------------------------------------------------------ the thread

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = None if not self._queue else max(0.0, self._queue[0][0] - time.monotonic())
                    self._condition.wait(wait)
                if self._stopping:
                    return
                _, _, delivery = heapq.heappop(self._queue)
                self._sending = True
            try:
                self._deliver(delivery)
            finally:
                with self._condition:
                    self._sending = False

    def _deliver(self, delivery: Delivery) -> None:
        with self.store.lock:
            endpoint = self.store.tables["webhook_endpoint"].get(delivery.endpoint_id)
            event = self.store.tables["event"].get(delivery.event_id)
            if endpoint is None or endpoint.get("deleted") or endpoint["status"] != "enabled" or event is None:
                return  # deleted or disabled meanwhile: no further attempts
            url, secret, event_type = endpoint["url"], endpoint["_secret"], event["type"]
        status = self._post(url, secret, delivery.body)
        delivered = status is not None and 200 <= status < 300
        retry_in = None
        if delivered:
            with self.store.lock:
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
        elif delivery.attempt <= len(RETRY_DELAYS_SECONDS):
            retry_in = RETRY_DELAYS_SECONDS[delivery.attempt - 1] * self.retry_scale
            with self._condition:
                self._push(time.monotonic() + retry_in, Delivery(delivery.endpoint_id, delivery.event_id, delivery.body, delivery.attempt + 1))
        self.attempts.append(
            Attempt(delivery.endpoint_id, delivery.event_id, event_type, delivery.attempt, status, time.time(), delivered, retry_in)
        )

    def _post(self, url: str, secret: str, body: bytes) -> int | None:
        """The receiver's HTTP status, or None when it could not be reached or did not answer in time."""
        parts = urlsplit(url)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname or "", parts.port, timeout=self.timeout_seconds)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": signature_header(secret, body, int(time.time())),
        }
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
