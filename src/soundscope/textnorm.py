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
_APOSTROPHE = re.compile(r"(\w)['\u2019](\w)")


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
    text = _APOSTROPHE.sub(r"\1\2", unicodedata.normalize("NFKC", text).lower())  # that's -> thats
    if not has_cjk(text):
        return _WORD.findall(text)
    return [w for w in _jieba().lcut(text) if _WORD.fullmatch(w)]


def _with_number_words(words: list[str]) -> list[str]:
    """Each run of digits is followed by its English words ("8" -> "8 eight"), so either form matches."""
    out: list[str] = []
    for w in words:
        out.append(w)
        if w.isdigit() and len(w) <= 12:
            from .wer import number_words

            out.extend(number_words(int(w)).split())
    return out


def index_text(text: str) -> str:
    """The space-separated form of ``text`` stored in (and matched against) the FTS index."""
    return " ".join(_with_number_words(segment(text)))


def query_terms(text: str) -> list[list[str]]:
    """The query's searchable terms, each a list of alternative index tokens (a number: digits or words)."""
    words = [w for w in segment(text) if (len(w) > 1 or has_cjk(w) or w.isdigit()) and w not in STOPWORDS]
    terms = []
    for w in dict.fromkeys(words):
        if w.isdigit() and len(w) <= 12:
            from .wer import number_words

            terms.append([w, number_words(int(w))])
        else:
            terms.append([w])
    return terms


def quote(phrase: str) -> str:
    """``phrase`` as one FTS5 string (no operators leak)."""
    return '"' + phrase.replace('"', '""') + '"'


def fts_query(text: str, *, mode: str = "or") -> str:
    """An FTS5 MATCH expression for free text: each word quoted (no operators leak), joined by OR
    (any word) or AND (every word). A number matches as digits or as words: ("8" OR "eight")."""
    words = [w for w in segment(text) if (len(w) > 1 or has_cjk(w) or w.isdigit()) and w not in STOPWORDS]
    groups = []
    for w in dict.fromkeys(words):
        if w.isdigit() and len(w) <= 12:
            from .wer import number_words

            groups.append(f"({quote(w)} OR {quote(number_words(int(w)))})")
        else:
            groups.append(quote(w))
    return (" OR " if mode == "or" else " AND ").join(groups)


STOPWORDS = frozenset(
    [
        "there",
        "would",
        "could",
        "should",
        "will",
        "shall",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "not",
        "but",
        "if",
        "then",
        "so",
        "than",
        "too",
        "very",
        "can",
        "just",
        "about",
        "into",
        "over",
        "up",
        "out",
        "part",
        "talk",
        "talks",
        "talking",
        "say",
        "says",
        "said",
        "someone",
        "somebody",
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
