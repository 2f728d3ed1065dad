"""The SQLite catalog and vector index: schema, model registry, atomic items, FTS, self-healing vectors."""

import numpy as np
import pytest

from soundscope.store import IncompatibleIndexError, SegmentData, Store
from soundscope.store.catalog import SCHEMA_VERSION
from soundscope.store.vectors import data_file

Q8_STEP = 1 / 127  # a q8 blob (a new catalog's) is within one code step (m/255, or m/127 if signed) of what was written


def _item(path: str, **kw) -> dict:
    base = {
        "path": path,
        "root": "/r",
        "size": 1,
        "mtime": 1.0,
        "content_hash": "h" + path,
        "duration_s": 5.0,
        "sample_rate": 16000,
        "channels": 1,
        "codec": "pcm",
        "tags": {"title": "Morning Birds"},
        "features": {},
        "kind": "sound",
        "description": "dog, bark; 5.0 s",
        "indexed_at": 0.0,
    }
    base.update(kw)
    return base


def _vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    s.catalog.register_model("m", "model/v1", {"hop": 0.5}, 8, ["a", "b"])
    yield s
    s.close()


def test_schema_is_versioned_and_wal(store):
    assert store.catalog.schema_version == SCHEMA_VERSION
    assert store.catalog.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.catalog.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_newer_schema_is_refused(tmp_path, store):
    store.catalog.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(IncompatibleIndexError, match="newer"):
        Store(store.data_dir)


def test_incompatible_models_are_refused(store):
    store.catalog.register_model("m", "model/v1", {"hop": 0.5}, 8, ["a", "b"])  # same: fine
    for args in [
        ("model/v2", {"hop": 0.5}, 8, ["a", "b"]),
        ("model/v1", {"hop": 0.25}, 8, ["a", "b"]),
        ("model/v1", {"hop": 0.5}, 16, ["a", "b"]),
    ]:
        with pytest.raises(IncompatibleIndexError, match="cannot be mixed"):
            store.catalog.register_model("m", *args)


def test_put_replace_delete_cascade(store):
    cat = store.catalog
    segs = [
        (0.0, 5.0, [SegmentData("m", np.array([0.9, 0.1]), _vec(1))]),
        (5.0, 10.0, [SegmentData("m", np.array([0.2, 0.8]), _vec(2))]),
    ]
    item_id, seg_ids = cat.put_item(_item("/r/a.wav"), segs, [SegmentData("m", np.array([0.9, 0.8]), _vec(3))])
    assert len(seg_ids) == 2 and cat.count() == 1
    new_id, _ = cat.put_item(_item("/r/a.wav", size=2), segs[:1], [])
    assert cat.count() == 1 and new_id != item_id
    assert cat.conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 1
    assert cat.conn.execute("SELECT count(*) FROM segment_data").fetchone()[0] == 1
    cat.delete_items([new_id])
    for table in ("items", "segments", "segment_data", "item_data", "items_fts"):
        assert cat.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_failed_write_leaves_nothing(store):
    bad = [(0.0, 5.0, [SegmentData("m", None, _vec(1))]), (0.0, 5.0, [SegmentData("m", None, _vec(1))])]
    bad[1][2].append(bad[1][2][0])  # duplicate (segment, space) key -> integrity error mid-transaction
    with pytest.raises(Exception, match="UNIQUE"):
        store.catalog.put_item(_item("/r/b.wav"), bad, [])
    assert store.catalog.count() == 0
    assert store.catalog.conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 0


def test_fts_matches_names_tags_descriptions_and_chinese(store):
    cat = store.catalog
    a, _ = cat.put_item(_item("/r/Field_Recordings/thunder-storm.wav"), [], [])
    b, _ = cat.put_item(_item("/r/x.wav", description="雨声和雷声; 5.0 s", tags={}), [], [])
    assert [i for i, _ in cat.fts('"thunder"', 10)] == [a]
    assert [i for i, _ in cat.fts('"birds"', 10)] == [a]  # from the title tag
    assert [i for i, _ in cat.fts('"雷声"', 10)] == [b]  # jieba-segmented Chinese
    assert cat.fts('"bark"', 10)  # description
    assert cat.fts('unbalanced "quote', 10) == []  # bad syntax is no crash


def _put(cat, i: int, *, kind: str = "sound", duration: float = 5.0, scores=None):
    seg = [SegmentData("m", None if scores is None else np.asarray(scores, np.float32), _vec(i))]
    item = [SegmentData("m", None if scores is None else np.asarray(scores, np.float32), _vec(i))]
    return cat.put_item(_item(f"/r/{i}.wav", kind=kind, duration_s=duration), [(0.0, 5.0, seg)], item)[0]


def test_vector_index_catches_up_incrementally_and_heals(store, monkeypatch):
    """Readers see new and deleted vectors at once through the delta; the writer's flush folds them
    into the saved index by key (never a rebuild because one file changed); a corrupt file heals."""
    from soundscope.store import vectors

    monkeypatch.setattr(vectors, "DELTA_MAX", 2)
    cat = store.catalog
    for i in range(5):
        _put(cat, i)
    idx = store.vectors("m")
    assert len(idx) == 5 and idx.delta_keys.size == 5  # nothing saved yet: all delta, searched exactly
    keys, sims = idx.search(_vec(3), 2)
    assert sims[0] == pytest.approx(1.0, abs=1e-3) and len(keys) == 2
    store.flush()
    path = store.data_dir / "vectors" / "m.usearch.json"  # the sidecar: rewritten by each save
    assert data_file(path.with_suffix("")).exists()
    assert store.vectors("m").delta_keys.size == 0 and len(store.vectors("m")) == 5
    saved = path.stat().st_mtime_ns
    _put(cat, 5)  # one more file: a delta of one, below DELTA_MAX: the saved index is not rewritten
    store.flush()
    assert path.stat().st_mtime_ns == saved
    live = store.vectors("m")
    assert len(live) == 6 and live.delta_keys.size == 1 and live.search(_vec(5), 1)[1][0] == pytest.approx(1.0, 1e-3)
    cat.delete_items([cat.item_by_path("/r/3.wav").id, cat.item_by_path("/r/4.wav").id])
    k3, _ = store.vectors("m").search(_vec(3), 10)
    assert len(k3) == 4 and keys[0] not in k3  # the deleted segments are gone before any flush
    store.flush()  # three changes now, over DELTA_MAX: folded in by key and saved
    assert path.stat().st_mtime_ns != saved
    fresh = Store(store.data_dir)
    live = fresh.vectors("m")
    assert live.stale == 0 and sorted(live.keys().tolist()) == sorted(k3.tolist())
    fresh.close()
    path.write_bytes(b"garbage")
    fresh = Store(store.data_dir)
    k4, _ = fresh.vectors("m").search(_vec(3), 10)
    assert sorted(k4.tolist()) == sorted(k3.tolist())  # unreadable file: everything from the catalog
    fresh.close()


def test_columns_parts_delta_and_tombstones(store, monkeypatch):
    """Query columns come from memory-mapped parts plus the catalog's delta; deletions are masked
    through tombstones; merging parts drops dead rows; a reader opens parts without SQLite rows."""
    from soundscope.store import columns

    monkeypatch.setattr(columns, "FLUSH_MIN", 3)
    monkeypatch.setattr(columns, "MAX_PARTS", 2)
    cat = store.catalog
    ids = [
        _put(cat, i, kind="music" if i % 2 else "sound", duration=1.0 + i, scores=[i / 10, 1 - i / 10])
        for i in range(4)
    ]
    c = store.columns()
    assert c.ids.tolist() == ids and c.alive.all() and len(c.parts) == 1  # all delta
    assert np.allclose(c.durations, [1, 2, 3, 4]) and c.kind_is("music").tolist() == [False, True, False, True]
    assert np.allclose(c.label_column("m", 0), [0.0, 0.1, 0.2, 0.3], atol=Q8_STEP)
    assert np.allclose(c.label_row("m", 2), [0.2, 0.8], atol=Q8_STEP)
    assert store._columns.flush() and (store.data_dir / "columns" / "manifest.json").exists()
    more = [_put(cat, i, scores=[0.5, 0.5]) for i in range(4, 6)]
    cat.delete_items([ids[1]])
    c = store.columns()
    assert len(c.parts) == 2 and c.ids.tolist() == ids + more  # one saved part + the delta
    assert c.position(ids[1]) == -1 and int(c.alive.sum()) == 5
    assert np.allclose(c.label_scores("m", np.array([0, 1]), np.array([0.5, 0.5])), 0.5, atol=Q8_STEP)
    live = [i for i in ids + more if i != ids[1]]
    rows = c.label_rows("m", c.positions(live[::-1]))  # rows from the saved part and the delta, any order
    catalog = np.stack([cat.item_scores(i, "m") for i in live[::-1]])
    assert np.allclose(rows, catalog, rtol=1e-3, atol=1e-4)  # the catalog's values, as float16
    assert c.label_rows("m", np.zeros(0, np.int64)).shape == (0, 2) and c.label_rows("none", [0]).shape == (1, 0)
    assert np.array_equal(c.label_rows("m", [-1, c.position(live[0])])[0], [0.0, 0.0])  # an absent item: zeros
    fresh = Store(store.data_dir)
    again = fresh.columns()
    assert isinstance(again.parts[0].ids, np.memmap) and again.ids.tolist() == c.ids.tolist()
    assert again.alive.tolist() == c.alive.tolist()
    fresh.close()
    _put(cat, 6)
    assert store._columns.flush(force=True)  # merge: one part, dead rows dropped
    c = store.columns()
    assert ids[1] not in c.ids.tolist() and c.alive.all() and len(c.parts) == 2 and c.parts[1].n == 0
    assert len([p for p in (store.data_dir / "columns").iterdir() if p.name.startswith("part-")]) == 1


def test_vector_backend_and_onnxruntime_load_in_either_order():
    """Regression: usearch 2.26 segfaulted when imported before onnxruntime."""
    import subprocess
    import sys

    for first, second in (("usearch.index", "onnxruntime"), ("onnxruntime", "usearch.index")):
        code = f"import {first}, {second}; print('ok')"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (first, second, out.stderr[-500:])


ONTOLOGY_LABELS = ["Animal", "Domestic animals, pets", "Dog", "Bark", "Cat", "Meow", "Music", "Speech"]


def test_label_entries_and_impact_lists_rank_exactly(tmp_path, monkeypatch):
    """A label entry scores as its ontology subtree's best label (one closure row per part), and the
    impact-list ranker returns the same best k as scoring every item, under masks, on persisted parts
    plus the delta, with lists shallow enough that some queries need the threshold rule to deepen."""
    from soundscope.store import columns, entries
    from soundscope.store.entries import Term, entry_map

    monkeypatch.setattr(columns, "FLUSH_MIN", 50)
    monkeypatch.setattr(entries, "LIST_DEPTH", 24)
    monkeypatch.setattr(columns, "LIST_STEPS", (6, 24))
    store = Store(tmp_path / "data")
    cat = store.catalog
    cat.register_model("y", "model/v1", {}, 8, ONTOLOGY_LABELS)
    rng = np.random.default_rng(0)
    for i in range(300):
        s = rng.random(len(ONTOLOGY_LABELS)) ** 6  # sparse-ish: most scores small
        seg = [SegmentData("y", s.astype(np.float32), _vec(i))]
        cat.put_item(_item(f"/r/{i}.wav"), [(0.0, 5.0, seg)], seg)
        if i in (119, 239):
            assert store._columns.flush(force=i == 239)  # a merged part, then a second one; the rest is delta
    m = store.columns()
    assert len(m.parts) >= 2 and any(p.top_rows for p in m.parts)
    emap = entry_map(tuple(ONTOLOGY_LABELS))
    animal = ONTOLOGY_LABELS.index("Animal")
    members = emap.groups[animal]
    assert members.size > 1 and emap.slot[animal] >= 0  # Animal: itself, pets, dog, bark, cat, meow
    raw = np.stack([m.label_column("y", j) for j in members])
    assert np.allclose(m.entry_scores("y", [animal])[0], raw.max(axis=0))
    assert np.allclose(m.prevalence("y", [animal]), raw.max(axis=0).mean(), atol=1e-3)
    full_scans = []
    weighted = columns.Columns.weighted

    def counted(self, t, rows=None):
        full_scans.append(rows is None)
        return weighted(self, t, rows)

    monkeypatch.setattr(columns.Columns, "weighted", counted)
    for trial in range(40):
        picked = rng.choice(emap.n, size=int(rng.integers(1, 4)), replace=False)
        term = Term("y", picked.astype(np.int64), rng.dirichlet(np.ones(picked.size)).astype(np.float32))
        ok = m.alive & (rng.random(m.n) < (1.0 if trial % 2 else 0.6))
        k = int(rng.integers(1, 12))
        rows, scores = m.top_weighted([term], ok=ok, k=k, floor=0.001)
        dense = weighted(m, [term])
        want = np.flatnonzero(ok & (dense >= 0.001))
        want = want[np.lexsort((want, -dense[want]))][:k]
        assert np.allclose(scores, dense[want], atol=1e-6), trial  # the same scores in the same order
        assert np.allclose(dense[rows], scores, atol=1e-6)
    n_full = sum(full_scans)  # queries the lists could not certify, scored in full
    assert 0 < n_full < 20, n_full
    store.close()


def test_a_single_segment_item_stores_its_data_once(store):
    """Issue 10 (disk): the one segment of a short file reads the item's rows instead of a copy of them,
    except in a space where the two differ; items of several segments keep their own rows."""
    cat = store.catalog
    cat.register_model("n", "model/v1", {}, 8, ["a", "b"])
    one = [SegmentData("m", np.array([0.9, 0.1]), _vec(1)), SegmentData("n", np.array([0.3, 0.4]), _vec(2))]
    whole = [SegmentData("m", np.array([0.9, 0.1]), _vec(1)), SegmentData("n", np.array([0.5, 0.4]), _vec(2))]
    short, (sid,) = cat.put_item(_item("/r/short.wav"), [(0.0, 5.0, one)], whole)
    two = [(0.0, 5.0, one), (5.0, 10.0, one)]
    long_, sids = cat.put_item(_item("/r/long.wav"), two, whole)
    rows = cat.conn.execute("SELECT segment_id, space FROM segment_data ORDER BY segment_id, space").fetchall()
    assert [tuple(r) for r in rows] == [(sid, "n"), (sids[0], "m"), (sids[0], "n"), (sids[1], "m"), (sids[1], "n")]
    ((got_id, start, end, scores, emb),) = cat.segments_of(short, "m")
    assert (got_id, start, end) == (sid, 0.0, 5.0)
    assert np.allclose(scores, one[0].scores, atol=Q8_STEP) and np.allclose(emb, one[0].embedding, atol=Q8_STEP)
    assert np.allclose(cat.segments_of(short, "n")[0][3], [0.3, 0.4], atol=Q8_STEP)  # its own row, not [0.5, 0.4]
    assert set(cat.vector_keys("segments", "m").tolist()) == {sid, *sids}
    keys, vecs = cat.vectors_range("segments", "m")
    assert keys.tolist() == sorted([sid, *sids]) and np.allclose(vecs[0], one[0].embedding, atol=Q8_STEP)
    assert [len(cat.segments_of(i, "m")) for i in (short, long_)] == [1, 2]


def test_schema_5_compacts_an_existing_library(tmp_path):
    """A schema-4 library's duplicated rows of single-segment items go; what every reader sees stays."""
    import sqlite3

    from soundscope.store.blobs import encode
    from soundscope.store.catalog import MIGRATIONS

    path = tmp_path / "catalog.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 5):
        conn.executescript(MIGRATIONS[version])
    conn.execute("PRAGMA user_version=4")
    blobs = (encode(np.array([0.9, 0.1], np.float32), "f16"), encode(_vec(1), "f16"))
    for item_id, segments in ((1, 1), (2, 2)):
        conn.execute(
            "INSERT INTO items(id, path, root, size, mtime, content_hash, duration_s, sample_rate, channels, "
            "indexed_at) VALUES(?, ?, '/r', 1, 0, 'h', 5, 16000, 1, 0)",
            (item_id, f"/r/{item_id}.wav"),
        )
        conn.execute("INSERT INTO item_data VALUES(?, 'm', ?, ?)", (item_id, *blobs))
        for k in range(segments):
            sid = conn.execute("INSERT INTO segments(item_id, start, end) VALUES(?, ?, ?)", (item_id, 5 * k, 5 * k + 5))
            conn.execute("INSERT INTO segment_data VALUES(?, 'm', ?, ?)", (sid.lastrowid, *blobs))
    conn.close()
    from soundscope.store.catalog import Catalog

    cat = Catalog(path)
    assert cat.schema_version == SCHEMA_VERSION
    assert cat.codec == "f16"  # an old library keeps reading (and writing) float16 blobs
    assert cat.conn.execute("SELECT count(*) FROM segment_data").fetchone()[0] == 2  # item 2's two rows
    assert cat.vector_keys("segments", "m").tolist() == [1, 2, 3]
    for item_id, n in ((1, 1), (2, 2)):
        view = cat.segments_of(item_id, "m")
        assert len(view) == n and all(np.allclose(em, _vec(1), atol=1e-3) for *_, em in view)
    cat.close()


def test_a_quantised_index_is_reranked_with_the_catalogs_vectors(tmp_path):
    """An int8 index alone misorders close neighbours of 256-d vectors; the head it returns is re-scored
    with the exact vectors, so the top 10 are the exact top 10. A float16 index saved before int8
    indexes keeps its dtype on reopening."""
    from soundscope.store import vectors
    from soundscope.store.vectors import LiveIndex, UsearchIndex

    rng = np.random.default_rng(0)
    centre = rng.normal(size=256)
    x = (centre + 0.25 * rng.normal(size=(3000, 256))).astype(np.float32)  # one cluster: cosines ~0.94
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = np.arange(1, 3001, dtype=np.int64)
    base = UsearchIndex(tmp_path / "v.usearch", 256)
    base.add(keys, x)
    assert base.quantized and base.dtype == "i8"

    def exact(k):
        return np.asarray(k, np.int64), x[np.asarray(k, np.int64) - 1]

    plain = LiveIndex(base, np.zeros(0, np.int64), np.zeros((0, 256)), np.zeros(0, np.int64), 0)
    ranked = LiveIndex(base, np.zeros(0, np.int64), np.zeros((0, 256)), np.zeros(0, np.int64), 0, exact=exact)
    hits_plain, hits_ranked = [], []
    for i in range(20):
        q = x[i] + 0.05 * rng.normal(size=256).astype(np.float32)
        truth = set((np.argsort(-(x @ (q / np.linalg.norm(q))))[:10] + 1).tolist())
        hits_plain.append(len(truth & set(plain.search(q, 10)[0].tolist())))
        got, sims = ranked.search(q, 10)
        hits_ranked.append(len(truth & set(got.tolist())))
        assert np.all(np.diff(sims) <= 0) and len(got) == 10
    assert sum(hits_ranked) == 200 and sum(hits_plain) < 200  # the re-rank is what makes it exact
    old = UsearchIndex(tmp_path / "old.usearch", 256, dtype="f16")
    old.add(keys[:10], x[:10])
    old.save(1, upto=10)
    again = UsearchIndex.open(tmp_path / "old.usearch", 256)
    assert again.dtype == "f16" and not again.quantized and len(again) == 10 and vectors.DTYPE == "i8"


def test_an_index_with_nothing_new_moves_its_watermarks_only(store):
    """A space no new item has vectors in (a music model while sounds arrive) keeps its data file and
    only moves its sidecar's watermarks; a space that never had a vector gets an empty saved index.
    Before, such a space stayed at watermark 0 and every flush and reader scanned every segment."""
    import json

    cat = store.catalog
    cat.register_model("n", "model/v2", {}, 8, ["a", "b"])
    for i in range(3):
        _put(cat, i)  # vectors in "m" only
    store.flush(force=True)
    m_side, n_side = (store.data_dir / "vectors" / f"{s}.usearch.json" for s in ("m", "n"))
    n_info = json.loads(n_side.read_text())
    assert n_info["count"] == 0 and n_info["upto"] == cat.max_id("segments")  # the empty space: saved, current
    m_file = json.loads(m_side.read_text())["file"]
    _put(cat, 3)
    one = SegmentData("n", None, _vec(9))
    cat.put_item(_item("/r/n.wav"), [(0.0, 5.0, [one])], [one])  # a vector in "n" only
    store.flush(force=True)
    m_info = json.loads(m_side.read_text())
    assert m_info["upto"] == cat.max_id("segments") and m_info["count"] == 4 and m_info["file"] != m_file
    cat.delete_items([cat.item_by_path("/r/n.wav").id])
    store.flush(force=True)  # "m" has nothing to fold: same data file, newer tombstone watermark
    after = json.loads(m_side.read_text())
    assert after["file"] == m_info["file"] and after["tomb_seq"] == cat.tombstone_seq() > m_info["tomb_seq"]
    assert store.vectors("m").stale == 0 and len(store.vectors("m")) == 4
    assert json.loads(n_side.read_text())["count"] == 0 and store.vectors("n").stale == 0
