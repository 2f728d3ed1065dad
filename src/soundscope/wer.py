"""Word error rate with text normalisation, and the labelled speech sets used to measure it.

Normalisation: lowercase; strip punctuation and apostrophes; drop bracketed non-speech notes
([...], (...), <...>); digits become English words on both sides ("500" -> "five hundred",
"28.8" -> "twenty eight point eight", "1st" -> "first"); symbols become words (# -> pound,
* -> star); a.m./p.m. -> am/pm. WER = (substitutions + deletions + insertions) / reference words.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORD_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SYMBOLS = {
    "@": " at ",
    "&": " and ",
    "%": " percent ",
    "+": " plus ",
    "=": " equals ",
    "#": " pound ",
    "*": " star ",
    "$": " dollar ",
}


def number_words(n: int) -> str:
    """Cardinal English words for a non-negative integer ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORD_IRREGULAR:
        words[-1] = _ORD_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _expand_number(m: re.Match[str]) -> str:
    whole, frac, suffix = m.group(1), m.group(2), m.group(3)
    if len(whole) > 15:
        return " " + " ".join(_ONES[int(d)] for d in whole) + " "
    if suffix:
        return " " + ordinal_words(int(whole)) + " "
    out = number_words(int(whole))
    if frac:
        out += " point " + " ".join(_ONES[int(d)] for d in frac)
    return " " + out + " "


_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?(st|nd|rd|th)?(?![\d])")
_BRACKETS = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")


def normalize(text: str) -> list[str]:
    """Words of ``text`` after the normalisation described in the module docstring."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = _BRACKETS.sub(" ", t)
    t = re.sub(r"\ba\.m\.?", " am ", t)
    t = re.sub(r"\bp\.m\.?", " pm ", t)
    for sym, word in _SYMBOLS.items():
        t = t.replace(sym, word)
    t = t.replace("'", "").replace("’", "")
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)
    t = _NUMBER.sub(_expand_number, t)
    t = re.sub(r"[^\w]+|_", " ", t)
    return t.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between word lists."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------------------------------------
# Data


def asterisk_items(root: Path) -> list[tuple[str, Path, str]]:
    items = []
    for line in (root / "transcripts.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(";") or ": " not in line:
            continue
        name, text = line.split(": ", 1)
        path = root / "audio" / f"{name.strip()}.wav"
        if path.is_file():
            items.append((name.strip(), path, text.strip()))
    return sorted(items)


def librispeech_items(root: Path) -> list[tuple[str, Path, str]]:
    items = []
    for line in (root / "transcripts.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        uid, text = line.split(" ", 1)
        path = root / f"{uid}.flac"
        if path.is_file():
            items.append((uid, path, text.strip()))
    return sorted(items)


def subset(items: list, n: int | None) -> list:
    if not n or n >= len(items):
        return items
    k = math.ceil(len(items) / n)
    return items[::k][:n]


# ---------------------------------------------------------------------------------------------
# Evaluation
