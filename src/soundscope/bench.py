"""Benchmark: indexing throughput (x real time, files/s), query latency (p50/p99) and peak memory.

Indexes the given folders into a fresh temporary data directory (so nothing is cached), then
times text queries (each a distinct string, text-encoder cache cleared) and query-by-example.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

QUERY_WORDS = [
    "dog barking",
    "rain on a roof",
    "piano music",
    "狗叫",
    "someone speaking",
    "helicopter overhead",
    "crackling fire",
    "a baby crying",
    "sea waves",
    "clock ticking",
    "慢歌",
    "chainsaw",
    "birds singing",
    "drums and bass",
    "trumpet solo",
    "orchestra",
    "下雨的声音",
    "whale song",
    "sneezing",
    "rooster",
]


def demo_corpus() -> Path:
    return Path(__file__).parent / "data" / "demo"


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
        "n": len(values),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_speeds(seconds: float = 60.0) -> dict[str, float]:
    """x real time of each analysis stage alone on ``seconds`` of real music (one thread)."""
    from . import analyze, decode
    from .analyzers import musicnn, yamnet
    from .descriptors import MusicDescriptorAccumulator

    track = demo_corpus() / "music" / "Kevin_MacLeod_-_Vibe_Ace.ogg"
    t = time.perf_counter()
    y = decode.load(track)[: int(seconds * 16000)]
    out = {"decode": (y.shape[0] / 16000) / (time.perf_counter() - t)}
    dur = y.shape[0] / 16000

    def timed(fn) -> float:
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        return round(dur / (time.perf_counter() - t0), 1)

    out["features"] = timed(lambda: analyze._FeatureAccumulator(16000).push(y))
    out["yamnet"] = timed(lambda: yamnet.load().analyze(y))
    out["musicnn_mtt"] = timed(lambda: musicnn.load("MTT_musicnn").analyze(y))
    out["musicnn_msd"] = timed(lambda: musicnn.load("MSD_musicnn").analyze(y))
    out["music_descriptors"] = timed(lambda: MusicDescriptorAccumulator(16000).push(y))
    out["decode"] = round(out["decode"], 1)
    return out


def run(paths: list[str], *, n_queries: int = 200, seed: int = 0) -> dict[str, Any]:
    from .api import Library

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soundscope-bench-") as tmp, Library(tmp) as lib:
        t = time.perf_counter()
        _ = lib.analyzers, lib.encoder.encode(["warm up"])
        load_s = time.perf_counter() - t
        report = lib.index(paths)
        items = lib.store.catalog.items()
        text_lat = []
        for i in range(n_queries):
            query = f"{QUERY_WORDS[i % len(QUERY_WORDS)]}" + ("" if i < len(QUERY_WORDS) else f" {i}")
            getattr(lib.encoder, "_cache", {}).clear()
            t = time.perf_counter()
            lib.search(query, limit=10)
            text_lat.append(time.perf_counter() - t)
        qbe_lat = []
        for row in rng.sample(items, min(len(items), max(10, n_queries // 4))):
            t = time.perf_counter()
            lib.similar(row.id, limit=10)
            qbe_lat.append(time.perf_counter() - t)
        return {
            "corpus": paths,
            "files": report.indexed,
            "failed": report.failed,
            "audio_minutes": round(report.audio_seconds / 60, 2),
            "model_load_s": round(load_s, 2),
            "index_seconds": round(report.elapsed_s, 2),
            "index_x_realtime": round(report.speed_x_realtime, 1),
            "index_files_per_s": round(report.indexed / report.elapsed_s, 2) if report.elapsed_s else 0.0,
            "text_query": _pct(text_lat),
            "similar_query": _pct(qbe_lat),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "threads": 1,
            "stage_x_realtime": stage_speeds(),
        }


def format_report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"corpus: {', '.join(r['corpus'])}",
            f"  {r['files']} files, {r['audio_minutes']} min of audio, {r['failed']} failed; models loaded in "
            f"{r['model_load_s']} s",
            f"  indexing: {r['index_seconds']} s = {r['index_x_realtime']}x real time, "
            f"{r['index_files_per_s']} files/s",
            f"  text query:    p50 {r['text_query']['p50_ms']} ms, p99 {r['text_query']['p99_ms']} ms "
            f"(n={r['text_query']['n']})",
            f"  similar query: p50 {r['similar_query']['p50_ms']} ms, p99 {r['similar_query']['p99_ms']} ms "
            f"(n={r['similar_query']['n']})",
            f"  peak memory: {r['peak_rss_mb']} MB RSS",
            "  stages alone (x real time, 60 s of music, 1 thread): "
            + ", ".join(f"{k} {v:.0f}x" for k, v in r["stage_x_realtime"].items()),
        ]
    )


def main(args: argparse.Namespace) -> int:
    if getattr(args, "scale", None):
        from . import scale

        result = scale.run(args.scale, source_dir=args.source, work=args.work, queries=min(args.queries, 200),
                           reuse=getattr(args, "reuse", None))  # fmt: skip
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
        print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else scale.format_report(result))
        return 0
    paths = args.paths or [str(demo_corpus())]
    result = run(paths, n_queries=args.queries)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else format_report(result))
    return 0
