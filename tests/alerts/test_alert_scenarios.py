"""The daily pass end to end on SQLite and PostgreSQL: real warehouse, stripe-sync's usage computation,
the Stripe emulator for portal links, the notifier in outbox mode or against real SMTP servers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import usage_alerts_store

from .alerts_world import APRIL, MARCH, MAY, AlertsWorld, outbox_notifier, text_of
from .conftest import SmtpServer

DAY = timedelta(days=1)
RUN_TIME = timedelta(hours=6)  # the schedule runs at 06:00


@pytest.fixture
def world(warehouse: Warehouse, stripe_resource, stripe_emulator, tmp_path: Path) -> Iterator[AlertsWorld]:  # noqa: ANN001
    yield AlertsWorld.create(stripe_emulator, stripe_resource, warehouse, tmp_path / "outbox")


def march_customer(world: AlertsWorld, account: str = "ACME", included: int | None = 500) -> str:
    world.customer(account)
    return world.subscription(account, included, MARCH, APRIL)


def test_exactly_80_percent_alerts_once_with_portal_link_and_digest(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 400, MARCH + 9 * DAY)
    outcome = world.run(MARCH + 10 * DAY + RUN_TIME)
    assert outcome.sent == {80: 1} and outcome.failures == [] and outcome.digest is not None
    [mail] = world.customer_mails()
    assert mail["To"] == "billing@acme.example"
    text = text_of(mail)
    assert "400 of 500 (80 %)" in text and "Minutes remaining:  100" in text
    assert "Days left:          21 (your plan renews on 1 April 2026)" in text
    assert "Tier 2 includes 1,000 minutes for $499 / month." in text
    assert f"{world.stripe.api_base}/_emulator/portal/" in text  # a real portal session of the emulator
    [digest] = world.digests()
    assert "ACME Ltd (" in text_of(digest) and "80 % of Tier 1" in text_of(digest) and "e-mail sent" in text_of(digest)
    assert world.statuses("ACME", MARCH) == [(500, 80, "notified")]
    [flagged] = outcome.flagged
    assert (flagged.threshold_pct, flagged.minutes_used, flagged.alert_status, flagged.days_left) == (80, 400, "notified", 21)

    again = world.run(MARCH + 10 * DAY + RUN_TIME + timedelta(hours=3))  # a second run the same day
    assert again.sent == {} and again.digest is None and len(world.mails()) == 2
    assert [f.alert_status for f in again.flagged] == ["notified"]


def test_just_under_80_percent_sends_nothing(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 399, MARCH + 9 * DAY)
    outcome = world.run(MARCH + 10 * DAY + RUN_TIME)
    assert outcome.sent == {} and outcome.digest is None and outcome.flagged == []
    assert outcome.subscriptions_checked == 1
    assert world.mails() == [] and world.statuses("ACME", MARCH) == []


def test_jump_from_70_to_105_percent_sends_100_and_supersedes_80(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 350, MARCH + 3 * DAY)
    assert world.run(MARCH + 4 * DAY + RUN_TIME).sent == {}
    world.calls("ACME", 175, MARCH + 4 * DAY)
    outcome = world.run(MARCH + 5 * DAY + RUN_TIME)
    assert outcome.sent == {100: 1} and outcome.superseded == 1
    [mail] = world.customer_mails()
    assert "all included minutes" in mail["Subject"]
    assert "525 of 500 (105 %)" in text_of(mail) and "Minutes over plan:  25" in text_of(mail)
    assert world.statuses("ACME", MARCH) == [(500, 80, "superseded"), (500, 100, "notified")]
    [digest] = world.digests()
    assert "recorded, not sent" in text_of(digest) and "superseded: 1" in text_of(digest)
    assert world.run(MARCH + 6 * DAY + RUN_TIME).digest is None  # idempotent


def test_renewal_at_midnight_re_arms_and_catches_a_crossing_in_the_first_hours(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 450, MARCH + 20 * DAY)
    assert world.run(MARCH + 21 * DAY + RUN_TIME).sent == {80: 1}
    # Renewal at 00:00 on April 1; 400 minutes in its first five hours; the 06:00 run sees the new period.
    world.subscription("ACME", 500, APRIL, MAY)
    for hour in range(5):
        world.call("ACME", APRIL + timedelta(hours=hour, minutes=59), 80)
    outcome = world.run(APRIL + RUN_TIME)
    assert outcome.sent == {80: 1}
    assert world.statuses("ACME", MARCH) == [(500, 80, "notified")]
    assert world.statuses("ACME", APRIL) == [(500, 80, "notified")]
    latest = world.customer_mails()[-1]
    assert "400 of 500 (80 %)" in text_of(latest) and "Days left:          30" in text_of(latest)


def test_call_straddling_the_period_edge_counts_in_the_period_it_ends_in(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 390, MARCH + 20 * DAY)
    # 23:50 → 00:10: 20 minutes ending in April. Counted in March it would make March 410 (82 %).
    world.call("ACME", APRIL + timedelta(minutes=10), 20, started_at=APRIL - timedelta(minutes=10))
    assert world.run(APRIL - timedelta(minutes=30)).sent == {}  # March as the current period: 390
    world.subscription("ACME", 500, APRIL, MAY)
    world.calls("ACME", 385, APRIL + DAY)
    outcome = world.run(APRIL + 2 * DAY + RUN_TIME)
    assert outcome.sent == {80: 1}
    assert world.statuses("ACME", MARCH) == []
    [row] = world.alerts("ACME", APRIL)
    assert row.minutes_used == 405  # 385 + the straddling call


def test_tier_change_mid_period_re_arms_the_thresholds(world: AlertsWorld) -> None:
    march_customer(world)
    world.calls("ACME", 450, MARCH + 5 * DAY)
    assert world.run(MARCH + 6 * DAY + RUN_TIME).sent == {80: 1}
    world.subscription("ACME", 1000, MARCH, APRIL)  # upgraded to Tier 2, same period
    assert world.run(MARCH + 7 * DAY + RUN_TIME).sent == {}  # 45 % of the new allowance
    world.calls("ACME", 370, MARCH + 8 * DAY)
    outcome = world.run(MARCH + 9 * DAY + RUN_TIME)
    assert outcome.sent == {80: 1}
    assert world.statuses("ACME", MARCH) == [(500, 80, "notified"), (1000, 80, "notified")]
    latest = text_of(world.customer_mails()[-1])
    assert "820 of 1,000 (82 %)" in latest and "Tier 3 includes unlimited minutes for $899 / month." in latest


def test_unlimited_tier_never_alerts(world: AlertsWorld) -> None:
    march_customer(world, "BIG", included=None)
    world.calls("BIG", 20_000, MARCH + 5 * DAY, per_call=500)
    outcome = world.run(MARCH + 6 * DAY + RUN_TIME)
    assert outcome.sent == {} and outcome.flagged == [] and outcome.subscriptions_checked == 0
    assert world.mails() == [] and usage_alerts_store.status_counts(world.warehouse) == {}


def test_silence_goes_to_the_ops_digest_once(world: AlertsWorld) -> None:
    march_customer(world, "QUIET")
    march_customer(world, "BUSY")
    today = date(2026, 3, 20)
    world.usage_days("QUIET", [today - timedelta(days=n) for n in range(3, 15)])
    world.usage_days("BUSY", [today - timedelta(days=n) for n in range(1, 15)])
    outcome = world.run(MARCH + 19 * DAY + RUN_TIME)
    assert [s.customer_id for s in outcome.silent] == [world.customers["QUIET"]]
    [digest] = world.digests()
    text = text_of(digest)
    assert "Customers gone silent (1)" in text
    assert f"QUIET Ltd ({world.customers['QUIET']}): last usage 2026-03-17 (12 active days of 14), silent for 2 days" in text
    assert "BUSY" not in text and world.customer_mails() == []
    assert world.run(MARCH + 19 * DAY + RUN_TIME + timedelta(hours=1)).digest is None
    assert world.run(MARCH + 20 * DAY + RUN_TIME).digest is None  # the same episode, a day later


def test_customer_without_email_stays_pending(world: AlertsWorld) -> None:
    world.customer("NOMAIL", email=None)
    world.subscription("NOMAIL", 500, MARCH, APRIL)
    world.calls("NOMAIL", 420, MARCH + DAY)
    outcome = world.run(MARCH + 2 * DAY + RUN_TIME)
    assert outcome.sent == {} and outcome.failures[0][2] == "the Stripe customer has no e-mail address"
    assert world.statuses("NOMAIL", MARCH) == [(500, 80, "pending")]
    assert "delivery failed: the Stripe customer has no e-mail address" in text_of(world.digests()[0])


def test_real_smtp_delivery(world: AlertsWorld, smtp_server: SmtpServer, tmp_path: Path) -> None:
    march_customer(world)
    world.calls("ACME", 510, MARCH + DAY)
    notifier = outbox_notifier(tmp_path / "unused").model_copy(update={"smtp_url": smtp_server.url()})
    outcome = world.run(MARCH + 2 * DAY + RUN_TIME, notifier)
    assert outcome.sent == {100: 1} and outcome.digest is not None and outcome.digest.channel == "smtp"
    assert [r.rcpt_tos for r in smtp_server.received] == [["billing@acme.example"], ["ops@aisyst.example"]]
    customer_mail = smtp_server.received[0].message
    assert customer_mail.get_body(("html",)) is not None and "510 of 500" in text_of(customer_mail)
    assert not (tmp_path / "unused").exists()


def test_refusing_server_leaves_alerts_pending_and_the_next_run_retries(
    world: AlertsWorld, refusing_smtp_server: SmtpServer, smtp_server: SmtpServer, closed_smtp_port: int, tmp_path: Path
) -> None:
    march_customer(world)
    world.calls("ACME", 410, MARCH + DAY)
    base = outbox_notifier(tmp_path / "unused")
    refusing = base.model_copy(update={"smtp_url": refusing_smtp_server.url()})
    outcome = world.run(MARCH + 2 * DAY + RUN_TIME, refusing)
    assert outcome.sent == {} and "550 5.7.1" in outcome.failures[0][2]
    assert outcome.digest is None and "550 5.7.1" in (outcome.digest_error or "")
    [row] = world.alerts("ACME", MARCH)
    assert (row.status.value, row.notified_at, row.attempts) == ("pending", None, 1) and "550" in (row.last_error or "")

    closed = base.model_copy(update={"smtp_url": f"smtp://alerts:pw-not-to-leak@127.0.0.1:{closed_smtp_port}"})
    outcome = world.run(MARCH + 2 * DAY + RUN_TIME + timedelta(hours=1), closed)
    [row] = world.alerts("ACME", MARCH)
    assert row.status.value == "pending" and row.attempts == 2 and "cannot connect" in (row.last_error or "")
    assert "pw-not-to-leak" not in (row.last_error or "") and "pw-not-to-leak" not in (outcome.digest_error or "")

    working = base.model_copy(update={"smtp_url": smtp_server.url()})
    outcome = world.run(MARCH + 3 * DAY + RUN_TIME, working)
    assert outcome.sent == {80: 1} and outcome.digest is not None
    [row] = world.alerts("ACME", MARCH)
    assert row.status.value == "notified" and row.attempts == 3 and row.last_error is None
    assert [r.rcpt_tos for r in smtp_server.received] == [["billing@acme.example"], ["ops@aisyst.example"]]
    assert "e-mail sent (after 3 attempts)" in text_of(smtp_server.received[1].message)
    assert world.run(MARCH + 3 * DAY + RUN_TIME + timedelta(hours=1), working).digest is None
    assert len(smtp_server.received) == 2


def test_pending_alert_expires_when_the_period_renews(world: AlertsWorld, refusing_smtp_server: SmtpServer) -> None:
    march_customer(world)
    world.calls("ACME", 420, MARCH + 29 * DAY)
    refusing = outbox_notifier(world.outbox).model_copy(update={"smtp_url": refusing_smtp_server.url()})
    world.run(MARCH + 30 * DAY + RUN_TIME, refusing)
    world.subscription("ACME", 500, APRIL, MAY)
    outcome = world.run(APRIL + RUN_TIME)
    assert outcome.expired == 1 and outcome.sent == {}
    assert world.statuses("ACME", MARCH) == [(500, 80, "expired")]
    assert "expired: the period ended" in text_of(world.digests()[0])


def test_the_alert_is_written_in_the_customers_preferred_language(world: AlertsWorld) -> None:
    """Issue 15 item 4, end to end: Stripe's preferred_locales, mirrored by the sync, choose the language
    of the e-mail; numbers, money and dates follow it."""
    world.customer("KUNDE", locale="de-DE")
    world.subscription("KUNDE", 500, MARCH, APRIL)
    world.calls("KUNDE", 400, MARCH + 9 * DAY)
    assert world.run(MARCH + 10 * DAY + RUN_TIME).sent == {80: 1}
    [mail] = world.customer_mails()
    assert mail["Subject"] == "Aisyst: Sie haben 80 % Ihrer Inklusivminuten genutzt"
    text = text_of(mail)
    assert "Hallo KUNDE Ltd," in text and "400 von 500 (80 %)" in text
    assert "21 (Ihr Tarif verlängert sich am 1. April 2026)" in text
    assert "Tier 2 enthält 1.000 Minuten für 499\u00a0$ / Monat." in text
