"""``soundscope eval --section identify``: excerpt identification on the benchmark that
``scripts/build_identify_bench.py`` builds (real game and librosa music; seeded 2/5/10 s excerpts
under the issue's nine conditions: clean, MP3 64k, white and pink noise at 0 dB SNR, speed +/-3 %, the
telephone band, pitch +3 % with the tempo kept, and a speaker in a reverberant room; negatives from
music not in the reference).

The reference library is built from scratch under ``<bench>/library`` through the same code path as
ingest's fingerprint stage (streamed decode at 16 kHz -> :class:`fingerprint.FingerprintAccumulator` ->
the store's fingerprint index), with a minimal catalog row per track (no models run: this measures
fingerprinting alone). Every query goes through :func:`identify.identify_array` (what the CLI,
API and server use).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import decode, identify
from . import fingerprint as fp
from .store import Store


def bench_dir(arg: str | None) -> Path:
    path = Path(arg) if arg else Path.home() / ".cache" / "soundscope" / "identify-bench"
    if not (path / "queries.csv").exists():
        raise FileNotFoundError(f"no identify benchmark at {path}: run scripts/build_identify_bench.py --out {path}")
    return path


def build_library(bench: Path, refs: list[str]) -> tuple[Store, dict[str, float]]:
    """A fresh library under ``bench/library`` holding the fingerprints of ``refs``; timings."""
    lib_dir = bench / "library"
    shutil.rmtree(lib_dir, ignore_errors=True)
    store = Store(lib_dir)
    decode_s = fp_s = audio_s = 0.0
    for k, path in enumerate(refs):
        acc = fp.FingerprintAccumulator()
        t0 = time.perf_counter()
        blocks = decode.stream(path, sample_rate=fp.SAMPLE_RATE, block_s=30.0)
        while True:
            t1 = time.perf_counter()
            block = next(blocks, None)
            t2 = time.perf_counter()
            decode_s += t2 - t1
            if block is None:
                break
            acc.push(block)
            fp_s += time.perf_counter() - t2
        t3 = time.perf_counter()
        print_ = acc.result()
        fp_s += time.perf_counter() - t3
        audio_s += print_.duration_s
        item = {"path": path, "root": str(Path(path).parent), "size": os.path.getsize(path), "mtime": 0.0,
                "content_hash": f"bench-{k}", "duration_s": print_.duration_s, "sample_rate": fp.SAMPLE_RATE,
                "channels": 1, "codec": "", "tags": {}, "features": {}, "kind": "music", "description": "",
                "indexed_at": time.time()}  # fmt: skip
        item_id, _ = store.catalog.put_item(item, [], [])
        store.fingerprints().add(item_id, print_)
        del t0
    store.flush()
    return store, {"audio_s": audio_s, "decode_s": decode_s, "fingerprint_s": fp_s}


def run(bench: Path) -> dict[str, Any]:
    with open(bench / "references.csv") as f:
        refs = list(dict.fromkeys(os.path.realpath(r["path"]) for r in csv.DictReader(f)))  # links: once
    with open(bench / "queries.csv") as f:
        queries = list(csv.DictReader(f))
    store, t = build_library(bench, refs)
    stats = store.fingerprints().stats()
    rows: list[dict[str, Any]] = []
    lat = []
    for q in queries:
        y = identify.load_query(bench / "queries" / q["file"])
        t0 = time.perf_counter()
        hits = identify.identify_array(store, y, limit=1, min_confidence=0.0)
        lat.append(time.perf_counter() - t0)
        top = hits[0] if hits else None
        q["reference"] = os.path.realpath(q["reference"]) if q["reference"] else ""
        rows.append({**q, "path": top.path if top else "", "offset": top.offset_s if top else -1.0,
                     "confidence": top.confidence if top else 0.0})  # fmt: skip
    out = summarise(rows, identify.MATCH_CONFIDENCE)
    hours = t["audio_s"] / 3600
    out.update(
        references=len(refs),
        reference_hours=round(hours, 2),
        queries=len(rows),
        fingerprint_x_realtime=round(t["audio_s"] / max(t["fingerprint_s"], 1e-9), 1),
        decode_plus_fingerprint_x_realtime=round(t["audio_s"] / max(t["fingerprint_s"] + t["decode_s"], 1e-9), 1),
        index_mb_per_hour=round(stats["fingerprint_bytes"] / 1e6 / max(hours, 1e-9), 3),
        hashes_per_second=round(stats["fingerprint_hashes"] / max(t["audio_s"], 1e-9), 1),
        query_ms_p50=round(1000 * float(np.median(lat)), 1),
        query_ms_p95=round(1000 * float(np.percentile(lat, 95)), 1),
        sweep={f"{c:.2f}": summarise(rows, c, brief=True) for c in (0.3, 0.5, 0.7, 0.9, 0.97)},
    )
    store.close()
    return out


def summarise(rows: list[dict[str, Any]], threshold: float, *, brief: bool = False) -> dict[str, Any]:
    """Top-1 and offset accuracy (%, offset within 0.5 s) per (length, condition); false-positive rate."""
    cells: dict[str, dict[str, float]] = {}
    pos = [r for r in rows if r["negative"] == "0"]
    for r in pos:
        key = f"{r['length_s']}s {r['condition']}"
        c = cells.setdefault(key, {"n": 0, "top1": 0, "offset": 0})
        c["n"] += 1
        if r["confidence"] >= threshold and r["path"] == r["reference"]:
            c["top1"] += 1
            c["offset"] += abs(r["offset"] - float(r["offset_s"])) <= 0.5
    neg = [r for r in rows if r["negative"] == "1"]
    fps = sum(1 for r in neg if r["confidence"] >= threshold)
    table = {k: {"n": v["n"], "top1": round(100 * v["top1"] / v["n"], 1),
                 "offset": round(100 * v["offset"] / v["n"], 1)} for k, v in sorted(cells.items())}  # fmt: skip
    wrong = sum(1 for r in pos if r["confidence"] >= threshold and r["path"] != r["reference"])
    out: dict[str, Any] = {
        "threshold": threshold,
        "false_positive_rate": round(100 * fps / max(len(neg), 1), 2),
        "negatives": len(neg),
        "wrong_recording_on_positives": wrong,
        "top1_all": round(100 * sum(v["top1"] for v in cells.values()) / max(len(pos), 1), 1),
    }
    if not brief:
        out["cells"] = table
    return out


def format_table(r: dict[str, Any]) -> str:
    conds = sorted({k.split(" ", 1)[1] for k in r["cells"]}, key=_cond_order)
    lengths = sorted({int(k.split("s ")[0]) for k in r["cells"]})
    lines = [f"identify: {r['references']} references ({r['reference_hours']} h), {r['queries']} queries, "
             f"{r['negatives']} negatives; top-1 % / offset-within-0.5 s %  (confidence >= {r['threshold']})",
             "| length | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]  # fmt: skip
    for n in lengths:
        cells = [r["cells"].get(f"{n}s {c}") for c in conds]
        text = [f"{c['top1']:.1f} / {c['offset']:.1f}" if c else "-" for c in cells]
        lines.append(f"| {n} s | " + " | ".join(text) + " |")
    lines += [
        f"false positives on negatives: {r['false_positive_rate']}%  (wrong recording on positives: "
        f"{r['wrong_recording_on_positives']})",
        f"fingerprint stage {r['fingerprint_x_realtime']}x real time ({r['decode_plus_fingerprint_x_realtime']}x with "
        f"decoding); index {r['index_mb_per_hour']} MB per audio hour ({r['hashes_per_second']} hashes/s); "
        f"query p50 {r['query_ms_p50']} ms, p95 {r['query_ms_p95']} ms",
        "threshold sweep (confidence: top-1 all % / FP %): "
        + ", ".join(f"{k}: {v['top1_all']} / {v['false_positive_rate']}" for k, v in r["sweep"].items()),
    ]
    return "\n".join(lines)


def _cond_order(c: str) -> int:
    order = ["clean", "mp3_64k", "white_0db", "pink_0db", "speed_+3", "speed_-3", "telephone", "pitch_+3", "speaker"]
    return order.index(c) if c in order else len(order)
