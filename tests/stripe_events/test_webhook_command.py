"""`aisyst webhook` as a real server process (uvicorn), on SQLite and PostgreSQL; bodies too large for
it are refused without being read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import stripe
from sqlalchemy import select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import stripe_invoices
from aisyst_pipelines.webhook import MAX_BODY_BYTES, WEBHOOK_PATH

from .payloads import event, invoice

pytestmark = pytest.mark.slow  # each test starts `aisyst webhook` as a process

SECRET = "whsec_cli_0a1b2c3d4e5f"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def webhook_server(
    warehouse_url: str, home: Path, *, secret: str = SECRET, port: int | None = None, stripe_api_base: str = "http://127.0.0.1:9"
) -> Iterator[tuple[str, subprocess.Popen, list[str]]]:
    """`aisyst webhook` on `port` (else a free one), up and answering: (base URL, process, its output
    once stopped). Stripe: the emulator at `stripe_api_base` (by default nowhere: no Stripe call is
    made for an invoice event)."""
    port = port or free_port()
    env = os.environ | {
        "AISYST_HOME": str(home),
        "AISYST_WAREHOUSE_URL": warehouse_url,
        "STRIPE_WEBHOOK_SECRET": secret,
        "STRIPE_API_BASE": stripe_api_base,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "aisyst_pipelines.cli", "webhook", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the webhook server exited"
            assert time.monotonic() < deadline, "the webhook server did not come up"
            time.sleep(0.2)
        yield base, server, output
    finally:
        server.terminate()
        output.append(server.communicate(timeout=30)[0])


def test_aisyst_webhook_serves_and_never_prints_the_secret(warehouse: Warehouse, tmp_path: Path) -> None:
    with webhook_server(warehouse.url, tmp_path / "home") as (base, _, output):
        body = json.dumps(event("invoice.finalized", invoice(status="open"), event_id="evt_cli_1"))
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=int(time.time()))
        accepted = httpx.post(f"{base}{WEBHOOK_PATH}", content=body, headers={"Stripe-Signature": header})
        refused = httpx.post(f"{base}{WEBHOOK_PATH}", content=body.replace("open", "paid"), headers={"Stripe-Signature": header})
    assert accepted.status_code == 200 and accepted.json()["outcome"] == "applied"
    assert refused.status_code == 400
    assert SECRET not in output[0] and "whsec_" not in output[0]
    with warehouse.connect() as connection:
        assert connection.execute(select(stripe_invoices.c.invoice_id, stripe_invoices.c.status)).all() == [("in_1", "open")]


# The size limit acts before the warehouse is touched: one server on SQLite serves these tests.
@pytest.fixture(scope="module")
def sized_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    home = tmp_path_factory.mktemp("webhook-size")
    url = f"sqlite:///{home / 'warehouse.db'}"
    Warehouse(url).upgrade()  # a configured warehouse: `aisyst db upgrade` comes first
    with webhook_server(url, home) as (base, server, _):
        yield base, server.pid


def test_a_declared_oversized_body_is_answered_413_before_it_is_sent(sized_server: tuple[str, int]) -> None:
    """50 MB declared, a few bytes sent: the answer comes at once, and the connection is closed rather
    than the other 50 MB read."""
    base, _ = sized_server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n".encode() + b'{"id": "evt_'
        )
        answer = b""
        while chunk := connection.recv(65536):  # socket.timeout here: the server waited for the body
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    assert "too large" in json.loads(body)["error"]


def peak_memory_bytes(pid: int) -> int:
    """The process's peak resident memory since the last `reset_peak_memory`."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def reset_peak_memory(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)


def test_a_chunked_body_is_cut_at_the_limit_with_memory_bounded(sized_server: tuple[str, int]) -> None:
    """20 MB sent chunked (no Content-Length): 413 as soon as the limit is passed; the server's memory
    grows by about the limit, not by the body (reading it all took ~40 MB)."""
    base, pid = sized_server
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        while sent < 20 * 1024 * 1024:
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    reset_peak_memory(pid)
    before = peak_memory_bytes(pid)
    response = httpx.post(f"{base}{WEBHOOK_PATH}", content=chunks(), timeout=30)
    grown = peak_memory_bytes(pid) - before
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert grown < MAX_BODY_BYTES + 8 * 1024 * 1024, f"the server grew by {grown:,} bytes"
    assert sent < 20 * 1024 * 1024  # the client was stopped: the server closed the connection
