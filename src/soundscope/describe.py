"""Describe: an item's analysis -> its kind (music / speech / sound) and a short plain-words description.

A description such as ``"dog, bark, animal; loud; 5.0 s"`` is stored, shown with results,
full-text indexed and embedded with the text encoder, so it doubles as searchable text.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def kind_of(scores: np.ndarray, labels: Sequence[str]) -> str:
    """'music', 'speech' or 'sound' from item-level YAMNet probabilities."""
    idx = {name: i for i, name in enumerate(labels)}
    music = float(scores[idx["Music"]]) if "Music" in idx else 0.0
    speech = max(
        (float(scores[idx[n]]) for n in ("Speech", "Narration, monologue", "Conversation") if n in idx), default=0.0
    )
    if max(music, speech) < 0.5:
        return "sound"
    return "music" if music >= speech else "speech"


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


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def describe(
    *, kind: str, labels: list[tuple[str, float]], features: dict[str, Any], tags: dict[str, str] | None = None
) -> str:
    """One line: specific labels first, then loudness, duration, and title/artist when tagged."""
    names = [short_label(name) for name, _ in labels if name != "Silence"]
    specific = [short_label(name) for name, _ in labels if name not in GENERIC]
    generic = [n for n in names if n not in specific and n != kind]
    words = list(dict.fromkeys(specific + generic))[:4]
    head = ", ".join(([kind] if kind in ("music", "speech") else []) + words) or kind
    parts = [head]
    loud = loudness_word(float(features.get("loudness_dbfs", -30.0)))
    if loud:
        parts.append(loud)
    parts.append(format_duration(float(features.get("duration_s", 0.0))))
    tags = tags or {}
    title = " – ".join(v for v in (tags.get("artist"), tags.get("title")) if v)
    if title:
        parts.append(title)
    return "; ".join(parts)
