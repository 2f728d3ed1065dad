"""One BLAS and OpenMP thread per process: on a 2-core machine, two workers that each run two BLAS
threads (OpenBLAS busy-waits between calls) are oversubscribed, and a query spends twice its CPU.

Setting ``OPENBLAS_NUM_THREADS`` only works before numpy is first imported, and by the time a command
parses its arguments numpy is loaded (the library imports it at the top). So the variables are set for
child processes and libraries loaded later, and `threadpoolctl` (the maintained way to resize the
pools of libraries already loaded) sets the pools that exist now.
"""

from __future__ import annotations

import os

VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread(*, force: bool = False) -> None:
    """Limit BLAS and OpenMP to one thread in this process and its children. A value the user set in
    the environment wins unless ``force`` (worker processes, whose count already uses every core)."""
    for var in VARS:
        if force:
            os.environ[var] = "1"
        else:
            os.environ.setdefault(var, "1")
    from threadpoolctl import threadpool_limits

    def limit(var: str) -> int:
        try:
            return max(1, int(os.environ[var]))
        except ValueError:
            return 1

    threadpool_limits(limits={"blas": limit("OPENBLAS_NUM_THREADS"), "openmp": limit("OMP_NUM_THREADS")})
