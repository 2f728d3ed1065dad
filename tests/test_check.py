"""``soundscope check``: a real library (SQLite, faiss, real models) corrupted on purpose, one way per
test; check finds each problem, ``--repair`` fixes it, and checking again is clean."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from soundscope import cli
from soundscope.api import Library
from soundscope.check import check
from soundscope.store import Store
from soundscope.store.blobs import encode
from soundscope.store.ivf import IvfIndex
from soundscope.store.lock import IndexLock, IndexLockedError
from soundscope.store.vectors import data_file
from tests.conftest import DEMO

PICKS = ["sounds/dog/1-30344-A.ogg", "sounds/rain/1-17367-A.ogg", "speech/prompts/hello-world.wav"]


@pytest.fixture(scope="module")
def template(tmp_path_factory, yamnet_model) -> tuple[Path, Path]:
    """Three short files indexed once (the speech one transcribed); tests work on copies of its data dir."""
    root = tmp_path_factory.mktemp("check")
    corpus = root / "corpus"
    for rel in PICKS:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / rel, corpus / rel)
    with Library(root / "data", analyzers=[yamnet_model], music_analyzers=[], asr_model="tiny.en") as lib:
        report = lib.index([corpus])
        assert report.indexed == len(PICKS) and report.failed == 0, report.failures
        assert lib.stats()["passages"] > 0  # the transcript full-text index has rows to lose
        lib.store.flush(force=True)  # save the vector indexes (a library this small is otherwise never saved)
    assert data_file(root / "data" / "vectors" / "yamnet.ivf").is_file()
    return corpus, root / "data"


@pytest.fixture
def store(template, tmp_path):
    shutil.copytree(template[1], tmp_path / "data")
    with Store(tmp_path / "data") as s:
        yield s


def _by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def _failing(report) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def _raw(store: Store) -> sqlite3.Connection:
    """A second connection with foreign keys off (the default), to break things the catalog never would."""
    return sqlite3.connect(store.catalog.path, isolation_level=None)


def _repair_and_recheck(store: Store, broken: set[str]) -> None:
    """``broken`` is exactly what check finds; repair fixes all of it; check is clean afterwards."""
    found = check(store, repair=False)
    assert _failing(found) == broken, [c.to_dict() for c in found.checks]
    assert not found.ok
    fixed = check(store, repair=True)
    assert fixed.ok, [c.to_dict() for c in fixed.checks]
    assert {c.name for c in fixed.checks if c.repaired} == broken
    again = check(store, repair=False)
    assert again.ok and not _failing(again), [c.to_dict() for c in again.checks]


def test_a_fresh_library_is_clean_and_the_cli_agrees(store, capsys):
    report = check(store, repair=False)
    assert report.ok and not report.problems
    names = [c.name for c in report.checks]
    first = ["sqlite integrity", "foreign keys", "orphan rows", "full-text: items", "full-text: transcripts"]
    assert names[:5] == first
    assert {"vectors: yamnet", "vectors: description", "vectors: transcript", "files on disk"} <= set(names)
    assert (
        _by_name(report)["vectors: yamnet"].detail == "3 vectors (3 in the saved index), the same keys as the catalog"
    )
    assert cli.main(["check", "--data-dir", str(store.data_dir), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True and [c["name"] for c in body["checks"]] == names
    assert all(set(c) == {"name", "ok", "detail", "repaired"} for c in body["checks"])


def test_a_missing_library_exits_2(tmp_path, capsys):
    assert cli.main(["check", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"no library at {tmp_path / 'nowhere'}; run soundscope index first" in err
    assert not (tmp_path / "nowhere").exists()  # check never creates a library


def test_deleted_vector_index_file_is_rebuilt(store):
    path = data_file(store.data_dir / "vectors" / "yamnet.ivf")
    path.unlink()
    found = check(store, repair=False)
    assert f"{path.name} is missing" in _by_name(found)["vectors: yamnet"].detail
    _repair_and_recheck(store, {"vectors: yamnet"})
    assert data_file(path.with_name("yamnet.ivf")).is_file()


def test_garbage_in_the_vector_index_file_is_rebuilt(store, capsys):
    path = data_file(store.data_dir / "vectors" / "yamnet.ivf")
    path.write_bytes(b"\x00garbage" * 512)
    assert "unreadable" in _by_name(check(store, repair=False))["vectors: yamnet"].detail
    assert cli.main(["check", "--data-dir", str(store.data_dir)]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM   vectors: yamnet: {path.name} is unreadable" in out and "1 problem remains" in out
    assert cli.main(["check", "--data-dir", str(store.data_dir), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired  vectors: yamnet" in out and "rebuilt from the catalog (" in out
    assert cli.main(["check", "--data-dir", str(store.data_dir)]) == 0


def test_a_readable_index_with_other_keys_is_found(store):
    """A well-formed saved index (sidecar in step) that lost a vector the catalog still holds would be
    trusted by the store: only comparing the keys a search sees with the catalog's catches it."""
    meta = store.data_dir / "vectors" / "yamnet.ivf.json"
    path = data_file(store.data_dir / "vectors" / "yamnet.ivf")
    index = IvfIndex.open(meta.with_suffix(""), store._dim("yamnet"), view=False)
    want = index.keys().copy()
    index.remove(want[:1])
    faiss.write_index(index._index, str(path))
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "count": len(want) - 1}))
    detail = _by_name(check(store, repair=False))["vectors: yamnet"].detail
    assert detail == "searches see 2 vectors, the catalog holds 3: 1 missing, 0 not in the catalog"
    _repair_and_recheck(store, {"vectors: yamnet"})
    assert sorted(store.vectors("yamnet").keys().tolist()) == sorted(want.tolist())


def test_deleted_full_text_rows_are_rebuilt_as_they_were(store):
    conn = _raw(store)
    items_before = conn.execute("SELECT rowid, name, tags, description FROM items_fts ORDER BY rowid").fetchall()
    passages_before = conn.execute("SELECT rowid, text FROM passages_fts ORDER BY rowid").fetchall()
    dog = next(r for r in store.catalog.items() if "1-30344-A" in r.path)
    assert store.catalog.fts('"30344"', 5)[0][0] == dog.id
    conn.execute("DELETE FROM items_fts WHERE rowid=?", (dog.id,))
    conn.execute("DELETE FROM passages_fts WHERE rowid=?", (passages_before[0][0],))
    conn.execute("INSERT INTO items_fts(rowid, name, tags, description) VALUES(9999, 'ghost', '', '')")
    assert store.catalog.fts('"30344"', 5) == []
    found = _by_name(check(store, repair=False))
    assert "1 item missing from items_fts; 1 row of items_fts with no item" in found["full-text: items"].detail
    assert "1 passage missing from passages_fts" in found["full-text: transcripts"].detail
    _repair_and_recheck(store, {"full-text: items", "full-text: transcripts"})
    assert conn.execute("SELECT rowid, name, tags, description FROM items_fts ORDER BY rowid").fetchall() == (
        items_before
    )
    assert conn.execute("SELECT rowid, text FROM passages_fts ORDER BY rowid").fetchall() == passages_before
    assert store.catalog.fts('"30344"', 5)[0][0] == dog.id
    conn.close()


def test_orphan_rows_are_found_and_deleted(store):
    conn = _raw(store)
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("segments", "segment_data")}
    sid = conn.execute("INSERT INTO segments(item_id, start, end) VALUES(9999, 0, 5)").lastrowid
    vec = np.ones(store.catalog.models()["yamnet"]["dim"], np.float32) / 32
    conn.execute("INSERT INTO segment_data VALUES(?, 'yamnet', NULL, ?)", (sid, encode(vec, store.catalog.codec)))
    conn.execute("INSERT INTO passages(item_id, start, end, text) VALUES(9999, 0, 1, 'nobody said this')")
    found = _by_name(check(store, repair=False))
    assert found["orphan rows"].detail == "rows whose parent is gone: segments 1, passages 1"
    assert "2 rows point at missing parents" in found["foreign keys"].detail
    assert "1 passage missing from passages_fts" in found["full-text: transcripts"].detail  # the orphan passage
    assert found["vectors: yamnet"].ok  # searches see the orphan's vector, as the catalog holds it...
    _repair_and_recheck(store, {"foreign keys", "orphan rows", "full-text: transcripts"})
    assert {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts} == counts
    assert sid not in store.vectors("yamnet").keys().tolist()  # ...and no longer once it is deleted
    conn.close()


def test_missing_files_are_reported_and_only_pruned_when_asked(store, template, capsys):
    gone = template[0] / PICKS[1]
    aside = gone.with_name("aside.bin")
    gone.rename(aside)
    try:
        detail = _by_name(check(store, repair=False))["files on disk"].detail
        assert detail == f"1 of 3 indexed files gone from disk: {gone}"
        report = check(store, repair=True)
        assert _failing(report) == {"files on disk"} and not report.ok
        assert "pass --prune" in _by_name(report)["files on disk"].detail
        assert store.catalog.count() == 3  # repair without --prune deletes nothing
        data = str(store.data_dir)
        assert cli.main(["check", "--data-dir", data, "--repair"]) == 1
        assert "1 problem remains" in capsys.readouterr().out
        assert cli.main(["check", "--data-dir", data, "--prune", "--json"]) == 0
        files = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}["files on disk"]
        assert files["repaired"] and "dropped 1 item whose file is gone" in files["detail"]
        assert store.catalog.count() == 2 and store.catalog.item_by_path(str(gone)) is None
        again = check(store, repair=False)
        assert again.ok and not _failing(again), [c.to_dict() for c in again.checks]
    finally:
        aside.rename(gone)


def test_repair_waits_for_no_index_run(store):
    """Repairs write: refused while an index run holds the writer lock (here another thread);
    a plain check still runs, and says a run is writing."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with IndexLock(store.data_dir):
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(IndexLockedError, match="another soundscope index is running on"):
            check(store, repair=True)
        report = check(store, repair=False)
        assert report.checks[0].name == "writer" and "is writing" in report.checks[0].detail and report.ok
    finally:
        done.set()
        t.join()
    assert check(store, repair=True).ok
