"""Recommendations that learn from each listener: profiles, collaborative filtering, ranking, explanations.

A listener is a local name (default: the OS user). What they do with an item is an event in the
catalog (``like``, ``dislike``, ``play`` with the seconds listened, ``skip``; :meth:`Catalog.add_event`).

* **Profile** (:func:`build_profile`): every item's net feedback, recency-weighted (half-life
  :data:`HALF_LIFE_DAYS`): likes and plays listened through count for it, dislikes and skips against.
  The liked items are grouped into *tastes* (average-linkage clusters of their YAMNet item vectors, cut at
  :data:`CLUSTER_CUT` cosine distance), each with a centroid per embedding space (YAMNet for everything,
  musicnn MSD for music), its strongest labels and its median tempo and loudness, so a listener who likes
  rain and techno has two tastes, not one average between them.
* **Content score** of an item: its best taste's cosine (YAMNet, with musicnn for musical tastes), plus
  the taste's labels scored on the label-major columns and the fit of its tempo, less its closeness to
  what the listener disliked or skipped.
* **Collaborative filtering** (:class:`EASE`, Steck 2019, closed form in numpy) when several listeners
  share the library: item-item weights from everyone's positive events, blended with the content score;
  an item or listener without shared history falls back to content (cold start).
* **Ranking** (:meth:`Recommender.recommend`): candidates come from the vector indexes (each taste's
  centroid searched in its space; the CF's best items), never from a scan of all items in Python; at
  most :data:`CANDIDATES` of them, the tastes' hits taken rank by rank in turn, are read (one chunked
  read of their item vectors) and scored, so the work is O(candidates) whatever the library's size;
  nothing the listener just played or ever disliked comes back; MMR (maximal marginal relevance over
  YAMNet vectors) keeps the list varied, and a share of it (:data:`EXPLORE`) is spent on items further down.
  With a query, the search's own ranking (constraints and meaning from :mod:`query`) is fused with the profile.
* **Explanations** in the query's language: "because you liked Vibe Ace (jazz, electronic, 130 BPM)",
  "people who play X also play this", "因为你喜欢…".
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import Result

CONTENT_SPACE = "yamnet"  # every item has a YAMNet item vector
MUSIC_SPACE = "musicnn_msd"  # music items also have a musicnn (MSD) vector
KIND_WEIGHT = {"like": 1.0, "dislike": -1.0, "play": 0.5, "skip": -0.5}
PLAYED_THROUGH = 0.5  # a play of at least this share of the item (or 60 s) counts in full
HALF_LIFE_DAYS = 30.0  # an event this old counts half
MAX_EVENTS = 1000  # newest events of a listener that shape the profile
CLUSTER_CUT = 0.2  # cosine distance (average linkage) beyond which two liked items are different tastes
MAX_TASTES = 6
NEIGHBOURS = 200  # segment neighbours fetched per taste and space, at most
MIN_NEIGHBOURS = 40  # ... and at least (the budget below is shared out among a listener's taste searches)
CANDIDATES = 300  # content candidates scored exactly per recommendation: taste hits taken rank by rank in turn
POOL = 100  # search results re-ranked by a profile
RECENT = 30  # items of this many newest events are not recommended again (no repeats of just-played)
MMR_LAMBDA = 0.8  # relevance vs. novelty against what is already in the list
EXPLORE = 0.1  # share of a recommendation list spent on items further down the candidates
NEGATIVE = 0.5  # how much closeness to a disliked or skipped item counts against
LABEL_WEIGHT, TEMPO_WEIGHT = 0.15, 0.1
CF_WEIGHT = 0.6  # a CF score of 1 (the listener's best) weighs like 0.6 of cosine
CF_MIN_USERS = 2  # listeners with positive events needed before collaborative filtering counts
CF_MAX_ITEMS = 5000  # EASE inverts an items x items matrix: the most shared items at most
EASE_LAMBDA = 10.0  # L2 penalty for the library's EASE (few users; the Last.fm evaluation uses its own)
SEARCH_BETA, QUERY_BETA = 0.6, 1.0  # how far a profile re-ranks search results (search / recommend with a query)
WHY_AFFINITY = 0.05  # a re-ranked result says "because you liked ..." when the profile lifted it this much


def default_user() -> str:
    """The OS user (``$SOUNDSCOPE_USER`` overrides it): users are local names, with no accounts."""
    env = os.environ.get("SOUNDSCOPE_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "default"


def event_weight(kind: str, value: float, duration_s: float) -> float:
    """How much one event says for (> 0) or against (< 0) an item, before recency: a play counts in
    proportion to how much was listened (in full from :data:`PLAYED_THROUGH` of it or 60 s; 0.25 when
    the seconds are unknown)."""
    w = KIND_WEIGHT.get(kind, 0.0)
    if kind == "play":
        if value <= 0:
            return w * 0.5
        share = value / duration_s if duration_s > 0 else 1.0
        return w * min(1.0, max(share / PLAYED_THROUGH, value / 60.0))
    return w


def recency(age_s: np.ndarray | float, *, half_life_days: float = HALF_LIFE_DAYS) -> np.ndarray | float:
    """0.5 ** (age / half-life): 1 for an event now, 0.5 a half-life ago."""
    return 0.5 ** (np.maximum(age_s, 0.0) / (half_life_days * 86400.0))


# -- profiles -------------------------------------------------------------------------------------


@dataclass
class Taste:
    """One cluster of what a listener likes."""

    items: list[int]  # member item ids, strongest first
    weight: float  # their summed net feedback (recency-weighted)
    centroid: dict[str, np.ndarray]  # space -> (d,) unit vector
    members: dict[str, np.ndarray]  # space -> (m, d) unit vectors of ``items`` (rows follow items)
    labels: list[tuple[str, int, str, float]] = field(default_factory=list)  # (space, index, name, mean prob)
    label_base: float = 1.0  # the members' own mean score on ``labels`` (what a candidate is compared with)
    tempo: float = 0.0  # median BPM of musical members (0: none)
    lufs: float = -120.0
    kind: str = "sound"

    def words(self, k: int = 3) -> list[str]:
        return [name for _, _, name, _ in self.labels[:k]]


@dataclass
class Profile:
    """What the engine believes one listener likes (see :func:`build_profile`)."""

    user: str
    tastes: list[Taste]
    net: dict[int, float]  # item -> net recency-weighted feedback
    negatives: dict[str, np.ndarray]  # space -> (n, d) unit vectors of disliked / skipped items
    negative_weights: np.ndarray  # (n,) their |net| feedback, max 1
    negative_items: list[int]
    seen: set[int]  # not to be recommended again: recent events, likes, dislikes
    counts: dict[str, int]
    version: tuple[int, int] = (0, 0)

    @property
    def empty(self) -> bool:
        return not self.tastes and not self.negative_items

    @property
    def seed(self) -> int:
        """A number fixed until the listener's history changes (exploration draws from it)."""
        h = hashlib.sha1(f"{self.user}:{sum(self.counts.values())}:{len(self.net)}".encode()).digest()
        return int.from_bytes(h[:4], "little")


def cluster_tastes(vectors: np.ndarray, weights: np.ndarray, *, cut: float = CLUSTER_CUT, most: int = MAX_TASTES):
    """Group liked items into tastes: (n,) 0-based cluster labels, heaviest cluster first.

    ``vectors`` (n, d) unit rows, ``weights`` (n,) > 0. Average-linkage agglomerative clustering on
    cosine distance (scipy), cut at ``cut``; at most ``most`` clusters."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    raw = fcluster(z, t=cut, criterion="distance")
    if raw.max() > most:
        raw = fcluster(z, t=most, criterion="maxclust")
    mass = {c: float(weights[raw == c].sum()) for c in np.unique(raw)}
    order = sorted(mass, key=lambda c: -mass[c])
    remap = {c: i for i, c in enumerate(order)}
    return np.asarray([remap[c] for c in raw], np.int64)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def _vectors(catalog, ids: list[int], space: str) -> dict[int, np.ndarray]:
    got, vecs = catalog.item_vectors(ids, space)
    return {int(i): v for i, v in zip(got.tolist(), _unit(vecs) if len(got) else [], strict=True)}


def build_profile(store, user: str, *, now: float | None = None, events: list[dict] | None = None) -> Profile:
    """The profile of ``user`` from their newest :data:`MAX_EVENTS` events in ``store``'s catalog."""
    catalog = store.catalog
    now = time.time() if now is None else now
    events = catalog.events(user, limit=MAX_EVENTS) if events is None else events
    counts = {k: 0 for k in KIND_WEIGHT}
    if not events:
        return Profile(user, [], {}, {}, np.zeros(0, np.float32), [], set(), counts, catalog.events_version())
    rows = {r.id: r for r in catalog.items({e["item_id"] for e in events})}
    net: dict[int, float] = {}
    seen: set[int] = set()
    for k, e in enumerate(events):  # newest first
        row = rows.get(e["item_id"])
        if row is None:
            continue
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
        w = event_weight(e["kind"], float(e["value"]), row.duration_s) * float(recency(now - float(e["at"])))
        net[row.id] = net.get(row.id, 0.0) + w
        if k < RECENT or e["kind"] in ("like", "dislike"):
            seen.add(row.id)
    pos = sorted((i for i, w in net.items() if w > 0), key=lambda i: -net[i])
    neg = [i for i, w in net.items() if w < 0]
    content = _vectors(catalog, pos + neg, CONTENT_SPACE)
    pos = [i for i in pos if i in content]
    music = _vectors(catalog, [i for i in pos if rows[i].kind == "music"], MUSIC_SPACE)
    tastes = []
    if pos:
        vecs = np.stack([content[i] for i in pos])
        w = np.asarray([net[i] for i in pos], np.float64)
        labels = cluster_tastes(vecs, w)
        m = store.columns()
        for c in range(int(labels.max()) + 1):
            members = [i for i, lab in zip(pos, labels, strict=True) if lab == c]
            tastes.append(_taste(catalog, m, members, net, content, music, rows))
    neg = [i for i in neg if i in content]
    nw = np.asarray([min(1.0, -net[i]) for i in neg], np.float32)
    negatives = {CONTENT_SPACE: np.stack([content[i] for i in neg])} if neg else {}
    return Profile(user, tastes, net, negatives, nw, neg, seen, counts, catalog.events_version())


def _taste(catalog, m, members: list[int], net, content, music, rows) -> Taste:
    """One taste from its member items: centroids, strongest labels, descriptors."""
    w = np.asarray([net[i] for i in members], np.float64)
    vecs = {CONTENT_SPACE: np.stack([content[i] for i in members])}
    centroid = {CONTENT_SPACE: _unit((w[:, None] * vecs[CONTENT_SPACE]).sum(0)).astype(np.float32)}
    mus = [k for k, i in enumerate(members) if i in music]
    if len(mus) * 2 >= len(members):  # a musical taste: musicnn says more about music than YAMNet does
        mv = np.stack([music[members[k]] for k in mus])
        centroid[MUSIC_SPACE] = _unit((w[mus, None] * mv).sum(0)).astype(np.float32)
    labels: list[tuple[str, int, str, float]] = []
    models = catalog.models()
    spaces = [CONTENT_SPACE] + ([MUSIC_SPACE.replace("msd", "mtt"), MUSIC_SPACE] if MUSIC_SPACE in centroid else [])
    for space in spaces:
        names = models.get(space, {}).get("labels") or []
        got_ids, got_rows = catalog.item_scores_many(members[:50], space)  # one chunked read per space
        have = dict(zip(got_ids.tolist(), got_rows, strict=True))
        scores = [have.get(i) for i in members[:50]]
        got = [(s, wi) for s, wi in zip(scores, w[:50], strict=False) if s is not None and s.size == len(names)]
        if not got:
            continue
        mean = sum(s * wi for s, wi in got) / sum(wi for _, wi in got)
        for j in np.argsort(-mean)[:4]:
            if mean[j] >= 0.1 and names[j] not in GENERIC_LABELS:
                labels.append((space, int(j), names[j], float(mean[j])))
    labels.sort(key=lambda x: -x[3])
    labels = labels[:5]
    pos = m.positions(members)
    tempos = np.asarray([m.tempo[p] for p in pos if p >= 0 and m.tempo[p] > 0])
    louds = np.asarray([m.lufs[p] for p in pos if p >= 0 and m.lufs[p] > -70])
    kinds = [rows[i].kind for i in members]
    base = 1.0
    if labels:
        base = float(np.mean([_label_fit(m, labels, p) for p in pos if p >= 0] or [1.0])) or 1.0
    return Taste(
        members,
        float(w.sum()),
        centroid,
        vecs,
        labels,
        max(base, 1e-3),
        float(np.median(tempos)) if tempos.size else 0.0,
        float(np.median(louds)) if louds.size else -120.0,
        max(set(kinds), key=kinds.count),
    )


GENERIC_LABELS = {"Silence", "Outside, rural or natural", "Inside, small room", "Inside, large room or hall"}


def _label_fit(m, labels: list[tuple[str, int, str, float]], pos: int) -> float:
    """Weighted mean probability of a taste's labels for the item at row ``pos`` (one column read each)."""
    total = sum(p for *_, p in labels)
    return sum(float(m.label_row(space, pos)[j]) * p for space, j, _, p in labels) / max(total, 1e-9)


def label_affinity(m, taste: Taste, rows: np.ndarray | None = None) -> np.ndarray:
    """(n,) each item's fit to the taste's labels relative to the taste's own members, or (c,) for the
    column rows ``rows`` (c,) only (-1: absent, scored 0). Vectorised over the label-major columns: k
    label rows (of the c rows), no loop over items."""
    out = np.zeros(m.n if rows is None else len(rows), np.float32)
    total = sum(p for *_, p in taste.labels) or 1.0
    by_space: dict[str, tuple[list[int], list[float]]] = {}
    for space, j, _, p in taste.labels:
        if m.has_space(space):
            by_space.setdefault(space, ([], []))[0].append(j)
            by_space[space][1].append(p / total)
    for space, (idx, w) in by_space.items():
        weights = np.asarray(w, np.float32)
        if rows is None:
            out += m.label_scores(space, np.asarray(idx), weights)
        else:
            out += weights @ label_rows(m, space, np.asarray(idx), rows)
    return np.clip(out / taste.label_base, 0.0, 1.2)


def label_rows(m, space: str, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(k, c) float32 scores of the labels ``labels`` (k,) of ``space`` at the column rows ``rows`` (c,)
    (zeros at rows -1 or without scores in ``space``): one gather per column part, O(k x c)."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((len(labels), rows.size), np.float32)
    part_of = np.searchsorted(m.offsets, rows, side="right") - 1
    for k, part in enumerate(m.parts):
        mat = part.scores.get(space)
        sel = np.flatnonzero((rows >= 0) & (part_of == k))
        if mat is None or sel.size == 0:
            continue
        out[:, sel] = np.asarray(mat[np.ix_(labels, rows[sel] - int(m.offsets[k]))], np.float32)
    return out


# -- collaborative filtering ---------------------------------------------------------------------


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019): item-item weights in closed form,
    ``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1``. Hand-written in numpy (20 lines): the
    `implicit` package has ALS and BPR but no EASE; it stays an optional baseline in the evaluation."""

    def __init__(self, *, lam: float = 500.0) -> None:
        self.lam = lam
        self.B: np.ndarray | None = None

    def fit(self, X) -> EASE:
        """``X``: (users, items) implicit-feedback matrix (scipy sparse or dense), >= 0."""
        from scipy.linalg import lapack

        G = np.asarray((X.T @ X).todense() if hasattr(X, "todense") else X.T @ X, np.float32)
        G[np.diag_indices_from(G)] += self.lam
        # G is symmetric positive definite: invert through its Cholesky factor (LAPACK potrf + potri, float32),
        # a quarter of the work of a float64 LU inverse (6,000 Last.fm artists: 6 s instead of 31 s, one thread)
        low, info = lapack.spotrf(G, lower=1)
        if info == 0:
            low, info = lapack.spotri(low, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: Gram matrix not positive definite (LAPACK info {info})")
        P = np.tril(low) + np.tril(low, -1).T
        B = P / (-np.diag(P))
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)
        return self

    def scores(self, x) -> np.ndarray:
        """(..., items) scores for users' rows ``x`` (..., items)."""
        assert self.B is not None
        return np.asarray(x @ self.B)


@dataclass
class LibraryCF:
    """EASE over the library's shared events: who liked or played what (positive net feedback)."""

    version: tuple[int, int]
    users: list[str]
    items: np.ndarray  # (k,) item ids, the columns
    X: np.ndarray  # (users, k) binary
    model: EASE | None

    @classmethod
    def fit(cls, catalog, *, now: float | None = None) -> LibraryCF:
        version = catalog.events_version()
        now = time.time() if now is None else now
        pairs: dict[tuple[str, int], float] = {}
        for e in catalog.events(limit=200_000):
            w = event_weight(e["kind"], float(e["value"]), 0.0) * float(recency(now - float(e["at"])))
            key = (e["user"], int(e["item_id"]))
            pairs[key] = pairs.get(key, 0.0) + w
        positive = [(u, i) for (u, i), w in pairs.items() if w > 0]
        users = sorted({u for u, _ in positive})
        per_item: dict[int, int] = {}
        for _, i in positive:
            per_item[i] = per_item.get(i, 0) + 1
        shared = sorted((i for i, c in per_item.items() if c >= 2), key=lambda i: -per_item[i])[:CF_MAX_ITEMS]
        items = np.asarray(sorted(shared), np.int64)
        X = np.zeros((len(users), items.size), np.float32)
        if items.size and len(users) >= CF_MIN_USERS:
            col = {int(i): k for k, i in enumerate(items)}
            row = {u: k for k, u in enumerate(users)}
            for u, i in positive:
                if i in col:
                    X[row[u], col[i]] = 1.0
            model = EASE(lam=EASE_LAMBDA).fit(X)
        else:
            model = None
        return cls(version, users, items, X, model)

    def scores(self, user: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids (k,), scores (k,), the listener's own row (k,)); empty when the listener shares nothing."""
        if self.model is None or user not in self.users:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
        x = self.X[self.users.index(user)]
        if not x.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32), x
        return self.items, self.model.scores(x).astype(np.float32), x


# -- ranking --------------------------------------------------------------------------------------


@dataclass
class Scored:
    """Candidates with their profile scores (rows follow ``ids``)."""

    ids: np.ndarray  # (c,) item ids
    relevance: np.ndarray  # (c,) content + CF - negatives
    content: np.ndarray  # (c,) best taste score
    taste: np.ndarray  # (c,) index of the best taste (-1: none)
    cf: np.ndarray  # (c,) CF score, 0..1
    vectors: np.ndarray  # (c, d) unit YAMNet vectors (zeros where absent)


class Recommender:
    """Profiles, CF and ranking over one :class:`~soundscope.store.Store` (with the library's searcher
    for queries). Profiles and the CF model are cached until the events change."""

    def __init__(self, store, searcher=None) -> None:
        self.store = store
        self.searcher = searcher
        self._profiles: dict[str, Profile] = {}
        self._cf: LibraryCF | None = None

    # -- state -----------------------------------------------------------------------------------
    def profile(self, user: str) -> Profile:
        version = self.store.catalog.events_version()
        got = self._profiles.get(user)
        if got is None or got.version != version:
            if len(self._profiles) > 256:
                self._profiles.clear()
            got = self._profiles[user] = build_profile(self.store, user)
        return got

    def cf(self) -> LibraryCF:
        version = self.store.catalog.events_version()
        if self._cf is None or self._cf.version != version:
            self._cf = LibraryCF.fit(self.store.catalog)
        return self._cf

    # -- scoring ---------------------------------------------------------------------------------
    def _neighbours(self, vector: np.ndarray, space: str, k: int = NEIGHBOURS) -> list[int]:
        """Item ids whose segments are nearest ``vector`` (d,) in ``space`` (best first, each once)."""
        return self._neighbours_many(np.asarray(vector, np.float32)[None, :], space, k=k)[0]

    def _neighbours_many(self, vectors: np.ndarray, space: str, *, k: int) -> list[list[int]]:
        """For each query row of ``vectors`` (q, d): the item ids whose segments are nearest it in
        ``space``, best first, each once. One index call per query (one batched request where the index
        takes many), then one catalog read maps every segment found to its item."""
        try:
            index = self.store.vectors(space)
        except KeyError:
            return [[] for _ in vectors]
        if len(index) == 0 or k <= 0:
            return [[] for _ in vectors]
        k = min(k, len(index))
        if hasattr(index, "search_many"):
            found = list(index.search_many(vectors, k)[0])
        else:
            found = [index.search(v, k)[0] for v in vectors]
        keys = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        seg = self.store.catalog.segment_items(keys.tolist())
        return [list(dict.fromkeys(seg[key][0] for key in f.tolist() if key in seg)) for f in found]

    def candidates(self, profile: Profile, cf_ids: np.ndarray, *, most: int = CANDIDATES) -> list[int]:
        """Unseen items near each taste (its centroid searched in each of its spaces, one index call per
        space), at most ``most``: the searches' hits taken rank by rank in turn, so every taste gets its
        share; then CF's best. O(tastes x neighbours), whatever the size of the library."""
        queries: dict[str, list[np.ndarray]] = {}
        for taste in profile.tastes:
            for space, vec in taste.centroid.items():
                queries.setdefault(space, []).append(vec)
        n_queries = sum(len(v) for v in queries.values())
        k = min(NEIGHBOURS, max(MIN_NEIGHBOURS, 2 * most // max(n_queries, 1)))
        ranked: list[list[int]] = []
        for space, vecs in queries.items():
            ranked.extend(self._neighbours_many(np.stack(vecs), space, k=k))
        out: dict[int, None] = {}
        for rank in range(max((len(r) for r in ranked), default=0)):
            for hits in ranked:
                if rank < len(hits) and hits[rank] not in profile.seen:
                    out[hits[rank]] = None
            if len(out) >= most:
                break
        for i in cf_ids.tolist():
            if i not in profile.seen:
                out[int(i)] = None
        return list(out)

    def score(self, profile: Profile, ids: list[int], *, user: str | None = None) -> Scored:
        """Profile scores of the items ``ids`` (exact cosines on their stored item vectors)."""
        ids_arr = np.asarray(ids, np.int64)
        n = ids_arr.size
        m = self.store.columns()
        pos = m.positions(ids_arr) if n else np.zeros(0, np.int64)
        vec = self._matrix(ids_arr, CONTENT_SPACE)
        mv = has = None
        if any(MUSIC_SPACE in t.centroid for t in profile.tastes):  # read once, for every musical taste
            mv = self._matrix(ids_arr, MUSIC_SPACE)
            has = np.abs(mv).sum(1) > 0
        content = np.full(n, -1.0, np.float32)
        taste_of = np.full(n, -1, np.int64)
        total = sum(t.weight for t in profile.tastes) or 1.0
        for k, taste in enumerate(profile.tastes):
            s = vec @ taste.centroid[CONTENT_SPACE]
            if MUSIC_SPACE in taste.centroid and mv is not None:
                s = np.where(has, 0.5 * s + 0.5 * (mv @ taste.centroid[MUSIC_SPACE]), s - 0.1)
            if taste.labels:
                s = s + LABEL_WEIGHT * label_affinity(m, taste, pos)
            if taste.tempo > 0 and n:
                bpm = m.tempo[np.maximum(pos, 0)]
                s = s + TEMPO_WEIGHT * np.where(bpm > 0, np.exp(-np.abs(bpm - taste.tempo) / 25.0), 0.0)
            s = s + 0.05 * math.log(taste.weight / total + 1e-3)  # a stronger taste leads a tie
            better = s > content
            content = np.where(better, s, content).astype(np.float32)
            taste_of = np.where(better, k, taste_of)
        content = np.where(taste_of >= 0, content, 0.0).astype(np.float32)
        relevance = content.copy()
        if profile.negative_items and n:
            neg = (vec @ profile.negatives[CONTENT_SPACE].T) * profile.negative_weights[None, :]
            relevance -= NEGATIVE * neg.max(axis=1)
        cf = np.zeros(n, np.float32)
        cf_items, cf_scores, _ = self.cf().scores(user or profile.user)
        if cf_items.size and n and cf_scores.max() > 0:
            at = np.searchsorted(cf_items, ids_arr)
            at = np.minimum(at, cf_items.size - 1)
            hit = cf_items[at] == ids_arr
            cf = np.where(hit, np.clip(cf_scores[at] / cf_scores.max(), 0, 1), 0.0).astype(np.float32)
            relevance += CF_WEIGHT * cf
        return Scored(ids_arr, relevance.astype(np.float32), content, taste_of, cf, vec)

    def _dim(self, space: str) -> int:
        return int(self.store.catalog.models().get(space, {}).get("dim", 1))

    def _matrix(self, ids, space: str) -> np.ndarray:
        """(len(ids), d) unit item vectors of ``space`` in the order of ``ids`` (zeros where absent): one
        chunked catalog read, placed by sorted lookup (no loop over the rows)."""
        ids_arr = np.asarray(ids, np.int64).reshape(-1)
        got, vecs = self.store.catalog.item_vectors(ids_arr.tolist(), space) if ids_arr.size else (None, None)
        if got is None or not got.size:
            return np.zeros((ids_arr.size, self._dim(space)), np.float32)
        order = np.argsort(got, kind="stable")
        got, vecs = got[order], _unit(np.asarray(vecs[order], np.float32))
        at = np.minimum(np.searchsorted(got, ids_arr), got.size - 1)
        hit = got[at] == ids_arr
        out = np.zeros((ids_arr.size, vecs.shape[1]), np.float32)
        out[hit] = vecs[at[hit]]
        return out

    # -- public ----------------------------------------------------------------------------------
    def recommend(
        self,
        user: str,
        *,
        query: str | None = None,
        limit: int = 10,
        filters=None,
        explore: float = EXPLORE,
        language: str | None = None,
    ) -> list[Result]:
        """The best ``limit`` items for ``user``: "more of what I like" without a query; with one, the
        search's results for it (its constraints and meaning) re-ranked for the listener."""
        profile = self.profile(user)
        if query and query.strip():
            return self._with_query(profile, query, limit=limit, filters=filters, language=language, diverse=True)
        language = language or "en"
        cf_items, cf_scores, _ = self.cf().scores(user)
        top_cf = cf_items[np.argsort(-cf_scores)[:50]] if cf_items.size else np.zeros(0, np.int64)
        if profile.empty and not top_cf.size:
            return self._popular(profile, limit=limit, filters=filters, language=language)
        ids = self.candidates(profile, top_cf)
        ids = self._filtered(ids, filters)
        if not ids:
            return []
        scored = self.score(profile, ids, user=user)
        order = mmr(scored.relevance, scored.vectors, limit=limit, lam=MMR_LAMBDA, groups=scored.taste,
                    quotas=taste_quotas(profile, limit))  # fmt: skip
        chosen = set(order[:limit])
        order = explore_slots(order, scored.relevance, limit=limit, share=explore, seed=profile.seed)
        return [self._result(profile, scored, k, language, explored=k not in chosen) for k in order]

    def rerank(self, user: str, results: list[Result], *, limit: int, language: str = "en") -> list[Result]:
        """Search results re-ranked for ``user``: reciprocal-rank fusion of the search's order and the
        profile's; the results themselves (first ``limit``) unchanged for a listener with no history."""
        profile = self.profile(user)
        if profile.empty or not results:
            return results[:limit]
        return self._fuse(profile, results, limit=limit, language=language, diverse=False)

    def _with_query(self, profile: Profile, query: str, *, limit: int, filters, language, diverse: bool):
        assert self.searcher is not None, "a query needs the library's searcher"
        from .query import parse

        results = self.searcher.search(query, limit=max(POOL, limit * 5), filters=filters)
        language = language or parse(query).language
        if profile.empty:
            return results[:limit]
        fresh = [r for r in results if r.item_id not in profile.seen] or results
        return self._fuse(profile, fresh, limit=limit, language=language, diverse=diverse)

    def _fuse(self, profile: Profile, results: list[Result], *, limit: int, language: str, diverse: bool):
        """Results re-scored ``search x (1 + beta x affinity)``: the search score (relative to its best)
        times the profile's affinity, centred on the pool's median and clipped to +-0.5. So the profile
        reorders results the search finds about equally good, and cannot lift a weak match above a
        strong one by more than ``1 + beta / 2``."""
        scored = self.score(profile, [r.item_id for r in results])
        search = np.asarray([r.score for r in results], np.float64)
        search = search / max(float(search.max()), 1e-12)
        affinity = np.clip(scored.relevance - np.median(scored.relevance), -0.5, 0.5)
        beta = QUERY_BETA if diverse else SEARCH_BETA
        fused = search * (1.0 + beta * affinity)
        if diverse:
            order = mmr(fused / max(float(fused.max()), 1e-12), scored.vectors, limit=limit, lam=0.9)
        else:
            order = [int(k) for k in np.argsort(-fused, kind="stable")]
        out = []
        for k in list(order)[:limit]:
            r = results[int(k)]
            why = self._why(profile, scored, int(k), language) if affinity[k] > WHY_AFFINITY else []
            r.why = [*why, *r.why]
            r.evidence = {**r.evidence, "profile": float(scored.relevance[k]), "search_score": float(r.score)}
            r.score = float(fused[k])
            out.append(r)
        return out

    def _filtered(self, ids: list[int], filters) -> list[int]:
        if filters is None or self.searcher is None or not ids:
            return ids
        m = self.store.columns()
        mask = self.searcher.filter_mask(m, filters)  # the search's own vectorised filters
        pos = m.positions(ids)
        return [i for i, p in zip(ids, pos.tolist(), strict=True) if p >= 0 and mask[p]]

    def _popular(self, profile: Profile, *, limit: int, filters, language: str) -> list[Result]:
        """No history of one's own and nothing shared: what other listeners liked and played most."""
        counts: dict[int, float] = {}
        for e in self.store.catalog.events(limit=20_000):
            counts[e["item_id"]] = counts.get(e["item_id"], 0.0) + KIND_WEIGHT.get(e["kind"], 0.0)
        ids = self._filtered([i for i, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c > 0], filters)[:limit]
        out = []
        for row in self.store.catalog.items(ids):
            why = "其他听众喜欢的" if language == "zh" else "popular with other listeners"
            out.append(Result(row.id, row.path, counts[row.id], 0.0, min(row.duration_s, 5.0), [why],
                              row.description, row.duration_s, [], {"popularity": counts[row.id]},
                              ["popular"]))  # fmt: skip
        return out

    def radio(self, user: str, seed_id: int, *, limit: int = 10, language: str = "en") -> list[Result]:
        """A sequence that starts from ``seed_id`` and drifts with the listener's taste: each next item is
        close to the current one and, more and more along the way, to the profile; nothing repeats."""
        row = self.store.catalog.item(int(seed_id))
        if row is None:
            raise KeyError(f"no item with id {seed_id}")
        profile = self.profile(user)
        cf_items, cf_scores, _ = self.cf().scores(user)
        top_cf = cf_items[np.argsort(-cf_scores)[:50]] if cf_items.size else np.zeros(0, np.int64)
        pool = set(self.candidates(profile, top_cf)) if not profile.empty else set()
        space = MUSIC_SPACE if row.kind == "music" and self.store.catalog.item_vector(row.id, MUSIC_SPACE) is not None \
            else CONTENT_SPACE  # fmt: skip
        sequence, current = [row.id], row.id
        banned = set(profile.seen) - {row.id}
        vectors: dict[int, np.ndarray] = {}  # item -> unit vector in ``space``: each item read and scored once
        relevance: dict[int, float] = {}
        for step in range(limit - 1):
            vec = vectors.get(current)
            if vec is None:
                raw = self.store.catalog.item_vector(current, space)
                vec = _unit(raw) if raw is not None else None
            near = self._neighbours(vec, space, k=60) if vec is not None and vec.any() else []
            ids = [i for i in dict.fromkeys([*near, *pool]) if i not in banned and i not in sequence]
            if not ids:
                break
            self._radio_score(profile, [i for i in ids if i not in vectors], space, vectors, relevance, user)
            here = np.stack([vectors[i] for i in ids]) @ vec if vec is not None else np.zeros(len(ids))
            drift = 0.3 + 0.4 * step / max(limit - 2, 1)
            if profile.empty:
                total = here
            else:
                total = (1 - drift) * here + drift * np.asarray([relevance[i] for i in ids], np.float32)
            current = ids[int(np.argmax(total))]
            sequence.append(current)
        rows = {r.id: r for r in self.store.catalog.items(sequence)}
        out = []
        for k, i in enumerate(sequence):
            r = rows[i]
            why = ["起点" if language == "zh" else "the starting track"] if k == 0 else \
                [(f"接着 {_name(rows[sequence[k - 1]])}" if language == "zh"
                  else f"follows {_name(rows[sequence[k - 1]])}")]  # fmt: skip
            out.append(Result(r.id, r.path, float(limit - k), 0.0, min(r.duration_s, 5.0), why,
                              r.description, r.duration_s, [], {}, ["radio"]))  # fmt: skip
        return out

    def _radio_score(self, profile: Profile, new: list[int], space: str, vectors: dict, relevance: dict, user: str):
        """Read (unit vectors in ``space``) and score (profile relevance) the items ``new`` into the caches."""
        if not new:
            return
        scored = None if profile.empty else self.score(profile, new, user=user)
        mat = scored.vectors if scored is not None and space == CONTENT_SPACE else self._matrix(new, space)
        vectors.update(zip(new, mat, strict=True))
        if scored is not None:
            relevance.update(zip(new, scored.relevance.tolist(), strict=True))

    # -- explanations ----------------------------------------------------------------------------
    def _why(self, profile: Profile, scored: Scored, k: int, language: str) -> list[str]:
        out = []
        t = int(scored.taste[k])
        if t >= 0 and scored.content[k] > 0:
            taste = profile.tastes[t]
            sims = taste.members[CONTENT_SPACE] @ scored.vectors[k]
            liked = taste.items[int(np.argmax(sims))]
            out.append(self._because(liked, taste, language))
        if scored.cf[k] > 0.2:
            lc = self.cf()
            _, _, mine = lc.scores(profile.user)
            col = {int(i): j for j, i in enumerate(lc.items)}
            j = col.get(int(scored.ids[k]))
            if j is not None and lc.model is not None and lc.model.B is not None and mine.size:
                src = int(np.argmax(mine * lc.model.B[:, j]))
                other = self.store.catalog.item(int(lc.items[src]))
                if other is not None:
                    out.append(f"喜欢《{_name(other)}》的人也在听这个" if language == "zh"
                               else f"people who play {_name(other)} also play this")  # fmt: skip
        return out

    def _because(self, item_id: int, taste: Taste, language: str) -> str:
        row = self.store.catalog.item(item_id)
        name = _name(row) if row else f"#{item_id}"
        words = list(dict.fromkeys(_label_words(w, language) for w in taste.words(2)))
        if taste.tempo > 0:
            words.append(f"{taste.tempo:.0f} BPM")
        detail = ", ".join(words)
        if language == "zh":
            return f"因为你喜欢《{name}》" + (f"（{'，'.join(words)}）" if words else "")
        return f"because you liked {name}" + (f" ({detail})" if detail else "")

    def _result(self, profile: Profile, scored: Scored, k: int, language: str, *, explored: bool) -> Result:
        row = self.store.catalog.item(int(scored.ids[k]))
        assert row is not None
        why = self._why(profile, scored, k, language)
        if explored:
            why.append(
                "换换口味：离你常听的稍远一些" if language == "zh" else "something a little different (exploration)"
            )
        evidence = {"relevance": float(scored.relevance[k]), "content": float(scored.content[k]),
                    "cf": float(scored.cf[k])}  # fmt: skip
        return Result(row.id, row.path, float(scored.relevance[k]), 0.0, min(row.duration_s, 5.0),
                      why or ["recommended"], row.description, row.duration_s, [], evidence,
                      ["cf"] if scored.cf[k] > scored.content[k] else ["profile"])  # fmt: skip

    def describe(self, user: str, *, language: str = "en") -> dict[str, Any]:
        """What the engine believes ``user`` likes: tastes (labels, examples, tempo), what counts
        against, collaborative-filtering status, and the same in sentences (``summary``)."""
        p = self.profile(user)
        catalog = self.store.catalog
        names = {
            r.id: _name(r)
            for r in catalog.items({i for t in p.tastes for i in t.items[:3]} | set(p.negative_items[:5]))
        }
        total = sum(t.weight for t in p.tastes) or 1.0
        tastes = [
            {
                "share": round(t.weight / total, 3),
                "items": len(t.items),
                "labels": t.words(5),
                "examples": [names.get(i, f"#{i}") for i in t.items[:3]],
                "example_ids": t.items[:3],
                "kind": t.kind,
                "tempo_bpm": round(t.tempo, 1) if t.tempo > 0 else None,
                "loudness_lufs": round(t.lufs, 1) if t.lufs > -70 else None,
            }
            for t in p.tastes
        ]
        against = self._against_labels(p)
        lc = self.cf()
        cf_on = lc.model is not None and user in lc.users and bool(lc.X[lc.users.index(user)].any())
        summary = _summary(user, p, tastes, against, names, cf_on, len(lc.users), language)
        return {"user": user, "events": p.counts, "tastes": tastes, "against": against,
                "avoid_examples": [names.get(i, f"#{i}") for i in p.negative_items[:5]],
                "collaborative": {"on": cf_on, "listeners": len(lc.users)}, "summary": summary}  # fmt: skip

    def _against_labels(self, p: Profile) -> list[str]:
        if not p.negative_items:
            return []
        names = self.store.catalog.models().get(CONTENT_SPACE, {}).get("labels") or []
        rows = [self.store.catalog.item_scores(i, CONTENT_SPACE) for i in p.negative_items[:50]]
        rows = [r for r in rows if r is not None and r.size == len(names)]
        if not rows:
            return []
        mean = np.mean(rows, axis=0)
        return [names[j] for j in np.argsort(-mean)[:3] if mean[j] >= 0.1 and names[j] not in GENERIC_LABELS]


def _summary(user, p: Profile, tastes, against, names, cf_on: bool, listeners: int, language: str) -> list[str]:
    c = p.counts
    if language == "zh":
        lines = [f"{user}：{c['like']} 次喜欢、{c['dislike']} 次不喜欢、{c['play']} 次播放、{c['skip']} 次跳过"]
        if not tastes:
            lines.append("还不知道喜欢什么：先点个喜欢吧")
        for k, t in enumerate(tastes, 1):
            words = "、".join(_label_words(w, "zh") for w in t["labels"][:3]) or t["kind"]
            bpm = f"，约 {t['tempo_bpm']:.0f} BPM" if t["tempo_bpm"] else ""
            lines.append(f"口味 {k}（{t['share']:.0%}）：{words}{bpm}，如《{'》《'.join(t['examples'])}》")
        if against:
            lines.append("不喜欢：" + "、".join(_label_words(w, "zh") for w in against))
        lines.append("协同过滤：" + (f"开启（{listeners} 位听众）" if cf_on else "未开启（没有与他人共享的收听记录）"))
        return lines
    lines = [f"{user}: {c['like']} likes, {c['dislike']} dislikes, {c['play']} plays, {c['skip']} skips"]
    if not tastes:
        lines.append("no taste known yet: like something first")
    for k, t in enumerate(tastes, 1):
        words = ", ".join(dict.fromkeys(_label_words(w, "en") for w in t["labels"][:3])) or t["kind"]
        bpm = f", around {t['tempo_bpm']:.0f} BPM" if t["tempo_bpm"] else ""
        lines.append(f"taste {k} ({t['share']:.0%}): {words}{bpm}; e.g. {', '.join(t['examples'])}")
    if against:
        lines.append("avoids: " + ", ".join(against))
    lines.append(
        f"collaborative filtering: on ({listeners} listeners share this library)"
        if cf_on
        else "collaborative filtering: off (no listening shared with other listeners yet)"
    )
    return lines


def _name(row) -> str:
    """A track's title (from its tags) or its file name."""
    title = (row.tags or {}).get("title")
    return str(title) if title else os.path.basename(row.path)


def _label_words(label: str, language: str) -> str:
    """A model label in plain words: its Chinese phrasing for Chinese, its first comma part otherwise."""
    if language == "zh":
        from .query import label_phrasings

        for phrase in label_phrasings().get(label, []):
            if any("\u4e00" <= ch <= "\u9fff" for ch in phrase):
                return phrase
    return label.split(",")[0].strip().lower()


# -- list building ------------------------------------------------------------------------------


def mmr(
    relevance: np.ndarray,
    vectors: np.ndarray,
    *,
    limit: int,
    lam: float = MMR_LAMBDA,
    pool: int = 200,
    groups: np.ndarray | None = None,
    quotas: dict[int, int] | None = None,
) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): indices of ``limit`` rows, each maximising
    ``lam * relevance - (1 - lam) * max cosine to the rows already chosen``. ``relevance`` (c,),
    ``vectors`` (c, d) unit rows; only the best ``pool`` by relevance are considered. O(limit x pool x d).

    With ``groups`` (c,) (a taste per row) and ``quotas`` {group: places}, each step first serves the
    group furthest below its quota (so a second taste is not crowded out by a first one that scores
    higher overall), then the rest goes to the best rows of any group."""
    c = relevance.shape[0]
    if c == 0:
        return []
    top = np.argsort(-relevance, kind="stable")[:pool]
    rel, vec = relevance[top].astype(np.float64), vectors[top]
    grp = groups[top] if groups is not None else np.zeros(top.size, np.int64)
    got = dict.fromkeys(quotas or {}, 0)
    closest = np.full(top.size, -np.inf)
    chosen: list[int] = []
    free = np.ones(top.size, bool)
    for _ in range(min(limit, top.size)):
        allowed = free.copy()
        wanting = [g for g, q in (quotas or {}).items() if got[g] < q and (free & (grp == g)).any()]
        if wanting:
            g = min(wanting, key=lambda g: (got[g] / quotas[g], -quotas[g]))  # type: ignore[index]
            allowed &= grp == g
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(allowed, lam * rel - (1 - lam) * penalty, -np.inf)
        k = int(np.argmax(value))
        chosen.append(k)
        free[k] = False
        if int(grp[k]) in got:
            got[int(grp[k])] += 1
        closest = np.maximum(closest, vec @ vec[k])
    return [int(top[k]) for k in chosen]


def taste_quotas(profile: Profile, limit: int, *, least: float = 0.1) -> dict[int, int]:
    """Places in a list of ``limit`` owed to each taste: in proportion to its weight, at least one for
    every taste with at least ``least`` of the weight."""
    total = sum(t.weight for t in profile.tastes) or 1.0
    return {k: max(1, int(limit * t.weight / total)) for k, t in enumerate(profile.tastes) if t.weight / total >= least}


def _n_explore(limit: int, share: float) -> int:
    return math.floor(limit * share + 0.5) if limit >= 5 else 0


def explore_slots(order: list[int], relevance: np.ndarray, *, limit: int, share: float, seed: int) -> list[int]:
    """``order`` with its last ``round(limit * share)`` places given to items drawn (seeded) from
    further down the candidates (ranks 2 x limit to 6 x limit by relevance): an exploration share."""
    n = _n_explore(limit, share)
    if n == 0 or len(order) < limit:
        return order[:limit]
    ranked = np.argsort(-relevance, kind="stable")
    keep = order[: limit - n]
    farther = [int(i) for i in ranked[2 * limit : 6 * limit] if int(i) not in keep]
    if not farther:
        return order[:limit]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(farther), size=min(n, len(farther)), replace=False)
    return keep + [farther[int(p)] for p in sorted(picks)]
