"""Decode: any audio FFmpeg reads -> mono float32 at the analysis rate, as a bounded-memory stream.

PyAV bundles FFmpeg, so wav, flac, mp3, ogg/vorbis, opus, m4a/aac, aiff, wma and the
audio track of video containers all decode the same way. Every failure is raised as
:class:`DecodeError` with a reason a user can act on.
"""

from __future__ import annotations

import math
import os
import stat
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
# Sample rates outside these bounds come from corrupt headers: below, a few bytes would expand into hours of
# audio; above, setting up the resampler alone takes seconds and gigabytes (DSD512 decodes to 2.8 MHz).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 3_072_000
MAX_CHANNELS = 64  # FFmpeg's resampler takes no more


class DecodeError(Exception):
    """A file could not be decoded; ``str(err)`` is the reason shown to the user."""


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an extension we try to decode when walking folders."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def special_file_reason(mode: int) -> str:
    """Why a directory entry that is not a regular file is not decoded."""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "special")
    return f"not a regular file ({kind})"


def _open(path: str | os.PathLike[str]):  # -> (container, stream)
    import av

    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO would block until something writes to it
        raise DecodeError(special_file_reason(st.st_mode))
    if st.st_size == 0:
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
    astream = container.streams.audio[0]
    try:
        if astream.codec_context is None:
            raise DecodeError("unsupported audio codec (no decoder for this stream)")
        _check_format(astream.codec_context.sample_rate, astream.codec_context.channels)
    except DecodeError:
        container.close()
        raise
    return container, astream


def _check_format(rate: int | None, channels: int | None) -> None:
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DecodeError(f"unsupported sample rate ({rate} Hz; corrupt header?)")
    if channels and channels > MAX_CHANNELS:
        raise DecodeError(f"too many channels ({channels}; at most {MAX_CHANNELS})")


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
    """Header duration in seconds: the stream's, else the container's; 0.0 when neither is plausible
    (a corrupt Ogg granule position gives a negative one)."""
    candidates = []
    if stream.duration is not None and stream.time_base is not None:
        candidates.append(float(stream.duration * stream.time_base))
    if container.duration is not None:
        candidates.append(float(container.duration) / 1_000_000.0)
    return next((d for d in candidates if math.isfinite(d) and d >= 0), 0.0)


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
    block = round(block_s * sample_rate)
    container, astream = _open(path)
    claimed = _duration(container, astream)
    # Refuse a long file now rather than after decoding and analysing a day of it, unless its header is
    # implausible: under 1 byte per second of audio (digital silence in FLAC takes over 100), it is corrupt.
    if claimed > max_duration_s * 1.01 + 1.0 and (container.size or 0) >= claimed:
        container.close()
        raise DecodeError(
            f"longer than the {_span(max_duration_s)} limit for one file (its header says {_span(claimed, 1)})"
        )
    pending: list[np.ndarray] = []
    n_pending = 0
    total = 0
    limit = round(max_duration_s * sample_rate)
    try:
        for chunk in _resampled(container, astream, sample_rate):
            total += chunk.shape[0]
            if total > limit:
                raise DecodeError(f"longer than the {_span(max_duration_s)} limit for one file")
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


def excerpt(path: str | os.PathLike[str], *, start_s: float, duration_s: float, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples of ``path`` from ``start_s`` for ``duration_s`` seconds at ``sample_rate``:
    fewer at the end of the file, zeros for a part before its start. Seeks instead of decoding from the
    beginning: the container's index (or Ogg pages) brings the decoder to a frame at or before
    ``start_s``, that frame's timestamp says exactly where it is, and the samples before ``start_s``
    are dropped. Raises :class:`DecodeError` (also when the stream carries no timestamps to seek by)."""
    import av

    lead = max(0, round(-start_s * sample_rate))  # zeros before the file's start
    start_s = max(0.0, start_s)
    want = max(0, round(duration_s * sample_rate) - lead)
    container, astream = _open(path)
    chunks: list[np.ndarray] = []
    got, skip, starts = 0, None, []
    # decoded samples count from the stream's start time, not 0: an MP3's encoder delay (LAME: 1,105
    # samples), skipped when decoding from the top, is part of the timestamps after a seek
    origin = float(astream.start_time * astream.time_base) if astream.start_time and astream.time_base else 0.0
    try:
        if start_s > 0 and astream.time_base:
            target = int((start_s + origin) / float(astream.time_base))
            try:
                container.seek(target, stream=astream, backward=True, any_frame=False)
            except (av.FFmpegError, ValueError) as exc:
                raise DecodeError(f"cannot seek in this file ({exc})") from exc
        for x in _resampled(container, astream, sample_rate, starts=starts):
            if skip is None:  # the first frame decoded: where the seek landed
                if starts[0] is None:
                    raise DecodeError("cannot seek in this file (no timestamps)")
                skip = round((start_s - (starts[0] - origin)) * sample_rate)
                if skip < 0:  # landed after the start: what is missing reads as silence
                    chunks.append(np.zeros(-skip, np.float32))
                    got, skip = -skip, 0
            cut = min(skip, x.shape[0])
            skip -= cut
            chunks.append(x[cut:])
            got += x.shape[0] - cut
            if got >= want:
                break
    finally:
        container.close()
    y = np.concatenate([np.zeros(lead, np.float32), *chunks]) if chunks or lead else np.zeros(0, np.float32)
    return y[: lead + want]


def _span(seconds: float, digits: int = 0) -> str:
    """'24 h', '10 min', '1 s', '25.0 h': a duration in its largest whole unit."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.{digits}f} {unit}"
    return f"{seconds:.{digits}f} s"


def _resampled(
    container, astream, sample_rate: int, *, starts: list[float | None] | None = None
) -> Iterator[np.ndarray]:
    """Decoded, resampled mono chunks; tolerates a corrupt tail once some audio was decoded.

    A packet the codec rejects is skipped, as players do (two MP3s joined into one file have a tag
    between them), and a stream whose rate, sample format or channels change part-way (MP3 frames
    can) gets a fresh resampler from that frame on, after the previous one is flushed. ``starts``: an
    empty list that gets the first decoded frame's time in seconds (None when it has no timestamp),
    before that frame's samples are yielded (where a seek landed; see :func:`excerpt`).
    """
    import av

    got_any = False
    bad_packet = None
    resampler = None
    setup = None
    try:
        for packet in container.demux(astream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad_packet = bad_packet or exc
                continue
            for frame in frames:
                if starts is not None and not starts:
                    timed = frame.pts is not None and frame.time_base is not None
                    starts.append(float(frame.pts * frame.time_base) if timed else None)
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if key != setup:
                    _check_format(frame.sample_rate, len(frame.layout.channels))
                    if resampler is not None:
                        for out in resampler.resample(None):
                            yield _frame_to_mono(out)
                    resampler = _resampler(frame, sample_rate)
                    setup = key
                for out in resampler.resample(frame):
                    got_any = True
                    yield _frame_to_mono(out)
        if resampler is not None:
            for out in resampler.resample(None):
                yield _frame_to_mono(out)
    except (av.FFmpegError, ValueError) as exc:  # PyAV raises ValueError for frames it cannot convert
        if not got_any:
            reason = _ffmpeg_reason(exc) if isinstance(exc, av.FFmpegError) else str(exc)
            raise DecodeError(f"corrupt or unsupported audio data ({reason})") from exc
        # Truncated file: keep the audio decoded so far, like every player does.
    if not got_any and bad_packet is not None:
        raise DecodeError(f"corrupt or unsupported audio data ({_ffmpeg_reason(bad_packet)})") from bad_packet


def _resampler(frame, sample_rate: int):
    """To mono float at ``sample_rate``. Channels with no speaker order (a plain WAV's) beyond stereo are
    kept, interleaved (PyAV segfaults turning planar frames of 8+ channels into arrays), and averaged by
    :func:`_frame_to_mono`: FFmpeg guesses a speaker layout for some channel counts and refuses the
    others (9, 32, ...)."""
    import av

    channels = frame.layout.channels
    if len(channels) > 2 and all(c.name == "NONE" for c in channels):
        return av.AudioResampler(format="flt", layout=frame.layout.name, rate=sample_rate)
    return av.AudioResampler(format="flt", layout="mono", rate=sample_rate)


def _frame_to_mono(frame) -> np.ndarray:
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if channels > 1 and not frame.format.is_planar:  # interleaved samples
        arr = arr.reshape(-1, channels).mean(axis=1)
    arr = arr.reshape(-1) if arr.ndim == 1 or arr.shape[0] == 1 else arr.mean(axis=0)
    arr = np.clip(np.asarray(arr, dtype=np.float32), -1.0, 1.0)
    # nan_to_num costs more than the rest of this function on a 1,024-sample frame: only when needed
    return arr if np.isfinite(arr).all() else np.nan_to_num(arr, nan=0.0)


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
