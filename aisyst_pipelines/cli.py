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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
