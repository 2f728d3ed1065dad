#!/usr/bin/env python
"""HTTP API latency: text search under concurrent clients on loopback. Prints one JSON report.

    python scripts/bench_server.py [DATA_DIR] [--requests 1000] [--concurrency 20] [--unique 200]

Without DATA_DIR the bundled demo corpus is indexed into a temporary data directory first. The server
runs in its own process (``python -m soundscope.server``) on 127.0.0.1 at a free port; the clients
are asyncio tasks sharing one httpx connection pool. Two bounded phases, each stopping by itself:

* ``repeated``: ``--requests`` searches cycling through a fixed list of popular queries (query
  embeddings are cached by the encoder, so this measures ranking + HTTP);
* ``unique``: ``--unique`` searches that are all different (every one is embedded afresh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src" / "soundscope" / "data" / "demo"
POPULAR = [
    "dog barking",
    "rain",
    "piano music",
    "狗叫",
    "someone speaking",
    "下雨的声音",
    "helicopter",
    "sea waves",
    "a baby crying",
    "fast drums",
    "slow waltz",
    "鸟叫",
    "clock ticking",
    "fire crackling",
    "chainsaw",
    "hello world",
    "trumpet solo",
    "whale song",
    "rooster crowing",
    "音乐",
]
ADJECTIVES = ["quiet", "loud", "distant", "close", "soft", "slow", "fast", "gentle", "heavy", "short"]
NOUNS = [
    "rain",
    "dog",
    "piano",
    "engine",
    "bird",
    "wind",
    "crowd",
    "bell",
    "water",
    "guitar",
    "train",
    "door",
    "footsteps",
    "thunder",
    "violin",
    "laughter",
    "typing",
    "siren",
    "cat",
    "applause",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def _index_demo(data_dir: Path) -> None:
    code = "import sys; from soundscope.api import Library; Library(sys.argv[1]).index([sys.argv[2]], jobs=2)"
    subprocess.run([sys.executable, "-c", code, str(data_dir), str(DEMO)], check=True, env=_env())


async def _phase(base: str, queries: list[str], concurrency: int) -> dict[str, float]:
    """Send every query once with ``concurrency`` clients; latency percentiles in ms."""
    todo: asyncio.Queue[str] = asyncio.Queue()
    for q in queries:
        todo.put_nowait(q)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    q = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                resp = await client.get("/api/search", params={"q": q, "limit": 20})
                latencies.append((time.perf_counter() - t0) * 1000)
                if resp.status_code != 200 or not resp.json().get("results"):
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1)

    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(latencies[-1], 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "throughput_rps": round(len(latencies) / wall, 1),
        "wall_s": round(wall, 2),
    }


async def _run(base: str, args: argparse.Namespace) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        for q in POPULAR:  # warm: models loaded, popular query embeddings cached
            (await client.get("/api/search", params={"q": q, "limit": 20})).raise_for_status()
        stats = (await client.get("/api/stats")).json()
    repeated = [POPULAR[i % len(POPULAR)] for i in range(args.requests)]
    unique = [f"{a} {n}" for n in NOUNS for a in ADJECTIVES][: args.unique]
    return {
        "concurrency": args.concurrency,
        "items": stats["items"],
        "cpus": os.cpu_count(),
        "repeated": await _phase(base, repeated, args.concurrency),
        "unique": await _phase(base, unique, args.concurrency),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="?", help="an indexed data directory (default: index the demo corpus)")
    p.add_argument("--requests", type=int, default=1000, help="searches in the repeated-queries phase")
    p.add_argument("--unique", type=int, default=200, help="searches in the unique-queries phase (at most 200)")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--out", help="also write the JSON report here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soundscope-bench-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        if not args.data_dir:
            print(f"indexing the demo corpus into {data_dir}", file=sys.stderr)
            _index_demo(data_dir)
        port = _free_port()
        cmd = [sys.executable, "-m", "soundscope.server", "--data-dir", str(data_dir), "--port", str(port)]
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
                try:
                    if httpx.get(base + "/api/config", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start within 120 s")
                time.sleep(0.2)
            report = asyncio.run(_run(base, args))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = json.dumps(report, ensure_ascii=False, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
