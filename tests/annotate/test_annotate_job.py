"""Invoice annotation on the emulator, on SQLite and PostgreSQL: what lands on each renewal invoice, and
what happens when it cannot — through the service, and end to end through annotate_draft_invoices
(its metadata, its asset check, its run config)."""

from datetime import timedelta
from typing import Any

import pytest

from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION, annotation_idempotency_key
from aisyst_pipelines.services import invoice_annotation
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    annotation_records,
    mark_pending,
    record_outcome,
)

from .conftest import RENEWAL, T0, AnnotationWorld


def _materialization(result):
    return result.asset_materializations_for_node("invoice_annotations")[0].metadata


def _check(result):
    return result.get_asset_check_evaluations()[0]


def test_lines_per_tier_overage_unlimited_zero_usage_and_no_cdrs(world: AnnotationWorld) -> None:
    tier1 = world.sign_up("ACME-1", 1)
    tier2_over = world.sign_up("ACME-2", 2)
    tier3 = world.sign_up("ACME-3", 3)
    quiet = world.sign_up("ACME-4", 1)  # calls, but none billable in March
    silent = world.sign_up("ACME-5", 2)  # no CDRs at all
    world.sync()
    world.calls(tier1, [200, 195])
    world.calls(tier1, [7], ended_at=RENEWAL)  # ends exactly at the period end: April's
    world.calls(tier1, [9], ended_at=T0 - timedelta(seconds=1))  # February's
    world.calls(tier2_over, [600, 634])
    world.calls(tier3, [1000, 234])
    world.calls(quiet, [30], answered=False)
    world.calls(quiet, [40], ended_at=RENEWAL + timedelta(days=2))
    world.renew()

    results = world.annotate_all()
    assert len(results) == 1 and results[0].success

    expected = {
        tier1: [("minutes_used", "Voice minutes used: 395 of 500", 0), ("minutes_unused", "Unused minutes: 105", 0)],
        tier2_over: [("minutes_used", "Voice minutes used: 1,234 of 1,000", 0), ("overage", "Overage: 234 minutes", 0)],
        tier3: [("minutes_used", "Voice minutes used: 1,234 (Unlimited plan)", 0)],
        quiet: [("minutes_used", "Voice minutes used: 0 of 500", 0), ("minutes_unused", "Unused minutes: 500", 0)],
        silent: [("minutes_used", "Voice minutes used: 0 of 1,000", 0), ("minutes_unused", "Unused minutes: 1,000", 0)],
    }
    invoice_ids = {}
    for subscriber, lines in expected.items():
        invoice = world.renewal_invoice(subscriber)
        invoice_ids[subscriber.customer_id] = invoice.id
        assert world.our_lines(invoice.id) == lines
        assert invoice.metadata["aisyst_annotation_version"] == ANNOTATION_VERSION
        our = [line for line in invoice.lines.data if line.metadata.to_dict().get("aisyst_line")]
        # Stripe's line period is inclusive: March 1 00:00:00 .. March 31 23:59:59
        assert all((line.period.start, line.period.end) == (int(T0.timestamp()), int(RENEWAL.timestamp()) - 1) for line in our)

    meta = world.renewal_invoice(tier1).metadata.to_dict()
    assert {k: meta[k] for k in ("minutes_used", "minutes_included", "minutes_unused", "usage_percentage", "tier_name")} == {
        "minutes_used": "395", "minutes_included": "500", "minutes_unused": "105", "usage_percentage": "79.0", "tier_name": "Tier 1"}
    unlimited = world.renewal_invoice(tier3).metadata.to_dict()
    assert unlimited["minutes_included"] == "unlimited" and "minutes_unused" not in unlimited

    records = annotation_records(world.warehouse, invoice_ids.values())
    assert {r.status for r in records.values()} == {AnnotationStatus.ANNOTATED}
    over = records[invoice_ids[tier2_over.customer_id]]
    assert (over.minutes_used, over.minutes_included, over.lines_added, over.attempts) == (1234, 1000, 2, 1)

    metadata = _materialization(results[0])
    assert sorted(metadata["annotated_invoices"].value) == sorted(invoice_ids.values())
    assert metadata["annotated"].value == 5 and metadata["missed"].value == 0
    assert _check(results[0]).passed


def test_german_customer_and_priced_overage(world: AnnotationWorld) -> None:
    german = world.sign_up("KUNDE-7", 2, locale="de-DE")
    world.sync()
    # The tier gets an overage rate of 4 cents a minute (as `aisyst_overage_unit_amount` metadata would).
    from aisyst_pipelines.warehouse.schema import stripe_subscriptions
    with world.warehouse.begin() as connection:
        connection.execute(stripe_subscriptions.update().values(overage_unit_amount=4))
    world.calls(german, [1100, 150])
    world.renew()
    world.annotate(world.plan().queued)
    invoice = world.renewal_invoice(german)
    assert world.our_lines(invoice.id) == [
        ("minutes_used", "Genutzte Sprachminuten: 1.250 von 1.000", 0),
        ("overage", "Mehrverbrauch: 250 Minuten zu je 0,04 USD", 1000),
    ]
    assert invoice.total == 49900 + 1000


def test_a_second_run_adds_nothing(world: AnnotationWorld) -> None:
    subscriber = world.sign_up("ACME-1", 1)
    world.sync()
    world.calls(subscriber, [10])
    world.renew()
    batch = world.plan().queued
    world.annotate(batch)
    again = world.annotate(batch)  # the same batch, worked twice (a re-execution)
    invoice = world.renewal_invoice(subscriber)
    assert len(world.our_lines(invoice.id)) == 2
    assert (again.count(AnnotationStatus.ANNOTATED), again.already_done) == (0, [invoice.id])


def test_finalized_before_annotation_is_missed_with_usage_in_metadata(world: AnnotationWorld) -> None:
    late = world.sign_up("ACME-1", 1)
    on_time = world.sign_up("ACME-2", 1)
    world.sync()
    world.calls(late, [123])
    world.renew()
    request = world.tick().run_requests[0]
    late_invoice = world.renewal_invoice(late)
    world.client.v1.invoices.finalize_invoice(late_invoice.id)  # someone was quicker than us

    result = world.run(request.run_config)
    assert result.success  # the run finishes the batch; the check is the alert
    check = _check(result)
    assert not check.passed and check.metadata["missed_invoices"].value == 1
    assert f"| {late_invoice.id} | " in check.metadata["offenders"].value and "| missed |" in check.metadata["offenders"].value
    record = annotation_records(world.warehouse, [late_invoice.id])[late_invoice.id]
    assert record.status is AnnotationStatus.MISSED and "open" in record.detail
    assert record.minutes_used == 123
    finalized = world.client.v1.invoices.retrieve(late_invoice.id)
    assert finalized.metadata["minutes_used"] == "123" and "aisyst_annotation_version" not in finalized.metadata
    assert world.our_lines(late_invoice.id) == []
    assert len(world.our_lines(world.renewal_invoice(on_time).id)) == 2


def test_an_interrupted_attempt_is_read_back_not_written_twice(world: AnnotationWorld) -> None:
    subscriber = world.sign_up("ACME-1", 1)
    world.sync()
    world.calls(subscriber, [50])
    world.renew()
    batch = world.plan().queued
    invoice = world.renewal_invoice(subscriber)
    # A run sent add_lines and died before recording it: the row is pending, the lines are on.
    mark_pending(world.warehouse, [invoice.id], "dead-run", RENEWAL)
    from aisyst_pipelines.billing.invoice_lines import TierTerms, invoice_lines, invoice_metadata, invoice_texts, period_usage
    from aisyst_pipelines.billing.periods import Period
    terms = TierTerms("Tier 1", 500)
    usage = period_usage(50, terms, Period(T0, RENEWAL))
    world.stripe.invoices.add_annotation_lines(
        invoice.id, invoice_lines(terms, usage, invoice_texts(None)), invoice_metadata(terms, usage),
        annotation_idempotency_key(invoice.id) + "-elsewhere",  # not even the same key: the metadata decides
    )
    run = world.annotate(batch)
    assert len(world.our_lines(invoice.id)) == 2
    record = annotation_records(world.warehouse, [invoice.id])[invoice.id]
    assert record.status is AnnotationStatus.ANNOTATED and "interrupted" in record.detail
    assert record.minutes_used == 50
    assert not run.problems


def test_finalize_after_annotating_and_brand_fields_on_an_unbranded_draft(world: AnnotationWorld) -> None:
    subscriber = world.sign_up("ACME-9", 3)
    world.sync()
    world.renew()
    request = world.tick().run_requests[0]
    config = request.run_config
    config["ops"]["invoice_annotations"]["config"]["finalize_after_annotating"] = True
    world.run(config)
    invoice = world.client.v1.invoices.retrieve(world.renewal_invoice(subscriber).id)
    assert invoice.status in ("open", "paid")
    # Its subscription had no brand fields, so the draft got them directly.
    assert [(f.name, f.value) for f in invoice.custom_fields] == [("Client ID", "ACME-9"), ("Tier", "Tier 3")]
    assert "Aisyst" in invoice.description and invoice.footer
    assert world.our_lines(invoice.id) == [("minutes_used", "Voice minutes used: 0 (Unlimited plan)", 0)]


def test_a_row_another_run_finishes_after_this_run_read_it_is_not_written(world: AnnotationWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    taken, left = world.sign_up("ACME-1", 1), world.sign_up("ACME-2", 1)
    world.sync()
    world.renew()
    batch = world.plan().queued
    taken_invoice = world.renewal_invoice(taken)
    read = invoice_annotation.annotation_records

    def read_then_finished_elsewhere(warehouse: Any, invoice_ids: Any) -> Any:
        records = read(warehouse, invoice_ids)  # what this run saw: both queued
        record_outcome(warehouse, taken_invoice.id, AnnotationOutcome(AnnotationStatus.SKIPPED, detail="by the other run"), "other-run", RENEWAL)
        return records

    monkeypatch.setattr(invoice_annotation, "annotation_records", read_then_finished_elsewhere)
    run = world.annotate(batch)
    assert run.already_done == [taken_invoice.id] and run.annotated == [world.renewal_invoice(left).id]
    assert world.our_lines(taken_invoice.id) == []
    record = annotation_records(world.warehouse, [taken_invoice.id])[taken_invoice.id]
    assert (record.status, record.run_id, record.attempts) == (AnnotationStatus.SKIPPED, "other-run", 0)
