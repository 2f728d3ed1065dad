"""Ingest: walk folders, decide what changed by content hash, analyse, and write each file atomically.

Per-file failures never stop a run: each is recorded with its reason and reported at the end.
Each file is committed in its own transaction, so a run killed at any moment leaves a
consistent catalog, and the next run resumes where it stopped without duplicates.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import analyze, decode, describe, faults, metadata
from .store import SegmentData, Store
from .store.errors import StorageError, storage_error
from .store.lock import IndexLock
from .text import TextEncoder
from .types import Analyzer, Failure, IndexReport

log = logging.getLogger(__name__)

DESCRIPTION_SPACE = "description"
TRANSCRIPT_SPACE = "transcript"


@dataclass
class Progress:
    """Snapshot passed to the progress callback after each file."""

    done: int
    total: int
    failed: int
    audio_s: float
    elapsed_s: float
    path: str
    status: str  # indexed | unchanged | moved | failed
    stages: dict[str, float] = field(default_factory=dict)  # seconds spent so far per stage (STAGES)
    analysed: int = 0  # files whose stages are counted

    @property
    def speed_x_realtime(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def slowest(self) -> str:
        """Which stage takes the time, e.g. "speech recognition 92 %, 0.61 s/file" ("" before any file)."""
        total = sum(self.stages.values())
        if total <= 0 or not self.analysed:
            return ""
        stage, secs = max(self.stages.items(), key=lambda kv: kv[1])
        return f"{stage} {secs / total:.0%}, {secs / self.analysed:.2f} s/file"


STAGES = ("audio models", "speech recognition", "store")  # decode + YAMNet/musicnn; VAD + Whisper; text + SQLite


def walk(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[str, str]]:
    """(root, absolute file path) for every audio file under ``paths``, sorted, each file once.

    A path that is a file is yielded as its own root whatever its extension (the user named it);
    folders are walked recursively for known audio extensions, skipping hidden entries. Entries with
    an audio extension that are not regular files (broken or looping symlinks, FIFOs) are yielded
    too, so that the run reports them instead of skipping them silently.
    """
    seen: set[str] = set()
    for raw in paths:
        root = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if os.path.isfile(root) or (os.path.lexists(root) and not os.path.isdir(root)):
            if root not in seen:
                seen.add(root)
                yield root, root
            continue
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no such file or folder: {raw}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not decode.is_audio_path(name):
                    continue
                path = os.path.join(dirpath, name)
                if path not in seen:
                    seen.add(path)
                    yield root, path


def printable(path: str) -> str:
    """``path`` as UTF-8 text: bytes of a file name that are not UTF-8 (which ``os.fsdecode`` keeps as
    lone surrogates, and SQLite cannot store) are written ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def content_hash(path: str, *, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of the file's bytes, hex (streams; constant memory)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Job:
    root: str
    path: str
    st: os.stat_result
    digest: str


SPEECH_FRAMES = 1  # YAMNet frames (0.48 s hop) of confident speech (p >= 0.5) that make a file worth transcribing
SPEECH_LABELS = ("Speech", "Narration, monologue", "Conversation", "Male speech, man speaking",
                 "Female speech, woman speaking", "Child speech, kid speaking")  # fmt: skip


def speech_frames(a: analyze.Analysis, analyzer: Analyzer) -> int:
    """Frames in which any speech label is confident, a proxy for seconds of speech (x 0.48)."""
    counts = a.item_counts.get(analyzer.name)
    if counts is None:
        return 0
    return max((int(counts[analyzer.labels.index(n)]) for n in SPEECH_LABELS if n in analyzer.labels), default=0)


def wants_transcript(a: analyze.Analysis, analyzer: Analyzer) -> bool:
    """Speech somewhere (one confident frame, even in an hour of silence, or speech as the file's most
    likely label), and not a piece of music. The VAD and Whisper's no-speech probability then decide
    what is words: this gate only keeps recognition off files with no sign of a voice."""
    if a.music is not None:
        return False
    means = a.item_means.get(analyzer.name)
    top_is_speech = means is not None and analyzer.labels[int(np.argmax(means))] in SPEECH_LABELS
    return top_is_speech or speech_frames(a, analyzer) >= SPEECH_FRAMES


def _passages(path: str, transcriber: Any) -> list[dict[str, Any]]:
    """Transcript passages as plain dicts (times in seconds from the start of the file)."""
    return [
        {
            "start": round(p.start, 3),
            "end": round(p.end, 3),
            "text": p.text.strip(),
            "language": p.language,
            "avg_logprob": float(p.avg_logprob),
            "no_speech_prob": float(p.no_speech_prob),
            "words": [[round(w.start, 2), round(w.end, 2), w.text] for w in (p.words or [])] or None,
        }
        for p in transcriber.transcribe_file(path)
        if p.text.strip()
    ]


def _analyze_one(
    path: str, analyzers: list[Analyzer], music: list[Analyzer], segment_s: float, transcriber: Any = None
) -> analyze.Analysis | str:
    """Analyse one file (and transcribe it when it holds speech); a failure comes back as its reason."""
    try:
        t0 = time.perf_counter()
        a = analyze.analyze_file(path, analyzers, music_analyzers=music, segment_s=segment_s, fingerprint=True)
        t1 = time.perf_counter()
        if transcriber is not None and analyzers and wants_transcript(a, analyzers[0]):
            a.passages = _passages(path, transcriber)
        a.timings = {"audio models": t1 - t0, "speech recognition": time.perf_counter() - t1}  # type: ignore[attr-defined]
        return a
    except decode.DecodeError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc}"
    except MemoryError:
        return "out of memory while analysing"
    except Exception as exc:  # a bug or a model error on one file must not stop the run
        log.exception("analysis failed for %s", path)
        return f"analysis error: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _storage_errors(data_dir: Path) -> Iterator[None]:
    """A full disk or a read-only data directory, wherever the run meets it, as one clear StorageError."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        err = storage_error(exc, data_dir)
        denied = isinstance(exc, OSError) and exc.errno == errno.EACCES and not isinstance(exc, StorageError)
        if err is None or denied:
            raise  # (permission denied on some other file is not about the data directory)
        raise err from exc


_WORKER: dict[str, Any] = {}


def _worker_init(model_ids: list[tuple[str, str]], n_primary: int, segment_s: float, asr: str | None) -> None:
    """Load the default models in a worker process and check they are the ones the parent uses."""
    from .threads import one_thread

    one_thread(force=True)
    from .api import default_analyzers, default_music_analyzers

    models = {a.name: a for a in [*default_analyzers(), *default_music_analyzers()]}
    chosen = [models.get(name) for name, _ in model_ids]
    if any(a is None or a.model_id != mid for a, (_, mid) in zip(chosen, model_ids, strict=True)):
        raise RuntimeError("worker processes can only run the default models; use jobs=1 for custom analyzers")
    transcriber = None
    if asr:
        from .transcribe import load_transcriber

        transcriber = load_transcriber(asr)
    _WORKER.update(analyzers=chosen[:n_primary], music=chosen[n_primary:], segment_s=segment_s, asr=transcriber)


def _worker_analyze(task: tuple[int, str]) -> tuple[int, analyze.Analysis | str]:
    i, path = task
    faults.crash_on(path)  # crash tests: a worker that dies natively on this file
    return i, _analyze_one(path, _WORKER["analyzers"], _WORKER["music"], _WORKER["segment_s"], _WORKER["asr"])


class Indexer:
    """Runs the pipeline over folders into a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        analyzers: list[Analyzer],
        text_encoder: TextEncoder,
        *,
        music_analyzers: list[Analyzer] | None = None,
        asr_model: str | None = None,
        segment_s: float = analyze.SEGMENT_S,
    ) -> None:
        """``asr_model`` names the speech recogniser ("tiny.en", "base", a model folder) or None for none."""
        self.store = store
        self.asr_model = asr_model
        self.transcriber = None
        if asr_model:
            from .transcribe import load_transcriber

            self.transcriber = load_transcriber(asr_model)
            store.catalog.register_model(
                TRANSCRIPT_SPACE,
                self.transcriber.model_id,
                {"vad": "silero-vad 6.2.3", "text_encoder": text_encoder.model_id},
                0,
                [],
            )
        self.analyzers = analyzers
        self.music_analyzers = music_analyzers or []
        self.text = text_encoder
        self.segment_s = segment_s
        cat = store.catalog
        for a in [*analyzers, *self.music_analyzers]:
            cat.register_model(a.name, a.model_id, {**a.params, "segment_s": segment_s}, a.dim, list(a.labels))
        cat.register_model(DESCRIPTION_SPACE, text_encoder.model_id, {}, text_encoder.dim, [])
        self.fingerprints = store.fingerprints()

    def run(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        rehash: bool = False,
        progress: Callable[[Progress], None] | None = None,
        jobs: int = 1,
        wait: float = 0.0,
        ray: str | bool | None = None,
        prune: bool = False,
    ) -> IndexReport:
        """Index every audio file under ``paths``; drop catalog items under them whose file is gone.

        A folder that holds no audio file at all any more keeps its items (``report.kept``): an unmounted
        drive leaves its mount point empty, and dropping them would throw away their analysis and what
        listeners did with them. ``prune`` drops them too.

        ``jobs`` > 1 analyses files in that many worker processes (one thread each); hashing,
        change detection and every catalog write stay in this process, one transaction per file.
        ``ray`` (True, "local" or a cluster address) analyses them on ``jobs`` Ray actors instead (0: one per
        CPU), which must be able to read the files at the same paths: see :mod:`soundscope.distributed`.
        The data directory's writer lock is held throughout: ``wait`` is how many seconds to wait for
        another run to finish (0: refuse at once); :class:`~soundscope.store.lock.IndexLockedError` if it does not.
        """
        with IndexLock(self.store.data_dir, wait=wait), _storage_errors(self.store.data_dir):
            return self._run(paths, rehash=rehash, progress=progress, jobs=jobs, ray=ray, prune=prune)

    def _run(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        rehash: bool,
        progress: Callable[[Progress], None] | None,
        jobs: int,
        ray: str | bool | None = None,
        prune: bool = False,
    ) -> IndexReport:
        t0 = time.perf_counter()
        report = IndexReport()
        self._stages: dict[str, float] = {}
        self._analysed = 0
        paths = list(paths)
        files = list(walk(paths))
        roots = sorted({root for root, _ in files} | {os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths})
        failed_now: set[str] = set()
        done = 0

        def tick(path: str, status: str) -> None:
            nonlocal done
            done += 1
            if status == "failed":
                failed_now.add(path)
            if progress:
                elapsed = time.perf_counter() - t0
                progress(Progress(done, len(files), report.failed, report.audio_seconds, elapsed, path, status,
                                  dict(self._stages), self._analysed))  # fmt: skip

        todo: list[_Job] = []
        for root, path in files:
            job_or_status = self._triage(root, path, rehash, report)
            if isinstance(job_or_status, _Job):
                todo.append(job_or_status)
            else:
                tick(path, job_or_status)
        for job, result in self._analyses(todo, jobs, ray):
            tick(job.path, self._finish(job, result, report))
        walked = {path for _, path in files}
        readable = walked - failed_now
        report.removed = self._drop_missing(self._prunable(roots, walked, prune, report), readable)
        self._backfill_fingerprints(readable)
        for root in roots:
            self.store.catalog.clear_failures_under(printable(root), {printable(p) for p in failed_now})
        self.store.flush()  # fold the new vectors and columns into the saved accelerators
        report.elapsed_s = time.perf_counter() - t0
        return report

    def _triage(self, root: str, path: str, rehash: bool, report: IndexReport) -> _Job | str:
        """Decide cheaply (stat, then content hash) whether ``path`` needs analysis."""
        cat = self.store.catalog
        if printable(path) != path:  # the catalog holds UTF-8 text
            return self._fail(printable(path), "file name is not valid UTF-8 (rename the file to index it)", report)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # hashing a FIFO would block
                return self._fail(path, decode.special_file_reason(st.st_mode), report)
            existing = cat.item_by_path(path)
            if existing and not rehash and existing.size == st.st_size and existing.mtime == st.st_mtime:
                report.unchanged += 1
                return "unchanged"
            digest = content_hash(path)
            if existing and existing.content_hash == digest:
                cat.update_location(existing.id, path=path, root=root, size=st.st_size, mtime=st.st_mtime)
                report.unchanged += 1
                return "unchanged"
            moved = next((it for it in cat.items_by_hash(digest) if not os.path.exists(it.path)), None)
            if moved and not existing:
                cat.update_location(moved.id, path=path, root=root, size=st.st_size, mtime=st.st_mtime)
                report.unchanged += 1
                return "moved"
        except OSError as exc:
            if os.path.islink(path) and not os.path.exists(path):
                return self._fail(path, f"broken symlink ({(exc.strerror or str(exc)).lower()})", report)
            return self._fail(path, f"cannot read: {exc}", report)
        return _Job(root, path, st, digest)

    def _analyses(
        self, todo: list[_Job], jobs: int, ray: str | bool | None = None
    ) -> Iterator[tuple[_Job, analyze.Analysis | str]]:
        """(job, Analysis or failure reason) for each job, in this process, in a worker pool or on Ray actors."""
        ids = [(a.name, a.model_id) for a in [*self.analyzers, *self.music_analyzers]]
        if ray and todo:
            from . import distributed

            asr = self.asr_model
            yield from distributed.analyses(todo, ids, len(self.analyzers), self.segment_s, asr, jobs=jobs, address=ray)
            return
        if jobs <= 1 or len(todo) < 2 * jobs:
            for job in todo:
                yield (
                    job,
                    _analyze_one(job.path, self.analyzers, self.music_analyzers, self.segment_s, self.transcriber),
                )
            return
        from .workers import pool_results  # a worker that dies fails its file, not the run (no hang)

        initargs = (ids, len(self.analyzers), self.segment_s, self.asr_model)
        for i, result in pool_results([job.path for job in todo], jobs, _worker_analyze, _worker_init, initargs):
            yield todo[i], result

    def _finish(self, job: _Job, result: analyze.Analysis | str, report: IndexReport) -> str:
        if isinstance(result, str):
            return self._fail(job.path, result, report)
        try:  # what was analysed must be what was hashed: a file replaced or deleted meanwhile is not stored
            st = os.stat(job.path)
            changed = (st.st_size, st.st_mtime_ns, st.st_ino) != (job.st.st_size, job.st.st_mtime_ns, job.st.st_ino)
        except OSError:
            return self._fail(job.path, "file disappeared while it was being indexed", report)
        if changed:
            return self._fail(job.path, "file changed while it was being indexed (index again to pick it up)", report)
        try:
            t0 = time.perf_counter()
            self._store(job.root, job.path, job.st, job.digest, result)
            for stage, secs in {**getattr(result, "timings", {}), "store": time.perf_counter() - t0}.items():
                self._stages[stage] = self._stages.get(stage, 0.0) + secs
            self._analysed += 1
        except Exception as exc:  # a write error on one file must not stop the run...
            if storage_error(exc, self.store.data_dir) is not None:
                raise  # ...but a full or read-only disk stops it (this file's transaction was rolled back)
            log.exception("storing failed for %s", job.path)
            return self._fail(job.path, f"store error: {type(exc).__name__}: {exc}", report)
        report.indexed += 1
        report.audio_seconds += result.duration_s
        return "indexed"

    def _fail(self, path: str, reason: str, report: IndexReport) -> str:
        report.failed += 1
        report.failures.append(Failure(path, reason))
        self.store.catalog.record_failure(path, reason)
        return "failed"

    def _store(self, root: str, path: str, st: os.stat_result, digest: str, a: analyze.Analysis) -> None:
        primary = self.analyzers[0]
        kind = describe.kind_of(
            a.item_means.get(primary.name, np.zeros(len(primary.labels))), primary.labels, is_music=a.music is not None
        )
        tags = metadata.metadata(path, a.info.tags)
        features = {**a.features, **({"music": a.music} if a.music else {})}
        music_tags = [
            t
            for m in self.music_analyzers
            if m.name in a.item_scores
            for t in describe.top_labels(a.item_scores[m.name], m.labels, k=8, min_p=0.2)
        ]
        sound_labels = describe.top_labels(
            a.item_scores.get(primary.name, np.zeros(len(primary.labels))), primary.labels
        )
        text = describe.describe(kind=kind, labels=sound_labels, features=features, tags=tags, music_tags=music_tags)
        item: dict[str, Any] = {
            "path": path,
            "root": root,
            "size": st.st_size,
            "mtime": st.st_mtime,
            "content_hash": digest,
            "duration_s": a.duration_s,
            "sample_rate": a.info.sample_rate,
            "channels": a.info.channels,
            "codec": a.info.codec,
            "tags": tags,
            "features": features,
            "kind": kind,
            "description": text,
            "indexed_at": time.time(),
        }
        segments = [
            (s.start, s.end, [SegmentData(name, s.scores.get(name), s.embeddings.get(name)) for name in s.scores])
            for s in a.segments
        ]
        item_data = [SegmentData(name, a.item_scores[name], a.item_embeddings[name]) for name in a.item_scores]
        item_data.append(SegmentData(DESCRIPTION_SPACE, None, self.text.encode([text])[0]))
        passages = a.passages or []
        if passages:
            vecs = self.text.encode([p["text"] for p in passages])
            passages = [{**p, "embedding": v} for p, v in zip(passages, vecs, strict=True)]
        item_id, _ = self.store.catalog.put_item(item, segments, item_data, passages)
        if a.fingerprint is not None:
            self.fingerprints.add(item_id, a.fingerprint)

    def _backfill_fingerprints(self, walked: set[str]) -> None:
        """Fingerprint the items of this run that have none (indexed before fingerprints existed, or a
        crash between the catalog commit and the fingerprint part): one decode each, no model runs."""
        from .identify import fingerprint_file

        missing = self.fingerprints.missing()
        for row in self.store.catalog.items(int(i) for i in missing) if missing.size else []:
            if row.path not in walked:
                continue
            try:
                self.fingerprints.add(row.id, fingerprint_file(row.path, block_s=analyze.BLOCK_S))
            except (decode.DecodeError, OSError) as exc:
                log.warning("cannot fingerprint %s: %s", row.path, exc)

    def _prunable(self, roots: list[str], walked: set[str], prune: bool, report: IndexReport) -> list[str]:
        """The roots whose missing items may be dropped: all with ``prune``; else those that still hold an
        audio file, or held no item (an empty folder with items is recorded in ``report.kept``)."""
        out = []
        for root in (printable(r) for r in roots):
            prefix = root.rstrip("/") + "/"
            if prune or not os.path.isdir(root) or any(p == root or p.startswith(prefix) for p in walked):
                out.append(root)
                continue
            held = len(self.store.catalog.paths_under(root))
            if held:
                report.kept[root] = held
        return out

    def _drop_missing(self, roots: list[str], seen: set[str]) -> int:
        cat = self.store.catalog
        gone: list[int] = []
        for root in roots:
            for path, (item_id, _, _) in cat.paths_under(root).items():
                if path not in seen and not Path(path).exists():
                    gone.append(item_id)
        return cat.delete_items(gone) if gone else 0
