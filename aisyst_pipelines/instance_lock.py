"""One deployment at a time on a Dagster instance: a lock file in DAGSTER_HOME.

Two `aisyst` commands that each start a local deployment on one home — cron starting `aisyst ingest`
again while the last one still runs, a second `aisyst demo` in another terminal, `aisyst dev` while a
one-off command's deployment is up — would run two daemons ticking the same sensors over one SQLite
instance, and a demo would wipe the warehouse under the other. So `local_deployment` and the demo hold
this lock, and a second command is refused with who holds it. The lock is the kernel's (`flock`): it
goes with its holder, however that ends (SIGKILL included), so a lock file left behind never blocks.
Commands that find a running `aisyst dev` use it and take no lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "aisyst-deployment.lock"

# Taken again by its holder (the demo, then the deployment it starts) inside its own block: not locked
# twice — a second flock on a second open of the file would conflict with our own.
_held_here: set[Path] = set()


class InstanceInUse(RuntimeError):
    """Another process runs a deployment on this Dagster instance."""


@contextmanager
def instance_lock(dagster_home: Path) -> Iterator[None]:
    path = (dagster_home / LOCK_FILE).resolve()
    if path in _held_here:
        yield
        return
    dagster_home.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "a process starting"
            raise InstanceInUse(
                f"another command runs a Dagster deployment on {dagster_home} ({holder}); wait until it ends, "
                "or start `aisyst dev` once: the other commands then use it"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:2]])}\n")
        lock.flush()
        _held_here.add(path)
        try:
            yield
        finally:
            _held_here.discard(path)
