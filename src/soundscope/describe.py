"""Describe: an item's analysis -> its kind (music / speech / sound) and a short plain-words description.

A description such as ``"dog, bark, animal; loud; 5.0 s"`` is stored, shown with results,
full-text indexed and embedded with the text encoder, so it doubles as searchable text.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

# AudioSet labels too generic to be worth saying when something more specific is present.
GENERIC = frozenset(
    {
        "Animal",
        "Domestic animals, pets",
        "Vehicle",
        "Music",
        "Sound effect",
        "Inside, small room",
        "Outside, rural or natural",
        "Outside, urban or manmade",
        "Inside, large room or hall",
        "Silence",
        "Speech",
        "Environmental noise",
        "Noise",
    }
)


def top_labels(scores: np.ndarray, labels: Sequence[str], *, k: int = 5, min_p: float = 0.1) -> list[tuple[str, float]]:
    """The ``k`` most probable labels above ``min_p``, as (name, probability), best first."""
    order = np.argsort(-scores)[:k]
    return [(labels[i], float(scores[i])) for i in order if scores[i] >= min_p]


def kind_of(means: np.ndarray, labels: Sequence[str], *, is_music: bool = False) -> str:
    """'music', 'speech' or 'sound' from YAMNet probabilities averaged over the file's frames.

    ``is_music`` (the music analyzers ran) settles it unless speech clearly dominates.
    """
    idx = {name: i for i, name in enumerate(labels)}
    music = float(means[idx["Music"]]) if "Music" in idx else 0.0
    speech = max(
        (float(means[idx[n]]) for n in ("Speech", "Narration, monologue", "Conversation") if n in idx), default=0.0
    )
    if speech >= 0.5 and speech > music:
        return "speech"
    if is_music or music >= 0.3:
        return "music"
    return "speech" if speech >= 0.3 else "sound"


def sound_dominates(scores: np.ndarray, labels: Sequence[str], *, least: float = 0.3) -> bool:
    """Whether a clip holds a clear sound event beside any music, from its YAMNet probabilities
    (n_labels,): its most probable label outside the ontology's Music subtree and :data:`GENERIC` reaches
    ``least``. A dog barking over a radio is searched as a dog (measured with ESC-10 clips over music,
    ``soundscope eval --section mixed``); a song with nothing else in it as music."""
    labels = tuple(labels)
    if "Music" not in labels:
        return True
    other = _sound_columns(labels)
    return bool(other.size) and float(np.max(np.asarray(scores)[other])) >= least


@lru_cache(maxsize=4)
def _sound_columns(labels: tuple[str, ...]) -> np.ndarray:
    """(k,) columns of ``labels`` outside the Music subtree and :data:`GENERIC`: the sound events (once
    per vocabulary; query by example asks this of every 5 s segment of a stored track)."""
    from .ontology import label_tree

    musical = set(np.asarray(label_tree(labels).groups[labels.index("Music")]).tolist())
    return np.array([i for i, name in enumerate(labels) if i not in musical and name not in GENERIC], np.int64)


def short_label(name: str) -> str:
    """First phrasing of a label, lower case: 'Baby cry, infant cry' -> 'baby cry'."""
    return name.split(",")[0].strip().lower()


def loudness_word(dbfs: float) -> str:
    if dbfs < -40:
        return "very quiet"
    if dbfs < -28:
        return "quiet"
    if dbfs > -14:
        return "loud"
    return ""


def format_clock(seconds: float) -> str:
    """A moment as mm:ss (or h:mm:ss)."""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


TEMPO_WORDS = ((0, 76, "slow"), (76, 108, "moderate"), (108, 135, "upbeat"), (135, 1000, "fast"))
VOCAL_TAGS = {"female vocal": "female vocals", "female voice": "female vocals", "female vocalists": "female vocals",
              "female vocalist": "female vocals", "female": "female vocals", "woman": "female vocals",
              "male vocal": "male vocals", "male voice": "male vocals", "male vocalists": "male vocals",
              "male": "male vocals", "man": "male vocals", "choir": "choir", "choral": "choir", "opera": "opera",
              "vocal": "vocals", "vocals": "vocals", "singing": "vocals", "voice": "vocals",
              "no vocals": "instrumental", "no vocal": "instrumental", "no voice": "instrumental",
              "instrumental": "instrumental"}  # fmt: skip
SKIP_TAGS = {
    "slow",
    "fast",
    "loud",
    "quiet",
    "soft",
    "beat",
    "beats",
    "00s",
    "90s",
    "80s",
    "70s",
    "60s",
    "weird",
    "classic",
    "solo",
    "catchy",
    "sexy",
    "party",
}  # said through descriptors, or too vague to print


def tempo_word(bpm: float) -> str:
    return next(word for lo, hi, word in TEMPO_WORDS if lo <= bpm < hi)


def _music_words(music: dict[str, Any], music_tags: list[tuple[str, float]], dbfs: float) -> list[str]:
    words: list[str] = []
    bpm, conf = float(music.get("tempo_bpm") or 0.0), float(music.get("tempo_confidence") or 0.0)
    if bpm > 0 and conf >= 0.2:
        words.append(f"{tempo_word(bpm)} ({bpm:.0f} BPM)")
    loud = loudness_word(dbfs)
    if loud:
        words.append(loud)
    ranked = sorted(music_tags, key=lambda t: -t[1])
    genre = [t.lower() for t, _ in ranked if t.lower() not in VOCAL_TAGS and t.lower() not in SKIP_TAGS]
    vocals = [VOCAL_TAGS[t.lower()] for t, _ in ranked if t.lower() in VOCAL_TAGS]
    words.extend(dict.fromkeys(genre[:4]))
    if vocals:
        words.append(vocals[0])
    if music.get("key") and float(music.get("key_confidence") or 0.0) >= 0.5:
        words.append(f"{music['key']} {music.get('mode', '')}".strip())
    return words


def describe(
    *,
    kind: str,
    labels: list[tuple[str, float]],
    features: dict[str, Any],
    tags: dict[str, str] | None = None,
    music_tags: list[tuple[str, float]] | None = None,
) -> str:
    """One line in plain words.

    Sounds: specific labels first, then loudness and duration (``"dog, bark, animal; quiet; 5.0 s"``).
    Music: tempo, loudness, tags, vocals, then duration and artist – title
    (``"music, slow (66 BPM), quiet, classical, piano, instrumental; 2:31; Brahms – Hungarian Dance No. 5"``).
    """
    dbfs = float(features.get("loudness_dbfs", -30.0))
    names = [short_label(name) for name, _ in labels if name != "Silence"]
    specific = [short_label(name) for name, _ in labels if name not in GENERIC]
    generic = [n for n in names if n not in specific and n != kind]
    if kind == "music" and (features.get("music") or music_tags):
        head = ", ".join(["music", *_music_words(features.get("music") or {}, music_tags or [], dbfs)])
        parts = [head]
    else:
        words = list(dict.fromkeys(specific + generic))[:4]
        parts = [", ".join(([kind] if kind in ("music", "speech") else []) + words) or kind]
        loud = loudness_word(dbfs)
        if loud:
            parts.append(loud)
    parts.append(format_duration(float(features.get("duration_s", 0.0))))
    tags = tags or {}
    title = " – ".join(v for v in (tags.get("artist"), tags.get("title")) if v)
    if title:
        parts.append(title)
    return "; ".join(parts)
