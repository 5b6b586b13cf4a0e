"""The `aisyst` command. Each sub-command is a small function here; the work lives in the packages.

    aisyst db upgrade            apply the warehouse migrations
    aisyst demo                  the main job on the embedded defaults
    aisyst ingest                one pass of the landing sensor and the runs it requests
    aisyst simulate-calls        write sample CDR files
    aisyst emulator              the local Stripe emulator
    aisyst bootstrap-stripe      create the tier catalog and the meter in Stripe
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    warehouse = Warehouse(settings.warehouse_url)
    before = warehouse.current_revision()
    warehouse.upgrade(args.revision)
    print(f"warehouse {warehouse!r}: revision {before or '(empty)'} -> {warehouse.current_revision()}")
    return 0


def cmd_simulate_calls(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date
    from pathlib import Path

    from aisyst_pipelines.cdr.simulate import write_sample_files

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
    from aisyst_pipelines.emulator import EmulatorServer, Faults
    from aisyst_pipelines.emulator.testing import TEST_API_KEY

    faults = Faults(
        latency_ms=args.latency_ms,
        rps_limit=args.rps_limit,
        error_rate=args.error_rate,
        rate_limit_error_rate=args.rate_limit_error_rate,
        drop_rate=args.drop_rate,
        summary_lag_seconds=args.summary_lag_seconds,
    )
    server = EmulatorServer(host=args.host, port=args.port, faults=faults, seed=args.seed)
    server.start()
    print(f"Stripe emulator on {server.url}  (faults: {faults.as_dict()})")
    print(f"  STRIPE_API_BASE={server.url}\n  STRIPE_SECRET_KEY={TEST_API_KEY}   (any sk_test_/rk_test_ key works)")
    print(f"  admin: POST {server.url}/_emulator/faults | POST /_emulator/reset | GET /_emulator/dump")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
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
    emulator.set_defaults(handler=cmd_emulator)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
