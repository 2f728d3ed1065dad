"""What goes wrong with the disk under a data directory, said plainly: full, or not writable.

SQLite reports a full disk as ``OperationalError("database or disk is full")`` and a read-only file as
``"attempt to write a readonly database"``; the OS as ``ENOSPC``/``EDQUOT`` and ``EROFS``/``EACCES``.
:func:`storage_error` turns any of those into a :class:`StorageError` naming the data directory and
what to do, so a run stops with one clear line instead of a traceback or a failure per file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class StorageError(OSError):
    """The data directory cannot take a write: its disk is full (``full``) or it is read-only."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(errno.ENOSPC if full else errno.EROFS, message)
        self.full = full

    def __str__(self) -> str:
        return str(self.strerror)


def full_disk(data_dir: str | os.PathLike[str]) -> StorageError:
    return StorageError(
        f"no space left on the disk holding {Path(data_dir)}: indexing stopped (the files finished so far "
        "are kept and searchable); free some space and run soundscope index again to go on",
        full=True,
    )


def read_only(data_dir: str | os.PathLike[str], why: str = "read-only") -> StorageError:
    return StorageError(
        f"the library at {Path(data_dir)} cannot be written ({why}): searching it works, indexing needs a "
        "writable data directory (or --data-dir elsewhere)",
        full=False,
    )


def storage_error(exc: BaseException, data_dir: str | os.PathLike[str]) -> StorageError | None:
    """The :class:`StorageError` that ``exc`` amounts to, or None when it is about something else."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "disk is full" in text:
            return full_disk(data_dir)
        if "readonly database" in text or "read-only" in text:
            return read_only(data_dir)
        return None
    if isinstance(exc, OSError) and exc.errno in FULL:
        return full_disk(data_dir)
    if isinstance(exc, OSError) and exc.errno in READ_ONLY:
        return read_only(data_dir, os.strerror(exc.errno).lower())
    return None


__all__ = ["StorageError", "full_disk", "read_only", "storage_error"]
