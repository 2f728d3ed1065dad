"""Metadata: title, artist, album, genre, year, comment from file tags (mutagen) and the file name.

Only a whitelist of text fields is kept (cover art and binary frames are dropped) and each value
is capped in length, so a malformed tag can never bloat the catalog.
"""

from __future__ import annotations

import re
from pathlib import Path

KEYS = {
    "title": "title", "artist": "artist", "album": "album", "albumartist": "album_artist",
    "album_artist": "album_artist", "genre": "genre", "date": "year", "year": "year", "originaldate": "year",
    "comment": "comment", "description": "comment", "composer": "composer", "performer": "performer",
    "bpm": "bpm", "language": "language",
}  # fmt: skip
MAX_LEN = 300


def _clean(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value if isinstance(v, (str, int, float)))
    text = str(value).replace("\r", " ").replace("\x00", " ").strip()
    return " ".join(text.split())[:MAX_LEN]


def from_tags(raw: dict[str, object]) -> dict[str, str]:
    """Normalise a raw tag mapping (any case, lists allowed) to our keys; year is the 4-digit year."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = KEYS.get(str(key).lower())
        text = _clean(value) if name else ""
        if not text:
            continue
        if name == "year":
            m = re.search(r"\b(1[89]\d\d|20\d\d)\b", text)
            if not m:
                continue
            text = m.group(1)
        out.setdefault(name, text)
    return out


def read_tags(path: str | Path) -> dict[str, str]:
    """Tags read by mutagen (empty when the format has none or mutagen cannot parse it)."""
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
    except Exception:  # mutagen raises many types on malformed files; tags are optional
        return {}
    if f is None or not getattr(f, "tags", None):
        return {}
    try:
        return from_tags(dict(f.tags))
    except Exception:
        return {}


_SEP = re.compile(r"\s+-\s+|_-_")


def from_filename(path: str | Path) -> dict[str, str]:
    """'Artist - Title.mp3' or 'Artist_-_Title.ogg' -> artist and title; otherwise the name as title."""
    stem = Path(path).stem
    parts = [p.replace("_", " ").strip() for p in _SEP.split(stem, maxsplit=1)]
    if len(parts) == 2 and all(parts):
        return {"artist": parts[0], "title": parts[1]}
    name = re.sub(r"[_]+", " ", stem).strip()
    return {"title": name} if re.search(r"[^\W\d_]{3,}", name) else {}


def metadata(path: str | Path, container_tags: dict[str, str] | None = None) -> dict[str, str]:
    """Best available metadata: mutagen tags, then container tags (PyAV), then the file name."""
    out = read_tags(path)
    for key, value in from_tags(dict(container_tags or {})).items():
        out.setdefault(key, value)
    guessed = from_filename(path)
    if "title" not in out and "title" in guessed:
        out["title"] = guessed["title"]
        if "artist" in guessed:
            out.setdefault("artist", guessed["artist"])
    return out
