#!/usr/bin/env python3
"""Build the excerpt-identification benchmark used by ``soundscope eval --section identify``.

Reference set: the music of Debian's free game-music packages asc-music, drascula-music,
hyperrogue-music and ufoai-music (fetched with ``apt-get download``; NOT wesnoth-1.16-music, warzone2100-music,
nexuiz-music or singularity-music, which are held out), plus the librosa example music in
../shared/data/librosa. Negatives: planetblupi-music-ogg, which is not in the reference set.

Seeded excerpts at random offsets, each cut at 2, 5 and 10 s, under the nine conditions of issue 13 (ffmpeg
for cutting and MP3, sox for speed, pitch, the telephone band and a speaker in a reverberant room, numpy for
noise at a set SNR): clean, MP3 64 kb/s, white and pink noise at 0 dB SNR, speed +3 % and -3 % (pitch and
tempo), telephone band (8 kHz, 300-3400 Hz), pitch +3 % with the tempo kept, and "speaker" (200-7000 Hz,
room reverb, pink room noise at 10 dB SNR). The audio
stays in ``--out`` (default ~/.cache/soundscope/identify-bench), never in the repository; the
labels go to ``queries.csv`` and the reference list to ``references.csv``.

    python scripts/build_identify_bench.py [--out DIR] [--excerpts 100] [--negatives 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REFERENCE_PACKAGES = ["asc-music", "drascula-music", "hyperrogue-music", "ufoai-music"]
NEGATIVE_PACKAGES = ["planetblupi-music-ogg"]
HELD_OUT = {"wesnoth-1.16-music", "warzone2100-music", "nexuiz-music", "singularity-music"}
LIBROSA_MUSIC = ["Kevin_MacLeod_-_Vibe_Ace", "admiralbob77_-_Choice_-_Drum-bass",
                 "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy",
                 "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra)",
                 "sorohanro_-_solo-trumpet-06", "Karissa_Hobbs_-_Lets_Go_Fishin",
                 "147793__setuniman__sweet-waltz-0i-22mi",
                 "442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime"]  # fmt: skip
CONDITIONS = ["clean", "mp3_64k", "white_0db", "pink_0db", "speed_+3", "speed_-3", "telephone", "pitch_+3", "speaker"]
LENGTHS = [2, 5, 10]
RATE = 44100
AUDIO_EXT = {".ogg", ".mp3", ".wav", ".flac"}


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def fetch_packages(names: list[str], out: Path) -> list[Path]:
    """Audio files of Debian packages (downloaded with apt-get download, unpacked with dpkg-deb)."""
    assert not HELD_OUT & set(names), "held-out package requested"
    debs, root = out / "debs", out / "pkgs"
    debs.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name in names:
        have = list(debs.glob(f"{name}_*.deb"))
        if not have:
            subprocess.run(["apt-get", "download", name], cwd=debs, check=True)
            have = list(debs.glob(f"{name}_*.deb"))
        target = root / name
        if not target.exists():
            target.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(have[0]), str(target)])
            for pk3 in target.rglob("*.pk3"):  # ufoai keeps its music in a zip archive
                with zipfile.ZipFile(pk3) as z:
                    z.extractall(pk3.parent / (pk3.stem + "_pk3"),
                                 [m for m in z.namelist() if Path(m).suffix.lower() in AUDIO_EXT])  # fmt: skip
        files += sorted(
            p
            for p in target.rglob("*")
            if p.suffix.lower() in AUDIO_EXT and "/sounds/" not in str(p) and not p.is_symlink()
        )  # drascula links one copy of its music per language
    unique: dict[str, Path] = {}
    for p in files:  # the same bytes twice would make "which recording" ambiguous
        unique.setdefault(hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest(), p)
    return sorted(unique.values())


def duration(path: Path) -> float:
    """Seconds (0 for a file ffprobe cannot read: it is left out)."""
    if not path.is_file():
        return 0.0
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    try:
        return float(json.loads(proc.stdout)["format"]["duration"])
    except (ValueError, KeyError):
        return 0.0


def read_wav(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(RATE), "-"],
                         check=True, capture_output=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.float32)


def write_wav(path: Path, y: np.ndarray) -> None:
    p = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "-",
                        "-c:a", "pcm_s16le", str(path)], input=np.clip(y, -1, 1).astype(np.float32).tobytes(),
                       capture_output=True)  # fmt: skip
    if p.returncode:
        raise RuntimeError(p.stderr.decode())


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    spec /= np.sqrt(np.maximum(np.arange(spec.size), 1))  # 1/f power: pink
    return np.fft.irfft(spec, n=n)


def make_condition(src: Path, dst: Path, cond: str, length: float, rng: np.random.Generator, tmp: Path) -> None:
    """``dst`` (wav or mp3): the first ``length`` seconds of ``src`` (a longer cut) under ``cond``."""
    if cond == "clean":
        run(["sox", str(src), str(dst), "trim", "0", str(length)])
    elif cond == "mp3_64k":
        run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", str(length), "-c:a", "libmp3lame", "-b:a", "64k",
             str(dst)])  # fmt: skip
    elif cond in ("white_0db", "pink_0db"):
        y = read_wav(src)[: int(length * RATE)].astype(np.float64)
        z = noise(cond.split("_")[0], y.size, rng)
        z *= np.sqrt(np.mean(y**2) / max(np.mean(z**2), 1e-12))  # 0 dB SNR over the full band
        mix = y + z
        write_wav(dst, mix / max(1.0, np.abs(mix).max()))
    elif cond.startswith("speed_"):
        factor = 1 + int(cond.split("_")[1]) / 100
        run(["sox", str(src), str(dst), "speed", str(factor), "trim", "0", str(length)])
    elif cond == "telephone":
        run(["sox", str(src), "-r", "8000", str(dst), "sinc", "300-3400", "trim", "0", str(length)])
    elif cond == "pitch_+3":  # pitch up 3 % (51 cents), tempo kept: a transposed / pitch-corrected edit
        run(["sox", str(src), str(dst), "pitch", "51", "trim", "0", str(length)])
    elif cond == "speaker":  # played on a small speaker in a room, recorded by a phone: band, reverb, room noise
        room = tmp / "room.wav"
        run(["sox", str(src), str(room), "sinc", "200-7000", "reverb", "60", "50", "80", "gain", "-n", "-3"])
        y = read_wav(room)[: int(length * RATE)].astype(np.float64)
        z = noise("pink", y.size, rng)
        z *= np.sqrt(np.mean(y**2) / max(np.mean(z**2), 1e-12) / 10.0)  # room noise at 10 dB SNR
        mix = y + z
        write_wav(dst, mix / max(1.0, np.abs(mix).max()))
    else:
        raise ValueError(cond)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "soundscope" / "identify-bench"))
    ap.add_argument("--excerpts", type=int, default=100, help="excerpt positions (each cut at 2, 5 and 10 s)")
    ap.add_argument("--negatives", type=int, default=30, help="negative positions (x 3 lengths x 3 conditions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--librosa", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "librosa"))
    args = ap.parse_args()
    for tool in ("ffmpeg", "ffprobe", "sox", "apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            print(f"needs {tool} (apt-get install ffmpeg sox)", file=sys.stderr)
            return 2
    out = Path(args.out)
    qdir = out / "queries"
    qdir.mkdir(parents=True, exist_ok=True)
    refs = fetch_packages(REFERENCE_PACKAGES, out)
    refs += [p for p in (Path(args.librosa) / f"{n}.ogg" for n in LIBROSA_MUSIC) if p.exists()]
    negs = fetch_packages(NEGATIVE_PACKAGES, out)
    durs = {p: duration(p) for p in refs + negs}
    refs = [p for p in refs if durs[p] >= 12]
    negs = [p for p in negs if durs[p] >= 12]
    with open(out / "references.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "duration_s"])
        w.writerows([str(p), round(durs[p], 3)] for p in refs)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        jobs = [(k, refs[rng.integers(len(refs))], False) for k in range(args.excerpts)]
        jobs += [(k, negs[rng.integers(len(negs))], True) for k in range(args.negatives)]
        for k, src, negative in jobs:
            start = float(rng.uniform(0, durs[src] - 11.0))
            cut = tmp / "cut.wav"  # 12 s from the start: enough for every length, also after speed -3%
            run(["ffmpeg", "-v", "error", "-y", "-ss", f"{start:.3f}", "-t", "12", "-i", str(src), "-ac", "1",
                 "-ar", str(RATE), str(cut)])  # fmt: skip
            conds = ["clean", "mp3_64k", "white_0db"] if negative else CONDITIONS
            for length in LENGTHS:
                for cond in conds:
                    ext = "mp3" if cond == "mp3_64k" else "wav"
                    name = f"{'neg' if negative else 'q'}{k:04d}_{length:02d}s_{cond}.{ext}"
                    make_condition(cut, qdir / name, cond, length, rng, tmp)
                    rows.append([name, "" if negative else str(src), round(start, 3), length, cond, int(negative)])
            print(f"\r{k + 1 + (args.excerpts if negative else 0)}/{len(jobs)} excerpts", end="", flush=True)
    print()
    with open(out / "queries.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reference", "offset_s", "length_s", "condition", "negative"])
        w.writerows(rows)
    hours = sum(durs[p] for p in refs) / 3600
    print(f"{len(refs)} references ({hours:.2f} h), {len(rows)} queries in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
