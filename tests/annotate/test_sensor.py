"""draft_invoice_sensor through build_sensor_context, on the emulator and both warehouse backends."""

import json
import threading
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION
from aisyst_pipelines.services.invoice_annotation_planning import ScanCursor, SensorPolicy, run_key, scan_invoices
from aisyst_pipelines.warehouse.invoice_annotation_store import AnnotationStatus, annotation_records, status_counts
from aisyst_pipelines.warehouse.schema import invoice_annotations
from jobs.invoice_annotation import WORKS_QUEUE_TAG, annotate_draft_invoices, annotation_run_config, readable_cursor

from aisyst_pipelines.services.invoice_annotation import QueueWork

from stripe_world import RateLimitedAfterPages

from .conftest import RENEWAL, AnnotationWorld


def ids_of(result: dg.SensorResult) -> list[list[str]]:
    return [request.run_config["ops"]["invoice_annotations"]["config"]["invoice_ids"] for request in result.run_requests]


def test_batches_cursor_and_only_new_renewals(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1 + n % 3) for n in range(7)]
    world.sync()
    # Before the renewal only subscription_create invoices exist: nothing to annotate, but the
    # first tick remembers where it stands.
    first = world.tick(policy=SensorPolicy(batch_size=3))
    assert first.run_requests == [] and first.skip_reason is not None
    world.renew()
    # A one-off invoice the same day is not a renewal either.
    client = world.client
    client.v1.invoice_items.create({"customer": subscribers[0].customer_id, "amount": 500, "currency": "usd"})
    client.v1.invoices.create({"customer": subscribers[0].customer_id, "pending_invoice_items_behavior": "include"})

    result = world.tick(first.cursor, policy=SensorPolicy(batch_size=3))
    # One run, for a first batch: after its own invoices it takes the other queued ones.
    (batch,) = ids_of(result)
    (request,) = result.run_requests
    renewal_ids = {world.renewal_invoice(s).id for s in subscribers}
    assert len(batch) == 3 and set(batch) <= renewal_ids
    assert request.run_key == run_key(batch)
    assert request.run_config["ops"]["invoice_annotations"]["config"]["take_queued_invoices"] is True
    assert request.tags["aisyst/works_queue"] == "true"
    assert dg.validate_run_config(annotate_draft_invoices.resolve(asset_graph=world.definitions().resolve_asset_graph()), request.run_config)
    cursor = json.loads(result.cursor)
    assert cursor["hwm"] == int(RENEWAL.timestamp()) + 60 and not cursor["scanning"]
    assert status_counts(world.warehouse) == {"queued": 7}

    # The next tick (the overlap was just re-listed) lists only newer invoices: none, nothing requested.
    again = world.tick(result.cursor, policy=SensorPolicy(batch_size=3))
    assert again.run_requests == [] and again.cursor == result.cursor

    # The run annotates all seven; annotated invoices stay skipped after it, too.
    world.run(request.run_config)
    assert world.tick(result.cursor).run_requests == []
    assert status_counts(world.warehouse) == {"annotated": 7}


def test_a_scan_larger_than_a_tick_continues_from_the_cursor(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(9)]
    world.sync()
    world.renew()
    policy = SensorPolicy(page_size=2, max_pages_per_tick=2, batch_size=100)
    cursor = None
    seen: list[str] = []
    ticks = 0
    while True:
        result = world.tick(cursor, policy=policy)
        ticks += 1
        seen += [i for batch in ids_of(result) for i in batch]
        cursor = result.cursor
        if not json.loads(cursor)["scanning"]:
            break
    # The first scan ever lists today's drafts: 9 renewals, 2 per page, 2 pages per tick.
    assert ticks == 3
    assert sorted(seen) == sorted(world.renewal_invoice(s).id for s in subscribers)
    assert len(seen) == len(set(seen))


def test_a_tick_stops_listing_once_it_has_enough_new_renewals_for_its_runs(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(7)]
    world.sync()
    world.renew()
    # 3 new renewals are enough for one tick: it requests them after 2 pages of 2 (not 4 pages) …
    policy = SensorPolicy(page_size=2, renewals_per_tick=3, batch_size=100)
    first = world.tick(policy=policy)
    assert [len(batch) for batch in ids_of(first)] == [4]
    assert json.loads(first.cursor)["scanning"]
    second = world.tick(first.cursor, policy=policy)
    assert [len(batch) for batch in ids_of(second)] == [3]
    assert not json.loads(second.cursor)["scanning"]
    assert sorted(i for r in (first, second) for b in ids_of(r) for i in b) == sorted(
        world.renewal_invoice(s).id for s in subscribers
    )
    # … and renewals already on record don't count towards it: re-listing the overlap finds nothing
    # new and lists to the end of the window.
    again = world.tick(second.cursor, policy=policy)
    assert again.run_requests == [] and not json.loads(again.cursor)["scanning"]


def test_the_first_tick_of_a_burst_requests_a_short_run_and_the_next_tick_lists_more(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(9)]
    world.sync()
    world.renew()
    rps = world.stripe.effective_requests_per_second
    # The runs write 3 renewals in `first_writing_seconds`, 100 in `writing_seconds_per_tick`.
    policy = SensorPolicy(page_size=2, batch_size=100, first_writing_seconds=3 / rps, writing_seconds_per_tick=100 / rps)
    first = world.tick(policy=policy)
    assert [len(batch) for batch in ids_of(first)] == [4]  # 2 pages of 2: the first writes start soon
    assert json.loads(first.cursor)["scanning"]
    second = world.tick(first.cursor, policy=policy)  # continues the scan: lists to its end
    assert [len(batch) for batch in ids_of(second)] == [5]
    assert not json.loads(second.cursor)["scanning"]
    assert sorted(i for r in (first, second) for b in ids_of(r) for i in b) == sorted(
        world.renewal_invoice(s).id for s in subscribers
    )


def test_one_run_takes_the_renewals_the_next_ticks_queue_while_it_writes(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1 + n % 3) for n in range(7)]
    world.sync()
    world.renew()
    policy = SensorPolicy(page_size=2, renewals_per_tick=2)
    first = world.plan(policy=policy)
    assert len(first.queued) == 2 and first.cursor.scanning
    runs: list = []
    run = threading.Thread(target=lambda: runs.append(world.annotate(first.queued, queue=QueueWork(idle_seconds=3))))
    run.start()
    cursor = first.cursor
    while cursor.scanning:  # the next ticks, while the run writes
        time.sleep(0.3)
        cursor = world.plan(cursor, policy).cursor
    run.join(120)
    (done,) = runs
    renewals = {world.renewal_invoice(s).id: s for s in subscribers}
    assert sorted(r.invoice_id for r in done.results) == sorted(renewals)
    assert status_counts(world.warehouse) == {"annotated": 7}
    for invoice_id, subscriber in renewals.items():  # each written once
        assert len(world.our_lines(invoice_id)) == (1 if subscriber.tier == 3 else 2)


def test_while_a_run_works_the_queue_new_renewals_wait_for_it_and_orphans_are_requested_after(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(3)]
    world.sync()
    world.renew()
    job = world.definitions().resolve_job_def(annotate_draft_invoices.name)
    in_progress = world.instance.create_run_for_job(
        job, run_config=annotation_run_config(["in_elsewhere"]), tags={WORKS_QUEUE_TAG: "true"}, status=dg.DagsterRunStatus.STARTED
    )
    during = world.tick()
    assert during.run_requests == [] and "run in progress" in during.skip_reason.skip_message
    assert status_counts(world.warehouse) == {"queued": 3}

    # The run ended without taking them (it failed, or it ended just as they were queued).
    world.instance.report_run_failed(in_progress)
    assert world.tick(during.cursor).run_requests == []  # not yet: rows that young may have a run coming
    (orphans,) = world.tick(during.cursor, policy=SensorPolicy(orphaned_after=timedelta(0))).run_requests
    assert sorted(orphans.run_config["ops"]["invoice_annotations"]["config"]["invoice_ids"]) == sorted(
        world.renewal_invoice(s).id for s in subscribers
    )
    assert orphans.tags["aisyst/retry"] == "true"


def test_stale_rows_are_requested_again_and_our_version_is_respected(world: AnnotationWorld) -> None:
    stuck = world.sign_up("ACME-1", 1)
    annotated_elsewhere = world.sign_up("ACME-2", 1)
    world.sync()
    world.renew()
    marked = world.renewal_invoice(annotated_elsewhere)
    # An invoice that already carries our annotation (e.g. the warehouse was restored from backup).
    world.client.v1.invoices.update(marked.id, {"metadata": {"aisyst_annotation_version": ANNOTATION_VERSION}})
    result = world.tick()
    assert ids_of(result) == [[world.renewal_invoice(stuck).id]]
    skipped = annotation_records(world.warehouse, [marked.id])[marked.id]
    assert skipped.status is AnnotationStatus.SKIPPED and "already carries" in skipped.detail

    # The run never happened (daemon down, run lost). After `stale_after`, the sensor asks again.
    policy = SensorPolicy(stale_after=timedelta(minutes=10))
    assert world.tick(result.cursor, policy=policy).run_requests == []
    with world.warehouse.begin() as connection:
        connection.execute(invoice_annotations.update().values(updated_at=datetime.now(timezone.utc) - timedelta(minutes=11)))
    retry = world.tick(result.cursor, policy=policy)
    assert ids_of(retry) == [[world.renewal_invoice(stuck).id]]
    assert retry.run_requests[0].run_key != result.run_requests[0].run_key
    assert retry.run_requests[0].tags["aisyst/retry"] == "true"
    assert world.tick(result.cursor, policy=policy).run_requests == []  # requested once, not every tick
    world.run(retry.run_requests[0].run_config)
    assert len(world.our_lines(world.renewal_invoice(stuck).id)) == 2
    assert world.our_lines(marked.id) == []


def test_a_renewal_finalized_while_the_sensor_was_stopped_is_not_silently_lost(world: AnnotationWorld) -> None:
    subscriber = world.sign_up("ACME-1", 2)
    world.sync()
    cursor = world.tick().cursor  # the sensor knows the subscription_create invoices
    world.renew()
    world.advance(RENEWAL + timedelta(hours=3))  # nobody looked for three hours: Stripe finalized it
    invoice = world.renewal_invoice(subscriber)
    assert invoice.status != "draft"
    result = world.tick(cursor)
    assert ids_of(result) == [[invoice.id]]
    run = world.run(result.run_requests[0].run_config)
    assert not run.get_asset_check_evaluations()[0].passed
    assert annotation_records(world.warehouse, [invoice.id])[invoice.id].status is AnnotationStatus.MISSED


def test_aisyst_annotate_waits_for_the_daemons_tick_and_its_runs(
    world: AnnotationWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aisyst annotate` starts a local deployment (webserver, daemon) on its home's instance; the
    daemon's tick of draft_invoice_sensor launches the run, which the command waits for and reports."""
    from aisyst_pipelines.cli import main

    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(3)]
    world.sync()
    world.renew()
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", world.warehouse_url)
    monkeypatch.setenv("STRIPE_API_BASE", world.emulator.url)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["annotate"]) == 0

    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(": 3 invoice(s): annotated 3"), line
    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
        (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="annotate_draft_invoices"))
        assert run.tags["dagster/sensor_name"] == "draft_invoice_sensor" and run.tags["dagster/run_key"].startswith("annotate:v")
        assert run.remote_job_origin is not None  # launched from the code location by the daemon
    assert status_counts(world.warehouse) == {"annotated": 3}

    # Given invoices, one run of the job through the run queue (the UI's Launch button).
    assert main(["annotate", "--invoice", world.renewal_invoice(subscribers[0]).id]) == 0
    assert capsys.readouterr().out.strip().endswith(": 1 invoice(s): already_done 1")


def test_the_overlap_is_re_listed_at_most_every_relist_every(world: AnnotationWorld) -> None:
    for n in range(3):
        world.sign_up(f"ACME-{n}", 1)
    world.sync()
    world.renew()
    first = world.plan()  # the first scan ever: today's drafts
    now = datetime.now(timezone.utc)
    relisted = world.plan(first.cursor, now=now)
    assert relisted.listed == 3 and relisted.cursor.relisted_at == now.timestamp()
    soon = world.plan(relisted.cursor, now=now + timedelta(seconds=5))  # the next tick, 5 s later
    assert soon.listed == 0 and soon.cursor == relisted.cursor
    later = now + timedelta(seconds=31)
    # Not while a run works the queue (a burst's same-second drafts would all be listed again) …
    held = scan_invoices(world.stripe.invoices, world.warehouse, relisted.cursor, SensorPolicy(), later, 100, queue_worked=True)
    assert held.listed == 0 and held.cursor == relisted.cursor
    # … but once it has ended.
    due = world.plan(relisted.cursor, now=later)
    assert due.listed == 3 and due.queued == [] and due.cursor.relisted_at == later.timestamp()


def test_the_overlap_is_re_listed_only_while_the_cursor_is_fresh(world: AnnotationWorld) -> None:
    for n in range(3):
        world.sign_up(f"ACME-{n}", 1)
    world.sync()
    world.renew()
    first = world.plan()
    assert len(first.queued) == 3 and first.cursor.hwm_at is not None
    now = datetime.now(timezone.utc)
    fresh = world.plan(first.cursor, now=now)
    assert fresh.listed == 3 and fresh.queued == []  # the renewal second is re-listed (and found on record)
    later = now + timedelta(minutes=11)
    settled = world.plan(first.cursor, now=later)
    assert settled.listed == 0 and settled.cursor == first.cursor
    # A new renewal (the clock moves on) is still found once the overlap has settled.
    newcomer = world.sign_up("ACME-9", 2)
    world.advance(RENEWAL + timedelta(days=31))
    found = world.plan(first.cursor, now=later)
    assert world.renewal_invoice(newcomer).id in found.queued


def test_a_rate_limited_listing_pauses_keeping_what_it_queued_and_the_next_tick_goes_on(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1) for n in range(7)]
    world.sync()
    world.renew()
    policy = SensorPolicy(page_size=2, batch_size=100)
    rate = world.stripe.effective_requests_per_second
    paused = scan_invoices(RateLimitedAfterPages(world.emulator, world.stripe.invoices, 1), world.warehouse, ScanCursor(), policy, datetime.now(timezone.utc), rate)  # type: ignore[arg-type]
    assert paused.rate_limited and "rate limit" in paused.summary()
    assert len(paused.queued) == 2 and paused.cursor.scanning  # the first page's renewals, and where to go on

    # While Stripe still answers 429 the daemon's tick ends with a reason, not an error, and keeps its cursor.
    cursor = readable_cursor(paused.cursor)
    still = world.tick(cursor, policy=policy)
    assert still.run_requests == [] and still.skip_reason is not None and "rate limit" in (still.skip_reason.skip_message or "") and still.cursor == cursor

    world.emulator.set_faults(rate_limit_error_rate=0.0)
    resumed = world.tick(cursor, policy=policy)
    assert not json.loads(resumed.cursor)["scanning"]
    assert sorted(paused.queued + ids_of(resumed)[0]) == sorted(world.renewal_invoice(s).id for s in subscribers)
    assert status_counts(world.warehouse) == {"queued": 7}
