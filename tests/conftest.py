"""Shared fixtures: real data paths, synthetic audio writers, and session-scoped real models and indexes."""

from __future__ import annotations

import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOUNDSCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO = REPO / "src" / "soundscope" / "data" / "demo"


@contextmanager
def time_bound(seconds: float):
    """Raise TimeoutError in this thread if the block runs longer than ``seconds`` (SIGALRM interrupts
    even a blocking open() of a FIFO): a hang becomes a failure instead of a stuck suite."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def in_ci() -> bool:
    """Whether this run is CI (``$CI`` set and not 0/false): there, a backend that cannot start fails."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_ci(reason: str, *, module: bool = False) -> None:
    """Skip with ``reason`` on a developer machine without the extra; under CI fail instead, since
    scripts/test.sh installs every extra and a skipped backend there would hide a regression."""
    if in_ci():
        pytest.fail(f"{reason} (CI={os.environ.get('CI')}: required here, not skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def shared(*parts: str) -> Path:
    """A path under the shared real-data folder; skips the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


def write_audio(path: Path, y: np.ndarray, sr: int, *, codec: str | None = None, layout: str | None = None) -> Path:
    """Encode ``y`` ((n,) mono or (channels, n)) with PyAV into ``path``; the codec follows the extension."""
    import av

    codec = (
        codec
        or {
            ".wav": "pcm_s16le",
            ".flac": "flac",
            ".mp3": "libmp3lame",
            ".opus": "libopus",
            ".m4a": "aac",
            ".aiff": "pcm_s16be",
            ".ogg": "flac",
        }[path.suffix]
    )
    y = np.atleast_2d(np.asarray(y, np.float32))
    layout = layout or ("mono" if y.shape[0] == 1 else "stereo")
    rate = 48000 if codec == "libopus" else sr
    if rate != sr:
        from soundscope.decode import resample

        y = np.stack([resample(ch, orig_sr=sr, target_sr=rate) for ch in y])
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        step = 4096 if codec != "libopus" else 960
        for i in range(0, y.shape[1], step):
            chunk = y[:, i : i + step]
            frame = av.AudioFrame.from_ndarray(_to_format(chunk, fmt), format=fmt, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _to_format(chunk: np.ndarray, fmt: str) -> np.ndarray:
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    data = chunk if planar else chunk.T.reshape(1, -1)
    if base == "s16":
        return np.ascontiguousarray((np.clip(data, -1, 1) * 32767).astype(np.int16))
    if base == "s32":
        return np.ascontiguousarray((np.clip(data, -1, 1) * 2147483647).astype(np.int32))
    return np.ascontiguousarray(data.astype(np.float32))


def tone(freq: float, seconds: float, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def yamnet_model():
    from soundscope.analyzers import yamnet

    return yamnet.load()


@pytest.fixture(scope="session")
def demo_lib(tmp_path_factory):
    """A Library over the bundled demo corpus, indexed once per session."""
    from soundscope.api import Library

    lib = Library(tmp_path_factory.mktemp("demo-index"))
    report = lib.index([str(DEMO)])
    assert report.failed == 0, report.failures
    yield lib
    lib.close()


@pytest.fixture
def small_corpus(tmp_path):
    """A fresh folder with six real demo clips (two dogs, two rains, one speech, one music)."""
    root = tmp_path / "corpus"
    picks = [
        "sounds/dog/1-30344-A.ogg",
        "sounds/dog/1-30226-A.ogg",
        "sounds/rain/1-17367-A.ogg",
        "sounds/rain/1-21189-A.ogg",
        "speech/prompts/hello-world.wav",
        "music/sorohanro_-_solo-trumpet-06.ogg",
    ]
    for rel in picks:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / rel, dst)
    return root


def demo_copies(dest: Path, sources: list[Path]) -> Path:
    """A corpus folder ``dest`` holding copies of demo ``sources``, named <class>-<file> (unique)."""
    dest.mkdir()
    for src in sources:
        shutil.copy(src, dest / f"{src.parent.name}-{src.name}")
    return dest
