"""``index --jobs N`` when a worker process dies natively: the file that killed it is reported with the
reason, the others are indexed, the run ends (``multiprocessing.Pool`` hung forever here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soundscope import workers
from soundscope.api import Library
from tests.conftest import DEMO, time_bound

SOUNDS = [sorted(d.glob("*.ogg"))[0] for d in sorted((DEMO / "sounds").iterdir()) if d.is_dir()][:6]


def test_a_worker_that_segfaults_fails_only_its_file(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for src in SOUNDS:
        shutil.copy(src, corpus / f"{src.parent.name}-{src.name}")
    poison = corpus / "poison-clip.ogg"
    shutil.copy(SOUNDS[0], poison)
    monkeypatch.setenv("SOUNDSCOPE_FAULT_CRASH_ON", "poison-")  # inherited by the spawned workers only
    with Library(tmp_path / "data", asr_model="none") as lib, time_bound(240):
        report = lib.index([corpus], jobs=2)
        assert (report.indexed, report.failed) == (len(SOUNDS), 1), report.failures
        assert report.failures[0].path == str(poison) and report.failures[0].reason == workers.CRASHED
        assert lib.failures() == [(str(poison), workers.CRASHED)]
        assert lib.stats()["items"] == len(SOUNDS)
    monkeypatch.delenv("SOUNDSCOPE_FAULT_CRASH_ON")
    with Library(tmp_path / "data", asr_model="none") as lib:  # the next run indexes it (it was no bad file)
        again = lib.index([corpus], jobs=1)
        assert (again.indexed, again.failed, again.unchanged) == (1, 0, len(SOUNDS))


def _init_fails(*_args) -> None:
    raise RuntimeError("this worker cannot load its models")


def _never(task):  # pragma: no cover - never reached: the initializer failed
    return task


def test_a_failing_worker_initializer_is_an_error_not_a_hang():
    with time_bound(120), pytest.raises(RuntimeError, match="cannot load its models"):
        list(workers.pool_results(["a.wav", "b.wav", "c.wav"], 2, _never, _init_fails, ()))


_PARENT = """
import sys, time
from soundscope import workers

def slow(task):
    time.sleep(60)
    return task

def init():
    pass

if __name__ == "__main__":
    for _ in workers.pool_results(["a", "b"], 2, slow, init, ()):
        pass
"""


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` is (still) a spawned multiprocessing worker."""
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc (Linux)")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A run killed outright (kill -9, the OOM killer) leaves no analysis workers behind: they notice
    their parent is gone within a few seconds and exit (they used to wait forever, models loaded)."""
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 2:  # the executor spawns its 2 workers
            time.sleep(0.2)
            kids = [k for k in _children(parent.pid) if _is_worker(k)]
        assert len(kids) >= 2, "the workers never started"
        time.sleep(1.0)  # the workers are inside their slow tasks
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_is_worker(k) for k in kids):
            time.sleep(0.2)
        alive = [k for k in kids if _is_worker(k)]
        assert not alive, f"workers {alive} outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
