#!/usr/bin/env python
"""Write audio clips with known tempo: click tracks and synthetic drum loops, plus ``tempos.json``.

Usage: ``python scripts/make_tempo_clips.py OUTDIR [--seconds 24] [--sr 16000]``

The synthesis functions (:func:`click_track`, :func:`drum_loop`) are importable and deterministic
(seeded), so tests can build the same signals in memory instead of reading committed files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soundscope.synth import BPMS, STYLE_FOR_BPM, click_track, drum_loop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--sr", type=int, default=16000)
    args = ap.parse_args(argv)

    import soundfile as sf

    args.outdir.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict[str, object]] = {}
    for bpm in BPMS:
        style, swing = STYLE_FOR_BPM[bpm]
        clips = {
            f"click_{bpm:03d}bpm.wav": (click_track(bpm, sr=args.sr, seconds=args.seconds), "click", 0.0),
            f"drums_{bpm:03d}bpm_{style}.wav": (
                drum_loop(bpm, sr=args.sr, seconds=args.seconds, seed=bpm),
                style,
                swing,
            ),
        }
        for name, (y, kind, sw) in clips.items():
            sf.write(args.outdir / name, y, args.sr, subtype="PCM_16")
            truth[name] = {"bpm": float(bpm), "kind": kind, "swing": sw, "seconds": args.seconds}
    (args.outdir / "tempos.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote {len(truth)} clips and tempos.json to {args.outdir}")


if __name__ == "__main__":
    main()
