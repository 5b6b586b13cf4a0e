"""Throughput of the Stripe emulator under a mixed read/write workload driven by the real SDK.

    .venv/bin/python bench/emulator.py [--seconds 15] [--processes 2] [--threads 8] [--in-process]

The emulator runs as `aisyst emulator` in its own process (as in the demo and `dagster dev`);
client processes, each with a thread pool of `stripe.StripeClient` callers, send a fixed mix of
reads and writes for a bounded time. It prints requests/s, the ratio to the 500 req/s goal of
issue 3, latency percentiles and the machine. Loopback only; no faults injected.
"""

from __future__ import annotations

import argparse
import os
import multiprocessing
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import stripe

GOAL_RPS = 500
API_KEY = "sk_test_bench"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    load = Path("/proc/loadavg").read_text().split()[0]
    return f"{multiprocessing.cpu_count()} CPU ({model}), Python {platform.python_version()}, load average {load} at start"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report the server's own cost per request."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_for(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url}, max_network_retries=0)


def setup(url: str) -> dict[str, object]:
    client = client_for(url)
    product = client.v1.products.create({"name": "Tier 1"})
    price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 29900, "recurring": {"interval": "month"}})
    meter = client.v1.billing.meters.create(
        {"display_name": "Minutes", "event_name": "bench_minutes", "default_aggregation": {"formula": "sum"}}
    )
    customers = [
        client.v1.customers.create(
            {"name": f"c{i}", "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
        ).id
        for i in range(20)
    ]
    for customer in customers[:5]:
        client.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    drafts = [client.v1.invoices.create({"customer": c}).id for c in customers]  # drafts[i] belongs to customers[i]
    return {"customers": customers, "meter": meter.id, "drafts": drafts}


def one_call(client: stripe.StripeClient, rng: random.Random, ctx: dict[str, object]) -> None:
    """One request of the mix (about 60 % reads, 40 % writes)."""
    customers, drafts = ctx["customers"], ctx["drafts"]
    customer = rng.choice(customers)  # type: ignore[arg-type]
    now = int(time.time())
    draw = rng.random()
    if draw < 0.25:
        client.v1.customers.retrieve(customer)
    elif draw < 0.35:
        client.v1.customers.list({"limit": 10})
    elif draw < 0.45:
        client.v1.invoices.list({"status": "draft", "limit": 3})
    elif draw < 0.55:
        client.v1.billing.meters.event_summaries.list(
            ctx["meter"], {"customer": customer, "start_time": now // 86400 * 86400 - 86400, "end_time": now // 60 * 60 + 60}  # type: ignore[arg-type]
        )
    elif draw < 0.60:
        client.v1.events.list({"limit": 5, "type": "invoice.*"})
    elif draw < 0.80:
        client.v1.billing.meter_events.create(
            {"event_name": "bench_minutes", "payload": {"stripe_customer_id": customer, "value": str(rng.randint(1, 9))}, "timestamp": now}
        )
    elif draw < 0.90:
        client.v1.customers.update(customer, {"metadata": {"touched": str(now)}})
    else:
        index = rng.randrange(len(drafts))  # type: ignore[arg-type]
        client.v1.invoice_items.create({"customer": customers[index], "invoice": drafts[index], "amount": 1})  # type: ignore[index]


def run_clients(url: str, ctx: dict[str, object], seconds: float, threads: int, seed: int, queue: multiprocessing.Queue) -> None:
    deadline = time.monotonic() + seconds
    clients = [client_for(url) for _ in range(threads)]

    def worker(index: int) -> tuple[int, int, list[float]]:
        rng = random.Random(seed * 1000 + index)
        done = errors = 0
        latencies: list[float] = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                one_call(clients[index], rng, ctx)
                done += 1
            except stripe.StripeError:
                errors += 1
            latencies.append(time.perf_counter() - started)
        return done, errors, latencies

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, range(threads)))
    queue.put((sum(r[0] for r in results), sum(r[1] for r in results), [x for r in results for x in r[2]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="SDK callers per client process")
    parser.add_argument("--in-process", action="store_true", help="run the emulator inside the bench process")
    args = parser.parse_args()

    server = None
    emulator_process = None
    if args.in_process:
        sys.path.insert(0, str(REPO))
        from aisyst_pipelines.emulator import EmulatorServer

        server = EmulatorServer(seed=1).start()
        url = server.url
    else:
        port = free_port()
        emulator_process = subprocess.Popen(
            [sys.executable, "-m", "aisyst_pipelines.cli", "emulator", "--port", str(port), "--seed", "1"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(f"{url}/_emulator/faults", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
    try:
        ctx = setup(url)
        queue: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(target=run_clients, args=(url, ctx, args.seconds, args.threads, seed, queue))
            for seed in range(args.processes)
        ]
        server_pid = emulator_process.pid if emulator_process is not None else os.getpid()
        cpu_before = cpu_seconds(server_pid)
        started = time.monotonic()
        for worker in workers:
            worker.start()
        results = [queue.get() for _ in workers]
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(server_pid) - cpu_before
        for worker in workers:
            worker.join()
    finally:
        if server is not None:
            server.stop()
        if emulator_process is not None:
            emulator_process.terminate()
            emulator_process.wait(timeout=10)

    done = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    rps = done / elapsed
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(f"machine: {machine()}")
    print(
        f"emulator {'in-process' if args.in_process else 'separate process'}; {args.processes} client processes × "
        f"{args.threads} threads; mix: 60 % reads (retrieve/list/summaries/events), 40 % writes (meter events, updates, invoice items)"
    )
    print(f"requests: {done} ok, {errors} errors in {elapsed:.1f} s → {rps:.0f} req/s; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    print(f"ratio to the {GOAL_RPS} req/s goal: {rps / GOAL_RPS:.2f}")
    if emulator_process is not None:
        per_request = server_cpu / max(done + errors, 1)
        print(
            f"emulator CPU: {server_cpu:.1f} s for {done + errors} requests = {per_request * 1000:.2f} ms/request "
            f"→ its own ceiling on one core ≈ {1 / per_request:.0f} req/s (ratio {1 / per_request / GOAL_RPS:.2f}); "
            "the rest of the machine went to the SDK clients"
        )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
