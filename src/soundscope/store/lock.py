"""The writer lock: at most one index run writes a data directory at a time.

``<data_dir>/index.lock`` is locked with ``flock(2)`` (advisory, exclusive) for as long as a run
writes, and holds the holder's pid for the message the next run prints. The kernel drops the lock
when the holder's descriptor closes, so a run that crashes or is killed (even by ``SIGKILL``) never
leaves a stale lock: the file itself staying behind means nothing, and the next run takes it.

Readers never take it: searches, ``show`` and the server's queries go on while a run writes (SQLite
WAL lets them read the last committed state).

Within one process the lock is re-entrant per thread (``Library.index`` holds it across model
registration and ``Indexer.run`` takes it again); another thread of the same process is refused like
another process, because each acquisition opens its own descriptor and ``flock`` locks belong to
the open file description.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from .errors import storage_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking (one writer per data directory is then up to you)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "index.lock"
POLL_S = 0.1
GRACE_S = 0.2  # even "refuse at once" retries this long: :func:`holder` takes the lock for an instant to look

_guard = threading.Lock()
_held: dict[str, list[int]] = {}  # lock path -> [thread ident, depth, fd] for the locks this process holds


class IndexLockedError(RuntimeError):
    """Another index run holds the writer lock of this data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], pid: int | None, waited_s: float = 0.0) -> None:
        self.data_dir = Path(data_dir)
        self.pid = pid
        who = f"pid {pid}" if pid else "pid unknown"
        msg = f"another soundscope index is running on {self.data_dir} ({who}); wait for it or stop it"
        if waited_s > 0:
            msg += f" (gave up after waiting {waited_s:g} s)"
        super().__init__(msg)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _read_pid(path: Path) -> int | None:
    """The pid written in the lock file by its live holder (None if unreadable or not written yet)."""
    for _ in range(10):  # a new holder writes its pid right after locking (over a dead one's): give it a moment
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        if text.isdigit() and _alive(int(text)):
            return int(text)
        time.sleep(0.01)
    return None


class IndexLock:
    """``with IndexLock(data_dir, wait=5.0): ...``: hold the writer lock, waiting up to ``wait``
    seconds for another holder to finish (0: refuse at once); raises :class:`IndexLockedError`."""

    def __init__(self, data_dir: str | os.PathLike[str], *, wait: float = 0.0) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self.wait = max(0.0, float(wait or 0.0))
        self._key: str | None = None

    def acquire(self) -> IndexLock:
        if fcntl is None:  # pragma: no cover
            return self
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (storage_error(exc, self.data_dir) or exc) from exc
        key = os.path.realpath(self.path)
        me = threading.get_ident()
        with _guard:
            held = _held.get(key)
            if held is not None and held[0] == me:
                held[1] += 1
                self._key = key
                return self
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
        except OSError as exc:  # a read-only library (medium or permissions) or a full disk: say so
            raise (storage_error(exc, self.data_dir) or exc) from exc
        deadline = time.monotonic() + max(self.wait, GRACE_S)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IndexLockedError(self.data_dir, _read_pid(self.path), self.wait) from None
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            except BaseException:
                os.close(fd)
                raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        with _guard:
            _held[key] = [me, 1, fd]
        self._key = key
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _guard:
            held = _held.get(key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _held[key]
        fd = held[2]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid left behind once nobody holds it
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(data_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the process holding the writer lock of ``data_dir``, or None when nobody holds it
    (0 when someone holds it but its pid cannot be read). Takes and drops the lock to find out."""
    path = Path(data_dir) / LOCK_NAME
    if fcntl is None or not path.exists():
        return None
    key = os.path.realpath(path)
    with _guard:
        if key in _held:
            return os.getpid()
    try:
        fd = os.open(key, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path) or 0
    finally:
        os.close(fd)  # closing drops the lock if it was taken here
    return None


__all__ = ["LOCK_NAME", "IndexLock", "IndexLockedError", "holder"]
