"""group_watchdog.py with real processes: whatever way the starting process ends, the group it started
is stopped — Ctrl-C for all of it, SIGKILL for what ignores that — or left alone after a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A process that starts a watched group (a `sleep` and, in the background, one that ignores Ctrl-C as
# background jobs of a script do, like a straggler of `dagster dev`), prints the group's id, then waits
# to be killed — with "released", after telling the watchdog that the group is taken care of.
STARTER = textwrap.dedent("""
    import subprocess, sys
    from aisyst_pipelines.group_watchdog import GroupWatchdog
    watchdog = GroupWatchdog(grace_seconds=1.0)
    group = subprocess.Popen(["sh", "-c", "sleep 600 & exec sleep 600"], start_new_session=True)
    watchdog.watch(group.pid)
    if sys.argv[1] == "released":
        watchdog.release()
    print(group.pid, flush=True)
    sys.stdin.read()
""")


def members(group: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == group:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def until(condition, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the group's members in /proc")
@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_the_group_is_stopped_when_its_starter_dies(ending: signal.Signals) -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, "killed"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    group = int(starter.stdout.readline())  # type: ignore[union-attr]
    try:
        assert until(lambda: len(members(group)) == 2), members(group)  # the shell and its background sleep
        starter.send_signal(ending)
        starter.wait(10)
        assert until(lambda: members(group) == []), f"left behind: {members(group)}"
    finally:
        for pid in members(group):
            os.kill(pid, signal.SIGKILL)


def test_a_released_watchdog_has_ended_and_leaves_the_group_alone() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, "released"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    group = int(starter.stdout.readline())  # type: ignore[union-attr]
    try:
        starter.kill()
        starter.wait(10)
        time.sleep(2)  # twice the grace period
        assert len(members(group)) == 2
    finally:
        for pid in members(group):
            os.kill(pid, signal.SIGKILL)
