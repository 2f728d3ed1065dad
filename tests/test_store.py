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
    path = store.data_dir / "vectors" / "m.ivf.json"  # the sidecar: rewritten by each save
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
    """The vector backend's native library (faiss, with its own OpenMP) and onnxruntime import in either
    order (usearch 2.26, the backend before, segfaulted when imported before onnxruntime)."""
    import subprocess
    import sys

    for first, second in (("faiss", "onnxruntime"), ("onnxruntime", "faiss")):
        code = f"import {first}, {second}; print('ok')"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (first, second, out.stderr[-500:])


def test_the_vector_backend_runs_one_thread_unless_told():
    """faiss starts one OpenMP thread per core; a search must run one (two busy threads per query process
    on a 2-core machine halve everyone's throughput), and OMP_NUM_THREADS still wins."""
    import os
    import subprocess
    import sys

    code = "from soundscope.store.ivf import _faiss; print(_faiss().omp_get_max_threads())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for extra, want in (({}, "1"), ({"OMP_NUM_THREADS": "2"}, "2")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **extra})
        assert out.stdout.strip() == want, out.stderr[-500:]


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
    """An 8-bit index alone misorders close neighbours of 256-d vectors; the head it returns is re-scored
    with the exact vectors, so the top 10 are the exact top 10."""
    from soundscope.store.ivf import IvfIndex
    from soundscope.store.vectors import LiveIndex

    rng = np.random.default_rng(0)
    centre = rng.normal(size=256)
    x = (centre + 0.25 * rng.normal(size=(3000, 256))).astype(np.float32)  # one cluster: cosines ~0.94
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = np.arange(1, 3001, dtype=np.int64)
    base = IvfIndex(tmp_path / "v.ivf", 256)
    base.train(x, keys.size)
    base.add(keys, x)
    assert base.quantized and len(base) == 3000 and base.lists == 1

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


def test_a_far_query_finds_its_nearest_among_clusters_of_near_copies(tmp_path):
    """The case that retired HNSW: a library of tight clusters (a source's near-copies) and a query far
    from all of them (a text query against descriptions, cosine ~0.4). A graph search entered the wrong
    cluster and returned none of the true 10 (text-query recall@10 0.50 at 10^6); IVF ranks the lists
    by the query itself. Saved, reopened memory-mapped, it finds the exact top 10 of every query."""
    from soundscope.store.ivf import IvfIndex
    from soundscope.store.vectors import LiveIndex

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 64))
    x = np.repeat(centres, 200, axis=0) + 0.05 * rng.normal(size=(8000, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    keys = np.arange(1, 8001, dtype=np.int64) * 7  # keys are ids, not positions
    base = IvfIndex(tmp_path / "d.ivf", 64)
    base.train(x[rng.choice(8000, 3200, replace=False)], 8000)
    base.add(keys, x)
    base.save(1, upto=int(keys.max()))
    mapped = IvfIndex.open(tmp_path / "d.ivf", 64, view=True)
    assert mapped.view and mapped.lists == 64 and len(mapped) == 8000

    def exact(k):
        k = np.asarray(k, np.int64)
        return k, x[k // 7 - 1]

    live = LiveIndex(mapped, np.zeros(0, np.int64), np.zeros((0, 64)), np.zeros(0, np.int64), 1, exact=exact)
    for _ in range(30):
        a, b = rng.choice(40, 2, replace=False)
        q = centres[a] + centres[b] + 2.0 * rng.normal(size=64)  # between clusters, far from both
        q /= np.linalg.norm(q)
        truth = np.sort(x @ q)[::-1][:10]
        _, sims = live.search(q, 10)
        assert np.allclose(sims, truth, atol=1e-5)


def test_the_index_retrains_when_the_library_outgrows_its_lists(store):
    """The first fold trains the index; a library that grows four times past it is retrained (lists and
    8-bit ranges fitted afresh), one that grows less is folded into by key; a sidecar of another index kind (an older
    soundscope's usearch file) is not read: the index is rebuilt and the old files removed."""
    import json

    from soundscope.store import ivf

    cat = store.catalog
    for i in range(3):
        _put(cat, i)
    folder = store.data_dir / "vectors"
    folder.mkdir(parents=True, exist_ok=True)
    cat.register_model("n", "model/v2", {}, 8, ["a", "b"])  # a space with no vector: its index only advances
    for space in ("m", "n"):
        (folder / f"{space}.usearch").write_bytes(b"old")
        meta = {"count": 3, "generation": 1, "dim": 8, "file": f"{space}.usearch"}
        (folder / f"{space}.usearch.json").write_text(json.dumps(meta))
    store.flush(force=True)
    info = json.loads((folder / "m.ivf.json").read_text())
    assert (info["kind"], info["count"], info["lists"], info["trained_for"]) == (ivf.KIND, 3, 1, 3)
    assert not list(folder.glob("*usearch*")) and json.loads((folder / "n.ivf.json").read_text())["count"] == 0
    assert not store.vectors("m").base.needs_rebuild(11) and store.vectors("m").base.needs_rebuild(12)
    assert ivf.lists_for(10_000) == 128 and ivf.lists_for(100_000) == 256 and ivf.lists_for(1_000_000) == 1024
    assert [ivf.probes_for(n) for n in (1, 256, 1024, 4096)] == [1, 16, 16, 64]
    for i in range(3, 20):
        _put(cat, i)
    store.flush(force=True)  # 20 vectors, over 4 x 3: retrained
    info = json.loads((folder / "m.ivf.json").read_text())
    assert (info["count"], info["trained_for"]) == (20, 20)
    for i in range(20, 25):
        _put(cat, i)
    store.flush(force=True)  # 25 vectors: folded in by key
    info = json.loads((folder / "m.ivf.json").read_text())
    assert (info["count"], info["trained_for"]) == (25, 20)
    _, sims = store.vectors("m").search(_vec(17), 1)
    assert sims[0] == pytest.approx(1.0, abs=1e-3)


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
    m_side, n_side = (store.data_dir / "vectors" / f"{s}.ivf.json" for s in ("m", "n"))
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


def test_search_vectors_returns_the_exact_vectors_of_the_keys_it_ranks(tmp_path):
    """A caller that scores neighbours again (query expansion) gets each returned key's exact vector:
    from the re-ranked head, from the delta, or read from the catalog past the head; a deleted key is
    never returned. The keys and cosines equal :meth:`LiveIndex.search`'s."""
    from soundscope.store.ivf import IvfIndex
    from soundscope.store.vectors import RERANK, LiveIndex

    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 32)).astype(np.float32)
    keys = np.arange(1, 601, dtype=np.int64)
    base = IvfIndex(tmp_path / "v.ivf", 32)
    base.train(x[:500], 500)
    base.add(keys[:500], x[:500])
    reads: list[int] = []

    def exact(k):
        k = np.asarray(k, np.int64)
        reads.append(k.size)
        return k, x[k - 1]

    live = LiveIndex(base, keys[500:], x[500:], np.array([7], np.int64), 0, exact=exact)
    q = x[7] + x[550]
    got, sims = live.search(q, 150)
    keys2, sims2, vecs = live.search_vectors(q, 150)
    assert np.array_equal(got, keys2) and np.allclose(sims, sims2)
    assert vecs is not None and vecs.shape == (150, 32) and 7 not in keys2.tolist()
    assert np.allclose(vecs, x[keys2 - 1])
    assert reads[-1] == 150 - RERANK - int(np.isin(keys2, keys[500:]).sum())  # only keys past the head and delta
    plain = LiveIndex(base, keys[500:], x[500:], np.zeros(0, np.int64), 0)  # no vector source: None
    assert plain.search_vectors(q, 10)[2] is None



def test_prevalence_discount_says_how_much_of_the_label_query_is_left(tmp_path):
    """"fast music" in a library of songs: Music (most of the query's weight) is on every item, so little
    of the label query is left to tell items apart; in a library where music is rare, nearly all of it."""
    from soundscope.search import LabelMatch, Searcher

    labels = ["Music", "Mellow", "Dog"]

    def columns(music: float, n: int = 40):
        store = Store(tmp_path / f"lib{music}")
        store.catalog.register_model("y", "model/v1", {}, 8, labels)
        rng = np.random.default_rng(1)
        for i in range(n):
            s = np.array([music, rng.random() * 0.4, 0.01], np.float32)
            seg = [SegmentData("y", s, _vec(i))]
            store.catalog.put_item(_item(f"/r/{i}.wav"), [(0.0, 5.0, seg)], seg)
        return store.columns()

    match = LabelMatch("y", np.array([0, 1]), np.array([0.8, 0.2], np.float32), ["Music", "Mellow"])
    match.groups = [np.array([0]), np.array([1])]
    songs = columns(0.97)
    terms, left = Searcher.label_terms(songs, [match])
    mellow = float(songs.prevalence("y", [1])[0])
    assert left == pytest.approx(0.8 * 0.03 + 0.2 * (1 - mellow), abs=1e-3) and left < 0.25
    assert np.isclose(sum(float(t.weights.sum()) for t in terms), 1.0)  # the terms themselves are renormalised
    assert terms[0].weights[1] > terms[0].weights[0]  # and lean on Mellow, the label that still varies
    _, left_mixed = Searcher.label_terms(columns(0.0), [match])  # no music at all: Music costs nothing
    assert left_mixed == pytest.approx(0.8 + 0.2 * (1 - mellow), abs=0.05) and left_mixed > 0.9
