#!/usr/bin/env python3
"""What fingerprinting adds to ingest (issue 13): the analysis of each demo file (YAMNet, musicnn on
music, descriptors: ingest's own ``analyze_file``) timed with and without the fingerprint stage,
alternating runs so shared-machine noise hits both alike; plus the fingerprint stage alone.

    OMP_NUM_THREADS=1 python scripts/bench_fingerprint_cost.py [--repeats 2] [FOLDER]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


from soundscope import analyze, decode  # noqa: E402
from soundscope import fingerprint as fp  # noqa: E402
from soundscope.api import default_analyzers, default_music_analyzers  # noqa: E402
from soundscope.ingest import walk  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src" / "soundscope" / "data" / "demo"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(DEMO))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    primary, music = default_analyzers(), default_music_analyzers()
    files = [p for _, p in walk([args.folder])]
    base = with_fp = fp_alone = audio = 0.0
    for path in files:
        analyze.analyze_file(path, primary, music_analyzers=music)  # warm caches
        for _ in range(args.repeats):
            for flag in (False, True):
                t0 = time.perf_counter()
                a = analyze.analyze_file(path, primary, music_analyzers=music, fingerprint=flag)
                dt = time.perf_counter() - t0
                if flag:
                    with_fp += dt
                else:
                    base += dt
        y = decode.load(path, sample_rate=fp.SAMPLE_RATE, max_duration_s=24 * 3600)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fp.fingerprint(y=y)
        fp_alone += time.perf_counter() - t0
        audio += a.duration_s * args.repeats
    print(f"{len(files)} files, {audio / args.repeats / 60:.1f} min of audio, {args.repeats} alternating repeats")
    print(f"analysis without fingerprints: {audio / base:.1f}x real time; with: {audio / with_fp:.1f}x "
          f"(+{100 * (with_fp - base) / base:.1f}% time)")
    print(f"fingerprint stage alone (decoded audio in hand): {audio / fp_alone:.0f}x real time "
          f"({100 * fp_alone / base:.1f}% of the analysis time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
