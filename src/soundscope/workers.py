"""Analysis worker processes that survive a worker's death (``index --jobs N``).

``multiprocessing.Pool`` waits forever for the result of a task whose worker died natively (a
segfault in a decoder or a model, the kernel's OOM killer, ``kill -9``): the run hangs. Here a
:class:`concurrent.futures.ProcessPoolExecutor` raises ``BrokenProcessPool`` instead; the files that
were in flight are retried one at a time in a fresh pool, so the file that kills its worker is found
and reported as a failure with the reason, the innocent ones are analysed, and the run goes on.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger(__name__)

CRASHED = (
    "the analysis worker process died while analysing this file (a native crash, or killed: "
    "out of memory?); the run went on without it"
)
MAX_BARREN = 3  # pools in a row that die before finishing any file: the workers cannot start at all


class WorkersCannotStartError(RuntimeError):
    """Every fresh pool died before it finished a file (e.g. its initializer fails)."""


_INIT_ERROR: BaseException | None = None  # in a worker: what its initializer raised


ORPHAN_CHECK_S = 1.0  # how often a worker looks whether the process that started it is still there


def _exit_with_parent(parent: int) -> None:
    """Exit this worker once ``parent`` is gone. A parent killed outright (``kill -9``, the OOM killer)
    runs no clean-up, and its workers, blocked on a queue whose write end they hold themselves, would
    wait forever with their models loaded (~250 MB each)."""
    while True:
        time.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def _init(initializer: Callable[..., None], *args: Any) -> None:
    """Run ``initializer``, keeping what it raises: an initializer that raises kills its worker, which
    the parent cannot tell from a crash; raised from each task instead, the parent sees the error. A
    watchdog thread ends the worker if its parent dies (:func:`_exit_with_parent`)."""
    global _INIT_ERROR
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="orphan-watch").start()
    try:
        initializer(*args)
    except BaseException as exc:
        _INIT_ERROR = exc


def _call(fn: Callable[[tuple[int, str]], tuple[int, Any]], task: tuple[int, str]) -> tuple[int, Any]:
    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    return fn(task)


def pool_results(
    paths: Sequence[str],
    jobs: int,
    fn: Callable[[tuple[int, str]], tuple[int, Any]],
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> Iterator[tuple[int, Any]]:
    """``(i, fn((i, paths[i])))`` for every path, in completion order, on ``jobs`` spawned processes;
    ``(i, CRASHED)`` for a file whose worker died analysing it. At most ``jobs`` files are in flight,
    so a death costs a retry of at most ``jobs - 1`` innocent files. What ``initializer`` or ``fn``
    raises is raised here (the run stops with that error)."""
    ctx = mp.get_context("spawn")  # onnxruntime sessions must not cross a fork
    queue: deque[int] = deque(range(len(paths)))
    suspects: deque[int] = deque()  # in flight when a worker died: retried one at a time
    barren = 0
    while queue or suspects:
        finished = 0
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(initializer, *initargs)) as pool:
            inflight: dict[Future, int] = {}
            broken = False
            while not broken and (queue or suspects or inflight):
                alone = bool(suspects)
                while (suspects or queue) and len(inflight) < (1 if alone else jobs):
                    if alone and inflight:
                        break
                    i = suspects.popleft() if alone else queue.popleft()
                    inflight[pool.submit(_call, fn, (i, paths[i]))] = i
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for f in done:
                    i = inflight.pop(f)
                    try:
                        yield f.result()
                        finished += 1
                    except BrokenProcessPool:
                        broken = True
                        if alone:  # it was the only file in flight: it killed its worker
                            log.warning("worker died analysing %s", paths[i])
                            yield i, CRASHED
                        else:
                            suspects.append(i)
            if broken:  # every other future of a broken pool fails too: retry them alone
                for f, i in inflight.items():
                    f.cancel()
                    suspects.append(i)
                pool.shutdown(wait=True, cancel_futures=True)
        barren = barren + 1 if broken and not finished else 0
        if barren >= MAX_BARREN:
            raise WorkersCannotStartError(
                f"analysis worker processes died {barren} times before finishing any file: run with --jobs 1 "
                "to see the error"
            )


__all__ = ["CRASHED", "WorkersCannotStartError", "pool_results"]
