"""Label *entries* and their impact lists: what lets a text query rank labels without scoring every item.

A space's entries are its label tree (:func:`soundscope.ontology.label_tree`): each label stands for
itself and its ontology descendants, then the categories above them ("Natural sounds"). An entry's
score for an item is the highest score among its group. Single-label entries read the label's own
column; the others read a *closure* row computed once per column part (``closure.<space>.npy``,
(n_multi, n) float16), so a query reads one row per matched entry however large its subtree.

Each persisted part also keeps, per entry, its best rows in descending score order (an impact list,
``top_rows.<space>.npy`` (n_entries, d) int32 with ``top_scores.<space>.npy`` float16, d <=
:data:`LIST_DEPTH`) and the entry's score sum over the part (``sums.<space>.npy``, for prevalence).
:func:`top_weighted` answers "best k items by a weighted sum of a few entries" from those lists with
Fagin's threshold rule: the union of the lists' first d rows is scored exactly, and any item outside
it scores at most the weighted sum of the lists' d-th scores; when k candidates beat that bound the
answer is exact, else d grows, and past the lists' depth the parts are scored in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .. import ontology

LIST_DEPTH = 16_384  # rows kept per entry and part in its impact list
LIST_STEPS = (1024, 4096, LIST_DEPTH)  # depths tried in turn before a full scan


@dataclass(frozen=True)
class EntryMap:
    """How a space's entries map onto stored rows: ``single[e]`` is the label row of a one-label entry
    (-1 otherwise), ``slot[e]`` the closure row of a multi-label entry (-1 otherwise)."""

    groups: tuple[np.ndarray, ...]
    single: np.ndarray  # (n_entries,) int64
    slot: np.ndarray  # (n_entries,) int64
    multi: tuple[int, ...]  # entries with a closure row, in slot order

    @property
    def n(self) -> int:
        return len(self.groups)


@lru_cache(maxsize=16)
def entry_map(labels: tuple[str, ...]) -> EntryMap:
    """The entries of a label vocabulary (see the module docstring)."""
    groups = ontology.label_tree(labels).groups
    single = np.array([int(g[0]) if g.size == 1 else -1 for g in groups], np.int64)
    multi = tuple(e for e, g in enumerate(groups) if g.size != 1)
    slot = np.full(len(groups), -1, np.int64)
    slot[list(multi)] = np.arange(len(multi))
    return EntryMap(groups, single, slot, multi)


def closure_rows(*, scores: np.ndarray, emap: EntryMap) -> np.ndarray:
    """(n_multi, n) float16: each multi-label entry's highest member score, from label-major ``scores``
    (n_labels, n) float16. An entry with no member is all zeros."""
    out = np.zeros((len(emap.multi), scores.shape[1]), np.float16)
    for s, e in enumerate(emap.multi):
        idx = emap.groups[e]
        if idx.size:
            out[s] = np.max(scores[idx], axis=0)
    return out


def entry_rows(*, scores: np.ndarray, closure: np.ndarray, emap: EntryMap, entries, cols=None) -> np.ndarray:
    """(k, n) float32 scores of ``entries`` (k,) for every column, or (k, m) for the columns ``cols`` (m,)."""
    entries = np.asarray(entries, np.int64)
    n = scores.shape[1] if cols is None else len(cols)
    out = np.zeros((entries.size, n), np.float32)
    for i, e in enumerate(entries.tolist()):
        j, s = int(emap.single[e]), int(emap.slot[e])
        row = scores[j] if j >= 0 else closure[s]
        out[i] = row if cols is None else row[cols]
    return out


def impact_lists(*, scores: np.ndarray, closure: np.ndarray, emap: EntryMap) -> tuple[np.ndarray, ...]:
    """(top_rows (E, d) int32, top_scores (E, d) float16, sums (E,) float64) of one part: each entry's
    best d = min(n, :data:`LIST_DEPTH`) rows, best first (ties in row order), and its score sum."""
    n = scores.shape[1]
    d = min(n, LIST_DEPTH)
    rows = np.zeros((emap.n, d), np.int32)
    top = np.zeros((emap.n, d), np.float16)
    sums = np.zeros(emap.n, np.float64)
    for e in range(emap.n):
        v = entry_rows(scores=scores, closure=closure, emap=emap, entries=[e])[0]
        sums[e] = float(v.sum(dtype=np.float64))
        idx = np.argpartition(-v, d - 1)[:d] if d < n else np.arange(n)
        idx = np.sort(idx)
        idx = idx[np.argsort(-v[idx], kind="stable")]
        rows[e], top[e] = idx, v[idx]
    return rows, top, sums


def best_of(score: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of ``rows`` (m,) ascending by ``score`` (n,): (rows, float32 scores), best first, ties
    in row order. O(m) selection (argpartition), then a sort of at most k."""
    if rows.size > k:
        rows = np.sort(rows[np.argpartition(-score[rows], k - 1)[:k]])
    order = np.argsort(-score[rows], kind="stable")
    return rows[order], score[rows[order]].astype(np.float32)


@dataclass
class Term:
    """One space's share of a weighted label query: entries (k,) with weights (k,) >= 0."""

    space: str
    entries: np.ndarray
    weights: np.ndarray
