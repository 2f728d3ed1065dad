"""Evaluation: retrieval quality on real labelled audio (ESC-10), through the same code paths users hit.

* text -> audio: the ten class queries run through :meth:`Library.search`; per-query average
  precision over all 400 clips (mAP), and zero-shot classification accuracy (each clip gets
  the class whose query gives it the highest label-matching score).
* query by example: each clip queries :meth:`Searcher.similar`, with clips cut from the same
  source recording left out of its candidates (they are near-duplicates); precision@10.
* baseline: the same query-by-example protocol on the mean of 13 MFCCs with cosine.

Clips are indexed under neutral link names (``clip_0001.ogg``), so file names and folders
carry no label into the keyword ranker.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ESC10_QUERIES_EN = {
    "dog": "dog barking",
    "rooster": "rooster crowing",
    "rain": "rain",
    "sea_waves": "sea waves",
    "crackling_fire": "crackling fire",
    "crying_baby": "crying baby",
    "sneezing": "sneezing",
    "clock_tick": "clock ticking",
    "helicopter": "helicopter",
    "chainsaw": "chainsaw",
}

TARGETS = {"zero_shot_top1": 0.85, "map": 0.80, "qbe_p_at_10": 0.80}


@dataclass
class Clip:
    path: str  # the neutral link that was indexed
    source: str  # original file
    category: str
    fold: int
    recording: str


def default_esc10() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for cand in (base / "../shared/data/esc10", base / "shared/data/esc10"):
            if (cand / "labels.csv").exists():
                return cand.resolve()
    return None


def link_clips(esc10: Path, work: Path, *, max_per_class: int | None = None) -> list[Clip]:
    """Symlink every clip to ``work/clips/clip_NNNN.<ext>`` (stable names) and return the labels."""
    clips_dir = work / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    out: list[Clip] = []
    per_class: dict[str, int] = {}
    with open(esc10 / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    for n, row in enumerate(rows):
        cat = row["category"]
        if max_per_class is not None and per_class.get(cat, 0) >= max_per_class:
            continue
        per_class[cat] = per_class.get(cat, 0) + 1
        src = (esc10 / row["path"]).resolve()
        link = clips_dir / f"clip_{n:04d}{src.suffix}"
        if not link.is_symlink() or os.readlink(link) != str(src):
            link.unlink(missing_ok=True)
            link.symlink_to(src)
        out.append(Clip(str(link), str(src), cat, int(row["fold"]), row["source_recording"]))
    return out


def average_precision(ranked_relevance: list[bool], n_relevant: int) -> float:
    """AP of one ranking: mean of precision at each relevant position (relevant items not returned count 0)."""
    hits, total = 0, 0.0
    for rank, rel in enumerate(ranked_relevance, 1):
        if rel:
            hits += 1
            total += hits / rank
    return total / n_relevant if n_relevant else 0.0


def eval_text(lib, clips: list[Clip], queries: dict[str, str]) -> dict[str, Any]:
    by_path = {c.path: c for c in clips}
    n = len(clips)
    per_query: dict[str, dict[str, float]] = {}
    label_scores = np.zeros((n, len(queries)), np.float32)
    index = {c.path: i for i, c in enumerate(clips)}
    latencies = []
    for qi, (cat, query) in enumerate(queries.items()):
        t = time.perf_counter()
        results = lib.search(query, limit=n)
        latencies.append(time.perf_counter() - t)
        rel = [by_path[r.path].category == cat for r in results if r.path in by_path]
        n_rel = sum(c.category == cat for c in clips)
        per_query[cat] = {
            "query": query,
            "ap": round(average_precision(rel, n_rel), 4),
            "p_at_10": round(sum(rel[:10]) / 10, 4),
            "top1_correct": bool(rel and rel[0]),
        }
        for r in results:
            if r.path in index:
                label_scores[index[r.path], qi] = r.evidence.get("labels", 0.0)
    cats = list(queries)
    predicted = [cats[j] for j in label_scores.argmax(axis=1)]
    accuracy = float(np.mean([p == c.category for p, c in zip(predicted, clips, strict=False)]))
    return {
        "zero_shot_top1": round(accuracy, 4),
        "map": round(float(np.mean([q["ap"] for q in per_query.values()])), 4),
        "p_at_10": round(float(np.mean([q["p_at_10"] for q in per_query.values()])), 4),
        "per_query": per_query,
        "latency_ms_p50": round(float(np.median(latencies)) * 1000, 2),
    }


def eval_qbe(lib, clips: list[Clip]) -> dict[str, Any]:
    from . import analyze

    cat = lib.store.catalog
    ids = {c.path: cat.item_by_path(c.path).id for c in clips}
    by_id = {ids[c.path]: c for c in clips}
    same_source: dict[str, set[int]] = {}
    for c in clips:
        same_source.setdefault(c.recording, set()).add(ids[c.path])
    primary = lib.analyzers[0]
    precisions = []
    for c in clips:
        query = analyze.analyze_file(c.path, [primary])
        hits = lib.searcher.similar(primary, query, limit=10, exclude_ids=same_source[c.recording])
        precisions.append(sum(by_id[h.item_id].category == c.category for h in hits) / 10)
    return {"qbe_p_at_10": round(float(np.mean(precisions)), 4)}


def eval_mfcc_baseline(lib, clips: list[Clip]) -> dict[str, Any]:
    """Seed baseline: mean of 13 MFCCs, cosine similarity, same leave-source-out protocol."""
    cat = lib.store.catalog
    rows = [cat.item_by_path(c.path) for c in clips]
    x = np.array([r.features["mfcc_mean"] for r in rows], np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    sims = x @ x.T
    recs = np.array([c.recording for c in clips])
    labels = np.array([c.category for c in clips])
    precisions = []
    for i in range(len(clips)):
        s = sims[i].copy()
        s[recs == recs[i]] = -np.inf
        top = np.argsort(-s)[:10]
        precisions.append(float(np.mean(labels[top] == labels[i])))
    return {"qbe_p_at_10": round(float(np.mean(precisions)), 4)}


def run(esc10: Path, work: Path, *, max_per_class: int | None = None, progress=None) -> dict[str, Any]:
    from .api import Library

    clips = link_clips(esc10, work, max_per_class=max_per_class)
    with Library(work / "index") as lib:
        t = time.perf_counter()
        report = lib.index([str(work / "clips")], progress=progress)
        index_s = time.perf_counter() - t
        if report.failed:
            raise RuntimeError(f"{report.failed} ESC-10 clips failed to index: {report.failures[:3]}")
        text = eval_text(lib, clips, ESC10_QUERIES_EN)
        qbe = eval_qbe(lib, clips)
        base = eval_mfcc_baseline(lib, clips)
        models = {k: v["model_id"] for k, v in lib.store.catalog.models().items()}
    result = {
        "dataset": {
            "name": "ESC-10",
            "path": str(esc10),
            "clips": len(clips),
            "classes": len({c.category for c in clips}),
        },
        "models": models,
        "text_to_audio": text,
        "query_by_example": qbe,
        "baseline_mfcc13_cosine": base,
        "targets": TARGETS,
        "index": {"indexed": report.indexed, "unchanged": report.unchanged, "seconds": round(index_s, 2)},
    }
    result["meets_targets"] = bool(
        text["zero_shot_top1"] >= TARGETS["zero_shot_top1"]
        and text["map"] >= TARGETS["map"]
        and qbe["qbe_p_at_10"] >= TARGETS["qbe_p_at_10"]
    )
    return result


def format_table(r: dict[str, Any]) -> str:
    t, q, b = r["text_to_audio"], r["query_by_example"], r["baseline_mfcc13_cosine"]
    lines = [
        f"ESC-10 ({r['dataset']['clips']} clips, {r['dataset']['classes']} classes)",
        f"{'metric':34s}{'soundscope':>12s}{'MFCC baseline':>15s}{'target':>9s}",
        f"{'text->audio zero-shot top-1 acc':34s}{t['zero_shot_top1']:12.3f}{'-':>15s}{TARGETS['zero_shot_top1']:9.2f}",
        f"{'text->audio mAP (10 queries)':34s}{t['map']:12.3f}{'0.100 (chance)':>15s}{TARGETS['map']:9.2f}",
        f"{'text->audio P@10':34s}{t['p_at_10']:12.3f}{'-':>15s}{'':>9s}",
        f"{'query-by-example P@10 (LOSO)':34s}{q['qbe_p_at_10']:12.3f}{b['qbe_p_at_10']:15.3f}"
        f"{TARGETS['qbe_p_at_10']:9.2f}",
        "",
        "per query: " + ", ".join(f"{k} AP {v['ap']:.2f}" for k, v in t["per_query"].items()),
        f"meets targets: {'yes' if r['meets_targets'] else 'NO'}",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .cli import ProgressLine

    esc10 = Path(args.esc10) if args.esc10 else default_esc10()
    if esc10 is None or not (esc10 / "labels.csv").exists():
        raise FileNotFoundError("ESC-10 not found: pass --esc10 DIR (a folder with labels.csv and audio/)")
    base = Path(args.data_dir) if args.data_dir else Path.home() / ".cache" / "soundscope"
    work = base / "eval-esc10"
    result = run(esc10, work, max_per_class=args.max_per_class, progress=ProgressLine())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else format_table(result))
    return 0
