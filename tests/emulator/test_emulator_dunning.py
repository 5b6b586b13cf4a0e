"""Smart Retries of a failed renewal as the test clock advances, recovery by a new card (API or the
portal page), and the revenue-recovery settings when the retries run out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import stripe

from aisyst_pipelines.emulator import EmulatorServer
from aisyst_pipelines.emulator.dunning import RevenueRecovery
from aisyst_pipelines.emulator.testing import RunningEmulator
from test_emulator_lifecycle import setup_customer, ts

DAY = 86400


def failing_renewal(client: stripe.StripeClient, start: int):  # type: ignore[no-untyped-def]
    """A monthly subscription whose card fails from its first renewal on; the clock just past that
    renewal's charge. Returns (clock, customer, subscription, renewal invoice)."""
    clock, customer, price, _ = setup_customer(client, start)
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": failing.id}})
    renewal_at = sub["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": renewal_at + 3600 + 60})
    [renewal] = client.v1.invoices.list({"subscription": sub.id, "status": "open"}).data
    return clock, customer, sub, renewal


def advance(client: stripe.StripeClient, clock_id: str, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})


def status_changes(client: stripe.StripeClient, subscription_id: str) -> list[tuple[str, str]]:
    events = client.v1.events.list({"types": ["customer.subscription.updated", "customer.subscription.deleted"], "limit": 100})
    changes = []
    for event in reversed(list(events.auto_paging_iter())):
        if event.data.object.id != subscription_id:
            continue
        if event.type == "customer.subscription.deleted":
            changes.append(("deleted", event.data.object.status))
        elif "status" in event.data.previous_attributes:
            changes.append((event.data.previous_attributes["status"], event.data.object.status))
    return changes


@pytest.fixture
def emulator_with(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    with EmulatorServer(seed=11, revenue_recovery=request.param) as server:
        yield RunningEmulator(server)


def test_retries_follow_the_schedule_and_a_new_card_recovers_on_the_next_one(stripe_emulator) -> None:
    client = stripe_emulator.client()  # Stripe's default: 8 retries within 14 days, then cancel
    clock, customer, sub, renewal = failing_renewal(client, ts(2027, 3, 1))
    first_failure = renewal.status_transitions.finalized_at
    assert (renewal.attempt_count, renewal.next_payment_attempt) == (1, first_failure + round(14 * DAY / 8))
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    advance(client, clock.id, first_failure + 4 * DAY)  # two retries (1.75 and 3.5 days) have failed
    third = client.v1.invoices.retrieve(renewal.id)
    assert (third.status, third.attempt_count, third.next_payment_attempt) == ("open", 3, first_failure + round(3 * 14 * DAY / 8))
    failed = [e for e in client.v1.events.list({"type": "invoice.payment_failed", "limit": 100}).data if e.data.object.id == renewal.id]
    assert [e.data.object.attempt_count for e in reversed(failed)] == [1, 2, 3]
    assert [e.created for e in reversed(failed)][1:] == [first_failure + round(k * 14 * DAY / 8) for k in (1, 2)]

    # The customer puts in a working card (API); nothing is charged until the next retry.
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": good.id}})
    assert client.v1.invoices.retrieve(renewal.id).status == "open"
    advance(client, clock.id, third.next_payment_attempt + 60)
    paid = client.v1.invoices.retrieve(renewal.id)
    assert (paid.status, paid.attempt_count, paid.amount_paid, paid.next_payment_attempt) == ("paid", 4, 29900, None)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert status_changes(client, sub.id) == [("incomplete", "active"), ("active", "past_due"), ("past_due", "active")]
    advance(client, clock.id, first_failure + 14 * DAY + 60)  # the rest of the schedule does nothing
    assert client.v1.invoices.retrieve(renewal.id).attempt_count == 4


def test_exhausted_retries_cancel_the_subscription_by_default(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, _, sub, renewal = failing_renewal(client, ts(2027, 3, 1))
    first_failure = renewal.status_transitions.finalized_at
    advance(client, clock.id, first_failure + 14 * DAY + 60)
    lapsed = client.v1.invoices.retrieve(renewal.id)
    assert (lapsed.status, lapsed.attempt_count, lapsed.next_payment_attempt) == ("open", 9, None)
    canceled = client.v1.subscriptions.retrieve(sub.id)
    assert (canceled.status, canceled.cancellation_details.reason) == ("canceled", "payment_failed")
    assert canceled.ended_at == first_failure + 14 * DAY
    assert status_changes(client, sub.id)[-2:] == [("active", "past_due"), ("deleted", "canceled")]


@pytest.mark.parametrize(
    "emulator_with", [RevenueRecovery(retries=2, retry_days=3, when_exhausted="unpaid", mark_uncollectible=True)], indirect=True
)
def test_unpaid_and_uncollectible_when_so_configured(emulator_with) -> None:
    client = emulator_with.client()
    clock, _, sub, renewal = failing_renewal(client, ts(2027, 3, 1))
    first_failure = renewal.status_transitions.finalized_at
    assert renewal.next_payment_attempt == first_failure + round(1.5 * DAY)
    advance(client, clock.id, first_failure + 3 * DAY + 60)
    final = client.v1.invoices.retrieve(renewal.id)
    assert (final.status, final.attempt_count) == ("uncollectible", 3)
    assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"
    assert "invoice.marked_uncollectible" in [e.type for e in client.v1.events.list({"limit": 100}).data]


@pytest.mark.parametrize("emulator_with", [RevenueRecovery(retries=1, retry_days=2, when_exhausted="past_due")], indirect=True)
def test_left_past_due_and_settings_through_the_admin_endpoint(emulator_with) -> None:
    client = emulator_with.client()
    clock, _, sub, renewal = failing_renewal(client, ts(2027, 3, 1))
    advance(client, clock.id, renewal.status_transitions.finalized_at + 2 * DAY + 60)
    assert client.v1.invoices.retrieve(renewal.id).next_payment_attempt is None
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    url = f"{emulator_with.url}/_emulator/revenue_recovery"
    assert requests.post(url, json={"retries": 4, "when_exhausted": "unpaid"}, timeout=5).json() == {
        "retries": 4, "retry_days": 2, "when_exhausted": "unpaid", "mark_uncollectible": False}
    assert requests.post(url, json={"when_exhausted": "forgive"}, timeout=5).status_code == 400


def test_a_card_put_in_through_the_portal_pays_on_the_next_retry(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, sub, renewal = failing_renewal(client, ts(2027, 3, 1))
    session = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "https://aisyst.example/account"})
    page = requests.get(session.url, timeout=5).text
    assert "Update card" in page and "pm_card_visa" in page
    declined = requests.post(f"{session.url}/payment_method", data={"payment_method": "pm_card_chargeDeclined"}, timeout=5)
    assert "Card not saved: Your card was declined." in declined.text
    saved = requests.post(f"{session.url}/payment_method", data={"payment_method": "pm_card_mastercard"}, timeout=5)
    assert "Card ending 4444 saved" in saved.text
    default = client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method
    assert client.v1.payment_methods.retrieve(default).card.last4 == "4444"
    advance(client, clock.id, renewal.next_payment_attempt + 60)
    assert client.v1.invoices.retrieve(renewal.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
