"""A dataset stored as shards: ``.npy`` files (memory-mapped), in-memory arrays, or blocks
of a Ray Dataset in Ray's object store.

A shard is a 2-D array of points (rows) in the same feature space as the others; the
points are numbered globally in shard order (shard 0's rows first). Shards are validated
on the driver before any work is sent out (a missing or truncated file, a shard that is
not 2-D or empty, shards of different dimension: ``ValueError``), and each worker opens
its own shard by path, so only paths (not data) travel to the workers. A Ray Dataset
becomes shards with :func:`dataset_shards`: one ``ObjectRef`` per block, which a Ray worker
reads from its node's object store (zero-copy there); their shapes are checked by small Ray
tasks, so no block travels to the driver for validation. Such shards need Ray running, so
they go with ``executor="ray"`` (or ``None``, in the driver).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ShardSet", "dataset_shards", "is_object_ref", "load_shard", "peak_rss_mib",
           "shard_set"]

Shard = Any  # a path (str or os.PathLike) to an .npy file, an array, or a Ray ObjectRef


def is_object_ref(shard: Any) -> bool:
    """Whether ``shard`` is a Ray ``ObjectRef`` (checked without importing Ray)."""
    t = type(shard)
    return t.__name__ == "ObjectRef" and t.__module__.split(".")[0] == "ray"


def dataset_shards(dataset: Any, column: str | None = None, shards: int | None = None
                   ) -> list[Any]:
    """A Ray Dataset as shards: its blocks (``dataset.repartition(shards)`` first when
    ``shards`` is given, keeping row order), each an ``ObjectRef`` of the ``(n_i, d)`` array
    of ``column`` (default: the dataset's only column, e.g. ``ray.data.from_numpy``'s
    ``"data"``), whose rows are the points. The points are numbered in block order."""
    names = list(dataset.schema().names)
    if column is None:
        if len(names) != 1:
            raise ValueError(f"the dataset has columns {names}: name the one that holds the "
                             "points (column=...)")
        column = names[0]
    elif column not in names:
        raise ValueError(f"the dataset has no column {column!r} (it has {names})")
    if shards is not None:
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be a positive integer, got {shards!r}")
        dataset = dataset.repartition(shards)
    return list(dataset.to_numpy_refs(column=column))


def ref_shape(a: np.ndarray) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of a shard in Ray's object store (run as a Ray task)."""
    return tuple(int(v) for v in np.shape(a)), str(np.asarray(a).dtype)


def open_shard(shard: Shard, i: int) -> np.ndarray:
    """Shard ``i`` as an array (a read-only memory map for a file); ValueError if it is
    missing, truncated or not an .npy file."""
    if is_object_ref(shard):
        import ray

        return np.asarray(ray.get(shard))
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


def shard_set(shards: Sequence[Shard], executor: str | None = None) -> ShardSet:
    """Validate ``shards`` (a non-empty list of .npy paths, 2-D arrays or Ray blocks of one
    dimension) for ``executor`` (Ray blocks need ``"ray"`` or ``None``)."""
    if isinstance(shards, (str, os.PathLike, np.ndarray)) or not isinstance(shards, Sequence):
        raise ValueError("shards must be a list of .npy paths or 2-D arrays (one per shard)")
    if len(shards) == 0:
        raise ValueError("shards is empty: give at least one shard")
    if executor == "processes" and any(is_object_ref(x) for x in shards):
        raise ValueError("shards in Ray's object store (dataset_shards) run with "
                         "executor='ray' (or None), not in a local process pool")
    sizes, dims = [], []
    for i, (shape, dtype) in enumerate(shapes_of(shards)):
        if len(shape) != 2:
            raise ValueError(f"shard {i} must be 2-D (points x features), got shape {shape}")
        if shape[0] == 0:
            raise ValueError(f"shard {i} is empty: drop it or give it points")
        if not np.issubdtype(np.dtype(dtype), np.number):
            raise ValueError(f"shard {i} must hold numbers, got dtype {dtype}")
        sizes.append(int(shape[0]))
        dims.append(int(shape[1]))
    if len(set(dims)) > 1:
        raise ValueError(f"shards have different feature dimensions ({dims}); every shard "
                         f"must hold points of the same space")
    return ShardSet(tuple(shards), tuple(sizes), dims[0])


def shapes_of(shards: Sequence[Shard]) -> list[tuple[tuple[int, ...], str]]:
    """Shape and dtype of every shard: files and arrays opened here, Ray blocks measured by
    Ray tasks where they live."""
    refs = [i for i, s in enumerate(shards) if is_object_ref(s)]
    out: list[Any] = [None] * len(shards)
    if refs:
        import ray

        task = ray.remote(ref_shape)
        for i, got in zip(refs, ray.get([task.remote(shards[i]) for i in refs]), strict=True):
            out[i] = got
    for i, s in enumerate(shards):
        if out[i] is None:
            X = open_shard(s, i)
            out[i] = (tuple(X.shape), str(X.dtype))
    return out


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
