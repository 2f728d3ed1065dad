"""One writer per data directory: the index lock (flock on ``<data_dir>/index.lock``) across threads,
processes, SIGKILL and the server's jobs; searches from other processes go on while a run writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundscope.api import Library
from soundscope.check import check
from soundscope.store.lock import LOCK_NAME, IndexLock, IndexLockedError, holder
from tests.conftest import DEMO

SOUNDS = [sorted(d.glob("*.ogg"))[0] for d in sorted((DEMO / "sounds").iterdir()) if d.is_dir()][:8]  # 5 s each


def _corpus(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for src in SOUNDS[:n]:
        shutil.copy(src, root / f"{src.parent.name}-{src.name}")
    return root


def _index_cmd(corpus: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "soundscope.cli", "index", str(corpus), "--data-dir", str(data), "-q", "-j", "1",
            "--asr-model", "none", "--json", *extra]  # fmt: skip


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(proc: subprocess.Popen, data: Path, *, timeout: float = 60.0) -> None:
    """Until ``proc`` holds the lock (its pid is in the lock file; the file is only read, never locked
    here, so this never gets in the way of the run it waits for)."""
    lock = data / LOCK_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it took the lock: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("the run never took the lock")


def _items(data: Path) -> list[tuple]:
    with sqlite3.connect(data / "catalog.sqlite", timeout=30) as conn:
        return conn.execute("SELECT id, path, content_hash, indexed_at FROM items ORDER BY id").fetchall()


# -- the lock itself ------------------------------------------------------------------------------


def test_lock_is_reentrant_per_thread_and_exclusive_across_threads(tmp_path):
    data = tmp_path / "data"
    with IndexLock(data):
        assert (data / LOCK_NAME).read_text().strip() == str(os.getpid())
        with IndexLock(data):  # the same thread again (Library.index, then Indexer.run)
            pass
        assert holder(data) == os.getpid()  # still held after the inner release
        errors: list[BaseException] = []

        def other(wait: float) -> None:
            try:
                with IndexLock(data, wait=wait):
                    pass
            except BaseException as exc:
                errors.append(exc)

        t0 = time.monotonic()
        for wait in (0.0, 0.3):
            t = threading.Thread(target=other, args=(wait,))
            t.start()
            t.join()
        assert time.monotonic() - t0 >= 0.3
        assert [type(e) for e in errors] == [IndexLockedError, IndexLockedError]
        assert str(errors[0]) == (
            f"another soundscope index is running on {data} (pid {os.getpid()}); wait for it or stop it"
        )
        assert errors[0].pid == os.getpid() and "gave up after waiting 0.3 s" in str(errors[1])
    assert holder(data) is None and (data / LOCK_NAME).read_text() == ""  # released, no pid left


def test_a_waiting_run_gets_the_lock_when_the_holder_lets_go(tmp_path):
    data = tmp_path / "data"
    held = threading.Event()

    def hold() -> None:
        with IndexLock(data):
            held.set()
            time.sleep(0.5)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    t0 = time.monotonic()
    with IndexLock(data, wait=30):
        waited = time.monotonic() - t0
    t.join()
    assert 0.2 < waited < 10


# -- processes ------------------------------------------------------------------------------------
# A run under test is frozen with SIGSTOP while it holds the lock (after its first file is committed,
# so it is in its write phase, possibly inside a transaction), so what must happen "while it indexes"
# happens then whatever the machine's speed; SIGCONT lets it finish.


@contextlib.contextmanager
def _indexing(corpus: Path, data: Path) -> Iterator[subprocess.Popen]:
    """A ``soundscope index`` process that has taken the lock and committed a file; never left behind."""
    proc = _start(_index_cmd(corpus, data))
    try:
        _wait_for_lock(proc, data)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(_items(data)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run finished before the test could meet it: {proc.communicate()}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.communicate()


@contextlib.contextmanager
def _frozen(proc: subprocess.Popen) -> Iterator[None]:
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


REFUSAL = "another soundscope index is running on {data} (pid {pid}); wait for it or stop it"


def test_second_index_refuses_and_a_waiting_one_finds_everything_unchanged(tmp_path):
    corpus = _corpus(tmp_path / "corpus", 8)
    data = tmp_path / "data"
    with _indexing(corpus, data) as first:
        with _frozen(first):
            second = subprocess.run(_index_cmd(corpus, data), capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert REFUSAL.format(data=data, pid=first.pid) in second.stderr
            assert json.loads(second.stdout)["error"] == REFUSAL.format(data=data, pid=first.pid)
            waiting = _start(_index_cmd(corpus, data, "--wait", "300"))
            time.sleep(1.0)
            assert waiting.poll() is None  # waits: the holder is still there
        try:
            out, err = first.communicate(timeout=300)
            assert first.returncode == 0, err
            done_at = time.time()
            assert json.loads(out)["indexed"] == 8
            after_first = _items(data)
            out, err = waiting.communicate(timeout=300)
            assert waiting.returncode == 0, err
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
    report = json.loads(out)
    assert (report["indexed"], report["unchanged"], report["removed"], report["failed"]) == (0, 8, 0, 0)
    assert _items(data) == after_first  # same ids and hashes, nothing re-analysed
    assert max(row[3] for row in after_first) < done_at
    with Library(data, create=False) as lib:
        assert check(lib.store, repair=False).ok


def test_search_from_another_process_while_an_index_runs(tmp_path, yamnet_model):
    corpus = _corpus(tmp_path / "corpus", 8)
    data = tmp_path / "data"
    dog = next(p for p in corpus.iterdir() if p.name.startswith("dog-"))
    with Library(data, analyzers=[yamnet_model], music_analyzers=[], asr_model="none") as lib:
        assert lib.index([dog]).indexed == 1  # something to find before the run starts
        with _indexing(corpus, data) as run:
            with _frozen(run):  # stopped mid-run, perhaps inside a write transaction: reads go on
                hits = lib.search("dog barking", limit=5)
                assert hits and hits[0].path == str(dog)
                assert lib.stats()["items"] >= 2  # what it committed is visible
            while run.poll() is None:  # and while it writes
                hits = lib.search("dog barking", limit=5)
                assert hits and hits[0].path == str(dog)
            out, err = run.communicate()
        assert run.returncode == 0, err
        assert json.loads(out)["indexed"] == 8 - 1
        assert lib.stats()["items"] == 8
        assert any("/rain-" in h.path for h in lib.search("rain", limit=3))


def test_lock_is_released_when_its_holder_is_killed(tmp_path, yamnet_model):
    corpus = _corpus(tmp_path / "corpus", 8)
    data = tmp_path / "data"
    with _indexing(corpus, data) as run:  # mid-run, a file committed
        run.send_signal(signal.SIGKILL)
        run.communicate()
    assert run.returncode == -signal.SIGKILL
    assert (data / LOCK_NAME).read_text().strip() == str(run.pid)  # the dead holder's pid stays in the file...
    assert holder(data) is None  # ...but the kernel dropped its lock
    with Library(data, analyzers=[yamnet_model], music_analyzers=[], asr_model="none") as lib:
        report = lib.index([corpus])  # wait=0: would refuse at once if the lock were stale
        assert report.failed == 0 and report.indexed + report.unchanged == 8 and report.indexed >= 1
        assert lib.stats()["items"] == 8
        assert check(lib.store, repair=False).ok


def test_server_index_job_while_the_cli_indexes(tmp_path, yamnet_model):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from soundscope import server

    corpus = _corpus(tmp_path / "corpus", 8)
    data = tmp_path / "data"
    lib = None

    def job_after_start(c) -> dict:
        resp = c.post("/api/index", json={"paths": [str(corpus)]})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        deadline = time.monotonic() + 120
        while job["state"] in ("queued", "scanning", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = c.get(f"/api/jobs/{job['id']}").json()
        return job

    try:
        with _indexing(corpus, data) as run, contextlib.ExitStack() as stack:
            # frozen before the app starts: on a loaded machine its start-up outlasted the CLI run's last
            # files, the run finished and released the lock, and the server's job ran (a flaky test)
            with _frozen(run):
                lib = Library(data, analyzers=[yamnet_model], music_analyzers=[], asr_model="none")
                c = stack.enter_context(TestClient(server.create_app(lib, allow_roots=[corpus], warm=False)))
                job = job_after_start(c)
                assert job["state"] == "failed", job
                assert job["error"] == REFUSAL.format(data=data, pid=run.pid)
                resp = c.get("/api/search", params={"q": "dog barking"})  # the server still answers
                assert resp.status_code == 200 and resp.json()["results"]
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
            assert json.loads(out)["indexed"] == 8  # the CLI run was not disturbed
            job = job_after_start(c)  # the lock is free again: a new job runs
            assert job["state"] == "done", job
            assert job["report"]["unchanged"] == 8 and job["report"]["indexed"] == 0
    finally:
        if lib is not None:
            lib.close()
