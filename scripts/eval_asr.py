#!/usr/bin/env python
"""Word error rate and speed of soundscope's speech recognition (Silero VAD + Whisper, CPU, 1 thread).

Data (read-only, under ``../shared/data`` by default):

* ``asterisk-en``: 568 telephone prompts, 8 kHz WAV under ``audio/``; ``transcripts.txt`` lines
  ``name: text`` where ``name`` is the path under ``audio/`` without ``.wav``. Text in ``[...]``,
  ``(...)`` or ``<...>`` names a sound, not words, and is removed; a prompt left with no words (silence, beeps,
  tones, monkeys) is scored separately as *non-speech*: the count of those that produced any text.
* ``librispeech``: FLAC files and ``transcripts.txt`` lines ``ID TEXT``.

Two more sets check the streaming path and the gating:

* ``long``: the speech prompts joined, in name order, by 0.7-6 s gaps of quiet noise into one
  recording of about ``--long-minutes`` (10) minutes, fed to ``Transcriber.transcribe_stream`` in 30 s
  blocks: WER of the whole text; the share of prompts with a passage starting within 1 s of the
  prompt's start (prompts 0.7 s apart are one utterance to the VAD and often one passage) and with a
  first word starting within 1 s of it; speed.
* ``nonspeech``: ESC-10 rain (40 x 5 s) and the librosa example recordings without speech (music,
  whale song, birdsong; the sung "Let's Go Fishin'" and the three LibriVox readings are left out):
  seconds the VAD calls speech and the passages Whisper writes there (ideally none).

Audio is decoded with :func:`soundscope.decode.load` (16 kHz mono float32) before the clock starts;
the time measured is VAD + recognition (``Transcriber.transcribe``), reported as x real time
(seconds of audio per second of processing). Model loading is timed separately.

Normalisation (applied identically to reference and hypothesis before WER):

1. Unicode NFKC, lowercase; ``[...]``, ``(...)`` and ``<...>`` removed.
2. Symbols spoken as words: ``@ at``, ``& and``, ``% percent``, ``+ plus``, ``= equals``, ``# pound``,
   ``* star``, ``$ dollar``; ``a.m.``/``p.m.`` -> ``am``/``pm``.
3. Numbers written with digits become English words, so "5" == "five" and "500" == "five hundred":
   integers as cardinals (``1234`` -> "one thousand two hundred thirty four"), decimals digit by digit
   after "point" (``28.8`` -> "twenty eight point eight"), ordinals (``1st`` -> "first"); digits joined
   by ``-`` or ``, `` ("1-2-3") are separate numbers; a comma followed by exactly three digits is a
   thousands separator ("100,000" -> "one hundred thousand").
4. Every other non-letter/digit character becomes a space; apostrophes are dropped ("don't" -> "dont").
   Spelling variants (counselled/counseled, okay/ok) are not unified.

WER = (substitutions + deletions + insertions) / reference words, summed over the corpus.

``--subset N`` keeps N prompts, chosen deterministically: the prompts sorted by name, every k-th
(k = ceil(total / N)), starting at the first.

Usage: ``python scripts/eval_asr.py [--models tiny.en base] [--subset N] [--beam-size 1] [--out FILE]``;
prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SOUNDSCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))

# ---------------------------------------------------------------------------------------------
# Text normalisation

from soundscope.wer import (  # noqa: E402
    asterisk_items,
    edit_distance,
    librispeech_items,
    normalize,
    subset,
)


def evaluate(tr, items, audio, *, dump=None, label="") -> dict:
    """WER and speed of transcriber ``tr`` over ``items`` (audio pre-decoded in ``audio``)."""
    from soundscope.transcribe import load_vad

    vad = load_vad()
    errors = ref_words = 0
    audio_s = asr_s = vad_s = 0.0
    speech_items = 0
    exact = 0
    nonspeech = {"items": 0, "with_text": 0, "examples": []}
    worst = []
    for name, _path, ref_text in items:
        y = audio[name]
        dur = len(y) / 16000
        t0 = time.perf_counter()
        vad.regions(y)
        t1 = time.perf_counter()
        passages = tr.transcribe(y)
        t2 = time.perf_counter()
        vad_s += t1 - t0
        asr_s += t2 - t1  # includes its own VAD pass
        audio_s += dur
        hyp_text = " ".join(p.text for p in passages)
        ref, hyp = normalize(ref_text), normalize(hyp_text)
        if dump is not None:
            row = {"set": label, "model": tr.model_id, "name": name, "ref": ref_text, "hyp": hyp_text}
            dump.write(json.dumps(row, ensure_ascii=False) + "\n")
        if not ref:
            nonspeech["items"] += 1
            if hyp:
                nonspeech["with_text"] += 1
                nonspeech["examples"].append(f"{name}: {hyp_text}")
            continue
        e = edit_distance(ref, hyp)
        speech_items += 1
        exact += e == 0
        errors += e
        ref_words += len(ref)
        worst.append((e, name, " ".join(ref), " ".join(hyp)))
    worst.sort(key=lambda w: -w[0])
    return {
        "items": len(items),
        "speech_items": speech_items,
        "ref_words": ref_words,
        "errors": errors,
        "wer": round(errors / max(1, ref_words), 4),
        "sentence_exact": round(exact / max(1, speech_items), 4),
        "audio_s": round(audio_s, 1),
        "asr_s": round(asr_s, 2),
        "x_real_time": round(audio_s / max(asr_s, 1e-9), 2),
        "vad_x_real_time": round(audio_s / max(vad_s, 1e-9), 1),
        "nonspeech": {**nonspeech, "examples": nonspeech["examples"][:8]},
        "worst": [{"errors": e, "name": n, "ref": r, "hyp": h} for e, n, r, h in worst[:8]],
    }


def long_recording(items, audio, minutes: float):
    """A synthetic long recording: the speech prompts, in name order, joined by gaps of quiet noise.

    Gaps cycle through 1.0, 2.5, 4.0, 0.7 and 6.0 s of Gaussian noise (sigma 0.002, seed 0); the
    recording starts with 2 s of it and stops after the prompt that passes ``minutes``. Returns the
    signal and ``(start s, end s, reference)`` of every prompt placed.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    gaps = [1.0, 2.5, 4.0, 0.7, 6.0]

    def noise(sec: float):
        return (0.002 * rng.standard_normal(int(sec * 16000))).astype(np.float32)

    parts, placed, t = [noise(2.0)], [], 2.0
    for i, (name, _path, ref) in enumerate(items):
        if not normalize(ref):
            continue
        y = audio[name]
        d = len(y) / 16000
        placed.append((t, t + d, ref))
        parts += [y + noise(d), noise(gaps[i % len(gaps)])]
        t += d + gaps[i % len(gaps)]
        if t >= minutes * 60:
            break
    return np.concatenate(parts), placed


def evaluate_long(tr, y, placed) -> dict:
    """WER, onset accuracy and speed of ``transcribe_stream`` over a long recording fed in 30 s blocks."""
    from soundscope.transcribe import load_vad

    dur = len(y) / 16000
    t0 = time.perf_counter()
    load_vad().regions(y)
    vad_s = time.perf_counter() - t0
    block = 30 * 16000
    t0 = time.perf_counter()
    passages = list(tr.transcribe_stream(y[i : i + block] for i in range(0, len(y), block)))
    asr_s = time.perf_counter() - t0
    ref = normalize(" ".join(r for _, _, r in placed))
    hyp = normalize(" ".join(p.text for p in sorted(passages, key=lambda p: p.start)))
    word_starts = sorted(w.start for p in passages for w in (p.words or []))

    def onset_errors(starts: list[float]) -> list[float | None]:
        out = []
        for start, end, _ in placed:
            near = [t for t in starts if start - 1.0 <= t <= end]
            out.append(abs(near[0] - start) if near else None)
        return out

    def share_within(errs: list[float | None]) -> float:
        return round(sum(e is not None and e <= 1.0 for e in errs) / max(1, len(errs)), 4)

    def median(errs: list[float | None]) -> float | None:
        found = sorted(e for e in errs if e is not None)
        return round(found[len(found) // 2], 3) if found else None

    by_passage = onset_errors(sorted(p.start for p in passages))
    by_word = onset_errors(word_starts)
    return {
        "audio_s": round(dur, 1),
        "prompts": len(placed),
        "passages": len(passages),
        "ref_words": len(ref),
        "wer": round(edit_distance(ref, hyp) / max(1, len(ref)), 4),
        "passage_starts_within_1s": share_within(by_passage),
        "word_onset_within_1s": share_within(by_word),
        "word_onset_abs_error_median_s": median(by_word),
        "x_real_time": round(dur / asr_s, 2),
        "vad_x_real_time": round(dur / vad_s, 1),
    }


def nonspeech_files(data: Path) -> dict[str, list[Path]]:
    """ESC-10 rain, and the librosa example recordings without speech (music, whale, birds)."""
    groups = {"esc10_rain": sorted((data / "esc10" / "audio" / "rain").glob("*.ogg"))}
    index = json.loads((data / "librosa" / "index.json").read_text())
    music = [k for k in index if not k.startswith("libri") and k != "fishin"]  # fishin: sung vocals
    groups["librosa_nonspeech"] = sorted(data / "librosa" / f"{index[k]['path']}.ogg" for k in music)
    return groups


def evaluate_nonspeech(tr, groups, audio) -> dict:
    """Seconds the VAD calls speech and passages Whisper writes, on recordings with no speech."""
    from soundscope.transcribe import load_vad

    vad = load_vad()
    out = {}
    for label, paths in groups.items():
        total = speech = 0.0
        texts = []
        files_with_speech = 0
        t0 = time.perf_counter()
        for p in paths:
            y = audio[str(p)]
            total += len(y) / 16000
            regions = vad.regions(y)
            speech += sum(r.duration for r in regions)
            files_with_speech += bool(regions)
            texts += [f"{p.name}: {x.text}" for x in tr.transcribe(y, regions=regions)]
        out[label] = {
            "files": len(paths),
            "audio_s": round(total, 1),
            "vad_speech_s": round(speech, 2),
            "files_with_vad_speech": files_with_speech,
            "passages": len(texts),
            "examples": texts[:6],
            "x_real_time": round(total / (time.perf_counter() - t0), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    ap.add_argument("--subset", type=int, default=None, help="asterisk prompts to use (deterministic stride)")
    ap.add_argument("--subset-models", nargs="*", default=None, help="apply --subset only to these models")
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--no-words", action="store_true", help="skip word timestamps")
    ap.add_argument(
        "--sets",
        nargs="+",
        default=["asterisk", "librispeech", "long", "nonspeech"],
        help="asterisk, librispeech, long (prompts joined into one recording), nonspeech (rain, music)",
    )
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--dump", type=Path, default=None, help="write every hypothesis as JSON lines here")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)

    from soundscope import decode
    from soundscope.transcribe import Transcriber

    sets = {}
    if "asterisk" in args.sets or "long" in args.sets:
        sets["asterisk"] = asterisk_items(args.data / "asterisk-en")
    if "librispeech" in args.sets:
        sets["librispeech"] = librispeech_items(args.data / "librispeech")
    audio = {}
    t = time.perf_counter()
    for items in sets.values():
        for name, path, _ in items:
            audio[name] = decode.load(path)
    nonspeech = nonspeech_files(args.data) if "nonspeech" in args.sets else {}
    for paths in nonspeech.values():
        for p in paths:
            audio[str(p)] = decode.load(p)
    long_y, long_placed = (
        long_recording(sets["asterisk"], audio, args.long_minutes) if "long" in args.sets else (None, [])
    )
    if "asterisk" not in args.sets:
        sets.pop("asterisk", None)
    decode_s = time.perf_counter() - t

    dump = args.dump.open("w", encoding="utf-8") if args.dump else None
    summary: dict = {
        "data": str(args.data),
        "decode_s": round(decode_s, 1),
        "threads": 1,
        "beam_size": args.beam_size,
        "compute_type": args.compute_type,
        "word_timestamps": not args.no_words,
        "models": {},
    }
    try:
        for model in args.models:
            t = time.perf_counter()
            tr = Transcriber(
                model,
                compute_type=args.compute_type,
                cpu_threads=1,
                beam_size=args.beam_size,
                word_timestamps=not args.no_words,
            )
            res: dict = {"model_id": tr.model_id, "load_s": round(time.perf_counter() - t, 2)}
            for label, items in sets.items():
                use = items
                if label == "asterisk" and args.subset and (args.subset_models is None or model in args.subset_models):
                    use = subset(items, args.subset)
                    k = math.ceil(len(items) / args.subset)
                    res[f"{label}_subset"] = f"{len(use)} of {len(items)}: sorted by name, every {k}th"
                res[label] = evaluate(tr, use, audio, dump=dump, label=label)
                r = res[label]
                print(f"# {model} {label}: WER {r['wer']:.3f}, x{r['x_real_time']} real time", file=sys.stderr)
            if long_y is not None:
                r = res["long"] = evaluate_long(tr, long_y, long_placed)
                print(f"# {model} long: WER {r['wer']:.3f}, x{r['x_real_time']} real time", file=sys.stderr)
            if nonspeech:
                res["nonspeech"] = evaluate_nonspeech(tr, nonspeech, audio)
            summary["models"][model] = res
    finally:
        if dump:
            dump.close()
    text = json.dumps(summary, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
