"""The SQLite catalog and vector index: schema, model registry, atomic items, FTS, self-healing vectors."""

import numpy as np
import pytest

from soundscope.store import IncompatibleIndexError, SegmentData, Store
from soundscope.store.catalog import SCHEMA_VERSION


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


def test_vector_index_rebuilds_when_stale_or_corrupt(store):
    cat = store.catalog
    for i in range(5):
        cat.put_item(_item(f"/r/{i}.wav"), [(0.0, 5.0, [SegmentData("m", None, _vec(i))])], [])
    idx = store.vectors("m")
    keys, sims = idx.search(_vec(3), 2)
    assert sims[0] == pytest.approx(1.0, abs=1e-3) and len(keys) == 2
    path = store.data_dir / "vectors" / "m.usearch"
    assert path.exists()
    path.write_bytes(b"garbage")
    fresh = Store(store.data_dir)
    k2, _s2 = fresh.vectors("m").search(_vec(3), 2)
    assert list(k2) == list(keys)
    fresh.close()
    cat.delete_items([cat.item_by_path("/r/3.wav").id])
    k3, _ = store.vectors("m").search(_vec(3), 5)
    assert len(k3) == 4 and keys[0] not in k3


def test_vector_backend_and_onnxruntime_load_in_either_order():
    """Regression: usearch 2.26 segfaulted when imported before onnxruntime."""
    import subprocess
    import sys

    for first, second in (("usearch.index", "onnxruntime"), ("onnxruntime", "usearch.index")):
        code = f"import {first}, {second}; print('ok')"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (first, second, out.stderr[-500:])
