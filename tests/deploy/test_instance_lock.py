"""instance_lock.py: one deployment per Dagster instance. A second command is refused with who holds
the lock and starts nothing; the demo refuses before it wipes anything; the lock goes with its holder
however it ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisyst_pipelines.demo import claim_demo_home, run_demo
from aisyst_pipelines.deployment import free_port
from aisyst_pipelines.instance_lock import InstanceInUse, instance_lock

from deploy_processes import command_environment, processes_of

BIN = Path(sys.executable).parent
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aisyst_pipelines.instance_lock import instance_lock
    with instance_lock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of tmp_path/home/dagster (as a running `aisyst ingest` would)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "home" / "dagster")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder
    holder.kill()
    holder.wait(10)


def test_a_second_holder_is_refused_with_the_first_ones_pid_until_that_one_is_killed(tmp_path: Path, held: subprocess.Popen) -> None:
    dagster_home = tmp_path / "home" / "dagster"
    with pytest.raises(InstanceInUse, match=f"pid {held.pid}"):
        with instance_lock(dagster_home):
            pass
    held.kill()  # SIGKILL: no clean-up, the kernel releases the lock
    held.wait(10)
    with instance_lock(dagster_home):
        with instance_lock(dagster_home):  # taken again by its holder (the demo, then its deployment)
            pass


@pytest.mark.usefixtures("held")
def test_a_command_is_refused_and_starts_no_deployment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = command_environment(home, STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    refused = subprocess.run([BIN / "aisyst", "ingest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "aisyst ingest: another command runs a Dagster deployment on" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert processes_of(home) == []  # no dagster dev, no watchdog


@pytest.mark.usefixtures("held")
def test_the_demo_refuses_before_it_wipes_the_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR", "STRIPE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)  # settings the demo refuses (test_demo_refusal.py)
    home = tmp_path / "home"
    claim_demo_home(home)
    warehouse = home / "warehouse.db"
    warehouse.write_bytes(b"the other command's warehouse")
    with pytest.raises(InstanceInUse):
        run_demo(customers=10, home=home)
    assert warehouse.read_bytes() == b"the other command's warehouse"
