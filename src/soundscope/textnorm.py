"""Text normalisation shared by indexing and querying: case, width, and Chinese word segmentation.

FTS5's unicode61 tokenizer splits on spaces and punctuation, so Chinese text (written without
spaces) is segmented into words with jieba before it is indexed or matched; both sides go
through :func:`index_text`, so the tokens agree.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def segment(text: str) -> list[str]:
    """Words of ``text``: jieba for runs of Chinese, unicode word characters otherwise."""
    text = unicodedata.normalize("NFKC", text).lower()
    if not has_cjk(text):
        return _WORD.findall(text)
    return [w for w in _jieba().lcut(text) if _WORD.fullmatch(w)]


def index_text(text: str) -> str:
    """The space-separated form of ``text`` stored in (and matched against) the FTS index."""
    return " ".join(segment(text))


def fts_query(text: str, *, mode: str = "or") -> str:
    """An FTS5 MATCH expression for free text: each word quoted (no operators leak), joined by OR/AND."""
    words = [w for w in segment(text) if len(w) > 1 or has_cjk(w) or w.isdigit()]
    words = [w for w in dict.fromkeys(words) if w not in STOPWORDS]
    if not words:
        return ""
    joiner = " OR " if mode == "or" else " AND "
    return joiner.join('"' + w.replace('"', '""') + '"' for w in words)


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "by",
        "from",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "me",
        "my",
        "i",
        "you",
        "your",
        "we",
        "our",
        "they",
        "their",
        "he",
        "she",
        "his",
        "her",
        "what",
        "which",
        "who",
        "where",
        "when",
        "how",
        "find",
        "show",
        "give",
        "play",
        "search",
        "sound",
        "sounds",
        "audio",
        "clip",
        "clips",
        "recording",
        "recordings",
        "file",
        "files",
        "track",
        "tracks",
        "like",
        "的",
        "了",
        "和",
        "是",
        "在",
        "我",
        "给",
        "一",
        "个",
        "一首",
        "首",
        "一些",
        "声音",
        "音频",
        "请",
        "找",
        "推荐",
    ]
)
