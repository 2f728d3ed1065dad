"""``index --jobs N`` when a worker process dies natively: the file that killed it is reported with the
reason, the others are indexed, the run ends (``multiprocessing.Pool`` hung forever here)."""

from __future__ import annotations

import shutil

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
