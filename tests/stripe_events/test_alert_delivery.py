"""Ops alerts from Stripe events: one e-mail per alert, a digest for many, claims, failed delivery."""

from __future__ import annotations

import email
import email.policy
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aisyst_pipelines.services.stripe_events import SINGLE_ALERT_EMAILS_MAX, deliver_event_alerts
from aisyst_pipelines.billing.stripe_events import StripeEvent
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.stripe_events_store import (
    ALERT_CLAIM_TIMEOUT,
    apply_events,
    claim_event_alerts,
    pending_event_alerts,
)
from resources.notifier import NotifierResource

from .payloads import T0, event, invoice

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def notifier(outbox: Path, smtp_url: str | None = None) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), sender="Aisyst <billing@aisyst.example>",
                            ops_recipients=["ops@aisyst.example"], smtp_url=smtp_url, timeout_seconds=5)


def raise_alerts(warehouse: Warehouse, renewals: int, failures: int = 0) -> None:
    payloads = [event("invoice.finalized", invoice(invoice_id=f"in_r{n}", status="open"), created=T0 + n)
                for n in range(renewals)]
    payloads += [event("invoice.payment_failed", invoice(invoice_id=f"in_f{n}", status="open", attempt_count=1),
                       created=T0 + 1000 + n) for n in range(failures)]
    apply_events(warehouse, [StripeEvent.from_payload(p) for p in payloads], source="sensor", now=NOW)


def mails(outbox: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(outbox.glob("*.eml"))]


def test_a_few_alerts_are_one_email_each(warehouse: Warehouse, tmp_path: Path) -> None:
    raise_alerts(warehouse, renewals=SINGLE_ALERT_EMAILS_MAX)
    delivery = deliver_event_alerts(warehouse, notifier(tmp_path), now=NOW)
    assert (delivery.sent, delivery.failed) == (SINGLE_ALERT_EMAILS_MAX, 0)
    sent = mails(tmp_path)
    assert len(sent) == SINGLE_ALERT_EMAILS_MAX
    body = sent[0].get_content()
    assert "was finalized before the usage annotation reached it" in body and "event: evt_" in body
    assert deliver_event_alerts(warehouse, notifier(tmp_path), now=NOW).sent == 0


def test_many_alerts_are_one_digest(warehouse: Warehouse, tmp_path: Path) -> None:
    raise_alerts(warehouse, renewals=40, failures=2)
    delivery = deliver_event_alerts(warehouse, notifier(tmp_path), now=NOW)
    assert delivery.sent == 42
    [digest] = mails(tmp_path)
    assert str(digest["Subject"]).strip().startswith(
        "[Aisyst ops] 42 Stripe alerts: 40 renewal finalized without usage lines, 2 payment failed")
    body = digest.get_content()
    assert body.count("[invoice in_r") == 40 and body.count("[invoice in_f") == 2
    assert pending_event_alerts(warehouse) == []


def test_an_alert_is_claimed_by_one_deliverer_only(warehouse: Warehouse) -> None:
    raise_alerts(warehouse, renewals=5)
    first = claim_event_alerts(warehouse, limit=3, now=NOW)
    second = claim_event_alerts(warehouse, limit=10, now=NOW)
    assert len(first) == 3 and len(second) == 2
    assert {a.event_id for a in first}.isdisjoint({a.event_id for a in second})
    assert claim_event_alerts(warehouse, limit=10, now=NOW) == []
    # a deliverer that died holding its claim: the alerts come back after the claim timeout
    later = NOW + ALERT_CLAIM_TIMEOUT + timedelta(seconds=1)
    assert len(claim_event_alerts(warehouse, limit=10, now=later)) == 5


def test_failed_delivery_keeps_alerts_queued(warehouse: Warehouse, tmp_path: Path) -> None:
    raise_alerts(warehouse, renewals=1, failures=1)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    delivery = deliver_event_alerts(warehouse, notifier(tmp_path, f"smtp://127.0.0.1:{closed}"), now=NOW)
    assert (delivery.sent, delivery.failed) == (0, 2) and "cannot connect" in (delivery.last_error or "")
    queued = pending_event_alerts(warehouse)
    assert len(queued) == 2 and all(a.attempts == 1 for a in queued)
    assert deliver_event_alerts(warehouse, notifier(tmp_path), now=NOW).sent == 2
