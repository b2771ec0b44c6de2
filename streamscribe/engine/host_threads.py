"""Keeps numpy's BLAS thread pool from burning the cores the decoders need.

Every decode does a little linear algebra in numpy (the log-mel features, parts of the word
alignment). numpy's OpenBLAS runs each such call on every core, and its worker threads then
busy-wait for the next call: on 2 cores a tiny.en partial cost ~116 ms of process CPU with two
BLAS threads and ~58 ms with one, in the same wall time, and the server's CPU per audio second
fell 0.37 -> 0.22 with identical transcripts (README, Measured figures). A server's parallelism
comes from its decode workers (`decode_workers`, `cpu_threads`), not from threads inside a
matrix product of a few thousand elements, so BLAS gets `blas_threads` (default 1).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_limits: object | None = None  # the live threadpoolctl limiter (kept so it stays applied)


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS at `threads` threads for the whole process (0: leave it as it is)."""
    global _limits
    if threads <= 0:
        return
    import numpy  # noqa: F401  (BLAS is found among the libraries already loaded)
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=threads, user_api="blas")
    log.debug("numpy BLAS limited to %d thread(s)", threads)
