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


PROMPTS = [  # Asterisk prompts: targets and the near-duplicates that compete with them
    "agent-pass", "agent-user", "agent-incorrect", "auth-incorrect", "vm-reenterpassword",
    "conf-extended", "conf-nonextended", "conf-muted", "conf-unmuted", "confbridge-unmuted",
    "conf-now-unmuted", "conf-onlyperson", "conf-onlyone", "confbridge-only-participant",
    "enter-num-blacklist", "entr-num-rmv-blklist", "conf-locked", "vm-goodbye",
]  # fmt: skip


@pytest.fixture(scope="module")
def prompts_lib(tmp_path_factory, yamnet_model):
    root = shared("asterisk-en", "audio")
    folder = tmp_path_factory.mktemp("prompts")
    for name in PROMPTS:
        (folder / f"{name}.wav").symlink_to(next(root.rglob(f"{name}.wav")))
    lib = Library(tmp_path_factory.mktemp("prompts-data"), analyzers=[yamnet_model], music_analyzers=[])
    assert lib.index([str(folder)]).indexed == len(PROMPTS)
    yield lib
    lib.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("no longer muted", "confbridge-unmuted"),  # "longer" (a duration word) and "muted" are words said
        ("conference cannot extended", "conf-nonextended"),  # no "long recordings only" filter
        ("removed from the blacklist", "entr-num-rmv-blklist"),  # the recogniser wrote "black list"
        ("currently the only person", "conf-onlyperson"),  # all three words beat "currently" alone
        ("you are now muted", "conf-muted"),  # beats "now unmuted" and "no longer muted"
    ],
)
def test_spoken_queries_find_the_prompt(prompts_lib, query, expected):
    hits = prompts_lib.search(query, limit=3)
    assert hits and hits[0].path.endswith(f"/{expected}.wav"), [(h.path, h.why) for h in hits]
    assert "speech" in hits[0].kinds


def test_a_variant_match_is_marked_and_ranks_below_exact_words(prompts_lib):
    hit = prompts_lib.search("removed from the blacklist", limit=1)[0]
    said = next(w for w in hit.why if w.startswith("says at")).lower()
    assert "\u00abblack\u00bb \u00ablist\u00bb" in said and "\u00abremoved\u00bb" in said
    # the prompt saying "blacklisted" itself beats the one whose "black list" only sounds alike
    hits = prompts_lib.search("number to be blacklisted", limit=2)
    assert [h.path.rsplit("/", 1)[1] for h in hits] == ["enter-num-blacklist.wav", "entr-num-rmv-blklist.wav"]
    assert hits[0].evidence["transcript"] > hits[1].evidence["transcript"] + 50  # a whole word apart


def test_a_one_word_prompt_is_transcribed(prompts_lib):
    """Under a second of speech (one YAMNet frame) is enough to run the recogniser."""
    cat = prompts_lib.store.catalog
    item = next(r for r in cat.items() if r.path.endswith("/vm-goodbye.wav"))
    assert item.duration_s < 1.5
    assert "goodbye" in " ".join(p["text"] for p in cat.passages_of(item.id)).lower()
