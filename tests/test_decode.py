"""Decoding: every common format to mono float32 at 16 kHz, bounded-memory streaming, clear errors."""

import tracemalloc

import numpy as np
import pytest

from soundscope import decode
from tests.conftest import DEMO, tone, write_audio

FORMATS = [".wav", ".flac", ".mp3", ".opus", ".m4a", ".aiff"]


@pytest.mark.parametrize("ext", FORMATS)
def test_formats_decode_to_mono_16k(tmp_path, ext):
    left, right = tone(440, 2.0, sr=44100), tone(880, 2.0, sr=44100, amp=0.3)
    path = write_audio(tmp_path / f"clip{ext}", np.stack([left, right]), 44100)
    info = decode.probe(path)
    assert info.channels == 2
    assert info.sample_rate in (44100, 48000)
    y = decode.load(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.shape[0] / 16000 - 2.0) < 0.1  # encoders add a little padding
    assert 0.1 < np.abs(y).max() <= 1.0
    spec = np.abs(np.fft.rfft(y[4000:20000]))
    peak_hz = np.argmax(spec) * 16000 / 16000
    assert abs(peak_hz - 440) < 5  # the louder channel dominates the mono mix


def test_ogg_vorbis_and_tags_from_real_files():
    info = decode.probe(DEMO / "music" / "Kevin_MacLeod_-_Vibe_Ace.ogg")
    assert info.codec == "vorbis" and info.duration_s > 60
    assert info.tags.get("artist") == "Kevin MacLeod"


def test_stream_blocks_are_exact(tmp_path):
    path = write_audio(tmp_path / "long.flac", tone(300, 7.3), 16000)
    blocks = list(decode.stream(path, block_s=2.0))
    assert [b.shape[0] for b in blocks[:-1]] == [32000] * 3
    assert sum(b.shape[0] for b in blocks) == pytest.approx(7.3 * 16000, abs=2)


def test_stream_memory_is_bounded(tmp_path):
    """A 20-minute file (77 MB as float32) streams with a peak far below the whole signal."""
    sr = 16000
    y = np.tile(tone(220, 10.0, sr=sr, amp=0.2), 120)
    path = write_audio(tmp_path / "twenty_minutes.flac", y, sr)
    del y
    tracemalloc.start()
    n = sum(b.shape[0] for b in decode.stream(path, block_s=30.0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == pytest.approx(1200 * sr, abs=sr)
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_errors_have_reasons(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 50)
    image = tmp_path / "pic.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    cases = {
        empty: "empty file",
        text: "not a readable audio file",
        image: "no audio stream",
        tmp_path / "missing.wav": "cannot read",
    }
    for path, reason in cases.items():
        with pytest.raises(decode.DecodeError, match=reason):
            decode.load(path)


def test_truncated_file_keeps_decoded_audio(tmp_path):
    path = write_audio(tmp_path / "full.wav", tone(440, 3.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[: 44 + 16000 * 2])  # header + 1 s of samples
    assert decode.load(cut).shape[0] == pytest.approx(16000, abs=40)  # resampler filter delay


def test_zero_length_audio_is_an_error(tmp_path):
    path = tmp_path / "zero.wav"
    write_audio(tmp_path / "one.wav", tone(440, 0.01), 16000)
    data = (tmp_path / "one.wav").read_bytes()
    path.write_bytes(data[:44])  # a valid header with no samples
    with pytest.raises(decode.DecodeError):
        decode.load(path)


def test_too_long_is_refused(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(440, 2.0), 16000)
    with pytest.raises(decode.DecodeError, match="limit"):
        list(decode.stream(path, max_duration_s=1.0))


def test_resample_preserves_frequency():
    y = decode.resample(tone(1000, 1.0, sr=44100), orig_sr=44100, target_sr=16000)
    assert y.shape[0] == 16000
    assert abs(np.argmax(np.abs(np.fft.rfft(y))) - 1000) <= 1
