"""Slow against fast on music rendered for the purpose: pads, guitar, piano, punk and dance at 50-62 and
150-185 BPM, written as MIDI (``mido``) and rendered through a General MIDI sound font (FluidSynth).

The tracks have known tempos, so this measures two things: the tempo the descriptors report (exact,
octave or other error), and whether every slow query ("a slow song", "给我推荐一首慢歌", ...) ranks every
slow track above every fast one, and every fast query the reverse. Needs the ``fluidsynth`` program and
a GM sound font (Debian: ``apt-get install fluidsynth fluid-soundfont-gm``); the audio stays out of the
repository (``$SOUNDSCOPE_EVAL_DIR/tempo`` or ``~/.cache/soundscope/evalsets/tempo``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOUND_FONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
SLOW_QUERIES = ["a slow song", "slow music", "给我推荐一首慢歌", "慢歌"]
FAST_QUERIES = ["a fast song", "fast music", "快歌", "节奏快的音乐"]


@dataclass(frozen=True)
class Track:
    name: str
    bpm: int
    style: str  # pad | guitar | fingerpick | piano | punk | dance


TRACKS = (
    Track("pad_50", 50, "pad"),
    Track("pad_57", 57, "pad"),
    Track("guitar_54", 54, "guitar"),
    Track("guitar_60", 60, "guitar"),
    Track("piano_62", 62, "piano"),
    Track("punk_160", 160, "punk"),
    Track("punk_182", 182, "punk"),
    Track("dance_150", 150, "dance"),
    Track("dance_174", 174, "dance"),
    Track("guitar_165", 165, "guitar"),
    # a fingerpicked guitar: the thumb's bass on every beat, the fingers' eighths between (guitar_54 and
    # guitar_60 are even eighths with no accent at all, the same audio as quarter notes at twice the tempo)
    Track("fingerpick_56", 56, "fingerpick"),
    Track("fingerpick_61", 61, "fingerpick"),
)

CHORDS = ((57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62))  # Am F C G


def neutral_name(i: int) -> str:
    return f"track_{i + 1:02d}"


def default_dir() -> Path:
    base = os.environ.get("SOUNDSCOPE_EVAL_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "soundscope" / "evalsets") / "tempo"


def _midi(track: Track, *, bars: int):
    """A MIDI file of ``bars`` 4/4 bars in ``track``'s style (480 ticks per beat)."""
    import mido

    tpb = 480
    mid = mido.MidiFile(ticks_per_beat=tpb)
    events: list[tuple[int, mido.Message]] = []  # (absolute tick, message)

    def note(t: int, dur: int, pitch: int, vel: int, ch: int) -> None:
        events.append((t, mido.Message("note_on", note=pitch, velocity=vel, channel=ch)))
        events.append((t + dur, mido.Message("note_off", note=pitch, velocity=0, channel=ch)))

    program = {"pad": 89, "guitar": 24, "fingerpick": 24, "piano": 0, "punk": 30, "dance": 38}[track.style]
    events.append((0, mido.Message("program_change", program=program, channel=0)))
    for bar in range(bars):
        t0, chord = bar * 4 * tpb, CHORDS[bar % len(CHORDS)]
        if track.style == "pad":  # one sustained chord a bar, no attack to speak of
            for p in chord:
                note(t0, 4 * tpb - 10, p, 70, 0)
        elif track.style == "guitar" and track.bpm < 100:  # arpeggiated eighths
            for k in range(8):
                note(t0 + k * tpb // 2, tpb // 2, chord[k % 3] + (12 if k % 4 == 3 else 0), 80, 0)
        elif track.style == "fingerpick":  # thumb on the beat (root, fifth), fingers on the eighths
            for k in range(8):
                if k % 2 == 0:
                    note(t0 + k * tpb // 2, tpb, chord[0] - 12 + (7 if k % 4 == 2 else 0), 95, 0)
                else:
                    note(t0 + k * tpb // 2, tpb // 2, chord[1 + (k // 2) % 2] + 12 * (k == 7), 65, 0)
        elif track.style == "guitar":  # fast strumming, eighths
            for k in range(8):
                for j, p in enumerate(chord):
                    note(t0 + k * tpb // 2 + j * 8, tpb // 2 - 20, p - 12, 95 if k % 2 == 0 else 70, 0)
        elif track.style == "piano":  # slow ballad: a chord per beat, bass on 1
            note(t0, 4 * tpb, chord[0] - 24, 80, 0)
            for k in range(4):
                for p in chord:
                    note(t0 + k * tpb, tpb - 20, p, 60, 0)
        elif track.style == "punk":  # power chords in eighths
            for k in range(8):
                for p in (chord[0] - 12, chord[0] - 5):
                    note(t0 + k * tpb // 2, tpb // 2 - 30, p, 110, 0)
        elif track.style == "dance":  # offbeat synth bass
            for k in range(4):
                note(t0 + k * tpb + tpb // 2, tpb // 2 - 20, chord[0] - 24, 100, 0)
        if track.style in ("punk", "dance", "piano"):  # drums on channel 10
            for k in range(4):
                beat = t0 + k * tpb
                if track.style == "dance" or k in (0, 2):
                    note(beat, tpb // 4, 36, 110, 9)  # kick
                if k in (1, 3):
                    note(beat, tpb // 4, 38, 100, 9)  # snare
                if track.style != "piano":
                    for e in (0, tpb // 2):
                        note(beat + e, tpb // 8, 42, 80, 9)  # closed hi-hat
    t = mido.MidiTrack()
    t.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(track.bpm)))
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        t.append(msg.copy(time=tick - now))
        now = tick
    mid.tracks.append(t)
    return mid


def build(dest: Path | None = None, *, seconds: float = 30.0, only: tuple[str, ...] = ()) -> Path:
    """Render :data:`TRACKS` (those named in ``only``, if given) into ``dest/tracks/track_NN.wav``
    (16 kHz, FluidSynth's stereo). Idempotent."""
    dest = Path(dest or default_dir())
    fluidsynth = shutil.which("fluidsynth")
    font = next((f for f in SOUND_FONTS if Path(f).exists()), None)
    if fluidsynth is None or font is None:
        raise FileNotFoundError(
            "the tempo set needs fluidsynth and a GM sound font: apt-get install fluidsynth fluid-soundfont-gm"
        )
    out = dest / "tracks"
    out.mkdir(parents=True, exist_ok=True)
    for i, track in enumerate(TRACKS):
        wav = out / f"{neutral_name(i)}.wav"  # names say nothing of the tempo to the keyword ranker
        if wav.exists() or (only and track.name not in only):
            continue
        bars = max(2, round(seconds * track.bpm / 240))
        midi = dest / "midi" / f"{track.name}.mid"
        midi.parent.mkdir(parents=True, exist_ok=True)
        _midi(track, bars=bars).save(midi)
        tmp = wav.with_suffix(".tmp.wav")
        subprocess.run(
            [fluidsynth, "-ni", "-q", "-g", "0.8", "-r", "16000", "-F", str(tmp), font, str(midi)],
            check=True,
            capture_output=True,
        )
        tmp.rename(wav)
    return dest


def run(dest: Path, work: Path) -> dict[str, Any]:
    from .api import Library

    build(dest)
    by_name = {neutral_name(i): t for i, t in enumerate(TRACKS)}
    out: dict[str, Any] = {"tracks": [], "queries": {}}
    with Library(work / "index", asr_model="none") as lib:
        lib.index([str(dest / "tracks")])
        for r in lib.store.catalog.items():
            t = by_name.get(Path(r.path).stem)
            if t is None:
                continue
            music = r.features.get("music") or {}
            est = float(music.get("tempo_bpm") or 0.0)
            ratio = est / t.bpm if est else 0.0
            out["tracks"].append(
                {
                    "track": t.name,
                    "file": Path(r.path).name,
                    "true_bpm": t.bpm,
                    "estimated": round(est, 1),
                    "confidence": music.get("tempo_confidence"),
                    "onset_rate": music.get("onset_rate"),
                    "kind": r.kind,
                    "error": _error(ratio),
                }
            )
        for queries, want_slow in ((SLOW_QUERIES, True), (FAST_QUERIES, False)):
            for q in queries:
                ranked = [Path(r.path).stem for r in lib.search(q, limit=len(TRACKS))]
                ranked = [by_name[n].name if n in by_name else n for n in ranked]
                bpm = {t.name: t.bpm for t in TRACKS}
                slow = [i for i, n in enumerate(ranked) if n in bpm and bpm[n] < 100]
                fast = [i for i, n in enumerate(ranked) if n in bpm and bpm[n] >= 100]
                first, second = (slow, fast) if want_slow else (fast, slow)
                ok = bool(first) and len(first) + len(second) == len(TRACKS) and max(first) < min(second or [1 << 30])
                out["queries"][q] = {"correct": ok, "ranking": ranked}
    out["all_correct"] = all(v["correct"] for v in out["queries"].values())
    out["exact_tempo"] = sum(t["error"] == "none" for t in out["tracks"])
    return out


def _error(ratio: float) -> str:
    if abs(ratio - 1) <= 0.04:
        return "none"
    return "octave" if min(abs(ratio - 0.5), abs(ratio - 2)) <= 0.08 else "other"


def format_table(r: dict[str, Any]) -> str:
    lines = [f"tempo set ({len(r['tracks'])} rendered tracks): tempo exact on {r['exact_tempo']}"]
    lines.append(f"{'track':14s}{'true':>6s}{'estimated':>11s}{'conf':>7s}  error")
    for t in sorted(r["tracks"], key=lambda t: t["true_bpm"]):
        conf = t["confidence"] or 0.0
        lines.append(f"{t['track']:14s}{t['true_bpm']:6d}{t['estimated']:11.1f}{conf:7.2f}  {t['error']}")
    for q, v in r["queries"].items():
        lines.append(f"{'ok ' if v['correct'] else 'NO '} {q}: {' '.join(v['ranking'])}")
    return "\n".join(lines)
