"""A dataset stored as shards: ``.npy`` files (memory-mapped) or in-memory arrays.

A shard is a 2-D array of points (rows) in the same feature space as the others; the
points are numbered globally in shard order (shard 0's rows first). Shards are validated
on the driver before any work is sent out (a missing or truncated file, a shard that is
not 2-D or empty, shards of different dimension: ``ValueError``), and each worker opens
its own shard by path, so only paths (not data) travel to the workers.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ShardSet", "load_shard", "peak_rss_mib", "shard_set"]

Shard = Any  # a path (str or os.PathLike) to an .npy file, or an array


def open_shard(shard: Shard, i: int) -> np.ndarray:
    """Shard ``i`` as an array (a read-only memory map for a file); ValueError if it is
    missing, truncated or not an .npy file."""
    if isinstance(shard, (str, os.PathLike)):
        p = Path(shard)
        if not p.is_file():
            raise ValueError(f"shard {i} ({p}) does not exist: give the path of an .npy file")
        try:
            return np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"shard {i} ({p}) cannot be read as an .npy array (missing, "
                             f"truncated or not .npy): {exc}") from None
    return np.asarray(shard)


def load_shard(shard: Shard, i: int = 0) -> np.ndarray:
    """Shard ``i``'s points as a float64 array (n_i, d) in memory."""
    return np.asarray(open_shard(shard, i), dtype=np.float64)


@dataclass(frozen=True)
class ShardSet:
    """Validated shards: ``sources`` (as given), ``sizes`` (points per shard), ``dim``;
    ``offsets[i]`` is the global index of shard i's first point."""

    sources: tuple[Shard, ...]
    sizes: tuple[int, ...]
    dim: int

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The points at the global ``indices`` (float64, in the order given), read shard by
        shard."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.dim))
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(which):
            at = np.flatnonzero(which == s)
            X = open_shard(self.sources[s], int(s))
            out[at] = X[idx[at] - self.offsets[s]]
        return out


def shard_set(shards: Sequence[Shard]) -> ShardSet:
    """Validate ``shards`` (a non-empty list of .npy paths or 2-D arrays of one dimension)."""
    if isinstance(shards, (str, os.PathLike, np.ndarray)) or not isinstance(shards, Sequence):
        raise ValueError("shards must be a list of .npy paths or 2-D arrays (one per shard)")
    if len(shards) == 0:
        raise ValueError("shards is empty: give at least one shard")
    sizes, dims = [], []
    for i, s in enumerate(shards):
        X = open_shard(s, i)
        if X.ndim != 2:
            raise ValueError(f"shard {i} must be 2-D (points x features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"shard {i} is empty: drop it or give it points")
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"shard {i} must hold numbers, got dtype {X.dtype}")
        sizes.append(int(X.shape[0]))
        dims.append(int(X.shape[1]))
    if len(set(dims)) > 1:
        raise ValueError(f"shards have different feature dimensions ({dims}); every shard "
                         f"must hold points of the same space")
    return ShardSet(tuple(shards), tuple(sizes), dims[0])


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's ``VmHWM`` (which, unlike
    ``ru_maxrss``, is not inherited from the parent of a spawned worker), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
