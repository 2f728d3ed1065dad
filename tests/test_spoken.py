"""Spoken content end to end: only speech is transcribed, hits point to the moment, CLI shows it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from soundscope import decode
from soundscope.api import Library
from tests.conftest import DEMO, shared, write_audio


def test_only_speech_is_transcribed(demo_lib):
    cat = demo_lib.store.catalog
    kinds_with_text = {r.kind for r in cat.items() if cat.passages_of(r.id)}
    assert kinds_with_text == {"speech"}
    assert not any(cat.passages_of(r.id) for r in cat.items() if "/sounds/" in r.path or "/music/" in r.path)
    assert cat.stats()["transcribed_items"] >= 8


def test_spoken_hit_points_to_the_passage_and_marks_words(demo_lib):
    hit = demo_lib.search("turnips and carrots", limit=1)[0]
    assert hit.path.endswith("1089-134686-0000.flac")
    assert "speech" in hit.to_dict()["matched"]
    said = next(w for w in hit.why if w.startswith("says at"))
    assert "\u00abturnips\u00bb" in said.lower() and "\u00abcarrots\u00bb" in said.lower()
    assert 1.0 <= hit.start <= 6.0  # the second sentence, not the file start


def test_sound_queries_still_find_sounds(demo_lib):
    top = demo_lib.search("dog barking", limit=2)
    assert all("/sounds/dog/" in r.path for r in top)


def test_moment_in_a_long_recording(tmp_path, yamnet_model):
    """Prompts placed at known times in a 4-minute recording: the hit's start is the right moment."""
    root = shared("asterisk-en", "audio")
    sr = 16000
    y = np.zeros(240 * sr, np.float32)
    rng = np.random.default_rng(0)
    y += rng.normal(0, 0.002, y.shape[0]).astype(np.float32)
    placed = {"vm-goodbye": 20.0, "conf-enteringno": 95.0, "vm-intro": 170.0}
    for name, at in placed.items():
        clip = decode.load(next(root.rglob(f"{name}.wav")))
        y[int(at * sr) : int(at * sr) + clip.shape[0]] += clip
    path = write_audio(tmp_path / "call.flac", y, sr)
    with Library(tmp_path / "data", analyzers=[yamnet_model], music_analyzers=[]) as lib:
        report = lib.index([path])
        assert report.indexed == 1
        hit = lib.search("leave your message after the tone", limit=1)[0]
        assert abs(hit.start - 170.0) < 2.0, hit.why
        hit = lib.search("entering conference number", limit=1)[0]
        assert abs(hit.start - 95.0) < 2.0, hit.why


def test_transcript_command(demo_lib):
    item = demo_lib.store.catalog.item_by_path(str(DEMO / "speech" / "1089-134686-0000.flac"))
    out = subprocess.run(
        [sys.executable, "-m", "soundscope.cli", "transcript", str(item.id), "--data-dir", str(demo_lib.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0
    assert out.stdout.startswith("[00:00 - 00:0") and "stew" in out.stdout.lower()
    js = subprocess.run(
        [
            sys.executable,
            "-m",
            "soundscope.cli",
            "transcript",
            str(item.id),
            "--json",
            "--data-dir",
            str(demo_lib.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    passages = json.loads(js.stdout)
    assert passages[0]["start"] < passages[-1]["start"] and passages[0]["language"] == "en"


@pytest.mark.parametrize("query", ["stew for dinner"])
def test_search_cli_shows_mmss(demo_lib, query):
    out = subprocess.run(
        [sys.executable, "-m", "soundscope.cli", "search", query, "-n", "1", "--data-dir", str(demo_lib.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert " 00:0" in out.stdout.splitlines()[0]
