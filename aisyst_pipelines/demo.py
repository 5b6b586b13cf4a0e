"""`aisyst demo`: one billing month of Aisyst, end to end, through Dagster (issue 8).

What it does, in the order a real month would do it:

1. starts the Stripe emulator in this process (a free port) and points the settings at it (no
   STRIPE_SECRET_KEY: the emulator is meant), then creates the tier catalog (`ensure_catalog`, what
   `aisyst bootstrap-stripe` does);
2. signs up the customers on ONE test clock starting `MONTH_START`: the three tiers, some at about
   60 %, 85 % and 110 % of their included minutes, one unlimited, one whose card declines at the
   renewal; plus one account code that calls but has no Stripe customer;
3. refreshes the Stripe mirror and the invoice brand fields (Dagster runs);
4. plays the voice server's meter events for the month while the clock moves (a few dropped, a few
   sent twice after Stripe's 24 h dedupe window), and lands the month's CDR files;
5. ingests them (the landing sensor and its runs), reconciles with repair, runs the usage alerts
   (e-mails go to the outbox), advances the clock past the renewal, lets the draft-invoice sensor
   and the annotation runs annotate every draft, lets the hour pass (finalize, pay, one decline) and
   lets the Stripe events sensor apply what happened; then a voice node delivers a few buffered calls
   of September late (`LATE_ACCOUNT`: meter events and one small CDR file, which the landing sensor
   loads while the events are applied), and the audit of the final invoices names them `late_cdr`;
6. prints minutes per customer, the reconciliation findings, the alerts with their outbox files,
   two annotated invoices as the customer reads them, the audit with the late minutes the next
   renewal draft will carry, and where to look in `dagster dev`.

State: every run starts a fresh demo world in AISYST_HOME (the warehouse file, landing/ and outbox/
are wiped; the emulator is new each run) while the Dagster instance in AISYST_HOME/dagster is kept,
so run history, sensor ticks and asset history accumulate over demo runs. The one-off passes'
sensor cursors are cleared first (they belong to the previous, gone world). The demo always works on
the home's own SQLite warehouse and folders, and SMTP settings are ignored for its duration.

Because it wipes, the demo only runs in a home it made itself: one that did not exist or was empty,
which it marks with DEMO_MARKER. Before touching anything it refuses (`demo_refusal`) any other
home, and a shell that looks set up for real work: AISYST_WAREHOUSE_URL, AISYST_LANDING_DIR or
AISYST_OUTBOX_DIR pointing elsewhere than the demo home, or a STRIPE_SECRET_KEY that is not a test
key (a test key is harmless: the demo always uses its own emulator and never reads it).

Dagster's run logs go to AISYST_HOME/demo-dagster.log; the terminal shows progress and results.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO, cast

import pandas as pd

from aisyst_pipelines.billing.formatting import format_money
from aisyst_pipelines.billing.tiers import TierCatalog, load_tier_catalog
from aisyst_pipelines.cdr.rating import rate_calls
from aisyst_pipelines.deployment import running_deployment_url
from aisyst_pipelines.emulator.dunning import RevenueRecovery
from aisyst_pipelines.instance_lock import instance_lock
from aisyst_pipelines.settings import DEFAULT_EMULATOR_URL, Settings, embedded_warehouse_url
from aisyst_pipelines.simulation import (
    MeteredCall,
    MeterEventSend,
    VoiceServerFaults,
    plan_meter_events,
    replay,
    simulate_calls,
    write_calls,
)

UTC = timezone.utc
MONTH_START = datetime(2026, 9, 1, tzinfo=UTC)  # the test clock's start = every subscription's anchor
RENEWAL = datetime(2026, 10, 1, tzinfo=UTC)  # September has 30 days: the first period ends here
CALL_DAYS = 29  # calls on 1-29 September; the 30th is quiet, so the reconciliation sees every call
RECONCILE_AT = datetime(2026, 9, 30, 6, tzinfo=UTC)  # the nightly run's moment, before the renewal
METER_STEP = timedelta(hours=12)  # the clock advances in these steps while the voice server sends
DUPLICATE_AFTER = timedelta(hours=48)  # late duplicates: past Stripe's 24 h identifier window
UNMAPPED_ACCOUNT = "acct_9999"  # calls, but no Stripe customer carries this code
CDR_FORMATS = ("canonical_csv", "twilio", "asterisk")  # accounts are dealt over the three sources
STRIPE_RATE = 1000.0  # requests per second against the local emulator (Stripe's own limit: 25/s test)
# Smart Retries of a declined renewal, shortened so the demo's clock sees the end: two retries within
# two days, then the subscription is canceled (the emulator's default is Stripe's 8 within 14 days).
DUNNING = RevenueRecovery(retries=2, retry_days=2, when_exhausted="cancel")
DEFAULT_EMULATOR_PORT = int(DEFAULT_EMULATOR_URL.rsplit(":", 1)[1])
# Late-reported minutes (the audit's `late_cdr`): calls of one plain customer — US, Tier 2, paid by card,
# so its September invoice is final and paid — that a voice node delivers only after the renewal invoices
# are final. A round number to recognise on the next draft's line ("Late-reported minutes from September: 12").
LATE_ACCOUNT = "acct_0002"
LATE_MINUTES = 12
LATE_CALLS_DAY = date(2026, 9, 15)  # mid-period: every call of the day ends before RENEWAL
AUDIT_LOOK_BACK_DAYS = 400  # the audit looks back from today; the demo's invoices are from October 2026
SENSOR_INTERVAL_SECONDS = 5  # the daemon's sensor loop runs every 5 s; production ticks every 30 s
# Environment the demo replaces for its duration (restored afterwards).
DEMO_ENV_OVERRIDES = (
    "AISYST_HOME", "STRIPE_API_BASE", "STRIPE_SECRET_KEY", "AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR",
    "AISYST_OUTBOX_DIR", "AISYST_SMTP_URL", "DAGSTER_HOME", "AISYST_STRIPE_REQUESTS_PER_SECOND", "AISYST_PII_KEY",
)
DEMO_MARKER = ".aisyst-demo-home"
MARKER_TEXT = (
    "This folder was made by `aisyst demo`. Every demo run wipes its warehouse.db, landing/ and outbox/:\n"
    "keep nothing real here. The demo refuses to run in a non-empty folder without this file.\n"
)
TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")


@dataclass(frozen=True)
class DemoCustomer:
    account_code: str
    tier_index: int  # 0-based into the catalog
    usage_share: float  # target minutes / included minutes (unlimited: minutes / 1000)
    note: str = ""
    declining_card: bool = False
    recovers: bool = False  # a declining card replaced by a working one after the first failed charge
    pays_by_invoice: bool = False  # collection_method send_invoice, due in 30 days (Net 30)
    locale: str | None = None  # the customer's preferred_locales: its invoice lines and alert e-mails
    country: str | None = None  # the address country, which picks the client group (tax, invoice template)


@dataclass
class Signup:
    plan: DemoCustomer
    customer_id: str
    subscription_id: str
    included_minutes: int | None
    target_minutes: int


def plan_customers(count: int, seed: int) -> list[DemoCustomer]:
    """`count` customers: the named cases first, then tiers 1/2 with usual usage shares."""
    if count < 10:
        raise ValueError("the demo needs at least 10 customers (one of each case)")
    named = [
        DemoCustomer("acct_0001", 0, 1.10, "~110 % (overage), Australia: GST", country="AU"),
        DemoCustomer("acct_0002", 1, 0.85, "~85 %, US", country="US"),
        DemoCustomer("acct_0003", 0, 0.60, "~60 %"),
        DemoCustomer("acct_0004", 2, 0.70, "unlimited"),
        DemoCustomer("acct_0005", 1, 1.10, "~110 % (overage)"),
        DemoCustomer("acct_0006", 0, 0.85, "~85 %, German (de)", locale="de"),
        DemoCustomer("acct_0007", 1, 0.60, "~60 %"),
        DemoCustomer("acct_0008", 0, 0.50, "card declines at renewal, never updated (lapses)", declining_card=True),
        DemoCustomer("acct_0009", 1, 0.40, "card declines at renewal, then updated (recovers)", declining_card=True, recovers=True),
        DemoCustomer("acct_0010", 0, 0.45, "pays by invoice (Net 30)", pays_by_invoice=True),
    ]
    rng = random.Random(seed)
    shares = (0.25, 0.40, 0.55, 0.60, 0.70, 0.85, 1.10)
    weights = (3, 4, 4, 3, 3, 2, 1)
    rest = [
        DemoCustomer(f"acct_{n:04d}", rng.choice((0, 0, 1)), rng.choices(shares, weights)[0])
        for n in range(len(named) + 1, count + 1)
    ]
    return named + rest


class Progress:
    """Timestamped progress lines on the terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextlib.contextmanager
def demo_environment(home: Path, emulator_url: str) -> Iterator[Settings]:
    """The demo's settings: its home, the in-process emulator, no key, no SMTP; restored on exit."""
    saved = {name: os.environ.get(name) for name in DEMO_ENV_OVERRIDES}
    try:
        for name in DEMO_ENV_OVERRIDES:
            os.environ.pop(name, None)
        os.environ["AISYST_HOME"] = str(home)
        os.environ["STRIPE_API_BASE"] = emulator_url
        os.environ["AISYST_STRIPE_REQUESTS_PER_SECOND"] = str(STRIPE_RATE)
        settings = Settings.from_env()
        os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def demo_refusal(home: Path, environ: Mapping[str, str]) -> str | None:
    """Why the demo must not run in `home` with this environment, and how to run it safely; None
    when it may. Looks only, writes nothing."""
    demo_paths = {
        "AISYST_WAREHOUSE_URL": embedded_warehouse_url(home),
        "AISYST_LANDING_DIR": str(home / "landing"),
        "AISYST_OUTBOX_DIR": str(home / "outbox"),
    }
    unset = [name for name, own in demo_paths.items() if environ.get(name) and not _same_place(name, environ[name], own)]
    reasons = [
        f"{name} is set to somewhere other than the demo home: this shell looks set up for real data "
        "(the demo only uses the SQLite warehouse and folders in its own home)"
        for name in unset
    ]
    key = environ.get("STRIPE_SECRET_KEY", "")
    if key and not key.startswith(TEST_KEY_PREFIXES):
        unset.append("STRIPE_SECRET_KEY")
        reasons.append("STRIPE_SECRET_KEY is not a test key (sk_test_/rk_test_): this shell looks set up for production "
                       "(the demo only talks to its own Stripe emulator)")
    other_home = _not_a_demo_home(home)
    if other_home:
        reasons.append(other_home)
    if not reasons:
        return None
    command = ["aisyst", "demo"]
    if other_home:
        command += ["--home", str(Path(tempfile.gettempdir()) / "aisyst-demo")]
    if unset:
        command = ["env", *(f"-u {name}" for name in unset), *command]
    return "\n".join(
        ["aisyst demo refused, nothing was touched:", *(f"  - {reason}" for reason in reasons),
         f"Run it safely with:  {' '.join(command)}"]
    )


def _same_place(name: str, configured: str, demo_own: str) -> bool:
    if name == "AISYST_WAREHOUSE_URL":
        return configured == demo_own
    return Path(configured).expanduser().resolve() == Path(demo_own)


def _not_a_demo_home(home: Path) -> str | None:
    if not home.exists():
        return None
    if not home.is_dir():
        return f"{home} is not a folder"
    if (home / DEMO_MARKER).is_file():
        return None
    contents = sorted(path.name for path in home.iterdir())
    if not contents:
        return None
    shown = ", ".join(contents[:5]) + (" …" if len(contents) > 5 else "")
    return (
        f"{home} is not a demo home: it holds {shown} and no {DEMO_MARKER} (the demo wipes the warehouse, "
        "landing/ and outbox/ of its home, so it only runs in a home it made itself; if this is an earlier "
        "demo's home, delete it)"
    )


def claim_demo_home(home: Path) -> None:
    """Mark `home` (new or empty, `demo_refusal` made sure) as the demo's own."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = home / DEMO_MARKER
    if not marker.exists():
        marker.write_text(MARKER_TEXT)


def _emulator_port() -> int:
    """The emulator's default port when free (so that `aisyst dev` serves the kept world at the same
    address afterwards), else any."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_EMULATOR_PORT))
        except OSError:
            return 0
    return DEFAULT_EMULATOR_PORT


def fresh_demo_state(settings: Settings) -> None:
    """Wipe the previous demo world (warehouse file, landing, outbox); keep the Dagster instance."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{settings.home / 'warehouse.db'}{suffix}").unlink(missing_ok=True)
    for folder in (settings.landing_dir, settings.outbox_dir, settings.home / "staging"):
        shutil.rmtree(folder, ignore_errors=True)
    settings.ensure_dirs()


def run_demo(customers: int = 50, seed: int = 7, home: Path | None = None, out: TextIO | None = None, push: bool = False) -> int:
    """The whole demo; returns the exit status (0 when every step did what it should). Over-metering
    the reconciliation cannot repair (on purpose, see its findings) does not make it fail."""
    out = out or cast(TextIO, sys.stdout)  # typeshed: sys.stdout may be None (no console)
    home = (home or Path(os.environ.get("AISYST_HOME", "./.aisyst"))).expanduser().resolve()
    plans = plan_customers(customers, seed)
    refusal = demo_refusal(home, os.environ)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    home_settings = Settings.from_env({"AISYST_HOME": str(home)})
    running = running_deployment_url(home_settings)
    if running:
        print(f"aisyst demo: a Dagster deployment of this home answers at {running} (`aisyst dev`?). The demo starts "
              "its own webserver and daemon on a fresh world: stop that one (Ctrl-C), run the demo, then start it again.",
              file=sys.stderr)
        return 2
    claim_demo_home(home)
    with instance_lock(home_settings.dagster_home):  # before the wipe: no other command's deployment uses this home
        return _fresh_world_and_month(home, home_settings, plans, seed, out, push)


def _fresh_world_and_month(home: Path, home_settings: Settings, plans: Sequence[DemoCustomer], seed: int, out: TextIO, push: bool) -> int:
    from aisyst_pipelines.emulator import EmulatorServer

    progress = Progress(out)
    state_file = home_settings.emulator_state_file()
    state_file.unlink(missing_ok=True)  # a fresh world; the demo's is kept for `aisyst dev` afterwards
    emulator_server = EmulatorServer(port=_emulator_port(), state_file=state_file, revenue_recovery=DUNNING,
                                     webhook_retry_scale=0.01)
    with emulator_server as emulator, demo_environment(home, emulator.url) as settings:
        fresh_demo_state(settings)
        progress.step(f"Stripe emulator on {emulator.url}; demo home {settings.home} (fresh warehouse, landing, outbox)")
        log_path = settings.home / "demo-dagster.log"
        with log_path.open("a") as log, contextlib.redirect_stderr(log):
            status = _month(emulator, settings, plans, seed, progress, push)
        progress.say(f"\nDagster's logs of this demo (webserver, daemon, runs): {log_path}")
        progress.say(
            "Where to look: every demo run's runs, sensor ticks and asset history are in the instance, and the demo's\n"
            "Stripe world is kept: `./run dev` (aisyst dev) starts the UI, the daemon and the emulator on them\n"
            f"  (then http://127.0.0.1:3000); the warehouse is {settings.warehouse_url}, the e-mails are in {settings.outbox_dir}"
        )
        progress.step(f"demo finished in {progress.elapsed:.0f} s")
    return status


def _month(emulator: Any, settings: Settings, plans: Sequence[DemoCustomer], seed: int, progress: Progress, push: bool) -> int:
    receiver = _receiver(emulator, settings, progress) if push else None
    try:
        return _play_month(emulator, settings, plans, seed, progress, receiver)
    finally:
        if receiver is not None:
            receiver.stop()


def _receiver(emulator: Any, settings: Settings, progress: Progress) -> WebhookReceiver:
    from aisyst_pipelines.emulator.testing import RunningEmulator

    receiver = WebhookReceiver(RunningEmulator(emulator).client(), settings)
    receiver.wait_until_up()
    progress.step(f"push mode: webhook endpoint created; `aisyst webhook` receives the signed events at {receiver.url}")
    return receiver


def _play_month(
    emulator: Any, settings: Settings, plans: Sequence[DemoCustomer], seed: int, progress: Progress, receiver: WebhookReceiver | None
) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from aisyst_pipelines.deployment import local_deployment
    from aisyst_pipelines.warehouse import Warehouse

    # The month is set up in the background while the local Dagster deployment starts (it is entered
    # in this thread, which outlives it: its processes stop with this one); from then on Dagster does
    # the work as in production: the daemon ticks the sensors, which launch the runs, and the other
    # jobs are submitted to the run queue as the UI's Launch button does.
    # The demo's own embedded warehouse is fresh: no separate `aisyst db upgrade`. Before the
    # deployment starts: Dagster migrates its SQLite instance with Alembic too, whose `op` is one per process.
    Warehouse(settings.warehouse_url).upgrade()
    with ThreadPoolExecutor(max_workers=1) as background:
        setting_up = background.submit(_set_up_month, emulator, settings, plans, seed, progress)
        with local_deployment(settings, environ={"AISYST_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS)},
                              log_path=settings.home / "demo-dagster.log") as dagster:
            client, clock, stripe, signups, calls = setting_up.result()
            return _run_month(dagster, client, clock, stripe, signups, calls, settings, seed, progress, emulator, receiver)


def _set_up_month(
    emulator: Any, settings: Settings, plans: Sequence[DemoCustomer], seed: int, progress: Progress
) -> tuple[Any, Any, Any, list[Signup], pd.DataFrame]:
    """The tier catalog, the sign-ups on one test clock, and the month's calls metered by the voice
    server while the clock runs to RECONCILE_AT."""
    from aisyst_pipelines.emulator.testing import RunningEmulator
    from resources.stripe import StripeResource

    catalog = load_tier_catalog(settings.tiers_file)
    stripe = StripeResource.from_settings(settings)
    ids = stripe.catalog.ensure(catalog)
    progress.step(f"tier catalog bootstrapped: {ids.created_count} objects created (products, prices, meter, tax rate)")

    # Sign-ups happen in the customers' web app, not in the pipelines: they use the emulator's own
    # client, as the tests' billing worlds do.
    client = RunningEmulator(emulator).client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(MONTH_START.timestamp()), "name": "aisyst demo"})
    signups = _sign_up(client, clock.id, catalog, [price.id for price in ids.prices], plans)
    progress.step(f"{len(signups)} customers subscribed on test clock {clock.id} at {MONTH_START:%Y-%m-%d %H:%M} UTC")

    calls = simulate_calls(
        [s.plan.account_code for s in signups] + [UNMAPPED_ACCOUNT], days=CALL_DAYS, seed=seed,
        start=MONTH_START.date(), target_minutes={s.plan.account_code: s.target_minutes for s in signups} | {UNMAPPED_ACCOUNT: 240},
    )
    sent, plan = _voice_server(client, clock.id, stripe, calls, signups, seed)
    progress.step(
        f"voice server: {len(calls):,} calls, {sent:,} meter events sent while the clock ran to {RECONCILE_AT:%Y-%m-%d %H:%M} "
        f"({len(plan.dropped)} dropped, {len(plan.duplicated)} sent twice)"
    )
    return client, clock, stripe, signups, calls


def _run_month(
    dagster: Any, client: Any, clock: Any, stripe: Any, signups: list[Signup], calls: pd.DataFrame, settings: Settings,
    seed: int, progress: Progress, emulator: Any, receiver: WebhookReceiver | None,
) -> int:
    """The month as Dagster works it: mirror, ingestion by the landing sensor, three reconciliation
    nights, the alerts, the renewal annotated by the draft-invoice sensor's runs, Stripe's events and
    the dunning after it; prints each part."""
    from aisyst_pipelines.services.ingestion import shown_path
    from aisyst_pipelines.warehouse import Warehouse
    from jobs import ingestion, reconciliation, usage_alerts
    from jobs import invoice_annotation as annotation

    warehouse = Warehouse(settings.warehouse_url)
    progress.step(f"Dagster webserver and daemon up on {dagster.url} (sensors tick every {SENSOR_INTERVAL_SECONDS} s)")
    (branding,) = dagster.wait_for_runs([dagster.submit(annotation.invoice_branding_job.name)])
    progress.step(f"Stripe mirror and invoice brand fields: run {branding.run_id} {branding.status.value}")

    landing_started = time.time()
    landed = _land_cdr_files(calls, settings, seed)
    progress.step(f"{len(landed)} CDR files landed in {settings.landing_dir}")
    outcomes = ingestion.landing_outcomes(dagster, since=landing_started, after=time.time())
    for outcome in outcomes:
        progress.say(f"    {outcome.status:>7}  {shown_path(outcome.file, settings.landing_dir)}: {outcome.detail}")
    progress.step(f"cdr_files_sensor ticked: {sum(o.status == 'loaded' for o in outcomes)} file run(s) of {ingestion.JOB_NAME}")
    _print_minutes(progress, warehouse, signups)

    # Two earlier nights as the nightly schedule runs them (their partitions, the configured
    # repair: off), so the asset's history shows a trend; then the night before the renewal, repairing.
    lag = settings.reconciliation_settle_lag_minutes
    night = reconciliation.partition_key(RECONCILE_AT, lag)
    earlier = [(datetime.fromisoformat(night) - timedelta(days=days)).strftime("%Y-%m-%d") for days in (2, 1)]
    nights = dagster.wait_for_runs([dagster.submit(reconciliation.JOB_NAME, tags={"dagster/partition": key}) for key in earlier])
    progress.step("nightly reconciliation of " + ", ".join(
        f"{key} (run {run.run_id[:8]} {run.status.value})" for key, run in zip(earlier, nights)))
    (recon,) = dagster.wait_for_runs([dagster.submit(
        reconciliation.JOB_NAME, run_config=reconciliation.one_off_run_config(settings, repair=True, as_of=RECONCILE_AT),
        tags={"dagster/partition": night})])
    progress.step(f"reconciliation at {RECONCILE_AT:%Y-%m-%d %H:%M} with repair: run {recon.run_id} {recon.status.value}")
    _print_reconciliation(progress, warehouse, dagster, recon.run_id, signups)

    before = set(settings.outbox_dir.glob("*.eml"))
    (alerts,) = dagster.wait_for_runs([dagster.submit(
        usage_alerts.JOB_NAME, run_config=usage_alerts.run_config(RECONCILE_AT),
        tags={"dagster/partition": usage_alerts.partition_key(RECONCILE_AT)})])
    progress.step(f"usage alerts at {RECONCILE_AT:%Y-%m-%d %H:%M}: run {alerts.run_id} {alerts.status.value}")
    mails = sorted(set(settings.outbox_dir.glob("*.eml")) - before)
    usage_mails = [path for path in mails if "usage-alert" in path.name or "usage alerts" in _subject(path)]
    _print_alerts(progress, warehouse, usage_mails, signups)
    for path in sorted(set(mails) - set(usage_mails)):  # what the daemon's ops sensors sent meanwhile
        progress.say(f"  ops e-mail: {_subject(path)}  →  {path}")

    renewed_at = time.time()
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((RENEWAL + timedelta(minutes=1)).timestamp())})
    progress.step(f"test clock advanced past the renewal ({RENEWAL:%Y-%m-%d %H:%M} UTC): draft renewal invoices created")
    ticks = dagster.wait_for_ticks(annotation.SENSOR_NAME, since=renewed_at)
    annotated = annotation.annotation_outcomes(dagster, [run_id for tick in ticks for run_id in tick.run_ids])
    for run in annotated:
        counts = ", ".join(f"{key} {value}" for key, value in run.counts.items() if value) or "run failed"
        progress.say(f"    run {run.run_id}: {run.invoices} invoice(s): {counts}")
    progress.step(f"draft_invoice_sensor ticked: {len(annotated)} run(s) of {annotation.annotate_draft_invoices.name}")

    finalized_at = time.time()
    before = set(settings.outbox_dir.glob("*.eml"))
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((RENEWAL + timedelta(hours=1, minutes=2)).timestamp())})
    progress.step("test clock advanced one hour: invoices finalized and paid (two cards decline)")
    # The late calls land now; the landing sensor loads them while the events sensor applies the hour.
    late_landing = time.time()
    late_file = _land_late_calls(stripe, settings, signups, seed)
    late_landed = time.time()
    progress.step(f"late CDR file landed: {late_file.relative_to(settings.landing_dir)} — {LATE_MINUTES} minutes of "
                  f"{LATE_ACCOUNT}'s calls of {LATE_CALLS_DAY:%d %B}, buffered by a voice node (their meter events sent with it)")
    _print_events_applied(progress, dagster, settings, finalized_at, before, receiver)
    _print_invoices(progress, client, stripe, signups)
    _print_net_30(progress, warehouse, signups)
    late_outcomes = ingestion.landing_outcomes(dagster, since=late_landing, after=late_landed)
    for outcome in late_outcomes:
        progress.step(f"cdr_files_sensor: {outcome.status} {shown_path(outcome.file, settings.landing_dir)}: {outcome.detail}")
    (audit,) = dagster.wait_for_runs([dagster.submit(
        annotation.invoice_audit_job.name, run_config={"ops": {"invoice_audits": {"config": {"look_back_days": AUDIT_LOOK_BACK_DAYS}}}})])
    _print_audit(progress, dagster, audit)
    _print_late_minutes(progress, warehouse, signups)

    # Dunning: one declined customer updates the card and is charged at the next retry; the other
    # does not, and the subscription is canceled when the retries run out.
    for signup in signups:
        if signup.plan.recovers:
            client.v1.payment_methods.attach("pm_card_visa", {"customer": signup.customer_id})
            client.v1.customers.update(signup.customer_id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    retried_at = time.time()
    before = set(settings.outbox_dir.glob("*.eml"))
    after_retries = RENEWAL + timedelta(days=DUNNING.retry_days, hours=2)
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int(after_retries.timestamp())})
    progress.step(f"test clock advanced to {after_retries:%Y-%m-%d %H:%M} UTC: Smart Retries "
                  f"({DUNNING.retries} within {DUNNING.retry_days} days) — one card was updated, one was not")
    _print_events_applied(progress, dagster, settings, retried_at, before, receiver)
    _print_dunning(progress, warehouse, signups)
    if receiver is not None:
        progress.say(receiver.summary(emulator, warehouse))
    runs = [branding, *nights, recon, alerts, audit]
    # The audit's check fails on purpose (late CDRs, late duplicates): a failed check is a finding, not a failed run.
    return 0 if all((*(r.status.value == "SUCCESS" for r in runs), *(o.status != "failed" for o in (*outcomes, *late_outcomes)),
                     *(run.success for run in annotated))) else 1


class WebhookReceiver:
    """Push mode (`aisyst demo --push`): a webhook endpoint in the emulator delivering every watched
    event, signed, to `aisyst webhook` — a real receiver process, as `stripe listen --forward-to` gives
    in development — while the daemon's events sensor still polls (each event is applied once: the
    ledger says by which path)."""

    def __init__(self, client: Any, settings: Settings) -> None:
        import subprocess

        from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES
        from aisyst_pipelines.deployment import free_port
        from aisyst_pipelines.webhook import WEBHOOK_PATH

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        endpoint = client.v1.webhook_endpoints.create({"url": f"{self.url}{WEBHOOK_PATH}", "enabled_events": list(WATCHED_EVENT_TYPES)})
        env = {**os.environ, "STRIPE_WEBHOOK_SECRET": endpoint.secret}
        self.log = (settings.home / "demo-webhook.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "aisyst_pipelines.cli", "webhook", "--port", str(port)],
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until_up(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"aisyst webhook did not come up; see {self.log.name}") from None
                time.sleep(0.2)

    def summary(self, emulator: Any, warehouse: Any, timeout: float = 60) -> str:
        from aisyst_pipelines.warehouse.stripe_events_store import applied_by_source

        deadline = time.monotonic() + timeout
        while not emulator.webhooks.idle() and time.monotonic() < deadline:
            time.sleep(0.2)
        by_source = applied_by_source(warehouse)
        return (f"push mode: the emulator's webhook endpoint delivered to `aisyst webhook` at {self.url}; events applied "
                + ", ".join(f"by {source}: {count}" for source, count in sorted(by_source.items())))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def _events_line(applied: Mapping[str, int], receiver: WebhookReceiver | None) -> str:
    line = f"stripe_events_sensor ticked: {applied['events_applied']} events applied, {applied['ops_alerts_sent']} ops alert(s) sent"
    return line + (" (push mode: the webhook receiver applies most of them first)" if receiver else "")


def _print_net_30(progress: Progress, warehouse: Any, signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.stripe_events_store import invoices_paid_by_invoice

    codes = {s.customer_id: s.plan.account_code for s in signups if s.plan.pays_by_invoice}
    progress.say("\nPaid by invoice (Net 30; stripe_invoices, kept by the events sensor's overdue watch):")
    for invoice in invoices_paid_by_invoice(warehouse, list(codes)):
        late = f"{invoice.days_overdue} day(s) overdue" if invoice.days_overdue else "not yet due"
        due = f"{invoice.due_date:%Y-%m-%d}" if invoice.due_date else "-"
        progress.say(f"  {codes[invoice.customer_id]:<10} {invoice.number or invoice.invoice_id:<16} {invoice.status:<6} "
                     f"due {due}  {format_money(invoice.amount_remaining or 0, invoice.currency or 'usd')} open, {late}")
    progress.say("  (the overdue watch counts by today's date: the demo's invoices of autumn 2026 may long be due)")
    progress.say()


def _print_audit(progress: Progress, dagster: Any, run: Any) -> None:
    """What the audit of the final renewal invoices found (usage line vs calls vs meter)."""
    audited = next((m for m in dagster.run_materializations(run.run_id) if m.asset_key.path == ["invoice_audits"]), None)
    if audited is None:
        progress.step(f"invoice audit: run {run.run_id} {run.status.value}")
        return
    progress.step(f"audit of the final renewal invoices (invoice_audit_job, run {run.run_id[:8]}): "
                  f"{audited.metadata['audited'].value} audited, {audited.metadata['disagreeing'].value} disagree")
    for check in dagster.run_check_evaluations(run.run_id):
        causes = check.metadata.get("causes")
        progress.say(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}"
                     + (f" — causes by invoice: {causes.value}" if causes is not None and causes.value else ""))


def _print_events_applied(
    progress: Progress, dagster: Any, settings: Settings, since: float, before: set[Path], receiver: WebhookReceiver | None
) -> None:
    """What the daemon's events sensor applied since `since`, and the ops alerts mailed since the outbox held `before`."""
    from jobs import stripe_events

    progress.step(_events_line(stripe_events.events_applied_since(dagster, since), receiver))
    for path in sorted(set(settings.outbox_dir.glob("*.eml")) - before):
        progress.say(f"    ops alert: {_subject(path)}  →  {path}")


def _print_late_minutes(progress: Progress, warehouse: Any, signups: Sequence[Signup]) -> None:
    """The late minutes' ledger (invoice_audits): what the next renewal drafts will carry, as their line reads."""
    from aisyst_pipelines.services.invoice_audit import pending_late_minutes

    for pending in pending_late_minutes(warehouse, [s.customer_id for s in signups]):
        progress.say(f"  late_cdr: {pending.account_code}  {pending.late.late_minutes} minute(s) reported too late for "
                     f"{pending.late.from_invoice_id} (final) — to be carried onto the next renewal draft as '{pending.line_text}'")


def _print_dunning(progress: Progress, warehouse: Any, signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.stripe_sync_store import subscriptions_for_usage

    statuses = {row.subscription_id: row.status for row in subscriptions_for_usage(warehouse, exclude_statuses=())}
    progress.say("\nFailed payments to the end (stripe_subscriptions, mirrored from Stripe's events):")
    for signup in signups:
        if signup.plan.declining_card:
            progress.say(f"  {signup.plan.account_code:<10} {signup.subscription_id:<32} {statuses.get(signup.subscription_id, '?'):<10} "
                         f"{signup.plan.note}")
    progress.say()


def _sign_up(client: Any, clock_id: str, catalog: TierCatalog, prices: list[str], plans: Sequence[DemoCustomer]) -> list[Signup]:
    signups = []
    for plan in plans:
        tier = catalog.tiers[plan.tier_index]
        included = tier.included_minutes
        customer = client.v1.customers.create({
            "name": f"Demo customer {plan.account_code[-4:]}",
            "email": f"{plan.account_code.replace('_', '.')}@customers.example",
            "metadata": {"aisyst_account_code": plan.account_code},
            "test_clock": clock_id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
            **({"address": {"country": plan.country}} if plan.country else {}),
            **({"preferred_locales": [plan.locale]} if plan.locale else {}),
        })
        net_30: dict[str, Any] = {"collection_method": "send_invoice", "days_until_due": 30} if plan.pays_by_invoice else {}
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[plan.tier_index]}], **net_30})
        if plan.declining_card:  # paid the first month; the card on file now declines every charge
            client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
            client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}})
        target = round((included or 1000) * plan.usage_share)
        signups.append(Signup(plan, customer.id, subscription.id, included, target))
    return signups


def _voice_server(client: Any, clock_id: str, stripe: Any, calls: pd.DataFrame, signups: Sequence[Signup], seed: int) -> tuple[int, Any]:
    """The voice server's meter events for the month (a few dropped, a few late duplicates), sent
    through StripeResource as the clock moves; the clock ends at RECONCILE_AT."""
    from concurrent.futures import ThreadPoolExecutor

    metered = _metered_calls(calls, signups)
    # Faults on calls that end early enough for their duplicate to be sent before the reconciliation.
    early = sorted(c.call_id for c in metered if c.ended_at < RECONCILE_AT - DUPLICATE_AFTER - timedelta(days=1))
    rng = random.Random(seed)
    picked = rng.sample(early, min(len(early), 10))
    faults = VoiceServerFaults(drop=frozenset(picked[:6]), duplicate=frozenset(picked[6:]), duplicate_after=DUPLICATE_AFTER)
    plan = plan_meter_events(metered, faults)
    pending: list[MeterEventSend] = []

    def flush() -> None:  # the events due by the clock's time, several customers at once
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda item: _send_meter_event(stripe, item), pending))
        pending.clear()

    clock = [MONTH_START]

    def advance_to(moment: datetime) -> None:
        flush()
        if moment > clock[0]:
            client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": int(moment.timestamp())})
            clock[0] = moment

    due = [send for send in plan.sends if send.send_at <= RECONCILE_AT]
    sent = replay(due, pending.append, advance_to, step=METER_STEP)
    advance_to(RECONCILE_AT)
    return sent, plan


def _metered_calls(calls: pd.DataFrame, signups: Sequence[Signup]) -> list[MeteredCall]:
    """The calls the voice server sends a meter event for: answered, of a Stripe customer."""
    customers = {s.plan.account_code: s.customer_id for s in signups}
    minutes = rate_calls(calls["disposition"], calls["billable_seconds"])
    return [
        MeteredCall(call_id, customers[account_code], ended_at.to_pydatetime(), int(m))
        for call_id, account_code, ended_at, m in zip(calls["call_id"], calls["account_code"], calls["ended_at"], minutes, strict=True)
        if account_code in customers and m > 0
    ]


def _send_meter_event(stripe: Any, item: MeterEventSend) -> None:
    stripe.meters.create_event(item.customer_id, item.value, item.timestamp, item.identifier, idempotency_key=item.delivery_key)


def _land_cdr_files(calls: pd.DataFrame, settings: Settings, seed: int) -> list[Path]:
    """The month's CDRs as the three sources deliver them: accounts dealt over the formats."""
    codes = sorted(calls["account_code"].unique())
    landed = []
    for index, file_format in enumerate(CDR_FORMATS):
        mine = set(codes[index :: len(CDR_FORMATS)])
        extension = "csv" if file_format != "canonical_jsonl" else "jsonl"
        name = Path(file_format) / f"{MONTH_START:%Y-%m}-calls.{extension}"
        landed.append(_land(calls[calls["account_code"].isin(mine)], name, file_format, settings, seed))
    return landed


def _land(calls: pd.DataFrame, name: Path, file_format: str, settings: Settings, seed: int) -> Path:
    """One CDR file, written beside the landing folder and moved in whole, as an uploader should (the
    daemon's sensor may tick at any moment); its path in the landing folder."""
    staged, landed = settings.home / "staging" / name, settings.landing_dir / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    written = write_calls(calls, staged, file_format, asterisk_timezone=settings.asterisk_timezone, seed=seed)
    landed.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written.path, landed)
    return landed


def _land_late_calls(stripe: Any, settings: Settings, signups: Sequence[Signup], seed: int) -> Path:
    """A voice node cut off since LATE_CALLS_DAY delivers its buffered calls of LATE_ACCOUNT once the
    renewal invoices are final: their meter events (stamped when the calls ended, within Stripe's 35
    days) and one canonical CDR file of LATE_MINUTES minutes. The meter has them, the invoice does not:
    the audit names the difference `late_cdr` alone."""
    # A random stream of its own (seed + 1): none of the month's call ids can come back.
    calls = simulate_calls([LATE_ACCOUNT], days=1, seed=seed + 1, start=LATE_CALLS_DAY, target_minutes={LATE_ACCOUNT: LATE_MINUTES})
    for item in plan_meter_events(_metered_calls(calls, signups)).sends:
        _send_meter_event(stripe, item)
    return _land(calls, Path("canonical_csv") / f"{LATE_CALLS_DAY:%Y-%m-%d}-late-calls.csv", "canonical_csv", settings, seed)


def _print_minutes(progress: Progress, warehouse: Any, signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.cdr_store import minutes_per_account

    by_code = {s.plan.account_code: s for s in signups}
    progress.say("\nMinutes per customer (usage_daily, September):")
    progress.say(f"  {'account':<10} {'customer':<20} {'tier':<7} {'calls':>6} {'minutes':>8} {'included':>9} {'used':>6}  note")
    for row in minutes_per_account(warehouse):
        signup = by_code.get(row.account_code)
        if signup is None:
            progress.say(f"  {row.account_code:<10} {'(unmapped)':<20} {'-':<7} {row.calls:>6} {row.billable_minutes:>8} "
                         f"{'-':>9} {'-':>6}  no Stripe customer has this account code")
            continue
        included = signup.included_minutes
        used = f"{100 * row.billable_minutes / included:.0f} %" if included else "-"
        progress.say(f"  {row.account_code:<10} {row.customer_id or '':<20} {signup.plan.tier_index + 1:<7} {row.calls:>6} "
                     f"{row.billable_minutes:>8} {included if included else 'unlim.':>9} {used:>6}  {signup.plan.note}")
    progress.say()


def _print_reconciliation(progress: Progress, warehouse: Any, dagster: Any, run_id: str, signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.reconciliation_store import run_results

    codes = {s.customer_id: s.plan.account_code for s in signups}
    rows = run_results(warehouse, run_id)
    drifting = [r for r in rows if r["drift_minutes"]]  # days do not cancel out: a "match" may hide two
    progress.say(f"\nReconciliation findings (meter_reconciliation, run {run_id}): {len(rows)} customer-periods, "
                 f"{len(rows) - len(drifting)} without drift, {len(drifting)} with drifting days")
    progress.say(f"  {'account':<10} {'status':<14} {'cdr':>6} {'stripe':>7} {'delta':>6} {'drift':>6} {'repaired':>8} {'left':>5}  cause")
    for row in sorted(drifting, key=lambda r: codes.get(r["customer_id"], "")):
        progress.say(f"  {codes.get(row['customer_id'], row['customer_id']):<10} {row['status']:<14} {row['cdr_minutes']:>6} "
                     f"{row['stripe_minutes']:>7} {row['delta_minutes']:>+6} {row['drift_minutes']:>6} {row['repaired_minutes']:>8} "
                     f"{row['unrepaired_drift_minutes']:>5}  {row['cause'] or 'unexplained'}")
    for check in dagster.run_check_evaluations(run_id):
        progress.say(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'} — {check.description}")
    progress.say("  Under-metered days (the dropped meter events) were repaired with corrective meter events; over-metered\n"
                 "  days (duplicates sent after Stripe's 24 h window) cannot be taken back by a meter event: they are left\n"
                 "  for a person to decide (cancel or credit note, docs/reconciliation.md), so the check fails on purpose.")
    progress.say()


def _print_alerts(progress: Progress, warehouse: Any, mails: Sequence[Path], signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.usage_alerts_store import alerts_in_periods

    codes = {s.customer_id: s.plan.account_code for s in signups}
    rows = alerts_in_periods(warehouse, [(s.customer_id, MONTH_START) for s in signups])
    progress.say(f"\nUsage alerts (usage_alerts): {len(rows)} alert(s), {len(mails)} e-mail(s) in the outbox")
    for row in sorted(rows, key=lambda r: (codes.get(r.customer_id, ""), r.threshold_pct)):
        progress.say(f"  {codes.get(row.customer_id, row.customer_id):<10} {row.threshold_pct:>3} %  "
                     f"{row.minutes_used} of {row.included_minutes} minutes ({row.usage_pct:.0f} %)  {row.status}")
    for path in mails:
        progress.say(f"  e-mail: {_subject(path)}  →  {path}")
    progress.say()


def _subject(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return f"to {message['To']}: {str(message['Subject']).strip()}"


def _print_invoices(progress: Progress, client: Any, stripe: Any, signups: Sequence[Signup]) -> None:
    """Two renewal invoices as the customer reads them (services/invoice_printout.py): an Australian
    Tier 1 customer over its minutes, with GST, and a US Tier 2 customer within them."""
    from aisyst_pipelines.services.invoice_printout import print_invoice

    shown = [s for s in signups if s.plan.account_code in ("acct_0001", "acct_0002")]
    for signup in shown:
        invoices = client.v1.invoices.list({"customer": signup.customer_id, "limit": 10}).data
        invoice = next((i for i in invoices if i.billing_reason == "subscription_cycle"), None)
        if invoice is None:
            progress.say(f"\n(no renewal invoice for {signup.plan.account_code})")
            continue
        progress.say("\n" + print_invoice(stripe.invoices, invoice.id))
        progress.say(f"  as the customer sees it: {invoice.hosted_invoice_url}  (PDF: {invoice.invoice_pdf})")
