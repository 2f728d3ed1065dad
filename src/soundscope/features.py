"""Audio features: pure, keyword-only numpy functions.

Every function takes arrays and plain numbers and returns arrays; none does I/O.
Conventions: ``y`` is a mono float32 waveform in [-1, 1], shape ``(n_samples,)``;
spectrograms are ``(n_frames, n_bins)`` (time first); times are seconds; rates are Hz.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dct_matrix",
    "frame_signal",
    "hz_to_mel",
    "log_mel_spectrogram",
    "loudness_dbfs",
    "mel_filterbank",
    "mel_to_hz",
    "mfcc",
    "peak_normalize",
    "rms",
    "spectral_centroid",
    "stft_magnitude",
    "summary_features",
    "zero_crossing_rate",
]


def frame_signal(y: np.ndarray, *, frame_length: int, hop_length: int, pad_end: bool = False) -> np.ndarray:
    """Cut ``y`` into overlapping frames without copying.

    Returns shape ``(n_frames, frame_length)``; a signal shorter than one frame
    gives ``(0, frame_length)`` unless ``pad_end`` zero-pads it to one frame.
    """
    y = np.asarray(y, dtype=np.float32)
    if pad_end and y.shape[0] < frame_length:
        y = np.pad(y, (0, frame_length - y.shape[0]))
    if y.shape[0] < frame_length:
        return np.zeros((0, frame_length), dtype=np.float32)
    n = 1 + (y.shape[0] - frame_length) // hop_length
    return np.lib.stride_tricks.as_strided(
        y, shape=(n, frame_length), strides=(y.strides[0] * hop_length, y.strides[0]), writeable=False
    )


def _window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` centred in ``n_fft`` samples (as torch/librosa)."""
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)).astype(np.float32)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


def stft_magnitude(
    y: np.ndarray,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    center: bool = False,
    power: float = 1.0,
    pad_mode: str = "constant",
) -> np.ndarray:
    """Magnitude (``power=1``) or power (``power=2``) spectrogram.

    Periodic Hann window, zero-padded to ``n_fft``; ``center`` pads by ``n_fft // 2`` on both
    sides with ``pad_mode`` ("constant" = zeros, librosa >= 0.10's default, or "reflect").
    Returns ``(n_frames, n_fft//2 + 1)`` float32.
    """
    win_length = win_length or n_fft
    y = np.asarray(y, dtype=np.float32)
    if center:
        pad = n_fft // 2
        mode = pad_mode if pad_mode == "constant" or y.shape[0] > pad else "constant"
        y = np.pad(y, (pad, pad), mode=mode)
    frames = frame_signal(y, frame_length=n_fft, hop_length=hop_length)
    spec = np.abs(np.fft.rfft(frames * _window(win_length, n_fft), n=n_fft, axis=1))
    if power != 1.0:
        spec = spec**power
    return spec.astype(np.float32)


def hz_to_mel(freqs: np.ndarray | float, *, htk: bool = False) -> np.ndarray:
    """Hz to mel: HTK formula or Slaney's (linear below 1 kHz, log above), as librosa."""
    f = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def mel_to_hz(mels: np.ndarray | float, *, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(
    *,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, shape ``(n_fft//2 + 1, n_mels)`` float32.

    ``htk=False, norm="slaney"`` reproduces ``librosa.filters.mel`` defaults;
    ``htk=True, norm=None`` reproduces ``torchaudio`` ``MelSpectrogram(mel_scale="htk")``.
    Multiply a ``(frames, bins)`` spectrogram by this matrix to get ``(frames, n_mels)``.
    """
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts, htk=htk)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r}")
    return weights.T.astype(np.float32)


def log_mel_spectrogram(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    win_length: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
    power: float = 2.0,
    center: bool = True,
    offset: float = 1e-6,
) -> np.ndarray:
    """``log(mel + offset)`` in float32, shape ``(n_frames, n_mels)``."""
    spec = stft_magnitude(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, center=center, power=power)
    fb = mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    return np.log(spec @ fb + np.float32(offset)).astype(np.float32)


def dct_matrix(*, n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape ``(n_in, n_out)``: ``x @ dct`` gives cepstra."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def mfcc(
    y: np.ndarray, *, sr: int, n_mfcc: int = 13, n_fft: int = 512, hop_length: int = 256, n_mels: int = 40
) -> np.ndarray:
    """Mel-frequency cepstral coefficients, shape ``(n_frames, n_mfcc)`` (log-power mel in dB, DCT-II)."""
    spec = stft_magnitude(y, n_fft=n_fft, hop_length=hop_length, center=True, power=2.0)
    mel = spec @ mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return (db @ dct_matrix(n_in=n_mels, n_out=n_mfcc)).astype(np.float32)


def spectral_centroid(y: np.ndarray, *, sr: int, n_fft: int = 1024, hop_length: int = 512) -> np.ndarray:
    """Per-frame magnitude-weighted mean frequency in Hz, shape ``(n_frames,)``; 0 for silent frames."""
    spec = stft_magnitude(y, n_fft=n_fft, hop_length=hop_length, center=True)
    freqs = np.linspace(0, sr / 2, spec.shape[1], dtype=np.float32)
    total = spec.sum(axis=1)
    return np.where(total > 1e-8, (spec @ freqs) / np.maximum(total, 1e-8), 0.0).astype(np.float32)


def rms(y: np.ndarray, *, frame_length: int = 1024, hop_length: int = 512) -> np.ndarray:
    """Root-mean-square amplitude per frame, shape ``(n_frames,)`` (last partial frame zero-padded)."""
    frames = frame_signal(y, frame_length=frame_length, hop_length=hop_length, pad_end=True)
    return np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)).astype(np.float32)


def zero_crossing_rate(y: np.ndarray, *, frame_length: int = 1024, hop_length: int = 512) -> np.ndarray:
    """Fraction of sign changes per sample in each frame, shape ``(n_frames,)``, in [0, 1]."""
    frames = frame_signal(y, frame_length=frame_length, hop_length=hop_length, pad_end=True)
    signs = np.signbit(frames)
    return (np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / max(frame_length - 1, 1)).astype(np.float32)


def peak_normalize(y: np.ndarray, *, peak: float = 0.99) -> np.ndarray:
    """Scale so the largest absolute sample is ``peak``; silence is returned unchanged."""
    m = float(np.max(np.abs(y))) if y.size else 0.0
    return y if m < 1e-9 else (y * (peak / m)).astype(np.float32)


def loudness_dbfs(y: np.ndarray) -> float:
    """Overall RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -120 for silence."""
    if y.size == 0:
        return -120.0
    level = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return max(-120.0, 20.0 * np.log10(max(level, 1e-6)))


def summary_features(y: np.ndarray, *, sr: int) -> dict[str, object]:
    """Fixed-size description of a clip: MFCC mean/std (13 each), centroid, loudness, ZCR, duration.

    Returns plain floats and lists, ready to store as JSON.
    """
    coeffs = mfcc(y, sr=sr)
    if coeffs.shape[0] == 0:
        coeffs = np.zeros((1, 13), dtype=np.float32)
    centroid = spectral_centroid(y, sr=sr)
    level = rms(y)
    return {
        "duration_s": float(y.shape[0] / sr),
        "mfcc_mean": [round(float(v), 4) for v in coeffs.mean(axis=0)],
        "mfcc_std": [round(float(v), 4) for v in coeffs.std(axis=0)],
        "centroid_hz": float(np.mean(centroid)) if centroid.size else 0.0,
        "loudness_dbfs": loudness_dbfs(y),
        "rms_max": float(level.max()) if level.size else 0.0,
        "zcr": float(np.mean(zero_crossing_rate(y))) if y.size else 0.0,
    }
