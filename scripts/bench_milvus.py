#!/usr/bin/env python
"""Benchmark the Milvus backend: insert rate, search latency and recall@10 against exact search.

    python scripts/bench_milvus.py --n 100000 --dim 1024 --index FLAT,IVF_FLAT --nprobe 8

Without ``--uri`` it runs the Milvus 2.3.5 standalone server of the ``milvus`` wheel on loopback in a
temp dir (pip install -e '.[milvus]'), and stops it at the end. The vectors are inserted once through
``MilvusIndex.add`` (upserts, as an index run does), flushed, then each index type is built in turn
(``MilvusIndex(..., index=T)`` rebuilds it) and measured with single-query searches (nq = 1, as the
search path issues them). Data: non-negative clustered L2-normalised rows like YAMNet embeddings
(``--data clustered``) or isotropic Gaussian ones (``--data random``, the hardest case for IVF).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from soundscope.store.milvus import LocalMilvus, MilvusIndex


def make_data(n: int, dim: int, kind: str, seed: int) -> np.ndarray:
    """L2-normalised rows: "clustered" (Gaussian clusters around 1,000 centres; within a cluster the cosine
    is about 0.5) or "random" (isotropic)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((1000, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 10_000):
        m = min(10_000, n - lo)
        x = rng.standard_normal((m, dim)).astype(np.float32)
        if kind == "clustered":
            x += centres[rng.integers(0, len(centres), m)]
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def catalog_vectors(path: str, space: str, n: int) -> np.ndarray:
    """Up to ``n`` real embeddings of ``space`` from a soundscope catalog (opened read-only)."""
    import sqlite3

    from soundscope.store.blobs import decode_rows
    from soundscope.store.catalog import SEGMENT_DATA

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = con.execute(  # a short file's segment vector is its item's row (schema 5)
        f"SELECT embedding FROM ({SEGMENT_DATA}) WHERE embedding IS NOT NULL LIMIT :n", {"space": space, "n": n}
    ).fetchall()
    codec = con.execute("SELECT value FROM meta WHERE key = 'blob_codec'").fetchone()  # none before schema 6
    con.close()
    x = decode_rows([b for (b,) in rows], codec[0] if codec else "f16")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


BUILD_KEYS = {"nlist", "M", "efConstruction", "nbits", "m"}


def parse_specs(text: str) -> list[tuple[str, dict, dict]]:
    """ "FLAT,IVF_FLAT:nlist=1024:nprobe=8,HNSW:ef=64" -> [(type, build params, search params)]."""
    out = []
    for spec in filter(None, (s.strip() for s in text.split(","))):
        kind, *opts = spec.split(":")
        build, search = {}, {}
        for opt in opts:
            key, value = opt.split("=")
            (build if key in BUILD_KEYS else search)[key] = int(value)
        out.append((kind.upper(), build, search))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument(
        "--index",
        default="FLAT,IVF_FLAT:nlist=1024:nprobe=8",
        help="comma-separated TYPE[:key=value...]: FLAT, IVF_FLAT/IVF_SQ8 (nlist, nprobe), HNSW (M, efConstruction, ef)"
        " e.g. HNSW:M=16:ef=64",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--data", choices=["clustered", "random"], default="clustered")
    ap.add_argument("--catalog", help="take real vectors of --space from this catalog.sqlite instead")
    ap.add_argument("--space", default="yamnet")
    ap.add_argument("--chunk", type=int, default=10_000, help="rows per add() call")
    ap.add_argument("--uri", help="an existing Milvus (http://host:19530); default: start the wheel's server")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    if args.catalog:
        real = catalog_vectors(args.catalog, args.space, args.n + args.queries)
        rng = np.random.default_rng(args.seed)
        real = real[rng.permutation(len(real))]
        data, queries = real[args.queries :], real[: args.queries]  # queries held out
        args.n, args.dim, args.data = len(data), data.shape[1], f"{args.space} from {args.catalog}"
    else:
        data = make_data(args.n, args.dim, args.data, args.seed)
        queries = make_data(args.queries, args.dim, args.data, args.seed + 1)
    keys = np.arange(args.n, dtype=np.int64)
    sims = queries @ data.T
    exact = np.argsort(-sims, axis=1)[:, : args.k]
    kth = np.take_along_axis(sims, exact[:, -1:], axis=1)[:, 0]  # the k-th best similarity per query
    del sims
    print(
        f"data: {args.n} x {args.dim} {args.data}, {args.queries} queries, exact top-{args.k} "
        f"in {time.perf_counter() - t:.1f} s",
        flush=True,
    )

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="bench_milvus_")
    try:
        if args.uri:
            uri = args.uri
        else:
            t = time.perf_counter()
            server = LocalMilvus(Path(tmp.name) / "milvus").start()
            uri = server.uri
            print(f"server: Milvus 2.3.5 standalone at {uri}, started in {time.perf_counter() - t:.1f} s", flush=True)
        name = f"bench_{args.n}_{args.dim}"
        idx = MilvusIndex(uri, name, args.dim, index="FLAT", timeout=120)
        if len(idx):
            idx.clear()
        t = time.perf_counter()
        for lo in range(0, args.n, args.chunk):
            idx.add(keys[lo : lo + args.chunk], data[lo : lo + args.chunk], item_ids=keys[lo : lo + args.chunk] // 100)
        ins = time.perf_counter() - t
        t = time.perf_counter()
        idx.save(1)
        flush = time.perf_counter() - t
        print(f"insert: {args.n / ins:,.0f} vectors/s ({ins:.1f} s); flush {flush:.1f} s; count {len(idx)}", flush=True)
        idx.close()

        recall = f"recall@{args.k}"
        print(f"{'index':<10} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {recall:>10} {'w/ ties':>8}  params")
        for kind, build, search in parse_specs(args.index):
            t = time.perf_counter()
            idx = MilvusIndex(uri, name, args.dim, timeout=120)
            idx.rebuild_index(kind, build, search)
            done = idx.wait_indexed(timeout=1800)
            built = time.perf_counter() - t
            for q in queries[:10]:  # warm up
                idx.search(q, args.k)
            lat, hits, close = [], 0, 0
            for qi, q in enumerate(queries):
                t = time.perf_counter()
                got, _ = idx.search(q, args.k)
                lat.append(time.perf_counter() - t)
                hits += len(set(got.tolist()) & set(exact[qi].tolist()))
                close += int((data[got] @ q >= kth[qi] - 1e-5).sum())  # as close as the exact k-th: ties count
            lat_ms = np.array(lat) * 1000
            note = "" if done else " (index not finished)"
            total = args.k * len(queries)
            print(
                f"{kind:<10} {built:>8.1f} {np.percentile(lat_ms, 50):>8.1f} {np.percentile(lat_ms, 99):>8.1f} "
                f"{hits / total:>10.3f} {close / total:>8.3f}  {build | search}{note}",
                flush=True,
            )
            idx.close()
        if not args.uri:
            MilvusIndex(uri, name, args.dim).drop()
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
