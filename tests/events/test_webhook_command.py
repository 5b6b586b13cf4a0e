"""`aisyst webhook` as a real server process (uvicorn), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import stripe
from sqlalchemy import select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import stripe_invoices
from aisyst_pipelines.webhook import WEBHOOK_PATH

from .payloads import event, invoice

SECRET = "whsec_cli_0a1b2c3d4e5f"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_aisyst_webhook_serves_and_never_prints_the_secret(warehouse_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {
        "AISYST_HOME": str(tmp_path / "home"),
        "AISYST_WAREHOUSE_URL": warehouse_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # no Stripe call is made for an invoice event
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "aisyst_pipelines.cli", "webhook", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
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
        body = json.dumps(event("invoice.finalized", invoice(status="open"), event_id="evt_cli_1"))
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=int(time.time()))
        accepted = httpx.post(f"{base}{WEBHOOK_PATH}", content=body, headers={"Stripe-Signature": header})
        refused = httpx.post(f"{base}{WEBHOOK_PATH}", content=body.replace("open", "paid"), headers={"Stripe-Signature": header})
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert accepted.status_code == 200 and accepted.json()["outcome"] == "applied"
    assert refused.status_code == 400
    assert SECRET not in output and "whsec_" not in output
    warehouse = Warehouse(warehouse_url)
    with warehouse.connect() as connection:
        assert connection.execute(select(stripe_invoices.c.invoice_id, stripe_invoices.c.status)).all() == [("in_1", "open")]
    warehouse.dispose()
