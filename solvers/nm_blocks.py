"""Block-wise solving of transposable N:M masks, shared by every N:M solver.

A :class:`~pruneopt.formulations.TransposableNM` problem is one independent problem per
m-by-m block. Solvers process the blocks in chunks of about :data:`CHUNK_ELEMS` entries
(bounded working memory) with :func:`solve_blocks`, which also keeps the time limit: the
clock is read between chunks, and once ``time_limit`` has passed the remaining blocks are
filled by ``fallback`` (a fast feasible answer, usually the greedy) and the solve reports
``"time_limit"``. The slack is one chunk of the solver's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

CHUNK_ELEMS = 1 << 21  # block entries processed at once (bounds the working memory)


def block_chunks(nb: int, m: int, elems: int = CHUNK_ELEMS) -> Iterator[slice]:
    """Slices of ``nb`` blocks of m x m entries, about ``elems`` entries each."""
    step = max(1, elems // (m * m))
    for s in range(0, nb, step):
        yield slice(s, min(nb, s + step))


def solve_blocks(w: np.ndarray, solve: Callable[[np.ndarray], np.ndarray],
                 fallback: Callable[[np.ndarray], np.ndarray], time_limit: float | None,
                 elems: int = CHUNK_ELEMS) -> tuple[np.ndarray, bool]:
    """Masks for the blocks ``w`` (B, m, m) chunk by chunk: ``(x, finished)``.

    ``solve(chunk) -> mask`` runs while the time limit allows, ``fallback`` afterwards;
    ``finished`` is False when the fallback filled any block.
    """
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    x = np.empty(w.shape, dtype=bool)
    finished = True
    for sl in block_chunks(w.shape[0], w.shape[1], elems):
        if deadline is not None and time.perf_counter() > deadline:
            finished = False
            x[sl] = fallback(w[sl])
        else:
            x[sl] = solve(w[sl])
    return x, finished
