"""denoise.py on synthetic signals: noise goes down, speech-like bursts survive, silence stays silent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from soundscope import denoise

SR = 16000
GATING = ["nonstationary", "stationary"] if denoise.available() else []
METHODS = [*GATING, "wiener"]


def hopping_tone(seconds: float = 6.0, *, level: float = 0.05) -> np.ndarray:
    """Harmonic tone bursts like voiced speech: 0.2 s every 0.5 s, 19 harmonics of a pitch that moves
    between 120 and 250 Hz from burst to burst (so no band is busy all the time), silence between."""
    t = np.arange(int(seconds * SR)) / SR
    burst = (t % 0.5) < 0.2
    phase = 2 * np.pi * (120.0 + 130.0 * ((np.floor(t / 0.5) * 0.618) % 1.0)) * t
    tone = sum(np.sin(k * phase) / np.sqrt(k) for k in range(1, 20))
    return (level * tone * burst).astype(np.float32)


def white(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("snr", [0.0, 5.0])
def test_tone_in_white_noise_gets_cleaner(method: str, snr: float) -> None:
    clean = hopping_tone()
    noisy = denoise.mix_at_snr(signal=clean, noise=white(clean.size), snr_db=snr)
    before = denoise.snr_db(clean=clean, estimate=noisy)
    out = denoise.denoise(noisy, sr=SR, method=method)
    assert abs(before - snr) < 0.05  # the mix has the SNR asked for
    assert denoise.snr_db(clean=clean, estimate=out) > before + 3.0, method
    on = clean != 0
    # the bursts themselves are kept, not gated away with the noise
    assert np.mean(out[on] ** 2) > 0.3 * np.mean(clean[on] ** 2)


@pytest.mark.parametrize("method", METHODS)
def test_silence_stays_silent_and_finite(method: str) -> None:
    out = denoise.denoise(np.zeros(3 * SR, np.float32), sr=SR, method=method)
    assert out.shape == (3 * SR,) and out.dtype == np.float32
    assert np.all(out == 0.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [0, 100, SR + 17])
def test_shape_and_dtype_preserved(method: str, n: int) -> None:
    y = (0.1 * white(n, seed=n)).astype(np.float64)  # float64 in, float32 out
    out = denoise.denoise(y, sr=SR, method=method)
    assert out.shape == (n,) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= 1.0)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mono"):
        denoise.denoise(np.zeros((2, 100), np.float32), sr=SR)
    with pytest.raises(ValueError, match="unknown denoise method"):
        denoise.denoise(np.zeros(100, np.float32), sr=SR, method="magic")
    with pytest.raises(ValueError, match="silent"):
        denoise.mix_at_snr(signal=np.ones(10, np.float32), noise=np.zeros(10, np.float32), snr_db=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_time_is_bounded(method: str) -> None:
    """A guard against a blow-up (e.g. a per-sample loop), not a benchmark: 30 s of audio well under 30 s."""
    y = 0.1 * white(30 * SR)
    denoise.denoise(y[:SR], sr=SR, method=method)  # imports and first-call set-up
    t = time.perf_counter()
    denoise.denoise(y, sr=SR, method=method)
    assert time.perf_counter() - t < 15.0


def test_transcriber_denoises_what_it_hears_as_configured() -> None:
    """The recogniser's audio goes through transcribe.DENOISE first (or, with denoise=None, untouched)."""
    from soundscope import transcribe

    if not transcribe.model_available("tiny.en"):
        pytest.skip("Whisper tiny.en not installed")
    clean = hopping_tone()
    noisy = denoise.mix_at_snr(signal=clean, noise=white(clean.size), snr_db=0.0)
    on = transcribe.load_transcriber("tiny.en")
    assert on.denoise == transcribe.DENOISE
    off = transcribe.load_transcriber("tiny.en", denoise=None)
    assert off._denoised(noisy) is noisy
    if transcribe.DENOISE:
        assert denoise.snr_db(clean=clean, estimate=on._denoised(noisy)) > 3.0
