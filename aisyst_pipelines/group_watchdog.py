"""Stops a process group when the process that started it is gone, however it went.

    python -m aisyst_pipelines.group_watchdog <pipe fd> <grace seconds>

`local_deployment` starts this watchdog first, then `dagster dev` through `GroupWatchdog.start`: as the
leader of a process group of its own (its webserver, daemon, code server and run workers join that
group), which runs only once the group's id is written to the pipe (group_leader.py). A stop byte
follows once the starter has stopped the group itself. The kernel closes the pipe's
write end when the starting process exits, also on SIGKILL, which no clean-up code survives. So when
the watchdog reads the end of the pipe:
- after the stop byte, or before any group id: nothing to do;
- after a group id alone: Ctrl-C for the whole group (SIGINT: `dagster dev` and each of its processes
  stop on it, also the ones it was still starting, which its own shutdown does not know of yet), and
  after a grace period (30 s) SIGKILL for whatever of the group is left.

Why not Linux's parent-death signal on `dagster dev`: it reaches that one process, and a `dagster
dev` interrupted while it starts its webserver and daemon exits without stopping those.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

STOPPED = b"stopped"


def watch(pipe_fd: int, grace_seconds: float) -> None:
    with os.fdopen(pipe_fd, "rb") as pipe:
        told = pipe.read()  # until the starting process closes its end, or exits
    group, _, rest = told.partition(b"\n")
    if not group or rest == STOPPED:
        return
    process_group = int(group)
    if not _signal_group(process_group, signal.SIGINT):
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not _signal_group(process_group, 0):  # signal 0 only asks whether any of the group is left
            return
    _signal_group(process_group, signal.SIGKILL)


def _signal_group(process_group: int, signal_number: int) -> bool:
    """Send the signal to the group; False when no process of it is left."""
    try:
        os.killpg(process_group, signal_number)
    except ProcessLookupError:
        return False
    return True


class GroupWatchdog:
    """The starting side: the watchdog process and the write end of its pipe."""

    def __init__(self, grace_seconds: float = 30.0) -> None:
        # Not inherited by the programs started later (PEP 446: close-on-exec). A child forked without an
        # exec (multiprocessing's "fork") would hold it open, and the watchdog would wait for that one too.
        read_end, self._pipe = os.pipe()
        # A session of its own: a Ctrl-C at the terminal must not stop it before it has done its work.
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(read_end), str(grace_seconds)], pass_fds=[read_end], stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(read_end)

    def start(self, command: list[str], **popen_arguments: Any) -> subprocess.Popen:
        """Start `command` as the leader of a new process group and watch that group. The command runs
        only once the watchdog knows the group, and hears Ctrl-C whatever this process ignores
        (group_leader.py)."""
        gate_read, gate_write = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "aisyst_pipelines.group_leader", str(gate_read), *command],
                pass_fds=[gate_read], start_new_session=True, **popen_arguments,
            )
        finally:
            os.close(gate_read)
        try:
            self._watch(process.pid)  # a new session: its process group's id is its pid
            os.write(gate_write, b"1")
        finally:
            os.close(gate_write)  # unopened (the watchdog could not be told): the command never runs
        return process

    def _watch(self, process_group: int) -> None:
        os.write(self._pipe, f"{process_group}\n".encode())

    def release(self) -> None:
        """The group was stopped (or never started): the watchdog ends without doing anything."""
        os.write(self._pipe, STOPPED)
        os.close(self._pipe)
        self._process.wait()


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]))
