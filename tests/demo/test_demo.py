"""`aisyst demo --customers 12`, in this process through the CLI, in a temporary AISYST_HOME.

The demo builds its own world (emulator, SQLite warehouse in its home: it wipes that state on each
run, so it only runs in a home it made itself, see test_demo_refusal.py); the assertions read what it printed, its
warehouse, its outbox and the Dagster instance it leaves behind, and run it a second time in the same
home to show that re-running starts a fresh world while the instance's history accumulates.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from aisyst_pipelines.cli import main
from aisyst_pipelines.demo import DEMO_MARKER, LATE_ACCOUNT, LATE_MINUTES, UNMAPPED_ACCOUNT, plan_customers
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import (
    invoice_annotations,
    invoice_audits,
    meter_corrections,
    meter_reconciliation,
    stripe_customers,
    usage_alerts,
)
from aisyst_pipelines.deployment import LOCATION_NAME

pytestmark = pytest.mark.slow

CUSTOMERS = 12
SEED = 7


def section(out: str, title: str) -> str:
    """The printed block starting at `title` up to the next blank line."""
    start = out.index(title)
    end = out.find("\n\n", start)
    return out[start : end if end >= 0 else None]


def rows_of(warehouse: Warehouse, table) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    with warehouse.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table))]


def assert_runs_came_from_the_daemon(home: Path) -> Counter[str]:
    """Every run of the demo was launched from the code location (so the UI lists it under its job),
    the sensors' runs by the daemon's ticks (tagged with the sensor); the runs per job."""
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
    assert runs and all(run.remote_job_origin and run.remote_job_origin.location_name == LOCATION_NAME for run in runs)
    by_sensor = {"cdr_ingest": "cdr_files_sensor", "annotate_draft_invoices": "draft_invoice_sensor",
                 "__ASSET_JOB": "cdr_freshness_sensor"}  # the freshness check's runs
    for run in runs:
        assert run.tags.get("dagster/sensor_name") == by_sensor.get(run.job_name), (run.job_name, run.tags)
    return Counter(run.job_name for run in runs)


@pytest.fixture
def demo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Settings the demo ignores (it mails to its outbox and talks to its own emulator); a configured
    # warehouse, landing or outbox folder or a live key it refuses (test_demo_refusal.py).
    for name in ("AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AISYST_SMTP_URL", "smtp://127.0.0.1:1")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_not_for_the_demo")
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_demo_runs_one_month_end_to_end_and_reruns(demo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--customers", str(CUSTOMERS), "--seed", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert (demo_home / DEMO_MARKER).is_file()  # the home is the demo's: the second run below may wipe it
    warehouse = Warehouse(f"sqlite:///{demo_home / 'warehouse.db'}")
    plans = {plan.account_code: plan for plan in plan_customers(CUSTOMERS, SEED)}

    # Minutes per customer: every customer with its planned share, plus the unmapped account.
    minutes = section(out, "Minutes per customer")
    table = {line.split()[0]: line for line in minutes.splitlines()[2:]}
    assert set(table) == set(plans) | {UNMAPPED_ACCOUNT}
    assert "(unmapped)" in table[UNMAPPED_ACCOUNT] and "no Stripe customer" in table[UNMAPPED_ACCOUNT]
    assert "1 account(s) without a Stripe customer" in out
    assert re.search(r"acct_0001 .* 550 +500 +110 %", table["acct_0001"])
    assert "unlim." in table["acct_0004"]

    # Reconciliation: the dropped events are found and repaired, the late duplicates found and left.
    findings = section(out, "Reconciliation findings")
    printed = [line.split() for line in findings.splitlines()[2:] if line.startswith("  acct_")]
    under = [f for f in printed if f[1] == "under_metered"]
    over = [f for f in printed if f[1] == "over_metered"]
    assert under and over
    assert all(int(f[6]) > 0 for f in under)  # dropped meter events repaired
    assert all(int(f[7]) > 0 for f in over)  # late duplicates left for a person
    # Three nights were reconciled (two earlier partitions for the trend, then the repairing one).
    main_run = re.search(r"Reconciliation findings \(meter_reconciliation, run (\S+)\)", out)
    assert main_run, out
    every_night = rows_of(warehouse, meter_reconciliation)
    assert len({r["run_id"] for r in every_night}) == 3
    reconciled = [r for r in every_night if r["run_id"] == main_run.group(1)]
    assert len(reconciled) == CUSTOMERS
    assert {r["status"] for r in reconciled} == {"match", "under_metered", "over_metered"}
    repaired = sum(int(f[6]) for f in printed)
    assert sum(r["repaired_minutes"] for r in reconciled) == repaired > 0
    corrections = rows_of(warehouse, meter_corrections)
    assert sum(c["value"] for c in corrections) == repaired and {c["status"] for c in corrections} == {"sent"}

    # Alerts at 80 % and 100 %, each customer e-mail in the outbox.
    alerts_text = section(out, "Usage alerts")
    alerts = rows_of(warehouse, usage_alerts)
    assert Counter(a["threshold_pct"] for a in alerts).keys() == {80, 100}
    assert {a["customer_id"] for a in alerts if a["threshold_pct"] == 100} >= {
        line.split()[1] for line in minutes.splitlines() if " 110 % " in line
    }
    mails = re.findall(r"e-mail: to (\S+): .*→  (\S+\.eml)", alerts_text)
    assert len(mails) == sum(a["status"] == "notified" for a in alerts) + 1  # + the ops digest
    assert all(Path(path).is_file() and Path(path).parent == demo_home / "outbox" for _, path in mails)
    assert " 80 %  " in alerts_text and "100 %  " in alerts_text

    # Every renewal draft annotated; the printed invoices carry our lines and brand fields.
    annotations = rows_of(warehouse, invoice_annotations)
    assert len(annotations) == CUSTOMERS and {a["status"] for a in annotations} == {"annotated"}
    by_minutes = {a["customer_id"]: a["minutes_used"] for a in annotations}
    assert sorted(by_minutes.values()) == sorted(
        int(line.split()[4]) for line in minutes.splitlines()[2:] if UNMAPPED_ACCOUNT not in line
    )
    invoices = out.split("┌ Invoice ")[1:]
    assert len(invoices) == 2
    assert "Voice minutes used: 550 of 500" in invoices[0] and "Overage: 50 minutes" in invoices[0]
    assert "Voice minutes used: 850 of 1,000" in invoices[1]
    # The Australian Tier 1 invoice as the guide shows it (GST 10 % on $299.00), next to a US one.
    assert re.search(r"│   Tier 1 +\$299\.00\n", invoices[0])
    assert re.search(r"│   Tax \(GST 10%\) +\$29\.90\n│   Total +\$328\.90\n", invoices[0])
    assert "Region: APAC" in invoices[0] and "ABN: 12 345 678 901" in invoices[0]
    assert "Tax" not in invoices[1] and re.search(r"│   Total +\$499\.00\n", invoices[1]) and "Region: US" in invoices[1]
    for invoice in invoices:
        assert "(paid)" in invoice and "Client ID: acct_000" in invoice and "memo: " in invoice and "Total" in invoice

    # The declining card shows up through the events sensor; the closing lines say where to look.
    assert re.search(r"stripe_events_sensor ticked: \d+ events applied", out)
    assert re.search(r"ops alert: .*\[Aisyst ops\] .*[Pp]ayment failed", out)
    # Net 30: the customer who pays by invoice has open invoices with a due date, watched for overdue.
    net_30 = section(out, "Paid by invoice (Net 30")
    assert re.search(r"acct_0010 +\S+ +open +due 2026-10-31 ", net_30), net_30
    # The audit of the final invoices names the cause of each difference (the late duplicates: meter_drift).
    assert re.search(r"audit of the final renewal invoices .*: 12 audited, [1-9]\d* disagree", out)
    assert "check final_invoices_agree_with_calls: FAILED — causes by invoice:" in out and "meter_drift" in out
    # A late CDR file lands once the invoices are final: the landing sensor loads it, the audit names it
    # late_cdr, and the ledger holds exactly one carry-over for the next renewal draft, not carried yet.
    assert re.search(rf"late CDR file landed: canonical_csv/\S+ — {LATE_MINUTES} minutes of {LATE_ACCOUNT}'s", out), out
    assert re.search(r"cdr_files_sensor: loaded canonical_csv/\S+-late-calls\.csv: ", out), out
    late_line = re.search(rf"  late_cdr: {LATE_ACCOUNT}  {LATE_MINUTES} minute\(s\) reported too late for (in_\S+) \(final\) — to be "
                          rf"carried onto the next renewal draft as 'Late-reported minutes from September: {LATE_MINUTES}'", out)
    assert late_line, out
    [late_customer] = [c["customer_id"] for c in rows_of(warehouse, stripe_customers) if c["account_code"] == LATE_ACCOUNT]
    pending = [a for a in rows_of(warehouse, invoice_audits) if a["late_minutes"] and a["carried_to_invoice_id"] is None]
    assert [(a["customer_id"], a["invoice_id"], a["late_minutes"], a["causes"]) for a in pending] == [
        (late_customer, late_line.group(1), LATE_MINUTES, "late_cdr")]
    assert out.count("  late_cdr: ") == 1
    # Failed payments to the end: Smart Retries charge the updated card; the other subscription lapses.
    dunning = section(out, "Failed payments to the end")
    assert re.search(r"acct_0008 +sub_\S+ +canceled", dunning) and re.search(r"acct_0009 +sub_\S+ +active", dunning)
    assert "subscription recovered" in out.lower() and "subscription canceled for non-payment" in out.lower()
    assert "`./run dev` (aisyst dev) starts the UI, the daemon and the emulator" in out
    assert (demo_home / "emulator-state.json").is_file()  # the demo's Stripe world, for `aisyst dev`

    first_runs = assert_runs_came_from_the_daemon(demo_home)
    assert first_runs["cdr_ingest"] == 4  # the month's three files and the late one
    assert first_runs["meter_reconciliation_job"] == 3
    assert all(first_runs[job] == 1 for job in ("usage_alerts_job", "invoice_branding_job"))
    assert first_runs["annotate_draft_invoices"] >= 1

    # Again in the same home, in push mode: a fresh world (same minutes), the instance keeps both
    # months' runs; Stripe's events also arrive by webhook at `aisyst webhook`.
    assert main(["demo", "--customers", str(CUSTOMERS), "--seed", str(SEED), "--push"]) == 0
    again = capsys.readouterr().out
    pushed = re.search(r"push mode: .* events applied .*by webhook: (\d+)", again)
    assert pushed and int(pushed.group(1)) > 0, again
    assert section(again, "Minutes per customer").splitlines()[2:][0].split()[2:] == minutes.splitlines()[2:][0].split()[2:]
    assert len(rows_of(warehouse, invoice_annotations)) == CUSTOMERS
    second_runs = assert_runs_came_from_the_daemon(demo_home)
    assert second_runs["cdr_ingest"] == 8 and second_runs["meter_reconciliation_job"] == 6
