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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisyst", description="Aisyst billing data platform")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="warehouse schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply the warehouse migrations (keeps every row)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
