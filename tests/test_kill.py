"""Crash safety, short form of ``scripts/kill_test.py``: real ``soundscope index`` processes SIGKILLed
at aimed moments (inside an item's transaction, while the WAL is checkpointed, between a vector index's
data file and its sidecar), each followed by the script's full verification and a rerun."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from scripts.kill_test import Victim, index_cmd, kill_once, verify
from tests.conftest import DEMO, demo_copies

SOUNDS = sorted((DEMO / "sounds").glob("*/*.ogg"))[:10]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return demo_copies(tmp_path / "corpus", SOUNDS)


def _files(corpus: Path) -> set[str]:
    return {str(p) for p in corpus.iterdir()}


def test_kills_inside_a_commit_and_a_checkpoint_then_resume(tmp_path, corpus):
    data, log, rng = tmp_path / "data", tmp_path / "faults.log", random.Random(1)

    def start(stop):
        return Victim(index_cmd(corpus, data, asr="none"), log, stop)

    _, k = kill_once(start, "commit", rng)  # stopped inside the 1st-4th item's transaction
    assert k.reached and k.at == "commit" and not k.problems
    after_commit = verify(data, _files(corpus), {})
    assert after_commit.ok, after_commit.problems
    assert after_commit.items < len(SOUNDS)  # the item being committed was rolled back

    _, k = kill_once(start, "checkpoint+", rng)  # the rerun finishes; killed while closing the catalog
    assert k.reached and k.at in ("checkpoint", "checkpoint.end") and not k.problems
    after_checkpoint = verify(data, _files(corpus), after_commit.snapshot)
    assert after_checkpoint.ok, after_checkpoint.problems
    assert after_checkpoint.items == len(SOUNDS)

    final = start(None)
    final.proc.communicate(timeout=300)
    assert final.proc.returncode == 0
    done = verify(data, _files(corpus), after_checkpoint.snapshot, final=True)
    assert done.ok and done.snapshot == after_checkpoint.snapshot, done.problems  # nothing re-analysed


def test_kill_between_a_vector_index_and_its_sidecar(tmp_path, corpus):
    """A saved index is a data file plus the sidecar naming it: killed after the new data file was
    written, the old pair (here: none) still describes the library; the next save cleans up."""
    data, log = tmp_path / "data", tmp_path / "faults.log"
    first = Victim(index_cmd(corpus, data, asr="none"), log)
    first.proc.communicate(timeout=300)
    assert first.proc.returncode == 0
    before = verify(data, _files(corpus), {})
    assert before.ok, before.problems
    flush = [sys.executable, "-c", f"from soundscope.store import Store; Store({str(data)!r}).flush(force=True)"]

    vectors = data / "vectors"
    empty = {p.name: p.read_text() for p in vectors.glob("*.ivf.json")}  # spaces the run had no vector in
    assert all('"count": 0' in text for text in empty.values())
    saver = Victim(flush, log, "vectors.sidecar")
    assert saver.stopped(120)
    saver.kill()
    assert {p.name: p.read_text() for p in vectors.glob("*.ivf.json")} == empty  # no sidecar committed...
    assert len(list(vectors.glob("*.ivf"))) > len(empty)  # ...beside the data file that was written
    killed = verify(data, _files(corpus), before.snapshot)
    assert killed.ok, killed.problems

    saver = Victim(flush, log)
    saver.proc.communicate(timeout=120)
    assert saver.proc.returncode == 0
    saved = verify(data, _files(corpus), before.snapshot, final=True)
    assert saved.ok, saved.problems
    sidecars = list(vectors.glob("*.ivf.json"))
    assert sidecars and len(list(vectors.glob("*.ivf"))) == len(sidecars)  # the orphan was removed
