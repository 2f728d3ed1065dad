"""Speed of recommendations (issue 14) on a synthetic library of N items (the scale benchmark's builder).

    python scripts/bench_recommend.py --scale 100000 [--from DATADIR] [--work DIR] [--keep]

Builds N items with :func:`soundscope.scale.build` from a real library's analyses (default: the demo
corpus, indexed first), gives 30 simulated listeners 3-20 likes, a few dislikes, plays and skips each
(plus 5 who share items, so collaborative filtering is on), and reports: feedback event latency (p50/p99),
`recommend` latency without and with a query, personalised vs plain search, radio, and the library CF
fit. One query thread; OMP/BLAS at one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from soundscope import scale
from soundscope.api import Library
from soundscope.bench import _pct, demo_corpus
from soundscope.recommend import LibraryCF
from soundscope.store import Store


def build_library(n: int, source: str | None, work: Path) -> Path:
    if source is None:
        src = work / "source"
        with Library(src, asr_model="none") as lib:
            lib.index([str(demo_corpus())])
        source = str(src)
    data = work / "library"
    with Store(source, create=False) as s:
        sources, models = scale._source_items(s), s.catalog.models()
    with Store(data) as store:
        for space, m in models.items():
            store.catalog.register_model(space, m["model_id"], m["params"], m["dim"], m["labels"])
        t = time.perf_counter()
        scale.build(store, sources, n)
        store.flush(force=True)
        print(f"built {n} items in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return data


def timed(fn, args) -> list[float]:
    out = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t)
    return out


def stages(rec, users: list[str]) -> dict:
    """p50 ms of the stages of a recommendation with a cached profile: candidates (taste searches in the
    vector indexes, CF's best), their scores (item vectors, labels, tempo, CF), and the rest (MMR,
    exploration, explanations), the rest being the whole call less the first two; and the median number
    of candidates."""
    times: dict[str, list[float]] = {"candidates": [], "score": [], "rank_and_explain": []}
    counts = []
    for u in users:
        t0 = time.perf_counter()
        profile = rec.profile(u)
        items, scores, _ = rec.cf().scores(u)
        top = items[np.argsort(-scores)[:50]] if items.size else np.zeros(0, np.int64)
        ids = rec.candidates(profile, top)
        t1 = time.perf_counter()
        rec.score(profile, ids, user=u)
        t2 = time.perf_counter()
        rec.recommend(u, limit=10)
        t3 = time.perf_counter()
        times["candidates"].append(t1 - t0)
        times["score"].append(t2 - t1)
        times["rank_and_explain"].append(max(0.0, (t3 - t2) - (t2 - t0)))
        counts.append(len(ids))
    return {
        **{k: round(float(np.median(v)) * 1000, 2) for k, v in times.items()},
        "candidates_n": int(np.median(counts)),
    }


def run(data: Path, *, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out: dict = {}
    with Library(data, create=False) as lib:
        ids = lib.store.columns().ids
        out["items"] = int(ids.size)
        lib.search("warm up", limit=10)
        users = [f"bench-{k}" for k in range(30)]
        events = []
        for u in users:
            for i in rng.choice(ids, size=int(rng.integers(3, 21)), replace=False):
                events.append((u, int(i), "like", 0.0))
            for kind in ("dislike", "skip", "play", "play"):
                events.append((u, int(rng.choice(ids)), kind, float(rng.uniform(5, 60))))
        shared = rng.choice(ids, size=8, replace=False)
        for k in range(5):
            for i in shared[k : k + 4]:
                events.append((f"bench-share-{k}", int(i), "like", 0.0))
        lat = timed(lambda e: lib.feedback(e[2], e[1], user=e[0], seconds=e[3]), events)
        out["feedback_ms"] = {k: v for k, v in _pct(lat).items()}
        t = time.perf_counter()
        LibraryCF.fit(lib.store.catalog)
        out["library_cf_fit_s"] = round(time.perf_counter() - t, 3)
        lib.recommend(user=users[0], limit=10)  # warm the indexes and the CF model
        for u in users:  # first call per listener builds the profile; later ones hit its cache
            lib.recommender._profiles.pop(u, None)
        cold = timed(lambda u: lib.recommend(user=u, limit=10), users)
        warm = timed(lambda u: lib.recommend(user=u, limit=10), users)
        out["recommend_ms_profile_built"] = {k: v for k, v in _pct(cold).items()}
        out["recommend_ms_profile_cached"] = {k: v for k, v in _pct(warm).items()}
        out["recommend_stages_p50_ms"] = stages(lib.recommender, users)
        qs = ["给我推荐一首慢歌", "rain", "dog barking", "piano music", "something quiet"]
        pairs = [(users[k], qs[k % len(qs)]) for k in range(len(users))]
        out["recommend_query_ms"] = {
            k: v for k, v in _pct(timed(lambda p: lib.recommend(p[1], user=p[0]), pairs)).items()
        }
        out["search_plain_ms"] = {k: v for k, v in _pct(timed(lambda p: lib.search(p[1], limit=10), pairs)).items()}
        out["search_personal_ms"] = {
            k: v for k, v in _pct(timed(lambda p: lib.search(p[1], limit=10, user=p[0]), pairs)).items()
        }
        seeds = [(users[k], int(rng.choice(ids))) for k in range(10)]
        out["radio_10_ms"] = {
            k: v for k, v in _pct(timed(lambda p: lib.radio(p[1], user=p[0], limit=10), seeds)).items()
        }
        for u in {e[0] for e in events}:
            lib.forget(u)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=100_000)
    p.add_argument("--from", dest="source", default=None, help="grow the library from this library's analyses")
    p.add_argument("--work", default=None, help="build under this folder (default: the temp dir)")
    p.add_argument("--library", default=None, help="reuse a library built before (skips the build)")
    p.add_argument("--keep", action="store_true", help="keep the built library")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soundscope-rec-", dir=args.work))
    try:
        data = Path(args.library) if args.library else build_library(args.scale, args.source, work)
        print(json.dumps(run(data), indent=1))
    finally:
        if not args.keep and not args.library:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
