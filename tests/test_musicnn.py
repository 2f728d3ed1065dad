"""Tests for the numpy port of the musicnn taggers (``soundscope.analyzers.musicnn``).

Reference outputs of the original TensorFlow graphs live in ``/work/shared/reference/musicnn``
(see its README); tests that need them, or the ``musicnn`` wheel's checkpoints, skip cleanly
when they are absent.
"""

from __future__ import annotations

import itertools
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from soundscope.analyzers import musicnn as M
from soundscope.types import Analyzer, FrameOutput

REF_DIR = Path("/work/shared/reference/musicnn")
CLIPS = sorted(p.stem for p in REF_DIR.glob("*.npz")) if REF_DIR.is_dir() else []
MUSICNN_MODELS = ["MTT_musicnn", "MSD_musicnn"]
ALL_MODELS = list(M.MODELS)


def _packaged() -> Path | None:
    try:
        return M._packaged_dir()
    except FileNotFoundError:
        return None


PACKAGED = _packaged()
needs_weights = pytest.mark.skipif(PACKAGED is None, reason="musicnn wheel (checkpoints) not installed")
needs_ref = pytest.mark.skipif(not CLIPS, reason=f"no reference outputs in {REF_DIR}")


def _read_wav(path: Path) -> np.ndarray:
    """16-bit PCM mono wav -> float32 in [-1, 1) (as soundfile/librosa read it)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="session")
def analyzers() -> dict[str, M.MusicnnAnalyzer]:
    if PACKAGED is None:
        pytest.skip("musicnn wheel (checkpoints) not installed")
    return {m: M.load(m) for m in ALL_MODELS}


@pytest.fixture(scope="session")
def reference() -> dict[str, dict[str, np.ndarray]]:
    if not CLIPS:
        pytest.skip(f"no reference outputs in {REF_DIR}")
    return {c: dict(np.load(REF_DIR / f"{c}.npz")) for c in CLIPS}


@pytest.fixture(scope="session")
def wav_outputs(analyzers, reference) -> dict[str, FrameOutput]:
    """MTT_musicnn run end to end (our frontend) on every reference wav."""
    return {c: analyzers["MTT_musicnn"].analyze(_read_wav(REF_DIR / f"{c}.wav")) for c in CLIPS}


# --- checkpoint reader ------------------------------------------------------------------------------------------


@needs_weights
def test_checkpoint_index_and_tensors() -> None:
    ckpt = PACKAGED / "MTT_musicnn"
    entries = M.read_checkpoint_index(ckpt)
    assert len(entries) == 150  # 64 variables, 2 Adam slots for each of the 42 trainable ones, 2 beta powers
    e = entries["conv2d/kernel"]
    assert e.dtype == 1 and e.shape == (7, 38, 1, 204) and e.size == 7 * 38 * 204 * 4
    w = M.read_checkpoint(ckpt)
    assert len(w) == 64 and not any("Adam" in k or k.startswith("beta") for k in w)
    expected = {
        "batch_normalization/gamma": (1,),
        "conv2d/kernel": (7, 38, 1, 204),  # timbral 7 x int(0.4 * 96)
        "conv2d_1/kernel": (7, 67, 1, 204),  # timbral 7 x int(0.7 * 96)
        "conv2d_2/kernel": (128, 1, 1, 51),  # temporal
        "conv2d_3/kernel": (64, 1, 1, 51),
        "conv2d_4/kernel": (32, 1, 1, 51),
        "conv2d_5/kernel": (7, 561, 1, 64),  # mid-end
        "conv2d_7/kernel": (7, 64, 1, 64),
        "batch_normalization_9/moving_variance": (1506,),
        "dense/kernel": (1506, 200),
        "dense_1/kernel": (200, 50),
    }
    for name, shape in expected.items():
        assert w[name].shape == shape, name
    for name, arr in w.items():
        assert arr.dtype == np.float32 and np.isfinite(arr).all(), name
        if name.endswith("moving_variance"):
            assert (arr > 0).all(), name
    # Every data byte is accounted for: tensors tile the shard without gaps.
    spans = sorted((e.offset, e.size) for e in entries.values())
    assert spans[0][0] == 0
    assert all(a + s == b for (a, s), (b, _) in itertools.pairwise(spans))
    assert spans[-1][0] + spans[-1][1] == (ckpt / ".data-00000-of-00001").stat().st_size


@needs_weights
def test_vgg_checkpoint_shapes() -> None:
    w = M.read_checkpoint(PACKAGED / "MSD_vgg")
    assert w["1CNN/kernel"].shape == (3, 3, 1, 128)
    assert w["5CNN/kernel"].shape == (3, 3, 128, 128)
    assert w["dense/kernel"].shape == (256, 50)


def _snappy_compress(data: bytes) -> bytes:
    """Tiny greedy snappy compressor (test-only) using all three element kinds."""
    out = bytearray(_varint_bytes(len(data)))
    table: dict[bytes, int] = {}
    i = lit = 0

    def flush(end: int) -> None:
        n = end - lit
        if n:
            if n <= 60:
                out.append((n - 1) << 2)
            else:
                out.append(61 << 2)  # 2-byte length
                out.extend((n - 1).to_bytes(2, "little"))
            out.extend(data[lit:end])

    while i + 4 <= len(data):
        key = data[i : i + 4]
        j = table.get(key)
        table[key] = i
        if j is None:
            i += 1
            continue
        length = 4
        while i + length < len(data) and data[j + length] == data[i + length] and length < 64:
            length += 1
        flush(i)
        off = i - j
        if length <= 11 and off < 2048:
            out.append(((off >> 8) << 5) | ((length - 4) << 2) | 1)
            out.append(off & 0xFF)
        elif off < 65536:
            out.append(((length - 1) << 2) | 2)
            out.extend(off.to_bytes(2, "little"))
        else:
            out.append(((length - 1) << 2) | 3)
            out.extend(off.to_bytes(4, "little"))
        i += length
        lit = i
    flush(len(data))
    return bytes(out)


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_snappy_decoder() -> None:
    # hand-made stream: literal "a" then a 1-byte-offset copy of length 9 that overlaps itself
    assert M.snappy_decompress(bytes([10, 0x00, ord("a"), 0x15, 0x01])) == b"a" * 10
    rng = np.random.default_rng(0)
    words = [b"batch_normalization", b"/moving_mean", b"conv2d_", b"kernel", b"\x00\x01\x02"]
    for n in (0, 1, 100, 5000, 100_000):
        data = b"".join(words[k] for k in rng.integers(0, len(words), n // 8)) + rng.bytes(n % 97)
        comp = _snappy_compress(data)
        assert M.snappy_decompress(comp) == data
        if len(data) > 1000:
            assert len(comp) < len(data) // 2  # the copy paths were really used
    with pytest.raises(ValueError):
        M.snappy_decompress(bytes([5, 0x00, ord("a"), 0x15, 0x01]))  # length mismatch


def _proto(fields: list[tuple[int, int | bytes]]) -> bytes:
    out = bytearray()
    for num, v in fields:
        if isinstance(v, bytes):
            out += _varint_bytes(num << 3 | 2) + _varint_bytes(len(v)) + v
        else:
            out += _varint_bytes(num << 3) + _varint_bytes(v)
    return bytes(out)


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                shared += 1
        out += _varint_bytes(shared) + _varint_bytes(len(k) - shared) + _varint_bytes(len(v)) + k[shared:] + v
        prev = k
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _sstable(entries: list[tuple[bytes, bytes]], compress: bool) -> bytes:
    buf = bytearray()

    def put(block: bytes, comp: bool) -> bytes:
        stored = _snappy_compress(block) if comp else block
        handle = _varint_bytes(len(buf)) + _varint_bytes(len(stored))
        buf.extend(stored + bytes([1 if comp else 0]) + b"\0\0\0\0")
        return handle

    half = len(entries) // 2
    h1 = put(_block(entries[:half]), compress)
    h2 = put(_block(entries[half:]), compress)
    meta = put(_block([]), False)
    index = put(_block([(entries[half - 1][0], h1), (entries[-1][0], h2)]), compress)
    footer = (meta + index).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(buf + footer)


@pytest.mark.parametrize("compress", [False, True])
def test_checkpoint_reader_on_synthetic_bundle(tmp_path: Path, compress: bool) -> None:
    """A hand-built bundle (prefix-compressed keys, optionally snappy blocks) round-trips."""
    tensors = {
        "a/kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        "a/kernel/Adam": np.ones(24, np.float32).reshape(2, 3, 4),
        "b/bias": np.array([1.5, -2.0], np.float32),
        "global_step": np.array(12345678901, np.int64),
    }
    dtypes = {np.dtype(np.float32): 1, np.dtype(np.int64): 9}
    data, entries = bytearray(), [(b"", _proto([(1, 1)]))]
    for name in sorted(tensors):
        arr = tensors[name]
        shape = _proto([(2, _proto([(1, d)])) for d in arr.shape])
        entries.append((name.encode(), _proto([(1, dtypes[arr.dtype]), (2, shape), (4, len(data)), (5, arr.nbytes)])))
        data += arr.tobytes()
    (tmp_path / ".index").write_bytes(_sstable(entries, compress))
    (tmp_path / ".data-00000-of-00001").write_bytes(bytes(data))
    index = M.read_checkpoint_index(tmp_path)
    assert set(index) == set(tensors) and index["a/kernel"].shape == (2, 3, 4)
    got = M.read_checkpoint(tmp_path)
    assert set(got) == {"a/kernel", "b/bias", "global_step"}
    for name, arr in got.items():
        np.testing.assert_array_equal(arr, tensors[name])
        assert arr.dtype == tensors[name].dtype
    assert "a/kernel/Adam" in M.read_checkpoint(tmp_path, skip_optimizer=False)


# --- reference outputs ------------------------------------------------------------------------------------------


@needs_weights
@needs_ref
@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("clip", CLIPS)
def test_matches_tensorflow_reference(analyzers, reference, model: str, clip: str) -> None:
    ref = reference[clip]
    tags, emb = analyzers[model].predict(ref["logmel_batch"])
    ref_emb = ref[f"penultimate_{model}"].reshape(len(emb), -1)  # vgg: (n, 2, 1, 128) pool5
    assert tags.shape == ref[f"tags_{model}"].shape and emb.shape == ref_emb.shape
    assert np.abs(tags - ref[f"tags_{model}"]).max() < 1e-4
    assert np.abs(emb - ref_emb).max() < 1e-4


# --- frontend ---------------------------------------------------------------------------------------------------


@needs_ref
@pytest.mark.parametrize("clip", CLIPS)
def test_log_mel_matches_reference(reference, clip: str) -> None:
    y = _read_wav(REF_DIR / f"{clip}.wav")
    spec = M.log_mel(y)
    assert spec.shape == (1 + len(y) // 256, 96) and spec.dtype == np.float32
    x, starts = M.patches(spec)
    ref = reference[clip]["logmel_batch"]
    assert x.shape == ref.shape and starts[1] == 187
    diff = np.abs(x - ref)
    # only values sitting on a float16 rounding boundary may differ by more than float32 rounding (by one
    # float16 step, ~4e-4 here); float32 log10 itself differs in the last bits between numpy builds and CPU
    # kernels (numpy 2.4.6 on an AVX2 machine: about half the values, by ~1e-7), which changes no tag
    assert diff.max() < 1e-3
    assert (diff > 1e-5).mean() < 0.01


@needs_weights
@needs_ref
def test_tags_from_wav_match_reference(reference, wav_outputs) -> None:
    for clip in CLIPS:
        out = wav_outputs[clip]
        ref = reference[clip]["tags_MTT_musicnn"]
        assert out.scores.shape == ref.shape
        assert np.abs(out.scores - ref).max() < 1e-3, clip
        np.testing.assert_allclose(out.times, np.arange(len(ref)) * 187 * 256 / 16000, atol=1e-5)


def test_log_mel_full_scale_is_finite() -> None:
    """Regression: upstream took log10(10000*mel+1) in float16, which overflows to inf on loud audio."""
    rng = np.random.default_rng(1)
    t = np.arange(3 * 16000) / 16000
    signals = {
        "square": np.sign(np.sin(2 * np.pi * 220 * t)),
        "noise": rng.uniform(-1, 1, t.size),
        "sine": np.sin(2 * np.pi * 1000 * t),
        "dc": np.ones(t.size),
    }
    for name, y in signals.items():
        spec = M.log_mel(y.astype(np.float32))
        assert np.isfinite(spec).all(), name
        assert spec.min() >= 0 and spec.max() < np.log10(1e4 * 65504 + 1), name
    # the test signals really are loud enough to overflow the upstream float16 log
    mel = np.abs(np.fft.rfft(signals["square"][:512] * np.hanning(512))) ** 2 @ M._mel_basis()
    with np.errstate(over="ignore"):
        assert np.isinf(np.log10(np.float16(10000) * mel.astype(np.float16) + np.float16(1))).any()


@needs_weights
def test_full_scale_tags_are_finite(analyzers) -> None:
    y = np.sign(np.sin(2 * np.pi * 110 * np.arange(4 * 16000) / 16000)).astype(np.float32)
    for model in MUSICNN_MODELS:
        out = analyzers[model].analyze(y)
        assert np.isfinite(out.scores).all() and np.isfinite(out.embeddings).all()
        assert (out.scores >= 0).all() and (out.scores <= 1).all()


def test_log_mel_edge_cases() -> None:
    assert M.log_mel(np.zeros(0, np.float32)).shape == (0, 96)
    silence = M.log_mel(np.zeros(16000, np.float32))
    assert silence.shape == (63, 96) and not silence.any()
    x, starts = M.patches(silence)
    assert x.shape == (1, 187, 96) and starts.tolist() == [0]
    x, starts = M.patches(np.ones((400, 96), np.float32), hop_frames=100)
    assert starts.tolist() == [0, 100, 200]


# --- analyzer API -----------------------------------------------------------------------------------------------


@needs_weights
def test_analyzer_protocol(analyzers) -> None:
    a = analyzers["MTT_musicnn"]
    assert isinstance(a, Analyzer)
    assert (a.name, a.model_id, a.sample_rate, a.dim) == ("musicnn_mtt", "musicnn/MTT_musicnn@0.1.0", 16000, 200)
    assert a.labels == M.MTT_LABELS and len(a.labels) == 50
    assert a.window_s == pytest.approx(187 * 256 / 16000) and a.hop_s == a.window_s
    assert a.params["hop_frames"] == 187
    b = analyzers["MSD_musicnn"]
    assert (b.name, b.labels) == ("musicnn_msd", M.MSD_LABELS)
    assert analyzers["MTT_vgg"].dim == 256 and analyzers["MSD_vgg"].name == "vgg_msd"
    assert M.load() is a and M.load("musicnn_mtt") is a  # cached per process


@needs_weights
def test_model_dir_override(tmp_path: Path) -> None:
    a = M.load("MSD_musicnn", model_dir=str(PACKAGED))
    b = M.load("MSD_musicnn", model_dir=str(PACKAGED / "MSD_musicnn"))
    assert a.checkpoint == b.checkpoint
    with pytest.raises(FileNotFoundError):
        M.load("MSD_musicnn", model_dir=str(tmp_path))
    with pytest.raises(ValueError):
        M.load("MSD_musicnn_big")


@needs_weights
def test_short_empty_and_offset(analyzers) -> None:
    a = analyzers["MTT_musicnn"]
    empty = a.analyze(np.zeros(0, np.float32))
    assert len(empty) == 0 and empty.scores.shape == (0, 50) and empty.embeddings.shape == (0, 200)
    rng = np.random.default_rng(2)
    y = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    out = a.analyze(y, offset_s=10.0)
    assert len(out) == 1 and out.times.tolist() == [10.0]
    padded = a.analyze(np.pad(y, (0, M.MIN_SAMPLES - y.size)))
    np.testing.assert_allclose(out.scores, padded.scores, atol=1e-6)  # short audio = zero-padded to one patch
    assert out.scores.dtype == np.float32 and out.embeddings.dtype == np.float32


@needs_weights
def test_overlap(analyzers) -> None:
    y = (0.1 * np.random.default_rng(3).standard_normal(9 * 16000)).astype(np.float32)
    base = analyzers["MTT_musicnn"].analyze(y)
    a = M.load("MTT_musicnn", overlap_s=1.5)
    assert a.hop_frames == 187 - 94 and a.hop_s == pytest.approx(93 * 256 / 16000)
    out = a.analyze(y)
    assert len(out) == 5 and len(base) == 3
    np.testing.assert_allclose(np.diff(out.times), a.hop_s, atol=1e-5)
    np.testing.assert_allclose(out.scores[0], base.scores[0], atol=1e-6)
    assert np.abs(out.scores[2] - base.scores[1]).max() < 0.1  # starts one frame (16 ms) earlier
    with pytest.raises(ValueError):
        M.load("MTT_musicnn", overlap_s=3.0)


# --- sanity (what the reference data supports) -------------------------------------------------------------------


@needs_weights
@needs_ref
def test_tags_make_sense(wav_outputs) -> None:
    mean = {c: out.scores.mean(axis=0) for c, out in wav_outputs.items()}
    tag = {name: i for i, name in enumerate(M.MTT_LABELS)}
    assert mean["piano_slow"][tag["piano"]] > 2 * mean["rock_fast"][tag["piano"]]
    assert mean["piano_slow"][tag["slow"]] > 2 * mean["rock_fast"][tag["slow"]]
    assert mean["rock_fast"][tag["rock"]] > 3 * mean["piano_slow"][tag["rock"]]
    top = {c: M.MTT_LABELS[int(np.argmax(m))] for c, m in mean.items()}
    assert top["choir"] == "choir"
    assert top["flute"] == "flute"
    assert top["techno"] == "techno"
    assert top["sitar"] == "sitar"
    assert top["strings_slow"] == "violin"
    assert top["rock_fast"] == "rock"
    assert mean["speech_en_f"][tag["female"]] > mean["speech_en_f"][tag["male"]]
