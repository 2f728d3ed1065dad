"""Fingerprints (issue 13): extractor and index units on synthetic signals; identify and duplicates on
real music through the real ingest path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared, write_audio
from scipy.signal import resample_poly

from soundscope import decode, identify
from soundscope import fingerprint as fp
from soundscope.store import Store

SR = fp.SAMPLE_RATE


def synthetic_music(seconds: float, seed: int) -> np.ndarray:
    """Random notes (3 partials each, 0.1-0.4 s long, overlapping) at 16 kHz: peaky like music."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * SR), np.float32)
    t = 0.0
    while t < seconds - 0.5:
        length = rng.uniform(0.1, 0.4)
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        n = int(length * SR)
        tt = np.arange(n) / SR
        env = np.exp(-3 * tt / length).astype(np.float32)
        note = sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in (1, 2, 3)) * env
        start = int(t * SR)
        y[start : start + n] += 0.2 * note[: y.size - start]
        t += rng.uniform(0.05, 0.25)
    return y


def _item(k: int, path: str, duration: float) -> dict:
    return {"path": path, "root": "/", "size": 1, "mtime": 0.0, "content_hash": f"h{k}", "duration_s": duration,
            "sample_rate": SR, "channels": 1, "codec": "", "tags": {}, "features": {}, "kind": "music",
            "description": "", "indexed_at": 0.0}  # fmt: skip


@pytest.fixture
def synthetic_store(tmp_path):
    """A store with 4 synthetic 60 s recordings fingerprinted (no models)."""
    store = Store(tmp_path / "lib")
    signals = {}
    for k in range(4):
        y = synthetic_music(60, seed=k)
        item_id, _ = store.catalog.put_item(_item(k, f"/synthetic/{k}.wav", 60.0), [], [])
        store.fingerprints().add(item_id, fp.fingerprint(y=y))
        signals[item_id] = y
    store.flush()
    yield store, signals
    store.close()


def test_streaming_fingerprint_equals_whole_signal():
    y = synthetic_music(75, seed=7)
    acc = fp.FingerprintAccumulator()
    for i in range(0, y.size, 12345):  # odd block sizes: not multiples of the hop
        acc.push(y[i : i + 12345])
    streamed, whole = acc.result(), fp.fingerprint(y=y)
    assert streamed.hashes.size > 20 * 75  # ~30 hashes a second
    order_s, order_w = np.lexsort((streamed.hashes, streamed.times)), np.lexsort((whole.hashes, whole.times))
    assert np.array_equal(streamed.hashes[order_s], whole.hashes[order_w])
    assert np.array_equal(streamed.times[order_s], whole.times[order_w])
    frames = (y.size - fp.N_FFT) // fp.HOP + 2  # the last partial frame is zero-padded
    assert whole.sketch.shape == (frames // fp.SKETCH_FRAMES, fp.SKETCH_WORDS) and whole.sketch.dtype == np.uint64
    assert np.array_equal(streamed.sketch, whole.sketch)


def test_hash_packing_round_trips():
    f1, df, dt = np.array([0, 127, 64]), np.array([-63, 63, 0]), np.array([1, 63, 17])
    got = fp.unpack(fp.pack(f1=f1, df=df, dt=dt))
    assert all(np.array_equal(a, b) for a, b in zip(got, (f1, df, dt), strict=True))


def test_identify_noisy_and_sped_up_excerpts_with_offsets(synthetic_store):
    store, signals = synthetic_store
    rng = np.random.default_rng(0)
    y = signals[3]
    clip = y[SR * 21 : SR * 26].copy()
    noisy = clip + rng.standard_normal(clip.size).astype(np.float32) * np.sqrt(np.mean(clip**2))  # 0 dB white
    hits = identify.identify_array(store, noisy)
    assert hits and hits[0].item_id == 3 and abs(hits[0].offset_s - 21.0) < 0.5
    fast = resample_poly(y[SR * 30 : SR * 36], 100, 103).astype(np.float32)[: SR * 5]  # 3 % faster and higher
    hits = identify.identify_array(store, fast)
    assert hits and hits[0].item_id == 3 and abs(hits[0].offset_s - 30.0) < 0.5 and abs(hits[0].speed - 1.03) < 0.01
    other = synthetic_music(5, seed=99)  # never indexed
    assert identify.identify_array(store, other) == []
    assert identify.identify_array(store, np.zeros(SR * 5, np.float32)) == []  # silence: no peaks, no match


def test_index_masks_tombstoned_items_then_purges_and_never_duplicates(synthetic_store):
    store, signals = synthetic_store
    index = store.fingerprints()
    n_before = index.stats()["fingerprint_hashes"]
    index.add(2, fp.fingerprint(y=signals[2]))  # already indexed: ignored
    store.flush()
    assert index.stats()["fingerprint_hashes"] == n_before
    clip = signals[2][SR * 10 : SR * 15]
    assert identify.identify_array(store, clip)[0].item_id == 2
    store.catalog.delete_items([2])
    assert 2 in store.fingerprints().dead() and 2 not in store.fingerprints().item_ids()
    assert all(h.item_id != 2 for h in identify.identify_array(store, clip))  # masked before any flush
    store.flush()  # a quarter of the hashes are dead: purged
    stats = store.fingerprints().stats()
    assert stats["fingerprint_items"] == 3 and stats["fingerprint_hashes"] < 0.85 * n_before
    assert store.fingerprints().manifest["dead"] == []
    reopened = Store(store.data_dir)  # what another process sees
    assert reopened.fingerprints().stats() == stats
    assert identify.identify_array(reopened, signals[1][SR * 40 : SR * 45])[0].item_id == 1
    reopened.close()


def test_parts_merge_tierwise(tmp_path, monkeypatch):
    from soundscope.store import fingerprints as fps

    monkeypatch.setattr(fps, "MAX_PARTS", 3)
    store = Store(tmp_path / "lib")
    for k in range(6):
        item_id, _ = store.catalog.put_item(_item(k, f"/s/{k}.wav", 20.0), [], [])
        store.fingerprints().add(item_id, fp.fingerprint(y=synthetic_music(20, seed=k)))
        store.flush()  # one part per item
    stats = store.fingerprints().stats()
    assert stats["fingerprint_parts"] <= 3 and stats["fingerprint_items"] == 6
    assert len(list((tmp_path / "lib" / "fingerprints").glob("*-h.npy"))) == stats["fingerprint_parts"]
    store.close()


# -- real music through the real pipeline -------------------------------------------------------
def _mix_noise(y: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(y.size).astype(np.float32)
    return y + z * np.sqrt(np.mean(y**2) / np.mean(z**2) / 10 ** (snr_db / 10))


def test_identify_real_excerpts_in_the_demo_library(demo_lib, tmp_path):
    """A noisy MP3 excerpt of a demo track is found at its offset; music not in the library is no match."""
    src = shared("librosa", "Kevin_MacLeod_-_Vibe_Ace.ogg")
    y = decode.load(src, sample_rate=SR, max_duration_s=600)
    clip = write_audio(tmp_path / "clip.mp3", _mix_noise(y[SR * 33 : SR * 38], 5, 0), SR)
    hits = demo_lib.identify(clip)
    assert hits and Path(hits[0]["path"]).name == src.name
    assert abs(hits[0]["offset_s"] - 33.0) < 0.5 and hits[0]["confidence"] >= 0.9
    negative = decode.load(shared("librosa", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"), sample_rate=SR, max_duration_s=600)
    assert demo_lib.identify(negative[SR * 20 : SR * 30]) == []
    assert demo_lib.stats()["fingerprint_hashes"] > 0


def test_duplicates_reencodings_excerpts_and_deletion(tmp_path, yamnet_model):
    """Re-encoded (MP3) and excerpted copies group with their original; deleting one updates the index."""
    from soundscope.api import Library

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    original = shared("librosa", "442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime.ogg")
    shutil.copy(original, corpus / "pistachio.ogg")
    shutil.copy(shared("librosa", "Kevin_MacLeod_-_Vibe_Ace.ogg"), corpus / "vibe_ace.ogg")
    y = decode.load(original, sample_rate=SR, max_duration_s=600)
    write_audio(corpus / "pistachio_copy.mp3", y, SR)
    write_audio(corpus / "pistachio_excerpt.flac", y[SR * 20 : SR * 45], SR)
    lib = Library(tmp_path / "lib", analyzers=[yamnet_model], music_analyzers=[], asr_model="none")
    assert lib.index([corpus]).failed == 0
    groups = lib.duplicates()
    assert len(groups) == 1
    members = {Path(m["path"]).name: m for m in groups[0]["items"]}
    assert set(members) == {"pistachio.ogg", "pistachio_copy.mp3", "pistachio_excerpt.flac"}
    assert members["pistachio_excerpt.flac"]["relation"] == "excerpt"
    assert abs(members["pistachio_excerpt.flac"]["offset_s"] - 20.0) < 0.5
    assert members["pistachio_copy.mp3"]["relation"] == "re-encoding"
    _check_interfaces(lib, y, tmp_path)
    hashes = lib.stats()["fingerprint_hashes"]
    assert lib.index([corpus]).unchanged == 4 and lib.stats()["fingerprint_hashes"] == hashes  # no duplicates
    (corpus / "pistachio_copy.mp3").unlink()
    assert lib.index([corpus]).removed == 1
    groups = lib.duplicates()
    assert {Path(m["path"]).name for m in groups[0]["items"]} == {"pistachio.ogg", "pistachio_excerpt.flac"}
    assert lib.stats()["fingerprint_items"] == 3
    lib.close()
    shutil.rmtree(tmp_path / "lib" / "fingerprints")  # a library indexed before fingerprints (or a lost part)
    lib = Library(tmp_path / "lib", analyzers=[yamnet_model], music_analyzers=[], asr_model="none")
    report = lib.index([corpus])
    assert report.unchanged == 3 and lib.stats()["fingerprint_items"] == 3  # backfilled, nothing re-analysed
    assert len(lib.duplicates()[0]["items"]) == 2
    lib.close()


def test_silent_item_is_fingerprinted_once(tmp_path):
    store = Store(tmp_path / "lib")
    item_id, _ = store.catalog.put_item(_item(0, "/s/silence.wav", 10.0), [], [])
    store.fingerprints().add(item_id, fp.fingerprint(y=np.zeros(SR * 10, np.float32)))
    store.flush()
    assert store.fingerprints().missing().size == 0 and store.fingerprints().stats()["fingerprint_hashes"] == 0
    store.close()


def _check_interfaces(lib, y: np.ndarray, tmp_path: Path) -> None:
    """The same identification through the CLI, the HTTP API and a live stream read from a file object."""
    import contextlib
    import io
    import json

    from fastapi.testclient import TestClient

    from soundscope import cli, server

    clip = write_audio(tmp_path / "phone.wav", _mix_noise(y[SR * 50 : SR * 60], 3, 1), SR)
    whole = {"pistachio.ogg", "pistachio_copy.mp3"}  # the two full copies hold 0:50
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["identify", str(clip), "--data-dir", str(lib.data_dir), "--json"]) == 0
    match = json.loads(buf.getvalue())["matches"][0]
    assert Path(match["path"]).name in whole and match["offset"].startswith("0:50")
    with TestClient(server.create_app(lib, warm=False)) as client:
        r = client.post("/api/identify", content=clip.read_bytes())
        assert r.status_code == 200, r.text
        assert Path(r.json()["matches"][0]["path"]).name in whole
        assert client.post("/api/identify", content=b"not audio at all" * 10).status_code == 415
        groups = client.get("/api/duplicates").json()["groups"]
        assert len(groups) == 1 and len(groups[0]["items"]) == 3
        excerpt = next(m for m in groups[0]["items"] if m["path"].endswith("pistachio_excerpt.flac"))
        r = client.get(f"/api/identify/{excerpt['id']}").json()
        assert Path(r["matches"][0]["path"]).name in whole and abs(r["matches"][0]["offset_s"] - 20.0) < 0.5
        assert client.get("/api/identify/999999").status_code == 404
    with open(clip, "rb") as f:
        events = list(lib.identify_stream(f))
    assert events and Path(events[0]["path"]).name in whole and events[0]["at_s"] <= 3.0
    assert abs(events[0]["offset_s"] - (50 + events[0]["at_s"])) < 0.6  # where the stream is now


def test_check_reports_a_corrupt_fingerprint_index_and_repairs_it(tmp_path):
    """``soundscope check`` sees a truncated part and a live item masked as deleted; repair re-fingerprints."""
    import json

    from soundscope.check import check

    store = Store(tmp_path / "lib")
    signals = {}
    for k in range(3):
        y = synthetic_music(20, seed=k)
        path = write_audio(tmp_path / f"s{k}.wav", y, SR)
        item_id, _ = store.catalog.put_item(_item(k, str(path), 20.0), [], [])
        store.fingerprints().add(item_id, fp.fingerprint(y=y))
        store.flush()  # one part per item
        signals[item_id] = y
    fingerprints = {c.name: c for c in check(store, repair=False).checks}["fingerprints"]
    assert fingerprints.ok, fingerprints.detail
    store.close()
    fdir = tmp_path / "lib" / "fingerprints"
    manifest = json.loads((fdir / "manifest.json").read_text())
    broken = fdir / f"{manifest['parts'][0]['name']}-t.npy"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    manifest["dead"] = [3]  # a live item masked as deleted
    (fdir / "manifest.json").write_text(json.dumps(manifest))
    store = Store(tmp_path / "lib")
    report = check(store, repair=False)
    c = {c.name: c for c in report.checks}["fingerprints"]
    assert not c.ok and "unreadable" in c.detail and "masked as deleted" in c.detail, c.detail
    assert not report.ok
    c = {c.name: c for c in check(store, repair=True).checks}["fingerprints"]
    assert c.repaired and "dropped 1 bad part, re-fingerprinted 1 item" in c.detail, c.detail
    assert {c.name: c for c in check(store, repair=False).checks}["fingerprints"].ok
    for item_id, y in signals.items():
        assert identify.identify_array(store, y[SR * 5 : SR * 10])[0].item_id == item_id
    store.close()


def test_by_item_reads_every_item_back_through_bounded_buckets(synthetic_store):
    """``duplicates`` reads the index item by item; spilled to bucket files it gives the same entries."""
    store, signals = synthetic_store
    index = store.fingerprints()
    counts_whole, whole = index.by_item(max_entries=10**9)
    expect = {i: (h.copy(), t.copy()) for i, h, t in whole}
    counts, items = index.by_item(max_entries=1000)  # ~7 buckets
    assert list(index.dir.glob(".by-item-*"))
    got = {i: (h, t) for i, h, t in items}
    assert not list(index.dir.glob(".by-item-*"))  # removed once read
    assert counts == counts_whole and set(got) == set(expect) == set(signals)
    for i, (h, t) in got.items():
        assert counts[i] == h.size > 1000
        a, b = np.lexsort((h, t)), np.lexsort((expect[i][0], expect[i][1]))
        assert np.array_equal(h[a], expect[i][0][b]) and np.array_equal(t[a], expect[i][1][b])


def _pink(n: int, seed: int) -> np.ndarray:
    """Pink noise (1/f power), unit RMS."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[1:] /= np.sqrt(np.arange(1, spec.size))
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def _reference_at(y: np.ndarray, start_s: float, query_s: float, speed: float = 1.0) -> np.ndarray:
    """What verification decodes: the reference from VERIFY_LAG frames before ``start_s`` on."""
    lag = fp.VERIFY_LAG * fp.HOP
    a = round(start_s * SR) - lag
    n = round(query_s * SR * speed) + 2 * lag + fp.N_FFT
    return np.pad(y, (max(0, -a), n))[max(0, a) : max(0, a) + n]


def test_alignment_z_finds_a_buried_match_and_not_other_music():
    """At -3 dB of pink noise the tonal detail still lines up with the clean recording at the right
    alignment (z well above VERIFY_Z) and not with other music (z near chance); a 3 % faster query
    verifies under its speed; silence gives 0."""
    ref = synthetic_music(40, seed=1)
    clip = ref[SR * 12 : SR * 17]
    noisy = clip + _pink(clip.size, 0) * np.sqrt(np.mean(clip**2)) * 10 ** (3 / 20)
    detail, z = fp.tonal_detail(y=noisy), fp.alignment_z
    assert z(query=detail, reference=fp.tonal_detail(y=_reference_at(ref, 12.0, 5.0))) > fp.VERIFY_Z + 2
    other = synthetic_music(40, seed=2)
    assert abs(z(query=detail, reference=fp.tonal_detail(y=_reference_at(other, 12.0, 5.0)))) < fp.VERIFY_Z - 1
    assert z(query=detail, reference=fp.tonal_detail(y=np.zeros(SR * 9, np.float32))) == 0.0
    fast = resample_poly(ref[SR * 20 : SR * 26], 100, 103).astype(np.float32)[: SR * 5]
    reference = fp.tonal_detail(y=_reference_at(ref, 20.0, 5.0, 1.03))
    assert z(query=fp.tonal_detail(y=fast), reference=reference, speed=1.03) > fp.VERIFY_Z + 2
    assert fp.verified_confidence(fp.VERIFY_Z) == pytest.approx(0.5)
    assert fp.verified_confidence(fp.VERIFY_Z + 3) > 0.99 and fp.verified_confidence(3.0) < 0.1


def _aligned(got: np.ndarray, whole: np.ndarray, at: int) -> int:
    """The shift (samples) at which ``got`` best matches ``whole`` from ``at``."""
    return max(range(-400, 401), key=lambda s: float(np.corrcoef(got, whole[at + s : at + s + got.size])[0, 1]))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".opus", "vorbis"])
def test_excerpt_seeks_to_the_sample(tmp_path, suffix):
    """An excerpt decoded after a seek lines up with the same span of a whole-file decode to well within
    a fingerprint frame (32 ms; after a seek MP3 and Opus start a few ms off, as their decoder delay or
    pre-skip is not applied there), zero-pads a start before 0 and stops at the end of the file."""
    if suffix == "vorbis":  # a real Ogg Vorbis file: seeks by pages
        path = shared("librosa", "Kevin_MacLeod_-_Vibe_Ace.ogg")
    else:
        path = write_audio(tmp_path / f"music{suffix}", synthetic_music(30, seed=4), SR)
    whole = decode.load(path, sample_rate=SR, max_duration_s=600)
    got = decode.excerpt(path, start_s=17.3, duration_s=2.0, sample_rate=SR)
    assert got.size == 2 * SR
    settled = got[SR // 10 :]  # Opus converges over its first tens of ms after a seek
    at = int(17.3 * SR) + SR // 10
    best = _aligned(settled, whole, at)
    assert abs(best) <= SR * 0.008
    assert np.corrcoef(settled, whole[at + best : at + best + settled.size])[0, 1] > 0.95
    head = decode.excerpt(path, start_s=-0.5, duration_s=1.0, sample_rate=SR)
    assert head.size == SR and not head[: SR // 2 - 10].any() and np.abs(head[SR // 2 + 100 :]).max() > 0
    tail = decode.excerpt(path, start_s=whole.size / SR - 1.0, duration_s=3.0, sample_rate=SR)
    assert SR - 400 <= tail.size <= SR + 400
    with pytest.raises(decode.DecodeError):
        decode.excerpt(tmp_path / "missing.wav", start_s=0.0, duration_s=1.0)


def test_verification_confirms_the_right_candidate_from_its_audio(tmp_path):
    """Candidates the landmarks leave unsure are checked against their recordings, read from the
    library's files: the right one is confirmed (confidence >= 0.5, re-ranked first), a wrong one is
    not, and one whose file is gone keeps its landmark confidence."""
    paths = {}
    signals = {k: synthetic_music(40, seed=10 + k) for k in (1, 2, 3)}
    for k, y in signals.items():
        paths[k] = str(write_audio(tmp_path / f"r{k}.flac", y, SR))
    paths[3] = str(tmp_path / "gone.flac")
    clip = signals[2][SR * 15 : SR * 20]
    noisy = clip + _pink(clip.size, 1) * np.sqrt(np.mean(clip**2)) * 10 ** (3 / 20)
    cands = [fp.Candidate(1, 5, 8.0, 1.0, 900, 0.2), fp.Candidate(2, 4, 15.0, 1.0, 900, 0.1),
             fp.Candidate(3, 4, 2.0, 1.0, 900, 0.05)]  # fmt: skip
    got = identify.verify_candidates(noisy, cands, paths)
    assert [c.item_id for c in got][:1] == [2] and got[0].confidence >= 0.5 and got[0].extra["z"] > fp.VERIFY_Z
    wrong = next(c for c in got if c.item_id == 1)
    assert wrong.confidence < 0.5 and wrong.extra["z"] < fp.VERIFY_Z
    gone = next(c for c in got if c.item_id == 3)
    assert gone.confidence == 0.05 and "z" not in gone.extra


# -- sketches: the second look when the landmarks are gone -------------------------------------------
def test_sketch_places_find_an_excerpt_and_never_span_two_recordings():
    """A noisy excerpt's sketch matches its recording's windows at its offset (to within SKETCH_NEAR
    frames, at any phase); a place never joins the end of one recording to the start of the next, and
    one recording's places stay SKETCH_GAP apart."""
    refs = [synthetic_music(30, seed=40 + k) for k in range(3)]
    prints = [fp.fingerprint(y=y) for y in refs]
    words = np.concatenate([p.sketch for p in prints]).T.copy()
    items = np.concatenate([np.full(p.sketch.shape[0], k + 1, np.uint32) for k, p in enumerate(prints)])
    windows = np.concatenate([np.arange(p.sketch.shape[0], dtype=np.uint32) for p in prints])
    for start in (7.0, 12.34):
        clip = refs[1][int(start * SR) : int(start * SR) + 5 * SR]
        noisy = clip + _pink(clip.size, 3) * np.sqrt(np.mean(clip**2))  # 0 dB
        query = fp.query_sketch(detail=fp.tonal_detail(y=noisy))
        assert [p for p, _ in query] == list(range(0, fp.SKETCH_FRAMES, fp.SKETCH_PHASE))
        places = fp.sketch_places(fp.sketch_hits(query=query, words=words, items=items, windows=windows))
        item, offset, sim = places[0]
        assert item == 2 and abs(offset - start) <= fp.SKETCH_NEAR * fp.FRAME_S and sim > 0.1
        assert all(s < sim for i, _, s in places if i != 2)
        mine = np.sort([o for i, o, _ in places if i == 2])
        assert (np.diff(mine) >= fp.SKETCH_GAP * fp.FRAME_S - 1e-6).all()
    # a query whose only exact match runs from the end of recording 1 into recording 2 finds no such place
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 1 << 63, size=(fp.SKETCH_WORDS, 12), dtype=np.uint64)
    owner, number = np.repeat(np.array([1, 2], np.uint32), 6), np.tile(np.arange(6, dtype=np.uint32), 2)
    seam = [(0, stored[:, 4:8].T.copy())]  # windows 4, 5 of recording 1 and 0, 1 of recording 2
    hits = fp.sketch_hits(query=seam, words=stored, items=owner, windows=number)
    assert hits and max(h[0] for h in hits) < 0.5 and (1, 4 * fp.SKETCH_FRAMES) not in {(i, o) for _, i, o in hits}
    inside = [(0, stored[:, 1:5].T.copy())]
    assert max(fp.sketch_hits(query=inside, words=stored, items=owner, windows=number)) == (1.0, 1, fp.SKETCH_FRAMES)
    # a deleted recording takes no place, even when it alone would fill the best places kept
    alive = fp.sketch_hits(query=inside, words=stored, items=owner, windows=number, per_phase=1, dead=np.array([1]))
    assert [i for _, i, _ in alive] == [2]
    short = fp.tonal_detail(y=np.zeros(SR // 2, np.float32))
    assert fp.query_sketch(detail=short) == []  # shorter than a window: nothing to look up


def test_sketch_hits_equal_a_brute_force_count_of_differing_bits(monkeypatch):
    """The blocked popcount scan scores every whole place exactly as counting unpacked bits does, across
    block boundaries and recordings of every length (1 to 9 windows)."""
    monkeypatch.setattr(fp, "SKETCH_BLOCK", 16)
    rng = np.random.default_rng(9)
    lengths = rng.integers(1, 10, 12)
    items = np.repeat(np.arange(1, 13, dtype=np.uint32), lengths)
    windows = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
    words = fp.sketch_bits(windows=rng.standard_normal((items.size, fp.SKETCH_BITS))).T.copy()
    words[:, 7] = words[:, 30]  # a copy, so the best places are not ties of chance
    query = [(0, words[:, 28:32].T.copy()), (8, words[:, 5:8].T.copy()), (16, words[:, 40:41].T.copy())]
    got = fp.sketch_hits(query=query, words=words, items=items, windows=windows, per_phase=10_000)
    bits = np.unpackbits(words.T.copy().view(np.uint8), axis=1)[:, : fp.SKETCH_BITS].astype(int)
    want = []
    for p, rows in query:
        qb = np.unpackbits(rows.copy().view(np.uint8), axis=1)[:, : fp.SKETCH_BITS].astype(int)
        k = rows.shape[0]
        for r in range(items.size - k + 1):
            if items[r] == items[r + k - 1]:
                diff = sum(int((qb[j] != bits[r + j]).sum()) for j in range(k))
                sim = round(1 - 2 * diff / (k * fp.SKETCH_BITS), 9)
                want.append((sim, int(items[r]), int(windows[r]) * fp.SKETCH_FRAMES - p))
    assert sorted((round(s, 9), i, o) for s, i, o in got) == sorted(want)
    assert max(got)[0] == 1.0


def test_identify_by_sketch_when_no_landmark_survives(tmp_path):
    """With the landmarks gone (items stored with their sketches and no hashes: what 0 dB pink noise
    leaves a 5 s excerpt of some music), a noisy excerpt is still identified, by its sketch, checked
    against the recording's audio, at its offset; music not in the library is no match; a deleted
    recording is not proposed."""
    store = Store(tmp_path / "lib")
    signals = {}
    for k in range(4):
        y = synthetic_music(60, seed=20 + k)
        path = write_audio(tmp_path / f"r{k}.flac", y, SR)
        print_ = fp.fingerprint(y=y)
        gone = fp.Fingerprint(np.zeros(0, np.uint32), np.zeros(0, np.uint32), print_.duration_s, print_.sketch)
        item_id, _ = store.catalog.put_item(_item(k, str(path), 60.0), [], [])
        store.fingerprints().add(item_id, gone)
        signals[item_id] = y
    store.flush()
    clip = signals[3][SR * 21 : SR * 26]
    noisy = clip + _pink(clip.size, 0) * np.sqrt(np.mean(clip**2))
    assert not fp.match(peaks=fp.peaks_of(y=noisy), lookup=store.fingerprints().lookup)
    hits = identify.identify_array(store, noisy)
    assert hits and hits[0].item_id == 3 and hits[0].via == "sketch" and abs(hits[0].offset_s - 21.0) < 0.2
    assert hits[0].confidence >= 0.5 and hits[0].verified_z > fp.SKETCH_Z
    assert hits[0].to_dict()["via"] == "sketch"
    assert identify.identify_array(store, noisy, verify=False) == []  # the second look costs audio reads
    other = synthetic_music(5, seed=99)  # same pitch grid and timbre: z up to ~6 by chance, below the margin
    for noise in (0.0, 0.05):
        assert identify.identify_array(store, other + noise * _pink(other.size, 5)) == []
    store.catalog.delete_items([3])
    assert all(c.item_id != 3 for c in identify.sketch_candidates(store, fp.tonal_detail(y=noisy)))
    store.close()


def test_merges_and_repairs_keep_sketches_in_step(synthetic_store):
    """A purge drops a deleted item's sketch windows with its hashes; ``verify`` finds sketch columns
    out of order or of items the part does not hold."""
    from soundscope.store import fingerprints as fps

    store, signals = synthetic_store
    index = store.fingerprints()
    windows = index.stats()["fingerprint_sketch_windows"]
    assert windows == sum(fp.fingerprint(y=y).sketch.shape[0] for y in signals.values())
    store.catalog.delete_items([2])
    store.flush()  # purged
    part = index.parts[0]
    assert 2 not in set(np.asarray(part.sketch_items).tolist()) and index.verify() == []
    assert index.stats()["fingerprint_sketch_windows"] == windows - fp.fingerprint(y=signals[2]).sketch.shape[0]
    swapped = fps._Part(part.name, part.hashes, part.items, part.times, part.ids, part.sketch,
                        part.sketch_items, np.asarray(part.sketch_windows)[::-1].copy())  # fmt: skip
    assert fps._sketch_problems(swapped) == ["sketch windows not in (item, window) order"]
    stray = np.asarray(part.sketch_items).copy()
    stray[-1] = 99
    odd = fps._Part(part.name, part.hashes, part.items, part.times, part.ids, part.sketch, stray, part.sketch_windows)
    assert fps._sketch_problems(odd) == ["sketch windows of items the part does not hold"]
