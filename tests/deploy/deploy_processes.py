"""Running a command on a home of its own, and finding, and stopping, every process of its deployment
by the AISYST_HOME it inherited."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def command_environment(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a command on `home` alone: none of this test run's AISYST_, STRIPE_ or
    DAGSTER_ settings, then `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISYST_", "STRIPE_", "DAGSTER_"))}
    return {**env, "AISYST_HOME": str(home), **settings}


def wait_for_processes(home: Path, count: int, command: subprocess.Popen, timeout: float = 240) -> None:
    """Until `count` processes run on `home` (the command's deployment has started that far)."""
    deadline = time.monotonic() + timeout
    while len(processes_of(home)) < count:
        assert command.poll() is None and time.monotonic() < deadline, "the deployment did not start"
        time.sleep(0.05)


def processes_of(home: Path) -> list[int]:
    """Every process whose environment names `home` as its AISYST_HOME (the deployment's processes
    inherit it, whatever their session)."""
    wanted = f"AISYST_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def wait_until_gone(home: Path, timeout: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def stop_whatever_is_left(home: Path, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL, every process still running with this AISYST_HOME. Dagster's code servers
    outlive a dagster-webserver or dagster-daemon stopped with SIGTERM (a service manager would stop
    the whole control group); a test must not leave them running on the machine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_of(home):
            try:
                os.kill(pid, sig)
            except OSError:  # gone meanwhile
                continue
        if not wait_until_gone(home, timeout):
            return
