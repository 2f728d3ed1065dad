"""Fuzzing the decoder with mutated real files: every input decodes or raises DecodeError with a reason.

The mutations (bit flips, truncations, header field edits with Ogg CRCs recomputed, magic edits,
splices between formats) come from ``scripts/fuzz_decode.py``, driven here by Hypothesis so that a
failing input shrinks to a small one; ``python scripts/fuzz_decode.py --inputs 100000`` runs the same
mutator much longer, each input in a worker process with a time bound. Inputs are deterministic
(``derandomize``) so the suite's time and outcome do not vary between runs.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.fuzz_decode import _fields, _fix_ogg_crcs, check_decode, mutate, seed_files
from tests.conftest import time_bound, tone, write_audio

PER_INPUT_S = 5.0  # one small file decodes in milliseconds; anything near this bound is a hang
FORMATS = ["wav", "ogg", "flac", "mp3"]
FUZZ = settings(
    max_examples=450,
    deadline=None,  # the alarm below bounds each input instead
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(workdir):
    return seed_files(workdir)


def decode_bytes(workdir, data: bytes, ext: str) -> tuple[str, str]:
    path = workdir / f"input.{ext}"
    path.write_bytes(data)
    with time_bound(PER_INPUT_S):
        return check_decode(str(path))


def test_seeds_decode(seeds, workdir):
    for ext in FORMATS:
        kind, detail = decode_bytes(workdir, seeds[ext], ext)
        assert kind == "ok", (ext, detail)


@pytest.mark.parametrize("ext", FORMATS)
@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_mutated_files_decode_or_fail_with_a_reason(seeds, workdir, ext, rnd):
    data, desc = mutate(seeds[ext], rnd, [seeds[e] for e in FORMATS])
    kind, detail = decode_bytes(workdir, data, ext)
    assert kind != "crash", f"{ext} {desc}: {detail}"


@pytest.mark.parametrize("ext", FORMATS)
def test_every_header_field_at_its_extremes(seeds, workdir, ext):
    """Each parsed header field (RIFF/fmt sizes, channels, rate; Ogg page and Vorbis header fields with
    the CRC fixed; FLAC STREAMINFO; MP3/FLAC frame headers) set to 0, 1, all ones and a bit flip."""
    data = seeds[ext]
    tried = 0
    for offset, fmt in _fields(data)[:80]:
        size = struct.calcsize(fmt)
        old = struct.unpack_from(fmt, data, offset)[0]
        bits = size * 8
        for value in (0, 1, (1 << bits) - 1, old ^ (1 << (bits - 1)), old ^ 1):
            if fmt[-1].islower():
                value = value - (1 << bits) if value >= 1 << (bits - 1) else value
            buf = bytearray(data)
            struct.pack_into(fmt, buf, offset, value)
            if ext == "ogg":
                _fix_ogg_crcs(buf)
            kind, detail = decode_bytes(workdir, bytes(buf), ext)
            assert kind != "crash", f"{ext} field@{offset}{fmt}={value}: {detail}"
            tried += 1
    assert tried >= 20


@pytest.mark.parametrize("ext", FORMATS)
def test_truncated_anywhere_in_the_headers(seeds, workdir, ext):
    data = seeds[ext]
    for n in [*range(1, 96), *range(96, 1024, 37), len(data) // 2, len(data) - 1]:
        kind, detail = decode_bytes(workdir, data[:n], ext)
        assert kind != "crash", f"{ext} cut at {n}: {detail}"
        if n < 24:
            assert kind == "DecodeError", f"{ext} cut at {n} decoded: {detail}"


def test_reasons_found_by_fuzzing(workdir, seeds):
    """Crashes the fuzzer found, now reasons: an unknown PCM width (no decoder), an absurd sample rate
    (the resampler took 10 s and 1 GB to set up, or 1 Hz made 14 kB into hours of audio)."""
    wav = bytearray(seeds["wav"])
    assert wav[12:16] == b"fmt "
    no_decoder = bytearray(wav)
    struct.pack_into("<H", no_decoder, 34, 144)  # 144 bits per sample
    assert decode_bytes(workdir, bytes(no_decoder), "wav") == (
        "DecodeError",
        "probe: unsupported audio codec (no decoder for this stream)",
    )
    fast = bytearray(wav)
    struct.pack_into("<I", fast, 24, 860_113_216)
    kind, detail = decode_bytes(workdir, bytes(fast), "wav")
    assert kind == "DecodeError" and "unsupported sample rate (860113216 Hz" in detail
    slow = bytearray(wav)
    struct.pack_into("<I", slow, 24, 1)  # 1 Hz: 14 kB would expand to 3.9 hours at 16 kHz
    kind, detail = decode_bytes(workdir, bytes(slow), "wav")
    assert kind == "DecodeError" and "unsupported sample rate (1 Hz" in detail


def test_mp3s_joined_at_different_rates_decode_whole(workdir):
    """Two MP3s concatenated (as joiners do): a tag between them that the codec rejects, then frames at
    another sample rate. Decoding used to stop at the tag (half the audio lost); past it, PyAV's
    resampler raised ValueError at the first frame of the second file."""
    from soundscope import decode

    a = write_audio(workdir / "a.mp3", tone(440, 1.0, sr=8000), 8000).read_bytes()
    b = write_audio(workdir / "b.mp3", tone(660, 1.0, sr=22050), 22050).read_bytes()
    joined = workdir / "joined.mp3"
    joined.write_bytes(a + b)
    y = decode.load(joined)
    assert y.shape[0] == pytest.approx(2 * 16000, abs=3000)  # encoder padding at each end
    assert np.abs(y[-8000:]).max() > 0.1  # the second file's audio is there


def test_ogg_with_a_negative_granule_position_has_a_plausible_duration(workdir, seeds):
    from soundscope import decode

    ogg = bytearray(seeds["ogg"])
    last = ogg.rfind(b"OggS")
    struct.pack_into("<q", ogg, last + 6, -(1 << 40))
    _fix_ogg_crcs(ogg)
    path = workdir / "negative.ogg"
    path.write_bytes(bytes(ogg))
    info = decode.probe(path)
    assert info.duration_s >= 0
