"""group_watchdog.py and group_leader.py with real processes: whatever way the starting process ends,
the group it started is stopped — Ctrl-C for all of it, SIGKILL for what ignores that — or left alone
after a clean stop; a starter killed before the watchdog knows the group leaves nothing running; the
group hears Ctrl-C even when its starter ignores it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aisyst_pipelines.group_watchdog import GroupWatchdog

# A process that starts a watched group (a `sleep` and, in the background, one that ignores Ctrl-C as
# background jobs of a script do, like a straggler of `dagster dev`), prints the group's id, then waits
# to be killed — with "released", after telling the watchdog that the group is taken care of.
STARTER = textwrap.dedent("""
    import subprocess, sys
    from aisyst_pipelines.group_watchdog import GroupWatchdog
    watchdog = GroupWatchdog(grace_seconds=1.0)
    group = watchdog.start(["sh", "-c", "sleep 600 & exec sleep 600"])
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


# A starter killed in the instant between starting the command and telling the watchdog: it holds the
# gate's write end and never opens it. The command would leave a file behind.
STARTER_KILLED_BEFORE_THE_GATE = textwrap.dedent("""
    import os, subprocess, sys
    gate_read, gate_write = os.pipe()
    leader = subprocess.Popen([sys.executable, "-m", "aisyst_pipelines.group_leader", str(gate_read), "touch", sys.argv[1]],
                              pass_fds=[gate_read], start_new_session=True)
    print(leader.pid, flush=True)
    sys.stdin.read()
""")


def test_a_command_whose_starter_died_before_the_watchdog_knew_its_group_never_runs(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    starter = subprocess.Popen([sys.executable, "-c", STARTER_KILLED_BEFORE_THE_GATE, str(ran)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    leader = int(starter.stdout.readline())  # type: ignore[union-attr]
    starter.kill()
    starter.wait(10)
    assert until(lambda: not Path(f"/proc/{leader}").exists() or _is_zombie(leader)), "the leader did not end"
    assert not ran.exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# Starts its arguments as a command while ignoring SIGINT itself, as `sh -c 'command &'` does — with
# the watchdog, or as a plain child.
IGNORING_CTRL_C = textwrap.dedent("""
    import signal, subprocess, sys
    from aisyst_pipelines.group_watchdog import GroupWatchdog
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watchdog = GroupWatchdog()
    command = watchdog.start(sys.argv[2:]) if sys.argv[1] == "watched" else subprocess.Popen(sys.argv[2:])
    command.wait()
    watchdog.release()
""")
# What SIGINT does in a Python program, and in a program it starts in its turn.
SAY_WHAT_CTRL_C_DOES = "import signal; print({signal.SIG_IGN: 'ignored', signal.default_int_handler: 'KeyboardInterrupt'}[signal.getsignal(signal.SIGINT)])"
HERE_AND_BELOW = f"import subprocess, sys; {SAY_WHAT_CTRL_C_DOES}; sys.stdout.flush(); subprocess.call([sys.executable, '-c', {SAY_WHAT_CTRL_C_DOES!r}])"


@pytest.mark.parametrize(("how", "heard"), [("watched", "KeyboardInterrupt"), ("plain", "ignored")])
def test_the_group_hears_ctrl_c_even_if_its_starter_ignores_it(how: str, heard: str) -> None:
    """Started by the watchdog, the command and what it starts stop on Ctrl-C; a plain child of such a
    starter (what `dagster dev` was before) inherits the ignored Ctrl-C, and so does what it starts."""
    said = subprocess.run([sys.executable, "-c", IGNORING_CTRL_C, how, sys.executable, "-c", HERE_AND_BELOW],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert said == [heard, heard]


def test_the_command_runs_in_its_leaders_place() -> None:
    """Same pid: the command leads the process group the watchdog and the deployment stop."""
    watchdog = GroupWatchdog()
    command = watchdog.start([sys.executable, "-c", "import os; print(os.getpid(), os.getpgid(0))"], stdout=subprocess.PIPE, text=True)
    output, _ = command.communicate(timeout=30)
    watchdog.release()
    assert output.split() == [str(command.pid), str(command.pid)]
    assert command.returncode == 0
