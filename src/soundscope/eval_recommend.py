"""``soundscope eval --section recommend``: recommendations measured on real data (issue 14).

1. **Collaborative filtering on Last.fm** (HetRec 2011, ``../shared/data/lastfm-2k``; non-commercial:
   read here for evaluation only, never copied). Per user, 20 % of their artists held out at random
   (seed 0); the top 10 (20) recommended among artists they have not played in training. Recall@10/20,
   NDCG@10, HitRate@10, catalogue coverage of the top 10, for most-popular, item-kNN (cosine), ALS
   (`implicit`, if installed), EASE, and soundscope's model: EASE blended with the tag-content score of
   :func:`tag_profiles` (more for listeners with few artists). Cold users (<= 5 training artists) apart.
2. **Simulated listeners on labelled audio** (ESC-10 and the music set): a listener likes one or two
   classes; after k = 1, 3, 5 likes (and 2 dislikes of other classes) precision@10 of
   :meth:`Library.recommend` against their classes, the liked items excluded; two-class listeners: both
   classes in the top 10.
3. **Personalised search**: the same query for listeners with different tastes: top 5s differ, each
   listener's liked class ranks higher for them than in the plain search, a listener with no history
   gets exactly the plain results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .recommend import EASE

CF_LAMBDA = 200.0  # EASE L2 penalty on Last.fm (binary play matrix)
COLD = 5  # a listener with at most this many training artists is "cold"
TAG_WEIGHT, TAG_WEIGHT_COLD = 0.05, 0.5  # the tag-content score's share in the hybrid (warm / cold listeners)
COLD_SHARE = 0.2  # test users made cold (their training cut to COLD artists): Last.fm has only 7 of its own
MIN_USERS = 2  # artists with fewer training listeners cannot be recommended by co-occurrence


# -- 1. Last.fm ---------------------------------------------------------------------------------------


def load_lastfm(root: Path) -> dict[str, Any]:
    """user_artists.dat and user_taggedartists.dat as arrays: users, artists, plays; tag triples."""
    ua = np.loadtxt(root / "user_artists.dat", delimiter="\t", skiprows=1, dtype=np.int64)
    ut = np.loadtxt(root / "user_taggedartists.dat", delimiter="\t", skiprows=1, dtype=np.int64, usecols=(0, 1, 2))
    return {"user": ua[:, 0], "artist": ua[:, 1], "plays": ua[:, 2], "tags": ut}


def split(data: dict[str, Any], *, share: float = 0.2, seed: int = 0):
    """Per user, ``share`` of their artists held out at random: (users (U,), artists (I,), train (U, I)
    csr binary, test {row: set(cols)})."""
    from scipy.sparse import csr_matrix

    users, u_idx = np.unique(data["user"], return_inverse=True)
    artists, a_idx = np.unique(data["artist"], return_inverse=True)
    rng = np.random.default_rng(seed)
    train_rows, train_cols, test = [], [], {}
    order = np.argsort(u_idx, kind="stable")
    bounds = np.flatnonzero(np.diff(u_idx[order])) + 1
    for chunk in np.split(order, bounds):
        u = int(u_idx[chunk[0]])
        cols = a_idx[chunk]
        perm = rng.permutation(cols.size)
        n_test = round(share * cols.size)
        held = cols[perm[:n_test]]
        kept = cols[perm[n_test:]]
        if held.size:
            test[u] = set(held.tolist())
        train_rows.extend([u] * kept.size)
        train_cols.extend(kept.tolist())
    X = csr_matrix((np.ones(len(train_rows), np.float32), (train_rows, train_cols)), shape=(users.size, artists.size))
    return users, artists, X, test


def tag_profiles(data: dict[str, Any], users, artists, test: dict[int, set[int]]):
    """(artists, tags) L2-normalised TF-IDF of the tags listeners gave each artist, leaving out every
    tag a user gave to one of their own held-out artists (that would leak the answer)."""
    from scipy.sparse import csr_matrix

    t = data["tags"]
    u = np.searchsorted(users, t[:, 0])
    a = np.searchsorted(artists, t[:, 1])
    ok = (u < users.size) & (a < artists.size)
    ok &= (users[np.minimum(u, users.size - 1)] == t[:, 0]) & (artists[np.minimum(a, artists.size - 1)] == t[:, 1])
    held = {(uu, aa) for uu, items in test.items() for aa in items}
    ok &= np.asarray([(int(x), int(y)) not in held for x, y in zip(u, a, strict=True)])
    tags, tag_idx = np.unique(t[ok, 2], return_inverse=True)
    M = csr_matrix((np.ones(int(ok.sum()), np.float32), (a[ok], tag_idx)), shape=(artists.size, tags.size))
    df = np.asarray((M > 0).sum(0)).ravel()
    M = M.multiply(np.log(artists.size / np.maximum(df, 1))[None, :]).tocsr()
    norm = np.sqrt(np.asarray(M.multiply(M).sum(1)).ravel())
    return csr_matrix(M.multiply(1 / np.maximum(norm, 1e-9)[:, None]))


def make_cold(X, test: dict[int, set[int]], *, share: float = COLD_SHARE, seed: int = 0):
    """Cold listeners: ``share`` of the test users (seeded) keep only :data:`COLD` random training artists
    (the others are dropped from training; their held-out artists stay the test), plus every user who has
    at most that many anyway. Returns (the training matrix, {row: held-out set} of the cold users)."""
    rng = np.random.default_rng(seed + 1)
    rows = np.asarray(sorted(test), np.int64)
    chosen = set(rng.choice(rows, size=int(share * rows.size), replace=False).tolist())
    X = X.tolil()
    for u in chosen:
        cols = X.rows[u]
        if len(cols) > COLD:
            keep = sorted(rng.choice(cols, size=COLD, replace=False).tolist())
            X.rows[u], X.data[u] = keep, [1.0] * COLD
    X = X.tocsr()
    n = np.asarray(X.sum(1)).ravel()
    return X, {u: t for u, t in test.items() if n[u] <= COLD}


def _metrics(scores_fn, X, test: dict[int, set[int]], *, batch: int = 256) -> dict[str, Any]:
    """Recall@10/20, NDCG@10, HitRate@10 and coverage of ``scores_fn(rows) -> (b, I)`` over test users."""
    rows = np.asarray(sorted(test), np.int64)
    rec10, rec20, ndcg, hit, seen = [], [], [], [], set()
    disc = 1 / np.log2(np.arange(2, 12))
    for s in range(0, rows.size, batch):
        r = rows[s : s + batch]
        sc = np.asarray(scores_fn(r), np.float64)
        sc[X[r].nonzero()] = -np.inf  # training items excluded
        top = np.argpartition(-sc, 20, axis=1)[:, :20]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sc, top, 1), axis=1, kind="stable"), 1)
        for k, u in enumerate(r.tolist()):
            truth = test[u]
            rel = np.asarray([i in truth for i in top[k]], bool)
            rec10.append(rel[:10].sum() / len(truth))
            rec20.append(rel.sum() / len(truth))
            ndcg.append(float(rel[:10] @ disc) / float(disc[: min(10, len(truth))].sum()))
            hit.append(bool(rel[:10].any()))
            seen.update(top[k, :10].tolist())
    return {
        "users": int(rows.size),
        "recall@10": round(float(np.mean(rec10)), 4),
        "recall@20": round(float(np.mean(rec20)), 4),
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "hitrate@10": round(float(np.mean(hit)), 4),
        "coverage@10": round(len(seen) / X.shape[1], 4),
    }


def _restricted(X, scores_small: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.full((scores_small.shape[0], X.shape[1]), -1e9, np.float32)
    out[:, cols] = scores_small
    return out


def run_lastfm(root: Path, *, seed: int = 0) -> dict[str, Any]:
    """The CF evaluation (see the module docstring): the issue's exact protocol, then the same with
    :data:`COLD_SHARE` of the test users made cold (:func:`make_cold`), every model refitted."""
    data = load_lastfm(root)
    users, artists, X, test = split(data, seed=seed)
    out: dict[str, Any] = {"users": int(users.size), "artists": int(artists.size), "test_users": len(test)}
    T = tag_profiles(data, users, artists, test)
    exact = _fit_and_score(X, test, T, {"all": test})
    out.update({k: v for k, v in exact.items() if k != "metrics"})
    out["all"] = exact["metrics"]["all"]
    Xc, cold = make_cold(X, test, seed=seed)
    colded = _fit_and_score(Xc, test, T, {"cold": cold})
    out["cold_users"] = len(cold)
    out["cold"] = colded["metrics"]["cold"]
    return out


def _fit_and_score(X, test, T, groups: dict[str, dict[int, set[int]]]) -> dict[str, Any]:
    """Fit every model on ``X`` (users, artists) and score it on each group of test users."""
    n_train = np.asarray(X.sum(1)).ravel()
    counts = np.asarray(X.sum(0)).ravel()
    cols = np.flatnonzero(counts >= MIN_USERS)
    Xs = X[:, cols].tocsr()
    out: dict[str, Any] = {"ease_items": int(cols.size)}
    models: dict[str, Any] = {"most-popular": lambda r: np.broadcast_to(counts, (r.size, counts.size))}
    G = np.asarray((Xs.T @ Xs).todense(), np.float32)  # item-kNN: cosine, all neighbours
    norm = np.sqrt(np.diag(G))
    S = G / np.maximum(np.outer(norm, norm), 1e-9)
    np.fill_diagonal(S, 0)
    models["item-kNN"] = lambda r: _restricted(X, np.asarray(Xs[r] @ S), cols)
    t = time.perf_counter()
    ease = EASE(lam=CF_LAMBDA).fit(Xs)
    out["ease_fit_s"] = round(time.perf_counter() - t, 2)
    models["EASE"] = lambda r: _restricted(X, ease.scores(Xs[r]), cols)
    try:
        import implicit
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            als = implicit.als.AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=0,
                                                       num_threads=1)  # fmt: skip
            t = time.perf_counter()
            als.fit((X * 10.0).tocsr(), show_progress=False)  # confidence 1 + 10 for a played artist
            out["als_fit_s"] = round(time.perf_counter() - t, 2)
        uf, itf = np.asarray(als.user_factors), np.asarray(als.item_factors)
        models["ALS (implicit)"] = lambda r: uf[r] @ itf.T
    except ImportError:
        out["als"] = "skipped: pip install 'soundscope[recommend]' (implicit)"

    def hybrid(r: np.ndarray) -> np.ndarray:
        cf = _restricted(X, ease.scores(Xs[r]), cols).astype(np.float64)
        top = np.maximum(cf.max(1, keepdims=True), 1e-9)
        prof = np.asarray((X[r] @ T).todense())  # the listener's tag profile
        content = np.asarray((T @ prof.T).T)  # cosine-like score of every artist to it
        content /= np.maximum(content.max(1, keepdims=True), 1e-9)
        w = np.where(n_train[r][:, None] <= COLD, TAG_WEIGHT_COLD, TAG_WEIGHT)  # few artists: lean on the tags
        pop = counts[None, :] / counts.max()
        return np.where(cf > -1e8, cf / top, 0.0) + w * content + 0.01 * pop

    models["soundscope (EASE + tags)"] = hybrid
    out["metrics"] = {g: {name: _metrics(fn, X, users) for name, fn in models.items()} for g, users in groups.items()}
    return out


def format_lastfm(r: dict[str, Any]) -> str:
    lines = [
        f"Last.fm 2k: {r['users']} users, {r['artists']} artists ({r['ease_items']} with >= {MIN_USERS} listeners), "
        f"{r['test_users']} test users; cold: {r['cold_users']} users cut to <= {COLD} training artists, "
        "models refitted; "
        f"EASE fit {r['ease_fit_s']} s" + (f", ALS fit {r['als_fit_s']} s" if "als_fit_s" in r else "") + " (1 thread)",
        f"{'model':28s}{'R@10':>8s}{'R@20':>8s}{'NDCG@10':>9s}{'HR@10':>8s}{'cov@10':>8s}   cold: R@10  NDCG@10",
    ]
    for name, m in r["all"].items():
        c = r["cold"][name]
        lines.append(
            f"{name:28s}{m['recall@10']:8.3f}{m['recall@20']:8.3f}{m['ndcg@10']:9.3f}{m['hitrate@10']:8.3f}"
            f"{m['coverage@10']:8.3f}   {c['recall@10']:10.3f}{c['ndcg@10']:9.3f}"
        )
    return "\n".join(lines)


def default_lastfm() -> Path | None:
    from .evaluate import default_esc10

    esc = default_esc10()
    cand = esc.parent / "lastfm-2k" if esc else None
    return cand if cand and (cand / "user_artists.dat").exists() else None


# -- 2 and 3. simulated listeners on labelled audio -----------------------------------------------------


def _listeners(classes: list[str], *, seed: int, two: int = 10) -> list[list[str]]:
    """Every one-class listener, and ``two`` listeners who like two classes (seeded pairs)."""
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < min(two, len(classes) * (len(classes) - 1) // 2):
        a, b = rng.choice(len(classes), 2, replace=False)
        pairs.add(tuple(sorted((classes[a], classes[b]))))
    return [[c] for c in classes] + [list(p) for p in sorted(pairs)]


def simulate(lib, labels: dict[int, str], *, ks=(1, 3, 5), dislikes: int = 2, seed: int = 0, limit: int = 10,
             explore: float = 0.0, repeats: int = 3,
             recording: dict[int, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Simulated listeners over ``labels`` (item id -> class): precision@``limit`` after k likes (spread
    over their classes) and ``dislikes`` of other classes; both classes in the top ``limit`` for two-class
    listeners. Each listener is drawn ``repeats`` times (different liked items). ``recording`` (item id ->
    source recording): items cut from the same recording as a liked one are left out of the scored list
    (near-duplicates would inflate precision), as query-by-example scoring does."""
    classes = sorted(set(labels.values()))
    by_class = {c: sorted(i for i, lab in labels.items() if lab == c) for c in classes}
    rng = np.random.default_rng(seed)
    prec: dict[int, list[float]] = {k: [] for k in ks}
    prec_two: dict[int, list[float]] = {k: [] for k in ks}
    both: dict[int, list[bool]] = {k: [] for k in ks}
    latency = []
    for n, liked_classes in enumerate(_listeners(classes, seed=seed)):
        for rep in range(repeats):
            user = f"sim-{n}-{rep}"
            lib.forget(user)
            order = {c: list(rng.permutation(by_class[c])) for c in liked_classes}
            others = [c for c in classes if c not in liked_classes]
            for c in rng.choice(others, size=min(dislikes, len(others)), replace=False):
                lib.feedback("dislike", int(rng.choice(by_class[c])), user=user)
            liked: list[int] = []
            for k in range(1, max(ks) + 1):
                c = liked_classes[(k - 1) % len(liked_classes)]
                item = int(order[c].pop())
                liked.append(item)
                lib.feedback("like", item, user=user)
                if k not in ks:
                    continue
                t = time.perf_counter()
                got = lib.recommend(user=user, limit=limit + (30 if recording else 0), explore=explore)
                latency.append(time.perf_counter() - t)
                assert not set(liked) & {r.item_id for r in got}
                if recording:
                    sources = {recording.get(i) for i in liked}
                    got = [r for r in got if recording.get(r.item_id) not in sources][:limit]
                p = sum(labels.get(r.item_id) in liked_classes for r in got) / limit
                (prec if len(liked_classes) == 1 else prec_two)[k].append(p)
                if len(liked_classes) == 2:
                    both[k].append(all(any(labels.get(r.item_id) == c for r in got) for c in liked_classes))
            lib.forget(user)
    return {
        "classes": len(classes),
        "items": len(labels),
        "one_class_p_at_10": {k: round(float(np.mean(v)), 4) for k, v in prec.items()},
        "two_class_p_at_10": {k: round(float(np.mean(v)), 4) for k, v in prec_two.items() if v},
        "two_class_both_in_top10": {k: round(float(np.mean(v)), 4) for k, v in both.items() if v},
        "listeners": len(_listeners(classes, seed=seed)) * repeats,
        "recommend_ms_p50": round(float(np.median(latency)) * 1000, 1),
    }


PERSONAL_QUERIES = {  # query -> the classes two listeners may like, both plausible for it
    "water": ("rain", "sea_waves"),
    "animal sounds": ("dog", "rooster"),
    "noise": ("chainsaw", "helicopter"),
    "a person making a sound": ("sneezing", "crying_baby"),
    "crackling": ("crackling_fire", "rain"),
}


def personalised_search(lib, labels: dict[int, str], *, likes: int = 3, seed: int = 0) -> dict[str, Any]:
    """Per query, two listeners who like one class each (3 likes): do their top 5s differ, does each one's
    class rank higher for them than in the plain search (mean rank of its items in the top 20), and are
    the results of a listener with no history identical to the plain ones?"""
    rng = np.random.default_rng(seed)
    rows = {}
    for q, pair in PERSONAL_QUERIES.items():
        plain = lib.search(q, limit=20)
        mine = {}
        for c in pair:
            user = f"search-{c}"
            lib.forget(user)
            for i in rng.choice(sorted(i for i, lab in labels.items() if lab == c), likes, replace=False):
                lib.feedback("like", int(i), user=user)
            mine[c] = lib.search(q, limit=20, user=user)
            lib.forget(user)

        def share(results, c):
            return sum(labels.get(r.item_id) == c for r in results[:10]) / 10

        top5 = {c: [r.item_id for r in mine[c][:5]] for c in pair}
        rows[q] = {
            "top5_differ": top5[pair[0]] != top5[pair[1]],
            "liked_share_top10": {c: {"plain": share(plain, c), "personal": share(mine[c], c)} for c in pair},
            "no_history_identical": [r.to_dict() for r in lib.search(q, limit=20, user="nobody-new")]
            == [r.to_dict() for r in plain],
        }
    higher = [v["personal"] >= v["plain"] for r in rows.values() for v in r["liked_share_top10"].values()]
    strictly = [v["personal"] > v["plain"] for r in rows.values() for v in r["liked_share_top10"].values()]
    return {
        "queries": rows,
        "top5_differ": round(float(np.mean([r["top5_differ"] for r in rows.values()])), 3),
        "liked_class_not_lower": round(float(np.mean(higher)), 3),
        "liked_class_higher": round(float(np.mean(strictly)), 3),
        "no_history_identical": all(r["no_history_identical"] for r in rows.values()),
    }


MUSIC_CLASSES = {  # the music set's tracks by style (stems of evaluate._music_corpus; the rest unlabelled)
    "piano": ["piano_slow", "442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime", "harpsichord"],
    "strings": ["strings_slow", "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra)",
                "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy"],
    "electronic": ["techno", "admiralbob77_-_Choice_-_Drum-bass", "Kevin_MacLeod_-_Vibe_Ace", "rock_fast"],
    "speech": ["5703-47212-0000", "3436-172162-0000"],
}  # fmt: skip


def run(esc10: Path, base: Path, *, progress=None) -> dict[str, Any]:
    """All three parts; ESC-10 is indexed where ``soundscope eval --section esc10`` indexes it (reused)."""
    from .api import Library
    from .evaluate import default_reference, link_clips

    out: dict[str, Any] = {}
    lastfm = default_lastfm()
    if lastfm is not None:
        out["lastfm"] = run_lastfm(lastfm)
    work = base / "eval-esc10"
    clips = link_clips(esc10, work)
    with Library(work / "index") as lib:
        lib.index([str(work / "clips")], progress=progress)
        cat = lib.store.catalog
        labels, recording = {}, {}
        for c in clips:
            row = cat.item_by_path(c.path)
            if row is not None:
                labels[row.id], recording[row.id] = c.category, c.recording
        out["esc10"] = simulate(lib, labels)
        out["esc10_loso"] = simulate(lib, labels, recording=recording)
        out["esc10_explore"] = simulate(lib, labels, ks=(3,), explore=0.1, repeats=1)
        out["personal_search"] = personalised_search(lib, labels)
    reference = default_reference()
    if reference is not None:
        from .evaluate import _music_corpus

        corpus = _music_corpus(esc10.parent, reference, base / "eval-music")
        with Library(base / "eval-music" / "index") as lib:
            lib.index([str(base / "eval-music" / "tracks")], progress=progress)
            labels = {}
            for c, stems in MUSIC_CLASSES.items():
                for stem in stems:
                    row = lib.store.catalog.item_by_path(str(corpus[stem])) if stem in corpus else None
                    if row is not None:
                        labels[row.id] = c
            out["music"] = simulate(lib, labels, ks=(1, 2), dislikes=1, limit=2)
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = []
    if "lastfm" in r:
        lines.append(format_lastfm(r["lastfm"]))
    for name in ("esc10", "esc10_loso", "music"):
        if name not in r:
            continue
        s = r[name]
        lines.append(
            f"\n{name}: simulated listeners ({s['listeners']}), {s['items']} items, {s['classes']} classes; "
            f"recommend p50 {s['recommend_ms_p50']} ms"
        )
        lines.append(
            "  one-class P@N after k likes: " + ", ".join(f"k={k}: {v:.3f}" for k, v in s["one_class_p_at_10"].items())
        )
        if s["two_class_p_at_10"]:
            lines.append("  two-class P@N: " + ", ".join(f"k={k}: {v:.3f}" for k, v in s["two_class_p_at_10"].items()))
            lines.append("  two-class both classes in top N: "
                         + ", ".join(f"k={k}: {v:.3f}" for k, v in s["two_class_both_in_top10"].items()))  # fmt: skip
    if "esc10_explore" in r:
        lines.append(
            f"  with the 10 % exploration share: P@10 after 3 likes {r['esc10_explore']['one_class_p_at_10'][3]:.3f}"
        )
    if "personal_search" in r:
        p = r["personal_search"]
        lines.append(
            f"\npersonalised search ({len(p['queries'])} queries x 2 listeners): top-5s differ {p['top5_differ']:.2f}, "
            f"liked class share of the top 10 higher {p['liked_class_higher']:.2f} "
            f"(not lower {p['liked_class_not_lower']:.2f}), "
            f"no-history identical: {'yes' if p['no_history_identical'] else 'NO'}"
        )
        for q, v in p["queries"].items():
            lines.append(f"  {q!r}: " + ", ".join(f"{c} {s['plain']:.1f} -> {s['personal']:.1f}"
                                                  for c, s in v["liked_share_top10"].items()))  # fmt: skip
    return "\n".join(lines)
