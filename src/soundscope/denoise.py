"""Denoise: background-noise suppression for a mono signal, before recognition or embedding.

Pure keyword-only functions over numpy. Every signal is a 1-D float32 array of samples in [-1, 1] at
``sr`` Hz (the analysis rate, 16 kHz, unless said otherwise); every output has the input's shape and
dtype float32, and is finite.

* :func:`spectral_gate` — spectral gating by the maintained ``noisereduce`` package (the ``denoise``
  extra): a per-frequency threshold from the noise statistics, a smoothed mask, inverse STFT.
  ``stationary=True`` takes one noise profile (mean + ``n_std`` standard deviations of each band's dB
  level over the whole signal): right for hiss, hum, fans, steady rain. ``stationary=False`` tracks a
  moving noise floor (a ``time_constant_s`` smoothing of each band's power): right for noise that
  changes, such as traffic, waves or a helicopter passing.
* :func:`wiener` — a short-time spectral Wiener filter with the noise spectrum estimated from the
  quietest frames; scipy only, used when ``noisereduce`` is not installed.
* :func:`denoise` — one entry point choosing between them.
* :func:`mix_at_snr`, :func:`snr_db` — building and scoring noisy test signals (evaluation, tests).

Whether denoising is applied anywhere is decided by measurement (``scripts/eval_denoise.py``); see
``transcribe.DENOISE`` and the report in the README.
"""

from __future__ import annotations

import importlib.util

import numpy as np

METHODS = ("auto", "nonstationary", "stationary", "wiener")
# noisereduce smooths its mask over 500 Hz by default; a harmonic sound (voiced speech: a line every 100-250 Hz)
# fills a few bins of that window, so its mask is diluted to ~0.2 and the speech is gated with the noise (a
# harmonic buzz in white noise: 0 -> 1.8 dB with 500 Hz, 8.1 dB with 32 Hz). 32 Hz is the least it takes
# at n_fft 1024 and 16 kHz (one STFT bin).
GATE_FREQ_SMOOTH_HZ = 32.0


def available() -> bool:
    """Whether ``noisereduce`` (the ``denoise`` extra) is installed; :func:`wiener` works regardless."""
    return importlib.util.find_spec("noisereduce") is not None


def _clean(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"denoise takes a mono 1-D signal, got shape {y.shape}")
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)


def _finish(out: np.ndarray, n: int) -> np.ndarray:
    out = np.nan_to_num(np.asarray(out, dtype=np.float32).reshape(-1)[:n], nan=0.0, posinf=0.0, neginf=0.0)
    if out.shape[0] < n:
        out = np.pad(out, (0, n - out.shape[0]))
    return np.clip(out, -1.0, 1.0)


def spectral_gate(
    y: np.ndarray,
    *,
    sr: int = 16000,
    stationary: bool = False,
    prop_decrease: float = 1.0,
    time_constant_s: float = 2.0,
    n_std: float = 1.5,
    n_fft: int = 1024,
    freq_smooth_hz: float = GATE_FREQ_SMOOTH_HZ,
) -> np.ndarray:
    """``y`` (n,) float32 at ``sr`` Hz with its noise gated out, (n,) float32.

    ``prop_decrease`` in [0, 1]: how far a gated bin is lowered (1.0 removes it). ``time_constant_s``
    (seconds): the noise-floor smoothing of the non-stationary mode. ``n_std``: the stationary mode's
    threshold above the mean dB level of each band. ``n_fft``: STFT size in samples (1024 = 64 ms at 16 kHz).
    ``freq_smooth_hz``: the width the mask is smoothed over in frequency (at least ``sr / (n_fft / 2)``).
    Raises ``ImportError`` (naming the extra) when ``noisereduce`` is missing.
    """
    y = _clean(y)
    if y.shape[0] < n_fft:  # too short for one STFT frame: nothing to estimate the noise from
        return y.copy()
    try:
        import noisereduce
    except ImportError as exc:
        raise ImportError("spectral gating needs noisereduce: pip install 'soundscope[denoise]'") from exc
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-silent band divides 0 by 0; _finish zeroes it
        out = noisereduce.reduce_noise(
            y=y,
            sr=sr,
            stationary=stationary,
            prop_decrease=prop_decrease,
            time_constant_s=time_constant_s,
            n_std_thresh_stationary=n_std,
            freq_mask_smooth_hz=max(freq_smooth_hz, sr / (n_fft // 2)),
            n_fft=n_fft,
            n_jobs=1,
            use_tqdm=False,
        )
    return _finish(out, y.shape[0])


def wiener(
    y: np.ndarray,
    *,
    sr: int = 16000,
    noise_quantile: float = 0.1,
    gain_floor: float = 0.1,
    n_fft: int = 512,
    chunk_s: float = 5.0,
) -> np.ndarray:
    """``y`` (n,) float32 at ``sr`` Hz through a short-time Wiener filter, (n,) float32.

    The noise power of each band is its mean over the ``noise_quantile`` quietest STFT frames of the whole
    signal (``n_fft`` samples, hop ``n_fft / 4``); the gain of a bin is ``max(1 - noise / power,
    gain_floor)`` smoothed over 3 frames. The signal is filtered in pieces of ``chunk_s`` seconds (each
    with ``2 n_fft`` samples of context on both sides, so the joins do not show): memory stays at a few MB
    for a 30 s block. Hand-written because ``scipy.signal.wiener`` is a time-domain local-variance filter
    (it blurs audio instead of removing a noise spectrum) and ``noisereduce``'s gating raised WER here.
    """
    y = _clean(y)
    n = y.shape[0]
    if n < n_fft:
        return y.copy()
    step, pad = max(int(chunk_s * sr), 8 * n_fft), 2 * n_fft
    spans = [(a, min(a + step, n)) for a in range(0, n, step)]
    powers = [_power(y[a:b], sr=sr, n_fft=n_fft) for a, b in spans]  # statistics pass, no overlap
    energy = np.concatenate([p.sum(axis=0) for p in powers])
    k = max(1, round(noise_quantile * energy.shape[0]))
    limit = np.partition(energy, k - 1)[k - 1]
    quiet = [p[:, p.sum(axis=0) <= limit] for p in powers]
    noise = (np.concatenate(quiet, axis=1).mean(axis=1, keepdims=True)).astype(np.float32)
    del powers, quiet
    out = np.empty(n, np.float32)
    for a, b in spans:
        lo, hi = max(0, a - pad), min(n, b + pad)
        out[a:b] = _wiener_piece(y[lo:hi], noise, sr=sr, n_fft=n_fft, floor=gain_floor)[a - lo : b - lo]
    return _finish(out, n)


def _power(y: np.ndarray, *, sr: int, n_fft: int) -> np.ndarray:
    """Power spectrogram (n_fft/2+1 bins, frames) float32 of ``y``, hop ``n_fft / 4``."""
    from scipy.signal import stft

    if y.shape[0] < n_fft:
        y = np.pad(y, (0, n_fft - y.shape[0]))
    _, _, z = stft(y, fs=sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
    return (z.real**2 + z.imag**2).astype(np.float32)


def _wiener_piece(y: np.ndarray, noise: np.ndarray, *, sr: int, n_fft: int, floor: float) -> np.ndarray:
    """``y`` (m,) with the Wiener gain for the noise power ``noise`` (bins, 1) applied, (m,) float32."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import istft, stft

    _, _, z = stft(y, fs=sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
    power = (z.real**2 + z.imag**2).astype(np.float32)
    gain = np.maximum(1.0 - noise / np.maximum(power, 1e-20), floor, dtype=np.float32)
    gain = uniform_filter1d(gain, size=3, axis=1)
    _, out = istft(z * gain, fs=sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
    out = np.asarray(out, np.float32)
    return out[: y.shape[0]] if out.shape[0] >= y.shape[0] else np.pad(out, (0, y.shape[0] - out.shape[0]))


def denoise(y: np.ndarray, *, sr: int = 16000, method: str = "auto", prop_decrease: float = 1.0) -> np.ndarray:
    """``y`` (n,) float32 at ``sr`` Hz denoised by ``method``, (n,) float32.

    ``method``: "nonstationary" / "stationary" (spectral gating, :func:`spectral_gate`), "wiener"
    (:func:`wiener`), or "auto": non-stationary gating when ``noisereduce`` is installed, else Wiener.
    """
    if method not in METHODS:
        raise ValueError(f"unknown denoise method {method!r}; one of {', '.join(METHODS)}")
    if method == "auto":
        method = "nonstationary" if available() else "wiener"
    if method == "wiener":
        return wiener(y, sr=sr)
    return spectral_gate(y, sr=sr, stationary=method == "stationary", prop_decrease=prop_decrease)


def mix_at_snr(*, signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal`` (n,) plus ``noise`` (tiled or cut to n samples) scaled to ``snr_db`` dB, (n,) float32.

    The SNR is the ratio of mean powers over the whole signal (its pauses included). The mix is scaled
    down as a whole if it would clip, which keeps the ratio.
    """
    s = _clean(signal).astype(np.float64)
    n = _clean(noise).astype(np.float64)
    if n.size == 0 or not np.any(n):
        raise ValueError("noise is empty or silent")
    n = np.tile(n, -(-s.shape[0] // n.shape[0]))[: s.shape[0]]
    ps, pn = float(np.mean(s**2)), float(np.mean(n**2))
    mix = s + n * np.sqrt(ps / (pn * 10 ** (snr_db / 10))) if ps > 0 else n
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > 0.99:
        mix = mix * (0.99 / peak)
    return mix.astype(np.float32)


def snr_db(*, clean: np.ndarray, estimate: np.ndarray) -> float:
    """SNR in dB of ``estimate`` against ``clean`` (both (n,)): 10 log10(|clean|² / |estimate - clean|²)."""
    c = np.asarray(clean, np.float64)
    e = np.asarray(estimate, np.float64)
    err = float(np.sum((e - c) ** 2))
    return float("inf") if err == 0 else 10.0 * np.log10(max(float(np.sum(c**2)), 1e-30) / err)


__all__ = ["METHODS", "available", "denoise", "mix_at_snr", "snr_db", "spectral_gate", "wiener"]
