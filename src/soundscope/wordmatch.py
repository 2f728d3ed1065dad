"""Matching query words against speech transcripts, tolerant of recognition errors.

A recogniser writes what it heard, not always what was said: "caller" becomes "color", "login"
becomes "log in", "passwords" becomes "password". A query word therefore matches a transcript
through *variants*, each with a weight:

========  ======  ==============================================================
how       weight  example (query word -> transcript words)
========  ======  ==============================================================
exact     1.0     caller -> caller; 8 -> eight (numbers match as digits or words)
split     0.9     login -> log in; blacklist -> black list
joined    0.9     touch tone -> touchtone (two adjacent query words, one transcript word)
stem      0.9     passwords -> password; extended -> extend
sounds    0.6     caller -> color; logged -> locked (see :meth:`Lexicon.sounds_like`)
========  ======  ==============================================================

Only words the transcripts hold are proposed (the :class:`Lexicon` is the transcript index's
vocabulary), so variants cost one dictionary lookup each. :func:`coordination` scores one
recording: the sum over query words of the best variant it says, so saying every word exactly
beats saying every word approximately, which beats missing one.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from . import textnorm

EXACT, SPLIT, JOINED, STEM, SOUNDS = 1.0, 0.9, 0.9, 0.9, 0.6
MIN_FUZZY_LEN = 4  # shorter words only match exactly (or as numbers)
NEAR_KEY_SPELLING = 0.78  # Jaro-Winkler spelling similarity two words one sound-key edit apart need


@dataclass(frozen=True)
class Variant:
    """One way a query term can appear in a transcript: ``tokens`` adjacent and in this order."""

    tokens: tuple[str, ...]
    weight: float
    how: str  # exact | split | stem | sounds


@dataclass(frozen=True)
class Term:
    """A query word (or number) with its variants, best first; ``word`` is the form the user typed."""

    word: str
    variants: tuple[Variant, ...]


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """English Snowball stem of a lowercase word (other scripts come back unchanged)."""
    return _stemmer().stemWord(word) if word.isascii() and word.isalpha() else word


@lru_cache(maxsize=65536)
def sound_key(word: str) -> str:
    """Metaphone key of an ASCII word ("caller" and "color" -> "KLR"); "" for anything else."""
    if not (word.isascii() and word.isalpha()):
        return ""
    import jellyfish

    return jellyfish.metaphone(word)


def _deletions(key: str) -> set[str]:
    return {key[:i] + key[i + 1 :] for i in range(len(key))} | {key}


class Lexicon:
    """The words of a transcript index, looked up exactly, by prefix and stem, and by sound.

    Two sound keys match when they are equal or one substitution, insertion or deletion apart; the
    lookup goes through an index of each key's one-letter deletions (exact for edit distance 1).
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(w for w in words if w)
        self._sorted = sorted(self.words)
        self._by_deletion: dict[str, set[str]] | None = None

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def __len__(self) -> int:
        return len(self.words)

    def same_stem(self, word: str) -> list[str]:
        """Lexicon words other than ``word`` with its stem (they share the stem as a prefix)."""
        s = stem(word)
        if len(s) < 3 or (s == word and len(word) < MIN_FUZZY_LEN):
            return []
        lo = bisect.bisect_left(self._sorted, s)
        out = []
        for w in self._sorted[lo:]:
            if not w.startswith(s):
                break
            if w != word and stem(w) == s:
                out.append(w)
        return out

    def sounds_like(self, word: str) -> list[str]:
        """Lexicon words (of 4+ letters) that may be ``word`` misheard: the same Metaphone key ("caller",
        "color": KLR), or keys of 3+ letters one edit apart with spellings alike ("logged" LJT, "locked"
        LKT; Jaro-Winkler >= :data:`NEAR_KEY_SPELLING`)."""
        key = sound_key(word)
        if len(key) < 2 or len(word) < MIN_FUZZY_LEN:
            return []
        if self._by_deletion is None:
            index: dict[str, set[str]] = defaultdict(set)
            for w in self.words:
                k = sound_key(w)
                if len(k) >= 2 and len(w) >= MIN_FUZZY_LEN:
                    for d in _deletions(k):
                        index[d].add(w)
            self._by_deletion = dict(index)
        found: set[str] = set()
        for d in _deletions(key):
            found |= self._by_deletion.get(d, set())
        found.discard(word)
        return sorted(w for w in found if _alike(word, key, w))

    def splits(self, word: str) -> list[tuple[str, str]]:
        """Ways to cut ``word`` into two lexicon words of 2+ letters ("blacklist" -> black + list)."""
        if len(word) < 5 or not word.isalpha():
            return []
        return [(word[:i], word[i:]) for i in range(2, len(word) - 1) if word[:i] in self and word[i:] in self]


def _alike(word: str, key: str, other: str) -> bool:
    other_key = sound_key(other)
    if other_key == key:
        return True
    if min(len(key), len(other_key)) < 3 or not _within_one(key, other_key):
        return False
    import jellyfish

    return jellyfish.jaro_winkler_similarity(word, other) >= NEAR_KEY_SPELLING


def _within_one(a: str, b: str) -> bool:
    """Edit distance between ``a`` and ``b`` is at most 1."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def terms(query: str, lexicon: Lexicon | None = None) -> list[Term]:
    """The query's searchable words with their variants (:func:`textnorm.query_terms` gives the words)."""
    out = []
    for alts in textnorm.query_terms(query):
        word = alts[0]
        variants = [Variant(tuple(a.split()), EXACT, "exact") for a in alts]
        if lexicon is not None and not word.isdigit() and not textnorm.has_cjk(word):
            variants += [Variant((a, b), SPLIT, "split") for a, b in lexicon.splits(word)]
            variants += [Variant((w,), STEM, "stem") for w in lexicon.same_stem(word)]
            seen = {v.tokens for v in variants}
            variants += [Variant((w,), SOUNDS, "sounds") for w in lexicon.sounds_like(word) if (w,) not in seen]
        out.append(Term(word, tuple(sorted(variants, key=lambda v: -v.weight))))  # stable: exact first
    return out


def fts_expression(query_terms: Sequence[Term]) -> str:
    """An FTS5 MATCH expression finding passages that say any variant of any term."""
    phrases = dict.fromkeys(" ".join(v.tokens) for t in query_terms for v in t.variants)
    for a, b in itertools.pairwise(query_terms):
        phrases.setdefault(a.word + b.word, None)
    return " OR ".join(textnorm.quote(p) for p in phrases)


@dataclass
class Match:
    """How one passage (or a whole transcript) says the query: ``score`` is the sum over terms of the
    best variant's weight; ``found`` maps each matched query word to the transcript words that said it."""

    score: float
    found: dict[str, tuple[str, ...]]
    span: int = 0  # fewest consecutive transcript words holding every matched term (0: unknown)


def _says(tokens: Sequence[str], bigrams: set[tuple[str, str]], words: set[str], v: Variant) -> bool:
    if len(v.tokens) == 1:
        return v.tokens[0] in words
    if len(v.tokens) == 2:
        return (v.tokens[0], v.tokens[1]) in bigrams
    n = len(v.tokens)
    return any(tuple(tokens[i : i + n]) == v.tokens for i in range(len(tokens) - n + 1))


def coordination(query_terms: Sequence[Term], tokens: Sequence[str]) -> Match:
    """Score one token sequence (a passage or a whole transcript, :func:`textnorm.index_text` tokens).

    Each term counts the weight of its best variant present; two adjacent query words that the
    transcript wrote as one ("touch tone" / "touchtone") count :data:`JOINED` each when neither was
    found better.
    """
    words = set(tokens)
    bigrams = set(itertools.pairwise(tokens))
    best: list[float] = []
    found: dict[str, tuple[str, ...]] = {}
    for t in query_terms:
        v = next((v for v in t.variants if _says(tokens, bigrams, words, v)), None)  # best first
        best.append(v.weight if v else 0.0)
        if v:
            found[t.word] = v.tokens
    for k, (a, b) in enumerate(itertools.pairwise(query_terms)):
        if max(best[k], best[k + 1]) < JOINED and a.word + b.word in words:
            best[k] = best[k + 1] = JOINED
            found[a.word] = found[b.word] = (a.word + b.word,)
    return Match(float(sum(best)), found, _span(tokens, found))


def _span(tokens: Sequence[str], found: dict[str, tuple[str, ...]]) -> int:
    """Length of the shortest window of ``tokens`` that holds the first token of every found variant."""
    need = {v[0] for v in found.values()}
    if not need:
        return 0
    last: dict[str, int] = {}
    best = len(tokens)
    for i, tok in enumerate(tokens):
        if tok in need:
            last[tok] = i
            if len(last) == len(need):
                best = min(best, i - min(last.values()) + 1)
    return best
