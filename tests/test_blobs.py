"""The catalog's blob codecs: 8-bit companded vectors and scores, float16 for older libraries."""

import numpy as np
import pytest

from soundscope.store import IncompatibleIndexError, SegmentData
from soundscope.store.blobs import decode, decode_rows, encode
from soundscope.store.catalog import Catalog


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("codec", ["f16", "q8"])
def test_round_trip_keeps_direction_and_scale(codec):
    rng = np.random.default_rng(0)
    signed = rng.normal(0, 0.04, 512).astype(np.float32)  # like a text-encoder vector
    relu = np.maximum(rng.normal(0, 1, 1024), 0).astype(np.float32) ** 2  # sparse, heavy-tailed, >= 0
    scores = rng.beta(0.2, 3, 521).astype(np.float32)
    for v in (signed, relu, scores):
        got = decode(encode(v, codec), codec)
        assert got.dtype == np.float32 and got.shape == v.shape
        assert _cos(v, got) > 0.9999
        levels = 255 if v.min() >= 0 else 127  # q8: 255 codes for values >= 0, 127 a side otherwise
        assert np.abs(got - v).max() <= np.abs(v).max() / levels + 1e-7  # at most one step at the largest
    assert decode(encode(scores, "q8"), "q8").min() >= 0  # no negative score comes back
    assert len(encode(relu, "q8")) == 1024 + 5 and len(encode(relu, "f16")) == 2048


def test_q8_edge_cases():
    assert encode(None, "q8") is None and decode(None, "q8") is None
    assert decode(encode(np.zeros(4), "q8"), "q8").tolist() == [0.0] * 4
    assert decode(encode(np.zeros(0), "q8"), "q8").shape == (0,)
    got = decode(encode(np.array([np.nan, 1.0, -np.inf, -0.25]), "q8"), "q8")
    assert np.allclose(got, [0.0, 1.0, 0.0, -0.25], atol=4e-3)  # non-finite values are stored as 0
    on_codes = np.array([1.0, 0.0, 0.04])  # sqrt(0.04) * 255 = 51: a value on a code comes back as it was
    assert np.allclose(decode(encode(on_codes, "q8"), "q8"), on_codes, rtol=1e-6, atol=0)


def test_decode_rows_equals_decoding_each(tmp_path):
    rng = np.random.default_rng(1)
    rows = [rng.normal(0, 1, 16).astype(np.float32) for _ in range(5)] + [np.abs(rng.normal(0, 1, 16))]
    for codec in ("f16", "q8"):
        blobs = [encode(r, codec) for r in rows]
        assert np.array_equal(decode_rows(blobs, codec, chunk=2), np.stack([decode(b, codec) for b in blobs]))


def test_a_new_catalog_writes_q8_and_reads_it_back(tmp_path):
    cat = Catalog(tmp_path / "catalog.sqlite")
    assert cat.codec == "q8" and cat.get_meta("blob_codec") == "q8"
    emb = np.random.default_rng(2).normal(0, 1, 64).astype(np.float32)
    emb /= np.linalg.norm(emb)
    scores = np.linspace(0, 1, 10, dtype=np.float32)
    item = {"path": "/r/a.wav", "root": "/r", "size": 1, "mtime": 0.0, "content_hash": "h", "duration_s": 5.0,
            "sample_rate": 16000, "channels": 1, "indexed_at": 0.0}  # fmt: skip
    item_id, _ = cat.put_item(item, [(0.0, 5.0, [SegmentData("m", scores, emb)])], [SegmentData("m", scores, emb)])
    (blob,) = cat.conn.execute("SELECT embedding FROM item_data").fetchone()
    assert len(blob) == 64 + 5
    assert _cos(cat.item_vector(item_id, "m"), emb) > 0.9999
    assert np.abs(cat.item_scores(item_id, "m") - scores).max() <= 1 / 255
    ids, mat = cat.item_vectors([item_id], "m")
    assert ids.tolist() == [item_id] and np.array_equal(mat[0], cat.item_vector(item_id, "m"))
    cat.set_meta("blob_codec", "q4")
    cat.close()
    with pytest.raises(IncompatibleIndexError, match="q4"):
        Catalog(tmp_path / "catalog.sqlite")
