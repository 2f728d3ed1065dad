"""Measure denoising: WER on noisy speech and query-by-example P@10 on noisy ESC-10 queries, with and without.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/eval_denoise.py --part all --out denoise.json
    (--part wer | qbe to run one half; --prompts N Asterisk prompts; --methods nonstationary,wiener)

The query-by-example half needs the ESC-10 library of `soundscope eval --section esc10 --data-dir D`;
pass --work D/eval-esc10. Same as `soundscope eval --section denoise`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soundscope import eval_denoise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "wer", "qbe"], default="all")
    ap.add_argument("--shared-data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--work", default="/work/denoise_eval/eval-esc10", help="folder holding the ESC-10 index/")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--no-librispeech", action="store_true")
    ap.add_argument("--every", type=int, default=4, help="query every Nth ESC-10 clip")
    ap.add_argument("--methods", default=",".join(eval_denoise.METHODS))
    ap.add_argument("--out", default=None, help="write the JSON result here")
    a = ap.parse_args(argv)
    shared, methods = Path(a.shared_data), tuple(m for m in a.methods.split(",") if m)
    result = {}
    if a.part in ("all", "wer"):
        result["wer"] = eval_denoise.run_wer(
            shared, n_prompts=a.prompts, methods=methods, librispeech=not a.no_librispeech
        )
    if a.part in ("all", "qbe"):
        result["qbe"] = eval_denoise.run_qbe(shared, Path(a.work), every=a.every, methods=methods)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(eval_denoise.format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
