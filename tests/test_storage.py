"""A full disk and a read-only data directory: an index run stops with one clear message and leaves a
catalog that opens and passes its checks; a read-only library is still searched.

The full disk is a small tmpfs (needs root to mount; skipped with the reason otherwise). The read-only
library is a tmpfs remounted read-only as root, or a folder without write permission otherwise."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundscope.api import Library
from soundscope.check import check
from tests.conftest import DEMO, demo_copies

SOUNDS = [sorted(d.glob("*.ogg"))[0] for d in sorted((DEMO / "sounds").iterdir()) if d.is_dir()][:8]  # 5 s each
FULL = "no space left on the disk holding {data}: indexing stopped"
READ_ONLY = "the library at {data} cannot be written"


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True, capture_output=True)


@contextlib.contextmanager
def _tmpfs(where: Path, size_kb: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    try:
        _mount(where, f"size={size_kb}k")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _index(corpus: Path, data: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "soundscope.cli", "index", str(corpus), "--data-dir", str(data), "-q", "-j", "1",
           "--asr-model", "none"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return demo_copies(tmp_path / "corpus", SOUNDS)


def _catalog_ok(data: Path) -> int:
    """Items in the catalog, once it has passed every check that needs no file (a fresh connection)."""
    with sqlite3.connect(data / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    with Library(data, create=False) as lib:
        report = check(lib.store, repair=False)
        assert report.ok, [c.to_dict() for c in report.problems]
    return int(n)


def test_a_full_disk_stops_the_run_with_a_clear_message_and_a_sound_catalog(tmp_path, corpus):
    with _tmpfs(tmp_path / "disk", 1200) as disk:  # room for the schema and a file or two, not for eight
        data = disk / "data"
        run = _index(corpus, data)
        assert run.returncode == 2, run.stderr
        assert FULL.format(data=data) in run.stderr and "Traceback" not in run.stderr
        kept = _catalog_ok(data)
        assert kept < len(SOUNDS)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed: go on
        run = _index(corpus, data)
        assert run.returncode == 0, run.stderr
        assert _catalog_ok(data) == len(SOUNDS)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    if os.geteuid() == 0:  # root writes through permissions: remount the tmpfs read-only instead
        subprocess.run(["mount", "-o", "remount,ro", str(folder.parent)], check=True)
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder.parent)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


def test_a_read_only_library_is_searched_and_refuses_writes(tmp_path, corpus, yamnet_model):
    root = os.geteuid() == 0
    with _tmpfs(tmp_path / "disk", 65536) if root else contextlib.nullcontext(tmp_path) as disk:
        data = disk / "data"
        assert _index(corpus, data).returncode == 0
        with Library(data, create=False) as lib:
            want = [h.path for h in lib.search("dog barking", limit=3)]
            like = [h.path for h in lib.similar(want[0], limit=3)]
        assert want and like and "dog" in Path(want[0]).name
        with _read_only(data):
            with Library(data, create=False) as lib:  # opens (no -shm can be made: immutable read)
                assert lib.store.catalog.read_only
                assert [h.path for h in lib.search("dog barking", limit=3)] == want
                assert [h.path for h in lib.similar(want[0], limit=3)] == like
                assert lib.stats()["items"] == len(SOUNDS)
            run = _index(corpus, data)
            assert run.returncode == 2, run.stderr
            assert READ_ONLY.format(data=data) in run.stderr and "Traceback" not in run.stderr
        assert _catalog_ok(data) == len(SOUNDS)
