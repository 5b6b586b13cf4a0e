"""The webhook receiver over HTTP (Starlette TestClient): signed, tampered, stale, replayed payloads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import stripe
from sqlalchemy import select
from starlette.testclient import TestClient

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.stripe_sync import subscription_mirror_row
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.stripe_events_store import pending_event_alerts
from aisyst_pipelines.warehouse.schema import stripe_events_applied, stripe_invoices, stripe_subscriptions
from aisyst_pipelines.webhook import WEBHOOK_PATH, create_webhook_app
from resources.notifier import NotifierResource

from .payloads import event, invoice, odd_events, subscription

SECRET = "whsec_test_5f1e2d3c4b5a69788796a5b4c3d2e1f0"


def signed(body: str, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp or int(time.time()))
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


@pytest.fixture
def client(warehouse: Warehouse, tmp_path: Path):
    notifier = NotifierResource(outbox_dir=str(tmp_path / "outbox"), sender="Aisyst <billing@aisyst.example>",
                                ops_recipients=["ops@aisyst.example"])
    with TestClient(create_webhook_app(warehouse, SECRET, notifier=notifier)) as test_client:
        yield test_client


def ledger(warehouse: Warehouse) -> dict[str, str]:
    with warehouse.connect() as connection:
        return dict(connection.execute(select(stripe_events_applied.c.event_id, stripe_events_applied.c.source)).all())


def test_signed_event_is_applied_and_a_replay_is_not(client: TestClient, warehouse: Warehouse) -> None:
    body = json.dumps(event("invoice.paid", invoice(status="paid", amount_paid=29_900), event_id="evt_wh_1"))
    headers = signed(body)
    first = client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert first.status_code == 200 and first.json()["outcome"] == "applied"
    replay = client.post(WEBHOOK_PATH, content=body, headers=headers)  # same bytes, same signature, in tolerance
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert ledger(warehouse) == {"evt_wh_1": "webhook"}
    with warehouse.connect() as connection:
        assert connection.execute(select(stripe_invoices.c.status, stripe_invoices.c.amount_paid)).one() == ("paid", 29_900)


def test_tampered_payload_is_refused(client: TestClient, warehouse: Warehouse) -> None:
    body = json.dumps(event("invoice.paid", invoice(status="paid", amount_paid=29_900), event_id="evt_wh_2"))
    headers = signed(body)
    tampered = body.replace('"amount_paid": 29900', '"amount_paid": 1')
    assert tampered != body
    response = client.post(WEBHOOK_PATH, content=tampered, headers=headers)
    assert response.status_code == 400 and "signature" in response.json()["error"]
    wrong_secret = client.post(WEBHOOK_PATH, content=body, headers=signed(body, secret="whsec_someone_else"))
    assert wrong_secret.status_code == 400
    no_header = client.post(WEBHOOK_PATH, content=body, headers={"Content-Type": "application/json"})
    assert no_header.status_code == 400
    garbage = client.post(WEBHOOK_PATH, content=body, headers={"Stripe-Signature": "t=abc,v1=zz"})
    assert garbage.status_code == 400
    assert ledger(warehouse) == {}
    assert SECRET not in response.text + wrong_secret.text + no_header.text + garbage.text


def test_stale_signature_and_late_replay_are_refused(client: TestClient, warehouse: Warehouse) -> None:
    body = json.dumps(event("invoice.paid", invoice(status="paid"), event_id="evt_wh_3"))
    stale = client.post(WEBHOOK_PATH, content=body, headers=signed(body, timestamp=int(time.time()) - 301))
    assert stale.status_code == 400 and "tolerance" in stale.json()["error"]
    fresh = client.post(WEBHOOK_PATH, content=body, headers=signed(body, timestamp=int(time.time()) - 290))
    assert fresh.status_code == 200
    assert ledger(warehouse) == {"evt_wh_3": "webhook"}


def test_a_signed_body_that_is_not_an_event_is_refused(client: TestClient, warehouse: Warehouse) -> None:
    nested = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser recurses
    huge_number = '{"id": "evt_1", "created": ' + "1" * 5_000 + "}"  # more digits than int() takes
    for body in ("not json", json.dumps({"object": "invoice", "id": "in_1"}), json.dumps([1, 2]), nested, huge_number):
        response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        assert response.status_code == 400, body[:40]
    assert ledger(warehouse) == {}


def test_a_content_length_that_is_not_the_body_is_refused(client: TestClient, warehouse: Warehouse) -> None:
    """Behind an ASGI server that does not check framing itself: a Content-Length that is no byte
    count, or a body longer than it says, is refused even when the body is a validly signed event."""
    body = json.dumps(event("invoice.paid", invoice(status="paid"), event_id="evt_wh_length"))
    for length in ("abc", "-5", "+10", "1e3", str(len(body) // 2)):
        response = client.post(WEBHOOK_PATH, content=body, headers=signed(body) | {"Content-Length": length})
        assert response.status_code == 400 and "Content-Length" in response.json()["error"], (length, response.text)
        assert response.headers["connection"] == "close"
    too_large = client.post(WEBHOOK_PATH, content=body, headers=signed(body) | {"Content-Length": "50000000"})
    assert too_large.status_code == 413 and "too large" in too_large.json()["error"]
    assert ledger(warehouse) == {}


def test_signed_but_odd_events_are_refused_with_their_reason(client: TestClient, warehouse: Warehouse) -> None:
    """A null or absurd `created`, an object of the wrong shape, a value the warehouse cannot hold: 400
    naming the field on both backends (a 500 would have Stripe retry it for days), nothing stored."""
    for named, payload in odd_events():
        body = json.dumps(payload)
        response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        assert response.status_code == 400 and named in response.json()["error"], (named, response.text)
    assert ledger(warehouse) == {}
    with warehouse.connect() as connection:
        assert connection.execute(select(stripe_invoices.c.invoice_id)).all() == []
    assert pending_event_alerts(warehouse) == []
    body = json.dumps(event("invoice.paid", invoice(status="paid"), event_id="evt_wh_after"))  # still receiving
    assert client.post(WEBHOOK_PATH, content=body, headers=signed(body)).json()["outcome"] == "applied"


def test_a_subscription_the_mirror_cannot_hold_is_left_to_the_sync(warehouse: Warehouse) -> None:
    """The event's own fields are fine, but the sync's mapping cannot read its price, or its row would
    not fit stripe_subscriptions: applied (status and period for a known subscription), not a 500."""
    mirror_row = subscription_mirror_row(None, load_tier_catalog(), {})
    item = subscription()["items"]["data"][0]
    subscriptions = [
        subscription("sub_fine"),
        subscription("sub_price_unread") | {"items": {"data": [item | {"price": "price_tier1"}]}},
        subscription("sub_key_too_wide") | {"items": {"data": [item | {"price": item["price"] | {"lookup_key": "k" * 201}}]}},
    ]
    with TestClient(create_webhook_app(warehouse, SECRET, mirror_row=mirror_row)) as client:
        for sub in subscriptions:
            body = json.dumps(event("customer.subscription.created", sub))
            response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
            assert response.status_code == 200 and response.json()["outcome"] == "applied", response.text
    with warehouse.connect() as connection:
        assert connection.scalars(select(stripe_subscriptions.c.subscription_id)).all() == ["sub_fine"]


def test_unwatched_types_are_acknowledged(client: TestClient, warehouse: Warehouse) -> None:
    body = json.dumps(event("charge.succeeded", {"id": "ch_1", "object": "charge"}, event_id="evt_wh_4"))
    response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"


def test_payment_failed_over_webhook_mails_ops_once(client: TestClient, warehouse: Warehouse, tmp_path: Path) -> None:
    body = json.dumps(event("invoice.payment_failed", invoice(status="open", attempt_count=1), event_id="evt_wh_5"))
    for _ in range(2):
        assert client.post(WEBHOOK_PATH, content=body, headers=signed(body)).status_code == 200
    mails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 1
    text = mails[0].read_text()
    assert "Payment failed" in text and "in_1" in text and "ops@aisyst.example" in text
    assert pending_event_alerts(warehouse) == []


def test_a_warehouse_failure_answers_500_so_stripe_retries(warehouse_url: str) -> None:
    unmigrated = Warehouse(warehouse_url)  # no tables: the insert fails
    with TestClient(create_webhook_app(unmigrated, SECRET), raise_server_exceptions=False) as test_client:
        body = json.dumps(event("invoice.paid", invoice(status="paid"), event_id="evt_wh_6"))
        response = test_client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 500
    unmigrated.dispose()


def test_an_empty_secret_is_refused_at_start(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError):
        create_webhook_app(warehouse, " ")
