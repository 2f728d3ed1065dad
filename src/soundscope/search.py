"""Search: text queries and query-by-example over a :class:`Store`, ranked and explained.

Text queries run three rankers and fuse them with weighted reciprocal-rank fusion:

* ``labels``: zero-shot label matching. The query and every model label are embedded by the
  multilingual text encoder; similarities become weights over labels (softmax over the best
  few); an item scores the weighted sum of its label probabilities.
* ``description``: cosine between the query and each item's stored description.
* ``keyword``: SQLite FTS5 (BM25) over file names, tags and descriptions.

Query by example embeds the clip with the same audio model, finds the nearest segments in the
vector index and keeps each file's best segment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import analyze, describe, textnorm
from .ingest import DESCRIPTION_SPACE
from .store import Store
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
MEANING_MIN = 0.35  # passage-query cosine below which a passage is not evidence
EXCLUDE_MIN = 0.3  # item-level probability of a negated label above which an item is excluded


def tied_ranks(sorted_scores: np.ndarray, *, rel_tol: float = 1e-3) -> np.ndarray:
    """0-based competition ranks of descending scores; scores within ``rel_tol`` of the best score's
    scale share a rank, so near-identical evidence (e.g. every speech clip's "Speech" probability)
    adds no arbitrary order to the fusion."""
    if sorted_scores.size == 0:
        return np.zeros(0, np.int64)
    scale = max(float(np.abs(sorted_scores).max()), 1e-12)
    keys = np.round(sorted_scores / (scale * rel_tol))
    new_group = np.concatenate([[True], keys[1:] != keys[:-1]])
    firsts = np.flatnonzero(new_group)
    return firsts[np.cumsum(new_group) - 1]


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


def satisfied(pq, r: Result, m: _Matrices) -> list[str]:
    """The parsed constraints this result meets (only those it meets): duration, tempo, kind, exclusions."""
    out = []
    if pq.duration:
        lo, hi = pq.duration
        rng = f"{'' if lo is None else describe.format_clock(lo)}–{'' if hi is None else describe.format_clock(hi)}"
        out.append(f"duration {describe.format_clock(r.duration_s)} within {rng}")
    pos = m.position(r.item_id)
    if pq.tempo and m.tempo[pos] > 0 and (pq.tempo[0] or 0) <= m.tempo[pos] <= (pq.tempo[1] or 1000):
        lo, hi = pq.tempo
        out.append(
            f"tempo {m.tempo[pos]:.0f} BPM (wanted {'' if lo is None else f'{lo:.0f}'}–"
            f"{'' if hi is None else f'{hi:.0f}'} BPM)"
        )
    if pq.kind and m.kinds[pos] == pq.kind:
        out.append(f"kind {pq.kind}")
    if pq.exclude:
        out.append("excludes " + ", ".join(pq.exclude))
    return out


def mark_words(text: str, query: str, *, width: int = 160) -> str:
    """``text`` with the query's words wrapped in «», cut to about ``width`` characters around the first."""
    wanted = {w for w in textnorm.segment(query) if w not in textnorm.STOPWORDS}
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


def descriptor_scores(m: _Matrices, wanted: dict[str, Any]) -> np.ndarray:
    """How well each item's measured tempo and loudness fit ``wanted``, in [0, 1] (0 if unmeasured).

    tempo (lo, hi) BPM: 1 inside the range, falling linearly to 0 at 40 BPM outside, scaled by the
    tempo confidence; loudness "quiet": 1 at <= -35
    LUFS falling to 0 at -14; "loud": the reverse.
    """
    score = np.zeros(m.ids.shape[0], np.float32)
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
    return score / max(n, 1)


@dataclass
class Filters:
    """Constraints every result must meet."""

    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    kind: str | None = None  # music | speech | sound
    path_prefix: str | None = None
    label: str | None = None  # a model label the item must carry (item-level probability >= label_min)
    label_min: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "label_min"}


@dataclass
class LabelMatch:
    """How a text query maps onto one label space."""

    space: str
    indices: np.ndarray  # (k,) label columns
    weights: np.ndarray  # (k,) summing to 1
    names: list[str]


def positions(ids: np.ndarray, wanted: Any) -> np.ndarray:
    """Positions of the item ids ``wanted`` in the ascending array ``ids``; -1 where absent."""
    wanted = np.atleast_1d(np.asarray(wanted, np.int64))
    if ids.size == 0:
        return np.full(wanted.shape[0], -1, np.int64)
    pos = np.searchsorted(ids, wanted)
    found = (pos < ids.shape[0]) & (ids[np.minimum(pos, ids.shape[0] - 1)] == wanted)
    return np.where(found, pos, -1)


@dataclass
class _Matrices:
    generation: int
    ids: np.ndarray  # (n,) item ids, ascending
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # space -> (n, n_labels)
    desc: np.ndarray | None = None  # (n, 512)
    durations: np.ndarray | None = None
    kinds: np.ndarray | None = None
    paths: list[str] = field(default_factory=list)
    tempo: np.ndarray | None = None  # (n,) BPM, 0 where unmeasured (non-music)
    tempo_conf: np.ndarray | None = None
    lufs: np.ndarray | None = None  # (n,) integrated loudness; -120 where unmeasured

    def position(self, item_id: int) -> int:
        """Row of ``item_id`` in these matrices, -1 if absent."""
        return int(positions(self.ids, item_id)[0])


@lru_cache(maxsize=8)
def _phrasing_embeddings(encoder: TextEncoder, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every English and Chinese phrasing of each label: (P, dim) and the label index (P,)."""
    from .query import label_phrasings

    table = label_phrasings()
    texts, owner = [], []
    for i, label in enumerate(labels):
        for phrase in dict.fromkeys([label, *table.get(label, [])]):
            texts.append(phrase)
            owner.append(i)
    return encoder.encode(texts), np.asarray(owner, np.int64)


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
    if pq.duration:
        lo, hi = pq.duration
        if lo is not None:
            f.min_duration = max(lo, f.min_duration or 0.0)
        if hi is not None:
            f.max_duration = min(hi, f.max_duration) if f.max_duration is not None else hi
    return f


def parsed_descriptors(pq) -> dict[str, Any]:
    """What the measured descriptors should satisfy: {"tempo": (lo, hi)} and/or {"loudness": word}."""
    out: dict[str, Any] = {}
    if pq.tempo:
        out["tempo"] = pq.tempo
    if pq.loudness:
        out["loudness"] = pq.loudness
    return out


class Searcher:
    """Answers queries over one store; caches item matrices until the catalog changes."""

    def __init__(self, store: Store, encoder: TextEncoder, *, label_top_k: int = 5, temperature: float = 0.05) -> None:
        self.store = store
        self.encoder = encoder
        self.label_top_k = label_top_k
        self.temperature = temperature
        self._m: _Matrices | None = None
        self._passages: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- cached state ---------------------------------------------------------------------------
    def _spaces(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.store.catalog.models().items() if v["labels"]}

    def matrices(self) -> _Matrices:
        cat = self.store.catalog
        gen = cat.generation("items")
        if self._m is not None and self._m.generation == gen:
            return self._m
        rows = cat.items()
        ids = np.array([r.id for r in rows], np.int64)
        m = _Matrices(gen, ids, paths=[r.path for r in rows])
        m.durations = np.array([r.duration_s for r in rows], np.float32)
        m.kinds = np.array([r.kind for r in rows], dtype=object)
        music = [r.features.get("music") or {} for r in rows]
        m.tempo = np.array([float(x.get("tempo_bpm") or 0.0) for x in music], np.float32)
        m.tempo_conf = np.array([float(x.get("tempo_confidence") or 0.0) for x in music], np.float32)
        m.lufs = np.array([float(x.get("loudness_lufs") or -120.0) for x in music], np.float32)
        for space, info in self._spaces().items():
            m.scores[space] = self._aligned(ids, *cat.item_matrix(space, "scores"), len(info["labels"]))
        m.desc = self._aligned(ids, *cat.item_matrix(DESCRIPTION_SPACE, "embedding"), self.encoder.dim)
        self._m = m
        return m

    @staticmethod
    def _aligned(ids: np.ndarray, got_ids: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
        out = np.zeros((ids.shape[0], width), np.float32)
        if got_ids.size:
            pos = positions(ids, got_ids)
            out[pos[pos >= 0]] = rows[pos >= 0]
        return out

    # -- text search ----------------------------------------------------------------------------
    def _label_sims(self, space: str, texts: list[str]) -> np.ndarray:
        """(n_labels,) best cosine between any of ``texts`` and any phrasing of each label of ``space``."""
        labels = tuple(self._spaces()[space]["labels"])
        emb, owner = _phrasing_embeddings(self.encoder, labels)
        per_phrase = (emb @ self.encoder.encode(texts).T).max(axis=1)
        sims = np.full(len(labels), -1.0, np.float32)
        np.maximum.at(sims, owner, per_phrase)
        return sims

    def all_label_sims(self, texts: str | list[str]) -> dict[str, np.ndarray]:
        """space -> (n_labels,) similarities of the query to every label (see :meth:`_label_sims`)."""
        texts = [texts] if isinstance(texts, str) else texts
        return {space: self._label_sims(space, texts) for space in self._spaces()}

    def match_labels(self, sims_by_space: dict[str, np.ndarray]) -> list[LabelMatch]:
        """Weights over every label vocabulary: one softmax over the ``label_top_k`` labels most similar
        to the query across all spaces (each label seen through its English and Chinese phrasings), so a
        query close to YAMNet's "Bark" gives little weight to a music tagger's loosely related tags.
        ``sims_by_space`` comes from :meth:`all_label_sims`."""
        spaces = self._spaces()
        names: list[tuple[str, int, str]] = []
        sims: list[np.ndarray] = []
        for space, space_sims in sims_by_space.items():
            sims.append(space_sims)
            names.extend((space, i, label) for i, label in enumerate(spaces[space]["labels"]))
        if not names:
            return []
        all_sims = np.concatenate(sims)
        top = np.argsort(-all_sims)[: self.label_top_k]
        w = np.exp((all_sims[top] - all_sims[top[0]]) / self.temperature)
        w /= w.sum()
        out: dict[str, LabelMatch] = {}
        for j, weight in zip(top, w, strict=True):
            space, i, label = names[j]
            lm = out.setdefault(space, LabelMatch(space, np.zeros(0, np.int64), np.zeros(0, np.float32), []))
            lm.indices = np.append(lm.indices, i)
            lm.weights = np.append(lm.weights, np.float32(weight))
            lm.names.append(label)
        return list(out.values())

    def carries(self, phrase: str) -> np.ndarray:
        """(n_items,) True for items carrying what ``phrase`` names: its closest labels in any space
        (cosine within 0.05 of the best, which must be >= 0.45) at item-level probability >= :data:`EXCLUDE_MIN`.
        This is the rule that negations ("no traffic", "不要鼓", "没有人声") exclude by."""
        m = self.matrices()
        found = np.zeros(m.ids.shape[0], bool)
        for space in m.scores:
            sims = self._label_sims(space, [phrase])
            best = float(sims.max())
            if best >= 0.45:
                found |= (m.scores[space][:, np.flatnonzero(sims >= best - 0.05)] >= EXCLUDE_MIN).any(axis=1)
        return found

    def _exclusion_mask(self, m: _Matrices, pq) -> np.ndarray:
        """False for items that carry anything the query negates (see :meth:`carries`)."""
        keep = np.ones(m.ids.shape[0], bool)
        for phrase in pq.exclude:
            keep &= ~self.carries(phrase)
        return keep

    def search(self, query: str, *, limit: int = 10, filters: Filters | None = None) -> list[Result]:
        """Rank items for a free-text query in Chinese or English (see :mod:`soundscope.query`):
        constraints become filters or descriptor scores, negated labels are excluded, the positive
        part and its English rendering are matched against every label's bilingual phrasings."""
        m = self.matrices()
        if m.ids.size == 0 or not query.strip():
            return []
        pq = parse_query(query)
        positive = pq.semantic.strip() or query
        # the taggers also know tempo and loudness words ("slow", "quiet"): let labels see them too
        styled = " ".join(w for w in (pq.tempo_word, pq.loudness, pq.text_en or positive) if w)
        styled = styled if (pq.tempo_word or pq.loudness) else ""
        texts = list(dict.fromkeys(t for t in (positive, pq.text_en, styled) if t and t.strip()))
        mask = self._mask(m, _with_parsed(filters, pq)) & self._exclusion_mask(m, pq)
        q = self.encoder.encode([positive])[0]
        rankings: dict[str, np.ndarray] = {}
        raw: dict[str, np.ndarray] = {}
        label_sims = self.all_label_sims(texts)
        matches = [lm for lm in self.match_labels(label_sims) if lm.space in m.scores]
        label_score = np.zeros(m.ids.shape[0], np.float32)
        for lm in matches:
            label_score += m.scores[lm.space][:, lm.indices] @ lm.weights
        raw["labels"] = label_score
        if pq.kind:
            raw["kind"] = (m.kinds == pq.kind).astype(np.float32)
        wanted = parsed_descriptors(pq)
        if wanted:
            raw["descriptors"] = descriptor_scores(m, wanted)
        raw["description"] = m.desc @ q if m.desc is not None else np.zeros_like(label_score)
        words = pq.spoken or positive
        raw["keyword"] = self._keyword_scores(m, " ".join(texts))
        spoken: dict[int, dict[str, Any]] = {}
        raw["transcript"] = self._transcript_keyword(m, words, spoken)
        raw["transcript_meaning"] = self._transcript_meaning(m, self.encoder.encode([words])[0], spoken)
        weights = dict(RANKER_WEIGHTS)
        strength = 0.25 if pq.spoken else label_strength(label_sims)
        n_terms = len(textnorm.query_terms(words))
        if n_terms >= 2 and raw["transcript"].max(initial=0.0) >= n_terms * COORDINATION_STEP:
            strength = min(strength, 0.4)  # some transcript says every word: the query is (also) about words
        weights["labels"] *= strength
        weights["transcript"] *= 1.0 + 3.0 * (1.0 - strength)  # a query no sound label fits is about words
        for name, score in raw.items():
            floor = MIN_EVIDENCE.get(name)
            cand = np.flatnonzero(
                mask & (score > 0) if name in SPARSE_RANKERS else mask if floor is None else mask & (score >= floor)
            )
            rankings[name] = cand[np.argsort(-score[cand], kind="stable")]
        fused = np.zeros(m.ids.shape[0], np.float64)
        ranks: dict[str, dict[int, int]] = {}
        for name, order in rankings.items():
            r = tied_ranks(raw[name][order])
            ranks[name] = {int(i): int(k) for i, k in zip(order, r, strict=True)}
            k = RRF_K * strength if name == "transcript" else RRF_K  # sharper when the query is about words
            fused[order] += weights[name] / (k + 1 + r)
        best = [i for i in np.argsort(-fused, kind="stable") if mask[i] and fused[i] > 0][:limit]
        results = [self._text_result(m, int(i), float(fused[i]), matches, raw, ranks, spoken, words) for i in best]
        for r in results:
            r.why = localize(r.why + satisfied(pq, r, m), pq.language)
        return results

    def _passage_matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gen = self.store.catalog.generation("passages")
        if self._passages is None or self._passages[0] != gen:
            self._passages = (gen, *self.store.catalog.passage_matrix())
        return self._passages[1:]

    def _transcript_keyword(self, m: _Matrices, query: str, spoken: dict[int, dict[str, Any]]) -> np.ndarray:
        """Coordination-level match of the query words over each item's whole transcript, then BM25 of
        its best passage: an item whose transcript holds every query word (in any of its passages)
        outranks one holding some. Fills ``spoken`` with each item's best passage."""
        out = np.zeros(m.ids.shape[0], np.float32)
        expr = textnorm.fts_query(query)
        terms = textnorm.query_terms(query)
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
            passages = self.store.catalog.passages_of(int(m.ids[pos]))
            tokens = [set(textnorm.index_text(x["text"]).split()) for x in passages]
            everything = set().union(*tokens) if tokens else set()
            matched = sum(any(set(alt.split()) <= everything for alt in term) for term in terms)
            out[pos] = matched * COORDINATION_STEP + score
            own = [sum(any(set(alt.split()) <= t for alt in term) for term in terms) for t in tokens]
            shown = passages[int(np.argmax(own))] if own and max(own) > 0 else p  # the passage saying most of it
            spoken[pos] = {
                "item_id": int(m.ids[pos]),
                "start": shown["start"],
                "end": shown["end"],
                "text": shown["text"],
                "how": "words",
            }
        return out

    def _transcript_meaning(self, m: _Matrices, q: np.ndarray, spoken: dict[int, dict[str, Any]]) -> np.ndarray:
        """Best cosine between the query and any passage of each item, kept when >= 0.35."""
        out = np.zeros(m.ids.shape[0], np.float32)
        pids, items, vecs = self._passage_matrix()
        if pids.size == 0:
            return out
        sims = vecs @ q
        order = np.argsort(-sims)
        order = order[sims[order] >= MEANING_MIN][:1000]
        best_pid: dict[int, int] = {}
        for j in order:
            pos = m.position(items[j])
            if pos >= 0 and out[pos] == 0:
                out[pos] = sims[j]
                best_pid[pos] = int(pids[j])
        info = self.store.catalog.passages(best_pid.values())
        for pos, pid in best_pid.items():
            spoken.setdefault(pos, {**info[pid], "how": "meaning"})
        return out

    def _keyword_scores(self, m: _Matrices, query: str) -> np.ndarray:
        out = np.zeros(m.ids.shape[0], np.float32)
        expr = textnorm.fts_query(query)
        if not expr:
            return out
        hits = self.store.catalog.fts(expr, limit=max(200, m.ids.shape[0] // 10))
        if hits:
            pos = positions(m.ids, [h[0] for h in hits])
            out[pos[pos >= 0]] = np.array([h[1] for h in hits], np.float32)[pos >= 0]
        return out

    def _mask(self, m: _Matrices, f: Filters | None) -> np.ndarray:
        mask = np.ones(m.ids.shape[0], bool)
        if f is None:
            return mask
        if f.min_duration is not None:
            mask &= m.durations >= f.min_duration
        if f.max_duration is not None:
            mask &= m.durations <= f.max_duration
        if f.kind:
            mask &= m.kinds == f.kind
        if f.path_prefix:
            prefix = os.path.abspath(os.path.expanduser(f.path_prefix))
            mask &= np.array([p == prefix or p.startswith(prefix.rstrip("/") + "/") for p in m.paths], bool)
        if f.label:
            mask &= self._label_mask(m, f.label, f.label_min)
        return mask

    def _label_mask(self, m: _Matrices, label: str, threshold: float) -> np.ndarray:
        for space, info in self._spaces().items():
            lowered = [x.lower() for x in info["labels"]]
            if label.lower() in lowered:
                return m.scores[space][:, lowered.index(label.lower())] >= threshold
        raise ValueError(f"unknown label {label!r}: see `soundscope labels`")

    def _best_segment(self, item_id: int, matches: list[LabelMatch]) -> tuple[float, float]:
        best, span = -1.0, (0.0, 0.0)
        for lm in matches:
            for _, start, end, scores, _ in self.store.catalog.segments_of(item_id, lm.space):
                if scores is not None:
                    s = float(scores[lm.indices] @ lm.weights)
                    if s > best:
                        best, span = s, (start, end)
        return span

    def _text_result(
        self,
        m: _Matrices,
        i: int,
        fused: float,
        matches: list[LabelMatch],
        raw: dict[str, np.ndarray],
        ranks: dict[str, dict[int, int]],
        spoken: dict[int, dict[str, Any]],
        query: str,
    ) -> Result:
        row = self.store.catalog.item(int(m.ids[i]))
        assert row is not None
        why: list[str] = []
        kinds: list[str] = []
        contributions = sorted(
            (
                (float(m.scores[lm.space][i, j] * w), lm.names[k], float(m.scores[lm.space][i, j]), lm.space)
                for lm in matches
                for k, (j, w) in enumerate(zip(lm.indices, lm.weights, strict=True))
            ),
            reverse=True,
        )
        strong = [(name, p, space) for c, name, p, space in contributions[:3] if p >= 0.05 and c > 0.005]
        if strong and ranks["labels"].get(i, 1 << 30) < 50:
            why.append("sounds like: " + ", ".join(f"{name} {p:.2f}" for name, p, _ in strong))
            kinds.append("music" if all(space.startswith("musicnn") for _, _, space in strong) else "sound")
        passage = spoken.get(i)
        if passage:
            said = mark_words(passage["text"], query)
            how = "says" if passage["how"] == "words" else "talks about it"
            why.append(f"{how} at {describe.format_clock(passage['start'])}: “{said}”")
            kinds.append("speech")
        if ranks["description"].get(i, 1 << 30) < 10:
            why.append(f"description matches ({raw['description'][i]:.2f}): {row.description}")
        if "descriptors" in raw and raw["descriptors"][i] > 0:
            why.append(f"measured {m.tempo[i]:.0f} BPM, {m.lufs[i]:.0f} LUFS (fit {raw['descriptors'][i]:.2f})")
            kinds.append("music")
        if raw["keyword"][i] > 0:
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
        primary = next(iter(m.scores), None)
        labels = describe.top_labels(m.scores[primary][i], self._spaces()[primary]["labels"], k=5) if primary else []
        evidence = {name: float(raw[name][i]) for name in raw}
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
    ) -> list[Result]:
        """Items whose best segment is nearest (cosine) to the query: an analysed clip, or a (dim,) vector."""
        m = self.matrices()
        vec = query if isinstance(query, np.ndarray) else query.item_embeddings.get(analyzer.name)
        if m.ids.size == 0 or vec is None:
            return []
        mask = self._mask(m, filters)
        index = self.store.vectors(analyzer.name)
        exclude = exclude_ids or set()
        k = min(len(index), max(limit * 20, 200))
        keys, sims = index.search(vec, k)
        seg = self.store.catalog.segment_items(keys.tolist())
        best: dict[int, tuple[float, float, float]] = {}
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=False):
            item_id, start, end = seg.get(key, (None, 0.0, 0.0))
            if item_id is None or item_id in exclude or item_id in best:
                continue
            pos = m.position(item_id)
            if pos >= 0 and mask[pos]:
                best[item_id] = (sim, start, end)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:limit]
        out = []
        space = analyzer.name
        for item_id, (sim, start, end) in ranked:
            row = self.store.catalog.item(item_id)
            assert row is not None
            pos = m.position(item_id)
            labels = describe.top_labels(m.scores[space][pos], analyzer.labels, k=5) if space in m.scores else []
            why = [f"sounds similar ({space} embedding cosine {sim:.3f})"]
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
                    {"cosine": sim},
                    ["music" if space.startswith("musicnn") else "sound"],
                )
            )
        return out
