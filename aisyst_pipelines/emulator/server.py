"""The HTTP side: a threading HTTP/1.1 server with keep-alive, faults, auth and idempotency.

Each connection gets its own daemon thread (`ThreadingHTTPServer`), so injected latency is
slept without blocking anyone; the state is guarded by one lock held only while a request runs.
Routes under /v1 are Stripe's; routes under /_emulator are the emulator's own (faults, reset,
dump, revenue-recovery settings, and the pages behind portal and hosted-invoice URLs, the portal's
card update included) and see no faults and no auth.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aisyst_pipelines.emulator import pages, resources  # noqa: F401 - registers the routes
from aisyst_pipelines.emulator.dunning import RevenueRecovery
from aisyst_pipelines.emulator.faults import Decision, FaultInjector, Faults
from aisyst_pipelines.emulator.idempotency import IdempotencyCache
from aisyst_pipelines.emulator.params import check
from aisyst_pipelines.emulator.router import Call, match
from aisyst_pipelines.emulator.store import API_VERSION, RequestContext, Store
from aisyst_pipelines.emulator.webhooks import WebhookDeliverer
from aisyst_pipelines.emulator.wire import ApiError, decode_form, dumps

TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
# A request kept waiting this long by a test clock advance is answered Stripe's 429 `lock_timeout`.
# Stripe advances a clock in the background and answers meanwhile; the emulator does the advance in the
# request (~1 s per 1,000 renewals), and a client waiting it out would stall for a minute at a month
# start of 100,000 — longer than a Dagster sensor tick may take. A client retries a 429.
ADVANCE_LOCK_WAIT_SECONDS = 2.0
LOCK_TIMEOUT_MESSAGE = (
    "This object cannot be accessed right now because another API request or Stripe process is currently "
    "accessing it. If you see this error intermittently, retry the request."
)
_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _basic_auth_user(credentials: str) -> str:
    """The user name of HTTP Basic credentials (base64 of `user:password`); "" when unreadable.
    Stripe takes the API key as the user name and ignores the password."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (or the drop_rate fault) closing a connection is routine here, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self.sockets_lock:
            open_sockets = list(self.open_sockets)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "stripe-emulator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        emulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request_id = "req_" + uuid.uuid4().hex[:14]
        if split.path.startswith("/v1/"):
            status, payload, headers, drop = emulator._api(method, split.path, split.query, body, self.headers, request_id)
            if drop:
                self.close_connection = True
                return
        elif split.path.startswith("/_emulator/"):
            status, payload, headers = emulator._admin(method, split.path, split.query, body)
        else:
            error = ApiError(404, f"Unrecognized request URL ({method}: {split.path}).")
            status, payload, headers = 404, dumps(error.body(request_id)), {}
        self._send(status, payload, headers, request_id)

    def _send(self, status: int, payload: bytes, headers: dict[str, str], request_id: str) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(payload)}",
            f"Request-Id: {request_id}",
        ]
        headers.setdefault("Content-Type", "application/json")
        head.extend(f"{k}: {v}" for k, v in headers.items())
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)


class EmulatorServer:
    """A local, stateful Stripe on loopback. Use as a context manager or `start()`/`stop()`.

    >>> with EmulatorServer() as emulator:
    ...     client = stripe.StripeClient("sk_test_x", base_addresses={"api": emulator.url})
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
        tick_seconds: float = 1.0,
        state_file: Path | None = None,
        webhook_retry_scale: float = 1.0,
        revenue_recovery: RevenueRecovery | None = None,
        request_log_size: int = 20000,
    ) -> None:
        """`webhook_retry_scale` multiplies the delays between webhook delivery retries (30 min, 1 h,
        2 h): 0.001 makes them 1.8 s, 3.6 s and 7.2 s for a test. `revenue_recovery`: Smart Retries
        and what happens when they run out (default: Stripe's, 8 retries in 14 days, then cancel).
        `request_log_size`: how many of the latest requests `requests()` keeps (a benchmark that counts
        every request of a 100,000-invoice burst needs more than the default)."""
        if not _is_loopback(host):
            raise ValueError(f"the emulator listens on loopback only, not {host!r}")
        self.host, self._requested_port = host, port
        self.faults = faults or Faults()
        self.seed = seed
        self.tick_seconds = tick_seconds
        # Where the objects are kept between runs (`aisyst dev` after `aisyst demo`): read at start,
        # written at stop, owner-only.
        self.state_file = state_file
        self.store = Store(seed=seed, summary_lag_seconds=self.faults.summary_lag_seconds)
        if revenue_recovery is not None:
            self.store.revenue_recovery = revenue_recovery
        self.idempotency = IdempotencyCache()
        self.webhooks = WebhookDeliverer(self.store, retry_scale=webhook_retry_scale)
        self._injector = FaultInjector(self.faults, seed)
        self._log: deque[dict[str, Any]] = deque(maxlen=request_log_size)
        self._log_lock = threading.Lock()
        self.in_flight = 0  # /v1 requests being served right now
        self.max_in_flight = 0  # the most at once since start or reset (shows latency is slept concurrently)
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmulatorServer:
        if self.state_file is not None and self.state_file.exists():
            with self.store.lock:
                self.store.restore(json.loads(self.state_file.read_text()))
        self._httpd = _Server((self.host, self._requested_port), self)
        self.store.base_url = self.url
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        ticker = threading.Thread(target=self._tick_loop, daemon=True)
        self._threads = [serve, ticker]
        for thread in self._threads:
            thread.start()
        self.webhooks.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.webhooks.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all_connections()
            self._httpd.server_close()
            self._httpd = None
        for thread in self._threads:
            thread.join(timeout=5)
        if self.state_file is not None:
            self.save_state(self.state_file)

    def save_state(self, path: Path) -> None:
        """Write the store's objects to `path` (owner-only, replaced atomically)."""
        with self.store.lock:
            text = json.dumps(self.store.snapshot())
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(text)
        os.replace(partial, path)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (the `aisyst emulator` command)."""
        if self._httpd is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ test and admin API

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        new = (faults or self.faults).updated(**changes)
        self.faults = new
        self._injector.faults = new
        self.store.summary_lag_seconds = new.summary_lag_seconds
        return new

    def reset(self) -> None:
        with self.store.lock:
            self.store.reset()
        self.idempotency.clear()
        self.webhooks.clear()
        with self._log_lock:
            self._log.clear()
            self.max_in_flight = self.in_flight

    def requests(self, path: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """The /v1 requests received so far (oldest first), optionally filtered."""
        with self._log_lock:
            entries = list(self._log)
        return [e for e in entries if (path is None or e["path"] == path) and (method is None or e["method"] == method)]

    def dump(self) -> dict[str, Any]:
        with self.store.lock:
            objects = {
                kind: [self.store.render(o) for o in table.values()]
                for kind, table in self.store.tables.items()
                if table
            }
            meter_events = [dict(vars(r)) for r in self.store.meter_events]
        return {
            "objects": objects,
            "meter_events": meter_events,
            "faults": self.faults.as_dict(),
            "idempotency_keys": self.idempotency.snapshot(),
            "requests": self.requests(),
            "max_in_flight": self.max_in_flight,
            "webhook_attempts": [dict(vars(a)) for a in self.webhooks.attempts],
        }

    # ------------------------------------------------------------------ request handling

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            with self.store.lock:
                self.store.tick()

    def _record(self, method: str, path: str, status: int, outcome: str, key: str | None) -> None:
        with self._log_lock:
            self._log.append(
                {"at": time.time(), "method": method, "path": path, "status": status, "outcome": outcome, "idempotency_key": key}
            )

    def _api(
        self, method: str, path: str, query: str, body: bytes, headers: Any, request_id: str
    ) -> tuple[int, bytes, dict[str, str], bool]:
        with self._log_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._api_counted(method, path, query, body, headers, request_id)
        finally:
            with self._log_lock:
                self.in_flight -= 1

    def _api_counted(
        self, method: str, path: str, query: str, body: bytes, headers: Any, request_id: str
    ) -> tuple[int, bytes, dict[str, str], bool]:
        out_headers = {"Stripe-Version": headers.get("Stripe-Version") or API_VERSION}
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000.0)
        decision = self._injector.decide()
        key = headers.get("Idempotency-Key") if method == "POST" else None
        if key:
            out_headers["Idempotency-Key"] = key
        if decision.status is not None:
            status, payload = self._fault_answer(decision, request_id, out_headers)
            self._record(method, path, status, decision.reason, key)
            return status, payload, out_headers, False
        try:
            api_key = self._authenticate(headers.get("Authorization", ""))
            status, payload, outcome = self._run(method, path, query, body, api_key, key, request_id, out_headers)
        except ApiError as error:
            status, payload, outcome = error.status, dumps(error.body(request_id)), "error"
            out_headers.update(error.headers)
        self._record(method, path, status, "drop" if decision.drop else outcome, key)
        return status, payload, out_headers, decision.drop

    def _fault_answer(self, decision: Decision, request_id: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if decision.status == 429:
            if self.faults.rate_limit_should_retry:
                headers["Stripe-Should-Retry"] = "true"
            error = ApiError(
                429,
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
        else:
            error = ApiError(500, "An unknown error occurred", type="api_error")
        return error.status, dumps(error.body(request_id))

    def _authenticate(self, authorization: str) -> str:
        """The API key of a request: `Bearer <key>` (the SDKs) or HTTP Basic auth with the key as the
        user name and no password (`curl -u "sk_test_…:"`, as Stripe's guides write it)."""
        scheme, _, api_key = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            api_key = _basic_auth_user(api_key.strip())
        if scheme.lower() not in ("bearer", "basic") or not api_key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                cacheable=False,
            )
        if not api_key.startswith(TEST_KEY_PREFIXES):
            raise ApiError(401, "Invalid API Key provided: the emulator accepts test-mode keys only.", cacheable=False)
        return api_key

    def _run(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        api_key: str,
        key: str | None,
        request_id: str,
        out_headers: dict[str, str],
    ) -> tuple[int, bytes, str]:
        params = decode_form(query)
        if method == "POST" and body:
            params.update(decode_form(body.decode("utf-8")))
        found, args, _ = match(method, path)
        if found is None:
            raise ApiError(404, f"Unrecognized request URL ({method}: {path}).", cacheable=False)
        if key:
            fingerprint = (method, path, json.dumps(params, sort_keys=True))
            replay = self.idempotency.begin(api_key, key, fingerprint)
            if replay is not None:
                out_headers["Idempotent-Replayed"] = "true"
                return replay.status, replay.body, "replay"
        try:
            self._acquire_store()
            try:
                self.store.tick()
                self.store.request = RequestContext(request_id, key)
                try:
                    checked = check(params, found.params_class)
                    result = found.handler(Call(self.store, method, path, checked, args))
                finally:
                    self.store.request = RequestContext()
            finally:
                self.store.lock.release()
            status, payload = 200, dumps(result)
        except ApiError as error:
            status, payload = error.status, dumps(error.body(request_id))
            if key and not error.cacheable:
                self.idempotency.release(api_key, key)
                key = None
            out_headers.update(error.headers)
        except Exception as error:  # noqa: BLE001 - a bug here is Stripe's 500, stored like Stripe stores 500s
            failure = ApiError(500, f"An unknown error occurred ({type(error).__name__}: {error})", type="api_error")
            status, payload = 500, dumps(failure.body(request_id))
        if key:
            self.idempotency.finish(api_key, key, status, payload)
        return status, payload, "ok" if status == 200 else "error"

    def _acquire_store(self) -> None:
        """Take the store's lock for a request, or raise Stripe's 429 `lock_timeout` once the request has
        waited ADVANCE_LOCK_WAIT_SECONDS behind a clock advance (other work is waited for)."""
        lock = self.store.lock
        deadline = time.monotonic() + ADVANCE_LOCK_WAIT_SECONDS
        while not lock.acquire(timeout=0.05):
            if self.store.advancing_clock is not None and time.monotonic() > deadline:
                raise ApiError(429, LOCK_TIMEOUT_MESSAGE, code="lock_timeout", cacheable=False)

    def _admin(self, method: str, path: str, query: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            if path == "/_emulator/faults":
                if method == "POST":
                    changes = json.loads(body or b"{}")
                    self.set_faults(**changes)
                return 200, dumps(self.faults.as_dict()), {}
            if path == "/_emulator/revenue_recovery":
                with self.store.lock:
                    if method == "POST":
                        self.store.revenue_recovery = self.store.revenue_recovery.updated(**json.loads(body or b"{}"))
                    return 200, dumps(self.store.revenue_recovery.as_dict()), {}
            if path == "/_emulator/reset" and method == "POST":
                self.reset()
                return 200, dumps({"reset": True}), {}
            if path == "/_emulator/dump" and method == "GET":
                return 200, dumps(self.dump()), {}
            with self.store.lock:
                self.store.tick()
                page = pages.portal_action(self.store, path, body) if method == "POST" else pages.render_page(self.store, path)
            if page is not None:
                content_type, content = page
                return 200, content, {"Content-Type": content_type}
            return 404, dumps({"error": {"type": "invalid_request_error", "message": f"no such page {path}"}}), {}
        except (ValueError, TypeError) as error:
            return 400, dumps({"error": {"type": "invalid_request_error", "message": str(error)}}), {}
