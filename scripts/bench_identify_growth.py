#!/usr/bin/env python3
"""Growth of identify's query latency with the size of the reference (issue 13).

Starts from the identify benchmark's real library (``soundscope eval --section identify`` builds it
under ``<bench>/library``) and adds synthetic reference to reach 10, 100 and 1000 hours: hashes drawn
from the real library's hash distribution (so bucket sizes are realistic), random item ids and times,
written as sorted parts in the index's own format, with random sketch windows (one per 1.02 s of each
synthetic track). Then the benchmark's 5 s queries (clean and white noise) are identified against each
size: p50 / p95 latency, top-1 still right, index size; and the unsure ones (0 dB pink noise and
negatives, which go on to the audio check and the sketch scan): their p50 / p95 and top-1 / false
positives.

    python scripts/bench_identify_growth.py [--bench DIR] [--hours 10 100 1000] [--queries 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from soundscope import fingerprint as fp
from soundscope import identify
from soundscope.store import Store

CHUNK = 20_000_000  # synthetic hashes written per part


def add_synthetic(store: Store, hours: float, have_s: float, rng: np.random.Generator) -> None:
    """Grow ``store``'s fingerprint index by synthetic parts up to ``hours`` of reference audio."""
    index = store.fingerprints()
    real = np.concatenate([np.asarray(p.hashes) for p in index.parts])
    rate = real.size / have_s
    need = int((hours * 3600 - have_s) * rate)
    next_id = 10_000_000
    while need > 0:
        n = min(CHUNK, need)
        h = np.sort(real[rng.integers(0, real.size, n)])
        tracks = n // int(rate * 240) + 1
        items = rng.integers(next_id, next_id + tracks, n).astype(np.uint32)  # 4-minute tracks
        times = rng.integers(0, int(240 / fp.FRAME_S), n).astype(np.uint32)
        per = int(240 / fp.FRAME_S) // fp.SKETCH_FRAMES  # sketch windows of a 4-minute track
        sketch = rng.integers(0, 1 << 63, size=(fp.SKETCH_WORDS, tracks * per), dtype=np.uint64)
        si = np.repeat(np.arange(next_id, next_id + tracks, dtype=np.uint32), per)
        sw = np.tile(np.arange(per, dtype=np.uint32), tracks)
        part = index._write_part(h, items, times, (sketch, si, sw), presorted=True)
        index.parts.append(part)
        index.manifest["parts"].append({"name": part.name, "n": len(part), "items": int(part.ids.size)})
        next_id += n // int(rate * 240) + 2
        need -= n
    index._write_manifest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=str(Path.home() / ".cache" / "soundscope" / "identify-bench"))
    ap.add_argument("--hours", type=float, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--work", default=None, help="where the grown libraries go (default: <bench>/growth)")
    args = ap.parse_args()
    bench = Path(args.bench)
    if not (bench / "library" / "catalog.sqlite").exists():
        print("run soundscope eval --section identify first (it builds <bench>/library)", file=sys.stderr)
        return 2
    with open(bench / "queries.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["negative"] == "0" and r["length_s"] == "5"
                and r["condition"] in ("clean", "white_0db")][: args.queries]  # fmt: skip
    clips = [(r, identify.load_query(bench / "queries" / r["file"])) for r in rows]
    with open(bench / "queries.csv") as f:
        five = [r for r in csv.DictReader(f) if r["length_s"] == "5"]
    half = args.queries // 2
    hard = [r for r in five if r["condition"] == "pink_0db"][:half] + [r for r in five if r["negative"] == "1"][:half]
    unsure = [(r, identify.load_query(bench / "queries" / r["file"])) for r in hard]
    work = Path(args.work or bench / "growth")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(bench / "library", work)
    store = Store(work)
    have_s = float(store.catalog.conn.execute("SELECT sum(duration_s) FROM items").fetchone()[0])
    rng = np.random.default_rng(0)
    results = []
    for hours in sorted(args.hours):
        t0 = time.perf_counter()
        add_synthetic(store, hours, have_s, rng)
        build_s = time.perf_counter() - t0
        store.fingerprints().refresh()
        for _, y in clips[:3]:  # warm the page cache
            identify.identify_array(store, y)
        lat, right = [], 0
        for r, y in clips:
            t1 = time.perf_counter()
            hits = identify.identify_array(store, y, limit=1)
            lat.append(time.perf_counter() - t1)
            right += bool(hits) and hits[0].path == r["reference"]
        slow, found, false = [], 0, 0
        for r, y in unsure:
            t1 = time.perf_counter()
            hits = identify.identify_array(store, y, limit=1)
            slow.append(time.perf_counter() - t1)
            found += bool(hits) and hits[0].path == r["reference"]
            false += bool(hits) and not r["reference"]
        st = store.fingerprints().stats()
        results.append({"hours": hours, "hashes": st["fingerprint_hashes"],
                        "sketch_windows": st["fingerprint_sketch_windows"],
                        "unsure_ms_p50": round(1000 * float(np.median(slow)), 1),
                        "unsure_ms_p95": round(1000 * float(np.percentile(slow, 95)), 1),
                        "unsure_right": found, "unsure_false": false, "unsure_n": len(unsure),
                        "index_gb": round(st["fingerprint_bytes"] / 1e9, 3),
                        "query_ms_p50": round(1000 * float(np.median(lat)), 1),
                        "query_ms_p95": round(1000 * float(np.percentile(lat, 95)), 1),
                        "top1": round(100 * right / len(clips), 1), "build_s": round(build_s, 1)})  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
        have_s = hours * 3600
    store.close()
    print("| reference | hashes | index | query p50 | p95 | top-1 (5 s clean + 0 dB) "
          "| unsure queries p50 / p95 | right / false (pink 0 dB + negatives) |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['hours']:g} h | {r['hashes']:,} | {r['index_gb']} GB | {r['query_ms_p50']} ms | "
              f"{r['query_ms_p95']} ms | {r['top1']}% | {r['unsure_ms_p50']} / {r['unsure_ms_p95']} ms "
              f"| {r['unsure_right']} / {r['unsure_false']} of {r['unsure_n']} |")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
