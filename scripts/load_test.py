#!/usr/bin/env python
"""Load test of ``soundscope serve`` on loopback: many concurrent clients, mixed reads, fixed duration.

    python scripts/load_test.py [DATA_DIR] [--clients 50] [--seconds 60] [--workers 1,2] [--json out.json]

Without DATA_DIR the bundled demo corpus is indexed into a temporary data directory first. For each
``--workers`` value a real server (``python -m soundscope.server --workers N``) runs on a free
loopback port; ``--clients`` asyncio clients (one connection each, in a separate process from the
server) then send, for ``--seconds``, a mix of requests: 60 % text searches (the popular queries of
``scripts/bench_server.py``, so query embeddings are cached, plus a unique query now and then), 25 %
"more like this" by item id, 15 % audio range requests (``Range: bytes=a-b``, 64 KiB at a random
offset, must be 206 with exactly those bytes). Any status other than the expected one, a timeout, an
empty search or a short range is an error. Reported per worker count: requests, errors, p50/p90/p99
latency and throughput, overall and per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_server import ADJECTIVES, NOUNS, POPULAR, _env, _free_port, _index_demo

MIX = (("search", 0.60), ("similar", 0.25), ("audio", 0.15))
SPAN = 64 * 1024


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 1) if values else 0.0


def _summary(lat: list[float], errors: int, wall: float) -> dict[str, float]:
    return {"requests": len(lat), "errors": errors, "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90),
            "p99_ms": _pct(lat, 99), "max_ms": round(max(lat), 1) if lat else 0.0,
            "throughput_rps": round(len(lat) / wall, 1)}  # fmt: skip


async def _load(base: str, clients: int, seconds: float, headers: dict[str, str], seed: int = 0) -> dict:
    rng = random.Random(seed)
    # idle connections expire here before the server (uvicorn: 5 s) closes them: no reuse race
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0, headers=headers) as client:
        ids = []
        for q in POPULAR:  # warm up: models loaded, popular query embeddings cached; ids to ask about
            r = await client.get("/api/search", params={"q": q, "limit": 20})
            r.raise_for_status()
            ids += [res["id"] for res in r.json()["results"]]
        ids = sorted(set(ids))
        sizes = {}
        for i in ids:
            r = await client.head(f"/api/items/{i}/audio")
            if r.status_code == 200:
                sizes[i] = int(r.headers["content-length"])
        playable = [i for i, n in sizes.items() if n > 2 * SPAN]
        unique = [f"{a} {n}" for n in NOUNS for a in ADJECTIVES]
        lat: dict[str, list[float]] = {k: [] for k, _ in MIX}
        errs: dict[str, int] = {k: 0 for k, _ in MIX}
        samples: list[str] = []
        deadline = time.perf_counter() + seconds

        async def one(kind: str) -> None:
            t0 = time.perf_counter()
            ok = False
            try:
                if kind == "search":
                    q = rng.choice(unique) if rng.random() < 0.05 else rng.choice(POPULAR)
                    r = await client.get("/api/search", params={"q": q, "limit": 20})
                    ok = r.status_code == 200 and bool(r.json()["results"])
                elif kind == "similar":
                    r = await client.get(f"/api/similar/{rng.choice(ids)}", params={"limit": 10})
                    ok = r.status_code == 200 and bool(r.json()["results"])
                else:
                    i = rng.choice(playable)
                    a = rng.randrange(0, sizes[i] - SPAN)
                    r = await client.get(f"/api/items/{i}/audio", headers={"Range": f"bytes={a}-{a + SPAN - 1}"})
                    ok = r.status_code == 206 and len(r.content) == SPAN
                if not ok and len(samples) < 5:
                    samples.append(f"{kind}: {r.status_code} {r.text[:200]}")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                if len(samples) < 5:
                    samples.append(f"{kind}: {type(exc).__name__}: {exc}")
            lat[kind].append((time.perf_counter() - t0) * 1000)
            errs[kind] += not ok

        async def user() -> None:
            while time.perf_counter() < deadline:
                await one(rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0])

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        wall = time.perf_counter() - t0
    every = [v for vals in lat.values() for v in vals]
    return {"all": _summary(every, sum(errs.values()), wall),
            **{k: _summary(v, errs[k], wall) for k, v in lat.items()},
            "error_samples": samples, "items_asked": len(ids), "wall_s": round(wall, 1)}  # fmt: skip


def _serve(data_dir: Path, port: int, workers: int, read_token: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "soundscope.server", "--data-dir", str(data_dir), "--port", str(port),
           "--workers", str(workers)] + (["--read-token", read_token] if read_token else [])  # fmt: skip
    log = open(Path(tempfile.gettempdir()) / f"soundscope-load-{port}.log", "w+b")  # noqa: SIM115 (a pipe would fill)
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=log)


def _ready(base: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            server.stderr.seek(0)
            raise RuntimeError(f"the server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not answer in time")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="?", help="an indexed data directory (default: index the demo corpus)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers", default="1,2", help="comma-separated server process counts to compare")
    p.add_argument("--read-token", default=None, help="run the servers with this read token (and send it)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.data_dir:
        data_dir = Path(a.data_dir)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="soundscope-load-")) / "data"
        _index_demo(data_dir)
    headers = {"Authorization": f"Bearer {a.read_token}"} if a.read_token else {}
    report: dict = {"clients": a.clients, "seconds": a.seconds, "cpus": os.cpu_count(), "runs": {}}
    for workers in [int(w) for w in a.workers.split(",")]:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = _serve(data_dir, port, workers, a.read_token)
        try:
            _ready(base, server)
            result = asyncio.run(_load(base, a.clients, a.seconds, headers))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        report["runs"][str(workers)] = result
        r = result["all"]
        print(f"workers {workers}: {r['requests']} requests, {r['errors']} errors, p50 {r['p50_ms']} ms, "
              f"p99 {r['p99_ms']} ms, {r['throughput_rps']} req/s", file=sys.stderr)  # fmt: skip
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    return 0 if all(r["all"]["errors"] == 0 for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
