"""Query by example with mixed clips: a sound over music, which embedding should it be compared in?

Each query is an ESC-10 clip with a music excerpt under it (librosa example tracks, at a sound-to-music
level of ``snr_db``). The clip is analysed as a user's query would be (YAMNet, and the music tagger when
the music gate opens), then searched over ESC-10 plus the librosa songs: always in YAMNet's space, in the
music tagger's whenever it ran (the old rule), by :func:`describe.sound_dominates` for the whole clip,
and through :meth:`Library.similar` on the file (the per-segment rule in use). Precision@10 counts clips
of the query's class, leaving out clips from its source recording; songs among the first ten are counted
too (a query read as music drifts to them).

:func:`run_sequence` measures the other mixture, a sound *then* music (an ESC-10 clip followed by
10 s of a song), over ESC-10 plus the songs: searched in either space alone, in the one the whole clip
picks, and per segment (:func:`search.example_parts`, the rule in use), counting the query's class among
the first ten and whether its song is among them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import Clip, link_clips

MUSIC = ("Kevin_MacLeod_-_Vibe_Ace.ogg", "admiralbob77_-_Choice_-_Drum-bass.ogg", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
SONGS = (  # the librosa example tracks that are music (the rest are speech, birds, a whale)
    *MUSIC,
    "147793__setuniman__sweet-waltz-0i-22mi.ogg",
    "442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime.ogg",
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
    "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg",
)
SEQUENCE_MUSIC_S = 10.0  # seconds of song after the sound
OVERLAY_MODES = ("yamnet", "music_when_detected", "chosen", "in_use")


def _mono(path: Path, sr: int = 16000) -> np.ndarray:
    from . import decode

    return np.concatenate(list(decode.stream(str(path), sample_rate=sr))).astype(np.float32)


def link_library(esc10: Path, shared_data: Path, work: Path) -> tuple[list[Clip], dict[str, str]]:
    """ESC-10 and :data:`SONGS` linked under ``work/clips`` with neutral names: (clips, song path -> name)."""
    from .evaluate import _link

    clips = link_clips(esc10, work)
    songs = {}
    for i, name in enumerate(SONGS):
        songs[str(_link(work / "clips" / f"song_{i:02d}.ogg", shared_data / "librosa" / name))] = name
    return clips, songs


def mix(sound: np.ndarray, music: np.ndarray, *, snr_db: float) -> np.ndarray:
    """``sound`` (n,) over ``music`` (>= n,) scaled so the sound's RMS is ``snr_db`` above the music's."""
    music = music[: sound.shape[0]]
    rs, rm = float(np.sqrt(np.mean(sound**2))) + 1e-9, float(np.sqrt(np.mean(music**2))) + 1e-9
    out = sound + music * (rs / rm) * 10 ** (-snr_db / 20)
    return (out / max(1.0, float(np.abs(out).max()))).astype(np.float32)


def run(esc10: Path, shared_data: Path, work: Path, *, per_class: int = 4, snrs=(6.0, 0.0)) -> dict[str, Any]:
    """Sound over music: ``per_class`` ESC-10 clips of each class, each mixed over one of :data:`MUSIC` at
    each of ``snrs`` (dB), searched over ESC-10 plus :data:`SONGS` (so a query read as music can drift to
    the songs) four ways: YAMNet always, the music tagger whenever it ran, the per-clip rule, and
    :meth:`Library.similar` on the file (what a user gets). Per mode: P@10 of the query's class (leaving
    out its source recording) and the mean count of songs among the first ten."""
    import soundfile

    from . import analyze, describe
    from .api import MUSIC_SIMILARITY_SPACE, Library

    clips, songs = link_library(esc10, shared_data, work)
    by_class: dict[str, list[Clip]] = {}
    for c in clips:
        by_class.setdefault(c.category, []).append(c)
    queries = [c for cs in by_class.values() for c in cs[:per_class]]
    tracks = [_mono(shared_data / "librosa" / name) for name in MUSIC]
    out: dict[str, Any] = {"queries": len(queries), "snr_db": {}}
    with Library(work / "index", asr_model="none") as lib:
        lib.index([str(work / "clips")])
        cat = lib.store.catalog
        ids = {c.path: cat.item_by_path(c.path).id for c in clips}
        by_id = {ids[c.path]: c for c in clips}
        song_ids = {cat.item_by_path(p).id for p in songs}
        primary = lib.analyzers[0]
        music = next(a for a in lib.music_analyzers if a.name == MUSIC_SIMILARITY_SPACE)
        t0 = time.perf_counter()
        for snr in snrs:
            p: dict[str, list[float]] = {m: [] for m in OVERLAY_MODES}
            n_songs: dict[str, list[int]] = {m: [] for m in OVERLAY_MODES}
            chose_music = detected = 0
            for j, c in enumerate(queries):
                sound = _mono(Path(c.source))
                track = tracks[j % len(tracks)]
                start = (j * 7919) % max(1, track.shape[0] - sound.shape[0])
                path = work / "mixed" / f"q{j:03d}_{snr:+.0f}dB.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(path, mix(sound, track[start:], snr_db=snr), 16000)
                q = analyze.analyze_file(str(path), [primary], music_analyzers=[music])
                same = {ids[x.path] for x in clips if x.recording == c.recording}
                has_music = music.name in q.item_embeddings
                sound_wins = describe.sound_dominates(q.item_scores[primary.name], primary.labels)
                spaces = {
                    "yamnet": primary,
                    "music_when_detected": music if has_music else primary,
                    "chosen": primary if (not has_music or sound_wins) else music,
                }
                chose_music += spaces["chosen"] is music
                detected += has_music
                results = {mode: lib.searcher.similar(a, q, limit=10, exclude_ids=same) for mode, a in spaces.items()}
                results["in_use"] = [h for h in lib.similar(str(path), limit=10 + len(same)) if h.item_id not in same]
                for mode, hits in results.items():
                    hits = hits[:10]
                    right = sum(by_id[h.item_id].category == c.category for h in hits if h.item_id in by_id)
                    p[mode].append(right / 10)
                    n_songs[mode].append(sum(h.item_id in song_ids for h in hits))
            out["snr_db"][f"{snr:+.0f}"] = {
                **{f"p_at_10_{k}": round(float(np.mean(v)), 4) for k, v in p.items()},
                **{f"songs_in_10_{k}": round(float(np.mean(v)), 2) for k, v in n_songs.items()},
                "music_detected": detected,
                "chose_music": chose_music,
            }
        out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"query by example with music under the sound ({r['queries']} ESC-10 clips; ESC-10 plus the songs "
        "indexed; P@10 of the clip's class, songs among the first ten in brackets)",
        f"{'sound over music':18s}{'YAMNet always':>15s}{'music if detected':>19s}{'per clip':>13s}"
        f"{'in use':>13s}{'music detected':>16s}{'chose music':>13s}",
    ]
    for snr, v in r["snr_db"].items():
        cells = [f"{v[f'p_at_10_{m}']:.3f} ({v[f'songs_in_10_{m}']:.1f})" for m in OVERLAY_MODES]
        lines.append(
            f"{snr + ' dB':18s}{cells[0]:>15s}{cells[1]:>19s}{cells[2]:>13s}{cells[3]:>13s}"
            f"{v['music_detected']:16d}{v['chose_music']:13d}"
        )
    return "\n".join(lines)


def run_sequence(esc10: Path, shared_data: Path, work: Path, *, per_class: int = 2) -> dict[str, Any]:
    """Query by example with a sound followed by music: ``per_class`` ESC-10 clips of each class, each
    followed by :data:`SEQUENCE_MUSIC_S` s of one of :data:`SONGS` (from a place that varies), searched
    over ESC-10 plus the songs (indexed whole, under neutral names). Per mode: the mean count of the
    query's class among the first ten (leaving out its source recording), the share of queries whose
    song is among them, and the share with both."""
    import soundfile

    from . import analyze, describe
    from .api import MUSIC_SIMILARITY_SPACE, Library
    clips, songs = link_library(esc10, shared_data, work)
    by_class: dict[str, list[Clip]] = {}
    for c in clips:
        by_class.setdefault(c.category, []).append(c)
    queries = [c for cs in by_class.values() for c in cs[:per_class]]
    tracks = [_mono(shared_data / "librosa" / name) for name in SONGS]
    modes = ("yamnet", "music", "whole clip", "per segment")
    tally = {m: {"class_in_10": [], "song_in_10": [], "both": []} for m in modes}
    with Library(work / "index", asr_model="none") as lib:
        lib.index([str(work / "clips")])
        cat = lib.store.catalog
        ids = {c.path: cat.item_by_path(c.path).id for c in clips}
        by_id = {ids[c.path]: c for c in clips}
        song_of = {cat.item_by_path(p).id: name for p, name in songs.items()}
        primary = lib.analyzers[0]
        music = next(a for a in lib.music_analyzers if a.name == MUSIC_SIMILARITY_SPACE)
        t0 = time.perf_counter()
        for j, c in enumerate(queries):
            sound, track = _mono(Path(c.source)), tracks[j % len(tracks)]
            n = int(SEQUENCE_MUSIC_S * 16000)
            start = (j * 7919 * 16) % max(1, track.shape[0] - n)
            song = track[start : start + n]
            peak = max(float(np.abs(sound).max()), 1e-9)
            y = np.concatenate([sound / peak * 0.5, song / max(float(np.abs(song).max()), 1e-9) * 0.5])
            path = work / "sequence" / f"q{j:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, y.astype(np.float32), 16000)
            q = analyze.analyze_file(str(path), [primary], music_analyzers=[music])
            same = {ids[x.path] for x in clips if x.recording == c.recording}
            has_music = music.name in q.item_embeddings
            whole = (
                primary
                if not has_music or describe.sound_dominates(q.item_scores[primary.name], primary.labels)
                else music
            )
            results = {
                "yamnet": lib.searcher.similar(primary, q, limit=10, exclude_ids=same),
                "music": lib.searcher.similar(music, q, limit=10, exclude_ids=same) if has_music else [],
                "whole clip": lib.searcher.similar(whole, q, limit=10, exclude_ids=same),
                "per segment": [h for h in lib.similar(str(path), limit=10 + len(same)) if h.item_id not in same][:10],
            }
            for mode, hits in results.items():
                right = sum(by_id[h.item_id].category == c.category for h in hits if h.item_id in by_id)
                found = any(song_of.get(h.item_id) == SONGS[j % len(SONGS)] for h in hits)
                tally[mode]["class_in_10"].append(right)
                tally[mode]["song_in_10"].append(float(found))
                tally[mode]["both"].append(float(found and right > 0))
        seconds = round(time.perf_counter() - t0, 1)
    return {
        "queries": len(queries),
        "music_s": SEQUENCE_MUSIC_S,
        "modes": {m: {k: round(float(np.mean(v)), 3) for k, v in t.items()} for m, t in tally.items()},
        "seconds": seconds,
    }


def format_sequence(r: dict[str, Any]) -> str:
    lines = [
        f"query by example with a sound, then {r['music_s']:.0f} s of a song ({r['queries']} ESC-10 clips; "
        "ESC-10 plus the songs indexed)",
        f"{'searched':14s}{'its class in top 10':>21s}{'its song in top 10':>20s}{'both':>7s}",
    ]
    for mode, v in r["modes"].items():
        lines.append(f"{mode:14s}{v['class_in_10']:21.2f}{v['song_in_10']:20.2f}{v['both']:7.2f}")
    return "\n".join(lines)
