"""A second evaluation set, not ESC-10: categorised game and desktop sound effects from Debian packages.

The class of each file comes from its path inside its package (``data/eval/sfx.json`` lists, per class,
the path patterns and the English and Chinese class queries, written before the first run). Files are
indexed under neutral link names (``sfx_0001.wav``), so names carry no label into the keyword ranker.

* class queries: mAP, P@10 and zero-shot top-1 (each file gets the class whose query gives it the
  highest label score), in English and Chinese;
* category queries ("animal sounds", "vehicles", ...): AP and P@10 against the union of their classes;
* query by example: each file's precision at min(10, other members of its class).

The audio is fetched with ``apt-get download`` (a package registry, reachable offline here) and
unpacked with ``dpkg-deb``; it stays out of the repository.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import Clip, average_precision, eval_text

SPEC_FILE = Path(__file__).parent / "data" / "eval" / "sfx.json"
AUDIO_EXT = (".wav", ".ogg", ".oga", ".flac", ".mp3")


def spec() -> dict[str, Any]:
    return json.loads(SPEC_FILE.read_text(encoding="utf-8"))


def default_dir() -> Path:
    """Where the set is built: ``$SOUNDSCOPE_EVAL_DIR/sfx`` or ``~/.cache/soundscope/evalsets/sfx``."""
    base = os.environ.get("SOUNDSCOPE_EVAL_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "soundscope" / "evalsets") / "sfx"


def _unpack(packages: list[str], dest: Path) -> Path:
    debs, tree = dest / "debs", dest / "tree"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True, capture_output=True)
    for deb in sorted(d for p in packages for d in debs.glob(f"{p}_*.deb")):
        out = tree / deb.name.split("_", 1)[0]
        if not out.exists():
            tmp = out.with_name(out.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(out)
    return tree


def build(dest: Path | None = None) -> Path:
    """Fetch, unpack and link the set under ``dest``; writes ``labels.csv`` (path, category, source).
    Idempotent. Returns ``dest``."""
    dest = Path(dest or default_dir())
    s = spec()
    tree = _unpack(s["packages"], dest)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.suffix.lower() in AUDIO_EXT)
    clips = dest / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    clips.mkdir(parents=True)
    rows, taken = [], set()
    for cat, c in s["classes"].items():
        for pattern in c["files"]:
            for rel in files:
                if rel not in taken and fnmatch.fnmatchcase(rel, pattern):
                    taken.add(rel)
                    link = clips / f"sfx_{len(rows) + 1:04d}{Path(rel).suffix.lower()}"
                    link.symlink_to(tree / rel)
                    rows.append({"path": str(link), "category": cat, "source": rel})
    with open(dest / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["path", "category", "source"])
        w.writeheader()
        w.writerows(rows)
    return dest


def load_clips(dest: Path) -> list[Clip]:
    with open(dest / "labels.csv", encoding="utf-8") as f:
        return [Clip(r["path"], r["source"], r["category"], 0, r["source"]) for r in csv.DictReader(f)]


def eval_categories(lib, clips: list[Clip], categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """AP and P@10 of each category query (English and Chinese) against the union of its classes."""
    by_path = {c.path: c for c in clips}
    out: dict[str, Any] = {}
    for query, cat in categories.items():
        wanted = set(cat["classes"])
        n_rel = sum(c.category in wanted for c in clips)
        for lang, text in (("en", query), ("zh", cat["zh"])):
            results = lib.search(text, limit=len(clips))
            rel = [by_path[r.path].category in wanted for r in results if r.path in by_path]
            out.setdefault(query, {})[lang] = {
                "query": text,
                "ap": round(average_precision(rel, n_rel), 4),
                "p_at_10": round(sum(rel[:10]) / min(10, n_rel), 4),
            }
    return out


def eval_qbe_small(lib, clips: list[Clip]) -> dict[str, Any]:
    """Query by example by item id: precision at min(10, other members of the class), per class."""
    cat = lib.store.catalog
    ids = {c.path: cat.item_by_path(c.path).id for c in clips}
    by_id = {ids[c.path]: c for c in clips}
    size = {k: sum(c.category == k for c in clips) for k in {c.category for c in clips}}
    per_class: dict[str, list[float]] = {}
    for c in clips:
        k = min(10, size[c.category] - 1)
        if k <= 0:
            continue
        hits = lib.similar(ids[c.path], limit=k)
        p = sum(by_id[h.item_id].category == c.category for h in hits if h.item_id in by_id) / k
        per_class.setdefault(c.category, []).append(p)
    return {
        "qbe_precision": round(float(np.mean([p for ps in per_class.values() for p in ps])), 4),
        "per_class": {k: round(float(np.mean(v)), 4) for k, v in sorted(per_class.items())},
    }


def run(dest: Path, work: Path, *, progress=None) -> dict[str, Any]:
    from .api import Library

    if not (dest / "labels.csv").exists():
        build(dest)
    s = spec()
    clips = load_clips(dest)
    with Library(work / "index") as lib:
        t = time.perf_counter()
        report = lib.index([str(dest / "clips")], progress=progress)
        index_s = time.perf_counter() - t
        en = eval_text(lib, clips, {k: v["en"] for k, v in s["classes"].items()})
        zh = eval_text(lib, clips, {k: v["zh"] for k, v in s["classes"].items()})
        categories = eval_categories(lib, clips, s["categories"])
        qbe = eval_qbe_small(lib, clips)
    return {
        "dataset": {"name": "sfx (Debian game and desktop sounds)", "clips": len(clips), "classes": len(s["classes"])},
        "text_to_audio": en,
        "text_to_audio_zh": zh,
        "categories": categories,
        "query_by_example": qbe,
        "index": {"indexed": report.indexed, "failed": report.failed, "seconds": round(index_s, 2)},
    }


def format_table(r: dict[str, Any]) -> str:
    en, zh, cats, q = r["text_to_audio"], r["text_to_audio_zh"], r["categories"], r["query_by_example"]
    lines = [
        f"sfx ({r['dataset']['clips']} files, {r['dataset']['classes']} classes; Debian game and desktop sounds)",
        f"{'':28s}{'EN':>8s}{'ZH':>8s}",
        f"{'zero-shot top-1':28s}{en['zero_shot_top1']:8.3f}{zh['zero_shot_top1']:8.3f}",
        f"{'class query mAP':28s}{en['map']:8.3f}{zh['map']:8.3f}",
        f"{'class query P@10':28s}{en['p_at_10']:8.3f}{zh['p_at_10']:8.3f}",
        f"{'category query mAP':28s}{np.mean([c['en']['ap'] for c in cats.values()]):8.3f}"
        f"{np.mean([c['zh']['ap'] for c in cats.values()]):8.3f}",
        f"{'query by example P@min(10,n)':28s}{q['qbe_precision']:8.3f}",
        "",
        f"{'class':16s}{'query':28s}{'AP en':>7s}{'AP zh':>7s}{'QbE':>7s}",
    ]
    for k, v in en["per_query"].items():
        qbe = q["per_class"].get(k)
        lines.append(
            f"{k:16s}{v['query'][:27]:28s}{v['ap']:7.2f}{zh['per_query'][k]['ap']:7.2f}"
            + (f"{qbe:7.2f}" if qbe is not None else f"{'-':>7s}")
        )
    lines.append("")
    lines.append(f"{'category':32s}{'AP en':>7s}{'P@10':>7s}{'AP zh':>7s}{'P@10':>7s}")
    for k, v in cats.items():
        lines.append(f"{k:32s}{v['en']['ap']:7.2f}{v['en']['p_at_10']:7.2f}{v['zh']['ap']:7.2f}{v['zh']['p_at_10']:7.2f}")
    return "\n".join(lines)
