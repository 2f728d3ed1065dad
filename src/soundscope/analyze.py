"""Analyze: one file -> features, per-model frame outputs pooled into segments, all in bounded memory.

The decoder yields fixed-size blocks; each analyzer sees consecutive chunks whose frame
grid lines up exactly with the file's (chunks start at multiples of the analyzer's hop), so
streaming a 3-hour file gives the same frames as analysing it whole, while holding only one
block at a time. Frames are then pooled into fixed-length segments: the unit a hit points to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import decode, features
from .types import Analyzer, AudioInfo, FrameOutput

SAMPLE_RATE = 16000
BLOCK_S = 30.0
SEGMENT_S = 5.0


@dataclass
class PooledSegment:
    start: float
    end: float
    scores: dict[str, np.ndarray]  # analyzer name -> (n_labels,) max-pooled probabilities
    embeddings: dict[str, np.ndarray]  # analyzer name -> (dim,) L2-normalised, loudness-weighted mean


@dataclass
class Analysis:
    """Everything learned about one file."""

    info: AudioInfo
    duration_s: float  # decoded duration (truth; the header may be wrong)
    features: dict[str, Any]
    segments: list[PooledSegment]
    item_scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_labels,) item-level
    item_embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (dim,)
    item_means: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_labels,) mean over frames
    item_counts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_labels,) frames with p >= 0.5
    music: dict[str, Any] | None = None  # music descriptors (tempo, loudness, key...) when the file is music
    passages: list[dict[str, Any]] | None = None  # transcript (set by ingest when the file holds speech)
    fingerprint: Any = None  # fingerprint.Fingerprint, when asked for (computed in the first pass)


class _Streamer:
    """Feeds one analyzer consecutive chunks aligned to its hop; collects its frames and their loudness."""

    def __init__(self, analyzer: Analyzer, sample_rate: int) -> None:
        self.a = analyzer
        self.sr = sample_rate
        self.hop = round(analyzer.hop_s * sample_rate)
        self.win = int(getattr(analyzer, "frame_samples", 0) or round(analyzer.window_s * sample_rate))
        self.buf = np.zeros(0, np.float32)
        self.offset = 0  # sample index of buf[0] in the file
        self.parts: list[FrameOutput] = []
        self.levels: list[np.ndarray] = []

    def push(self, block: np.ndarray, *, final: bool = False) -> None:
        """Add samples; analyse every complete frame. ``final`` also analyses a padded last frame
        when at least half a hop of audio is not yet covered (or when the file is shorter than a frame)."""
        self.buf = np.concatenate([self.buf, block]) if self.buf.size else block
        n_frames = (self.buf.shape[0] - self.win) // self.hop + 1 if self.buf.shape[0] >= self.win else 0
        if final and n_frames == 0:
            covered = self.win - self.hop if self.parts else 0
            n_frames = 1 if self.buf.shape[0] - covered >= (self.hop // 2 if self.parts else 1) else 0
        if n_frames <= 0:
            return
        chunk = self.buf[: (n_frames - 1) * self.hop + self.win]
        out = self.a.analyze(chunk, offset_s=self.offset / self.sr)
        keep = min(len(out), n_frames)
        if keep == 0:
            return
        self.parts.append(FrameOutput(out.times[:keep], out.scores[:keep], out.embeddings[:keep]))
        self.levels.append(_frame_levels(chunk, keep, hop=self.hop, win=self.win))
        self.buf = self.buf[keep * self.hop :]
        self.offset += keep * self.hop
        if final and self.buf.shape[0] >= self.win:
            self.push(np.zeros(0, np.float32), final=True)

    def result(self) -> tuple[FrameOutput, np.ndarray]:
        if not self.parts:
            return FrameOutput.empty(len(self.a.labels), self.a.dim), np.zeros(0, np.float32)
        return FrameOutput.concat(self.parts), np.concatenate(self.levels)


def _frame_levels(y: np.ndarray, n: int, *, hop: int, win: int) -> np.ndarray:
    """RMS of each frame's samples, shape (n,)."""
    out = np.zeros(n, np.float32)
    for i in range(n):
        seg = y[i * hop : i * hop + win]
        out[i] = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if seg.size else 0.0
    return out


class _FeatureAccumulator:
    """Streaming version of :func:`features.summary_features` (weighted by block length)."""

    def __init__(self, sample_rate: int) -> None:
        self.sr = sample_rate
        self.n = 0
        self.mfcc_sum = np.zeros(13, np.float64)
        self.mfcc_sq = np.zeros(13, np.float64)
        self.mfcc_frames = 0
        self.centroid_sum = 0.0
        self.centroid_frames = 0
        self.energy = 0.0
        self.rms_max = 0.0
        self.zc_sum = 0.0
        self.zc_frames = 0

    def push(self, y: np.ndarray) -> None:
        self.n += y.shape[0]
        coeffs = features.mfcc(y, sr=self.sr)
        self.mfcc_sum += coeffs.sum(axis=0)
        self.mfcc_sq += np.square(coeffs, dtype=np.float64).sum(axis=0)
        self.mfcc_frames += coeffs.shape[0]
        cen = features.spectral_centroid(y, sr=self.sr)
        self.centroid_sum += float(cen.sum())
        self.centroid_frames += cen.shape[0]
        self.energy += float(np.square(y, dtype=np.float64).sum())
        level = features.rms(y)
        self.rms_max = max(self.rms_max, float(level.max()) if level.size else 0.0)
        zcr = features.zero_crossing_rate(y)
        self.zc_sum += float(zcr.sum())
        self.zc_frames += zcr.shape[0]

    def result(self) -> dict[str, Any]:
        frames = max(self.mfcc_frames, 1)
        mean = self.mfcc_sum / frames
        std = np.sqrt(np.maximum(self.mfcc_sq / frames - mean**2, 0.0))
        level = math.sqrt(self.energy / self.n) if self.n else 0.0
        return {
            "duration_s": self.n / self.sr,
            "mfcc_mean": [round(float(v), 4) for v in mean],
            "mfcc_std": [round(float(v), 4) for v in std],
            "centroid_hz": round(self.centroid_sum / max(self.centroid_frames, 1), 2),
            "loudness_dbfs": round(max(-120.0, 20 * math.log10(max(level, 1e-6))), 2),
            "rms_max": round(self.rms_max, 5),
            "zcr": round(self.zc_sum / max(self.zc_frames, 1), 5),
        }


MUSIC_GATE = 0.25  # mean YAMNet "Music" probability over frames above which music analyzers run


def _blocks_from_file(path: str, sample_rate: int, block_s: float) -> Callable[[], Iterable[np.ndarray]]:
    return lambda: decode.stream(path, sample_rate=sample_rate, block_s=block_s)


def _run_pass(
    blocks: Iterable[np.ndarray], analyzers: list[Analyzer], accumulators: list[Any], sample_rate: int
) -> dict[str, tuple[FrameOutput, np.ndarray]]:
    """One streaming pass: every block goes to each accumulator and each analyzer's streamer."""
    streamers = [_Streamer(a, sample_rate) for a in analyzers]
    for block in blocks:
        for acc in accumulators:
            acc.push(block)
        for s in streamers:
            s.push(block)
    for s in streamers:
        s.push(np.zeros(0, np.float32), final=True)
    return {s.a.name: s.result() for s in streamers}


def music_share(analysis: Analysis, analyzer: Analyzer) -> float:
    """Mean probability of YAMNet's "Music" label over the file's frames (0 if unknown)."""
    means = analysis.item_means.get(analyzer.name)
    if means is None or "Music" not in analyzer.labels:
        return 0.0
    return float(means[analyzer.labels.index("Music")])


def _analyze(
    info: AudioInfo,
    blocks: Callable[[], Iterable[np.ndarray]],
    analyzers: list[Analyzer],
    music_analyzers: list[Analyzer],
    *,
    sample_rate: int,
    segment_s: float,
    fingerprint: bool = False,
) -> Analysis:
    acc = _FeatureAccumulator(sample_rate)
    accumulators: list[Any] = [acc]
    if fingerprint:  # landmark hashes from the same decoded blocks (no second decode)
        from .fingerprint import SAMPLE_RATE as FP_RATE
        from .fingerprint import FingerprintAccumulator

        if sample_rate != FP_RATE:
            raise ValueError(f"fingerprints need audio at {FP_RATE} Hz, not {sample_rate}")
        accumulators.append(FingerprintAccumulator())
    outputs = _run_pass(blocks(), analyzers, accumulators, sample_rate)
    feats = acc.result()
    if feats["duration_s"] <= 0:
        raise decode.DecodeError("no audio samples")
    analysis = Analysis(
        info,
        feats["duration_s"],
        feats,
        [PooledSegment(s, e, {}, {}) for s, e in segment_bounds(feats["duration_s"], segment_s)],
    )
    pool_into(analysis, outputs, analyzers)
    if fingerprint:
        analysis.fingerprint = accumulators[1].result()
    if music_analyzers and analyzers and music_share(analysis, analyzers[0]) >= MUSIC_GATE:
        from .descriptors import MusicDescriptorAccumulator

        music_acc = MusicDescriptorAccumulator(sample_rate)
        pool_into(analysis, _run_pass(blocks(), music_analyzers, [music_acc], sample_rate), music_analyzers)
        analysis.music = music_acc.result(pace=perceived_pace(analysis, music_analyzers))
    return analysis


def perceived_pace(analysis: Analysis, analyzers: list[Analyzer]) -> float | None:
    """``P(slow) - P(fast)`` from the first analyzer with both tags (musicnn MTT), track-level; None without one."""
    for a in analyzers:
        labels = list(getattr(a, "labels", []))
        scores = analysis.item_scores.get(a.name)
        if scores is not None and len(scores) and "slow" in labels and "fast" in labels:
            return float(scores[labels.index("slow")] - scores[labels.index("fast")])
    return None


def analyze_file(
    path: str,
    analyzers: list[Analyzer],
    *,
    music_analyzers: list[Analyzer] | None = None,
    sample_rate: int = SAMPLE_RATE,
    segment_s: float = SEGMENT_S,
    block_s: float = BLOCK_S,
    fingerprint: bool = False,
) -> Analysis:
    """Decode ``path`` as a stream and run every analyzer over it; if the first pass finds music
    (see :data:`MUSIC_GATE`), stream it once more through ``music_analyzers`` and the music
    descriptors. Memory stays bounded by one block. Raises ``decode.DecodeError``.
    ``fingerprint``: also compute the landmark fingerprint in the first pass (``Analysis.fingerprint``)."""
    info = decode.probe(path)
    return _analyze(
        info,
        _blocks_from_file(path, sample_rate, block_s),
        analyzers,
        music_analyzers or [],
        sample_rate=sample_rate,
        segment_s=segment_s,
        fingerprint=fingerprint,
    )


def analyze_array(
    y: np.ndarray,
    analyzers: list[Analyzer],
    *,
    music_analyzers: list[Analyzer] | None = None,
    sample_rate: int = SAMPLE_RATE,
    segment_s: float = SEGMENT_S,
    path: str = "<array>",
) -> Analysis:
    """Same as :func:`analyze_file` for an in-memory mono float32 signal at ``sample_rate``."""
    info = AudioInfo(path=path, duration_s=y.shape[0] / sample_rate, sample_rate=sample_rate, channels=1)
    return _analyze(info, lambda: [y], analyzers, music_analyzers or [], sample_rate=sample_rate, segment_s=segment_s)


def segment_bounds(duration_s: float, segment_s: float) -> list[tuple[float, float]]:
    """Fixed grid of segments covering the file; a short tail (< 40 %) joins the previous one."""
    n = max(1, math.floor(duration_s / segment_s + 0.6))
    return [(i * segment_s, duration_s if i == n - 1 else (i + 1) * segment_s) for i in range(n)]


def _weighted_mean(emb: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Mean of frames at most 20 dB below the loudest (digital silence never counts), L2-normalised."""
    if emb.shape[0] == 0:
        return np.zeros(emb.shape[1], np.float32)
    top = float(levels.max()) if levels.size else 0.0
    mask = levels >= max(top * 0.1, 1e-5) if top > 1e-5 else np.ones(emb.shape[0], bool)
    v = emb[mask].mean(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)


def pool_into(
    analysis: Analysis, outputs: dict[str, tuple[FrameOutput, np.ndarray]], analyzers: list[Analyzer]
) -> None:
    """Pool per-frame outputs (with frame loudness) into the analysis' segments and item summary.

    Segment scores are the max over the segment's frames; item scores use the analyzer's
    ``pooling`` ("max" by default; "mean" for track-level taggers); embeddings are the
    loudness-weighted mean (:func:`_weighted_mean`).
    """
    bounds = [(s.start, s.end) for s in analysis.segments]
    ends = [e for _, e in bounds]
    for a in analyzers:
        out, levels = outputs[a.name]
        if len(out) == 0:
            continue
        centers = out.times + min(a.window_s, analysis.duration_s) / 2
        seg_of = np.clip(np.searchsorted(ends, centers, side="right"), 0, len(bounds) - 1)
        for i, seg in enumerate(analysis.segments):
            idx = np.flatnonzero(seg_of == i)
            if idx.size == 0:  # segment shorter than a frame: borrow the nearest frame
                idx = np.array([int(np.argmin(np.abs(centers - (seg.start + seg.end) / 2)))])
            seg.scores[a.name] = out.scores[idx].max(axis=0)
            seg.embeddings[a.name] = _weighted_mean(out.embeddings[idx], levels[idx])
        means = out.scores.mean(axis=0)
        analysis.item_means[a.name] = means
        analysis.item_counts[a.name] = (out.scores >= 0.5).sum(axis=0)
        analysis.item_scores[a.name] = means if getattr(a, "pooling", "max") == "mean" else out.scores.max(axis=0)
        analysis.item_embeddings[a.name] = _weighted_mean(out.embeddings, levels)
