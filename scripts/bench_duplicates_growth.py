#!/usr/bin/env python3
"""Growth of ``duplicates`` with the library (issue 13): time per item and peak memory.

A synthetic library of N 4-minute tracks (28 hashes a second drawn from the identify benchmark's real
hash distribution when ``<bench>/library`` exists, else uniform; random times), in which a few tracks
get planted copies: a re-encoding (70 % of the hashes kept) and a 30 s excerpt (its times shifted).
``identify.duplicates`` then runs in a child process with the index read back in blocks of
``--max-entries`` (bucket files on disk), and the script reports wall time, time per item, the
child's peak RSS, and whether exactly the planted groups came back.

    python scripts/bench_duplicates_growth.py [--items 500 2000] [--planted 5] [--max-entries 2000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from soundscope import fingerprint as fp
from soundscope.store import Store

RATE = 28.0  # hashes per second of audio (the benchmark's)
TRACK_S = 240.0


def _item(k: int, duration: float) -> dict:
    return {"path": f"/synthetic/{k}.wav", "root": "/synthetic", "size": 1, "mtime": 0.0, "content_hash": f"s{k}",
            "duration_s": duration, "sample_rate": fp.SAMPLE_RATE, "channels": 1, "codec": "", "tags": {},
            "features": {}, "kind": "music", "description": "", "indexed_at": 0.0}  # fmt: skip


def build(work: Path, n: int, planted: int, pool: np.ndarray, rng: np.random.Generator) -> set[frozenset[int]]:
    """A library of ``n`` synthetic tracks plus 2 copies of each of ``planted``; the planted groups."""
    store = Store(work)
    index = store.fingerprints()
    per = int(RATE * TRACK_S)
    frames = int(TRACK_S / fp.FRAME_S)
    prints = {}
    for k in range(n):
        h = pool[rng.integers(0, pool.size, per)].astype(np.uint32)
        t = np.sort(rng.integers(0, frames, per)).astype(np.uint32)
        item_id, _ = store.catalog.put_item(_item(k, TRACK_S), [], [])
        index.add(item_id, fp.Fingerprint(h, t, TRACK_S))
        prints[item_id] = (h, t)
    groups = set()
    for k, src in enumerate(list(prints)[:planted]):
        h, t = prints[src]
        keep = rng.random(h.size) < 0.7  # a re-encoding: most landmarks survive
        a, _ = store.catalog.put_item(_item(n + 2 * k, TRACK_S), [], [])
        index.add(a, fp.Fingerprint(h[keep], t[keep], TRACK_S))
        start = int(60 / fp.FRAME_S)
        sel = (t >= start) & (t < start + int(30 / fp.FRAME_S))  # a 30 s excerpt from 1:00
        b, _ = store.catalog.put_item(_item(n + 2 * k + 1, 30.0), [], [])
        index.add(b, fp.Fingerprint(h[sel], t[sel] - start, 30.0))
        groups.add(frozenset({src, a, b}))
    store.flush()
    store.close()
    return groups


def child(work: str, max_entries: int) -> None:
    from soundscope import identify

    identify.DUP_MAX_ENTRIES = max_entries
    store = Store(work)
    t0 = time.perf_counter()
    groups = identify.duplicates(store)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "groups": [sorted(m["id"] for m in g["items"]) for g in groups],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--planted", type=int, default=5)
    ap.add_argument("--max-entries", type=int, default=2_000_000)
    ap.add_argument("--bench", default=str(Path.home() / ".cache" / "soundscope" / "identify-bench"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.max_entries)
        return 0
    lib = Path(args.bench) / "library"
    if (lib / "fingerprints" / "manifest.json").exists():
        store = Store(lib)
        pool = np.concatenate([np.asarray(p.hashes) for p in store.fingerprints().parts])
        pool = pool[pool != np.uint32(0xFFFFFFFF)]
        store.close()
    else:
        pool = np.arange(1 << 20, dtype=np.uint32)
    rng = np.random.default_rng(0)
    print("| tracks | hashes | wall | per track | peak RSS | groups right |\n|---|---|---|---|---|---|")
    for n in args.items:
        work = Path(tempfile.mkdtemp(prefix="dups-"))
        try:
            want = build(work / "lib", n, args.planted, pool, rng)
            out = subprocess.run([sys.executable, __file__, "--child", str(work / "lib"), "--max-entries",
                                  str(args.max_entries)], capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            got = {frozenset(g) for g in r["groups"]}
            total = n + 2 * args.planted
            print(
                f"| {total} | {int(total * RATE * TRACK_S):,} | {r['wall_s']:.1f} s | "
                f"{1000 * r['wall_s'] / total:.1f} ms | {r['rss_mb']:.0f} MB | {got == want} |",
                flush=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
