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
}
SPARSE_RANKERS = {"keyword", "descriptors", "transcript", "transcript_meaning"}  # rank only items with evidence
# A weighted label probability below 0.001 is no evidence: rank no one on it.
MIN_EVIDENCE = {"labels": 0.001}
RELATIVE_EVIDENCE: dict[str, float] = {}  # ranker -> share of its best score below which it is no evidence
COORDINATION_TOP = 300  # items (by best passage BM25) whose whole transcript is checked word by word
COORDINATION_STEP = 100.0  # each query word found in an item's transcript outweighs any BM25 difference
MEANING_MIN = 0.35  # passage-query cosine below which a passage is not evidence

# Words about tempo and loudness, answered from measured descriptors (BPM, LUFS), not only from tags.
DESCRIPTOR_WORDS = {
    "slow": "slow slower slowly ballad calm relaxing relaxed 慢 慢歌 慢节奏 舒缓 缓慢 抒情 放松",
    "fast": "fast faster quick upbeat energetic lively 快 快歌 快节奏 动感 欢快 激烈 劲爆",
    "quiet": "quiet soft gentle peaceful calm 安静 轻柔 柔和 轻声 宁静",
    "loud": "loud noisy powerful 吵 响亮 大声 吵闹",
}
_DESCRIPTOR_INDEX = {w: key for key, words in DESCRIPTOR_WORDS.items() for w in words.split()}


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


def descriptor_terms(query: str) -> set[str]:
    """Which of slow / fast / quiet / loud the query asks for (English or Chinese words)."""
    words = textnorm.segment(query)
    found = {_DESCRIPTOR_INDEX[w] for w in words if w in _DESCRIPTOR_INDEX}
    found |= {key for w, key in _DESCRIPTOR_INDEX.items() if textnorm.has_cjk(w) and len(w) > 1 and w in query}
    return found


def descriptor_scores(m: _Matrices, wanted: set[str]) -> np.ndarray:
    """How well each item's measured tempo and loudness fit ``wanted``, in [0, 1] (0 if unmeasured).

    slow: 1 at <= 60 BPM falling to 0 at 120; fast: 0 at 100 BPM rising to 1 at 160 (both scaled by
    tempo confidence); quiet: 1 at <= -35 LUFS falling to 0 at -14; loud: the reverse.
    """
    score = np.zeros(m.ids.shape[0], np.float32)
    bpm, conf, lufs = m.tempo, np.clip(m.tempo_conf * 2, 0.3, 1.0), m.lufs
    has_tempo, has_level = bpm > 0, lufs > -70
    if "slow" in wanted:
        score += np.where(has_tempo, np.clip((120 - bpm) / 60, 0, 1) * conf, 0)
    if "fast" in wanted:
        score += np.where(has_tempo, np.clip((bpm - 100) / 60, 0, 1) * conf, 0)
    if "quiet" in wanted:
        score += np.where(has_level, np.clip((-14 - lufs) / 21, 0, 1), 0)
    if "loud" in wanted:
        score += np.where(has_level, np.clip((lufs + 35) / 21, 0, 1), 0)
    return score / len(wanted)


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


@lru_cache(maxsize=8)
def _label_embeddings(encoder: TextEncoder, labels: tuple[str, ...]) -> np.ndarray:
    return encoder.encode(list(labels))


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
            pos = np.searchsorted(ids, got_ids)
            ok = (pos < ids.shape[0]) & (ids[np.minimum(pos, ids.shape[0] - 1)] == got_ids)
            out[pos[ok]] = rows[ok]
        return out

    # -- text search ----------------------------------------------------------------------------
    def match_labels(self, query: str) -> list[LabelMatch]:
        """Weights over every label vocabulary for ``query``: one softmax over the ``label_top_k``
        labels most similar to it across all spaces, so a query close to YAMNet's "Bark" gives
        little weight to a music tagger's loosely related tags. Returns one match per space hit."""
        q = self.encoder.encode([query])[0]
        spaces = self._spaces()
        names: list[tuple[str, int, str]] = []
        sims: list[np.ndarray] = []
        for space, info in spaces.items():
            labels = tuple(info["labels"])
            sims.append(_label_embeddings(self.encoder, labels) @ q)
            names.extend((space, i, label) for i, label in enumerate(labels))
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

    def search(self, query: str, *, limit: int = 10, filters: Filters | None = None) -> list[Result]:
        """Rank items for a free-text query (any language the text encoder reads)."""
        m = self.matrices()
        if m.ids.size == 0 or not query.strip():
            return []
        mask = self._mask(m, filters)
        q = self.encoder.encode([query])[0]
        rankings: dict[str, np.ndarray] = {}
        raw: dict[str, np.ndarray] = {}
        matches = [lm for lm in self.match_labels(query) if lm.space in m.scores]
        label_score = np.zeros(m.ids.shape[0], np.float32)
        for lm in matches:
            label_score += m.scores[lm.space][:, lm.indices] @ lm.weights
        raw["labels"] = label_score
        wanted = descriptor_terms(query)
        if wanted:
            raw["descriptors"] = descriptor_scores(m, wanted)
        raw["description"] = m.desc @ q if m.desc is not None else np.zeros_like(label_score)
        raw["keyword"] = self._keyword_scores(m, query)
        spoken: dict[int, dict[str, Any]] = {}
        raw["transcript"] = self._transcript_keyword(m, query, spoken)
        raw["transcript_meaning"] = self._transcript_meaning(m, q, spoken)
        weights = dict(RANKER_WEIGHTS)
        strength = self._label_strength(query)
        weights["labels"] *= strength
        weights["transcript"] *= 1.0 + 3.0 * (1.0 - strength)  # a query no sound label fits is about words
        for name, score in raw.items():
            floor = MIN_EVIDENCE.get(name)
            if name in RELATIVE_EVIDENCE and score.size:
                floor = max(floor or 0.0, RELATIVE_EVIDENCE[name] * float(score[mask].max(initial=0.0)))
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
        return [self._text_result(m, int(i), float(fused[i]), matches, raw, ranks, spoken, query) for i in best]

    def _label_strength(self, query: str) -> float:
        """How much the query is about a sound at all: 1 when it matches some label well (cosine >= 0.5),
        down to 0.25 when it matches none (e.g. a phrase someone said), so spoken evidence can lead."""
        q = self.encoder.encode([query])[0]
        best = max(
            (
                float((_label_embeddings(self.encoder, tuple(info["labels"])) @ q).max())
                for info in self._spaces().values()
            ),
            default=0.0,
        )
        return float(np.clip((best - 0.2) / 0.3, 0.25, 1.0))

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
            pos = int(np.searchsorted(m.ids, p["item_id"]))
            if pos < m.ids.shape[0] and m.ids[pos] == p["item_id"] and pos not in best:
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
            pos = int(np.searchsorted(m.ids, items[j]))
            if pos < m.ids.shape[0] and m.ids[pos] == items[j] and out[pos] == 0:
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
            ids = np.array([h[0] for h in hits], np.int64)
            pos = np.searchsorted(m.ids, ids)
            ok = (pos < m.ids.shape[0]) & (m.ids[np.minimum(pos, m.ids.shape[0] - 1)] == ids)
            out[pos[ok]] = np.array([h[1] for h in hits], np.float32)[ok]
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
            pos = int(np.searchsorted(m.ids, item_id))
            if pos < m.ids.shape[0] and m.ids[pos] == item_id and mask[pos]:
                best[item_id] = (sim, start, end)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:limit]
        out = []
        space = analyzer.name
        for item_id, (sim, start, end) in ranked:
            row = self.store.catalog.item(item_id)
            assert row is not None
            pos = int(np.searchsorted(m.ids, item_id))
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
