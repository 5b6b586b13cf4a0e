"""Becomes the command that leads a watched process group, once the watchdog knows the group.

    python -m aisyst_pipelines.group_leader <gate fd> <program> [<argument> …]

`GroupWatchdog.start` runs this as the first process of a new session (its pid is the group's id),
tells the watchdog that id, and only then writes to the gate. This process waits for that byte and
execs the command in its own place (same pid: the command leads the watched group). Two gaps close:

- The starter killed between starting the command and telling the watchdog: the gate's write end
  closes with it, this reads end-of-file and exits without running anything. Before, `dagster dev` ran
  on unwatched and started its webserver, daemon and code servers for nobody (seen on a loaded
  machine: `aisyst ingest` SIGKILLed in the instant after it started `dagster dev`).
- Ctrl-C ignored from above: the group is stopped with Ctrl-C (the watchdog; `stop_process_group` of
  the deployment). A process started in the background by a non-interactive shell (`aisyst dev &` in a
  script, many CI runners) inherits SIGINT *ignored*, an ignored signal stays ignored through `exec`,
  and `dagster dev` and all it starts would not hear that Ctrl-C: every stop would end 30 s later in
  SIGKILL of the webserver, the daemon and any run worker. So SIGINT is set back to its default action
  before the exec; nothing else the caller ignores changes.

Python cannot do either between fork and exec without `preexec_fn`, which is unsafe in a process with
threads (`aisyst dev` runs the emulator in threads): hence this small program.
"""

from __future__ import annotations

import os
import signal
import sys

STARTER_GONE = 75  # the exit status when the starter died before opening the gate (EX_TEMPFAIL)


def main(gate_fd: int, command: list[str]) -> None:
    with os.fdopen(gate_fd, "rb") as gate:
        if not gate.read(1):
            sys.exit(STARTER_GONE)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
