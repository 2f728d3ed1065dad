"""Decode: any audio FFmpeg reads -> mono float32 at the analysis rate, as a bounded-memory stream.

PyAV bundles FFmpeg, so wav, flac, mp3, ogg/vorbis, opus, m4a/aac, aiff, wma and the
audio track of video containers all decode the same way. Every failure is raised as
:class:`DecodeError` with a reason a user can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .types import AudioInfo

AUDIO_EXTENSIONS = frozenset(
    [
        ".wav",
        ".wave",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".m4b",
        ".aac",
        ".mp4",
        ".aif",
        ".aiff",
        ".aifc",
        ".wma",
        ".webm",
        ".mka",
        ".caf",
        ".amr",
        ".ac3",
        ".au",
        ".snd",
        ".ape",
        ".wv",
        ".spx",
        ".3gp",
        ".mkv",
        ".mov",
    ]
)

MAX_DURATION_S = 24 * 3600.0  # refuse to index a single file longer than a day


class DecodeError(Exception):
    """A file could not be decoded; ``str(err)`` is the reason shown to the user."""


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an extension we try to decode when walking folders."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _open(path: str | os.PathLike[str]):  # -> (container, stream)
    import av

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(f"not a readable audio file ({_ffmpeg_reason(exc)})") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"cannot open: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise DecodeError("no audio stream in file")
    return container, container.streams.audio[0]


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() if ":" in text and "Errno" in text else text


def _tags(container, stream) -> dict[str, str]:
    tags: dict[str, str] = {}
    for source in (container.metadata, stream.metadata):
        for key, value in (source or {}).items():
            if isinstance(value, str) and value.strip():
                tags.setdefault(key.lower(), value.strip())
    return tags


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    return 0.0


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the header: duration (seconds, from the container; may be estimated), rate, channels, tags."""
    container, stream = _open(path)
    try:
        ctx = stream.codec_context
        return AudioInfo(
            path=str(Path(path).resolve()),
            duration_s=_duration(container, stream),
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            codec=str(ctx.name or ""),
            container=str(container.format.name or ""),
            tags=_tags(container, stream),
        )
    finally:
        container.close()


def stream(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    block_s: float = 30.0,
    max_duration_s: float = MAX_DURATION_S,
) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks of ``block_s`` seconds at ``sample_rate``.

    Channels are averaged; every block but the last has exactly ``round(block_s*sample_rate)``
    samples. Memory stays bounded by one block plus one decoded frame whatever the file length.
    Raises :class:`DecodeError` when the file cannot be opened, is truncated mid-stream before
    any audio, holds no samples, or is longer than ``max_duration_s``.
    """
    import av

    block = round(block_s * sample_rate)
    container, astream = _open(path)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    pending: list[np.ndarray] = []
    n_pending = 0
    total = 0
    limit = round(max_duration_s * sample_rate)
    try:
        for chunk in _resampled(container, astream, resampler):
            total += chunk.shape[0]
            if total > limit:
                raise DecodeError(f"longer than the {max_duration_s / 3600:.0f} h limit for one file")
            pending.append(chunk)
            n_pending += chunk.shape[0]
            while n_pending >= block:
                joined = np.concatenate(pending)
                yield joined[:block]
                rest = joined[block:]
                pending, n_pending = ([rest], rest.shape[0]) if rest.size else ([], 0)
    finally:
        container.close()
    if total == 0:
        raise DecodeError("no audio samples (zero-length or undecodable stream)")
    if n_pending:
        yield np.concatenate(pending)


def _resampled(container, astream, resampler) -> Iterator[np.ndarray]:
    """Decoded, resampled mono chunks; tolerates a corrupt tail once some audio was decoded."""
    import av

    got_any = False
    try:
        for packet in container.demux(astream):
            for frame in packet.decode():
                for out in resampler.resample(frame):
                    got_any = True
                    yield _frame_to_mono(out)
        for out in resampler.resample(None):
            yield _frame_to_mono(out)
    except av.FFmpegError as exc:
        if not got_any:
            raise DecodeError(f"corrupt or unsupported audio data ({_ffmpeg_reason(exc)})") from exc
        # Truncated file: keep the audio decoded so far, like every player does.


def _frame_to_mono(frame) -> np.ndarray:
    arr = frame.to_ndarray()
    arr = arr.reshape(-1) if arr.ndim == 1 or arr.shape[0] == 1 else arr.mean(axis=0)
    arr = np.asarray(arr, dtype=np.float32)
    return np.nan_to_num(np.clip(arr, -1.0, 1.0), nan=0.0)


def load(path: str | os.PathLike[str], *, sample_rate: int = 16000, max_duration_s: float = 600.0) -> np.ndarray:
    """Whole file as one mono float32 array at ``sample_rate`` (for short clips and queries)."""
    blocks = list(stream(path, sample_rate=sample_rate, block_s=60.0, max_duration_s=max_duration_s))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of an in-memory signal (for arrays, not files)."""
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(y, target_sr // g, orig_sr // g).astype(np.float32)
