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
   lets the Stripe events sensor apply what happened;
6. prints minutes per customer, the reconciliation findings, the alerts with their outbox files,
   two annotated invoices as the customer reads them, and where to look in `dagster dev`.

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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
import pandas as pd

from aisyst_pipelines.billing.tiers import TierCatalog, load_tier_catalog
from aisyst_pipelines.cdr.rating import rate_calls
from aisyst_pipelines.settings import Settings, embedded_warehouse_url
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
STRIPE_RATE = 400.0  # requests per second against the local emulator (Stripe's own limit: 25/s test)
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
    if count < 8:
        raise ValueError("the demo needs at least 8 customers (one of each case)")
    named = [
        DemoCustomer("acct_0001", 0, 1.10, "~110 % (overage), Australia: GST", country="AU"),
        DemoCustomer("acct_0002", 1, 0.85, "~85 %, US", country="US"),
        DemoCustomer("acct_0003", 0, 0.60, "~60 %"),
        DemoCustomer("acct_0004", 2, 0.70, "unlimited"),
        DemoCustomer("acct_0005", 1, 1.10, "~110 % (overage)"),
        DemoCustomer("acct_0006", 0, 0.85, "~85 %"),
        DemoCustomer("acct_0007", 1, 0.60, "~60 %"),
        DemoCustomer("acct_0008", 0, 0.50, "card declines at renewal", declining_card=True),
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


def fresh_demo_state(settings: Settings) -> None:
    """Wipe the previous demo world (warehouse file, landing, outbox); keep the Dagster instance."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{settings.home / 'warehouse.db'}{suffix}").unlink(missing_ok=True)
    for folder in (settings.landing_dir, settings.outbox_dir):
        shutil.rmtree(folder, ignore_errors=True)
    settings.ensure_dirs()


def run_demo(customers: int = 50, seed: int = 7, home: Path | None = None, out: TextIO | None = None) -> int:
    """The whole demo; returns the exit status (0 when every step did what it should). Over-metering
    the reconciliation cannot repair (on purpose, see its findings) does not make it fail."""
    out = out or sys.stdout
    from aisyst_pipelines.emulator import EmulatorServer

    home = (home or Path(os.environ.get("AISYST_HOME", "./.aisyst"))).expanduser().resolve()
    plans = plan_customers(customers, seed)
    refusal = demo_refusal(home, os.environ)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    claim_demo_home(home)
    progress = Progress(out)
    with EmulatorServer(port=0) as emulator, demo_environment(home, emulator.url) as settings:
        fresh_demo_state(settings)
        progress.step(f"Stripe emulator on {emulator.url}; demo home {settings.home} (fresh warehouse, landing, outbox)")
        log_path = settings.home / "demo-dagster.log"
        with log_path.open("a") as log, contextlib.redirect_stderr(log):
            status = _month(emulator, settings, plans, seed, progress)
        progress.say(f"\nDagster's run logs of this demo: {log_path}")
        progress.say(
            "Where to look: the runs, the sensor ticks and the asset history of every demo run are in the instance\n"
            f"  DAGSTER_HOME={settings.dagster_home} ./run dagster dev -w workspace.yaml\n"
            f"  (then http://127.0.0.1:3000); the warehouse is {settings.warehouse_url}, the e-mails are in {settings.outbox_dir}"
        )
        progress.step(f"demo finished in {progress.elapsed:.0f} s")
    return status


def _month(emulator: Any, settings: Settings, plans: Sequence[DemoCustomer], seed: int, progress: Progress) -> int:
    from aisyst_pipelines.definitions import defs
    from aisyst_pipelines.emulator.testing import RunningEmulator
    from aisyst_pipelines.warehouse import Warehouse
    from aisyst_pipelines.local_instance import local_instance
    from aisyst_pipelines.services.ingestion import shown_path
    from jobs import ingestion, reconciliation, stripe_events, usage_alerts
    from jobs import invoice_annotation as annotate_invoices
    from jobs.ticks import record_sensor_tick
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

    definitions = defs()
    warehouse = Warehouse(settings.warehouse_url)
    warehouse.upgrade()  # the demo's own embedded warehouse, fresh: no separate `aisyst db upgrade`
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with local_instance(settings) as instance:
        instance.run_storage.set_cursor_values(
            {key: "" for key in (ingestion.CLI_CURSOR_KEY, annotate_invoices.CLI_CURSOR_KEY, stripe_events.CLI_CURSOR_KEY)}
        )
        branding = definitions.resolve_job_def(annotate_invoices.invoice_branding_job.name)
        result = branding.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False)
        progress.step(f"Stripe mirror and invoice brand fields: run {result.run_id} {'ok' if result.success else 'FAILED'}")

        calls = simulate_calls(
            [s.plan.account_code for s in signups] + [UNMAPPED_ACCOUNT], days=CALL_DAYS, seed=seed,
            start=MONTH_START.date(), target_minutes={s.plan.account_code: s.target_minutes for s in signups} | {UNMAPPED_ACCOUNT: 240},
        )
        sent, plan = _voice_server(client, clock.id, stripe, calls, signups, seed)
        progress.step(
            f"voice server: {len(calls):,} calls, {sent:,} meter events sent while the clock ran to {RECONCILE_AT:%Y-%m-%d %H:%M} "
            f"({len(plan.dropped)} dropped, {len(plan.duplicated)} sent twice)"
        )
        landed = _land_cdr_files(calls, settings, seed)
        progress.step(f"{len(landed)} CDR files landed in {settings.landing_dir}")

        outcomes = ingestion.ingest_once(instance, definitions)
        record_sensor_tick(instance, ingestion.SENSOR_NAME, run_ids=[o.run_id for o in outcomes if o.run_id],
                           skip_reason="no new CDR files")
        for outcome in outcomes:
            progress.say(f"    {outcome.status:>7}  {shown_path(outcome.file, settings.landing_dir)}: {outcome.detail}")
        progress.step(f"ingested: {sum(o.status == 'loaded' for o in outcomes)} file run(s) of {ingestion.JOB_NAME}")
        _print_minutes(progress, warehouse, signups)

        recon = reconciliation.reconcile_once(instance, definitions, settings, repair=True, as_of=RECONCILE_AT)
        progress.step(f"reconciliation at {RECONCILE_AT:%Y-%m-%d %H:%M} with repair: run {recon.run_id} {'ok' if recon.success else 'FAILED'}")
        _print_reconciliation(progress, warehouse, recon, signups)

        before = set(settings.outbox_dir.glob("*.eml"))
        alerts = definitions.resolve_job_def(usage_alerts.JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={**quiet, "ops": {"usage_alerts": {"config": {"as_of": RECONCILE_AT.isoformat()}}}},
        )
        progress.step(f"usage alerts at {RECONCILE_AT:%Y-%m-%d %H:%M}: run {alerts.run_id} {'ok' if alerts.success else 'FAILED'}")
        _print_alerts(progress, warehouse, sorted(set(settings.outbox_dir.glob("*.eml")) - before), signups)

        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((RENEWAL + timedelta(minutes=1)).timestamp())})
        progress.step(f"test clock advanced past the renewal ({RENEWAL:%Y-%m-%d %H:%M} UTC): draft renewal invoices created")
        annotated = annotate_invoices.annotate_once(instance, definitions)
        record_sensor_tick(instance, annotate_invoices.draft_invoice_sensor.name, run_ids=[run.run_id for run in annotated],
                           skip_reason="no renewal drafts to annotate")
        for run in annotated:
            counts = ", ".join(f"{key} {value}" for key, value in run.counts.items() if value) or run.skipped_reason or "run failed"
            progress.say(f"    run {run.run_id}: {run.invoices} invoice(s): {counts}")
        progress.step(f"draft_invoice_sensor tick + {len(annotated)} run(s) of {annotate_invoices.annotate_draft_invoices.name}")

        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((RENEWAL + timedelta(hours=1, minutes=2)).timestamp())})
        progress.step("test clock advanced one hour: invoices finalized and paid (one card declines)")
        before = set(settings.outbox_dir.glob("*.eml"))
        tick = stripe_events.events_once(instance, definitions)
        record_sensor_tick(instance, stripe_events.stripe_events_sensor.name, cursor=tick.cursor,
                           skip_reason=None if tick.asset_events else tick.skip_message)
        applied = tick.asset_events[0].metadata if tick.asset_events else {}
        progress.step(
            "stripe_events_sensor tick: "
            + (f"{applied['events_applied'].value} events applied, {applied['ops_alerts_sent'].value} ops alert(s) sent"
               if applied else (tick.skip_message or "nothing new"))
        )
        for path in sorted(set(settings.outbox_dir.glob("*.eml")) - before):
            progress.say(f"    ops alert: {_subject(path)}  →  {path}")
        _print_invoices(progress, client, stripe, signups)
        return 0 if all((result.success, recon.success, alerts.success, *(o.status != "failed" for o in outcomes),
                         *(run.success for run in annotated))) else 1


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
        })
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[plan.tier_index]}]})
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

    customers = {s.plan.account_code: s.customer_id for s in signups}
    minutes = rate_calls(calls["disposition"], calls["billable_seconds"])
    metered = [
        MeteredCall(row.call_id, customers[row.account_code], row.ended_at.to_pydatetime(), int(m))
        for row, m in zip(calls.itertuples(index=False), minutes, strict=True)
        if row.account_code in customers and m > 0
    ]
    # Faults on calls that end early enough for their duplicate to be sent before the reconciliation.
    early = sorted(c.call_id for c in metered if c.ended_at < RECONCILE_AT - DUPLICATE_AFTER - timedelta(days=1))
    rng = random.Random(seed)
    picked = rng.sample(early, min(len(early), 10))
    faults = VoiceServerFaults(drop=frozenset(picked[:6]), duplicate=frozenset(picked[6:]), duplicate_after=DUPLICATE_AFTER)
    plan = plan_meter_events(metered, faults)
    pending: list[MeterEventSend] = []

    def deliver(item: MeterEventSend) -> None:
        stripe.meters.create_event(item.customer_id, item.value, item.timestamp, item.identifier, idempotency_key=item.delivery_key)

    def flush() -> None:  # the events due by the clock's time, several customers at once
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(deliver, pending))
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


def _land_cdr_files(calls: pd.DataFrame, settings: Settings, seed: int) -> list[Path]:
    """The month's CDRs as the three sources deliver them: accounts dealt over the formats."""
    codes = sorted(calls["account_code"].unique())
    landed = []
    for index, file_format in enumerate(CDR_FORMATS):
        mine = set(codes[index :: len(CDR_FORMATS)])
        frame = calls[calls["account_code"].isin(mine)]
        extension = "csv" if file_format != "canonical_jsonl" else "jsonl"
        path = settings.landing_dir / file_format / f"{MONTH_START:%Y-%m}-calls.{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        written = write_calls(frame, path, file_format, asterisk_timezone=settings.asterisk_timezone, seed=seed)
        landed.append(written.path)
    return landed


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


def _print_reconciliation(progress: Progress, warehouse: Any, result: dg.ExecuteInProcessResult, signups: Sequence[Signup]) -> None:
    from aisyst_pipelines.warehouse.reconciliation_store import run_results

    codes = {s.customer_id: s.plan.account_code for s in signups}
    rows = run_results(warehouse, result.run_id)
    drifting = [r for r in rows if r["drift_minutes"]]  # days do not cancel out: a "match" may hide two
    progress.say(f"\nReconciliation findings (meter_reconciliation, run {result.run_id}): {len(rows)} customer-periods, "
                 f"{len(rows) - len(drifting)} without drift, {len(drifting)} with drifting days")
    progress.say(f"  {'account':<10} {'status':<14} {'cdr':>6} {'stripe':>7} {'delta':>6} {'drift':>6} {'repaired':>8} {'left':>5}  cause")
    for row in sorted(drifting, key=lambda r: codes.get(r["customer_id"], "")):
        progress.say(f"  {codes.get(row['customer_id'], row['customer_id']):<10} {row['status']:<14} {row['cdr_minutes']:>6} "
                     f"{row['stripe_minutes']:>7} {row['delta_minutes']:>+6} {row['drift_minutes']:>6} {row['repaired_minutes']:>8} "
                     f"{row['unrepaired_drift_minutes']:>5}  {row['cause'] or 'unexplained'}")
    for check in result.get_asset_check_evaluations():
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
