"""Captions: an item's analysis -> one fluent sentence in English and one in Chinese, from a language model.

Optional (``soundscope caption``, ``soundscope index --captions``; needs ``$SOUNDSCOPE_LLM_URL``, see
:mod:`soundscope.llm`). The template description stays what search uses; a caption is stored beside
it in the catalog table ``captions(item_id, language, text, model, at)`` and shown by ``show``.

A caption must never state what the analysis does not support. The model sees only the facts
(labels with probabilities, music tags, kind, duration, tempo, key, loudness, tags, a transcript
excerpt), and then every sound noun in its sentence is checked: a word that names a model label or a
vocabulary entry (English words of the label phrasings, Chinese phrasings) must name one of the
item's own labels (or a tag, the transcript, the kind, a measured descriptor). A clause holding an
unsupported noun is dropped; a caption left empty is not stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from . import query as _query
from . import textnorm
from .describe import format_clock, format_duration, loudness_word
from .llm import LLMClient, LLMError, _obj, _text

CAPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "en": {"type": "string", "maxLength": 240},
        "zh": {"type": "string", "maxLength": 120},
    },
    "required": ["en", "zh"],
    "additionalProperties": False,
}
CAPTION_SYSTEM = (
    "You write captions for an audio library. Given the analysis of one recording, write one fluent "
    "sentence in English (en) and one in Simplified Chinese (zh) describing what it sounds like. "
    "Mention only sounds, instruments and facts listed in the analysis; never invent others."
)
LABEL_MIN_P = 0.1  # a label the item carries at this item-level probability supports its words
ALWAYS_OK = frozenset({"sound", "audio", "recording", "clip", "track", "piece", "background", "tone", "note"})
_WORD = re.compile(r"[a-z][a-z'-]+")
_CLAUSE_EN = re.compile(r"(?<=[,;.!?])\s+|\s+(?=\band\b|\bwith\b|\bwhile\b)")
_CLAUSE_ZH = re.compile(r"(?<=[，。；、！？,;])")


def _lemmas(text: str) -> set[str]:
    return {_query.lemma(w) for w in _WORD.findall(text.lower())} - textnorm.STOPWORDS


@lru_cache(maxsize=1)
def vocabulary() -> tuple[frozenset[str], dict[str, str]]:
    """(English sound nouns: lemmas of every label phrasing and curated vocabulary entry; Chinese phrase ->
    its English rendering). What a caption's words are checked against."""
    en: set[str] = set()
    zh: dict[str, str] = {}
    for label, phrasings in _query.label_phrasings().items():
        for p in phrasings:
            if textnorm.has_cjk(p):
                if len(p) >= 2:
                    zh.setdefault(p, label)
            else:
                en |= _lemmas(p)
    v = _query.vocabulary()
    for key, entry in v.zh.items():
        if len(key) >= 2 and entry.section not in ("tempo", "loudness", "vocals", "other"):
            zh.setdefault(key, entry.en)
    for entry in v.en.values():
        if entry.section not in ("tempo", "loudness", "vocals", "other", "mood"):
            en |= _lemmas(entry.en)
    return frozenset(en - ALWAYS_OK), zh


def facts(info: dict[str, Any]) -> dict[str, Any]:
    """What a caption may say about an item (from :meth:`Library.show`): kind, duration, labels per
    model (probability >= :data:`LABEL_MIN_P`), descriptors, tags and a transcript excerpt."""
    feats = info.get("features") or {}
    out: dict[str, Any] = {"kind": info.get("kind"), "duration": format_duration(float(info.get("duration_s") or 0))}
    out["labels"] = {}  # by what they are, not by model name (a model name is nothing to caption)
    for space, labels in (info.get("labels") or {}).items():
        group = "music tags" if space.startswith("musicnn") else "sounds"
        out["labels"].setdefault(group, []).extend([n, p] for n, p in labels if p >= LABEL_MIN_P)
    music = feats.get("music") or {}
    if float(music.get("tempo_bpm") or 0) > 0 and float(music.get("tempo_confidence") or 0) >= 0.2:
        out["tempo_bpm"] = round(float(music["tempo_bpm"]))
    if music.get("key") and float(music.get("key_confidence") or 0) >= 0.5:
        out["key"] = f"{music['key']} {music.get('mode', '')}".strip()
    if feats.get("loudness_dbfs") is not None:
        out["loudness"] = loudness_word(float(feats["loudness_dbfs"])) or "moderate"
    if info.get("description"):
        out["description"] = info["description"]
    tags = {k: v for k, v in (info.get("tags") or {}).items() if k in ("title", "artist", "album", "genre", "year")}
    if tags:
        out["tags"] = tags
    said = " ".join(p["text"] for p in (info.get("transcript") or []))[:300]
    if said:
        first = (info.get("transcript") or [{}])[0]
        out["transcript"] = f"{format_clock(float(first.get('start', 0)))}: {said}"
    return out


def supported_words(f: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(English lemmas, English label names) the facts support: the labels with their phrasings, tags,
    transcript, kind and the descriptor words (slow/fast from the tempo, quiet/loud from the loudness)."""
    phr = _query.label_phrasings()
    words: set[str] = set(ALWAYS_OK)
    labels: set[str] = set()
    for items in f.get("labels", {}).values():
        for name, _p in items:
            labels.add(name)
            for p in phr.get(name, [name]):
                if not textnorm.has_cjk(p):
                    words |= _lemmas(p)
            words |= _lemmas(name)
    words |= _lemmas(" ".join(str(v) for v in (f.get("tags") or {}).values()))
    words |= _lemmas(f.get("transcript", ""))
    kind = f.get("kind") or ""
    words |= {kind, *({"music", "song", "tune", "melody"} if kind == "music" else ())}
    words |= {"speech", "talk", "voice", "speak", "speaker", "word"} if kind == "speech" else set()
    words |= {"quiet", "soft", "gentle"} if "quiet" in f.get("loudness", "") else set()
    words |= {"loud"} if f.get("loudness") == "loud" else set()
    bpm = f.get("tempo_bpm")
    if isinstance(bpm, int | float):
        words |= {"slow"} if bpm <= _query.SLOW_BPM else {"fast"} if bpm >= _query.FAST_BPM else set()
    return words, labels


def check_english(text: str, words: set[str]) -> tuple[str, list[str]]:
    """``text`` less the clauses naming a sound the facts do not support; (kept text, dropped nouns)."""
    nouns, _ = vocabulary()
    kept: list[str] = []
    dropped: list[str] = []
    for clause in _CLAUSE_EN.split(text.strip()):
        bad = sorted((_lemmas(clause) & nouns) - words)
        if bad:
            dropped += bad
        elif clause.strip() and clause.strip().lower() not in (k.lower() for k in kept):
            kept.append(clause.strip())
    out = " ".join(kept).strip(" ,;")
    if out and out[-1] not in ".!?":
        out += "."
    return (out[0].upper() + out[1:]) if out else "", dropped


def check_chinese(text: str, words: set[str], labels: set[str]) -> tuple[str, list[str]]:
    """The Chinese counterpart of :func:`check_english`: each vocabulary phrase found in a clause
    (longest first) must render to a supported label or word."""
    _, zh = vocabulary()
    longest = max((len(k) for k in zh), default=1)
    kept: list[str] = []
    dropped: list[str] = []
    for clause in _CLAUSE_ZH.split(text.strip()):
        i, bad = 0, []
        while i < len(clause):
            for n in range(min(longest, len(clause) - i), 1, -1):
                piece = clause[i : i + n]
                en = zh.get(piece)
                if en is not None:
                    if en not in labels and not (_lemmas(en) & words):
                        bad.append(piece)
                    i += n
                    break
            else:
                i += 1
        if bad:
            dropped += bad
        elif clause.strip() and clause.strip() not in kept:
            kept.append(clause.strip())
    out = "".join(kept).rstrip("，、；,;")
    if out and out[-1] not in "。！？":
        out += "。"
    return out if len(out) > 1 else "", dropped


def fluent(text: str) -> bool:
    """Not a degenerate loop ("guitar, guitar, guitar, ..."): most words (characters, for Chinese) differ."""
    units = _WORD.findall(text.lower()) or [c for c in text if textnorm.has_cjk(c)]
    return len(units) < 6 or len(set(units)) >= 0.6 * len(units)


def _validate(value: Any) -> dict[str, str]:
    d = _obj(value)
    en, zh = _text(d.get("en"), "en", 240), _text(d.get("zh"), "zh", 120)
    en = en if en and fluent(en) else None
    zh = zh if zh and fluent(zh) else None
    if not en and not zh:
        raise ValueError("no fluent caption in either language")
    if zh and not textnorm.has_cjk(zh):
        zh = None  # "Chinese" with no Chinese in it
    return {"en": en or "", "zh": zh or ""}


def caption_messages(f: dict[str, Any]) -> list[dict[str, str]]:
    import json

    return [
        {"role": "system", "content": CAPTION_SYSTEM},
        {"role": "user", "content": "Analysis:\n" + json.dumps(f, ensure_ascii=False)},
    ]


def caption_one(client: LLMClient, info: dict[str, Any]) -> dict[str, Any]:
    """{"en", "zh", "dropped"} for one item's :meth:`Library.show` record (raises :class:`LLMError`)."""
    f = facts(info)
    got = client.chat_json(caption_messages(f), CAPTION_SCHEMA, _validate, task="caption", max_tokens=160)
    words, labels = supported_words(f)
    en, bad_en = check_english(got["en"], words) if got["en"] else ("", [])
    zh, bad_zh = check_chinese(got["zh"], words, labels) if got["zh"] else ("", [])
    return {"en": en, "zh": zh, "dropped": bad_en + bad_zh}


# -- the catalog table ------------------------------------------------------------------------------


def put_captions(catalog, item_id: int, texts: dict[str, str], model: str) -> None:
    with catalog.transaction() as conn:
        for lang, text in texts.items():
            if text:
                conn.execute(
                    "INSERT OR REPLACE INTO captions(item_id, language, text, model, at) VALUES(?,?,?,?,?)",
                    (item_id, lang, text, model, time.time()),
                )


def captions_of(catalog, item_id: int) -> dict[str, dict[str, Any]]:
    """language -> {"text", "model", "at"} for one item ({} when it has none)."""
    rows = catalog.conn.execute("SELECT language, text, model, at FROM captions WHERE item_id=?", (item_id,))
    return {r[0]: {"text": r[1], "model": r[2], "at": r[3]} for r in rows}


def _uncaptioned(catalog) -> list[int]:
    rows = catalog.conn.execute(
        "SELECT id FROM items WHERE id NOT IN (SELECT item_id FROM captions GROUP BY item_id HAVING COUNT(*) >= 2) "
        "ORDER BY id"
    )
    return [int(r[0]) for r in rows]


def caption_items(lib, item_ids: Iterable[int] | None = None, *, force: bool = False) -> dict[str, Any]:
    """Caption ``item_ids`` (default: every item without both captions; ``force``: again). A failure
    (model down, junk, nothing left after the check) is reported per item and the run goes on.
    Raises ``ValueError`` when no language model is configured."""
    client = lib.rewriter.client if lib.rewriter is not None else None
    if client is None:
        raise ValueError("no language model configured: set SOUNDSCOPE_LLM_URL (see soundscope.llm)")
    cat = lib.store.catalog
    ids = list(item_ids) if item_ids is not None else ([r.id for r in cat.items()] if force else _uncaptioned(cat))
    done, failed, dropped = 0, [], {}
    for item_id in ids:
        try:
            out = caption_one(client, lib.show(item_id))
        except KeyError:
            failed.append({"id": item_id, "reason": "no such item"})
            continue
        except LLMError as exc:
            failed.append({"id": item_id, "reason": str(exc)})
            continue
        if out["dropped"]:
            dropped[item_id] = out["dropped"]
        if not out["en"] and not out["zh"]:
            why = "every clause named something the analysis does not support" if out["dropped"] else "nothing said"
            failed.append({"id": item_id, "reason": why})
            continue
        put_captions(cat, item_id, {"en": out["en"], "zh": out["zh"]}, client.model)
        done += 1
    return {"captioned": done, "failed": failed, "dropped": dropped, "model": client.model}
