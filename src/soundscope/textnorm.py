"""Text normalisation shared by indexing and querying: case, width, and Chinese word segmentation.

FTS5's unicode61 tokenizer splits on spaces and punctuation, so Chinese text (written without
spaces) is segmented into words with jieba before it is indexed or matched; both sides go
through :func:`index_text`, so the tokens agree.
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+")
_APOSTROPHE = re.compile(r"(\w)['\u2019](\w)")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@lru_cache(maxsize=1)
def _jieba():
    """The jieba module, its default tokenizer initialised: from the :func:`_fast_initialize` cache when it can
    be made or read (~13 ms in a fresh process, the import included), else by jieba's own loading (~1 s)."""
    jieba = _import_jieba()
    jieba.setLogLevel(logging.WARNING)
    _initialize(jieba, jieba.dt)
    return jieba


def _initialize(jieba, tok) -> None:
    """Initialise the jieba Tokenizer ``tok`` from the cache, or by its own loading when that fails."""
    try:
        _fast_initialize(jieba, tok)
    except Exception as exc:  # a cache that cannot be made or read: jieba's own loading below
        log.debug("jieba fast load unavailable: %s", exc)
    tok.initialize()  # a no-op once the fast load has initialised the tokenizer


def _import_jieba():
    """``import jieba`` without pkg_resources: jieba/_compat.py imports it only to open its bundled files, and
    falls back to a plain ``open`` of the same paths on ImportError, but the import alone costs ~0.17 s
    (setuptools scans every installed distribution). A ``None`` in ``sys.modules`` makes that import fail;
    it is removed right after, so later imports of pkg_resources (by anyone) work as usual."""
    block = "pkg_resources" not in sys.modules
    if block:
        sys.modules["pkg_resources"] = None  # type: ignore[assignment]
    try:
        import jieba
    finally:
        if block and "pkg_resources" in sys.modules and sys.modules["pkg_resources"] is None:
            del sys.modules["pkg_resources"]
    return jieba


# Bump when the jieba cache layout changes: it is part of the folder's hash, so an older folder is never read.
_JIEBA_FORMAT = "1"


def _fast_initialize(jieba, tok) -> None:
    """Initialise the jieba Tokenizer ``tok`` (``jieba.dt``) from ``<cache>/jieba-<version>-<hash>/`` (made on
    first use), a :mod:`strtable` of its prefix dict ``FREQ`` (word or word prefix -> frequency, 0 for a prefix
    only; 498,113 keys) and its int ``total`` (the frequencies' sum).

    jieba unmarshals that dict from its own cache in every process (0.94 s: one Python str per key); here it
    loads memory-mapped in ~1 ms and only the strings a query looks up become Python objects. jieba reads
    ``FREQ`` as ``s in FREQ``, ``FREQ[s]`` (after an ``in``), ``FREQ.get(s[, default])`` and writes it in
    ``add_word``, all of which a :class:`strtable.Memo` answers as the dict does. Only the default dictionary
    (what soundscope uses); the folder is keyed by jieba's version and its dictionary file's size and mtime,
    and the cache is made from the tokenizer jieba initialised itself, so segmentation is identical (tested)."""
    from . import strtable

    if tok.initialized or tok.dictionary != jieba.DEFAULT_DICT:
        return
    folder = _jieba_folder(jieba)
    if not (folder / "done").exists():
        tok.initialize()  # jieba's own loading, once; this process keeps its dict
        _make_jieba_cache(tok.FREQ, tok.total, folder)
        return
    total, max_len = map(int, (folder / "meta").read_text().split())
    freq = strtable.Memo(folder, "freq", max_len)
    with tok.lock:  # the lock jieba's own initialize holds while it sets these
        if not tok.initialized:
            tok.FREQ, tok.total, tok.initialized = freq, total, True


def _jieba_folder(jieba) -> Path:
    """``<cache>/jieba-<version>-<12 hex>``: the hash is of the cache format and the default dictionary's path,
    size and mtime, so a reinstalled or edited dictionary gets a new folder (a stat, not a 5 MB read)."""
    import hashlib

    from .text import cache_dir

    path = Path(jieba.__file__).with_name(jieba.DEFAULT_DICT_NAME)
    st = path.stat()
    key = f"{_JIEBA_FORMAT} {path} {st.st_size} {st.st_mtime_ns}".encode()
    return cache_dir() / f"jieba-{jieba.__version__}-{hashlib.sha1(key).hexdigest()[:12]}"


def _make_jieba_cache(freq: dict[str, int], total: int, folder: Path) -> None:
    """Write ``freq.*`` (a strtable of ``freq``) and ``meta`` ("<total> <longest key>") into ``folder``, made
    atomically by :func:`.text.make_cache_folder`; ~0.5 s."""
    from . import strtable
    from .text import make_cache_folder

    def write(tmp: Path) -> None:
        max_len = strtable.save(tmp, "freq", freq)
        (tmp / "meta").write_text(f"{int(total)} {max_len}")

    make_cache_folder(folder, write)


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
