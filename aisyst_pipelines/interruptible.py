"""Runs a command with Ctrl-C (SIGINT) back at its default action.

    python -m aisyst_pipelines.interruptible <program> [<argument> …]

A deployment's processes are stopped with Ctrl-C: `stop_process_group` at the end of the block and the
group watchdog when the starting process dies both send SIGINT to `dagster dev`'s group. But a process
started in the background by a non-interactive shell (`aisyst dev &` in a script, `nohup … &`, many
CI runners and service wrappers) inherits SIGINT *ignored*, and an ignored signal stays ignored through
`exec`: `dagster dev` and everything it starts would not hear that Ctrl-C, and every stop would end 30 s
later in SIGKILL — the webserver, the daemon and any run worker killed in the middle of their work.

Python cannot reset one signal between fork and exec without `preexec_fn`, which is unsafe in a
process with threads (the in-process emulator of `aisyst dev` has some), so this small program does it:
it sets SIGINT to its default action and execs the command in its own place (same pid, so the same
process group leader). Nothing else the caller ignores is changed.
"""

from __future__ import annotations

import os
import signal
import sys


def interruptible(command: list[str]) -> list[str]:
    """`command`, to be started so that it and every process it starts stop on Ctrl-C."""
    return [sys.executable, "-m", __name__, *command]


def main(command: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
