"""interruptible.py: a command started from a process that ignores Ctrl-C, as a background job of a
script does, hears Ctrl-C again — and so do the programs it starts."""

from __future__ import annotations

import subprocess
import sys

from aisyst_pipelines.interruptible import interruptible

# Starts its arguments as a command while ignoring SIGINT itself, as `sh -c 'command &'` does.
IGNORING_CTRL_C = "import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.exit(subprocess.call(sys.argv[1:]))"
# What SIGINT does in a Python program, and in a program it starts in its turn.
SAY_WHAT_CTRL_C_DOES = "import signal; print({signal.SIG_IGN: 'ignored', signal.default_int_handler: 'KeyboardInterrupt'}[signal.getsignal(signal.SIGINT)])"
HERE_AND_BELOW = f"import subprocess, sys; {SAY_WHAT_CTRL_C_DOES}; sys.stdout.flush(); subprocess.call([sys.executable, '-c', {SAY_WHAT_CTRL_C_DOES!r}])"


def started_ignoring_ctrl_c(command: list[str]) -> list[str]:
    return subprocess.run([sys.executable, "-c", IGNORING_CTRL_C, *command], capture_output=True, text=True, check=True).stdout.splitlines()


def test_the_command_and_what_it_starts_stop_on_ctrl_c() -> None:
    assert started_ignoring_ctrl_c(interruptible([sys.executable, "-c", HERE_AND_BELOW])) == ["KeyboardInterrupt"] * 2


def test_without_it_the_command_inherits_the_ignored_ctrl_c() -> None:
    """What the deployment's `dagster dev` saw before: Ctrl-C ignored, by it and by what it starts."""
    assert started_ignoring_ctrl_c([sys.executable, "-c", HERE_AND_BELOW]) == ["ignored"] * 2


def test_the_command_runs_in_the_launchers_place() -> None:
    """Same pid: `dagster dev` stays the leader of the process group the deployment and the watchdog stop."""
    launched = subprocess.Popen(interruptible([sys.executable, "-c", "import os; print(os.getpid())"]), stdout=subprocess.PIPE, text=True)
    output, _ = launched.communicate(timeout=30)
    assert int(output) == launched.pid
    assert launched.returncode == 0
