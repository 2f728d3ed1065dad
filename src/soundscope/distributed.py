"""Distributed analysis on Ray: ``soundscope index PATH... --ray [ADDRESS]``.

Only the analysis moves: hashing, change detection, every catalog write (one transaction per file),
per-file failures, resume and the writer lock stay in the indexing process, exactly as with ``--jobs``.
Each Ray actor takes one CPU, loads the default models once (the local worker pool's initialiser, so the
same model-id check) and runs them on one thread: ONNX sessions are built with one, a Ray this module
starts or connects to runs the job with OMP/OPENBLAS/MKL_NUM_THREADS=1, and on a Ray the caller initialised
Ray itself gives a one-CPU actor OMP_NUM_THREADS=1 (unless the caller's environment sets it).

Files are sent **by path, not bytes**: every actor must be able to read each file at the same path (the
same machine, or a filesystem mounted at the same place on every node); one it cannot read fails with
its reason, like any other.

Results stream back as they finish, with at most :data:`IN_FLIGHT` tasks queued per actor, so memory stays
bounded on a long list of files. An actor that dies while analysing a file (a crash, a lost node, the
out-of-memory killer) makes that one file fail with a reason (retried on the next run, like any failure);
the files queued behind it go back in the queue and the dead actor is replaced.

Ray is imported only when asked for: ``pip install 'soundscope[ray]'``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from .analyze import Analysis
from .ingest import _worker_analyze, _worker_init

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # tasks queued per actor: one running, one ready to start the moment it finishes
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LOCAL = "local"  # ``--ray`` with no address: start a Ray instance on this machine for the run


class RayUnavailableError(RuntimeError):
    """Ray is not installed, the cluster at the given address cannot be reached, or no actor could start."""


class _HasPath(Protocol):
    path: str


J = TypeVar("J", bound=_HasPath)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError("Ray is not installed: pip install 'soundscope[ray]'") from exc
    return ray


class _Analyst:
    """One Ray actor: the default models loaded once in its own process, one thread."""

    def __init__(self, model_ids: list[tuple[str, str]], n_primary: int, segment_s: float, asr: str | None) -> None:
        _worker_init(model_ids, n_primary, segment_s, asr)

    def ready(self) -> bool:
        return True

    def analyze(self, path: str) -> Analysis | str:
        return _worker_analyze((0, path))[1]


def analyses(
    todo: Sequence[J],
    model_ids: list[tuple[str, str]],
    n_primary: int,
    segment_s: float,
    asr_model: str | None,
    *,
    jobs: int,
    address: str | bool,
) -> Iterator[tuple[J, Analysis | str]]:
    """(job, Analysis or failure reason) for every job, in the order they finish, analysed on Ray actors.

    ``address``: True or "local" starts a Ray instance here with ``jobs`` CPUs (0: one per core) and shuts it
    down at the end; any other string is a cluster address for ``ray.init`` ("auto", "HOST:6379",
    "ray://HOST:10001"). When this process is already connected to Ray, that instance is used as it is.
    ``jobs`` actors are started (0: one per CPU of the cluster), at most as many as the cluster has CPUs.
    """
    if not todo:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        local = address is True or address == LOCAL
        if not local:
            _check_reachable(str(address))
        try:
            ray.init(
                address="local" if local else str(address),
                num_cpus=(jobs if jobs > 0 else os.cpu_count() or 1) if local else None,
                include_dashboard=False if local else None,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": ONE_THREAD},  # for the whole job: its prestarted workers have it too
            )
        except ConnectionError as exc:
            raise RayUnavailableError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        started = True
    pool = _Pool(ray, (model_ids, n_primary, segment_s, asr_model))
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if jobs > cpus:
            log.warning("the Ray cluster has %d CPUs: starting %d actors, not %d", cpus, cpus, jobs)
        pool.start(min(jobs, cpus) if jobs > 0 else cpus)
        for i, result in pool.results([job.path for job in todo]):
            yield todo[i], result
    finally:
        pool.close()
        if started:
            ray.shutdown()


class _Pool:
    """Actors in numbered slots, each with its queued tasks in submission order (Ray runs them in that order)."""

    def __init__(self, ray: Any, init_args: tuple[Any, ...]) -> None:
        self.ray = ray
        self.cls = ray.remote(_Analyst).options(num_cpus=1)
        self.init_args = init_args
        self.actors: dict[int, Any] = {}
        self.ready: set[int] = set()  # slots whose actor has loaded its models
        self.queued: dict[int, list[tuple[Any, int | None]]] = {}  # slot -> [(ref, file index; None: ready())]
        self.where: dict[Any, int] = {}  # ref -> slot, for every ref not yet read
        self.ever_ready = False
        self.init_error = ""

    def start(self, n: int) -> None:
        for slot in range(n):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        actor = self.cls.remote(*self.init_args)
        ref = actor.ready.remote()
        self.actors[slot] = actor
        self.ready.discard(slot)
        self.queued[slot] = [(ref, None)]
        self.where[ref] = slot

    def results(self, paths: Sequence[str]) -> Iterator[tuple[int, Analysis | str]]:
        """(index, Analysis or failure reason) for every path, each exactly once, as they finish."""
        waiting = deque(range(len(paths)))
        while waiting or self.where:
            for slot, actor in self.actors.items():  # keep every live actor IN_FLIGHT files ahead
                q = self.queued[slot]
                while waiting and sum(i is not None for _, i in q) < IN_FLIGHT:
                    i = waiting.popleft()
                    ref = actor.analyze.remote(paths[i])
                    q.append((ref, i))
                    self.where[ref] = slot
            if not self.where:  # files are waiting and no actor is left to run them
                if not self.ever_ready:
                    raise RayUnavailableError(f"no Ray worker could load the models: {self.init_error}")
                reason = f"no Ray worker left to analyse it (the last could not start: {self.init_error})"
                while waiting:
                    yield waiting.popleft(), reason
                return
            [ref], _ = self.ray.wait(list(self.where), num_returns=1)
            slot = self.where[ref]
            try:
                value = self._get(ref)
            except self.ray.exceptions.RayActorError:
                for i, value in self._lost(slot, paths, waiting):
                    yield i, value
                continue
            self.where.pop(ref)
            q = self.queued[slot]
            i = next(i for r, i in q if r == ref)
            q.remove((ref, i))
            if i is None:
                self.ready.add(slot)
                self.ever_ready = True
            else:
                yield i, value

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        """The value behind ``ref``; a task that raised becomes its failure reason (RayActorError propagates)."""
        errors = self.ray.exceptions
        try:
            return self.ray.get(ref, timeout=timeout)
        except (errors.RayActorError, errors.GetTimeoutError):
            raise
        except errors.RayTaskError as exc:
            return f"analysis error on a Ray worker: {_first_line(exc.cause or exc)}"
        except errors.RayError as exc:  # the object was lost, the task was killed for memory...
            return f"Ray error while analysing: {type(exc).__name__}: {_first_line(exc)}"

    def _lost(self, slot: int, paths: Sequence[str], waiting: deque[int]) -> Iterator[tuple[int, Analysis | str]]:
        """The actor in ``slot`` died. Ray runs an actor's tasks in order, so what it had finished is kept, the
        first task that died with it is the file it was analysing (that file fails, with the reason), and the
        files queued behind it go back to the front of the queue. An actor that died before its models were
        loaded blames no file and is not replaced; any other is."""
        pending = self.queued.pop(slot)
        for ref, _ in pending:
            self.where.pop(ref, None)
        try:
            self.ray.kill(self.actors.pop(slot), no_restart=True)
        except Exception:  # already gone
            log.debug("could not kill a dead Ray actor", exc_info=True)
        blamed: int | None = None
        init_failed = False
        behind: list[int] = []
        for n, (ref, i) in enumerate(pending):
            if blamed is not None:
                behind.extend([] if i is None else [i])
                continue
            try:
                value = self._get(ref, timeout=60)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError) as exc:
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
                if i is None:  # died loading its models
                    init_failed = True
                    self.init_error = reason
                    log.warning("a Ray worker could not start: %s", reason)
                    behind.extend(j for _, j in pending[n + 1 :] if j is not None)
                    break
                blamed = i
                log.warning("a Ray worker died while analysing %s: %s", paths[i], reason)
                yield i, f"the Ray worker analysing it died ({reason})"
                continue
            if i is None:
                self.ready.add(slot)
                self.ever_ready = True
            else:
                yield i, value
        waiting.extendleft(reversed(behind))
        if not init_failed:
            self._spawn(slot)

    def close(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone, or so is the connection
                log.debug("could not kill a Ray actor", exc_info=True)
        self.actors.clear()


def _check_reachable(address: str) -> None:
    """Refuse an address nothing listens on at once (``ray.init`` would retry it for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():  # "auto", or something Ray resolves itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise RayUnavailableError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
