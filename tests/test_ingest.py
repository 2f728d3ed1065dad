"""Ingest with real models: incremental runs, per-file failures, moves, removals, kill and resume."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from soundscope.api import Library
from tests.conftest import shared


@pytest.fixture
def lib(tmp_path, yamnet_model):
    with Library(tmp_path / "data", analyzers=[yamnet_model]) as library:
        yield library


def test_bad_files_are_reported_and_the_run_goes_on(lib, small_corpus):
    (small_corpus / "empty.wav").write_bytes(b"")
    (small_corpus / "notes.mp3").write_text("not audio\n" * 100)
    good = (small_corpus / "sounds" / "dog" / "1-30344-A.ogg").read_bytes()
    (small_corpus / "truncated.ogg").write_bytes(good[:300])
    (small_corpus / "readme.txt").write_text("ignored: not an audio extension")
    report = lib.index([small_corpus])
    assert report.indexed == 6 and report.failed == 3
    reasons = {os.path.basename(f.path): f.reason for f in report.failures}
    assert reasons["empty.wav"] == "empty file (0 bytes)"
    assert "not a readable audio file" in reasons["notes.mp3"]
    assert "truncated.ogg" in reasons
    assert len(lib.failures()) == 3


def test_incremental_unchanged_changed_moved_removed(lib, small_corpus):
    assert lib.index([small_corpus]).indexed == 6
    again = lib.index([small_corpus])
    assert (again.indexed, again.unchanged, again.removed) == (0, 6, 0)
    rain = small_corpus / "sounds" / "rain" / "1-17367-A.ogg"
    os.utime(rain, (1, 1))  # touched, same content: hash decides it is unchanged
    assert lib.index([small_corpus]).indexed == 0
    dog = small_corpus / "sounds" / "dog" / "1-30226-A.ogg"
    old_id = lib.store.catalog.item_by_path(str(dog)).id
    shutil.move(dog, small_corpus / "renamed.ogg")  # moved: no re-analysis, same item
    r = lib.index([small_corpus])
    assert (r.indexed, r.removed) == (0, 0)
    assert lib.store.catalog.item_by_path(str(small_corpus / "renamed.ogg")).id == old_id
    shutil.copy(small_corpus / "speech" / "prompts" / "hello-world.wav", rain)  # content changed
    r = lib.index([small_corpus])
    assert r.indexed == 1 and lib.store.catalog.item_by_path(str(rain)).kind == "speech"
    (small_corpus / "renamed.ogg").unlink()
    r = lib.index([small_corpus])
    assert r.removed == 1 and lib.store.catalog.count() == 5
    assert len(lib.search("dog barking", limit=10)) == 5


def test_removal_is_scoped_to_the_indexed_roots(lib, small_corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(small_corpus / "sounds" / "dog" / "1-30344-A.ogg", other / "dog.ogg")
    lib.index([small_corpus])
    lib.index([other])
    assert lib.store.catalog.count() == 7  # indexing `other` did not drop the first root's items


def test_a_folder_emptied_like_an_unmounted_drive_keeps_its_items_until_pruned(lib, small_corpus, tmp_path):
    """An unmounted drive leaves an empty mount point: its items (analysis and listeners' feedback) stay,
    the run says so, and ``prune`` removes them. A folder that still holds audio drops its missing files."""
    drive = tmp_path / "drive"
    shutil.copytree(small_corpus / "sounds", drive)
    assert lib.index([drive]).indexed == 4
    lib.feedback("like", str(drive / "dog" / "1-30344-A.ogg"), user="ana")
    away = tmp_path / "away"
    shutil.move(drive, away)
    drive.mkdir()  # the mount point without its drive
    r = lib.index([drive])
    assert (r.indexed, r.removed, r.kept) == (0, 0, {str(drive): 4})
    assert lib.store.catalog.count() == 4 and len(lib.store.catalog.events()) == 1
    assert r.to_dict()["kept"] == {str(drive): 4}
    shutil.copy(away / "rain" / "1-17367-A.ogg", drive / "rain.ogg")  # audio again: missing files are dropped
    r = lib.index([drive])  # (that rain is one of the four, moved: it keeps its item)
    assert (r.indexed, r.removed, r.kept, lib.store.catalog.count()) == (0, 3, {}, 1)
    assert lib.index([drive], prune=True).removed == 0
    (drive / "rain.ogg").unlink()
    r = lib.index([drive], prune=True)
    assert (r.removed, r.kept, lib.store.catalog.count()) == (1, {}, 0)


def test_killed_run_resumes_without_duplicates(tmp_path):
    esc = shared("esc10", "audio")
    corpus = tmp_path / "esc"
    files = sorted(esc.glob("*/*.ogg"))[:120]
    for f in files:
        (corpus / f.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(f, corpus / f.parent.name / f.name)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "soundscope.cli", "index", str(corpus), "--data-dir", str(data), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = data / "catalog.sqlite"
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    n = conn.execute("SELECT count(*) FROM items").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n >= 10:
                proc.send_signal(signal.SIGKILL)
                killed_at = n
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and killed_at < len(files), "the run finished before it could be killed"
    out = subprocess.run([*cmd[:-1], "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["failed"] == 0
    assert report["indexed"] + report["unchanged"] == len(files)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT path) FROM items").fetchone() == (len(files), len(files))
        assert (
            conn.execute("SELECT count(*) FROM segments WHERE item_id NOT IN (SELECT id FROM items)").fetchone()[0] == 0
        )
        assert conn.execute("SELECT count(*) FROM items_fts").fetchone()[0] == len(files)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_worker_processes_give_the_same_index(tmp_path, small_corpus, yamnet_model):
    (small_corpus / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    with Library(tmp_path / "one") as one, Library(tmp_path / "two") as two:
        r1 = one.index([small_corpus])
        r2 = two.index([small_corpus], jobs=2)
        assert (r1.indexed, r1.failed) == (r2.indexed, r2.failed) == (6, 1)
        assert r1.failures[0].reason == r2.failures[0].reason
        d1 = {r.path: (r.kind, r.description) for r in one.store.catalog.items()}
        d2 = {r.path: (r.kind, r.description) for r in two.store.catalog.items()}
        assert d1 == d2
        assert [h.path for h in one.search("rain", limit=3)] == [h.path for h in two.search("rain", limit=3)]
