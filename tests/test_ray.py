"""Distributed ingest on a real local Ray cluster, real models: the same index as a local run, the same
per-file failures, an incremental rerun from the command line, and an actor killed mid-run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from soundscope.api import Library
from soundscope.store.blobs import decode
from tests.conftest import DEMO, skip_unless_ci

try:
    import ray
except ImportError:
    skip_unless_ci("Ray is not installed: pip install 'soundscope[ray]' (scripts/test.sh does)")

PICKS = [
    "sounds/dog/1-30344-A.ogg",
    "sounds/rain/1-17367-A.ogg",
    "sounds/rooster/1-26806-A.ogg",
    "sounds/sneezing/1-26143-A.ogg",
    "speech/prompts/hello-world.wav",
    "music/sorohanro_-_solo-trumpet-06.ogg",
]
BROKEN = "broken.flac"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local two-CPU Ray cluster in its own temp folder (never another run's /tmp/ray session); on a
    loaded machine its start can time out once, so it gets a second try."""
    error = None
    for attempt in range(2):
        try:
            temp = tmp_path_factory.mktemp(f"ray{attempt}")
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                     _temp_dir=str(temp))  # fmt: skip
            break
        except Exception as exc:  # any failure to start is reported below
            error = exc
            ray.shutdown()
    else:
        skip_unless_ci(f"cannot start a local Ray cluster here: {type(error).__name__}: {error}")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-corpus")
    for rel in PICKS:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / rel, dst)
    (root / BROKEN).write_bytes(b"fLaC" + bytes(100))
    return root


@pytest.fixture(scope="module")
def both(cluster, corpus, tmp_path_factory):
    """The corpus indexed in this process (jobs=1) and on two Ray actors, into two data directories."""
    base = tmp_path_factory.mktemp("ray-data")
    with Library(base / "local", asr_model="none") as local:
        r_local = local.index([corpus], jobs=1)
        with Library(
            base / "ray", analyzers=local.analyzers, music_analyzers=local.music_analyzers, asr_model="none"
        ) as dist:
            r_ray = dist.index([corpus], jobs=2, ray=True)
            yield local, r_local, dist, r_ray


def _blobs(lib: Library, table: str) -> dict[tuple, tuple[np.ndarray | None, np.ndarray | None]]:
    """(path, [segment start, end,] space) -> (scores, embedding) as float arrays."""
    conn = sqlite3.connect(f"file:{lib.data_dir / 'catalog.sqlite'}?mode=ro", uri=True)
    if table == "item_data":
        sql = "SELECT i.path, d.space, d.scores, d.embedding FROM item_data d JOIN items i ON i.id = d.item_id"
    else:
        sql = (
            "SELECT i.path, s.start, s.end, d.space, d.scores, d.embedding FROM segment_data d"
            " JOIN segments s ON s.id = d.segment_id JOIN items i ON i.id = s.item_id"
        )
    out = {}
    for *key, scores, emb in conn.execute(sql):
        out[tuple(key)] = tuple(decode(b, lib.store.catalog.codec) for b in (scores, emb))
    conn.close()
    return out


def test_ray_gives_the_same_index_and_failures_as_a_local_run(both):
    local, r_local, dist, r_ray = both
    assert (r_local.indexed, r_local.failed) == (r_ray.indexed, r_ray.failed) == (len(PICKS), 1)
    assert [(os.path.basename(f.path), f.reason) for f in r_ray.failures] == [
        (os.path.basename(f.path), f.reason) for f in r_local.failures
    ]
    assert r_ray.failures[0].path.endswith(BROKEN) and "not a readable audio file" in r_ray.failures[0].reason
    assert dist.failures() == local.failures()

    def items(lib):
        return {
            r.path: (r.kind, r.description, round(r.duration_s, 4), r.sample_rate, r.content_hash)
            for r in lib.store.catalog.items()
        }

    assert items(dist) == items(local)
    assert {r.kind for r in dist.store.catalog.items()} >= {"speech", "music"}
    for table in ("item_data", "segment_data"):
        a, b = _blobs(local, table), _blobs(dist, table)
        assert a.keys() == b.keys() and a
        for key, (scores, emb) in a.items():
            for x, y in zip((scores, emb), b[key], strict=True):
                assert (x is None) == (y is None), key
                if x is not None:
                    np.testing.assert_allclose(y, x, atol=1 / 127, err_msg=str(key))  # one q8 code step at most
    for query in ("dog barking", "rain", "someone speaking"):
        assert [(h.path, round(h.score, 3)) for h in dist.search(query, limit=4)] == [
            (h.path, round(h.score, 3)) for h in local.search(query, limit=4)
        ]


def test_rerun_from_the_command_line_with_its_own_ray_is_incremental(both, corpus):
    _, _, dist, _ = both
    ids = {r.path: r.id for r in dist.store.catalog.items()}
    cmd = [sys.executable, "-m", "soundscope.cli", "index", str(corpus), "--data-dir", str(dist.data_dir)]
    proc = subprocess.run(
        [*cmd, "--ray", "-j", "2", "--asr-model", "none", "-q", "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr  # 1: some file failed (the broken one, retried on every run)
    report = json.loads(proc.stdout)
    assert (report["indexed"], report["unchanged"], report["removed"], report["failed"]) == (0, len(PICKS), 0, 1)
    assert report["failures"][0]["path"].endswith(BROKEN)
    assert {r.path: r.id for r in dist.store.catalog.items()} == ids


def _busy_analysts() -> list[int]:
    """Processes of this test's Ray cluster (descendants of this process) analysing a file right now."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parents:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"ray::_Analyst.analyze") and ours(pid):  # Ray titles a worker by what it runs
            found.append(pid)
    return found


def test_an_actor_killed_mid_run_fails_one_file_and_the_run_goes_on(both, corpus, tmp_path, caplog):
    local, *_ = both
    killed = []

    def kill_one(p):
        if not killed and (pids := _busy_analysts()):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    with Library(
        tmp_path / "data", analyzers=local.analyzers, music_analyzers=local.music_analyzers, asr_model="none"
    ) as lib:
        with caplog.at_level(logging.WARNING, logger="soundscope.distributed"):
            r = lib.index([corpus], jobs=2, ray=True, progress=kill_one)
        assert killed, "no busy Ray actor found to kill"
        died = [f for f in r.failures if "the Ray worker analysing it died" in f.reason]
        assert len(died) == 1, r.failures
        hit_broken = died[0].path.endswith(BROKEN)  # the busy actor may have been on the broken file itself
        assert (r.indexed, r.failed) == ((len(PICKS), 1) if hit_broken else (len(PICKS) - 1, 2)), r.failures
        assert "a Ray worker died while analysing" in caplog.text
        again = lib.index([corpus], jobs=1)  # the blamed file is retried, like any failure
        want = (0, len(PICKS), 1) if hit_broken else (1, len(PICKS) - 1, 1)
        assert (again.indexed, again.unchanged, again.failed) == want
        assert lib.store.catalog.count() == len(PICKS)


def test_ray_is_imported_only_when_asked_for():
    code = textwrap.dedent(
        """
        import sys
        import soundscope, soundscope.cli, soundscope.distributed as d
        assert "ray" not in sys.modules
        class Job:
            path = "x.wav"
        for address in ("127.0.0.1:1", True):  # nothing listens on port 1; then as if the extra were not installed
            try:
                list(d.analyses([Job()], [], 1, 10.0, None, jobs=1, address=address))
            except d.RayUnavailableError as exc:
                print(exc)
            sys.modules["ray"] = None
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    unreachable, missing = proc.stdout.strip().splitlines()
    assert unreachable.startswith("cannot connect to the Ray cluster at 127.0.0.1:1: ")
    assert missing == "Ray is not installed: pip install 'soundscope[ray]'"
