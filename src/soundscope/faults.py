"""Named fault points, for aiming crash tests (``scripts/kill_test.py``) at the moments that matter.

The writer calls :func:`point` at a few places where a crash is most likely to leave damage: inside
an item's transaction just before ``COMMIT`` (``commit``), before a vector index is written
(``vectors.save``), between the index file replacing the old one and its sidecar being written
(``vectors.sidecar``), after both (``vectors.saved``), and around closing the catalog, which
checkpoints the WAL into the database file (``checkpoint`` / ``checkpoint.end``).

Nothing happens unless the environment asks for it (read once, at import):

- ``SOUNDSCOPE_FAULT_LOG=FILE``: append ``<monotonic seconds> <pid> <name>`` for every point reached,
  so a test can tell where a process was when it was killed and how long each stage takes.
- ``SOUNDSCOPE_FAULT_STOP=name[@n][,name[@n]...]``: on reaching ``name`` (its ``n``-th time; default
  the first) the process stops itself with ``SIGSTOP``; the test then sends ``SIGKILL`` (a crash
  exactly there) or ``SIGCONT`` followed a moment later by ``SIGKILL`` (a crash during what follows).
- ``SOUNDSCOPE_FAULT_CRASH_ON=TEXT``: an analysis worker process given a file whose path contains
  ``TEXT`` dies of ``SIGSEGV`` (a native crash) before analysing it (:func:`crash_on`).

Written by hand: fault-injection packages patch functions from outside, which cannot stop a process
between two statements of one function (the index file replaced, its sidecar not yet written).
"""

from __future__ import annotations

import os
import signal
import time

_LOG = os.environ.get("SOUNDSCOPE_FAULT_LOG") or None
_STOP: dict[str, int] = {}
for _spec in filter(None, (os.environ.get("SOUNDSCOPE_FAULT_STOP") or "").split(",")):
    _name, _, _nth = _spec.strip().partition("@")
    _STOP[_name] = int(_nth) if _nth.isdigit() else 1
_SEEN: dict[str, int] = {}
_CRASH_ON = os.environ.get("SOUNDSCOPE_FAULT_CRASH_ON") or None
ACTIVE = bool(_LOG or _STOP)


def point(name: str) -> None:
    """Mark fault point ``name``: log it and/or stop here when the environment asks (else a no-op)."""
    if not ACTIVE:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{time.monotonic():.6f} {os.getpid()} {name}\n")
    if _STOP.get(name) == _SEEN[name]:
        os.kill(os.getpid(), signal.SIGSTOP)
        if _LOG:  # let go (SIGCONT): the stage after the point starts now
            with open(_LOG, "a") as f:
                f.write(f"{time.monotonic():.6f} {os.getpid()} {name}+\n")


def crash_on(path: str) -> None:
    """In an analysis worker: die natively (SIGSEGV) on a file the environment names (else a no-op)."""
    if _CRASH_ON and _CRASH_ON in path:
        os.kill(os.getpid(), signal.SIGSEGV)
