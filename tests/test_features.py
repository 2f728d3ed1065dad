"""Feature functions on synthetic signals with known answers."""

import numpy as np
import pytest

from soundscope import features as F
from tests.conftest import tone

SR = 16000


def test_frame_signal_shapes():
    y = np.arange(1000, dtype=np.float32)
    assert F.frame_signal(y, frame_length=400, hop_length=160).shape == (4, 400)
    assert F.frame_signal(y[:100], frame_length=400, hop_length=160).shape == (0, 400)
    assert F.frame_signal(y[:100], frame_length=400, hop_length=160, pad_end=True).shape == (1, 400)


def test_stft_peak_at_tone_bin():
    spec = F.stft_magnitude(tone(1000, 1.0), n_fft=512, hop_length=256)
    assert spec.shape[1] == 257
    assert abs(int(np.argmax(spec.mean(axis=0))) - round(1000 * 512 / SR)) <= 1


@pytest.mark.parametrize("htk,norm", [(True, None), (False, "slaney")])
def test_mel_filterbank_triangles_cover_range(htk, norm):
    fb = F.mel_filterbank(sr=SR, n_fft=512, n_mels=40, fmin=125, fmax=7500, htk=htk, norm=norm)
    assert fb.shape == (257, 40)
    assert (fb >= 0).all()
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all()  # filters ordered by frequency
    freqs = np.linspace(0, SR / 2, 257)
    assert fb[freqs < 100].sum() == 0 and fb[freqs > 7600].sum() == 0


def test_mel_scales_invert():
    f = np.array([0.0, 440.0, 1000.0, 4000.0, 8000.0])
    for htk in (True, False):
        np.testing.assert_allclose(F.mel_to_hz(F.hz_to_mel(f, htk=htk), htk=htk), f, atol=1e-6)


def test_slaney_mel_matches_librosa_values():
    # librosa.hz_to_mel(1000) == 15.0 and hz_to_mel(4000) == 15 + log(4)/ (log(6.4)/27)
    assert F.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert F.hz_to_mel(4000.0) == pytest.approx(15 + np.log(4) / (np.log(6.4) / 27))


def test_tone_lands_in_the_right_mel_band():
    lm = F.log_mel_spectrogram(
        tone(2000, 1.0), sr=SR, n_fft=512, hop_length=160, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None
    )
    centers = F.mel_to_hz(np.linspace(F.hz_to_mel(125, htk=True), F.hz_to_mel(7500, htk=True), 66)[1:-1], htk=True)
    assert abs(centers[int(lm.mean(axis=0).argmax())] - 2000) < 120


def test_mfcc_shape_and_distinguishes_spectra():
    a = F.mfcc(tone(300, 1.0), sr=SR)
    b = F.mfcc(np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32), sr=SR)
    assert a.shape[1] == 13 and a.shape[0] > 50
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 10


def test_centroid_rms_zcr_loudness_of_a_sine():
    y = tone(1000, 1.0, amp=0.5)
    assert np.median(F.spectral_centroid(y, sr=SR)) == pytest.approx(1000, rel=0.05)
    assert np.median(F.rms(y)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert np.median(F.zero_crossing_rate(y)) == pytest.approx(2 * 1000 / SR, rel=0.05)
    assert F.loudness_dbfs(tone(1000, 1.0, amp=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert F.loudness_dbfs(np.zeros(100, np.float32)) == -120.0


def test_silence_is_handled():
    z = np.zeros(SR, np.float32)
    assert (F.spectral_centroid(z, sr=SR) == 0).all()
    assert (F.rms(z) == 0).all()
    assert F.peak_normalize(z) is z
    s = F.summary_features(z, sr=SR)
    assert s["duration_s"] == 1.0 and s["loudness_dbfs"] == -120.0 and len(s["mfcc_mean"]) == 13


def test_peak_normalize():
    assert np.abs(F.peak_normalize(tone(440, 0.1, amp=0.1))).max() == pytest.approx(0.99, rel=1e-3)
