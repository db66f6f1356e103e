"""MMD data selection by shards: each shard selects its share against the target.

The problem is :class:`~pruneopt.formulations.mmd.MMDSelection` over the union of the
shards' points: keep ``k`` points whose kernel mean embedding ``mu_S`` is closest to the
target's ``mu_T``, ``MMD^2(S) = ||mu_S - mu_T||^2`` in the kernel's feature space
(dimensionless for the RBF kernel). :func:`mmd_by_shards` gives shard i the share
``k_i`` (:func:`~pruneopt.formulations.mmd.apportion` of ``k`` in proportion to the shard
sizes, largest remainder), solves ``MMDSelection(shard_i, target, k_i)`` with the given
solver (default ``lowrank``) as one task per shard on ``executor``, and returns the union.
The kernel and its bandwidth are fixed once for all shards (``bandwidth="median"``: the
median distance of a seeded sample pooled from all shards and the target).

**Guarantee.** The union's embedding is the share-weighted mean of the shards',
``mu_S = sum_i (k_i / k) mu_{S_i}``; the squared norm is convex, so

    MMD^2(S) = ||sum_i (k_i/k) (mu_{S_i} - mu_T)||^2 <= sum_i (k_i/k) MMD^2(S_i)

(Jensen): the union is at least as close to the target as the shards are on average. It
is not a bound against the single-machine optimum (the shards' picks can only
be combined in proportion; a union cannot trade points across shards), which the
benchmark measures instead. Status: "feasible".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from pruneopt.formulations.base import as_int
from pruneopt.formulations.mmd import MEDIAN_SAMPLE, MMDSelection, apportion, median_distance
from pruneopt.solvers.executors import check_executor, map_tasks
from pruneopt.solvers.registry import solve
from pruneopt.solvers.shards import ShardSet, load_shard, open_shard, peak_rss_mib, shard_set

__all__ = ["ShardedMMDResult", "mmd_by_shards"]


@dataclass
class ShardedMMDResult:
    """The answer of :func:`mmd_by_shards`.

    ``indices``: sorted global indices kept; ``objective``: MMD^2 of the union against the
    target (exact kernel); ``shares``: k_i; ``shard_objectives``: MMD^2(S_i);
    ``average_bound``: ``sum_i (k_i / k) MMD^2(S_i)``, which ``objective`` never exceeds
    (module docstring); ``bandwidth``: the RBF bandwidth used (None otherwise).
    """

    indices: np.ndarray
    objective: float
    status: str
    shares: list[int]
    shard_objectives: list[float]
    average_bound: float
    bandwidth: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: list[float] = field(default_factory=list)


def shard_mmd(item: tuple[int, Any, int], *, target: np.ndarray, kernel: Any,
              bandwidth: Any, solver: str, options: dict) -> dict[str, Any]:
    """One shard's selection of its share ``k_i`` against the target."""
    i, shard, k = item
    X = load_shard(shard, i)
    problem = MMDSelection(X, target, keep=k, kernel=kernel, bandwidth=bandwidth)
    sol = solve(problem, solver=solver, **options)
    return {"indices": np.asarray(sol.decision, dtype=np.int64),
            "objective": float(sol.objective), "rss": peak_rss_mib()}


def pooled_bandwidth(ss: ShardSet, target: np.ndarray, seed: int) -> float:
    """The median heuristic on a seeded sample pooled from all shards and the target."""
    rng = np.random.default_rng(seed)
    per = max(1, MEDIAN_SAMPLE // (len(ss.sources) + 1))
    parts = [target[np.sort(rng.choice(len(target), min(per, len(target)), replace=False))]]
    for i, s in enumerate(ss.sources):
        X = open_shard(s, i)
        take = np.sort(rng.choice(len(X), min(per, len(X)), replace=False))
        parts.append(np.asarray(X[take], dtype=np.float64))
    return median_distance(np.vstack(parts), seed=seed)


def mmd_by_shards(shards: Sequence[Any], target: Any, keep: int, *, kernel: Any = "rbf",
                  bandwidth: float | str = "median", solver: str = "lowrank",
                  executor: str | None = None, workers: int | None = None,
                  address: str | None = None, seed: int = 0, progress: bool = False,
                  **options: Any) -> ShardedMMDResult:
    """Keep ``keep`` points of the union of ``shards`` matching ``target`` in MMD, shard by
    shard (module docstring). ``options`` go to the solver; executor arguments as
    :func:`~pruneopt.solvers.executors.map_tasks` (same result on every executor)."""
    check_executor(executor)
    ss = shard_set(shards, executor)
    keep = as_int(keep, "keep", low=1, high=ss.n)
    tgt = np.asarray(target, dtype=np.float64)
    if tgt.ndim != 2 or tgt.shape[1] != ss.dim or len(tgt) == 0:
        raise ValueError(f"target must be a non-empty 2-D array with {ss.dim} features (the "
                         f"shards' dimension), got shape {tgt.shape}")
    bw = bandwidth
    if kernel == "rbf" and isinstance(bandwidth, str) and bandwidth == "median":
        bw = pooled_bandwidth(ss, tgt, seed)
    sizes = np.array(ss.sizes)
    shares = apportion(sizes.astype(np.float64), sizes, keep)
    items = [(i, s, int(k)) for i, (s, k) in enumerate(zip(ss.sources, shares, strict=True))
             if k > 0]
    t = time.perf_counter()
    out = map_tasks(partial(shard_mmd, target=tgt, kernel=kernel, bandwidth=bw, solver=solver,
                            options=options),
                    items, executor=executor, workers=workers, address=address,
                    progress=progress, desc="MMD by shards")
    seconds = {"shards": time.perf_counter() - t}
    t = time.perf_counter()
    idx = np.sort(np.concatenate([o["indices"] + ss.offsets[it[0]]
                                  for o, it in zip(out, items, strict=True)]))
    union = MMDSelection(ss.rows(idx), tgt, keep=len(idx), kernel=kernel, bandwidth=bw)
    objective = float(union.objective(np.arange(len(idx))))
    seconds["rescore"] = time.perf_counter() - t
    objs = [o["objective"] for o in out]
    avg = float(sum(it[2] * v for it, v in zip(items, objs, strict=True)) / keep)
    return ShardedMMDResult(indices=idx, objective=objective, status="feasible",
                            shares=[int(k) for k in shares], shard_objectives=objs,
                            average_bound=avg, bandwidth=union.bandwidth, seconds=seconds,
                            peak_rss_mib=[o["rss"] for o in out])
