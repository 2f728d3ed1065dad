"""HTTP API and web page: search, listen, refine, over one :class:`soundscope.api.Library`.

``soundscope serve`` (or :func:`serve`) starts it; :func:`create_app` builds the ASGI app for tests
and embedding. Endpoints (all JSON unless noted; errors are ``{"error": message}``):

=======================================  ==============================================================
``GET  /``                               the web page (static files under ``soundscope/web/``)
``GET  /api/search?q=``                  text search; filters ``min_duration max_duration kind under
                                         label min_tempo max_tempo``; paging ``limit offset``; ``explain``
``GET  /api/similar/{id}``               more like an indexed item
``POST /api/similar``                    more like an uploaded clip (multipart field ``file``, or a raw body)
``GET  /api/items/{id}``                 everything stored about an item, transcript included
``GET  /api/items/{id}/audio``           the indexed file itself, with HTTP Range (206 / 416)
``GET  /api/items/{id}/waveform.svg``    a small waveform, ``start``/``end`` highlighted
``POST /api/index``                      start an indexing job on paths inside the allowed roots (token)
``GET  /api/jobs``, ``/api/jobs/{id}``   indexing progress; ``POST /api/jobs/{id}/cancel`` (token)
``GET  /api/stats``, ``/api/failures``   what the index holds; files that failed, with reasons
``GET  /api/labels``, ``/api/config``    label names for the label filter; what the page needs to know
``POST /api/feedback``, ``GET /api/recommend``, ``/api/radio/{id}``, ``/api/profile/{user}``: listeners
                                         (:mod:`soundscope.server_recommend`); ``/api/search?user=`` personalises
``POST /api/identify``, ``GET /api/duplicates``: which recording a clip is, duplicate groups
                                         (:mod:`soundscope.server_identify`)
``GET  /openapi.json``, ``/docs``        the API schema
=======================================  ==============================================================

Safety: files are only ever reached through indexed item ids (no path parameters), and only when
their real path (symlinks resolved) lies inside the root they were indexed from; index requests
must resolve inside the allowed roots; uploads are size-limited while streaming to disk, sniffed
for an audio container signature and decoded (bounded in duration) before use, then deleted;
endpoints that change the index need ``Authorization: Bearer <token>`` when a token is set, and
:func:`serve` never listens beyond loopback without one. Nothing here runs a shell.

Concurrency: the library (one SQLite connection, models) is only ever called from one worker
thread, so calls are serialized and the event loop stays free; waveform and upload decoding run on
workers of their own; indexing jobs run one at a time on their own thread with their own
:class:`Library` over the same data directory (SQLite WAL lets searches go on meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hmac
import importlib
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from . import decode
from .api import Library
from .search import Filters
from .store.lock import IndexLockedError
from .threads import one_thread

log = logging.getLogger(__name__)

T = TypeVar("T")

WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_CLIP_S = 600.0  # an uploaded query clip may be at most 10 minutes long
MAX_LIMIT = 200  # results per request
MAX_OFFSET = 1000  # deepest page
MAX_QUERY_CHARS = 500
WAVE_BINS = 256  # peaks stored per file; rendered bars are pooled from these
WAVE_RATE = 4000  # Hz: decoding rate for waveforms (only the envelope is needed)
CHUNK = 64 * 1024
MB = 1024 * 1024
JOBS_KEPT = 50

# What the browser is told a file is, by extension (the file was already decoded once at indexing).
AUDIO_MIME = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".spx": "audio/ogg",
    ".m4a": "audio/mp4",
    ".m4b": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".3gp": "audio/3gpp",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".aifc": "audio/aiff",
    ".wma": "audio/x-ms-wma",
    ".webm": "audio/webm",
    ".mka": "audio/x-matroska",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".caf": "audio/x-caf",
    ".amr": "audio/amr",
    ".ac3": "audio/ac3",
    ".au": "audio/basic",
    ".snd": "audio/basic",
    ".ape": "audio/x-ape",
    ".wv": "audio/x-wavpack",
}

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


# ------------------------------------------------------------------------------------------------
# errors

_ERROR_BODY = {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}},
                                               "required": ["error"]}}}  # fmt: skip
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {  # documented for every operation (OpenAPI)
    code: {"description": what, "content": _ERROR_BODY}
    for code, what in [(400, "bad request or parameter"), (401, "token needed"), (403, "forbidden"),
                       (404, "not found"), (409, "conflict"), (413, "too large"), (415, "unsupported media"),
                       (416, "range not satisfiable"), (503, "busy or unavailable")]
}  # fmt: skip


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


# ------------------------------------------------------------------------------------------------
# small pure helpers (unit-testable)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a ``Range`` header asks of a ``size``-byte file.

    ``None`` means send the whole file (no header, another unit, or several ranges, which RFC 9110
    lets a server ignore). Raises :class:`ApiError` 416 for a malformed or unsatisfiable byte range.
    """
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",") if s.strip()]
    if len(specs) > 1:
        return None
    bad = ApiError(
        416, f"range not satisfiable: {header!r} for a {size}-byte file", {"Content-Range": f"bytes */{size}"}
    )
    if not specs or "-" not in specs[0]:
        raise bad
    first_s, _, last_s = specs[0].partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()) or not (first_s or last_s):
        raise bad
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise bad
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size or last < first:
        raise bad
    return first, min(last, size - 1)


def sniff_audio(head: bytes) -> str | None:
    """The file suffix of a known audio container recognised from its first bytes, else ``None``.

    Only these signatures are passed to FFmpeg: its playlist and concat demuxers (which open other
    files and URLs named inside the upload) are never reached from an upload.
    """
    if len(head) < 12:
        return None
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"RF64"):
        return ".wav"
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:3] == b"ID3":  # MP3 (or AAC/FLAC) with an ID3v2 tag: FFmpeg probes past it
        return ".mp3"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return ".aiff"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return ".wma"
    if head[:4] == b"caff":
        return ".caf"
    if head[:5] == b"#!AMR":
        return ".amr"
    if head[:4] == b".snd":
        return ".au"
    if head[:4] in (b"MAC ", b"wvpk"):
        return ".ape" if head[:4] == b"MAC " else ".wv"
    if head[:2] == b"\x0b\x77":
        return ".ac3"
    if head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:  # ADTS AAC (layer bits 00)
        return ".aac"
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0:  # MPEG audio frame
        return ".mp3"
    return None


def audio_mime(path: str) -> str:
    """Content-Type of an indexed file, by extension."""
    return AUDIO_MIME.get(Path(path).suffix.lower(), "application/octet-stream")


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (both already real, absolute paths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def pool_peaks(peaks: np.ndarray, bars: int) -> np.ndarray:
    """Max-pool ``peaks`` into ``bars`` values."""
    if peaks.size == 0:
        return np.zeros(bars, np.float32)
    edges = np.linspace(0, peaks.size, bars + 1).astype(np.int64)
    edges = np.minimum(edges[:-1], peaks.size - 1)
    return np.maximum.reduceat(peaks.astype(np.float32), edges)


def waveform_svg(
    peaks: np.ndarray,
    duration_s: float,
    *,
    start: float | None = None,
    end: float | None = None,
    bars: int = 120,
    height: int = 48,
) -> str:
    """A bar waveform as a standalone SVG (light and dark colours follow the viewer's scheme);
    bars inside ``start``..``end`` seconds are drawn in the accent colour over a tinted band."""
    values = pool_peaks(peaks, bars)
    top = float(values.max()) if values.size else 0.0
    norm = np.power(values / top, 0.7) if top > 0 else values
    slot, bar_w = 4.0, 2.6
    width = bars * slot
    lo = hi = -1.0
    if start is not None and duration_s > 0:
        lo = max(0.0, min(1.0, start / duration_s)) * width
        hi = max(0.0, min(1.0, (end if end is not None else start) / duration_s)) * width
    base: list[str] = []
    mark: list[str] = []
    for i, v in enumerate(norm):
        h = max(1.5, float(v) * (height - 4))
        x = i * slot + (slot - bar_w) / 2
        y = (height - h) / 2
        center = x + bar_w / 2
        (mark if lo <= center <= hi and hi > lo else base).append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" rx="1.3"/>'
        )
    band = (
        f'<rect class="band" x="{lo:.1f}" y="0" width="{max(hi - lo, 2.0):.1f}" height="{height}" rx="4"/>'
        if lo >= 0 and hi >= lo
        else ""
    )
    style = (
        ".b{fill:#b3b9c6}.m{fill:#5b4cf5}.band{fill:#5b4cf5;fill-opacity:.12}"
        "@media (prefers-color-scheme: dark){.b{fill:#59627a}.m{fill:#9b91ff}.band{fill:#9b91ff;fill-opacity:.16}}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height}" '
        f'preserveAspectRatio="none" width="{width:.0f}" height="{height}">'
        f"<style>{style}</style>{band}"
        f'<g class="b">{"".join(base)}</g><g class="m">{"".join(mark)}</g></svg>'
    )


def compute_peaks(path: str, *, bins: int = WAVE_BINS) -> np.ndarray:
    """Peak absolute amplitude of ``path`` in ``bins`` equal stretches (streamed, bounded memory)."""
    hop = WAVE_RATE // 100  # 10 ms
    parts: list[np.ndarray] = []
    for block in decode.stream(path, sample_rate=WAVE_RATE, block_s=60.0):
        n = block.shape[0] // hop * hop
        if n:
            parts.append(np.abs(block[:n]).reshape(-1, hop).max(axis=1))
        if block.shape[0] > n:
            parts.append(np.abs(block[n:]).max(keepdims=True))
    fine = np.concatenate(parts) if parts else np.zeros(1, np.float32)
    return pool_peaks(fine, bins).astype(np.float16)


# ------------------------------------------------------------------------------------------------
# workers


class Worker:
    """One thread that runs blocking calls in order: awaiting :meth:`run` never blocks the loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    def reopen(self) -> None:
        """A fresh thread after :meth:`close` (the app started again: a second lifespan, as test
        clients and schemathesis' ASGI transport run; calls then failed with "cannot schedule")."""
        if self._closed:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
            self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pool.submit(fn, *args)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


class JobCancelled(Exception):
    """Raised from the progress callback to stop an indexing job after the current file."""


@dataclass
class Job:
    """One indexing run started over HTTP."""

    id: str
    paths: list[str]
    rehash: bool = False
    state: str = "queued"  # queued | scanning | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    failed: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    current: str = ""
    slowest: str = ""  # the stage taking the time, e.g. "speech recognition 92 %, 0.61 s/file"
    error: str = ""
    report: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        speed = self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return {
            "id": self.id,
            "paths": self.paths,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "audio_seconds": round(self.audio_s, 2),
            "elapsed_s": round(self.elapsed_s, 2),
            "speed_x_realtime": round(speed, 2),
            "current": self.current,
            "slowest": self.slowest,
            "error": self.error,
            "report": self.report,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class JobRunner:
    """Runs indexing jobs one at a time on a daemon thread with a library of its own (same data
    directory, own SQLite connection), so searches go on while it writes."""

    def __init__(self, library: Library, *, jobs: int = 1) -> None:
        self.library = library
        self.jobs = jobs
        self._queue: list[Job] = []
        self._all: OrderedDict[str, Job] = OrderedDict()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._indexer: Library | None = None
        self._ids = itertools.count(1)
        self._closed = False

    def submit(self, paths: list[str], rehash: bool = False) -> Job:
        with self._cv:
            job = Job(id=f"{next(self._ids)}-{secrets.token_hex(3)}", paths=paths, rehash=rehash)
            self._all[job.id] = job
            while len(self._all) > JOBS_KEPT:
                oldest = next(iter(self._all.values()))
                if oldest.state in ("queued", "scanning", "running"):
                    break
                self._all.popitem(last=False)
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="soundscope-index", daemon=True)
                self._thread.start()
            self._cv.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        return self._all.get(job_id)

    def recent(self) -> list[Job]:
        return list(reversed(self._all.values()))

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._all.values():
                job.cancel.set()
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    break
                job = self._queue.pop(0)
            self._run(job)
        if self._indexer is not None:
            self._indexer.close()
            self._indexer = None

    def _lib(self) -> Library:
        if self._indexer is None:
            lib = self.library
            # Models given explicitly to the serving library are reused; otherwise this one loads its own.
            self._indexer = Library(
                lib.data_dir,
                analyzers=lib._analyzers,
                music_analyzers=lib._music_analyzers,
                asr_model=lib.asr_model or "none",
            )
        return self._indexer

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state, job.finished_at = "cancelled", time.time()
            return
        job.state, job.started_at = "scanning", time.time()

        def progress(p: Any) -> None:  # ingest.Progress
            job.state = "running"
            job.done, job.total, job.failed = p.done, p.total, p.failed
            job.audio_s, job.elapsed_s, job.current = p.audio_s, p.elapsed_s, p.path
            job.slowest = getattr(p, "slowest", "")
            if job.cancel.is_set():
                raise JobCancelled

        try:
            report = self._lib().index(job.paths, rehash=job.rehash, progress=progress, jobs=self.jobs)
            job.report = report.to_dict()
            job.failed = report.failed
            job.elapsed_s = report.elapsed_s
            job.audio_s = report.audio_seconds
            job.state = "done"
        except JobCancelled:
            job.state = "cancelled"
        except IndexLockedError as exc:  # the CLI (or another server) is indexing this data directory
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a job failing must not kill the runner
            log.exception("indexing job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.current = ""
            job.finished_at = time.time()
            if job.started_at and job.state != "done":
                job.elapsed_s = job.finished_at - job.started_at


class Waveforms:
    """Per-file peak envelopes keyed by content hash: in memory (LRU) and on disk under the data dir."""

    def __init__(self, cache_dir: Path | None, *, keep: int = 4096) -> None:
        self.cache_dir = cache_dir
        self.keep = keep
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str) -> np.ndarray | None:
        with self._lock:
            got = self._mem.get(key)
            if got is not None:
                self._mem.move_to_end(key)
                return got
        if self.cache_dir is not None:
            f = self.cache_dir / f"{key}.npy"
            with contextlib.suppress(OSError, ValueError):
                got = np.load(f, allow_pickle=False)
                self._remember(key, got)
                return got
        return None

    def get(self, key: str, path: str) -> np.ndarray:
        """Peaks of ``path`` (whose content hash is ``key``), computed once. Raises DecodeError."""
        got = self.cached(key)
        if got is not None:
            return got
        peaks = compute_peaks(path)
        self._remember(key, peaks)
        if self.cache_dir is not None:
            with contextlib.suppress(OSError):
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_dir / f".{key}.{os.getpid()}.{threading.get_ident()}.npy"
                np.save(tmp, peaks, allow_pickle=False)
                os.replace(tmp, self.cache_dir / f"{key}.npy")
        return peaks

    def _remember(self, key: str, peaks: np.ndarray) -> None:
        with self._lock:
            self._mem[key] = peaks
            self._mem.move_to_end(key)
            while len(self._mem) > self.keep:
                self._mem.popitem(last=False)


# ------------------------------------------------------------------------------------------------
# uploads


async def receive_upload(request: Request, dest_dir: str, limit_bytes: int) -> tuple[str, str]:
    """Stream the request's clip to a file in ``dest_dir``: the ``file`` part (or the first part with
    a file name) of a multipart body, or the raw body otherwise. Stops reading past ``limit_bytes``
    (413). Returns (path on disk, client's file name)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_bytes + 64 * 1024:
        raise ApiError(413, f"upload too large: {int(length) / MB:.1f} MB, the limit is {limit_bytes / MB:g} MB")
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    out_path = os.path.join(dest_dir, "upload.bin")
    out = open(out_path, "wb")  # noqa: SIM115 - closed below, written from parser callbacks
    written = 0
    name = "clip"
    try:
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise ApiError(400, "multipart body without a boundary")
            state: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "target": False, "found": False}

            def on_part_begin() -> None:
                state["headers"] = {}
                state["target"] = False

            def on_header_field(data: bytes, start: int, end: int) -> None:
                state["field"] += data[start:end]

            def on_header_value(data: bytes, start: int, end: int) -> None:
                state["value"] += data[start:end]

            def on_header_end() -> None:
                state["headers"][state["field"].lower()] = state["value"]
                state["field"], state["value"] = b"", b""

            def on_headers_finished() -> None:
                nonlocal name
                _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
                is_file = b"filename" in disp or disp.get(b"name") == b"file"
                if is_file and not state["found"]:
                    state["target"] = state["found"] = True
                    fname = disp.get(b"filename", b"").decode("utf-8", "replace")
                    name = os.path.basename(fname.replace("\\", "/"))[:200] or name

            def on_part_data(data: bytes, start: int, end: int) -> None:
                nonlocal written
                if state["target"]:
                    written += end - start
                    if written > limit_bytes:
                        raise ApiError(413, f"upload too large: the limit is {limit_bytes / MB:g} MB")
                    out.write(data[start:end])

            parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": on_part_begin,
                    "on_header_field": on_header_field,
                    "on_header_value": on_header_value,
                    "on_header_end": on_header_end,
                    "on_headers_finished": on_headers_finished,
                    "on_part_data": on_part_data,
                },
            )
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit_bytes + 64 * 1024:
                    raise ApiError(413, f"upload too large: the limit is {limit_bytes / MB:g} MB")
                try:
                    parser.write(chunk)
                except ApiError:
                    raise
                except Exception as exc:
                    raise ApiError(400, f"malformed multipart body: {exc}") from exc
            parser.finalize()
            if not state["found"]:
                raise ApiError(400, "no file in the upload: send the clip as the multipart field 'file'")
        else:
            async for chunk in request.stream():
                written += len(chunk)
                if written > limit_bytes:
                    raise ApiError(413, f"upload too large: the limit is {limit_bytes / MB:g} MB")
                out.write(chunk)
            name = request.query_params.get("name", name)[:200]
    finally:
        out.close()
    if written == 0:
        raise ApiError(400, "empty upload: no audio data received")
    return out_path, name


def check_clip(path: str) -> tuple[str, float]:
    """Sniff and fully decode an uploaded clip (at most :data:`MAX_CLIP_S`). Returns the path renamed
    to its container's suffix, and its duration. Raises ApiError 415 or 413."""
    with open(path, "rb") as f:
        head = f.read(64)
    suffix = sniff_audio(head)
    if suffix is None:
        raise ApiError(
            415,
            "unsupported media: the upload is not an audio file soundscope can read "
            "(WAV, FLAC, MP3, Ogg/Opus, M4A/AAC, AIFF, WebM/Matroska, WMA, CAF, AMR, ...)",
        )
    named = os.path.splitext(path)[0] + suffix
    os.replace(path, named)
    rate = 8000
    limit = int(MAX_CLIP_S * rate)
    total = 0
    try:
        for block in decode.stream(named, sample_rate=rate, block_s=30.0, max_duration_s=MAX_CLIP_S * 2):
            total += block.shape[0]
            if total > limit:
                raise ApiError(413, f"clip too long: query clips may be at most {MAX_CLIP_S / 60:.0f} minutes")
    except decode.DecodeError as exc:
        raise ApiError(415, f"unsupported media: the upload could not be decoded as audio ({exc})") from exc
    return named, total / rate


# ------------------------------------------------------------------------------------------------
# the app


@dataclass
class _State:
    library: Library
    token: str | None
    allow_roots: list[str]
    max_upload_bytes: int
    lib_worker: Worker
    wave_worker: Worker
    upload_worker: Worker
    jobs: JobRunner
    waveforms: Waveforms


def _optional_explain(q: str) -> tuple[Any, list[str] | None]:
    """``soundscope.query.parse(q).explain()`` (and its human-readable ``describe()`` lines) when that
    module exists; else (None, None)."""
    try:
        mod = importlib.import_module("soundscope.query")
        parsed = mod.parse(q)
        out = parsed.explain()
        json.dumps(out)
    except ImportError:
        return None, None
    except Exception as exc:  # an optional module must never break search
        log.debug("query explain failed: %s", exc)
        return None, None
    lines = None
    with contextlib.suppress(Exception):
        lines = [str(x) for x in parsed.describe()] if hasattr(parsed, "describe") else None
    return out, lines


# Query parameter types shared by the endpoints.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="results per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="results to skip (paging)")]
Seconds = Annotated[float | None, Query(ge=0, le=1e9, description="seconds")]  # le: no overflow to inf
Kind = Annotated[Literal["music", "speech", "sound"] | None, Query(description="music, speech or sound")]
Bpm = Annotated[float | None, Query(ge=0, le=400, description="beats per minute (music only)")]
Under = Annotated[str | None, Query(description="only files under this folder")]
Label = Annotated[str | None, Query(description="only items carrying this model label, e.g. Dog")]


def create_app(
    library: Library,
    *,
    token: str | None = None,
    allow_roots: Sequence[str | os.PathLike[str]] | None = None,
    max_upload_mb: int = 20,
    allowed_hosts: Sequence[str] | None = None,
    index_jobs: int = 1,
    warm: bool = True,
    read_token: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``library``.

    ``token``: required as ``Authorization: Bearer <token>`` by endpoints that change the index.
    ``allow_roots``: folders (or files) inside which ``POST /api/index`` may index; none: indexing
    over HTTP is off. ``allowed_hosts``: accepted ``Host`` header names (DNS-rebinding guard), any if
    None. ``index_jobs``: analysis worker processes per indexing job. ``warm``: load the text encoder
    and item matrices in the background at startup so the first search is fast. ``read_token``: when
    set, every ``/api/`` call but ``/api/config`` needs it (or ``token``), as ``Authorization: Bearer``
    or the ``soundscope_token`` cookie the page sets from the address the server prints (``/#token=``).
    """
    roots = [os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(r)))) for r in (allow_roots or [])]
    cache_dir = library.data_dir / "cache" / "waveforms"
    st = _State(
        library=library,
        token=token or None,
        allow_roots=roots,
        max_upload_bytes=int(max_upload_mb * MB),
        lib_worker=Worker("soundscope-lib"),
        wave_worker=Worker("soundscope-wave"),
        upload_worker=Worker("soundscope-upload"),
        jobs=JobRunner(library, jobs=index_jobs),
        waveforms=Waveforms(cache_dir),
    )
    hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for w in (st.lib_worker, st.wave_worker, st.upload_worker):
            w.reopen()
        if warm:
            st.lib_worker.submit(_warm, library)
        try:
            yield
        finally:
            st.jobs.close()
            st.lib_worker.close()
            st.wave_worker.close()
            st.upload_worker.close()

    app = FastAPI(
        title="soundscope",
        version=_version(),
        summary="Search audio by what it sounds like, means and says.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.soundscope = st

    # -- errors and headers -------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return _error(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            if tuple(e.get("loc", ())) == ("query", "q") and e.get("type") in ("missing", "string_pattern_mismatch"):
                return _error(400, "missing query: add ?q=..., e.g. ?q=dog+barking")
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(400, "bad parameter " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _internal_error(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if hosts is not None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if host not in hosts:
                return _error(400, f"unexpected Host header {host!r}: open the page at the address the server printed")
        guarded = read_token and request.url.path.startswith("/api/") and request.url.path != "/api/config"
        if guarded and not _read_allowed(request, [read_token, st.token]):
            return _error(401, "this server needs its read token: open the address it printed (…/#token=…) "
                          "or send Authorization: Bearer <token>", _BEARER)  # fmt: skip
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def require_token(request: Request) -> None:
        if st.token is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "this endpoint needs the server's token: Authorization: Bearer <token>", _BEARER)
        if not hmac.compare_digest(given.strip().encode(), st.token.encode()):
            raise ApiError(403, "wrong token", _BEARER)

    from .server_recommend import add_routes  # listeners: feedback, recommend, radio, profile

    add_routes(app, st, library, require_token)
    from .server_identify import add_routes as add_identify_routes  # fingerprints: identify, duplicates

    add_identify_routes(app, st, library)
    from .server_llm import add_routes as add_llm_routes  # language model: ask, understand

    add_llm_routes(app, st, library)

    # -- page ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        if not (WEB_DIR / "index.html").is_file():
            raise ApiError(404, f"the web page is not installed ({WEB_DIR} is missing); the API works")
        return FileResponse(
            WEB_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", _Static(directory=str(WEB_DIR), check_dir=False), name="static")

    # -- search -------------------------------------------------------------------------------
    @app.get("/api/search", tags=["search"])
    async def search(
        q: Annotated[
            str,
            Query(
                description="what to look for, in Chinese or English",
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                pattern=r"\S",
            ),
        ],
        limit: Limit = 20,
        offset: Offset = 0,
        min_duration: Seconds = None,
        max_duration: Seconds = None,
        kind: Kind = None,
        under: Under = None,
        label: Label = None,
        min_tempo: Bpm = None,
        max_tempo: Bpm = None,
        explain: Annotated[bool, Query(description="include how the query was understood")] = False,
        llm: Annotated[bool, Query(description="read the query with the language model")] = False,
        user: Annotated[str | None, Query(max_length=100, description="personalise for this listener")] = None,
    ) -> dict[str, Any]:
        """Text search: the same ranked, explained results as ``soundscope search --json``."""
        q = q.strip()
        if not q:
            raise ApiError(400, "missing query: add ?q=..., e.g. ?q=dog+barking")
        if len(q) > MAX_QUERY_CHARS:
            raise ApiError(400, f"query too long: at most {MAX_QUERY_CHARS} characters")
        filters = _filters(min_duration, max_duration, kind, under, label)
        tempo = (min_tempo, max_tempo) if min_tempo is not None or max_tempo is not None else None
        t0 = time.perf_counter()
        from .server_llm import explained, page_fn

        out = await st.lib_worker.run(page_fn(library, llm, _search_page), library, q, filters, limit, offset, tempo,
                                      user or None)  # fmt: skip
        out = {"query": q, **out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}
        if explain:
            parsed, lines = (
                await st.lib_worker.run(explained, library, q, llm)
                if library.rewriter is not None
                else await asyncio.to_thread(_optional_explain, q)
            )
            if parsed is not None:
                out["explain"] = parsed
            if lines:
                out["understood"] = lines
        return out

    @app.get("/api/similar/{item_id}", tags=["search"])
    async def similar_item(
        item_id: int,
        limit: Limit = 20,
        offset: Offset = 0,
        min_duration: Seconds = None,
        max_duration: Seconds = None,
        kind: Kind = None,
        under: Under = None,
        label: Label = None,
    ) -> dict[str, Any]:
        """More like an indexed item (itself left out)."""
        filters = _filters(min_duration, max_duration, kind, under, label)
        t0 = time.perf_counter()
        out = await st.lib_worker.run(_similar_page, library, item_id, filters, limit, offset)
        return {**out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    @app.post(
        "/api/similar",
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def similar_upload(
        request: Request,
        limit: Limit = 20,
        offset: Offset = 0,
        min_duration: Seconds = None,
        max_duration: Seconds = None,
        kind: Kind = None,
        under: Under = None,
        label: Label = None,
    ) -> dict[str, Any]:
        """More like an uploaded clip (at most ``max_upload_mb`` MB and 10 minutes; any format FFmpeg
        decodes, recognised by content, not by name). The clip is deleted afterwards."""
        filters = _filters(min_duration, max_duration, kind, under, label)
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="soundscope-upload-")
        try:
            raw, name = await receive_upload(request, tmp, st.max_upload_bytes)
            path, seconds = await st.upload_worker.run(check_clip, raw)
            out = await st.lib_worker.run(_similar_page, library, path, filters, limit, offset)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["like"] = {"upload": name, "duration_s": round(seconds, 3)}
        return {**out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    # -- items --------------------------------------------------------------------------------
    @app.get("/api/items/{item_id}", tags=["items"])
    async def item(item_id: int) -> dict[str, Any]:
        """Everything stored about one item (as ``soundscope show --json``), transcript included."""
        info = await st.lib_worker.run(_known, library.show, item_id)
        info.setdefault("transcript", await st.lib_worker.run(_known, library.transcript, item_id))
        info["name"] = os.path.basename(info["path"])
        info["mime"] = audio_mime(info["path"])
        info["audio_url"] = f"/api/items/{item_id}/audio"
        info["waveform_url"] = f"/api/items/{item_id}/waveform.svg"
        return info

    @app.head("/api/items/{item_id}/audio", include_in_schema=False)
    @app.get("/api/items/{item_id}/audio", tags=["items"], response_class=Response)
    async def audio(item_id: int, request: Request) -> Response:
        """The indexed file, streamed, with ``Range`` support (206, 416)."""
        path = await st.lib_worker.run(_servable_path, library, item_id)
        size, mtime = await asyncio.to_thread(_stat, path)
        etag = f'"{item_id}-{size}-{int(mtime)}"'
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Cache-Control": "private, max-age=0, must-revalidate",
            "Content-Disposition": "inline",
        }
        if_range = request.headers.get("if-range")
        span = parse_range(request.headers.get("range"), size) if not if_range or if_range == etag else None
        media = audio_mime(path)
        if span is None:
            first, last, status = 0, size - 1, 200
        else:
            first, last, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(max(0, last - first + 1))
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(_read_span(path, first, last), status_code=status, headers=headers, media_type=media)

    @app.get("/api/items/{item_id}/waveform.svg", tags=["items"], response_class=Response)
    async def waveform(
        item_id: int,
        start: Annotated[float | None, Query(ge=0, description="highlight from (seconds)")] = None,
        end: Annotated[float | None, Query(ge=0, description="highlight to (seconds)")] = None,
        bars: Annotated[int, Query(ge=16, le=WAVE_BINS)] = 120,
    ) -> Response:
        """A small SVG waveform of the file, the ``start``..``end`` segment highlighted."""
        if start is not None and end is not None and end < start:
            raise ApiError(400, "bad parameter end: must not be before start")
        path = await st.lib_worker.run(_servable_path, library, item_id)
        row = await st.lib_worker.run(library.store.catalog.item, item_id)
        if row is None:
            raise ApiError(404, f"no item with id {item_id}")
        key = row.content_hash if re.fullmatch(r"[0-9a-fA-F]{8,128}", row.content_hash or "") else f"id{item_id}"
        peaks = st.waveforms.cached(key)
        if peaks is None:
            try:
                peaks = await st.wave_worker.run(st.waveforms.get, key, path)
            except decode.DecodeError as exc:
                raise ApiError(415, f"cannot draw this file: {exc}") from exc
        svg = waveform_svg(peaks, row.duration_s, start=start, end=end, bars=bars)
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={"Cache-Control": "private, max-age=86400", "Content-Security-Policy": SVG_CSP},
        )

    # -- index --------------------------------------------------------------------------------
    @app.post(
        "/api/index",
        tags=["index"],
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "paths": {"type": "array", "items": {"type": "string"}},
                                "rehash": {"type": "boolean", "default": False},
                            },
                            "required": ["paths"],
                        }
                    }
                },
            }
        },
    )
    async def start_index(request: Request) -> JSONResponse:
        """Start indexing ``paths`` (absolute, inside the server's allowed roots) in the background;
        poll ``GET /api/jobs/{id}``. Needs the token when the server has one."""
        require_token(request)
        if not st.allow_roots:
            raise ApiError(
                403, "indexing over HTTP is off: start the server with --allow-root DIR for the folders it may index"
            )
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, 'send JSON: Content-Type: application/json with {"paths": ["/abs/folder"]}')
        body = await request.body()
        if len(body) > 64 * 1024:
            raise ApiError(413, "request body too large")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from exc
        paths = data.get("paths") if isinstance(data, dict) else None
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths) or len(paths) > 100:
            raise ApiError(400, 'body must be {"paths": ["/absolute/folder", ...]} with 1 to 100 paths')
        rehash = bool(data.get("rehash", False))
        checked = [_allowed_path(p, st.allow_roots) for p in paths]
        job = st.jobs.submit(checked, rehash=rehash)
        return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs", tags=["index"])
    async def list_jobs() -> dict[str, Any]:
        """Recent indexing jobs, newest first."""
        return {"jobs": [j.to_dict() for j in st.jobs.recent()]}

    @app.get("/api/jobs/{job_id}", tags=["index"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """Progress of one indexing job: files done/total, failures, speed, state."""
        job = st.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job with id {job_id!r}")
        return job.to_dict()

    @app.post("/api/jobs/{job_id}/cancel", tags=["index"])
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        """Stop a job after the file it is on (finished files stay indexed). Needs the token."""
        require_token(request)
        job = st.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job with id {job_id!r}")
        job.cancel.set()
        return job.to_dict()

    @app.get("/api/stats", tags=["index"])
    async def stats() -> dict[str, Any]:
        """What the index holds (as ``soundscope stats --json``)."""
        return await st.lib_worker.run(library.stats)

    @app.get("/api/failures", tags=["index"])
    async def failures(limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0) -> dict[str, Any]:
        """Files that could not be indexed, with reasons."""
        rows = await st.lib_worker.run(library.failures)
        page = rows[offset : offset + limit]
        return {"total": len(rows), "failures": [{"path": p, "reason": r} for p, r in page]}

    @app.get("/api/labels", tags=["search"])
    async def labels() -> dict[str, Any]:
        """Label names the ``label`` filter accepts."""
        models = await st.lib_worker.run(library.store.catalog.models)
        names = sorted({n for m in models.values() for n in m["labels"]}, key=str.lower)
        return {"labels": names}

    @app.get("/api/config", tags=["index"])
    async def config() -> dict[str, Any]:
        """What the page needs to know about this server."""
        return {
            "version": _version(),
            "token_required": st.token is not None,
            "read_token_required": bool(read_token),
            "indexing": bool(st.allow_roots),
            "allow_roots": st.allow_roots,
            "max_upload_mb": max_upload_mb,
            "max_clip_s": MAX_CLIP_S,
            "max_limit": MAX_LIMIT,
        }

    return app


_BEARER = {"WWW-Authenticate": 'Bearer realm="soundscope"'}


def _read_allowed(request: Request, tokens: list[str | None]) -> bool:
    """Whether the request carries one of ``tokens`` (bearer header or the page's cookie)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    cookie = urllib.parse.unquote(request.cookies.get("soundscope_token", ""))  # the page encodes it
    offered = [given.strip() if scheme.lower() == "bearer" else "", cookie]
    return any(
        t and o and hmac.compare_digest(o.encode(), t.encode()) for t in tokens for o in offered
    )


class _Static(StaticFiles):
    """Static page assets: revalidated on each load (no stale page after an upgrade), locked down."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = PAGE_CSP
        return response


def _version() -> str:
    try:
        from . import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "0"


def _warm(library: Library) -> None:
    with contextlib.suppress(Exception):
        library.searcher.matrices()
        library.encoder.encode(["warm up"])


def _filters(
    min_duration: float | None, max_duration: float | None, kind: str | None, under: str | None, label: str | None
) -> Filters | None:
    if min_duration is not None and max_duration is not None and max_duration < min_duration:
        raise ApiError(400, "bad parameter max_duration: must not be below min_duration")
    f = Filters(
        min_duration=min_duration, max_duration=max_duration, kind=kind, path_prefix=under or None, label=label or None
    )
    return f if f.to_dict() else None


def _item_meta(library: Library, ids: list[int]) -> dict[str, dict[str, Any]]:
    """Per-result extras the page shows beside the result dicts: kind, measured tempo, file name."""
    out: dict[str, dict[str, Any]] = {}
    for row in library.store.catalog.items(ids):
        music = row.features.get("music") or {}
        out[str(row.id)] = {
            "kind": row.kind,
            "name": os.path.basename(row.path),
            "tempo_bpm": round(float(music["tempo_bpm"]), 1) if music.get("tempo_bpm") else None,
            "tags": {k: v for k, v in row.tags.items() if k in ("title", "artist", "album", "genre")},
        }
    return out


def _page(library: Library, results: list[Any], offset: int, limit: int) -> dict[str, Any]:
    shown = results[offset : offset + limit]
    return {
        "results": [r.to_dict() for r in shown],
        "items": _item_meta(library, [r.item_id for r in shown]),
        "offset": offset,
        "limit": limit,
        "has_more": len(results) > offset + limit,
    }


def _search_page(
    library: Library,
    q: str,
    filters: Filters | None,
    limit: int,
    offset: int,
    tempo: tuple[float | None, float | None] | None,
    user: str | None = None,
) -> dict[str, Any]:
    """Runs on the library worker: one page of text results (+1 to know whether more exist);
    ``user``: personalised for this listener."""
    if tempo is not None:  # a column filter like the others (only music has a measured tempo)
        filters = Filters(**(filters.__dict__ if filters else {}))
        filters.min_tempo, filters.max_tempo = tempo
    try:
        results = library.search(q, limit=offset + limit + 1, filters=filters, user=user)
    except ValueError as exc:  # e.g. an unknown label
        raise ApiError(400, str(exc)) from exc
    out = _page(library, results, offset, limit)
    out["filters"] = filters.to_dict() if filters else {}
    return out


def _similar_page(
    library: Library, target: int | str, filters: Filters | None, limit: int, offset: int
) -> dict[str, Any]:
    """Runs on the library worker: one page of results like an item id or a (checked) clip path."""
    try:
        results = library.similar(target, limit=offset + limit + 1, filters=filters)
    except KeyError as exc:
        raise ApiError(404, exc.args[0] if exc.args else f"no item with id {target}") from exc
    except decode.DecodeError as exc:
        raise ApiError(415, f"unsupported media: {exc}") from exc
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    out = _page(library, results, offset, limit)
    out["filters"] = filters.to_dict() if filters else {}
    if isinstance(target, int):
        row = library.store.catalog.item(target)
        out["like"] = {"id": target, "path": row.path if row else "", "name": os.path.basename(row.path) if row else ""}
    return out


def _known(fn: Callable[[int], T], item_id: int) -> T:
    """``fn(item_id)`` with the library's KeyError for an unknown id answered as 404."""
    try:
        return fn(item_id)
    except KeyError as exc:
        raise ApiError(404, exc.args[0] if exc.args else f"no item with id {item_id}") from exc


def _servable_path(library: Library, item_id: int) -> str:
    """The real path of an indexed item's file, if it may be served: it must still exist as a regular
    file and, symlinks resolved, lie inside the root it was indexed from."""
    row = library.store.catalog.item(item_id)
    if row is None:
        raise ApiError(404, f"no item with id {item_id}")
    real = os.path.realpath(row.path)
    root = os.path.realpath(row.root or row.path)
    if not inside(real, root):
        raise ApiError(403, "this item's file resolves outside the folder it was indexed from: not served")
    if not os.path.isfile(real):
        raise ApiError(404, f"item {item_id}'s file is gone from disk: re-index its folder")
    return real


def _stat(path: str) -> tuple[int, float]:
    s = os.stat(path)
    return s.st_size, s.st_mtime


async def _read_span(path: str, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes ``first``..``last`` of ``path`` in chunks, read on a thread."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(f.seek, first)
        left = last - first + 1
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


def _allowed_path(raw: str, roots: list[str]) -> str:
    """``raw`` as an absolute path to index, if it exists and (symlinks resolved) lies inside one of
    ``roots``; ApiError 400 otherwise. The normalised absolute path is returned, not the resolved
    one, so items keep the paths they were indexed under."""
    if not raw or "\x00" in raw or len(raw) > 4096:
        raise ApiError(400, "bad path")
    expanded = os.path.expanduser(raw)
    if not os.path.isabs(expanded):
        raise ApiError(400, f"path must be absolute: {raw!r}")
    normal = os.path.normpath(expanded)
    real = os.path.realpath(normal)
    if not any(inside(real, r) for r in roots):
        raise ApiError(403, f"path {raw!r} is outside the folders this server may index ({', '.join(roots) or 'none'})")
    if not os.path.exists(real):
        raise ApiError(400, f"no such file or folder: {raw!r}")
    return normal


# ------------------------------------------------------------------------------------------------
# running it


def serve(
    data_dir: str | os.PathLike[str] | Library | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    *,
    allow_roots: Sequence[str | os.PathLike[str]] | None = None,
    max_upload_mb: int = 20,
    asr_model: str | None = None,
    index_jobs: int = 1,
    log_level: str = "warning",
    workers: int = 1,
    read_token: str | None = None,
) -> None:
    """Serve the web page and API on ``host``:``port`` until interrupted.

    ``data_dir``: a data directory (default: the user data dir) or an open :class:`Library` (not
    closed here). Binding a non-loopback ``host`` without ``token`` generates one and prints it.
    ``allow_roots``: folders ``POST /api/index`` may index (default: the roots already indexed).
    ``workers`` > 1: that many server processes (uvicorn workers, each with its own library and
    SQLite connection: WAL readers) answer reads in parallel; indexing from the page is then off (each
    process would keep its own job list), ``soundscope index`` meanwhile is seen by all of them.
    ``read_token``: reads need a token too (for a server reachable beyond loopback).
    """
    import uvicorn

    own = not isinstance(data_dir, Library)
    library = Library(data_dir, asr_model=asr_model) if own else data_dir
    assert isinstance(library, Library)
    try:
        loopback = is_loopback(host)
        if not loopback and not token:
            token = secrets.token_urlsafe(24)
            print(
                f"soundscope: {host} is reachable from other machines, so changing the index needs a token:\n"
                f"  {token}\n(pass --token to choose it; anyone who can reach the port can search and listen)",
                file=sys.stderr,
            )
        roots = list(allow_roots) if allow_roots else library.stats().get("roots", [])
        hosts = ["127.0.0.1", "localhost", "::1"] if loopback else None
        if loopback and host not in hosts:
            hosts = [*hosts, host]
        app = create_app(
            library,
            token=token,
            allow_roots=roots,
            max_upload_mb=max_upload_mb,
            allowed_hosts=hosts,
            index_jobs=index_jobs,
            read_token=read_token,
        )
        shown = f"[{host}]" if ":" in host else host
        print(f"soundscope: serving {library.data_dir} at http://{shown}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
        if read_token:
            print(f"soundscope: reading needs the token: open http://{shown}:{port}/#token={read_token}",
                  file=sys.stderr)  # fmt: skip
        if workers > 1:
            if roots:
                print(f"soundscope: {workers} worker processes: indexing from the page is off (use soundscope "
                      "index; every worker sees what it adds)", file=sys.stderr)  # fmt: skip
            os.environ[WORKER_CONFIG] = json.dumps({
                "data_dir": str(library.data_dir), "asr_model": library.asr_model, "token": token,
                "read_token": read_token, "max_upload_mb": max_upload_mb, "allowed_hosts": hosts,
                "vector_store": library.store.vector_store,
            })  # fmt: skip
            # a worker busy with a burst of queries on a loaded machine must not be taken for hung (the
            # supervisor kills a worker that misses its 5 s health check; the load test saw resets)
            uvicorn.run("soundscope.server:worker_app", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, access_log=False, timeout_graceful_shutdown=3,
                        timeout_worker_healthcheck=120)  # fmt: skip
            return
        if roots:
            print(f"soundscope: the page may index inside: {', '.join(map(str, roots))}", file=sys.stderr)
        else:
            print("soundscope: indexing from the page is off (pass --allow-root DIR to allow it)", file=sys.stderr)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=3)
    finally:
        if own:
            library.close()


WORKER_CONFIG = "SOUNDSCOPE_SERVE_WORKER"  # the settings serve(workers=N) hands its worker processes


def worker_app() -> FastAPI:
    """The app of one ``serve(workers=N)`` worker process: its own library over the same data
    directory (read-only use: indexing over HTTP is off), configured from :data:`WORKER_CONFIG`."""
    one_thread()
    cfg = json.loads(os.environ[WORKER_CONFIG])
    library = Library(cfg["data_dir"], asr_model=cfg["asr_model"] or "none", create=False,
                      vector_store=cfg.get("vector_store"))  # fmt: skip
    return create_app(library, token=cfg["token"], read_token=cfg["read_token"], allow_roots=[],
                      max_upload_mb=cfg["max_upload_mb"], allowed_hosts=cfg["allowed_hosts"])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m soundscope.server``: the same as ``soundscope serve``."""
    p = argparse.ArgumentParser(prog="soundscope serve", description="web page and HTTP API")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("SOUNDSCOPE_TOKEN"))
    p.add_argument("--allow-root", action="append", default=None, metavar="DIR")
    p.add_argument("--max-upload-mb", type=int, default=20)
    p.add_argument("--asr-model", default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--read-token", default=os.environ.get("SOUNDSCOPE_READ_TOKEN"))
    a = p.parse_args(argv)
    one_thread()
    serve(
        a.data_dir,
        a.host,
        a.port,
        a.token,
        allow_roots=a.allow_root,
        max_upload_mb=a.max_upload_mb,
        asr_model=a.asr_model,
        workers=a.workers,
        read_token=a.read_token,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["ApiError", "create_app", "main", "parse_range", "serve", "sniff_audio", "waveform_svg"]
