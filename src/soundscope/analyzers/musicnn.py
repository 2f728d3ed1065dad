"""musicnn music taggers (Pons & Serra, 2019) ported to pure numpy.

The weights are read straight from the TensorFlow 1 checkpoints shipped in the
``musicnn`` 0.1.0 wheel with a small self-contained reader (LevelDB SSTable
``.index`` + raw ``.data`` shard; no TensorFlow, no protobuf); the forward pass
re-implements ``musicnn/models.py`` in inference mode (batch norm with moving
statistics, no dropout).

Models: ``MTT_musicnn`` and ``MSD_musicnn`` (penultimate = 200-d dense layer) and
``MTT_vgg`` / ``MSD_vgg`` (embedding = flattened ``pool5``, 2x1x128 = 256-d).

Input is musicnn's log-mel: 16 kHz, 512-point STFT, hop 256, 96 Slaney mel
bands (power 2), rounded through float16 as upstream does, then
``log10(10000 * mel + 1)`` in float32, cut into 187-frame (~2.99 s) patches.
The STFT is centred with *zero* padding (librosa >= 0.10's default, which the reference
outputs were made with); ``soundscope.features.stft_magnitude(center=True)`` reflect-pads,
so :func:`log_mel` pads itself and calls it with ``center=False``.

Usage::

    from soundscope.analyzers import musicnn
    tagger = musicnn.load("MTT_musicnn")          # or "MSD_musicnn", "MTT_vgg", "MSD_vgg"
    out = tagger.analyze(y_16k)                   # FrameOutput: times (n,), scores (n, 50), embeddings (n, 200)

Matches the TensorFlow originals to ~1e-5 (tags and embeddings); about 100x real time on
one core for the musicnn models, 160x for the VGG ones.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundscope.features import mel_filterbank, stft_magnitude
from soundscope.types import FrameOutput

__all__ = [
    "MODELS",
    "MSD_LABELS",
    "MTT_LABELS",
    "CheckpointEntry",
    "MusicnnAnalyzer",
    "load",
    "log_mel",
    "patches",
    "read_checkpoint",
    "read_checkpoint_index",
    "snappy_decompress",
]

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 187  # frames per patch (~2.99 s), as musicnn's default input_length=3
VERSION = "0.1.0"

MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")

# Tag lists copied from musicnn/configuration.py (0.1.0).
MTT_LABELS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
]  # fmt: skip
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Minimal protobuf / snappy / SSTable decoding (enough for TF checkpoints)
# ---------------------------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns ``(value, new_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into ``[(field_number, value), ...]``.

    Varints come back as ``int``, fixed32/fixed64 as ``int`` (unsigned), length-delimited as ``bytes``.
    """
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + n])
            if len(value) != n:
                raise ValueError("truncated length-delimited field")
            pos += n
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def snappy_decompress(data: bytes) -> bytes:
    """Decompress a raw (unframed) snappy block, as LevelDB stores compressed blocks."""
    length, pos = _varint(data, 0)
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                nbytes = size - 59
                size = int.from_bytes(data[pos : pos + nbytes], "little")
                pos += nbytes
            size += 1
            if pos + size > n:
                raise ValueError("snappy: literal runs past the input")
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:  # copy, 1-byte offset
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:  # copy, 2-byte offset
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:  # copy, 4-byte offset
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("snappy: bad copy offset")
        start = len(out) - offset
        if offset >= size:
            out += out[start : start + size]
        else:  # overlapping copy: repeat the pattern
            for i in range(size):
                out.append(out[start + i])
    if len(out) != length:
        raise ValueError(f"snappy: decoded {len(out)} bytes, header says {length}")
    return bytes(out)


_SSTABLE_MAGIC = 0xDB4775248B80FB57
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked crc32c


def _read_block(buf: bytes, offset: int, size: int) -> bytes:
    """Return the contents of the SSTable block at ``offset`` (``size`` excludes the 5-byte trailer)."""
    raw = buf[offset : offset + size]
    kind = buf[offset + size]
    if kind == 0:
        return raw
    if kind == 1:
        return snappy_decompress(raw)
    raise ValueError(f"unsupported SSTable block compression type {kind}")


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a LevelDB block (prefix-compressed keys + restart array) into ``[(key, value), ...]``."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _sstable_items(buf: bytes) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of a LevelDB-format table held in ``buf``, in key order."""
    if len(buf) < 48:
        raise ValueError("not an SSTable: file too short")
    footer = buf[-48:]
    if struct.unpack("<Q", footer[40:])[0] != _SSTABLE_MAGIC:
        raise ValueError("not an SSTable: bad magic number")
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    items: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_read_block(buf, index_off, index_size)):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        items.extend(_block_entries(_read_block(buf, off, size)))
    return items


# tensorflow/core/framework/types.proto DataType -> numpy little-endian dtype
_TF_DTYPES: dict[int, str] = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
    17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8",
}  # fmt: skip


@dataclass(frozen=True)
class CheckpointEntry:
    """One tensor's ``BundleEntryProto``: where its bytes lie in which ``.data`` shard."""

    name: str
    dtype: int  # TF DataType enum (1 = float32)
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    slices: bool = False  # partitioned variable (not supported)


def _parse_entry(name: str, value: bytes) -> CheckpointEntry:
    dtype = shard = off = size = 0
    shape: list[int] = []
    slices = False
    for num, v in _proto_fields(value):
        if num == 1:
            dtype = int(v)  # type: ignore[arg-type]
        elif num == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1; string name = 2}
            for snum, dim in _proto_fields(v):  # type: ignore[arg-type]
                if snum == 2:
                    d = dict(_proto_fields(dim))  # type: ignore[arg-type]
                    shape.append(int(d.get(1, 0)))  # type: ignore[arg-type]
        elif num == 3:
            shard = int(v)  # type: ignore[arg-type]
        elif num == 4:
            off = int(v)  # type: ignore[arg-type]
        elif num == 5:
            size = int(v)  # type: ignore[arg-type]
        elif num == 7:
            slices = True
    return CheckpointEntry(name, dtype, tuple(shape), shard, off, size, slices)


def _index_path(prefix: str | os.PathLike[str]) -> tuple[Path, str]:
    """Resolve a checkpoint prefix (``dir/`` for musicnn's nameless checkpoints, or ``dir/model.ckpt``)."""
    p = str(prefix)
    if os.path.isdir(p):
        p = os.path.join(p, "")
    return Path(p + ".index"), p


def _read_index(prefix: str | os.PathLike[str]) -> tuple[str, int, dict[str, CheckpointEntry]]:
    """``(data file prefix, number of shards, entries)`` of a checkpoint's ``.index``."""
    index, base = _index_path(prefix)
    num_shards = 1
    entries: dict[str, CheckpointEntry] = {}
    for key, value in _sstable_items(index.read_bytes()):
        if key == b"":  # BundleHeaderProto {int32 num_shards = 1; endianness = 2; version = 3}
            header = dict(_proto_fields(value))
            num_shards = int(header.get(1, 1))  # type: ignore[arg-type]
            if header.get(2, 0) != 0:
                raise ValueError("big-endian checkpoints are not supported")
        else:
            entries[key.decode()] = _parse_entry(key.decode(), value)
    return base, num_shards, entries


def read_checkpoint_index(prefix: str | os.PathLike[str]) -> dict[str, CheckpointEntry]:
    """Parse a TF checkpoint's ``.index`` into ``{variable_name: CheckpointEntry}`` (header entry skipped)."""
    return _read_index(prefix)[2]


def read_checkpoint(prefix: str | os.PathLike[str], *, skip_optimizer: bool = True) -> dict[str, np.ndarray]:
    """Load every tensor of a TF (v2-format bundle) checkpoint as numpy arrays, without TensorFlow.

    ``prefix`` is the checkpoint prefix or, for musicnn's checkpoints (saved with an empty
    file name), the folder holding ``.index`` and ``.data-00000-of-00001``.
    ``skip_optimizer`` leaves out Adam slots (``*/Adam``, ``*/Adam_1``) and ``beta1_power``/``beta2_power``.
    Arrays have the stored shape and dtype (float32 for the musicnn weights); string tensors are skipped.
    """
    base, num_shards, entries = _read_index(prefix)
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        if skip_optimizer and (name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power")):
            continue
        if e.slices:
            raise ValueError(f"{name}: partitioned variables are not supported")
        if e.dtype not in _TF_DTYPES:
            continue  # strings etc.: not needed for weights
        if e.shard_id not in shards:
            shards[e.shard_id] = Path(f"{base}.data-{e.shard_id:05d}-of-{num_shards:05d}").read_bytes()
        dt = np.dtype(_TF_DTYPES[e.dtype])
        count = int(np.prod(e.shape)) if e.shape else 1
        if count * dt.itemsize != e.size or e.offset + e.size > len(shards[e.shard_id]):
            raise ValueError(f"{name}: {e.size} bytes at {e.offset} do not hold shape {e.shape} {dt}")
        arr = np.frombuffer(shards[e.shard_id], dtype=dt, count=count, offset=e.offset)
        out[name] = arr.reshape(e.shape).astype(dt.newbyteorder("="))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Frontend: musicnn's log-mel
# ---------------------------------------------------------------------------------------------------------------

_FLOAT16_MAX = float(np.finfo(np.float16).max)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """Slaney-normalised mel filters as ``librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)``: (257, 96)."""
    return mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, htk=False, norm="slaney")


def log_mel(y: np.ndarray) -> np.ndarray:
    """musicnn's input representation of ``y`` (n_samples,) at 16 kHz: float32 ``(n_frames, 96)``.

    As ``librosa.feature.melspectrogram(y, sr=16000, n_fft=512, hop_length=256, n_mels=96)``
    with librosa >= 0.10 defaults (``center=True`` with *zero* padding of ``n_fft // 2`` on each
    side, periodic Hann window, power 2), so ``n_frames = 1 + n_samples // 256``; then rounded
    through float16 as upstream does and ``log10(10000 * mel + 1)`` taken in float32. Upstream
    takes that log in float16, where ``10000 * mel`` overflows to inf on loud audio; here it
    cannot (mel values beyond float16's range, which upstream would turn into inf, are clipped
    to 65504 first). Empty input gives ``(0, 96)``.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.shape[0] == 0:
        return np.zeros((0, N_MELS), np.float32)
    pad = N_FFT // 2
    y = np.pad(y, (pad, pad), mode="constant")  # librosa >= 0.10: pad_mode="constant"
    power = stft_magnitude(y, n_fft=N_FFT, hop_length=HOP, center=False, power=2.0)
    mel = power @ _mel_basis()
    mel = np.minimum(mel, _FLOAT16_MAX).astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000.0) * mel + np.float32(1.0)).astype(np.float32)


def patches(spec: np.ndarray, *, n_frames: int = N_FRAMES, hop_frames: int = N_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``(frames, 96)`` log-mel into ``(n_patches, n_frames, 96)`` patches, as upstream ``batch_data``.

    Patches start every ``hop_frames`` frames; trailing frames that do not fill a whole patch
    are dropped (upstream behaviour), except that a spectrogram shorter than one patch is
    padded with zeros (``log10(1)``, i.e. digital silence) to one patch. Returns the patches and
    their first frame indices ``(n_patches,)``.
    """
    spec = np.asarray(spec, dtype=np.float32)
    if spec.shape[0] == 0:
        return np.zeros((0, n_frames, spec.shape[1]), np.float32), np.zeros(0, np.int64)
    if spec.shape[0] < n_frames:
        spec = np.pad(spec, ((0, n_frames - spec.shape[0]), (0, 0)))
    starts = np.arange(0, spec.shape[0] - n_frames + 1, hop_frames)
    return np.stack([spec[s : s + n_frames] for s in starts]), starts


# ---------------------------------------------------------------------------------------------------------------
# Forward passes
# ---------------------------------------------------------------------------------------------------------------

_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default


def _bn(w: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm as ``x * scale + shift`` (moving statistics)."""
    gamma, beta = w[f"{name}/gamma"], w[f"{name}/beta"]
    mean, var = w[f"{name}/moving_mean"], w[f"{name}/moving_variance"]
    scale = (gamma / np.sqrt(var + np.float32(_BN_EPS))).astype(np.float32)
    return scale, (beta - mean * scale).astype(np.float32)


def _bn_name(i: int) -> str:
    return "batch_normalization" if i == 0 else f"batch_normalization_{i}"


def _shift_stack(x: np.ndarray, k: int) -> np.ndarray:
    """im2col over time: ``(B, T + k - 1, C)`` -> ``(B, T, k * C)`` ordered (dt, c) like a TF kernel (k, C, ...)."""
    t = x.shape[1] - k + 1
    return np.concatenate([x[:, i : i + t] for i in range(k)], axis=-1)


def _relu_bn_freqmax(z: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``max_f BN(ReLU(z + bias))`` for ``z`` (B, T, F, C) -> (B, T, C), pooling before the elementwise work.

    Adding a constant, ReLU and multiplying by a positive number are monotone non-decreasing even
    in float32 rounding, so the maximum commutes with them exactly; for channels whose batch-norm
    scale is negative the maximum of the result comes from the minimum of ``z``.
    """
    picked = np.where(scale >= 0, z.max(axis=2), z.min(axis=2))
    return np.maximum(picked + bias, 0.0) * scale + shift


_TIME_CHUNK = 48  # frames per im2col block: keeps the column matrix and conv output near cache size


def _conv_freqmax(
    win: np.ndarray, kern: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Front-end block on im2col windows ``win`` (B, T, F', ...) -> (B, T, C): conv, ReLU, BN, max over F'.

    ``kern`` is (window size, C). Works through ``_TIME_CHUNK`` frames at a time.
    """
    b, t, fo = win.shape[:3]
    out = np.empty((b, t, kern.shape[1]), np.float32)
    for t0 in range(0, t, _TIME_CHUNK):
        blk = win[:, t0 : t0 + _TIME_CHUNK]
        z = blk.reshape(-1, kern.shape[0]) @ kern
        out[:, t0 : t0 + blk.shape[1]] = _relu_bn_freqmax(z.reshape(b, -1, fo, kern.shape[1]), bias, scale, shift)
    return out


def _musicnn_forward(p: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """musicnn on ``x`` (B, T, 96) log-mel patches -> (sigmoid tags (B, 50), penultimate (B, 200)).

    Mirrors ``musicnn.models.build_musicnn`` with ``is_training=False``. Every conv is
    conv -> ReLU -> batch norm (TF layers apply the activation inside ``conv2d``).
    """
    b, t, _ = x.shape
    x = x * p["bn_in"][0] + p["bn_in"][1]  # (B, T, 96); batch norm on the single input channel

    front = []
    # timbral: time padded by 3 each side, 'valid' conv with (7, 38) and (7, 67) kernels, max over frequency
    xp = np.pad(x, ((0, 0), (3, 3), (0, 0)))
    for kern, bias, (scale, shift) in p["timbral"]:
        fw = p["timbral_widths"][len(front)]
        win = np.lib.stride_tricks.sliding_window_view(xp, (7, fw), axis=(1, 2))  # (B, T, F-fw+1, 7, fw)
        front.append(_conv_freqmax(win, kern, bias, scale, shift))  # (B, T, C)
    # temporal: 'same' conv over time with (k, 1) kernels (TF pads (k-1)//2 before, k//2 after), max over frequency
    for kern, bias, (scale, shift) in p["temporal"]:
        k = kern.shape[0]
        xp_t = np.pad(x, ((0, 0), ((k - 1) // 2, k // 2), (0, 0)))
        win = np.lib.stride_tricks.sliding_window_view(xp_t, k, axis=1)  # (B, T, F, k)
        front.append(_conv_freqmax(win, kern, bias, scale, shift))
    fe = np.concatenate(front, axis=2)  # (B, T, 561)

    # mid-end: three 1-D convs over time (kernel 7 spanning all channels) with residual connections
    feats = [fe]
    h = fe
    for i, (kern, bias, (scale, shift)) in enumerate(p["midend"]):
        cols = _shift_stack(np.pad(h, ((0, 0), (3, 3), (0, 0))), 7)  # (B, T, 7*C)
        z = cols.reshape(b * t, -1) @ kern
        z = np.maximum(z + bias, 0.0, out=z) * scale + shift
        z = z.reshape(b, t, -1)
        h = z if i == 0 else z + h
        feats.append(h)
    mid = np.concatenate(feats, axis=2)  # (B, T, 753)

    # back-end: max and mean over time, interleaved as TF's flatten of (B, 753, 2) gives
    pooled = np.stack([mid.max(axis=1), mid.mean(axis=1, dtype=np.float32)], axis=2).reshape(b, -1)
    pooled = pooled * p["bn_pool"][0] + p["bn_pool"][1]
    dense = np.maximum(pooled @ p["dense_w"] + p["dense_b"], 0.0)
    pen = (dense * p["bn_dense"][0] + p["bn_dense"][1]).astype(np.float32)
    logits = pen @ p["out_w"] + p["out_b"]
    return _sigmoid(logits), pen


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


_VGG_ROW_CHUNK = 8192  # im2col rows (output positions) per matmul in the VGG convs


def _conv3x3_raw(x: np.ndarray, kern: np.ndarray, col_step: int = 1) -> np.ndarray:
    """3x3 'same' conv *without* bias: ``(B, H, W, C)`` -> ``(B, H, ceil(W / col_step), K)``.

    ``kern`` is ``(9*C, K)`` in (dy, dx, c) order (a TF HWIO kernel reshaped); only every
    ``col_step``-th output column is computed. Works through blocks of rows to stay in cache.
    """
    b, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    wo = len(range(0, w, col_step))
    out = np.empty((b, h, wo, kern.shape[1]), np.float32)
    rows = max(1, _VGG_ROW_CHUNK // (b * wo))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        cols = np.concatenate(
            [xp[:, r0 + dy : r1 + dy, dx : dx + w : col_step] for dy in range(3) for dx in range(3)], axis=-1
        )
        out[:, r0:r1] = (cols.reshape(-1, 9 * c) @ kern).reshape(b, r1 - r0, wo, -1)
    return out


def _pool(z: np.ndarray, size: tuple[int, int], strides: tuple[int, int], op: np.ufunc) -> np.ndarray:
    """TF 'valid' pooling of ``(B, H, W, C)`` over (H, W) with reduction ``op`` (``np.maximum``/``np.minimum``)."""
    (ph, pw), (sh, sw) = size, strides
    ho, wo = (z.shape[1] - ph) // sh + 1, (z.shape[2] - pw) // sw + 1
    out = None
    for dy in range(ph):
        for dx in range(pw):
            v = z[:, dy : dy + sh * (ho - 1) + 1 : sh, dx : dx + sw * (wo - 1) + 1 : sw]
            out = v.copy() if out is None else op(out, v, out=out)
    assert out is not None
    return out


def _vgg_block(
    x: np.ndarray,
    kern: np.ndarray,
    bias: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    size: tuple[int, int],
    strides: tuple[int, int],
) -> np.ndarray:
    """``max_pool(BN(ReLU(conv3x3_same(x) + bias)))``: ``(B, H, W, C)`` -> ``(B, H', W', K)``.

    Pools the raw conv output first (max, or min for channels with a negative batch-norm scale;
    exact, see :func:`_relu_bn_freqmax`); a pool one column wide only ever reads every
    ``strides[1]``-th column, so only those columns are convolved.
    """
    if size[1] == 1:
        z = _conv3x3_raw(x, kern, col_step=strides[1])
        size, strides = size, (strides[0], 1)
    else:
        z = _conv3x3_raw(x, kern)
    picked = np.where(scale >= 0, _pool(z, size, strides, np.maximum), _pool(z, size, strides, np.minimum))
    return np.maximum(picked + bias, 0.0) * scale + shift


_VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))


def _vgg_forward(p: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """musicnn's VGG baseline on ``x`` (B, 187, 96) -> (sigmoid tags (B, 50), flattened pool5 (B, 256)).

    Mirrors ``musicnn.models.vgg`` with ``is_training=False``: five blocks of 3x3 'same'
    conv -> ReLU -> batch norm -> max pool; pool5 is (B, 2, 1, 128), flattened in (h, w, c)
    order as ``tf.layers.flatten`` does.
    """
    h = (x * p["bn_in"][0] + p["bn_in"][1])[..., None]
    for (kern, bias, (scale, shift)), (size, strides) in zip(p["convs"], _VGG_POOLS, strict=True):
        h = _vgg_block(h, kern, bias, scale, shift, size, strides)
    pool5 = h.reshape(h.shape[0], -1).astype(np.float32)
    return _sigmoid(pool5 @ p["out_w"] + p["out_b"]), pool5


def _prepare(model: str, w: dict[str, np.ndarray]) -> dict[str, Any]:
    """Arrange checkpoint tensors for the forward pass (kernels as im2col matrices, batch norm folded)."""
    f32 = np.float32
    if model.endswith("musicnn"):
        convs = [("conv2d" if i == 0 else f"conv2d_{i}") for i in range(8)]

        def conv(i: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
            k = w[f"{convs[i]}/kernel"]
            return (
                np.ascontiguousarray(k.reshape(-1, k.shape[-1]), dtype=f32),
                w[f"{convs[i]}/bias"].astype(f32),
                _bn(w, _bn_name(i + 1)),
            )

        return {
            "bn_in": _bn(w, _bn_name(0)),
            "timbral": [conv(0), conv(1)],
            "timbral_widths": [w["conv2d/kernel"].shape[1], w["conv2d_1/kernel"].shape[1]],
            "temporal": [conv(2), conv(3), conv(4)],
            "midend": [conv(5), conv(6), conv(7)],
            "bn_pool": _bn(w, _bn_name(9)),
            "dense_w": w["dense/kernel"].astype(f32),
            "dense_b": w["dense/bias"].astype(f32),
            "bn_dense": _bn(w, _bn_name(10)),
            "out_w": w["dense_1/kernel"].astype(f32),
            "out_b": w["dense_1/bias"].astype(f32),
        }
    if model.endswith("vgg"):
        convs = []
        for i in range(1, 6):
            k = w[f"{i}CNN/kernel"]
            convs.append(
                (
                    np.ascontiguousarray(k.reshape(-1, k.shape[-1]), dtype=f32),
                    w[f"{i}CNN/bias"].astype(f32),
                    _bn(w, _bn_name(i)),
                )
            )
        return {
            "bn_in": _bn(w, _bn_name(0)),
            "convs": convs,
            "out_w": w["dense/kernel"].astype(f32),
            "out_b": w["dense/bias"].astype(f32),
        }
    raise ValueError(f"unknown musicnn model {model!r}; expected one of {MODELS}")


# ---------------------------------------------------------------------------------------------------------------
# Analyzer
# ---------------------------------------------------------------------------------------------------------------

_ALIASES = {
    "musicnn_mtt": "MTT_musicnn",
    "musicnn_msd": "MSD_musicnn",
    "vgg_mtt": "MTT_vgg",
    "vgg_msd": "MSD_vgg",
}
_NAMES = {v: k for k, v in _ALIASES.items()}
MIN_SAMPLES = (N_FRAMES - 1) * HOP  # shortest audio giving one whole patch (47616 samples, 2.976 s)


def _canonical(model: str) -> str:
    if model in MODELS:
        return model
    for m in MODELS:
        if model.lower() in (m.lower(), _NAMES[m]):
            return m
    raise ValueError(f"unknown musicnn model {model!r}; expected one of {MODELS}")


def _packaged_dir() -> Path:
    """Folder of the ``musicnn`` wheel's data (found without importing it: it imports TensorFlow)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "musicnn checkpoints not found: install the wheel without its dependencies "
            "(`pip install --no-deps musicnn==0.1.0`) or pass model_dir"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _checkpoint_dir(model: str, model_dir: str | os.PathLike[str] | None) -> Path:
    base = _packaged_dir() if model_dir is None else Path(model_dir)
    for cand in (base, base / model):
        if (cand / ".index").is_file():
            return cand
    raise FileNotFoundError(f"no musicnn checkpoint for {model} in {base} (expected {base / model / '.index'})")


@dataclass(eq=False)
class MusicnnAnalyzer:
    """One musicnn tagger: 50 tag probabilities and an embedding per ~3 s patch.

    ``analyze`` takes mono float32 audio at 16 kHz. Patches of 187 log-mel frames
    (``window_s`` = 2.992 s) start every ``hop_s`` (= ``window_s`` unless ``overlap_s`` > 0);
    trailing audio that does not fill a patch is dropped as upstream does, except that audio
    shorter than one patch is zero-padded to one patch. Embeddings are the 200-d penultimate
    layer (after its batch norm) for musicnn models and the flattened 256-d ``pool5`` for VGG.
    """

    model: str
    weights: dict[str, Any] = field(repr=False)
    overlap_s: float = 0.0
    checkpoint: str = ""
    name: str = ""
    model_id: str = ""
    sample_rate: int = SAMPLE_RATE
    window_s: float = N_FRAMES * HOP / SAMPLE_RATE
    hop_s: float = N_FRAMES * HOP / SAMPLE_RATE
    labels: list[str] = field(default_factory=list)
    dim: int = 200
    pooling: str = "mean"  # track-level tags are the mean over patches, as upstream musicnn reports them
    hop_frames: int = field(init=False, default=N_FRAMES)

    def __post_init__(self) -> None:
        self.model = _canonical(self.model)
        self.name = _NAMES[self.model]
        self.model_id = f"musicnn/{self.model}@{VERSION}"
        self.labels = list(MTT_LABELS if self.model.startswith("MTT") else MSD_LABELS)
        self.dim = 200 if self.model.endswith("musicnn") else 256
        overlap = round(self.overlap_s * SAMPLE_RATE / HOP)
        if not 0 <= overlap < N_FRAMES:
            raise ValueError(f"overlap_s must be in [0, {self.window_s:.3f}) s, got {self.overlap_s}")
        self.hop_frames = N_FRAMES - overlap
        self.hop_s = self.hop_frames * HOP / SAMPLE_RATE
        self._forward = _musicnn_forward if self.model.endswith("musicnn") else _vgg_forward

    @property
    def params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": VERSION,
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP,
            "n_mels": N_MELS,
            "patch_frames": N_FRAMES,
            "hop_frames": self.hop_frames,
            "stft_pad": "constant",
            "log": "log10(10000*fp16(mel)+1) float32",
            "embedding": "penultimate" if self.dim == 200 else "pool5",
        }

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on log-mel patches ``x`` (n, 187, 96).

        Returns ``(tags (n, 50), embeddings (n, dim))`` float32. Patches are run one at a time
        (fastest on one core: the intermediate arrays stay in cache).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != N_MELS:
            raise ValueError(f"expected log-mel patches (n, frames, {N_MELS}), got {x.shape}")
        tags = np.zeros((x.shape[0], len(self.labels)), np.float32)
        emb = np.zeros((x.shape[0], self.dim), np.float32)
        for i in range(x.shape[0]):
            tags[i], emb[i] = (a[0] for a in self._forward(self.weights, x[i : i + 1]))
        return tags, emb

    def analyze(self, y: np.ndarray, *, offset_s: float = 0.0) -> FrameOutput:
        """Tag ``y`` (n_samples,) float32 at 16 kHz.

        Returns ``times`` (n,) patch start times (``offset_s`` + start frame * 256 / 16000),
        ``scores`` (n, 50) sigmoid tag probabilities and ``embeddings`` (n, dim).
        Empty audio gives an empty output.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1:
            raise ValueError(f"expected mono audio (n_samples,), got shape {y.shape}")
        if y.shape[0] == 0:
            return FrameOutput.empty(len(self.labels), self.dim)
        if y.shape[0] < MIN_SAMPLES:
            y = np.pad(y, (0, MIN_SAMPLES - y.shape[0]))
        x, starts = patches(log_mel(y), hop_frames=self.hop_frames)
        tags, emb = self.predict(x)
        times = (offset_s + starts * (HOP / SAMPLE_RATE)).astype(np.float32)
        return FrameOutput(times, tags, emb)


@functools.lru_cache(maxsize=8)
def _load_weights(model: str, path: str) -> dict[str, Any]:
    return _prepare(model, read_checkpoint(path))


@functools.lru_cache(maxsize=16)
def _load(model: str, model_dir: str | None, overlap_s: float) -> MusicnnAnalyzer:
    path = _checkpoint_dir(model, model_dir)
    return MusicnnAnalyzer(model, _load_weights(model, str(path)), overlap_s=overlap_s, checkpoint=str(path))


def load(model: str = "MTT_musicnn", model_dir: str | None = None, *, overlap_s: float = 0.0) -> MusicnnAnalyzer:
    """The analyzer for ``model`` (``MTT_musicnn``, ``MSD_musicnn``, ``MTT_vgg``, ``MSD_vgg``, or the
    analyzer names ``musicnn_mtt`` ...), cached per process.

    ``model_dir`` is a folder holding the checkpoint (``.index``, ``.data-00000-of-00001``) or the
    model sub-folders; by default the installed ``musicnn`` wheel's folder. ``overlap_s`` makes
    patches overlap by that many seconds (rounded to whole 16 ms frames).
    """
    return _load(_canonical(model), None if model_dir is None else str(model_dir), float(overlap_s))
