"""Scale benchmark: a synthetic library of N items grown from real analyses, and what it costs.

``soundscope bench --scale N`` indexes real audio (the demo corpus, or ``--from`` an existing library),
then writes N items through the store's own bulk write path (:meth:`Catalog.bulk`), each a mix of
two real items' analyses (label scores, segment and description vectors) plus 2 % noise, so the ANN
is measured on data that varies as real data does, not on exact copies. It reports build, flush and
open times, warm text and similar latency (CPU and wall, p50/p99), peak RSS of a query process, disk
per item, ANN recall@10 against exact search, top-10 overlap of text search with the exact full-scan
ranking, and the wall time of ``soundscope search`` from the shell.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .bench import _pct
from .store import SegmentData, Store
from .threads import VARS

TIE_TOLERANCE = 0.01  # a result whose exact fused score is within 1 % of the exact 10th best counts as a match
QUERIES = [
    "dog barking", "rain on a roof", "piano music", "狗叫", "someone speaking", "helicopter overhead",
    "crackling fire", "a baby crying", "sea waves", "clock ticking", "慢歌", "chainsaw", "birds singing",
    "drums and bass", "trumpet solo", "下雨的声音", "sneezing", "rooster", "a slow song", "quiet piano under 3 minutes",
]  # fmt: skip


def _source_items(store: Store) -> list[dict[str, Any]]:
    """Each item of a real library with what a synthetic copy needs: row, item data, first segment."""
    cat = store.catalog
    out = []
    for row in cat.items():
        item_data = []
        for space in cat.models():
            scores, embedding = cat.item_scores(row.id, space), cat.item_vector(row.id, space)
            if scores is not None or embedding is not None:
                item_data.append((space, scores, embedding))
        segs: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
        first = None
        shared = set()  # spaces where a one-segment file's segment data is its item data (as put_item stores it)
        whole = {space: (scores, embedding) for space, scores, embedding in item_data}
        for space in cat.models():
            rows = cat.segments_of(row.id, space)
            if rows and (rows[0][3] is not None or rows[0][4] is not None):
                first = first or rows[0]
                segs[space] = (rows[0][3], rows[0][4])
                if (
                    len(rows) == 1
                    and space in whole
                    and all(_same(x, y) for x, y in zip(segs[space], whole[space], strict=True))
                ):
                    shared.add(space)
        out.append({"row": row, "item_data": item_data, "segment": segs, "shared": shared,
                    "end": first[2] if first else 5.0})  # fmt: skip
    return out


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _mix(a: np.ndarray | None, b: np.ndarray | None, alpha: float, rng, *, unit: bool) -> np.ndarray | None:
    if a is None:
        return None
    v = (1 - alpha) * a + (alpha * b if b is not None and b.shape == a.shape else 0)
    v = v + rng.normal(0, 0.02 * (float(np.abs(a).mean()) + 1e-6), a.shape)
    if unit:
        return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)
    return np.clip(v, 0, 1).astype(np.float32)


def build(store: Store, sources: list[dict[str, Any]], n: int, *, seed: int = 0, chunk: int = 2000) -> float:
    """Write ``n`` synthetic items into ``store`` (bulk transactions of ``chunk``); returns seconds."""
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    done = 0
    while done < n:
        with store.catalog.bulk() as cat:
            for k in range(done, min(n, done + chunk)):
                a, b = sources[rng.integers(len(sources))], sources[rng.integers(len(sources))]
                alpha = float(rng.uniform(0, 0.35))
                row = a["row"]
                features = json.loads(json.dumps(row.features))
                music = features.get("music")
                if music and music.get("tempo_bpm"):
                    music["tempo_bpm"] = float(music["tempo_bpm"]) * float(rng.uniform(0.9, 1.1))
                item = {
                    "path": f"/scale/{k // 1000:04d}/{k:07d}_{Path(row.path).stem}{Path(row.path).suffix}",
                    "root": "/scale",
                    "size": 1,
                    "mtime": float(k),
                    "content_hash": f"synthetic-{seed}-{k}",
                    "duration_s": float(row.duration_s * rng.uniform(0.8, 1.2)),
                    "sample_rate": row.sample_rate,
                    "channels": row.channels,
                    "codec": row.codec,
                    "tags": row.tags,
                    "features": features,
                    "kind": row.kind,
                    "description": row.description,
                    "indexed_at": 0.0,
                }
                bseg = b["segment"]
                bdata = {s: (sc, em) for s, sc, em in b["item_data"]}
                data = [
                    SegmentData(space, _mix(sc, bdata.get(space, (None, None))[0], alpha, rng, unit=False),
                                _mix(em, bdata.get(space, (None, None))[1], alpha, rng, unit=True))
                    for space, sc, em in a["item_data"]
                ]  # fmt: skip
                mixed = {d.space: d for d in data}
                seg = [  # a short source file's segment is its item: so is its copy's
                    mixed[space] if space in a["shared"] else
                    SegmentData(space, _mix(sc, (bseg.get(space) or (None, None))[0], alpha, rng, unit=False),
                                _mix(em, (bseg.get(space) or (None, None))[1], alpha, rng, unit=True))
                    for space, (sc, em) in a["segment"].items()
                ]  # fmt: skip
                cat.put_item(item, [(0.0, float(a["end"]), seg)], data)
        done = min(n, done + chunk)
    return time.perf_counter() - t


def disk_ledger(data: Path, n: int) -> dict[str, int]:
    """Bytes per item of each part of a data directory: SQLite tables and indexes (``dbstat``, after a
    checkpoint), columns, each vector index file, the rest; largest first."""
    import sqlite3
    from contextlib import closing

    parts: dict[str, int] = {}
    catalog = data / "catalog.sqlite"
    with closing(sqlite3.connect(catalog)) as conn:  # sqlite3's own context manager commits, never closes
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        small = 0.02 * catalog.stat().st_size
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            key = f"catalog:{name}" if size >= small else "catalog:other"
            parts[key] = parts.get(key, 0) + int(size)
    for f in data.rglob("*"):
        if f.is_file() and not f.name.startswith("catalog.sqlite"):
            rel = f.relative_to(data)
            key = "columns" if rel.parts[0] == "columns" else str(rel) if rel.parts[0] == "vectors" else "other"
            parts[key] = parts.get(key, 0) + f.stat().st_size
    return {k: round(v / max(n, 1)) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


def _timed(fn, reps: list) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for arg in reps:
        t, c = time.perf_counter(), time.process_time()
        fn(arg)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


TIE = 1e-3  # cosine within this of the 10th exact neighbour is as near (float16 storage rounds at ~1e-3)


def recall_at_10(
    store: Store, space: str, n_queries: int = 50, seed: int = 1, *, queries: np.ndarray | None = None
) -> float:
    """ANN recall@10 of ``space``'s index against exact cosine over every vector in the catalog: the share
    of the 10 returned keys that are among the exact 10 nearest (ties within :data:`TIE` included).

    The queries are ``n_queries`` of the space's own vectors plus noise (item-like: "similar"), or the
    given ``queries`` (m, d), e.g. encoded text queries against descriptions, which lie far from every
    item and are the harder case for a graph index."""
    source = store.source(space)
    keys, vecs = store.catalog.vectors_range(source, space)
    if keys.size < 20:
        return 1.0
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)  # cosine: stored rows are near unit
    vecs = vecs.astype(np.float16)
    rng = np.random.default_rng(seed)
    if queries is None:
        picks = rng.choice(keys.size, size=min(n_queries, keys.size), replace=False)
        queries = vecs[picks].astype(np.float32) + rng.normal(0, 0.02, (picks.size, vecs.shape[1])).astype(np.float32)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    index = store.vectors(space)
    hits = []
    for q in queries.astype(np.float32):
        exact = np.zeros(keys.size, np.float32)
        for lo in range(0, keys.size, 200_000):  # chunked: the f16 matrix never becomes one f32 copy
            exact[lo : lo + 200_000] = vecs[lo : lo + 200_000].astype(np.float32) @ q
        kth = float(np.sort(exact)[-10])
        got, _ = index.search(q, 10)
        got_sims = exact[np.searchsorted(keys, got)]  # keys ascend (catalog order)
        hits.append(float(np.sum(got_sims >= kth - TIE)) / 10)  # an equally near neighbour counts
    return round(float(np.mean(hits)), 4)


def exact_overlap(lib: Any, data: Path, queries: list[str]) -> dict[str, float]:
    """Top-10 overlap of ``lib``'s (a :class:`~soundscope.api.Library`) text search with the exhaustive
    computation of the same ranking: every ranker scores every item with no index (labels, description
    cosines, BM25 over every match) and hands fusion its best candidates as the indexed path does
    (``top10_overlap_with_exact``). Also against fusing every item's rank down to the last
    (``..._full_depth``), where ties among synthetic copies are broken by ranks no candidate path
    returns (the 28,802nd by description, say); and the share of results the exact ranking scores
    within :data:`TIE_TOLERANCE` of its own 10th best."""
    from .api import Library

    out: dict[str, float] = {}
    ours_of = {q: [r.item_id for r in lib.search(q, limit=10)] for q in queries}
    for full_depth in (False, True):
        exact = Library(data, create=False)
        exact.searcher.exact, exact.searcher.exact_full_depth = True, full_depth
        overlap, near = [], []
        for q in queries:
            ours, ref = ours_of[q], exact.search(q, limit=1000)
            overlap.append(len(set(ours) & {r.item_id for r in ref[:10]}) / max(min(len(ref), 10), 1))
            fused, tenth = {r.item_id: r.score for r in ref}, ref[min(len(ref), 10) - 1].score if ref else 0.0
            hits = [fused.get(i, 0.0) >= tenth * (1 - TIE_TOLERANCE) for i in ours]
            near.append(float(np.mean(hits)) if hits else 1.0)
        exact.close()
        tag = "_full_depth" if full_depth else ""
        out[f"top10_overlap_with_exact{tag}"] = round(float(np.mean(overlap)), 4)
        out[f"top10_within_tolerance_of_exact{tag}"] = round(float(np.mean(near)), 4)
    return out


def _shell_search(data_dir: Path, query: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "soundscope.cli", "search", query, "--data-dir", str(data_dir), "-n", "10"],
        check=True,
        capture_output=True,
        env={**os.environ, **dict.fromkeys(VARS, "1")},
    )
    return time.perf_counter() - t


_PROBE = r"""
import json, sys, time
t = time.perf_counter()
from soundscope.api import Library
lib = Library(sys.argv[1], create=False)
lib.search("dog barking", limit=10)
first = time.perf_counter() - t
for q in json.loads(sys.argv[2]):
    lib.search(q, limit=10)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of the (large) benchmark process
# would report the parent's peak; VmHWM is this process's own high-water mark
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({"open_first_query_s": first, "rss_mb": hwm / 1024}))
"""


def run(
    n: int,
    *,
    source_dir: str | None = None,
    work: str | None = None,
    seed: int = 0,
    queries: int = 100,
    reuse: str | None = None,
) -> dict:
    """Build a synthetic library of ``n`` items and measure it (see the module docstring). ``reuse``: measure
    the library a previous run built there instead (grown from the same ``source_dir``; it gains and loses
    the one item the add and delete timings write), skipping the build (25 min at 10^6 items)."""
    from .api import Library

    tmp = tempfile.mkdtemp(prefix="soundscope-scale-", dir=work) if reuse is None else str(Path(reuse).parent)
    root = Path(tmp)
    if source_dir is None:
        from .bench import demo_corpus

        src_dir = root / "source"
        with Library(src_dir, asr_model="none") as src:
            src.index([str(demo_corpus())])
    else:
        src_dir = Path(source_dir)
    with Store(src_dir, create=False) as src_store:
        sources = _source_items(src_store)
        models = src_store.catalog.models()
    data = root / "library" if reuse is None else Path(reuse)
    out: dict[str, Any] = {"items": n, "sources": len(sources), "data_dir": str(data)}
    if reuse is None:
        with Store(data) as store:
            for space, m in models.items():
                store.catalog.register_model(space, m["model_id"], m["params"], m["dim"], m["labels"])
            out["build_s"] = round(build(store, sources, n, seed=seed), 2)
            t = time.perf_counter()
            store.flush(force=True)
            out["flush_s"] = round(time.perf_counter() - t, 2)  # columns + vector indexes (IVF lists from 4,096)
    else:
        with Store(data, create=False) as store:
            out["items"] = store.catalog.count()
            store.flush(force=True)  # what the last run's add and delete left
    out["disk_ledger_bytes_per_item"] = disk_ledger(data, out["items"])  # checkpoints the WAL first
    disk = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    out["disk_bytes_per_item"] = round(disk / max(out["items"], 1))
    qs = [f"{QUERIES[i % len(QUERIES)]}" + ("" if i < len(QUERIES) else f" {i}") for i in range(queries)]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(data), json.dumps(qs)], check=True, capture_output=True, text=True,
        env={**os.environ, **dict.fromkeys(VARS, "1")},
    )  # fmt: skip
    out["query_process"] = json.loads(probe.stdout.strip().splitlines()[-1])
    with Library(data, create=False) as lib:
        for q in ("warm up", "热身"):  # lazy one-time loads (the Chinese segmenter); the first query is timed apart
            lib.search(q, limit=10)
        wall, cpu = _timed(lambda q: lib.search(q, limit=10), qs)
        out["text_query_wall"], out["text_query_cpu"] = _pct(wall), _pct(cpu)
        ids = lib.store.columns().ids
        picks = np.random.default_rng(seed).choice(ids, size=min(51, ids.size), replace=False).tolist()
        lib.similar(int(picks.pop()), limit=10)  # one-time loads (an index below VIEW_ABOVE is read whole), untimed
        wall, cpu = _timed(lambda i: lib.similar(int(i), limit=10), picks)
        out["similar_wall"], out["similar_cpu"] = _pct(wall), _pct(cpu)
        out["recall_at_10"] = {s: recall_at_10(lib.store, s) for s in ("yamnet", "description") if s in models}
        if "description" in models:  # the text queries themselves against the descriptions
            out["text_recall_at_10"] = recall_at_10(lib.store, "description", queries=lib.encoder.encode(QUERIES))
        out.update(exact_overlap(lib, data, qs[: len(QUERIES)]))
        t = time.perf_counter()  # the writer's cost of one more file, after analysis: commit, flush, query
        build(lib.store, sources, 1, seed=seed + 1)
        lib.store.flush()
        lib.search("dog barking", limit=10)
        out["add_one_then_query_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        lib.store.catalog.delete_items([int(ids[-1])])
        lib.search("dog barking", limit=10)
        out["delete_one_then_query_s"] = round(time.perf_counter() - t, 3)
    out["shell_search_wall_s"] = round(float(np.median([_shell_search(data, q) for q in QUERIES[:3]])), 3)
    out["bench_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def format_report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"synthetic library: {r['items']} items from {r['sources']} real analyses ({r['data_dir']})",
            f"  build {r.get('build_s', '-')} s (bulk writes), "
            f"flush {r.get('flush_s', '-')} s (columns + vector indexes)",
            f"  disk {r['disk_bytes_per_item']} bytes per item: "
            + ", ".join(f"{k} {v}" for k, v in r.get("disk_ledger_bytes_per_item", {}).items()),
            f"  query process: open + first query {r['query_process']['open_first_query_s']:.2f} s, "
            f"peak RSS {r['query_process']['rss_mb']:.0f} MB",
            f"  text query wall p50 {r['text_query_wall']['p50_ms']} ms p99 {r['text_query_wall']['p99_ms']} ms; "
            f"CPU p50 {r['text_query_cpu']['p50_ms']} ms p99 {r['text_query_cpu']['p99_ms']} ms",
            f"  similar wall p50 {r['similar_wall']['p50_ms']} ms p99 {r['similar_wall']['p99_ms']} ms; "
            f"CPU p50 {r['similar_cpu']['p50_ms']} ms",
            f"  ANN recall@10 {r['recall_at_10']} (text queries against descriptions: {r.get('text_recall_at_10')}); "
            f"text top-10 overlap with the exhaustive ranking {r['top10_overlap_with_exact']} "
            f"({r.get('top10_within_tolerance_of_exact')} within {TIE_TOLERANCE:.0%} of its 10th score; "
            f"fusing every item's rank: {r.get('top10_overlap_with_exact_full_depth')}, "
            f"{r.get('top10_within_tolerance_of_exact_full_depth')})",
            f"  add one item then query {r['add_one_then_query_s']} s; "
            f"delete one item then query {r['delete_one_then_query_s']} s; "
            f"shell `soundscope search` {r['shell_search_wall_s']} s",
        ]
    )
