"""The `aisyst` command. Each sub-command is a small function here; the work lives in the packages.

    aisyst db upgrade            apply the warehouse migrations
    aisyst demo                  one billing month end to end (emulator, Dagster runs, printed results)
    aisyst ingest                the landing sensor's next tick and the runs it launches
    aisyst simulate-calls        write sample CDR files
    aisyst emulator              the local Stripe emulator
    aisyst bootstrap-stripe      create the tier catalog and the meter in Stripe
    aisyst reconcile             CDR minutes vs Stripe's meter, now (--repair to correct)
    aisyst webhook               the Stripe webhook receiver (push alternative to the events sensor)
    aisyst annotate              one pass of the draft-invoice sensor and its annotation runs
    aisyst dev                   the Dagster UI and daemon (and the emulator) until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from aisyst_pipelines.instance_lock import InstanceInUse
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse, WarehouseNotUpgraded

Command = Callable[[argparse.Namespace, Settings], int]

# Every file a command creates is its owner's alone (0600, folders 0700): the warehouse, the key, the
# e-mails, and the files Dagster writes under DAGSTER_HOME (run storage, event logs, compute logs),
# which only a umask reaches. Services set the same (UMask=0077, docs/operations.md).
PRIVATE_UMASK = 0o077


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    warehouse = Warehouse(settings.warehouse_url)
    before = warehouse.current_revision()
    warehouse.upgrade(args.revision)
    print(f"warehouse {warehouse!r}: revision {before or '(empty)'} -> {warehouse.current_revision()}")
    return 0


def cmd_simulate_calls(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date
    from pathlib import Path

    from aisyst_pipelines.simulation import write_sample_files

    written = write_sample_files(
        Path(args.out),
        args.customers,
        args.days,
        args.seed,
        formats=[name.strip() for name in args.formats.split(",") if name.strip()],
        start=date.fromisoformat(args.start),
        malformed_rate=args.malformed_rate,
        asterisk_timezone=args.asterisk_timezone or settings.asterisk_timezone,
        mean_calls_per_day=args.calls_per_day,
    )
    for file in written:
        print(f"{file.path}: {file.rows} calls ({file.file_format}), {len(file.malformed)} malformed rows")
    return 0


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    """The local Stripe emulator in the foreground until Ctrl-C (loopback only)."""
    from pathlib import Path

    from aisyst_pipelines.emulator import EmulatorServer, Faults
    from aisyst_pipelines.emulator.dunning import RevenueRecovery
    from aisyst_pipelines.emulator.testing import TEST_API_KEY

    faults = Faults(
        latency_ms=args.latency_ms,
        rps_limit=args.rps_limit,
        error_rate=args.error_rate,
        rate_limit_error_rate=args.rate_limit_error_rate,
        drop_rate=args.drop_rate,
        summary_lag_seconds=args.summary_lag_seconds,
    )
    server = EmulatorServer(
        host=args.host, port=args.port, faults=faults, seed=args.seed, state_file=Path(args.state) if args.state else None,
        webhook_retry_scale=args.webhook_retry_scale,
        revenue_recovery=RevenueRecovery(
            retries=args.retries, retry_days=args.retry_days, when_exhausted=args.when_retries_exhausted,
            mark_uncollectible=args.mark_uncollectible,
        ),
    )
    server.start()
    print(f"Stripe emulator on {server.url}  (faults: {faults.as_dict()})")
    print(f"  STRIPE_API_BASE={server.url}\n  STRIPE_SECRET_KEY={TEST_API_KEY}   (any sk_test_/rk_test_ key works)")
    print(f"  admin: POST {server.url}/_emulator/faults | POST /_emulator/revenue_recovery | POST /_emulator/reset | GET /_emulator/dump")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


def cmd_bootstrap_stripe(args: argparse.Namespace, settings: Settings) -> int:
    """Find or create the tiers' products and prices, the meter and the tax rate; print ids and env lines."""
    import stripe

    from aisyst_pipelines.billing.tiers import load_tier_catalog
    from resources.stripe import LiveModeRefused, StripeResource

    tiers_file = args.tiers or settings.tiers_file
    catalog = load_tier_catalog(tiers_file)
    resource = StripeResource.from_settings(settings).process_config_and_initialize()  # resolves the EnvVar key
    where = (
        f"the local Stripe emulator at {settings.stripe_api_base}"
        if settings.stripe_uses_emulator
        else f"Stripe ({'live' if resource.is_live_mode else 'test'} mode)"
    )
    try:
        ids = resource.catalog.ensure(catalog)
    except LiveModeRefused as error:
        print(f"bootstrap-stripe: {error}", file=sys.stderr)
        return 2
    except stripe.APIConnectionError:
        if not settings.stripe_uses_emulator:
            raise
        print(
            f"bootstrap-stripe: the Stripe emulator is not reachable at {settings.stripe_api_base}.\n"
            "  STRIPE_SECRET_KEY is unset, so the local emulator is meant: start it first with\n"
            "    aisyst emulator --port 12111\n"
            "  (or set STRIPE_API_BASE to where it runs, or STRIPE_SECRET_KEY for a Stripe account).",
            file=sys.stderr,
        )
        return 2
    print(f"Tier catalog on {where} (tiers file {tiers_file}):")
    for entry in ids.entries:
        print(f"  {entry.kind:<9} {entry.id:<34} {entry.label:<36} {'created' if entry.created else 'found'}")
    print(f"{ids.created_count} created, {len(ids.entries) - ids.created_count} found.\n")
    print("Environment lines (as in the original integration guide):")
    for line in ids.env_lines():
        print(line)
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """The daemon's next tick of cdr_files_sensor and the runs it launched; exit 1 if a file failed."""
    import time

    from aisyst_pipelines.deployment import deployment
    from aisyst_pipelines.services.ingestion import shown_path
    from jobs.ingestion import landing_outcomes

    key_file = settings.pii_key_file()
    had_key = key_file.exists()
    since = time.time()  # before a local deployment starts: its daemon ticks at once
    with emulator_when_meant(settings), deployment(settings) as dagster:
        outcomes = landing_outcomes(dagster, since=since)
    if not had_key and key_file.exists():  # said in the run's log, which a terminal does not show
        print(f"created a new phone-number key in {key_file} (AISYST_PII_KEY is unset): keep it with the warehouse beside it")
    if not outcomes:
        print(f"no new CDR files in {settings.landing_dir}")
    for outcome in outcomes:
        file = shown_path(outcome.file, settings.landing_dir)
        if outcome.status == "failed":  # the cause and where the rest is, in one line
            print(f" FAILED  {file}: {outcome.detail}; details: {outcome.details_at}")
        else:
            run = f"  [run {outcome.run_id}]" if outcome.run_id else ""
            print(f"{outcome.status:>7}  {file}: {outcome.detail}{run}")
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """One billing month end to end through Dagster (see aisyst_pipelines/demo.py)."""
    from pathlib import Path

    from aisyst_pipelines.demo import run_demo

    return run_demo(customers=args.customers, seed=args.seed, home=Path(args.home) if args.home else settings.home, push=args.push)


def cmd_annotate(args: argparse.Namespace, settings: Settings) -> int:
    """The daemon's next tick of draft_invoice_sensor and its runs (or one run of the job for the given
    invoices, submitted to the run queue); exit 1 if an invoice was missed or failed."""
    import time

    from aisyst_pipelines.deployment import deployment
    from jobs.invoice_annotation import SENSOR_NAME, annotate_draft_invoices, annotation_outcomes, annotation_run_config

    since = time.time()  # before a local deployment starts: its daemon ticks at once
    with emulator_when_meant(settings), deployment(settings) as dagster:
        if args.invoice:
            run_ids = [dagster.submit(annotate_draft_invoices.name, run_config=annotation_run_config(args.invoice),
                                      tags={"aisyst/manual": "true"})]
        else:
            run_ids = [run_id for tick in dagster.wait_for_ticks(SENSOR_NAME, since=since) for run_id in tick.run_ids]
        outcomes = annotation_outcomes(dagster, run_ids)
    if not outcomes:
        print("no renewal invoices to annotate")
    for outcome in outcomes:
        counts = ", ".join(f"{key} {value}" for key, value in outcome.counts.items() if value) or "run failed"
        print(f"run {outcome.run_id}: {outcome.invoices} invoice(s): {counts}")
    return 0 if all(o.success and o.check_passed is not False for o in outcomes) else 1


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """One run of the reconciliation job now (or at --as-of), through the run queue; exit 1 if drift is
    left unrepaired or the run failed."""
    from datetime import datetime, timezone

    from aisyst_pipelines.assets.reconciliation import ASSET_KEY
    from aisyst_pipelines.deployment import deployment
    from aisyst_pipelines.services.reconciliation import DRIFT_CHECK
    from jobs.reconciliation import JOB_NAME, one_off_run_config, partition_key

    as_of = datetime.fromisoformat(args.as_of) if args.as_of else None
    if as_of is not None and as_of.utcoffset() is None:
        print(f"reconcile: --as-of {args.as_of} needs a UTC offset (e.g. {args.as_of}Z): refused", file=sys.stderr)
        return 1
    config = one_off_run_config(settings, repair=True if args.repair else None, as_of=as_of)
    # The job is partitioned by UTC day: the run goes under the day settled by then (as the nightly one would).
    partition = partition_key(as_of or datetime.now(timezone.utc), settings.reconciliation_settle_lag_minutes)
    with emulator_when_meant(settings), deployment(settings) as dagster:
        (run,) = dagster.wait_for_runs([dagster.submit(JOB_NAME, run_config=config, tags={"dagster/partition": partition})])
        materializations = [m for m in dagster.run_materializations(run.run_id) if m.asset_key == ASSET_KEY]
        checks = dagster.run_check_evaluations(run.run_id)
    if run.status.value != "SUCCESS" or not materializations:
        print(f"run {run.run_id} failed: see its logs in the Dagster UI", file=sys.stderr)
        return 1
    metadata = materializations[0].metadata
    names = ("customer_periods", "matched", "under_metered", "over_metered", "total_drift_minutes", "repaired_minutes", "corrections_sent")
    print(f"run {run.run_id}: " + ", ".join(f"{name.replace('_', ' ')} {metadata[name].value}" for name in names))
    passed = all(check.passed for check in checks)
    for check in checks:
        print(f"check {DRIFT_CHECK}: {'passed' if check.passed else 'FAILED'} — {check.description}")
    return 0 if passed else 1


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """The Dagster UI and daemon on this home's instance until Ctrl-C, with the Stripe emulator when
    no STRIPE_SECRET_KEY is set; the other commands then submit to it."""
    import json

    from aisyst_pipelines.deployment import DEV_SERVER_FILE, local_deployment, running_deployment_url

    running = running_deployment_url(settings)
    if running:
        print(f"aisyst dev: a Dagster deployment of this home already answers at {running}", file=sys.stderr)
        return 2
    record = settings.dagster_home / DEV_SERVER_FILE
    log_path = settings.dagster_home / "dagster-dev.log"
    print(f"starting the Dagster webserver and daemon on {settings.dagster_home} (log: {log_path}) …", flush=True)
    try:
        with emulator_when_meant(settings, announce=True), local_deployment(settings, port=args.port, log_path=log_path) as dagster:
            record.write_text(json.dumps({"url": dagster.url, "pid": os.getpid()}))
            try:
                print(f"Dagster UI: {dagster.url}  (daemon ticking the sensors and schedules; Ctrl-C stops everything)", flush=True)
                while True:
                    signal.pause()
            finally:
                record.unlink(missing_ok=True)  # ours only: refused, another command's record stays
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    return 0


@contextlib.contextmanager
def emulator_when_meant(settings: Settings, announce: bool = False) -> Iterator[None]:
    """The local Stripe emulator at STRIPE_API_BASE for the block, when the emulator is meant (no
    STRIPE_SECRET_KEY) and nothing answers there yet; with its state kept in the home between runs."""
    from urllib.parse import urlsplit

    from aisyst_pipelines.emulator import EmulatorServer

    base = urlsplit(settings.stripe_api_base or "")
    if not settings.stripe_uses_emulator or base.hostname is None or _listening(base.hostname, base.port or 80):
        yield
        return
    with EmulatorServer(host=base.hostname, port=base.port or 80, state_file=settings.emulator_state_file()) as emulator:
        if announce:
            print(f"Stripe emulator on {emulator.url} (STRIPE_SECRET_KEY is unset; state: {settings.emulator_state_file()})", flush=True)
        yield


def _listening(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the Stripe webhook receiver; the signing secret comes from STRIPE_WEBHOOK_SECRET only."""
    import os

    import uvicorn

    from aisyst_pipelines.billing.tiers import load_tier_catalog
    from aisyst_pipelines.services.stripe_sync import subscription_mirror_row
    from aisyst_pipelines.webhook import WEBHOOK_PATH, create_webhook_app
    from resources import NotifierResource, StripeResource

    secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
    if not secret.strip():
        print("webhook: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_…)", file=sys.stderr)
        return 2
    warehouse = Warehouse(settings.warehouse_url).require_current(upgrade=settings.uses_embedded_warehouse)
    notifier = NotifierResource.from_settings(settings).process_config_and_initialize()  # resolves EnvVars
    stripe = StripeResource.from_settings(settings).process_config_and_initialize()
    mirror_row = subscription_mirror_row(stripe.catalog, load_tier_catalog(settings.tiers_file), settings.legacy_tier_price_ids)
    app = create_webhook_app(warehouse, secret, notifier=notifier, mirror_row=mirror_row)
    print(f"Stripe webhook receiver on http://{args.host}:{args.port}{WEBHOOK_PATH} → warehouse {warehouse!r}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisyst", description="Aisyst billing data platform")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="warehouse schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply the warehouse migrations (keeps every row)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    simulate = commands.add_parser("simulate-calls", help="write realistic sample CDR files (deterministic for a seed)")
    simulate.add_argument("--customers", type=int, required=True, help="number of accounts (acct_0001 …)")
    simulate.add_argument("--days", type=int, required=True)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--out", required=True, help="folder; files go to its canonical/, twilio/, asterisk/ sub-folders")
    simulate.add_argument(
        "--formats",
        default="canonical_csv,twilio,asterisk",
        help="comma-separated: canonical_csv, canonical_jsonl, twilio, asterisk (accounts are dealt over them)",
    )
    simulate.add_argument("--malformed-rate", type=float, default=0.0, help="share of deliberately broken rows, e.g. 0.001")
    simulate.add_argument("--start", default="2026-10-01", help="first UTC day, YYYY-MM-DD")
    simulate.add_argument("--calls-per-day", type=float, default=40.0, help="mean calls of an account on a weekday")
    simulate.add_argument("--asterisk-timezone", default=None, help="local time zone of Asterisk files (default: settings)")
    simulate.set_defaults(handler=cmd_simulate_calls)

    emulator = commands.add_parser("emulator", help="the local Stripe emulator (stateful, loopback only)")
    emulator.add_argument("--host", default="127.0.0.1", help="a loopback address")
    emulator.add_argument("--port", type=int, default=12111)
    emulator.add_argument("--latency-ms", type=float, default=0.0, help="added to every /v1 request")
    emulator.add_argument("--rps-limit", type=float, default=None, help="requests per second before Stripe's 429")
    emulator.add_argument("--error-rate", type=float, default=0.0, help="share of 500 answers")
    emulator.add_argument("--rate-limit-error-rate", type=float, default=0.0, help="share of random 429 answers")
    emulator.add_argument("--drop-rate", type=float, default=0.0, help="share of connections closed without an answer")
    emulator.add_argument("--summary-lag-seconds", type=float, default=0.0, help="meter events stay out of summaries this long")
    emulator.add_argument("--seed", type=int, default=None, help="makes ids and fault decisions repeatable")
    emulator.add_argument("--state", default=None, help="JSON file its objects are read from at start and written to at stop")
    emulator.add_argument(
        "--webhook-retry-scale", type=float, default=1.0,
        help="multiplies the delays between webhook delivery retries (30 min, 1 h, 2 h); 0.01 for quick retries",
    )
    emulator.add_argument("--retries", type=int, default=8, help="Smart Retries of a failed renewal charge (0: none)")
    emulator.add_argument("--retry-days", type=int, default=14, help="the days the retries are spread over")
    emulator.add_argument(
        "--when-retries-exhausted", choices=("cancel", "unpaid", "past_due"), default="cancel",
        help="what becomes of the subscription when the last retry fails",
    )
    emulator.add_argument("--mark-uncollectible", action="store_true", help="and mark its invoice uncollectible")
    emulator.set_defaults(handler=cmd_emulator)

    bootstrap = commands.add_parser(
        "bootstrap-stripe", help="create or find the tier products, prices, the meter and tax rate in Stripe (idempotent)"
    )
    bootstrap.add_argument("--tiers", default=None, help="tiers file (default: AISYST_TIERS_FILE or the packaged tiers.json)")
    bootstrap.set_defaults(handler=cmd_bootstrap_stripe)

    ingest = commands.add_parser("ingest", help="one pass of the landing sensor and the runs it requests (exit 1 if a file failed)")
    ingest.set_defaults(handler=cmd_ingest)

    demo = commands.add_parser(
        "demo", help="one billing month end to end on the local emulator: calls, ingestion, reconciliation, alerts, "
        "annotated renewal invoices (fresh demo state in AISYST_HOME each run; the Dagster instance is kept). "
        "Runs only in a home it made itself (new or empty, then marked), never with a configured warehouse, "
        "landing or outbox folder or a live Stripe key"
    )
    demo.add_argument("--customers", type=int, default=50, help="how many Stripe customers (at least 8)")
    demo.add_argument("--seed", type=int, default=7, help="makes the customers, calls and meter faults repeatable")
    demo.add_argument("--home", default=None, help="demo home (default AISYST_HOME, ./.aisyst)")
    demo.add_argument("--push", action="store_true",
                      help="also deliver Stripe's events by webhook: an emulator webhook endpoint pushing to `aisyst webhook`")
    demo.set_defaults(handler=cmd_demo)

    annotate = commands.add_parser(
        "annotate", help="one pass of the draft-invoice sensor and its annotation runs (exit 1 if an invoice was missed or failed)"
    )
    annotate.add_argument("--invoice", action="append", metavar="ID", help="annotate these invoices now (repeatable)")
    annotate.set_defaults(handler=cmd_annotate)

    reconcile = commands.add_parser("reconcile", help="reconcile CDR minutes with Stripe's meter now (exit 1 if drift is left)")
    reconcile.add_argument("--repair", action="store_true", help="send corrective meter events (default: AISYST_RECONCILIATION_REPAIR)")
    reconcile.add_argument("--as-of", default=None, help="ISO-8601 instant to reconcile at (default: now)")
    reconcile.set_defaults(handler=cmd_reconcile)

    dev = commands.add_parser(
        "dev", help="the Dagster UI and daemon on this home's instance (and the Stripe emulator when no STRIPE_SECRET_KEY "
        "is set) until Ctrl-C; the other commands submit their runs to it"
    )
    dev.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1")
    dev.set_defaults(handler=cmd_dev)

    webhook = commands.add_parser("webhook", help="the Stripe webhook receiver (STRIPE_WEBHOOK_SECRET; same handler as the events sensor)")
    webhook.add_argument("--host", default="127.0.0.1", help="put a TLS reverse proxy in front for Stripe to reach it")
    webhook.add_argument("--port", type=int, default=8787)
    webhook.set_defaults(handler=cmd_webhook)

    return parser


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM — `kill`, a service manager's stop — ends a command as Ctrl-C does: through its clean-up
    (the emulator writes its state file, `aisyst dev` stops Dagster, the demo its webhook receiver),
    rather than at once with its children left running. Only the main thread may set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handler: Command = args.handler
    previous = os.umask(PRIVATE_UMASK)
    try:
        with sigterm_as_ctrl_c():
            return handler(args, settings)
    except (WarehouseNotUpgraded, InstanceInUse) as error:
        print(f"aisyst {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after the command's clean-up ran
        print(f"aisyst {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        os.umask(previous)


if __name__ == "__main__":
    sys.exit(main())
