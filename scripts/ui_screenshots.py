"""Screenshots of the Dagster UI pages ops look at, for docs/operations.md.

    ./run python scripts/ui_screenshots.py [--home .aisyst] [--out docs/screenshots]

Run it after `./run demo` (it needs the demo's history). It starts `aisyst dev` on the home (the UI,
the daemon and the emulator, exactly as ops run it locally) unless one already answers there, opens
each page below in headless Chromium (`apt-get install chromium`) and writes one PNG per page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aisyst_pipelines.deployment import DEV_SERVER_FILE, LOCATION_NAME, REPOSITORY_NAME  # noqa: E402

REPO_PATH = f"{REPOSITORY_NAME}@{LOCATION_NAME}"
# (file name, path in the UI, what it shows)
PAGES = [
    ("overview-timeline", "/overview/activity/timeline", "every job's runs over time"),
    ("runs", "/runs", "the runs, with the sensor or schedule that launched each"),
    ("asset-lineage", "/asset-groups", "the assets by domain and their lineage"),
    ("meter-reconciliation", "/assets/meter_reconciliation", "partitions, metadata and the plots of the nightly reconciliation"),
    ("meter-reconciliation-checks", "/assets/meter_reconciliation?view=checks", "the drift check with its Markdown offenders"),
    ("call-records", "/assets/call_records", "the table, its columns and row count"),
    ("draft-invoice-sensor", f"/locations/{REPO_PATH}/sensors/draft_invoice_sensor", "ticks, their runs and the readable cursor"),
    ("stripe-events-sensor", f"/locations/{REPO_PATH}/sensors/stripe_events_sensor", "ticks and the readable cursor"),
    ("schedules", "/overview/automation", "every sensor and schedule, running"),
]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def hosted_invoices(home: Path) -> list[tuple[str, str, str]]:
    """The demo's two printed renewal invoices (acct_0001 in Australia, acct_0002 in the US) on the
    emulator's hosted invoice page, served by the emulator `aisyst dev` runs (STRIPE_API_BASE)."""
    from urllib.parse import urlsplit

    from sqlalchemy import text

    from aisyst_pipelines.settings import Settings
    from aisyst_pipelines.warehouse import Warehouse

    settings = Settings.from_env({**os.environ, "AISYST_HOME": str(home)})
    base = urlsplit(settings.stripe_api_base or "")
    with Warehouse(settings.warehouse_url).connect() as connection:
        rows = connection.execute(text(
            "SELECT i.hosted_invoice_url, c.account_code FROM stripe_invoices i JOIN stripe_customers c ON c.customer_id = i.customer_id"
            " WHERE c.account_code IN (:au, :us) AND i.billing_reason = 'subscription_cycle' ORDER BY c.account_code"
        ), {"au": "acct_0001", "us": "acct_0002"}).all()
    pages = []
    for hosted, account in rows:
        if hosted:
            page = urlsplit(hosted)._replace(scheme=base.scheme, netloc=base.netloc).geturl()
            country = "au" if account == "acct_0001" else "us"
            pages.append((f"invoice-{country}", page, f"the hosted invoice page of {account} ({country.upper()})"))
    return pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("AISYST_HOME", ".aisyst"))
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--wait-ms", type=int, default=20000, help="how long each page may render")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    home = Path(args.home).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    record = home / "dagster" / DEV_SERVER_FILE
    dev = None
    url = json.loads(record.read_text())["url"] if record.exists() else None
    if not (url and answers(url)):
        env = {**os.environ, "AISYST_HOME": str(home)}
        dev = subprocess.Popen([str(Path(sys.executable).parent / "aisyst"), "dev", "--port", str(args.port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 300
        while not (record.exists() and answers(url)):
            if dev.poll() is not None or time.monotonic() > deadline:
                print("aisyst dev did not come up", file=sys.stderr)
                return 1
            time.sleep(1)
        time.sleep(15)  # a few sensor ticks, so the sensor pages show recent ones
    try:
        for name, page_url, what in [(name, f"{url}{path}", what) for name, path, what in PAGES] + hosted_invoices(home):
            target = out / f"{name}.png"
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
                 f"--virtual-time-budget={args.wait_ms}", f"--screenshot={target}", page_url],
                check=True, capture_output=True, timeout=180,
            )
            print(f"{target}: {what}")
    finally:
        if dev is not None:
            os.killpg(dev.pid, signal.SIGINT)
            dev.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
