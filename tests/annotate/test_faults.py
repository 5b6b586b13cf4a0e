"""The month-start burst scaled down to 200 invoices: with Stripe failing (10 % 5xx, 5 % 429, 2 % dropped
connections) and with the run killed midway (SIGKILL) and run again, every renewal invoice ends up with
its lines exactly once — counted on Stripe's side. Both warehouse backends."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from aisyst_pipelines.services.invoice_annotation_planning import SensorPolicy
from aisyst_pipelines.warehouse.invoice_annotation_store import FINAL_STATUSES, annotation_records, status_counts

from .conftest import AnnotationWorld

pytestmark = pytest.mark.slow  # 200 invoices against a failing Stripe, one run killed as a process

INVOICES = 200
# In a test the sensor may ask again at once: runs here are synchronous, none is ever in flight.
IMPATIENT = SensorPolicy(stale_after=timedelta(0), failed_after=timedelta(0))


def populate(world: AnnotationWorld) -> None:
    for n in range(INVOICES):
        subscriber = world.sign_up(f"ACCT-{n:03d}", 1 + n % 3, locale="de" if n % 7 == 0 else None)
        if n % 4:
            world.calls(subscriber, [n % 300 + 1, n % 500])
    world.sync()
    world.renew()


def assert_each_invoice_annotated_once(world: AnnotationWorld) -> None:
    world.emulator.set_faults(latency_ms=0, rps_limit=None, error_rate=0, rate_limit_error_rate=0, drop_rate=0)
    invoices = [world.renewal_invoice(s) for s in world.subscribers]
    records = annotation_records(world.warehouse, [i.id for i in invoices])
    assert {r.status.value for r in records.values()} == {"annotated"}
    for invoice, subscriber in zip(invoices, world.subscribers):
        ours = world.our_lines(invoice.id)
        expected = 1 if subscriber.tier == 3 else 2
        assert len(ours) == expected == records[invoice.id].lines_added, (invoice.id, ours)
        assert ours[0][0] == "minutes_used"
        assert invoice.metadata["aisyst_annotation_version"]


def test_every_invoice_annotated_exactly_once_while_stripe_fails(world: AnnotationWorld) -> None:
    populate(world)
    world.emulator.set_faults(error_rate=0.10, rate_limit_error_rate=0.05, drop_rate=0.02)
    cursor = None
    failed_ticks = 0
    for _ in range(30):
        try:
            plan = world.plan(cursor, IMPATIENT)
        except Exception:  # noqa: BLE001 - a tick that fails keeps its cursor, as in the daemon
            failed_ticks += 1
            continue
        cursor = plan.cursor
        if plan.queued or plan.retried:
            world.annotate(plan.queued + plan.retried)
        counts = status_counts(world.warehouse)
        if sum(counts.get(s.value, 0) for s in FINAL_STATUSES) == INVOICES:
            break
    outcomes = {entry["outcome"] for entry in world.emulator.requests()}
    assert {"random_error", "random_rate_limit", "drop"} <= outcomes  # the faults did happen
    assert_each_invoice_annotated_once(world)


def test_killed_midway_and_run_again_gives_the_same_result(world: AnnotationWorld, tmp_path: Path) -> None:
    populate(world)
    # A first run of every renewal (by default the first run of a burst has one page and takes the rest
    # from the queue; here the run to kill and run again must hold all of them).
    (request,) = world.tick(policy=SensorPolicy(first_writing_seconds=3600)).run_requests
    ids = request.run_config["ops"]["invoice_annotations"]["config"]["invoice_ids"]
    assert len(ids) == INVOICES
    world.emulator.set_faults(latency_ms=30, drop_rate=0.02)
    env = {
        **os.environ,
        "AISYST_HOME": str(tmp_path / "home"),
        "AISYST_WAREHOUSE_URL": world.warehouse_url,
        "STRIPE_API_BASE": world.emulator.url,
        "AISYST_STRIPE_REQUESTS_PER_SECOND": "40",
    }
    env.pop("STRIPE_SECRET_KEY", None)
    command = [str(Path(sys.executable).parent / "aisyst"), "annotate", *[a for i in ids for a in ("--invoice", i)]]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if status_counts(world.warehouse, ids).get("annotated", 0) >= INVOICES // 4:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    assert process.wait(30) == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    at_kill = status_counts(world.warehouse, ids)
    assert 0 < at_kill.get("annotated", 0) < INVOICES  # it died midway
    assert at_kill.get("pending", 0) > 0  # with writes in flight

    world.run(request.run_config)  # the same run, again
    assert_each_invoice_annotated_once(world)
