"""Search: text queries and query-by-example over a :class:`Store`, ranked and explained.

Text queries run these rankers and fuse them with weighted reciprocal-rank fusion:

* ``labels``: zero-shot label matching. The query and every model label are embedded by the
  multilingual text encoder; similarities become weights over labels (softmax over the best
  few); an item scores the weighted sum of its label probabilities.
* ``description``: cosine between the query and each item's stored description.
* ``keyword``: SQLite FTS5 (BM25) over file names, tags and descriptions.
* ``transcript``: the query words said in each file's transcript, tolerant of recognition errors
  (:mod:`wordmatch`); ``transcript_meaning``: the query's cosine with each transcript passage.
* ``descriptors`` and ``kind``: measured tempo, loudness and duration against the words that ask for
  them ("slow", "quiet", "long"), and the kind the query implies.

Query by example embeds the clip with the same audio model, finds the nearest segments in the
vector index and keeps each file's best segment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import analyze, describe, ontology, textnorm, wordmatch
from .ingest import DESCRIPTION_SPACE, TRANSCRIPT_SPACE
from .store import Columns, Store
from .store.columns import KINDS
from .store.entries import Term, best_of
from .store.vectors import RERANK
from .text import TextEncoder
from .types import Analyzer, Result

RRF_K = 60.0
RANKER_WEIGHTS = {
    "labels": 1.0,
    "description": 0.35,
    "keyword": 0.5,
    "descriptors": 1.0,
    "transcript": 1.5,
    "transcript_meaning": 0.6,
    "kind": 0.5,  # a kind the query implies ("a slow song" -> music)
}
SPARSE_RANKERS = {"keyword", "descriptors", "transcript", "transcript_meaning", "kind"}  # rank only items with evidence
# A weighted label probability below 0.001 is no evidence: rank no one on it.
MIN_EVIDENCE = {"labels": 0.001}
COORDINATION_TOP = 300  # items (by best passage BM25) whose whole transcript is checked word by word
COORDINATION_STEP = 100.0  # each query word found in an item's transcript outweighs any BM25 difference
WORD_MODE_SLACK = 0.5  # a query is about words when some transcript says all of them (less this much fuzziness)
PROXIMITY = 5.0  # bonus for a passage holding the query words next to each other (words / window)
TRANSCRIPT_CACHE = 20000  # items whose tokenised transcripts a Searcher keeps between queries
COVERAGE = 10.0  # bonus for a transcript the query words describe completely (words found / its content words)
MEANING_MIN = 0.35  # passage-query cosine below which a passage is not evidence
# Columns the keyword ranker matches (empty: all of name, tags, description): what people wrote. The
# generated description repeats the labels' guesses, so matching it counts them twice, and by accident:
# "farm animals" matched "wild animals" in every bird's description (sfx AP 0.47; 0.86 without), and a
# Chinese query's English rendering matched or missed "livestock" by one vocabulary entry (0.82 / 0.13).
# Measured without descriptions (issue 11, with this stop's vocabulary entries): ESC-10 mAP 0.942 -> 0.946
# (both languages), sfx class mAP 0.625 -> 0.630 English, 0.635 -> 0.628 Chinese, category mAP unchanged,
# music MRR 0.820 -> 0.847 once "slow piano" implies music (it lost 0.026 when first tried: the descriptor
# ranker now carries the measured words), tempo 8/8, speech R@1 +0.004.
KEYWORD_COLUMNS: tuple[str, ...] = ("name", "tags")
ANN_CANDIDATES = 300  # best items an approximate (vector index) ranker hands to fusion
CANDIDATES = 1000  # best items each ranker hands to fusion (at least the requested limit)
EXACT_FILTERED = 20_000  # a filter this selective is searched exactly instead of through the ANN
RANK_TOLERANCE = 0.01  # scores within 1 % of a ranker's best score of each other are near-equal in rank
EXCLUDE_MIN = 0.3  # item-level probability of a negated label above which an item is excluded
LABEL_FLOOR = 0.01  # a label weighing less than this share of the best label's weight gets none
LABEL_CAP = 5  # labels beyond this many taper off (see label_weights)
DESCRIPTION_PHRASINGS = False  # the ontology's class descriptions as phrasings: measured, no change; left off
PREVALENCE_POWER = 1.0  # a matched label's weight is scaled by (1 - its mean score over the library) ** this
# The confidence floor: for a query about a sound event (its best label is a sound-event label, not a music
# tag, and nothing else in it is measured or spoken), a result whose label evidence is below this is "weak":
# the nearest there is, kept apart after the real matches. Calibrated on ESC-10 and the sfx set (README).
WEAK_LABEL = 0.2
# How much the label ranker counts also depends on how much of the query's label weight is left after the
# prevalence discount: "fast music" in a library of songs matches Music (0.82 of its weight), which every item
# has; the rest (Tender music, Mellow) is incidental and should not outvote the measured tempo. Below this
# share left, the label ranker's fusion weight shrinks in proportion, to no less than INFORMATIVE_MIN of it.
# Measured (README): the rendered tempo set 6 -> 7 of 8 queries; ESC-10, sfx, music, speech, long unchanged.
INFORMATIVE_FULL = 0.5
INFORMATIVE_MIN = 0.25
EXAMPLE_PART_MIN = 0.2  # query by example: least share of a clip searched in a space of its own
QBE_EXPAND = 3  # query by example: best first-pass neighbours added to the query (expanded_similarity)
QBE_EXPAND_FROM, QBE_EXPAND_FULL = 0.6, 0.8  # a neighbour's first similarity: from no weight to full weight
QBE_LABEL_WEIGHT = 0.5  # query by example: share of label agreement beside embedding cosine (example_similarity)


def soft_ranks(sorted_scores: np.ndarray, *, rel_tol: float = RANK_TOLERANCE) -> np.ndarray:
    """0-based ranks of descending scores that are continuous in the scores (float, (m,)).

    An item's rank counts the items above it, each by how far above: 1 for a score more than half a
    tolerance ``tau = rel_tol x max |score|`` higher, 0 for one that much lower, linearly between. Far
    apart scores give the usual ranks 0, 1, 2, ...; near-equal scores (every speech clip's "Speech"
    probability) share a rank; and a perturbation of the scores by ``d`` moves a rank by about
    ``d / tau`` instead of by a whole place, so rank fusion cannot flip on another CPU's rounding.
    O(m log m) with prefix sums."""
    s = np.asarray(sorted_scores, np.float64)
    if s.size == 0:
        return np.zeros(0, np.float64)
    tau = max(float(np.abs(s).max()) * rel_tol, 1e-12)
    asc = s[::-1]  # ascending, for searchsorted
    prefix = np.concatenate([[0.0], np.cumsum(asc)])
    lo = np.searchsorted(asc, s - tau / 2, side="right")  # items within half a tolerance of each score...
    hi = np.searchsorted(asc, s + tau / 2, side="left")
    above = s.size - hi  # ...and those clearly above it
    window = hi - lo
    window_sum = prefix[hi] - prefix[lo]
    linear = (window_sum - window * s) / tau + 0.5 * window  # sum of (s_j - s_i) / tau + 1/2 in the window
    return np.maximum(above + linear - 0.5, 0.0)  # less the item's own 1/2


WHY_ZH = {
    "sounds like": "听起来像", "says at": "说到于", "talks about it at": "谈到于", "description matches": "描述匹配",
    "measured": "测得", "keywords match name/tags/description": "关键词匹配文件名/标签/描述",
    "best moment": "最佳时刻", "weak match": "弱匹配", "duration": "时长", "tempo": "速度", "kind": "类型",
    "excludes": "已排除",
}  # fmt: skip


def localize(why: list[str], language: str) -> list[str]:
    """Explanation lines in the query's language (Chinese prefixes for Chinese queries)."""
    if language != "zh":
        return why
    out = []
    for line in why:
        for en, zh in sorted(WHY_ZH.items(), key=lambda kv: -len(kv[0])):
            if line.startswith(en):
                line = zh + line[len(en) :]
                break
        out.append(line)
    return out


def satisfied(pq, r: Result, m: Columns) -> list[str]:
    """The parsed constraints this result meets (only those it meets): duration, tempo, kind, exclusions."""
    out = []
    lo, hi = pq.duration or (None, None)
    if pq.duration and (lo or 0.0) <= r.duration_s <= (hi if hi is not None else float("inf")):
        rng = f"{'' if lo is None else describe.format_clock(lo)}–{'' if hi is None else describe.format_clock(hi)}"
        out.append(f"duration {describe.format_clock(r.duration_s)} within {rng}")
    pos = m.position(r.item_id)
    if pq.tempo and m.tempo[pos] > 0 and (pq.tempo[0] or 0) <= m.tempo[pos] <= (pq.tempo[1] or 1000):
        lo, hi = pq.tempo
        out.append(
            f"tempo {m.tempo[pos]:.0f} BPM (wanted {'' if lo is None else f'{lo:.0f}'}–"
            f"{'' if hi is None else f'{hi:.0f}'} BPM)"
        )
    if pq.kind and KINDS[m.kinds_code[pos]] == pq.kind:
        out.append(f"kind {pq.kind}")
    if pq.exclude:
        out.append("excludes " + ", ".join(pq.exclude))
    return out


def mark_words(text: str, query: str, *, width: int = 160, also: Iterable[str] = ()) -> str:
    """``text`` with the query's words (and the transcript words in ``also``, e.g. the variants that
    matched them) wrapped in «», cut to about ``width`` characters around the first."""
    wanted = {w for w in textnorm.segment(query) if w not in textnorm.STOPWORDS} | set(also)
    pieces = re.split(r"(\w+)", text)
    marked = [f"«{p}»" if p and textnorm.index_text(p) in wanted else p for p in pieces]
    out = "".join(marked)
    if textnorm.has_cjk(text):
        for w in sorted(wanted, key=len, reverse=True):
            if textnorm.has_cjk(w):
                out = out.replace(w, f"«{w}»")
    first = out.find("«")
    if len(out) > width:
        lo = max(0, first - width // 3) if first >= 0 else 0
        out = ("…" if lo else "") + out[lo : lo + width] + "…"
    return out


def descriptor_scores(m: Columns, wanted: dict[str, Any]) -> np.ndarray:
    """How well each item's measured tempo and loudness fit ``wanted``, in [0, 1] (0 if unmeasured).

    tempo (lo, hi) BPM: 1 inside the range, falling linearly to 0 at 40 BPM outside, scaled by the
    tempo confidence; loudness "quiet": 1 at <= -35
    LUFS falling to 0 at -14; "loud": the reverse. duration (lo, hi) seconds: 1 inside, else the ratio
    of the duration to the bound it misses.
    """
    score = np.zeros(m.n, np.float32)
    n = 0
    if "tempo" in wanted:
        lo, hi = wanted["tempo"]
        lo, hi = (lo if lo is not None else 0.0), (hi if hi is not None else 1000.0)
        conf = np.clip(m.tempo_conf * 2, 0.3, 1.0)

        def fit(bpm: np.ndarray) -> np.ndarray:
            return np.clip(1 - np.maximum(lo - bpm, bpm - hi).clip(0) / 40, 0, 1)

        score += np.where(m.tempo > 0, fit(m.tempo) * conf, 0)
        n += 1
    if "loudness" in wanted:
        lufs, has = m.lufs, m.lufs > -70
        word = wanted["loudness"]
        score += np.where(has, np.clip((-14 - lufs) / 21 if word == "quiet" else (lufs + 35) / 21, 0, 1), 0)
        n += 1
    if "duration" in wanted:
        lo, hi = wanted["duration"]
        d = np.maximum(m.durations, 1e-3)
        score += np.minimum(1.0 if lo is None else np.clip(d / lo, 0, 1), 1.0 if hi is None else np.clip(hi / d, 0, 1))
        n += 1
    return score / max(n, 1)


def measured_text(m: Columns, i: int, wanted: dict[str, Any]) -> str:
    """The measured values behind a descriptor match, e.g. "109 BPM, -23 LUFS" or "6:12"."""
    parts = []
    if "tempo" in wanted:
        parts.append(f"{m.tempo[i]:.0f} BPM")
    if "loudness" in wanted or "tempo" in wanted:
        parts.append(f"{m.lufs[i]:.0f} LUFS")
    if "duration" in wanted:
        parts.append(describe.format_clock(float(m.durations[i])))
    return ", ".join(parts)


@dataclass
class Filters:
    """Constraints every result must meet."""

    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    kind: str | None = None  # music | speech | sound
    path_prefix: str | None = None
    label: str | None = None  # a model label the item must carry (item-level probability >= label_min)
    label_min: float = 0.2
    min_tempo: float | None = None  # BPM; only items with a measured tempo (music) pass a tempo filter
    max_tempo: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "label_min"}


@dataclass
class LabelMatch:
    """How a text query maps onto one label space."""

    space: str
    indices: np.ndarray  # (k,) entries of the space's label tree (see ontology.label_tree)
    weights: np.ndarray  # (k,) summing to 1
    names: list[str]
    groups: list[np.ndarray] = field(default_factory=list)  # (k,) label columns whose best score is each entry's

    def values(self, scores: np.ndarray) -> np.ndarray:
        """(k,) each matched entry's score from one item's or segment's label scores (n_labels,):
        the highest score in its group (a label and its ontology descendants)."""
        return np.array([float(scores[g].max()) if g.size else 0.0 for g in self.groups], np.float32)


def top_k(score: np.ndarray, ok: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` rows of ``score`` (n,) among those where ``ok`` (n,) holds: (rows (m,), scores (m,)),
    best first, ties in row order. O(n) vectorised selection (argpartition), then a sort of m <= k."""
    return best_of(score, np.flatnonzero(ok), k)


def readable(encoder: TextEncoder, texts: list[str]) -> list[bool]:
    """Which ``texts`` the encoder can read: no token outside its vocabulary (see
    :meth:`TextEncoder.unknown_share`). An encoder that cannot tell reads everything."""
    share = getattr(encoder, "unknown_share", None)
    if share is None or not texts:
        return [True] * len(texts)
    return [bool(x == 0.0) for x in share(texts)]


@lru_cache(maxsize=8)
def _phrasing_embeddings(
    encoder: TextEncoder, labels: tuple[str, ...], descriptions: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every English and Chinese phrasing of each label: (P, dim) and the label index (P,).

    Phrasings the encoder cannot read are left out: they all embed as one generic vector (USE reads
    噼啪声, 嗡嗡声 and 嘶嘶声 alike as "<unk><unk>声"), which would tie dozens of labels exactly and leave
    their order to rounding noise. The label's own name is always kept. Cached on disk, keyed by the
    encoder id and the phrasing vocabulary, so a fresh process does not embed ~2,500 texts again."""
    import hashlib
    import json

    from .query import label_phrasings
    from .text import cache_dir

    table = label_phrasings()
    described = descriptions if DESCRIPTION_PHRASINGS else ()
    candidates = [list(dict.fromkeys([label, *table.get(label, [])])) for label in labels]
    for phrases, text in zip(candidates, described, strict=False):
        if text:
            phrases.append(text)
    key = hashlib.sha256(json.dumps([encoder.model_id, candidates], ensure_ascii=False).encode()).hexdigest()[:24]
    path = cache_dir() / "phrasings" / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["embeddings"], z["owner"]
    except (OSError, ValueError, KeyError):
        pass
    texts, owner = [], []
    for i, phrases in enumerate(candidates):
        ok = readable(encoder, phrases)
        for j, phrase in enumerate(phrases):
            if j == 0 or ok[j]:
                texts.append(phrase)
                owner.append(i)
    emb, own = encoder.encode(texts), np.asarray(owner, np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.npz")
        np.savez(tmp, embeddings=emb, owner=own)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: embed again next time
    return emb, own


def label_weights(
    sims: np.ndarray, *, temperature: float = 0.05, floor: float = LABEL_FLOOR, cap: int = LABEL_CAP
) -> tuple[np.ndarray, np.ndarray]:
    """Weights over labels from the query's similarity to each: (indices (k,), weights (k,) summing to 1).

    ``w_i ∝ exp((s_i - s_max) / temperature)``, a function continuous in the similarities, so a
    perturbation of the embeddings (another CPU's rounding) moves the weights by as little. Labels below
    ``floor`` of the best label's weight get none (at the boundary a label carries < ``floor``, so
    crossing it changes little). Beyond ``cap`` labels the weights taper to 0 towards the similarity of
    the first label left out, instead of cutting between two near-equal labels; exact ties are never
    split (tied labels are all kept or all tapered alike)."""
    sims = np.asarray(sims, np.float64)
    if sims.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.argsort(-sims, kind="stable")
    best = sims[order[0]]
    w = np.exp((sims[order] - best) / temperature)
    keep = w >= floor
    if keep.sum() > cap:
        gap = temperature * 0.5  # taper width in cosine: labels this far above the cut keep full weight
        w = w * np.clip((sims[order] - sims[order[cap]]) / gap, 0.0, 1.0)
        keep &= w > 0
        if not keep.any():  # more than cap labels tied with the best: share equally among them
            keep = sims[order] >= best
            w = keep.astype(np.float64)
    idx, w = order[keep], w[keep]
    return idx.astype(np.int64), (w / w.sum()).astype(np.float32)


def example_similarity(cosines: np.ndarray, query_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(m,) query-by-example similarity of m candidate items: ``QBE_LABEL_WEIGHT`` x the cosine of the
    square roots of their label probabilities ``scores`` (m, n_labels) with the query's (n_labels,),
    plus the rest x their embedding cosine ``cosines`` (m,). An item without label scores (an all-zero
    row) keeps its embedding cosine. The square root evens out a few near-certain labels against many
    small ones (measured: embedding alone 0.927 ESC-10 P@10, raw probabilities fused 0.923, square roots
    fused 0.938; sfx 0.542 -> 0.578)."""
    q = np.sqrt(np.clip(np.asarray(query_scores, np.float64), 0.0, None))
    q /= max(float(np.linalg.norm(q)), 1e-9)
    out = np.asarray(cosines, np.float64).copy()
    r = np.sqrt(np.clip(np.asarray(scores, np.float64), 0.0, None))
    if r.ndim != 2 or r.shape[1] != q.shape[0]:
        return out.astype(np.float32)
    norms = np.linalg.norm(r, axis=1)
    has = norms > 0
    cos = (r @ q) / np.maximum(norms, 1e-9)
    out[has] = (1 - QBE_LABEL_WEIGHT) * out[has] + QBE_LABEL_WEIGHT * cos[has]
    return out.astype(np.float32)


def expanded_similarity(
    query: np.ndarray,
    vectors: np.ndarray,
    first: list[float] | np.ndarray,
    query_scores: np.ndarray | None,
    scores: np.ndarray | None,
) -> np.ndarray:
    """(m,) query-by-example similarity of m candidates after query expansion (average query expansion,
    as in instance retrieval): the query embedding (dim,) plus the unit vectors of the :data:`QBE_EXPAND`
    candidates ``first`` ranks best, and likewise the square roots of the label probabilities, scored
    again by :func:`example_similarity` over the candidates' ``vectors`` (m, dim) and label ``scores``
    (m, n_labels). The neighbours a clip agrees with most carry what the clip shares with its kind, so
    one odd clip (a dog bark over music) no longer pulls its own oddity into every hit.

    A neighbour counts in full from a first similarity of :data:`QBE_EXPAND_FULL`, not at all below
    :data:`QBE_EXPAND_FROM` (linear between): in a small library a clip's third-best match is often
    another kind of sound (0.44 for a dog bark among the 39 demo files), and expanding with it would
    rank that kind first. Measured, ESC-10 leave-recording-out P@10: 0.938 -> 0.953 (2 or 5
    neighbours 0.951; every neighbour in full 0.953, from 0.7 to 0.9 0.950)."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    first = np.asarray(first, np.float64)
    top = np.argsort(-first, kind="stable")[:QBE_EXPAND]
    w = np.clip((first[top] - QBE_EXPAND_FROM) / (QBE_EXPAND_FULL - QBE_EXPAND_FROM), 0.0, 1.0)[:, None]
    q = np.asarray(query, np.float64)
    q = q / max(float(np.linalg.norm(q)), 1e-12) + (w * v[top]).sum(axis=0)
    cosines = v @ (q / max(float(np.linalg.norm(q)), 1e-12))
    if query_scores is None or scores is None:
        return cosines.astype(np.float32)
    r = np.sqrt(np.clip(np.asarray(scores, np.float64), 0.0, None))
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    qs = np.sqrt(np.clip(np.asarray(query_scores, np.float64), 0.0, None))
    qs = qs / max(float(np.linalg.norm(qs)), 1e-12) + (w * r[top]).sum(axis=0)
    return example_similarity(cosines, qs**2, scores)


@dataclass
class ExamplePart:
    """The part of a query clip that is searched in one embedding space (see :func:`example_parts`)."""

    space: str  # analyzer name: the sound tagger's or the music tagger's
    vector: np.ndarray  # (dim,) unit mean of its segments' embeddings, weighted by their length
    scores: np.ndarray | None  # (n_labels,) highest label probabilities over its segments
    spans: list[tuple[float, float]]  # its segments, (start, end) seconds into the query
    share: float  # its segments' share of the query's length, 0..1


def example_parts(
    segments: list[tuple[float, float, dict[str, np.ndarray], dict[str, np.ndarray]]],
    *,
    sound: str,
    sound_labels: list[str],
    music: str | None,
    least: float,
) -> list[ExamplePart]:
    """Split a query clip by what each segment holds: segments (start s, end s, space -> (n_labels,)
    scores, space -> (dim,) embedding) in time order. A segment is searched in the ``music`` tagger's
    space when it has that embedding and no sound event outweighs its music
    (:func:`describe.sound_dominates` of its ``sound`` scores at ``least``), else in the ``sound``
    tagger's. Returns one part per space used, the larger share first: a dog barking before a song
    gives a sound part and a music part, a song alone one music part. A part under
    :data:`EXAMPLE_PART_MIN` of the clip is left out (a segment of a song that YAMNet hears as "Plop" or
    "Jingle bell"), unless it is the only one."""
    groups: dict[str, list[tuple[float, float, dict[str, np.ndarray], dict[str, np.ndarray]]]] = {}
    for seg in segments:
        _, _, scores, embeddings = seg
        sound_scores = scores.get(sound)
        is_music = (
            music is not None
            and music in embeddings
            and not (sound_scores is not None and describe.sound_dominates(sound_scores, sound_labels, least=least))
        )
        space = music if is_music else sound
        if space is not None and space in embeddings:
            groups.setdefault(space, []).append(seg)
    total = sum(max(e - s, 1e-3) for s, e, _, _ in segments) or 1.0
    parts = []
    for space, segs in groups.items():
        lengths = np.array([max(e - s, 1e-3) for s, e, _, _ in segs])
        v = (lengths[:, None] * np.stack([np.asarray(x[3][space], np.float64) for x in segs])).sum(axis=0)
        have = [x[2][space] for x in segs if space in x[2]]
        parts.append(
            ExamplePart(
                space,
                (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32),
                np.max(np.stack(have), axis=0) if have else None,
                [(s, e) for s, e, _, _ in segs],
                float(lengths.sum() / total),
            )
        )
    parts.sort(key=lambda p: -p.share)
    return [p for i, p in enumerate(parts) if i == 0 or p.share >= EXAMPLE_PART_MIN]


def fuse_parts(hits: list[tuple[ExamplePart, list[Result]]], *, limit: int) -> list[Result]:
    """One ranking from the hits of each part of a query clip: reciprocal-rank fusion weighted by each
    part's share of the clip: score = share / (1 + rank), so the parts' hits interleave in proportion
    (a 10 s song after a 5 s bark: two songs, then a bark), and a part of a twentieth of the clip (a
    door slam in a song) shows its first hit after some twenty songs. The usual RRF constant (60)
    would let the larger part take the first sixty places. An item both parts found sums both. Each
    result says which part of the query it is like."""
    fused: dict[int, float] = {}
    first: dict[int, Result] = {}
    for part, results in hits:
        spans = _merged(part.spans)
        where = ", ".join(f"{describe.format_clock(a)}-{describe.format_clock(b)}" for a, b in spans[:3])
        where += f" and {len(spans) - 3} more" if len(spans) > 3 else ""
        kind = "music" if part.space.startswith("musicnn") else "sound"
        for rank, r in enumerate(results):
            fused[r.item_id] = fused.get(r.item_id, 0.0) + part.share / (1 + rank)
            if r.item_id not in first:
                r.why = [f"like the query's {kind} at {where}", *r.why]
                first[r.item_id] = r
    order = sorted(fused, key=lambda i: -fused[i])[:limit]
    for i in order:  # the score stays the part's similarity; the order is the fused one
        first[i].evidence["fused"] = round(fused[i], 6)
    return [first[i] for i in order]


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Adjacent (start, end) spans joined: [(0, 5), (5, 10), (20, 25)] -> [(0, 10), (20, 25)]."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1e-6:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def label_strength(sims_by_space: dict[str, np.ndarray]) -> float:
    """How much the query is about a sound at all: 1 when it matches some label well (cosine >= 0.5),
    down to 0.25 when it matches none (e.g. a phrase someone said), so spoken evidence can lead."""
    best = max((float(s.max()) for s in sims_by_space.values()), default=0.0)
    return float(np.clip((best - 0.2) / 0.3, 0.25, 1.0))


def parse_query(text: str):  # -> soundscope.query.ParsedQuery
    from .query import parse

    return parse(text)


def _with_parsed(filters: Filters | None, pq) -> Filters:
    """User filters, tightened by the duration range the query asks for (a kind the query implies, as in
    "a slow song", is a preference scored by the ``kind`` ranker, not a filter: "whale song" is no music)."""
    f = Filters(**(filters.__dict__ if filters else {}))
    if pq.duration and not pq.duration_word:  # "long" alone is a preference (see parsed_descriptors)
        lo, hi = pq.duration
        if lo is not None:
            f.min_duration = max(lo, f.min_duration or 0.0)
        if hi is not None:
            f.max_duration = min(hi, f.max_duration) if f.max_duration is not None else hi
    return f


def parsed_descriptors(pq) -> dict[str, Any]:
    """What the measured descriptors should satisfy: {"tempo": (lo, hi)}, {"loudness": word} and
    {"duration": (lo, hi)} when the duration came from a word ("long", "短"), not a number."""
    out: dict[str, Any] = {}
    if pq.tempo:
        out["tempo"] = pq.tempo
    if pq.loudness:
        out["loudness"] = pq.loudness
    if pq.duration and pq.duration_word:
        out["duration"] = pq.duration
    return out


class _LookupScores:
    """A dense (n,) score array read like the candidate dicts: ``.get(row, default)``."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def get(self, row: int, default: float = 0.0) -> float:
        return float(self.values[row]) if 0 <= row < self.values.shape[0] else default


class Searcher:
    """Answers queries over one store; caches item matrices until the catalog changes."""

    def __init__(
        self, store: Store, encoder: TextEncoder, *, label_top_k: int = LABEL_CAP, temperature: float = 0.05
    ) -> None:
        self.store = store
        self.encoder = encoder
        # True: every ranker scores every item, with no index (the reference for overlap checks), and hands
        # fusion its best k as the candidate path does; with exact_full_depth every item's rank is fused
        self.exact = False
        self.exact_full_depth = False
        self._exact_desc: tuple[int, np.ndarray, np.ndarray] | None = None
        self.label_top_k = label_top_k
        self.temperature = temperature
        self._passages: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lexicon: tuple[int, wordmatch.Lexicon] | None = None
        self._transcripts: tuple[int, dict[int, list[tuple[dict[str, Any], list[str]]]]] = (-1, {})
        self.rewrite: Any = None  # text -> ParsedQuery: the language-model stage (llm.QueryRewriter); None: rules

    # -- cached state ---------------------------------------------------------------------------
    def _spaces(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.store.catalog.models().items() if v["labels"]}

    def matrices(self) -> Columns:
        """The query columns of every item (memory-mapped parts plus the catalog's delta; see
        :mod:`soundscope.store.columns`), current with the catalog."""
        return self.store.columns()

    # -- text search ----------------------------------------------------------------------------
    def tree(self, space: str) -> ontology.LabelTree:
        """The labels of ``space`` seen through the AudioSet ontology (subtree groups, categories)."""
        return ontology.label_tree(tuple(self._spaces()[space]["labels"]))

    def _label_sims(self, space: str, texts: list[str]) -> np.ndarray:
        """(m,) best cosine between any of ``texts`` and any phrasing of each entry of the space's
        label tree (its labels, then the ontology categories above them; see :meth:`tree`)."""
        tree = self.tree(space)
        emb, owner = _phrasing_embeddings(self.encoder, tree.names, tree.descriptions)
        per_phrase = (emb @ self.encoder.encode(texts).T).max(axis=1)
        sims = np.full(len(tree.names), -1.0, np.float32)
        np.maximum.at(sims, owner, per_phrase)
        return sims

    def all_label_sims(self, texts: str | list[str]) -> dict[str, np.ndarray]:
        """space -> (n_labels,) similarities of the query to every label (see :meth:`_label_sims`)."""
        texts = [texts] if isinstance(texts, str) else texts
        return {space: self._label_sims(space, texts) for space in self._spaces()}

    def match_labels(self, sims_by_space: dict[str, np.ndarray]) -> list[LabelMatch]:
        """Weights over every label vocabulary: one softmax over the labels most similar to the query
        across all spaces (each label seen through its English and Chinese phrasings; see
        :func:`label_weights`), so a query close to YAMNet's "Bark" gives little weight to a music
        tagger's loosely related tags. ``sims_by_space`` comes from :meth:`all_label_sims`."""
        names: list[tuple[str, int, str]] = []
        sims: list[np.ndarray] = []
        trees = {space: self.tree(space) for space in sims_by_space}
        for space, space_sims in sims_by_space.items():
            sims.append(space_sims)
            names.extend((space, i, label) for i, label in enumerate(trees[space].names))
        if not names:
            return []
        top, w = label_weights(np.concatenate(sims), temperature=self.temperature, cap=self.label_top_k)
        out: dict[str, LabelMatch] = {}
        for j, weight in zip(top, w, strict=True):
            space, i, label = names[j]
            lm = out.setdefault(space, LabelMatch(space, np.zeros(0, np.int64), np.zeros(0, np.float32), []))
            lm.indices = np.append(lm.indices, i)
            lm.weights = np.append(lm.weights, np.float32(weight))
            lm.names.append(label)
            lm.groups.append(trees[space].groups[i])
        return list(out.values())

    @staticmethod
    def label_terms(m: Columns, matches: list[LabelMatch]) -> tuple[list[Term], float]:
        """The label ranker's query: per space, the matched entries with their weights. With
        ``PREVALENCE_POWER`` > 0 an entry's weight is scaled by (1 - prevalence) ** power first (prevalence:
        its mean score over the library, kept per column part), so a label that fires on everything
        ("Outside, rural or natural") counts for less than one that singles items out; the weights are
        then renormalised. An item's label score is the weighted sum of its entry scores.

        Returns the terms and the share of the query's label weight the discount left (1.0 without it):
        how much the labels can tell apart in this library (see :data:`INFORMATIVE_FULL`)."""
        terms = [Term(lm.space, np.asarray(lm.indices, np.int64), np.asarray(lm.weights, np.float64)) for lm in matches]
        left = 1.0
        if PREVALENCE_POWER > 0 and m.n:
            before = sum(float(t.weights.sum()) for t in terms)
            for t in terms:
                prevalence = m.prevalence(t.space, t.entries)
                t.weights = t.weights * np.clip(1.0 - prevalence, 0.0, 1.0) ** PREVALENCE_POWER
            total = sum(float(t.weights.sum()) for t in terms)
            left = total / before if before > 0 else 1.0
            for t in terms:
                t.weights = t.weights / total if total > 0 else t.weights
        for t in terms:
            t.weights = t.weights.astype(np.float32)
        return terms, left

    def _readable_texts(self, candidates: list[str | None]) -> list[str]:
        """The query's renderings the encoder can read (all of them when it can read none): a
        Chinese query with characters outside its vocabulary (篝火噼啪声) is matched through its
        English rendering ("campfire crackle") instead of a generic "<unk>" vector."""
        texts = list(dict.fromkeys(t for t in candidates if t and t.strip()))
        ok = readable(self.encoder, texts)
        return [t for t, r in zip(texts, ok, strict=True) if r] or texts

    def carries(self, phrase: str) -> np.ndarray:
        """(n_items,) True for items carrying what ``phrase`` names: its closest labels in any space
        (cosine within 0.05 of the best, which must be >= 0.45) at item-level probability >= :data:`EXCLUDE_MIN`.
        This is the rule that negations ("no traffic", "不要鼓", "没有人声") exclude by."""
        m = self.matrices()
        found = np.zeros(m.n, bool)
        for space in self._spaces():
            if not m.has_space(space):
                continue
            sims = self._label_sims(space, [phrase])
            best = float(sims.max())
            if best >= 0.45:
                near = np.flatnonzero(sims >= best - 0.05)
                found |= (m.entry_scores(space, near) >= EXCLUDE_MIN).any(axis=0)
        return found

    def _exclusion_mask(self, m: Columns, pq) -> np.ndarray:
        """False for items that carry anything the query negates (see :meth:`carries`)."""
        keep = np.ones(m.n, bool)
        for phrase in pq.exclude:
            keep &= ~self.carries(phrase)
        return keep

    def search(self, query: str, *, limit: int = 10, filters: Filters | None = None) -> list[Result]:
        """Rank items for a free-text query in Chinese or English (see :mod:`soundscope.query`):
        constraints become filters or descriptor scores, negated labels are excluded, the positive
        part and its English rendering are matched against every label's bilingual phrasings.

        Each ranker hands its best :data:`CANDIDATES` items to fusion, from a structure built for it
        (label-major columns, ANN indexes, FTS5 with a LIMIT); fusion runs over their union."""
        m = self.matrices()
        if m.n == 0 or not query.strip():
            return []
        pq = self.rewrite(query) if self.rewrite is not None else parse_query(query)
        positive = pq.semantic.strip() or query
        # the taggers also know tempo and loudness words ("slow", "quiet"): let labels see them too
        styled = " ".join(w for w in (pq.tempo_word, pq.loudness, pq.text_en or positive) if w)
        styled = styled if (pq.tempo_word or pq.loudness) else ""
        texts = self._readable_texts([positive, pq.text_en, styled])
        mask = self.filter_mask(m, _with_parsed(filters, pq)) & self._exclusion_mask(m, pq)
        q = self.encoder.encode([texts[0] if texts else positive])[0]
        k = m.n if self.exact and self.exact_full_depth else max(CANDIDATES, limit)
        lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # ranker -> (rows, scores), best first
        dense: dict[str, np.ndarray] = {}  # rankers scored on every item (vectorised), for explanations
        label_sims = self.all_label_sims(texts)
        matches = [lm for lm in self.match_labels(label_sims) if m.has_space(lm.space)]
        label_q, informative = self.label_terms(m, matches)
        if self.exact:  # the reference ranking: every item scored
            label_score = m.weighted(label_q)
            lists["labels"] = top_k(label_score, mask & (label_score >= MIN_EVIDENCE["labels"]), k)
        else:  # impact lists with the threshold rule: exact, without scoring every item
            lists["labels"] = m.top_weighted(label_q, ok=mask, k=k, floor=MIN_EVIDENCE["labels"])
        wanted = parsed_descriptors(pq)
        if wanted:
            dense["descriptors"] = descriptor_scores(m, wanted)
            lists["descriptors"] = top_k(dense["descriptors"], mask & (dense["descriptors"] > 0), k)
        lists["description"] = self._description(m, q, mask, k, limit)
        words = pq.said or positive  # constraint words too: "longer", "muted" may be what was said
        lists["keyword"] = self._keyword(m, " ".join(texts), mask, k)
        spoken: dict[int, dict[str, Any]] = {}
        terms = wordmatch.terms(words, self.lexicon())
        lists["transcript"] = self._sparse(self._transcript_keyword(m, terms, spoken), mask, k)
        lists["transcript_meaning"] = self._sparse(
            self._transcript_meaning(m, self.encoder.encode([words])[0], spoken), mask, k
        )
        weights = dict(RANKER_WEIGHTS)
        strength = 0.25 if pq.spoken else label_strength(label_sims)
        strength *= float(np.clip(informative / INFORMATIVE_FULL, INFORMATIVE_MIN, 1.0))
        said = {pos: p.get("coordination", 0.0) for pos, p in spoken.items()}  # query words each transcript says
        word_mode = len(terms) >= 2 and max(said.values(), default=0.0) >= len(terms) - WORD_MODE_SLACK
        if word_mode and not pq.musical:  # "slow piano" said in a podcast: the music still comes first
            strength = min(strength, 0.4)  # some transcript says every word: the query is about words
        weights["labels"] *= strength
        weights["transcript"] *= 1.0 + 3.0 * (1.0 - strength)  # a query no sound label fits is about words
        union = np.unique(np.concatenate([rows for rows, _ in lists.values()]))
        fused = np.zeros(union.shape[0], np.float64)
        ranks: dict[str, dict[int, int]] = {}
        raw: dict[str, dict[int, float]] = {}
        for name, (rows, score) in lists.items():
            r = soft_ranks(score)
            at = np.searchsorted(union, rows)  # rows are all in the union
            ranks[name] = dict(zip(rows.tolist(), r.tolist(), strict=True))  # at most k entries
            raw[name] = dict(zip(rows.tolist(), score.tolist(), strict=True))
            if name == "transcript":  # sharper when the query is about words; a partial match counts in part
                share = np.array([said.get(i, 0.0) for i in rows.tolist()]) / max(len(terms), 1) if said else 1.0
                fused[at] += weights[name] * np.clip(share, 0.0, 1.0) / (RRF_K * strength + 1 + r)
            else:
                fused[at] += weights[name] / (RRF_K + 1 + r)
        if pq.kind:  # a kind the query implies: every candidate of that kind shares rank 0
            of_kind = m.kind_is(pq.kind)[union]
            fused[of_kind] += weights["kind"] / (RRF_K + 1)
            ranks["kind"] = dict.fromkeys(union[of_kind].tolist(), 0)
            raw["kind"] = dict.fromkeys(union[of_kind].tolist(), 1.0)
        order = np.argsort(-fused, kind="stable")
        best = union[order][fused[order] > 0][:limit]
        for name, values in dense.items():  # explanations quote the measured value, candidate or not
            raw[name] = _LookupScores(values)
        raw["labels"] = {**raw["labels"], **dict(zip(best.tolist(), m.weighted(label_q, best).tolist(), strict=True))}
        results = [
            self._text_result(
                m, int(i), float(fused[np.searchsorted(union, i)]), matches, raw, ranks, spoken, words, wanted
            )
            for i in best
        ]
        for r in results:
            r.why = localize(r.why + satisfied(pq, r, m), pq.language)
        if self._floor_applies(matches, wanted, pq, word_mode):
            for r in results:
                r.weak = r.evidence.get("labels", 0.0) < WEAK_LABEL and not (
                    r.evidence.get("transcript", 0.0) > 0 or r.evidence.get("transcript_meaning", 0.0) > 0
                )
            results = [r for r in results if not r.weak] + [r for r in results if r.weak]
        return results

    @staticmethod
    def _floor_applies(matches: list[LabelMatch], wanted: dict[str, Any], pq, word_mode: bool) -> bool:
        """Whether the confidence floor holds for this query: it asks for a sound event (its heaviest label
        is not a music tag, whose probabilities run lower) and for nothing measured, spoken or said."""
        if not matches or wanted or pq.spoken or word_mode:
            return False
        best = max(matches, key=lambda lm: float(lm.weights.max()) if lm.weights.size else 0.0)
        return not best.space.startswith("musicnn")

    @staticmethod
    def _sparse(score: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """A ranker's best ``k`` rows among those with evidence (score > 0) that pass ``mask`` (the mask is
        read at the few rows with evidence only)."""
        rows = np.flatnonzero(score > 0)
        return best_of(score, rows[mask[rows]], k)

    def _description(
        self, m: Columns, q: np.ndarray, mask: np.ndarray, k: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items by cosine between the query and their stored description, through the
        description vector index; a filter that leaves few items is searched exactly over those."""
        try:
            index = self.store.vectors(DESCRIPTION_SPACE)
        except KeyError:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        allowed = int(mask.sum())
        if allowed == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.exact:
            gen = self.store.catalog.generation(DESCRIPTION_SPACE)
            if self._exact_desc is None or self._exact_desc[0] != gen:
                self._exact_desc = (gen, *self.store.catalog.item_matrix(DESCRIPTION_SPACE, "embedding"))
            _, got, vecs = self._exact_desc
            return self._exact_top(
                m, got, vecs, q, mask, k if self.exact_full_depth else min(k, max(ANN_CANDIDATES, limit))
            )
        if allowed < m.n and allowed <= EXACT_FILTERED:
            got, vecs = self.store.catalog.item_vectors(m.ids[mask], DESCRIPTION_SPACE)
            return self._exact_top(m, got, vecs, q, mask, k)
        k = min(k, max(ANN_CANDIDATES, limit))  # an HNSW search costs about k: ask for what fusion can use
        fetch = min(len(index), k if allowed == m.n else k * 4)
        keys, sims = index.search(q, fetch)
        rows = m.positions(keys)
        ok = rows >= 0
        rows, sims = rows[ok], sims[ok]
        keep = mask[rows]
        return rows[keep][:k], sims[keep][:k].astype(np.float32)

    @staticmethod
    def _exact_top(
        m: Columns, got: np.ndarray, vecs: np.ndarray, q: np.ndarray, mask: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of the items ``got`` (m,) by exact cosine of their vectors (m, d) with ``q``, within ``mask``."""
        if got.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        score, has = np.zeros(m.n, np.float32), np.zeros(m.n, bool)
        rows = m.positions(got)
        score[rows[rows >= 0]] = (vecs @ q)[rows >= 0]
        has[rows[rows >= 0]] = True
        return top_k(score, mask & has, k)

    def lexicon(self) -> wordmatch.Lexicon:
        """The transcripts' vocabulary (cached until passages change), for error-tolerant word matching."""
        gen = self.store.catalog.generation("passages")
        if self._lexicon is None or self._lexicon[0] != gen:
            self._lexicon = (gen, wordmatch.Lexicon(self.store.catalog.transcript_words()))
        return self._lexicon[1]

    def _transcript(self, item_id: int) -> list[tuple[dict[str, Any], list[str]]]:
        """An item's passages with their index tokens, cached until passages change (at most
        :data:`TRANSCRIPT_CACHE` items are kept)."""
        gen = self.store.catalog.generation("passages")
        if self._transcripts[0] != gen or len(self._transcripts[1]) >= TRANSCRIPT_CACHE:
            self._transcripts = (gen, {})
        cache = self._transcripts[1]
        if item_id not in cache:
            passages = self.store.catalog.passages_of(item_id, with_words=False)
            cache[item_id] = [(p, textnorm.index_text(p["text"]).split()) for p in passages]
        return cache[item_id]

    def _transcript_keyword(
        self, m: Columns, terms: list[wordmatch.Term], spoken: dict[int, dict[str, Any]]
    ) -> np.ndarray:
        """How well each item's transcript says the query words (see :mod:`wordmatch`).

        Score: :data:`COORDINATION_STEP` x the coordination of the whole transcript (1 per word said
        exactly, less for a split, stem or sound-alike variant), plus the BM25 of its best passage, up
        to :data:`PROXIMITY` when a passage holds the words close together and up to :data:`COVERAGE`
        when the query words are most of what the transcript says. So a transcript saying every word
        outranks one saying some, whatever BM25 says; among those saying all, the one the query
        describes best comes first. Fills ``spoken`` with the passage saying most of it (and, per
        item, ``coordination`` and the transcript words that matched)."""
        out = np.zeros(m.n, np.float32)
        expr = wordmatch.fts_expression(terms)
        hits = self.store.catalog.fts_passages(expr, limit=2000) if expr else []
        if not hits:
            return out
        info = self.store.catalog.passages([pid for pid, _ in hits])
        best: dict[int, tuple[float, dict[str, Any]]] = {}
        for pid, score in hits:  # best first
            p = info.get(pid)
            if p is None:
                continue
            pos = m.position(p["item_id"])
            if pos >= 0 and pos not in best:
                best[pos] = (score, p)
        for rank, (pos, (score, p)) in enumerate(best.items()):
            if rank >= COORDINATION_TOP:  # bounded work: beyond the best items, BM25 alone orders them
                out[pos] = score
                spoken[pos] = {**p, "how": "words"}
                continue
            transcript = self._transcript(int(m.ids[pos]))
            passages, tokens = [p for p, _ in transcript], [t for _, t in transcript]
            whole = wordmatch.coordination(terms, [t for ts in tokens for t in ts])
            own = [wordmatch.coordination(terms, ts) for ts in tokens]
            k = max(range(len(own)), key=lambda j: (own[j].score, -own[j].span)) if own else -1
            shown = passages[k] if k >= 0 and own[k].score > 0 else p
            near = own[k] if k >= 0 else whole
            proximity = len(near.found) / near.span if len(near.found) >= 2 and near.span else 0.0
            content = {t for ts in tokens for t in ts if t not in textnorm.STOPWORDS}
            coverage = len(whole.found) / max(len(content), 1)  # how much of what it says the query names
            out[pos] = whole.score * COORDINATION_STEP + score + PROXIMITY * proximity + COVERAGE * coverage
            spoken[pos] = {
                "item_id": int(m.ids[pos]),
                "start": shown["start"],
                "end": shown["end"],
                "text": shown["text"],
                "how": "words",
                "said": sorted({t for v in whole.found.values() for t in v}),
                "coordination": whole.score,
            }
        return out

    def _transcript_meaning(self, m: Columns, q: np.ndarray, spoken: dict[int, dict[str, Any]]) -> np.ndarray:
        """Best cosine between the query and any passage of each item, kept when >= 0.35; the passages
        come from the transcript vector index (its best 1000)."""
        out = np.zeros(m.n, np.float32)
        try:
            index = self.store.vectors(TRANSCRIPT_SPACE)
        except KeyError:
            return out
        if len(index) == 0:
            return out
        pids, sims = index.search(q, min(len(index), 1000))
        keep = sims >= MEANING_MIN
        pids, sims = pids[keep], sims[keep]
        owner = self.store.catalog.passage_items(pids.tolist())
        best_pid: dict[int, int] = {}
        for pid, sim in zip(pids.tolist(), sims.tolist(), strict=True):  # best first, at most 1000
            pos = m.position(owner.get(pid, -1))
            if pos >= 0 and out[pos] == 0:
                out[pos] = sim
                best_pid[pos] = pid
        info = self.store.catalog.passages(best_pid.values())
        for pos, pid in best_pid.items():
            spoken.setdefault(pos, {**info[pid], "how": "meaning"})
        return out

    def _keyword(self, m: Columns, query: str, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items by BM25 over :data:`KEYWORD_COLUMNS` (FTS5 in BM25 order with a LIMIT)."""
        expr = textnorm.fts_query(query)
        if expr and KEYWORD_COLUMNS:
            expr = f"{{{' '.join(KEYWORD_COLUMNS)}}} : ({expr})"
        hits = self.store.catalog.fts(expr, limit=k * 2, exact=self.exact) if expr else []
        if not hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = m.positions([h[0] for h in hits])
        score = np.array([h[1] for h in hits], np.float32)
        ok = rows >= 0
        ok[ok] = mask[rows[ok]]
        rows, score = rows[ok][:k], score[ok][:k]
        order = np.argsort(-score, kind="stable")
        return rows[order], score[order]

    def filter_mask(self, m: Columns, f: Filters | None) -> np.ndarray:
        """(n,) True for live items that meet every filter (vectorised over the columns; a folder
        filter is an indexed range scan of the catalog's paths)."""
        mask = m.alive.copy()
        if f is None:
            return mask
        if f.min_duration is not None:
            mask &= m.durations >= f.min_duration
        if f.max_duration is not None:
            mask &= m.durations <= f.max_duration
        if f.kind:
            mask &= m.kind_is(f.kind)
        if f.min_tempo is not None or f.max_tempo is not None:
            lo = f.min_tempo if f.min_tempo is not None else 0.0
            hi = f.max_tempo if f.max_tempo is not None else np.inf
            mask &= (m.tempo > 0) & (m.tempo >= lo) & (m.tempo <= hi)
        if f.path_prefix:
            prefix = os.path.abspath(os.path.expanduser(f.path_prefix))
            under = np.zeros(m.n, bool)
            rows = m.positions(self.store.catalog.ids_under(prefix))
            under[rows[rows >= 0]] = True
            mask &= under
        if f.label:
            mask &= self._label_mask(m, f.label, f.label_min)
        return mask

    def _label_mask(self, m: Columns, label: str, threshold: float) -> np.ndarray:
        for space, info in self._spaces().items():
            lowered = [x.lower() for x in info["labels"]]
            if label.lower() in lowered:
                if not m.has_space(space):
                    return np.zeros(m.n, bool)
                return m.label_column(space, lowered.index(label.lower())) >= threshold
        raise ValueError(f"unknown label {label!r}: see `soundscope labels`")

    def _item_scores(self, m: Columns, row: int, space: str) -> np.ndarray:
        """(n_labels,) item-level label scores of the item at ``row``: one catalog row (reading a column of
        the label-major parts would touch a page per label)."""
        got = self.store.catalog.item_scores(int(m.ids[row]), space)
        return got if got is not None else np.zeros(m.widths.get(space, 0), np.float32)

    def _best_segment(self, item_id: int, matches: list[LabelMatch]) -> tuple[float, float]:
        best, span = -1.0, (0.0, 0.0)
        for lm in matches:
            for _, start, end, scores, _ in self.store.catalog.segments_of(item_id, lm.space):
                if scores is not None:
                    s = float(lm.values(scores) @ lm.weights)
                    if s > best:
                        best, span = s, (start, end)
        return span

    def _text_result(
        self,
        m: Columns,
        i: int,
        fused: float,
        matches: list[LabelMatch],
        raw: dict[str, Any],
        ranks: dict[str, dict[int, int]],
        spoken: dict[int, dict[str, Any]],
        query: str,
        wanted: dict[str, Any],
    ) -> Result:
        row = self.store.catalog.item(int(m.ids[i]))
        assert row is not None
        why: list[str] = []
        kinds: list[str] = []
        rows = {lm.space: self._item_scores(m, i, lm.space) for lm in matches}
        values = {lm.space: lm.values(rows[lm.space]) for lm in matches}
        contributions = sorted(
            (
                (float(values[lm.space][k] * w), lm.names[k], float(values[lm.space][k]), lm.space)
                for lm in matches
                for k, w in enumerate(lm.weights)
            ),
            reverse=True,
        )
        strong = [(name, p, space) for c, name, p, space in contributions[:3] if p >= 0.05 and c > 0.005]
        if strong and ranks["labels"].get(i, 1 << 30) < 50:
            why.append("sounds like: " + ", ".join(f"{name} {p:.2f}" for name, p, _ in strong))
            kinds.append("music" if all(space.startswith("musicnn") for _, _, space in strong) else "sound")
        passage = spoken.get(i)
        if passage:
            said = mark_words(passage["text"], query, also=passage.get("said", ()))
            how = "says" if passage["how"] == "words" else "talks about it"
            why.append(f"{how} at {describe.format_clock(passage['start'])}: “{said}”")
            kinds.append("speech")
        if ranks["description"].get(i, 1 << 30) < 10:
            why.append(f"description matches ({raw['description'].get(i, 0.0):.2f}): {row.description}")
        if "descriptors" in raw and raw["descriptors"].get(i, 0.0) > 0:
            why.append(f"measured {measured_text(m, i, wanted)} (fit {raw['descriptors'].get(i, 0.0):.2f})")
            if "tempo" in wanted:
                kinds.append("music")
        if raw["keyword"].get(i, 0.0) > 0:
            why.append("keywords match name/tags/description")
            kinds.append("text")
        spoken_leads = passage is not None and (
            ranks["transcript"].get(i, 1 << 30) <= ranks["labels"].get(i, 1 << 30)
            or ranks["transcript_meaning"].get(i, 1 << 30) < ranks["labels"].get(i, 1 << 30)
        )
        if spoken_leads:
            start, end = float(passage["start"]), float(passage["end"])
        else:
            start, end = self._best_segment(row.id, matches)
            if row.duration_s > analyze.SEGMENT_S * 1.5:
                why.append(f"best moment {describe.format_clock(start)}")
        primary = next((s for s in self._spaces() if m.has_space(s)), None)
        labels = (
            describe.top_labels(self._item_scores(m, i, primary), self._spaces()[primary]["labels"], k=5)
            if primary
            else []
        )
        evidence = {name: float(raw[name].get(i, 0.0)) for name in raw}
        return Result(
            row.id,
            row.path,
            fused,
            start,
            end,
            why or ["weak match"],
            row.description,
            row.duration_s,
            labels,
            evidence,
            list(dict.fromkeys(kinds)) or ["text"],
        )

    # -- query by example -----------------------------------------------------------------------
    def similar(
        self,
        analyzer: Analyzer,
        query: analyze.Analysis | np.ndarray,
        *,
        limit: int = 10,
        filters: Filters | None = None,
        exclude_ids: set[int] | None = None,
        query_scores: np.ndarray | None = None,
    ) -> list[Result]:
        """Items whose best segment is nearest (cosine) to the query: an analysed clip, or a (dim,) vector
        (with ``query_scores``, its (n_labels,) label probabilities, if known). The nearest segments come
        from the vector index; their items are then ranked by :func:`example_similarity`, which adds the
        cosine of the square-rooted label probabilities when both sides have them, and ranked again with
        the query expanded by its best :data:`QBE_EXPAND` neighbours (:func:`expanded_similarity`; their
        exact vectors come with the index's re-ranked head, so it reads nothing more)."""
        m = self.matrices()
        vec = query if isinstance(query, np.ndarray) else query.item_embeddings.get(analyzer.name)
        if not isinstance(query, np.ndarray):
            query_scores = query.item_scores.get(analyzer.name)
        if m.n == 0 or vec is None:
            return []
        mask = self.filter_mask(m, filters)
        index = self.store.vectors(analyzer.name)
        exclude = exclude_ids or set()
        # the neighbours re-ranked with labels: the head the vector index re-scores exactly; 200 cost 16 ms
        # at 10^6 items, RERANK (100) about 10, with the same ESC-10 P@10 (0.938)
        k = min(len(index), max(limit * 10, RERANK))
        keys, sims, vecs = index.search_vectors(vec, k)
        seg = self.store.catalog.segment_items(keys.tolist())
        pos = m.positions([seg[key][0] if key in seg else -1 for key in keys.tolist()])  # one vectorised look-up
        best: dict[int, tuple[float, float, float]] = {}
        row_of: dict[int, int] = {}
        at: dict[int, int] = {}  # item -> index of its best segment in keys
        for j, (key, sim, p) in enumerate(zip(keys.tolist(), sims.tolist(), pos.tolist(), strict=True)):
            item_id, start, end = seg.get(key, (-1, 0.0, 0.0))
            if key in seg and item_id not in exclude and item_id not in best and p >= 0 and mask[p]:
                best[item_id], row_of[item_id], at[item_id] = (sim, start, end), p, j
        space = analyzer.name
        ids = list(best)
        score = np.array([best[i][0] for i in ids], np.float32)  # each item's best segment cosine
        rows = m.label_rows(space, [row_of[i] for i in ids]) if ids and m.has_space(space) else None
        labelled = query_scores is not None and rows is not None and QBE_LABEL_WEIGHT > 0
        if labelled:
            score = example_similarity(score, query_scores, rows)
        direct = dict(zip(ids, score.tolist(), strict=True))  # the clip's own similarity, before expansion
        if QBE_EXPAND > 0 and vecs is not None and len(ids) > QBE_EXPAND:
            cand = vecs[[at[i] for i in ids]]
            score = expanded_similarity(vec, cand, score, query_scores if labelled else None, rows)
        out = []
        for j in np.argsort(-score, kind="stable")[:limit].tolist():
            item_id, sim, (_, start, end) = ids[j], float(score[j]), best[ids[j]]
            row = self.store.catalog.item(item_id)
            assert row is not None
            pos = m.position(item_id)
            scores = self._item_scores(m, pos, space) if m.has_space(space) else None
            labels = describe.top_labels(scores, analyzer.labels, k=5) if scores is not None else []
            why = [f"sounds similar ({space} embedding and labels, similarity {direct[item_id]:.3f})"]
            if labels:
                why.append("shares: " + ", ".join(n for n, _ in labels[:3]))
            if row.duration_s > analyze.SEGMENT_S * 1.5:
                why.append(f"closest moment {start:.0f}-{end:.0f} s")
            out.append(
                Result(
                    row.id,
                    row.path,
                    sim,
                    start,
                    end,
                    why,
                    row.description,
                    row.duration_s,
                    labels,
                    {"cosine": direct[item_id], "expanded": sim},
                    ["music" if space.startswith("musicnn") else "sound"],
                )
            )
        return out
