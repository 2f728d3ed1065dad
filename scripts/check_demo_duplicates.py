#!/usr/bin/env python3
"""Duplicates check on the demo corpus (issue 13): the demo plus copies made from it (MP3 and Opus
re-encodes, a 30 s excerpt, a 4 %-faster edit with sox's ``speed``, i.e. pitch and tempo), indexed
into a fresh library; every copy must group with its original and no other group may appear.

    python scripts/check_demo_duplicates.py [--work DIR] [--full-models]

Without ``--full-models`` only YAMNet runs at ingest (fingerprints do not depend on the models; this
keeps the check to a minute). Exit status 0 when the grouping is exactly right.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "src" / "soundscope" / "data" / "demo"
COPIES = {  # demo file -> copies (name, ffmpeg/sox recipe)
    "music/Kevin_MacLeod_-_Vibe_Ace.ogg": [("vibe_ace_64k.mp3", "mp3"), ("vibe_ace_excerpt30.wav", "excerpt")],
    "music/442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime.ogg": [("pistachio.opus", "opus")],
    "music/Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg": [
        ("brahms_faster.wav", "speed")],
    "nature/glacier-bay-humpback.ogg": [("humpback.mp3", "mp3")],
}


def make(src: Path, dst: Path, recipe: str) -> None:
    ff = ["ffmpeg", "-v", "error", "-y", "-i", str(src)]
    cmd = {
        "mp3": [*ff, "-c:a", "libmp3lame", "-b:a", "64k", str(dst)],
        "opus": [*ff, "-c:a", "libopus", "-b:a", "48k", str(dst)],
        "excerpt": [*ff, "-ss", "20", "-t", "30", str(dst)],
        "speed": ["sox", str(src), str(dst), "speed", "1.04"],
    }[recipe]
    subprocess.run(cmd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--full-models", action="store_true")
    args = ap.parse_args()
    from soundscope.api import Library

    work = Path(args.work or tempfile.mkdtemp(prefix="soundscope-dups-"))
    copies = work / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    expected: dict[str, set[str]] = {}
    for rel, outs in COPIES.items():
        src = DEMO / rel
        for name, recipe in outs:
            make(src, copies / name, recipe)
        expected[str(src)] = {str(src), *(str(copies / n) for n, _ in outs)}
    if args.full_models:
        lib = Library(work / "lib")
    else:
        from soundscope.analyzers import yamnet

        lib = Library(work / "lib", analyzers=[yamnet.load()], music_analyzers=[], asr_model="none")
    report = lib.index([DEMO, copies], jobs=1)
    groups = lib.duplicates()
    got = [{m["path"] for m in g["items"]} for g in groups]
    want = list(expected.values())
    ok = sorted(map(sorted, got)) == sorted(map(sorted, want))
    print(json.dumps({"indexed": report.indexed, "failed": report.failed, "groups": groups}, indent=1))
    missing = [sorted(w) for w in want if w not in got]
    false = [sorted(g) for g in got if g not in want]
    print(f"{len(groups)} groups; expected {len(want)}; all grouped and no false groups: {ok}")
    if missing or false:
        print(f"missing: {missing}\nfalse or partial: {false}")
    lib.close()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
