"""`aisyst emulator` serves the same emulator as a process, with faults from the command line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import stripe

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_emulator_command_serves_takes_faults_and_keeps_its_objects_when_stopped(tmp_path: Path, stop: signal.Signals) -> None:
    """Stopped by Ctrl-C or by `kill` (a service manager's stop), it writes its state file on the way out."""
    port = free_port()
    state = tmp_path / "emulator-state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "aisyst_pipelines.cli", "emulator", "--port", str(port), "--latency-ms", "1", "--seed", "3",
         "--state", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, whatever this run ignores
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                faults = requests.get(f"{url}/_emulator/faults", timeout=1).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "emulator did not start"
                time.sleep(0.1)
        assert faults["latency_ms"] == 1.0
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": url})
        customer = client.v1.customers.create({"name": "cli"})
        assert customer.id.startswith("cus_")
    finally:
        process.send_signal(stop)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert customer.id in state.read_text()
    assert f"STRIPE_API_BASE={url}" in output
