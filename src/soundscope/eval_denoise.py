"""Does denoising help? Speech recognition and query by example on noisy audio, with and without it.

* **WER**: Asterisk prompts (and the LibriSpeech readings) mixed with ESC-10 background noise (rain,
  sea waves, chainsaw, helicopter, crackling fire; prompt ``i`` gets class ``i % 5``) at 0, 5 and
  10 dB SNR, and clean; each recognised by the project's path (:meth:`Transcriber.transcribe`: Silero
  VAD, then Whisper tiny.en, CTranslate2, one thread) as is and after each denoising method.
* **Query by example**: ESC-10 clips (every 4th, 100 queries) mixed with white noise, or with a rain
  clip (a helicopter clip for rain queries), at the same SNRs, query the ESC-10 library of
  ``soundscope eval --section esc10`` as is and denoised; leave-same-recording-out precision@10, as
  :func:`soundscope.evaluate.eval_qbe` measures it.

Noise is added to the decoded 16 kHz signal (:func:`soundscope.denoise.mix_at_snr`: mean-power ratio
over the whole clip). Everything is seeded; the run is deterministic.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

SNRS = (0.0, 5.0, 10.0)
NOISE_CLASSES = ("rain", "sea_waves", "chainsaw", "helicopter", "crackling_fire")
METHODS = ("nonstationary", "stationary", "wiener")
LEVELS: tuple[float | None, ...] = (None, *SNRS)  # None: clean


def _process(y: np.ndarray, method: str | None) -> np.ndarray:
    from . import denoise

    return y if method is None else denoise.denoise(y, sr=16000, method=method)


def _esc10_by_class(esc10: Path) -> dict[str, list[Path]]:
    import csv

    out: dict[str, list[Path]] = {}
    with open(esc10 / "labels.csv", newline="") as f:
        for row in sorted(csv.DictReader(f), key=lambda r: r["path"]):
            out.setdefault(row["category"], []).append(esc10 / row["path"])
    return out


def run_wer(
    shared_data: Path, *, n_prompts: int = 40, methods: tuple[str, ...] = METHODS, librispeech: bool = True
) -> dict[str, Any]:
    """WER (errors / reference words) per level ("clean", "0 dB", ...) and method ("none", ...)."""
    from . import decode, wer
    from .transcribe import load_transcriber

    items = wer.subset(wer.asterisk_items(shared_data / "asterisk-en"), n_prompts)
    if librispeech and (shared_data / "librispeech").exists():
        items = items + wer.librispeech_items(shared_data / "librispeech")
    noises = _esc10_by_class(shared_data / "esc10")
    asr = load_transcriber("tiny.en", denoise=None)  # the denoising here is the one under test
    counts: dict[str, dict[str, list[int]]] = {}
    seconds: dict[str, list[float]] = {}
    for i, (_, path, ref) in enumerate(items):
        clean = decode.load(path)
        cls = NOISE_CLASSES[i % len(NOISE_CLASSES)]
        noise = decode.load(noises[cls][(i // len(NOISE_CLASSES)) % len(noises[cls])])
        r = wer.normalize(ref)
        for level in LEVELS:
            y = clean if level is None else _mix(clean, noise, level)
            key = "clean" if level is None else f"{level:g} dB"
            for method in (None, *methods):
                t = time.perf_counter()
                x = _process(y, method)
                seconds.setdefault(method or "none", []).append((time.perf_counter() - t) / (y.shape[0] / 16000))
                hyp = " ".join(p.text for p in asr.transcribe(x))
                c = counts.setdefault(key, {}).setdefault(method or "none", [0, 0])
                c[0] += wer.edit_distance(r, wer.normalize(hyp))
                c[1] += len(r)
    table = {k: {m: round(e / max(n, 1), 4) for m, (e, n) in v.items()} for k, v in counts.items()}
    return {
        "utterances": len(items),
        "ref_words": next(iter(counts.values()))["none"][1],
        "wer": table,
        "denoise_x_real_time": {m: round(float(np.median(v)), 4) for m, v in seconds.items() if m != "none"},
    }


def _mix(clean: np.ndarray, noise: np.ndarray, level: float) -> np.ndarray:
    from . import denoise

    return denoise.mix_at_snr(signal=clean, noise=noise, snr_db=level)


def run_qbe(
    shared_data: Path, work: Path, *, every: int = 4, methods: tuple[str, ...] = METHODS
) -> dict[str, Any]:
    """P@10 per noise ("white", "rain"), level and method, against the index in ``work/index``."""
    from . import analyze, decode, evaluate
    from .api import Library

    esc10 = shared_data / "esc10"
    if not (work / "index").exists():
        raise FileNotFoundError(f"no ESC-10 library at {work / 'index'}: run soundscope eval --section esc10 first")
    clips = evaluate.link_clips(esc10, work)
    noises = _esc10_by_class(esc10)
    rain, heli = decode.load(noises["rain"][0]), decode.load(noises["helicopter"][0])
    queries = clips[::every]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    with Library(work / "index") as lib:
        judge = evaluate.QbeJudge(lib, clips)
        for qi, c in enumerate(queries):
            y = decode.load(c.path)
            white = np.random.default_rng(qi).standard_normal(y.shape[0]).astype(np.float32)
            for noise_name, noise in (("white", white), ("rain", heli if c.category == "rain" else rain)):
                for level in LEVELS:
                    if level is None and noise_name != "white":
                        continue
                    key = "clean" if level is None else f"{level:g} dB"
                    noisy = y if level is None else _mix(y, noise, level)
                    for method in (None, *methods):
                        p = judge.p_at_10(c, analyze.analyze_array(_process(noisy, method), [judge.primary]))
                        name = "clean" if level is None else noise_name
                        out.setdefault(name, {}).setdefault(key, {}).setdefault(method or "none", []).append(p)
    table = {
        n: {k: {m: round(float(np.mean(v)), 4) for m, v in ms.items()} for k, ms in ks.items()} for n, ks in out.items()
    }
    return {"queries": len(queries), "p_at_10": table}


def run(shared_data: Path, work: Path, *, n_prompts: int = 40, progress=None) -> dict[str, Any]:
    """Both halves; the ESC-10 library in ``work`` is built first (as ``--section esc10`` does) if missing."""
    from . import evaluate

    if not (work / "index").exists():
        evaluate.run(shared_data / "esc10", work, progress=progress)
    return {"wer": run_wer(shared_data, n_prompts=n_prompts), "qbe": run_qbe(shared_data, work)}


def format_table(r: dict[str, Any]) -> str:
    """The WER / P@10 table: rows clean, 0, 5, 10 dB; columns per method."""
    lines = []
    if "wer" in r:
        w = r["wer"]
        methods = list(next(iter(w["wer"].values())))
        lines.append(f"WER, Whisper tiny.en ({w['utterances']} utterances, {w['ref_words']} words, ESC-10 noise)")
        lines.append(f"{'':10s}" + "".join(f"{m:>15s}" for m in methods))
        for k, v in w["wer"].items():
            lines.append(f"{k:10s}" + "".join(f"{v[m]:15.3f}" for m in methods))
    if "qbe" in r:
        q = r["qbe"]["p_at_10"]
        for noise in ("white", "rain"):
            rows = {"clean": q["clean"]["clean"], **q.get(noise, {})}
            methods = list(rows["clean"])
            lines.append(f"query-by-example P@10, ESC-10, {r['qbe']['queries']} queries + {noise} noise")
            lines.append(f"{'':10s}" + "".join(f"{m:>15s}" for m in methods))
            for k, v in rows.items():
                lines.append(f"{k:10s}" + "".join(f"{v[m]:15.3f}" for m in methods))
    return "\n".join(lines)
