"""Synthetic audio with known answers: click tracks and drum loops at set tempos (for tests and evaluation)."""

from __future__ import annotations

import numpy as np

BPMS = (60, 72, 90, 100, 120, 128, 140, 170)

# 16 steps (sixteenth notes) per 4/4 bar: (kick steps, snare steps, hi-hat steps)
PATTERNS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "rock": ((0, 8, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14)),
    "hiphop": ((0, 7, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14)),
    "house": ((0, 4, 8, 12), (4, 12), (2, 6, 10, 14)),
    "dnb": ((0, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14)),
    "ballad": ((0, 6, 8), (4, 12), tuple(range(16))),
}

# style and swing (fraction of a sixteenth by which off-beat eighths are late) per tempo
STYLE_FOR_BPM: dict[int, tuple[str, float]] = {
    60: ("ballad", 0.0),
    72: ("rock", 0.0),
    90: ("hiphop", 0.35),
    100: ("hiphop", 0.25),
    120: ("house", 0.0),
    128: ("house", 0.0),
    140: ("rock", 0.1),
    170: ("dnb", 0.0),
}


def _decay(n: int, tau_s: float, sr: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau_s * sr))


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    freq = 50.0 + 90.0 * np.exp(-t / 0.04)  # pitch drop 140 -> 50 Hz
    phase = 2 * np.pi * np.cumsum(freq) / sr
    click = rng.normal(0, 1, n) * _decay(n, 0.003, sr)
    return (np.sin(phase) * _decay(n, 0.12, sr) + 0.3 * click).astype(np.float32)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    noise = rng.normal(0, 1, n)
    noise = np.diff(noise, prepend=0.0)  # tilt up: brighter noise
    body = np.sin(2 * np.pi * 190.0 * t) * _decay(n, 0.04, sr)
    return (0.35 * noise * _decay(n, 0.06, sr) + 0.6 * body).astype(np.float32)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.06 * sr)
    noise = rng.normal(0, 1, n + 2)
    noise = noise[2:] - 2 * noise[1:-1] + noise[:-2]  # second difference: strong high-pass
    return (0.12 * noise * _decay(n, 0.012, sr)).astype(np.float32)


def _place(out: np.ndarray, sound: np.ndarray, start: int, gain: float) -> None:
    if start >= out.shape[0] or start < 0:
        return
    n = min(sound.shape[0], out.shape[0] - start)
    out[start : start + n] += gain * sound[:n]


def click_track(bpm: float, *, sr: int = 16000, seconds: float = 24.0, accent_every: int = 4) -> np.ndarray:
    """Metronome: 20 ms 1 kHz clicks (2 kHz and louder on every ``accent_every``-th beat), shape ``(n,)``."""
    n = int(seconds * sr)
    out = np.zeros(n, np.float32)
    m = int(0.02 * sr)
    t = np.arange(m) / sr
    env = _decay(m, 0.004, sr)
    click = (np.sin(2 * np.pi * 1000.0 * t) * env).astype(np.float32)
    accent = (np.sin(2 * np.pi * 2000.0 * t) * env).astype(np.float32)
    period = 60.0 / bpm
    for i in range(int(seconds / period) + 1):
        start = round(i * period * sr)
        if accent_every and i % accent_every == 0:
            _place(out, accent, start, 0.6)
        else:
            _place(out, click, start, 0.4)
    return out


def drum_loop(
    bpm: float,
    *,
    sr: int = 16000,
    seconds: float = 24.0,
    style: str | None = None,
    swing: float | None = None,
    jitter_ms: float = 4.0,
    noise_db: float = -45.0,
    bass: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Synthetic drum loop at ``bpm`` (4/4, kick/snare/hat), float32 ``(n,)`` peaking near 0.8.

    ``style`` picks a 16-step pattern from :data:`PATTERNS` (default by tempo, :data:`STYLE_FOR_BPM`);
    ``swing`` delays off-beat eighths by that fraction of a sixteenth; every hit gets Gaussian timing
    jitter (``jitter_ms`` std) and a random velocity (0.7-1.0); ``bass`` adds a sine bass note
    (A1/C2/D2/E2 per bar) on each kick; white noise at ``noise_db`` dBFS is mixed in.
    """
    rng = np.random.default_rng(seed)
    default_style, default_swing = STYLE_FOR_BPM.get(round(bpm), ("rock", 0.0))
    style = style or default_style
    swing = default_swing if swing is None else swing
    kicks, snares, hats = PATTERNS[style]
    n = int(seconds * sr)
    out = np.zeros(n, np.float32)
    step_s = 60.0 / bpm / 4.0
    n_steps = int(seconds / step_s) + 1
    kick, snare, hat = _kick(sr, rng), _snare(sr, rng), _hat(sr, rng)
    bass_notes = (55.0, 65.41, 73.42, 82.41)
    for i in range(n_steps):
        pos = i % 16
        t = i * step_s
        if pos % 4 == 2:  # off-beat eighth
            t += swing * step_s
        for steps, sound, gain in ((kicks, kick, 0.9), (snares, snare, 0.7), (hats, hat, 0.5)):
            if pos in steps:
                jitter = rng.normal(0.0, jitter_ms / 1000.0)
                _place(out, sound, round((t + jitter) * sr), gain * rng.uniform(0.7, 1.0))
        if bass and pos in kicks:
            f = bass_notes[(i // 16) % 4]
            m = int(min(2 * step_s, 0.4) * sr)
            tt = np.arange(m) / sr
            note = np.sin(2 * np.pi * f * tt) * np.minimum(1.0, tt / 0.005) * _decay(m, 0.15, sr)
            _place(out, note.astype(np.float32), round(t * sr), 0.35)
    out += rng.normal(0.0, 10 ** (noise_db / 20.0), n).astype(np.float32)
    peak = float(np.max(np.abs(out)))
    return (out * (0.8 / peak)).astype(np.float32) if peak > 0 else out
