"""Fingerprint: audio -> spectral-peak landmark hashes, and matching with time-alignment verification.

The design follows the landmark scheme of Wang (Shazam, 2003) as implemented by audfprint (D. Ellis) and
Olaf/Panako (J. Six), with two changes aimed at where those fail:

* **Speed and pitch changes.** A hash is ``(f1, df, dt)`` of a pair of spectral peaks. Instead of
  speed-invariant triplets (Panako), the *query* side keeps its peaks at sub-bin, sub-frame precision
  and re-hashes them under a grid of speed hypotheses (``r`` in +/-4 % by 0.5 %): a query sped up by
  ``r`` has its frequencies multiplied by ``r`` and its times divided by it, so undoing that before
  quantisation gives the reference's hashes. ``f1`` is quantised on a log scale (20 steps per octave),
  which a few percent of speed moves by less than a step. The stored index stays that of plain pairs
  (small, ~12 bytes a hash), and every hypothesis costs only table look-ups.
* **Noise.** Peaks are picked on a spectrally whitened log spectrogram (level minus its local mean),
  in 50-3600 Hz (the bass too: bass-heavy music keeps most of its energy below 150 Hz, and at 0 dB
  SNR that is where its peaks survive), ranked by prominence plus log level (a peak's survival in
  noise follows its level: 17 % of the quietest quarter of reference peaks survive 0 dB pink noise,
  86 % of the loudest) and capped per second; references keep a sparse set (what is stored),
  queries a denser one with a wider fan-out (free), so a reference peak that survives the noise is
  still found among the query's. Near a quantisation boundary, the query also probes the
  neighbouring cell (multi-probe).

Matching counts, per (item, offset, hypothesis), the query pairs whose hashes agree on one time
offset (+/- 1 frame); the best count is the evidence, and :func:`confidence` maps it and the
runner-up to a calibrated probability (see ``scripts/build_identify_bench.py`` and
``soundscope eval --section identify``).

All feature functions are pure and keyword-only over numpy arrays; times are in frames of
:data:`HOP` samples at :data:`SAMPLE_RATE` (32 ms) unless a name says seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

SAMPLE_RATE = 16000  # Hz: the rate ingest already decodes at (no resampling)
N_FFT = 2048  # 128 ms window: narrow bins (7.8 Hz) concentrate tonal energy above the noise
HOP = 512  # 32 ms
FRAME_S = HOP / SAMPLE_RATE
F_MIN_HZ, F_MAX_HZ = 50.0, 3600.0
BIN_HZ = SAMPLE_RATE / N_FFT
LO_BIN, HI_BIN = int(F_MIN_HZ / BIN_HZ), math.ceil(F_MAX_HZ / BIN_HZ)
PEAK_T, PEAK_F = 7, 9  # a peak is the maximum of (2*PEAK_T+1) frames x (2*PEAK_F+1) bins around it
BG_T, BG_F = 9, 41  # whitening: level minus its mean over this neighbourhood
REF_DENSITY, QUERY_DENSITY = 10, 24  # peaks kept per second of audio
REF_FANOUT, QUERY_FANOUT = 3, 10  # pairs per anchor peak (the query's denser peaks need more to reach the same targets)
DT_MAX = 63  # frames (2 s): target zone length
DF_MAX = 63  # bins (490 Hz): target zone half height
F1_STEPS_PER_OCTAVE = 20  # 128 levels: 50 Hz .. 4.2 kHz
F1_LEVELS = 128
RANK_LEVEL = 1.0  # peaks are ranked by prominence + this x log level: loud peaks are the ones that survive noise
SILENCE_POWER = 1e-9  # |X|^2 of a Hann-windowed frame below which nothing is a peak (digital silence)
VERIFY_WHITEN = 21  # bins (160 Hz): the spectral envelope taken out, leaving tonal detail (partials, formants)
SKETCH_FRAMES = 32  # frames (1.02 s) averaged into one sketch window
SKETCH_BITS = HI_BIN - LO_BIN  # one sign bit per FFT bin of the band (454)
SKETCH_WORDS = -(-SKETCH_BITS // 64)  # uint64 words a window is packed into (64 bytes)
FP_VERSION = "landmark-v2+sketch-v1"  # a new version re-fingerprints every item at the next index run
PARAMS = {"version": FP_VERSION, "sr": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "density": REF_DENSITY,
          "fanout": REF_FANOUT, "band_hz": [F_MIN_HZ, F_MAX_HZ], "f1_steps": F1_STEPS_PER_OCTAVE,
          "rank_level": RANK_LEVEL, "sketch_frames": SKETCH_FRAMES, "sketch_whiten": VERIFY_WHITEN}  # fmt: skip
SPEEDS = tuple(round(1.0 + 0.005 * k, 4) for k in range(-8, 9))  # speed hypotheses, query relative to reference


@dataclass
class Peaks:
    """Spectral peaks: ``t`` (n,) frames and ``f`` (n,) FFT bins, both float (sub-frame, sub-bin),
    sorted by time; ``score`` (n,) whitened level."""

    t: np.ndarray
    f: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @staticmethod
    def concat(parts: list[Peaks]) -> Peaks:
        if not parts:
            return Peaks(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
        return Peaks(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("t", "f", "score")))


def _no_sketch() -> np.ndarray:
    return np.zeros((0, SKETCH_WORDS), np.uint64)


@dataclass
class Fingerprint:
    """What the index stores for one recording: ``hashes`` (n,) uint32 and ``times`` (n,) uint32 anchor
    frames; ``duration_s`` of the audio; ``sketch`` (w, :data:`SKETCH_WORDS`) uint64, one packed
    :func:`sketch_bits` row per whole :data:`SKETCH_FRAMES`-frame window from frame 0."""

    hashes: np.ndarray
    times: np.ndarray
    duration_s: float = 0.0
    sketch: np.ndarray = field(default_factory=_no_sketch)


def log_spectrogram(*, y: np.ndarray) -> np.ndarray:
    """Log power (natural log) of ``y`` (n,) float32 at :data:`SAMPLE_RATE`, frames x bins
    (LO_BIN..HI_BIN): frame k covers samples [k*HOP, k*HOP + N_FFT)."""
    n = y.shape[0]
    if n < N_FFT:
        y = np.pad(y, (0, N_FFT - n))
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _hann(), axis=1)[:, LO_BIN:HI_BIN]
    power = spec.real**2 + spec.imag**2
    return np.log(np.maximum(power, SILENCE_POWER * 1e-3)).astype(np.float32)


_HANN: list[np.ndarray] = []


def _hann() -> np.ndarray:
    if not _HANN:
        _HANN.append(np.hanning(N_FFT).astype(np.float32))
    return _HANN[0]


def pick_peaks(*, logspec: np.ndarray, density: int, lo: int = 0, hi: int | None = None, frame0: int = 0) -> Peaks:
    """Prominent local maxima of ``logspec`` (frames x bins) in frames [lo, hi) (the others are context).

    Kept: the ``density`` most prominent per second (31 frames, counted from ``frame0``, the global index of
    frame 0), above digital silence. Times are global frames and bins are FFT bins, both refined by
    parabolic interpolation.
    """
    hi = logspec.shape[0] if hi is None else hi
    if hi <= lo or logspec.shape[0] == 0:
        return Peaks.concat([])
    local_max = ndimage.maximum_filter(logspec, size=(2 * PEAK_T + 1, 2 * PEAK_F + 1), mode="nearest")
    background = ndimage.uniform_filter(logspec, size=(BG_T, BG_F), mode="nearest")
    prominence = logspec - background
    is_peak = (logspec == local_max) & (logspec > math.log(SILENCE_POWER)) & (prominence > 0)
    is_peak[:lo] = False
    is_peak[hi:] = False
    is_peak[:, 0] = is_peak[:, -1] = False
    ti, fi = np.nonzero(is_peak)
    if ti.size == 0:
        return Peaks.concat([])
    score = prominence[ti, fi] + RANK_LEVEL * logspec[ti, fi]
    sec = (ti + frame0) // 31
    order = np.lexsort((-score, sec))
    ti, fi, score, sec = ti[order], fi[order], score[order], sec[order]
    first = np.searchsorted(sec, sec, side="left")
    keep = (np.arange(sec.size) - first) < density
    ti, fi, score = ti[keep], fi[keep], score[keep]
    t = ti.astype(np.float32) + _parabola(logspec, ti, fi, axis=0)
    f = fi.astype(np.float32) + _parabola(logspec, ti, fi, axis=1) + LO_BIN
    order = np.argsort(t, kind="stable")
    return Peaks(t[order] + frame0, f[order], score[order])


def _parabola(s: np.ndarray, ti: np.ndarray, fi: np.ndarray, *, axis: int) -> np.ndarray:
    """Sub-sample offset (-0.5..0.5) of the vertex of a parabola through each peak and its neighbours."""
    n = s.shape[axis]
    if axis == 0:
        a, c = s[np.maximum(ti - 1, 0), fi], s[np.minimum(ti + 1, n - 1), fi]
    else:
        a, c = s[ti, np.maximum(fi - 1, 0)], s[ti, np.minimum(fi + 1, n - 1)]
    b = s[ti, fi]
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den < -1e-6, 0.5 * (a - c) / den, 0.0)
    return np.clip(d, -0.5, 0.5).astype(np.float32)


def peaks_of(*, y: np.ndarray, density: int | None = None) -> Peaks:
    """All peaks of a whole (short) signal ``y`` (n,) float32 at :data:`SAMPLE_RATE` (``density`` per
    second; default :data:`QUERY_DENSITY`)."""
    return pick_peaks(logspec=log_spectrogram(y=y), density=QUERY_DENSITY if density is None else density)


def pairs(*, peaks: Peaks, fanout: int) -> tuple[np.ndarray, np.ndarray]:
    """(anchor index (m,), target index (m,)) into ``peaks``: for each anchor its first ``fanout`` later
    peaks within DT_MAX frames and +/- DF_MAX bins."""
    n = len(peaks)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    look = min(n - 1, 8 * fanout)
    i = np.arange(n)[:, None]
    j = i + np.arange(1, look + 1)[None, :]
    valid = j < n
    jc = np.minimum(j, n - 1)
    dt = peaks.t[jc] - peaks.t[i]
    df = peaks.f[jc] - peaks.f[i]
    valid &= (dt >= 0.5) & (dt < DT_MAX - 0.5) & (np.abs(df) < DF_MAX - 0.5)
    valid &= np.cumsum(valid, axis=1) <= fanout
    a, k = np.nonzero(valid)
    return a, jc[a, k]


def _f1_level(f_bins: np.ndarray) -> np.ndarray:
    """Continuous log-frequency level of FFT bins (0 at F_MIN_HZ, F1_STEPS_PER_OCTAVE per octave)."""
    return np.log2(np.maximum(f_bins * BIN_HZ, 1.0) / F_MIN_HZ) * F1_STEPS_PER_OCTAVE


def pack(*, f1: np.ndarray, df: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Hash (uint32) of quantised (f1 level 0..127, df -63..63 bins, dt 1..63 frames): 7 + 7 + 6 bits."""
    f1 = np.clip(f1, 0, F1_LEVELS - 1).astype(np.uint32)
    return (f1 << 13) | ((df + 64).astype(np.uint32) << 6) | dt.astype(np.uint32)


def unpack(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f1 level, df bins, dt frames) of hashes made by :func:`pack` (all int64)."""
    h = h.astype(np.int64)
    return h >> 13, ((h >> 6) & 127) - 64, h & 63


def reference_hashes(*, peaks: Peaks) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (m,) uint32, anchor frames (m,) uint32) stored for a recording's (sparse) peaks."""
    a, b = pairs(peaks=peaks, fanout=REF_FANOUT)
    f1 = np.rint(_f1_level(peaks.f[a])).astype(np.int64)
    df = np.rint(peaks.f[b] - peaks.f[a]).astype(np.int64)
    dt = np.rint(peaks.t[b] - peaks.t[a]).astype(np.int64)
    ok = (dt >= 1) & (dt <= DT_MAX) & (np.abs(df) <= DF_MAX)
    times = np.maximum(np.rint(peaks.t[a]), 0).astype(np.uint32)
    return pack(f1=f1[ok], df=df[ok], dt=dt[ok]), times[ok]


def fingerprint(*, y: np.ndarray) -> Fingerprint:
    """The stored fingerprint of a whole signal ``y`` (n,) float32 at :data:`SAMPLE_RATE`."""
    acc = FingerprintAccumulator()
    acc.push(y)
    return acc.result()


class FingerprintAccumulator:
    """Streaming :func:`fingerprint`: push consecutive blocks at :data:`SAMPLE_RATE`, bounded memory.

    Spectrogram frames are computed on the global hop grid and peaks picked over regions of
    :data:`REGION` frames with enough context on both sides that the result equals the whole-signal one.
    Only the peaks (~10 a second: 1 MB for 3 hours) are kept until :meth:`result`.
    """

    REGION = 31 * 32  # frames (~32 s) per peak-picking region
    CONTEXT = max(PEAK_T, BG_T) + 2

    def __init__(self) -> None:
        self.samples = np.zeros(0, np.float32)
        self.sample0 = 0  # global index of samples[0] (a multiple of HOP)
        self.spec: list[np.ndarray] = []  # frames computed and not yet consumed
        self.spec0 = 0  # global frame index of the first row of self.spec
        self.done = 0  # global frames before this have been peak-picked
        self.peaks: list[Peaks] = []
        self.n = 0
        self.sketch: list[np.ndarray] = []  # packed sketch rows of the whole windows so far
        self.sketch_pending = np.zeros((0, SKETCH_BITS), np.float32)  # tonal detail of a partial window

    def push(self, y: np.ndarray) -> None:
        """Add samples ``y`` (n,) float32 at :data:`SAMPLE_RATE`."""
        self.n += y.shape[0]
        self.samples = np.concatenate([self.samples, y.astype(np.float32, copy=False)])
        n_frames = (self.samples.shape[0] - N_FFT) // HOP + 1 if self.samples.shape[0] >= N_FFT else 0
        if n_frames > 0:
            self._add_frames(log_spectrogram(y=self.samples[: (n_frames - 1) * HOP + N_FFT]))
            self.samples = self.samples[n_frames * HOP :]
            self.sample0 += n_frames * HOP
        self._pick(final=False)

    def _frames(self) -> np.ndarray:
        if len(self.spec) > 1:
            self.spec = [np.concatenate(self.spec)]
        return self.spec[0] if self.spec else np.zeros((0, HI_BIN - LO_BIN), np.float32)

    def _pick(self, *, final: bool) -> None:
        spec = self._frames()
        end = self.spec0 + spec.shape[0]  # global frame after the last computed
        while end - self.done >= self.REGION + self.CONTEXT or (final and end > self.done):
            hi = min(self.done + self.REGION, end)
            lo_ctx = max(self.spec0, self.done - self.CONTEXT)
            hi_ctx = min(end, hi + self.CONTEXT)
            view = spec[lo_ctx - self.spec0 : hi_ctx - self.spec0]
            self.peaks.append(
                pick_peaks(logspec=view, density=REF_DENSITY, lo=self.done - lo_ctx, hi=hi - lo_ctx, frame0=lo_ctx)
            )
            self.done = hi
        keep_from = max(self.spec0, self.done - self.CONTEXT)
        if keep_from > self.spec0:
            self.spec = [spec[keep_from - self.spec0 :]]
            self.spec0 = keep_from

    def result(self) -> Fingerprint:
        """The fingerprint of everything pushed (the last partial frame is zero-padded)."""
        if self.samples.shape[0] > 0 and (self.samples.shape[0] >= HOP // 2 or self.n < N_FFT):
            tail = np.pad(self.samples, (0, N_FFT - min(self.samples.shape[0], N_FFT)))
            self._add_frames(log_spectrogram(y=tail[:N_FFT]))
            self.samples = np.zeros(0, np.float32)
        self._pick(final=True)
        hashes, times = reference_hashes(peaks=Peaks.concat(self.peaks))
        sketch = np.concatenate(self.sketch) if self.sketch else _no_sketch()
        return Fingerprint(hashes, times, self.n / SAMPLE_RATE, sketch)

    def _add_frames(self, spec: np.ndarray) -> None:
        """Take new spectrogram frames (the next on the global grid): keep them for peak picking and
        fold their tonal detail into sketch windows (a partial window waits for the next frames)."""
        self.spec.append(spec)
        detail = np.concatenate([self.sketch_pending, detail_frames(logspec=spec)])
        rows = sketch_rows(detail=detail)
        self.sketch.append(rows)
        self.sketch_pending = detail[rows.shape[0] * SKETCH_FRAMES :]


@dataclass
class QueryHashes:
    """The hashes a query looks up under one speed hypothesis: ``hashes`` (m,) uint32, ``t`` (m,)
    float anchor frames (already in reference time), ``pair`` (m,) which query pair each came from."""

    speed: float
    hashes: np.ndarray
    t: np.ndarray
    pair: np.ndarray


PROBE_MARGIN = 0.25  # also probe the neighbouring cell when a value is this close to a rounding boundary


def query_hashes(*, peaks: Peaks, speed: float) -> QueryHashes:
    """Hashes of the query's pairs as the reference would have them if the query were ``speed`` x the
    reference (frequencies x speed, durations / speed), with multi-probe near quantisation boundaries."""
    a, b = pairs(peaks=peaks, fanout=QUERY_FANOUT)
    # the reference saw frequencies f/speed and durations dt*speed
    comps = [
        _f1_level(peaks.f[a] / speed),
        (peaks.f[b] - peaks.f[a]) / speed,
        (peaks.t[b] - peaks.t[a]) * speed,
    ]
    rounded = [np.rint(c) for c in comps]
    alts = [np.where(c > r, r + 1, r - 1) for c, r in zip(comps, rounded, strict=True)]
    near = [np.abs(np.abs(c - r) - 0.5) < PROBE_MARGIN for c, r in zip(comps, rounded, strict=True)]
    t_ref = peaks.t[a] * speed
    out_h, out_t, out_p = [], [], []
    idx = np.arange(a.size)
    for combo in range(8):
        use = [(combo >> k) & 1 for k in range(3)]
        mask = np.ones(a.size, bool)
        vals = []
        for k in range(3):
            if use[k]:
                mask &= near[k]
                vals.append(alts[k])
            else:
                vals.append(rounded[k])
        f1, df, dt = (v[mask].astype(np.int64) for v in vals)
        ok = (dt >= 1) & (dt <= DT_MAX) & (np.abs(df) <= DF_MAX) & (f1 >= 0) & (f1 < F1_LEVELS)
        out_h.append(pack(f1=f1[ok], df=df[ok], dt=dt[ok]))
        out_t.append(t_ref[mask][ok])
        out_p.append(idx[mask][ok])
    return QueryHashes(speed, np.concatenate(out_h), np.concatenate(out_t), np.concatenate(out_p))


@dataclass
class Candidate:
    """One matching recording: ``item_id``, ``score`` (aligned query pairs), ``offset_s`` (where the
    query starts in it, seconds), ``speed`` (query speed relative to it), ``n_pairs`` (query pairs)."""

    item_id: int
    score: int
    offset_s: float
    speed: float
    n_pairs: int
    confidence: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def best_alignments(
    *, items: np.ndarray, ref_t: np.ndarray, query_t: np.ndarray, hashes: np.ndarray, top: int = 5
) -> list[tuple[int, int, int]]:
    """(item id, offset frame, score) of the ``top`` best-aligned items among look-up hits.

    Each hit is a reference (item, anchor frame ``ref_t``) matching a query hash ``hashes`` anchored at
    ``query_t`` (reference time). The offset ``ref_t - query_t`` is histogrammed in 1-frame bins per item;
    a bin's score is the number of *distinct hash values* in it and its two neighbours (tempo drift and
    rounding): a riff repeated in both recordings (the same two notes every bar) aligns many times at
    one offset by chance, but with one hash, so it counts once. One item appears once (its best offset).
    """
    if items.size == 0:
        return []
    off = np.rint(ref_t.astype(np.float64) - query_t).astype(np.int64) + (1 << 23)
    off = np.clip(off, 1, (1 << 24) - 2)
    ids, local = np.unique(items, return_inverse=True)
    key = (local.astype(np.int64) << 24) | off
    # one vote per (item, offset, hash value): one int64 sort when it fits (hashes are 20 bits)
    if ids.size < (1 << 19):
        u = np.unique((key << 20) | hashes.astype(np.int64)) >> 20
    else:
        order = np.lexsort((hashes, key))
        k, h = key[order], hashes[order]
        u = k[np.concatenate([[True], (k[1:] != k[:-1]) | (h[1:] != h[:-1])])]
    keys, counts = np.unique(u, return_counts=True)
    left = np.searchsorted(keys, keys - 1)
    right = np.searchsorted(keys, keys + 1)
    c_left = np.where((left < keys.size) & (keys[np.minimum(left, keys.size - 1)] == keys - 1),
                      counts[np.minimum(left, keys.size - 1)], 0)  # fmt: skip
    c_right = np.where((right < keys.size) & (keys[np.minimum(right, keys.size - 1)] == keys + 1),
                       counts[np.minimum(right, keys.size - 1)], 0)  # fmt: skip
    score = counts + c_left + c_right
    order = np.argsort(-score, kind="stable")
    out: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for k in order[: 50 * top]:
        item = int(ids[keys[k] >> 24])
        if item in seen:
            continue
        seen.add(item)
        out.append((item, int(keys[k] & ((1 << 24) - 1)) - (1 << 23), int(score[k])))
        if len(out) >= top:
            break
    return out


# Confidence: a logistic over the evidence, calibrated on the identify benchmark (soundscope eval
# --section identify): 0.5 sits 0.8 above the highest evidence of its 270 negative queries, so the
# reported matches keep a false-positive rate under 0.5 %. Below MIN_SCORE nothing is reported.
MIN_SCORE = 6
CONF_MID, CONF_SCALE = 6.5, 0.75
RUNNER_UP_WEIGHT = 0.25  # the next item's count estimates this query's chance level
SPEED_PENALTY = 1.0  # a match under one of the 16 non-unit speed hypotheses won a wider search
PAIRS_PER_VOTE = 1000  # chance alignments grow with the query's pairs: one vote per this many


def confidence(*, score: int, runner_up: int, speed: float = 1.0, n_pairs: int = 0) -> float:
    """Probability-like confidence (0..1) that the best match is right, from its aligned-pair count
    ``score``, the next item's, the speed hypothesis it won under and the query's pair count
    ``n_pairs``: chance matches reach a few pairs, more for long queries (more pairs to collide) and
    for the best of 17 hypotheses, so the evidence is the margin above what chance gives that query."""
    evidence = score - RUNNER_UP_WEIGHT * runner_up - n_pairs / PAIRS_PER_VOTE
    evidence -= SPEED_PENALTY if abs(speed - 1.0) > 1e-9 else 0.0
    return float(1.0 / (1.0 + math.exp(-(evidence - CONF_MID) / CONF_SCALE)))


# Verification against the reference audio: a query whose landmarks were too few to be sure (0 dB pink
# noise leaves 4-9 aligned pairs of ~1,000) is compared, at each of its best candidates' alignments, with
# the candidate recording itself, decoded from the library (identify.verify_candidates).
VERIFY_LAG = 60  # frames searched either side of the alignment: the statistic's chance level comes from there
VERIFY_NEAR = 1  # |lag| <= this is the alignment itself (landmark offsets are good to a frame)
VERIFY_FAR = 8  # |lag| >= this is chance (a note held for 250 ms correlates with itself nearby)
VERIFY_Z, VERIFY_SCALE = 4.5, 0.5  # alignment z at which a verified match has confidence 0.5, and the logistic's width


def tonal_detail(*, y: np.ndarray) -> np.ndarray:
    """(frames, bins) of ``y`` (n,) at :data:`SAMPLE_RATE`: its log spectrogram less the local mean over
    :data:`VERIFY_WHITEN` bins, then less its overall mean. What is left is where energy peaks within
    the spectrum, which additive noise blurs but does not move."""
    detail = detail_frames(logspec=log_spectrogram(y=np.asarray(y, np.float32)))
    return detail - detail.mean()


def detail_frames(*, logspec: np.ndarray) -> np.ndarray:
    """(frames, bins) tonal detail of each frame of ``logspec`` (:func:`log_spectrogram`) on its own: the
    log power less its mean over :data:`VERIFY_WHITEN` bins around each bin."""
    return logspec - ndimage.uniform_filter1d(logspec, VERIFY_WHITEN, axis=1, mode="nearest")


def alignment_z(*, query: np.ndarray, reference: np.ndarray, speed: float = 1.0, near: int = VERIFY_NEAR) -> float:
    """How much better a query matches a reference at a candidate alignment than anywhere near it, in
    standard deviations: the correlation of their tonal detail (:func:`tonal_detail` of each, the
    ``query`` and ``reference`` here) at the alignment (best of +/- ``near`` frames) against its mean
    and spread at the lags from ``near`` + 7 (:data:`VERIFY_FAR` for landmark candidates) to
    :data:`VERIFY_LAG` frames either side. The
    reference audio starts :data:`VERIFY_LAG` frames before the aligned start and spans the query at
    ``speed`` (query relative to reference) plus that much again at the end.

    A correlation alone does not separate a noisy true match from an unrelated piece in the same key (it
    measured 0.04-0.33 for true matches under 0 dB pink noise, up to 0.085 for music not in the library);
    scaled by its own chance level it does: negatives stay below 4 (270 queries x 5 candidates), true
    matches reach 4-25."""
    q, r = query, reference
    lags = np.arange(-VERIFY_LAG, VERIFY_LAG + 1)
    tq = np.arange(q.shape[0])
    tr = np.rint(VERIFY_LAG + tq[None, :] * speed + lags[:, None]).astype(np.int64)  # (lags, query frames)
    ok = (tr >= 0) & (tr < r.shape[0])
    tr = np.clip(tr, 0, r.shape[0] - 1)
    dots = q @ r.T  # (query frames, reference frames)
    num = np.where(ok, dots[tq[None, :], tr], 0.0).sum(axis=1)
    qq, rr = (q * q).sum(axis=1), (r * r).sum(axis=1)
    den = np.sqrt(np.where(ok, qq[None, :], 0.0).sum(axis=1) * np.where(ok, rr[tr], 0.0).sum(axis=1))
    corr = np.where((ok.sum(axis=1) >= 10) & (den > 1e-9), num / np.maximum(den, 1e-9), np.nan)
    far = VERIFY_FAR + near - VERIFY_NEAR  # the chance lags start as far beyond the alignment's window
    at, off = np.abs(lags) <= near, (np.abs(lags) >= far) & np.isfinite(corr)
    if off.sum() < 20 or not np.isfinite(corr[at]).any():
        return 0.0
    chance = corr[off]
    return float((np.nanmax(corr[at]) - chance.mean()) / (chance.std() + 1e-6))


def verified_confidence(z: float) -> float:
    """Confidence 0..1 of a landmark candidate verified with alignment z-score ``z`` (:func:`alignment_z`):
    0.5 at :data:`VERIFY_Z`, calibrated on the identify benchmark's negatives (their best z of 5
    candidates: p99 3.2, max 3.9). Sketch candidates: :func:`sketch_confidence`."""
    return float(1.0 / (1.0 + math.exp(-(z - VERIFY_Z) / VERIFY_SCALE)))


# Sketches: a look-up that needs no landmarks. Under 0 dB pink noise a 5 s excerpt can keep as few aligned
# landmark pairs as chance gives (2-3), and then its recording is not among the candidates at all. Its
# tonal detail (:func:`detail_frames`) averaged over a second still resembles the recording's: the noise's
# detail is random from frame to frame and averages out, sustained partials do not. A reference keeps,
# per :data:`SKETCH_FRAMES`-frame window, the sign of that average in each of the band's 454 bins (64
# bytes a second: 0.23 MB per audio hour); a query is compared, at 4 phases, with every window by Hamming
# distance (popcount), summed along its consecutive windows. On the identify benchmark (5 s, 0 dB pink)
# the right recording is first for 92 of 100 queries and among the best three for ~96; the places are then
# checked like landmark candidates (alignment_z), with a stricter bar.
SKETCH_PHASE = 8  # frames between the query window starts tried (4 phases of a reference window)
SKETCH_HITS = 200  # best places kept per phase before they are grouped by recording
SKETCH_ITEMS = 3  # recordings the sketch stage proposes
SKETCH_PLACES = 2  # places per recording: music repeats itself, and its best-scoring repeat is not always it
SKETCH_GAP = 94  # frames (3 s): places of one recording closer than this are one place
SKETCH_NEAR = 4  # frames: a sketch alignment is good to a few frames, so its check takes the best of +/- this
SKETCH_Z = 6.0  # alignment z a sketch candidate needs for confidence 0.5: the best of 9 lags (not 3) has a
# higher chance level ...
SKETCH_MARGIN = 3.0  # ... and its margin over the best z of the other recordings proposed. The sketch chose
# these places for looking alike, so a larger library offers look-alikes with higher z by chance; the other
# recordings' z is that query's own chance level. On the benchmark's 270 negatives: z up to 4.6, margins up
# to 2.2; the true matches the sketch found: z 6.0-16.7, margins 4.2-9.7


def sketch_confidence(*, z: float, runner_up: float) -> float:
    """Confidence 0..1 of a sketch candidate verified with alignment z-score ``z`` when the best other
    recording the sketch proposed reached ``runner_up``: 0.5 where ``z`` is :data:`SKETCH_Z` and
    :data:`SKETCH_MARGIN` above ``runner_up``, whichever is harder."""
    evidence = min(z - SKETCH_Z, z - runner_up - SKETCH_MARGIN)
    return float(1.0 / (1.0 + math.exp(-evidence / VERIFY_SCALE)))


def sketch_bits(*, windows: np.ndarray) -> np.ndarray:
    """(w, :data:`SKETCH_WORDS`) uint64 sketch rows of ``windows`` (w, bins) float, each the mean
    :func:`detail_frames` of one window: bit b is set where bin b is above the window's mean over bins
    (bits packed big-endian, zero-padded to whole words)."""
    bits = np.asarray(windows) > np.asarray(windows).mean(axis=1, keepdims=True)
    packed = np.zeros((bits.shape[0], SKETCH_WORDS * 8), np.uint8)
    packed[:, : -(-bits.shape[1] // 8)] = np.packbits(bits, axis=1)
    return packed.view(np.uint64)


def sketch_rows(*, detail: np.ndarray) -> np.ndarray:
    """(k, SKETCH_WORDS) uint64 :func:`sketch_bits` of the k whole :data:`SKETCH_FRAMES`-frame windows of
    ``detail`` (frames, bins), from its first frame (a partial window at the end is left out)."""
    k = detail.shape[0] // SKETCH_FRAMES
    return sketch_bits(windows=detail[: k * SKETCH_FRAMES].reshape(k, SKETCH_FRAMES, detail.shape[1]).mean(axis=1))


def query_sketch(*, detail: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The sketch windows of a query from its tonal detail (frames, bins) (:func:`tonal_detail` or
    :func:`detail_frames`: a constant added to every bin does not change a sign bit), at each phase ``p``
    in 0, :data:`SKETCH_PHASE`, ... < :data:`SKETCH_FRAMES`: ``(p, (k, SKETCH_WORDS) uint64)`` for the
    ``k`` whole windows starting at frames p, p + SKETCH_FRAMES, ... (a phase with none is left out)."""
    phases = [(p, sketch_rows(detail=detail[p:])) for p in range(0, SKETCH_FRAMES, SKETCH_PHASE)]
    return [(p, rows) for p, rows in phases if rows.shape[0]]


SKETCH_BLOCK = 1 << 15  # stored windows compared per pass (2 MB of bits: stays in cache for every query row)


def sketch_hits(
    *, query: list[tuple[int, np.ndarray]], words: np.ndarray, items: np.ndarray, windows: np.ndarray,
    per_phase: int = SKETCH_HITS, dead: np.ndarray | None = None,
) -> list[tuple[float, int, int]]:  # fmt: skip
    """Best places of a :func:`query_sketch` among stored sketch windows: ``words`` (SKETCH_WORDS, n)
    uint64 columns ordered by (``items`` (n,), ``windows`` (n,) window number, from 0 with no gaps). A
    place is the query's k windows of one phase against k consecutive windows of one recording; its
    similarity is 1 - 2 x the mean share of differing bits (1: identical, ~0: unrelated). Returns
    ``(similarity, item id, offset frames)`` of the best ``per_phase`` places of each phase (offset:
    where the query starts in the recording; it can be negative by up to a phase), none of the items
    ``dead`` (deleted, not yet purged: left out before the best are chosen, so they take no place).

    Hamming distances by popcount, the stored bits read once, in blocks of :data:`SKETCH_BLOCK` windows
    compared with all the query's rows (a scan, linear in the windows stored: see
    ``scripts/bench_identify_growth.py``)."""
    n = words.shape[1]
    totals = [np.zeros(max(n - rows.shape[0] + 1, 0), np.uint32) for _, rows in query]
    tmp, ones = np.empty(SKETCH_BLOCK, np.uint64), np.empty(SKETCH_BLOCK, np.uint8)
    dist = np.empty(SKETCH_BLOCK, np.uint16)
    for a in range(0, n, SKETCH_BLOCK):
        size = min(n, a + SKETCH_BLOCK) - a
        block = [np.asarray(words[w, a : a + size]) for w in range(words.shape[0])]
        t, o, d = tmp[:size], ones[:size], dist[:size]
        for (_, rows), total in zip(query, totals, strict=True):
            for j in range(rows.shape[0]):  # distance of window a + i to row j counts for the place a + i - j
                lo, hi = max(a - j, 0), min(a + size - j, total.shape[0])
                if hi <= lo:
                    continue
                d[:] = 0
                for w, col in enumerate(block):
                    np.bitwise_xor(col, rows[j, w], out=t)
                    np.bitwise_count(t, out=o)
                    d += o
                total[lo:hi] += d[lo + j - a : hi + j - a]
    remaining = _windows_left(items, windows)
    if dead is not None and dead.size:
        remaining = np.where(np.isin(items, dead), 0, remaining)
    out: list[tuple[float, int, int]] = []
    for (p, rows), total in zip(query, totals, strict=True):
        k, m = rows.shape[0], total.shape[0]
        if m < 1:
            continue
        whole = remaining[:m] >= k  # k consecutive windows of one recording from here
        scored = np.where(whole, total, np.iinfo(np.uint32).max)
        best = np.argpartition(scored, min(per_phase, m) - 1)[:per_phase]
        out += [(1.0 - 2.0 * float(total[r]) / (k * SKETCH_BITS), int(items[r]), int(windows[r]) * SKETCH_FRAMES - p)
                for r in best if whole[r]]  # fmt: skip
    return out


def _windows_left(items: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(n,) how many windows of its recording each stored window starts (itself included): columns in
    (item, window) order, an item's windows numbered from 0 with no gaps."""
    items = np.asarray(items)
    if items.size == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], items[1:] != items[:-1]]))
    counts = np.diff(np.concatenate([starts, [items.size]]))
    return np.repeat(counts, counts) - np.asarray(windows, np.int64)


def sketch_places(
    hits: list[tuple[float, int, int]], *, top: int = SKETCH_ITEMS, places: int = SKETCH_PLACES
) -> list[tuple[int, float, float]]:
    """``(item id, offset_s, similarity)`` from :func:`sketch_hits`: the ``top`` recordings with the best
    places, up to ``places`` each at least :data:`SKETCH_GAP` frames apart, best first."""
    kept: dict[int, list[tuple[float, int]]] = {}
    for sim, item, off in sorted(hits, key=lambda h: -h[0]):
        if item not in kept:
            if len(kept) >= top:
                continue
            kept[item] = []
        if len(kept[item]) < places and all(abs(off - o) >= SKETCH_GAP for _, o in kept[item]):
            kept[item].append((sim, off))
    out = [(item, off * FRAME_S, sim) for item, ps in kept.items() for sim, off in ps]
    return sorted(out, key=lambda x: -x[2])


EARLY_CONFIDENCE = 0.99  # a unit-speed match this sure skips the other speed hypotheses


def match(*, peaks: Peaks, lookup, speeds: tuple[float, ...] = SPEEDS, top: int = 5) -> list[Candidate]:
    """Best-aligned recordings for a query's ``peaks`` (see :func:`peaks_of`), best first.

    ``lookup(hashes (m,) uint32) -> (query index (k,), item id (k,), anchor frame (k,))`` is the index
    (:meth:`soundscope.store.fingerprints.FingerprintIndex.lookup`). Unit speed is tried first: when it
    is already sure (:data:`EARLY_CONFIDENCE`, most queries), that is the answer; otherwise every other
    speed hypothesis is looked up in one call and each item keeps its best. ``confidence`` is set on
    every candidate.
    """
    if 1.0 in speeds and len(speeds) > 1:
        first = _match(peaks=peaks, lookup=lookup, speeds=(1.0,), top=top)
        if first and first[0].confidence >= EARLY_CONFIDENCE:
            return first
    return _match(peaks=peaks, lookup=lookup, speeds=speeds, top=top)


def _match(*, peaks: Peaks, lookup, speeds: tuple[float, ...], top: int) -> list[Candidate]:
    qs = [query_hashes(peaks=peaks, speed=s) for s in speeds]
    sizes = np.array([q.hashes.size for q in qs])
    if sizes.sum() == 0:
        return []
    q_idx, items, ref_t = lookup(np.concatenate([q.hashes for q in qs]))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    which = np.searchsorted(bounds, q_idx, side="right") - 1
    n_pairs = int(pairs(peaks=peaks, fanout=QUERY_FANOUT)[0].size)
    best: dict[int, Candidate] = {}
    for k, q in enumerate(qs):
        sel = np.flatnonzero(which == k)
        if sel.size == 0:
            continue
        local = q_idx[sel] - bounds[k]
        for item, off, score in best_alignments(
            items=items[sel], ref_t=ref_t[sel], query_t=q.t[local], hashes=q.hashes[local], top=top
        ):
            # between hypotheses, one far from unit speed must win clearly (neighbours share most hashes)
            weight = score * (1.0 - 2.0 * abs(q.speed - 1.0))
            if item not in best or weight > best[item].extra["weight"]:
                best[item] = Candidate(item, score, off * FRAME_S, q.speed, n_pairs, extra={"weight": weight})
    ranked = sorted(best.values(), key=lambda c: -c.score)[:top]
    for i, c in enumerate(ranked):
        runner = ranked[i + 1].score if i + 1 < len(ranked) else 0
        c.confidence = confidence(score=c.score, runner_up=runner if i == 0 else ranked[0].score, speed=c.speed,
                                  n_pairs=c.n_pairs)  # fmt: skip
    return ranked
