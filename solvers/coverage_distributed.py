"""Distributed maximum coverage over a sharded dataset: GreeDi (partition and merge).

Reference: Mirzasoleiman, Karbasi, Sarkar, Krause, "Distributed Submodular Maximization:
Identifying Representative Elements in Massive Data" (NeurIPS 2013); Barbosa, Ene, Nguyen,
Ward, "The Power of Randomization: Distributed Submodular Maximization on Massive Datasets"
(ICML 2015).

The problem is :class:`~pruneopt.formulations.coverage.CoverageSelection` on the union
``V = V_1 u ... u V_m`` of the shards: choose ``S``, ``|S| <= k``, maximizing
``f(S) = |{x in V : min_{c in S} ||x - c|| <= r}|`` (Euclidean, in the features' units).
A point kept from one shard covers points of every shard. :func:`greedi_coverage` runs

1. **per shard** (one task each, on ``executor``): the greedy max coverage of the shard's own
   points for ``k_i = min(local_keep or k, n_i)`` centres (the ``greedy`` solver on the
   shard's radius graph, exact or faiss IVF), giving the candidates ``A_i``;
2. **the cross stage** (one task per shard): the exact incidence between the shard's
   points and all candidates ``A = u_i A_i`` (which candidates lie within r of each point;
   faiss brute force, or an IVF index over the candidates with its recall measured), so
   that f is judged on the WHOLE data;
3. **the merge** (driver): the lazy greedy over ``A`` with f on all of V, to k centres, and
   the best single shard's ``A_i`` scored the same way; the better of the two is returned;
4. the final coverage of the answer, exact: on the incidence (exact with
   ``cross="exact"``), or, after an IVF incidence, re-scored shard by shard with
   :func:`~pruneopt.formulations.neighbors.exact_covered` (memory bounded by one shard).

**Guarantee.** GreeDi with greedy in both stages is ``(1 - 1/e)^2 / min(m, k)``-approximate
in the worst case when the local greedy maximizes the global f over each shard's points
(Mirzasoleiman et al. 2013, Thm. 4.2); with a random partition of the points into shards
the expected ratio is a constant, ``(1 - 1/e) / 2`` (Barbosa et al. 2015; Mirzasoleiman et
al. 2016). Here each shard's greedy judges coverage on its own points (that is what makes
the stage local), the decomposable setting whose guarantee needs the random partition
(Mirzasoleiman et al. 2013, Sec. 4.5): partition at random when the guarantee matters.
Both ratios assume every shard keeps ``k`` candidates (``local_keep >= keep``); with fewer
(to bound the candidates' memory at web scale) no worst-case ratio is claimed: ``ratio`` is
NaN and ``worst_case_bound`` the trivial ``total``, and the measured coverage against the
single-machine greedy is what one has.

**Bounds** (``GreeDiResult``), each labelled with what it bounds:

- ``worst_case_bound = objective / ratio``: a bound on the optimum over all of V, valid
  when the theorem's hypotheses hold (not a proof for an adversarial partition);
- ``merge_bound``: proven, ``f(S) + `` the k largest marginal gains left among the
  candidates, an upper bound on the best k centres chosen *among the candidates*;
- ``shard_bounds``: each shard's greedy bound, proven for the best coverage of that shard's
  points by k of its own points (their sum does not bound the optimum over V: a centre in
  one shard covers points of others);
- ``total``: the number of points, the trivial proven bound.

The status is never "optimal": ``status == "feasible"``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from pruneopt.formulations.base import as_int
from pruneopt.formulations.coverage import CoverageSelection
from pruneopt.formulations.geometry import as_radius
from pruneopt.formulations.neighbors import exact_covered, import_faiss
from pruneopt.solvers.executors import check_executor, executor_session, map_tasks
from pruneopt.solvers.registry import solve
from pruneopt.solvers.shards import ShardSet, load_shard, peak_rss_mib, shard_set

__all__ = ["GreeDiResult", "cross_incidence", "greedi_coverage", "greedi_ratio",
           "greedy_over_sets"]

E_RATIO = 1.0 - 1.0 / np.e
CROSS_METHODS = ("exact", "ivf")
CHUNK = 1 << 13


def greedi_ratio(shards: int, keep: int) -> float:
    """GreeDi's worst-case ratio ``(1 - 1/e)^2 / min(m, k)`` (Mirzasoleiman et al. 2013)."""
    return E_RATIO ** 2 / min(int(shards), int(keep))


@dataclass
class GreeDiResult:
    """The answer of :func:`greedi_coverage` (see the module docstring for the bounds).

    ``indices``: sorted global indices of the kept points (shard order numbering);
    ``objective``: points covered, exactly, over all shards; ``total``: all points;
    ``source``: "merge" or "shard i" (which answer won); ``seconds`` and
    ``peak_rss_mib`` (per task: the worker process's peak resident memory) per stage.
    """

    indices: np.ndarray
    objective: float
    total: int
    status: str
    source: str
    ratio: float
    worst_case_bound: float
    merge_objective: float
    merge_bound: float
    shard_objectives: list[float]
    shard_bounds: list[float]
    best_shard_objective: float
    candidates: int
    cross: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, list[float]] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Covered fraction of all points."""
        return self.objective / self.total


# ------------------------------------------------------------------ stage 1: per shard
def shard_greedy(shard: Any, *, index: int, keep: int, radius: float, graph_method: str,
                 graph_options: dict | None) -> dict[str, Any]:
    """Greedy max coverage of one shard's points by ``min(keep, n_i)`` of them."""
    X = load_shard(shard, index)
    k = min(keep, len(X))
    problem = CoverageSelection(X, keep=k, radius=radius, graph_method=graph_method,
                                graph_options=graph_options)
    sol = solve(problem, solver="greedy")
    sel = np.asarray(sol.decision, dtype=np.int64)
    return {"indices": sel, "points": X[sel], "objective": float(sol.objective),
            "bound": float(sol.bound), "rss": peak_rss_mib()}


# ------------------------------------------------------------------ stage 2: incidence
def cross_incidence(X: np.ndarray, C: np.ndarray, radius: float, *, method: str = "exact",
                    nprobe: int = 4, recall_sample: int = 500, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The pairs (row of X, row of C) with ``||x - c|| <= radius``: ``(rows, cols, info)``.

    Distances are taken in float32 by faiss (brute force ``IndexFlatL2`` for
    ``method="exact"``; ``IndexIVFFlat`` over C, ``2 sqrt(|C|)`` lists, ``nprobe`` probed,
    for "ivf") on coordinates centred on C's mean and divided by its spread, searched
    wider by a band ``tol = 2.5 (d + 2) 2^-24 2 (max |c|^2 + max |x|^2 + r^2)`` (units of
    the spread squared, above the float32 Gram rounding bound), and every pair inside the
    band re-decided in float64 from the coordinates: "exact" finds every true pair and no
    other; "ivf" only true pairs, and its recall (found / true pairs) is measured on
    ``recall_sample`` seeded rows of X against brute force (``info``).
    """
    faiss = import_faiss()
    n, d = X.shape
    mu = C.mean(axis=0)
    unit = float(np.abs(C - mu).max()) or 1.0
    C32 = np.ascontiguousarray((C - mu) / unit, dtype=np.float32)
    r2u = (radius / unit) ** 2
    csq = float(np.einsum("ij,ij->i", C32, C32).max())
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        flat = faiss.IndexFlatL2(d)
        flat.add(C32)
        index = flat
        if method == "ivf":
            nlist = int(min(max(1, 2 * np.sqrt(len(C))), max(1, len(C) // 32)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.seed, index.cp.niter = int(seed), 10
            index.cp.min_points_per_centroid = 1  # lists of ~32 candidates are enough
            index.train(C32)
            index.add(C32)
            index.nprobe = min(int(nprobe), nlist)
        rows, cols = pairs(index, X, C, mu, unit, r2u, csq, radius)
        info: dict[str, Any] = {"method": method, "pairs": int(len(rows))}
        if index is not flat:
            q = np.sort(np.random.default_rng(seed).choice(n, min(recall_sample, n),
                                                           replace=False))
            tr, _ = pairs(flat, X[q], C, mu, unit, r2u, csq, radius)
            fr, _ = pairs(index, X[q], C, mu, unit, r2u, csq, radius)
            info.update(true_pairs=int(len(tr)), found_pairs=int(len(fr)),
                        recall=(len(fr) / len(tr)) if len(tr) else 1.0, nprobe=index.nprobe)
    finally:
        faiss.omp_set_num_threads(saved)
    return rows, cols, info


def pairs(index, X: np.ndarray, C: np.ndarray, mu: np.ndarray, unit: float, r2u: float,
          csq: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The true pairs found by ``index`` (see :func:`cross_incidence`), chunk by chunk."""
    d = X.shape[1]
    rows, cols = [], []
    for s in range(0, len(X), CHUNK):
        Xs = np.asarray(X[s:s + CHUNK], dtype=np.float64)
        Q = np.ascontiguousarray((Xs - mu) / unit, dtype=np.float32)
        qsq = float(np.einsum("ij,ij->i", Q, Q).max())
        tol = 2.5 * (d + 2) * 6e-8 * 2.0 * (csq + qsq + r2u)
        lims, D, idx = index.range_search(Q, r2u + tol)
        qi = np.repeat(np.arange(len(Q), dtype=np.int64), np.diff(lims).astype(np.int64))
        idx = idx.astype(np.int64)
        ok = D <= r2u - tol
        band = np.flatnonzero(~ok)
        if len(band):
            diff = Xs[qi[band]] - C[idx[band]]
            ok[band] = np.einsum("ij,ij->i", diff, diff) <= radius * radius
        rows.append(qi[ok] + s)
        cols.append(idx[ok])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def shard_cross(shard: Any, *, index: int, C: np.ndarray, radius: float, method: str,
                nprobe: int, seed: int) -> dict[str, Any]:
    """One shard's incidence to the candidates, as candidate -> covered local rows (CSR
    over the candidates), plus the covered rows' count."""
    X = load_shard(shard, index)
    rows, cols, info = cross_incidence(X, C, radius, method=method, nprobe=nprobe, seed=seed)
    order = np.lexsort((rows, cols))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=len(C)))])
    return {"indptr": indptr.astype(np.int64), "rows": rows[order].astype(np.int64),
            "n": len(X), "info": info, "rss": peak_rss_mib()}


# ------------------------------------------------------------------ stage 3: merge
def greedy_over_sets(indptr: np.ndarray, members: np.ndarray, universe: int, keep: int
                     ) -> tuple[np.ndarray, float, float]:
    """Lazy greedy max coverage over sets ``members[indptr[j]:indptr[j+1]]`` of
    ``0..universe-1``: ``(picked sets in pick order, covered count, bound)``; ties go to
    the lower index. The bound, ``f(S) + `` the ``keep`` largest gains left, is an upper
    bound on the best ``keep`` of these sets (submodularity)."""
    covered = np.zeros(universe, dtype=bool)
    sizes = np.diff(indptr)
    heap = [(-int(sizes[j]), j) for j in range(len(sizes))]
    heapq.heapify(heap)
    picked: list[int] = []
    total = 0
    while heap and len(picked) < keep:
        neg, j = heapq.heappop(heap)
        gain = int((~covered[members[indptr[j]:indptr[j + 1]]]).sum())
        if gain == -neg or not heap or (-gain, j) <= heap[0]:
            if gain == 0:
                break
            picked.append(j)
            covered[members[indptr[j]:indptr[j + 1]]] = True
            total += gain
        else:
            heapq.heappush(heap, (-gain, j))
    fresh = np.concatenate([(~covered[members]).astype(np.int64), [0]])
    left = np.where(sizes > 0, np.add.reduceat(fresh, np.minimum(indptr[:-1], len(members))),
                    0)
    bound = total + float(np.sort(left)[::-1][:keep].sum())
    return np.array(picked, dtype=np.int64), float(total), bound


def covered_by(indptr: np.ndarray, members: np.ndarray, universe: int,
               chosen: np.ndarray) -> np.ndarray:
    """Mask of ``0..universe-1`` covered by the chosen sets."""
    mask = np.zeros(universe, dtype=bool)
    for j in chosen:
        mask[members[indptr[j]:indptr[j + 1]]] = True
    return mask


def rescore(shard: Any, *, index: int, points: np.ndarray, radius: float,
            known: np.ndarray) -> dict[str, Any]:
    """Exact count of the shard's points within ``radius`` of ``points`` (``known``:
    points already known covered)."""
    X = load_shard(shard, index)
    Z = np.vstack([X, points])
    mask = exact_covered(Z, radius, np.arange(len(X), len(Z)),
                         known=np.concatenate([known, np.ones(len(points), dtype=bool)]))
    return {"covered": int(mask[:len(X)].sum()), "rss": peak_rss_mib()}


# ------------------------------------------------------------------ the driver
def greedi_coverage(shards: Sequence[Any], keep: int, radius: float, *,
                    local_keep: int | None = None, executor: str | None = None,
                    workers: int | None = None, address: str | None = None,
                    graph_method: str = "exact", graph_options: dict | None = None,
                    cross: str = "exact", nprobe: int = 4, seed: int = 0,
                    progress: bool = False) -> GreeDiResult:
    """GreeDi max coverage of the union of ``shards`` with ``keep`` centres of ``radius``.

    ``shards``: a list of ``.npy`` paths (memory-mapped by each worker) or 2-D arrays, all
    of one dimension. ``local_keep``: centres per shard in stage 1 (default ``keep``).
    ``executor``/``workers``/``address``: as :func:`~pruneopt.solvers.executors.map_tasks`
    (one task per shard per stage; results are the same on every executor).
    ``graph_method``/``graph_options``: the shards' radius graphs (as
    :class:`CoverageSelection`). ``cross``: "exact" or "ivf" incidence of points to
    candidates (``nprobe`` lists probed; ``seed`` for its k-means and recall sample).
    Returns a :class:`GreeDiResult`; the module docstring states the guarantee and bounds.
    """
    check_executor(executor)
    ss: ShardSet = shard_set(shards, executor)
    keep = as_int(keep, "keep", low=1, high=ss.n)
    radius = as_radius(radius)
    lk = keep if local_keep is None else as_int(local_keep, "local_keep", low=1)
    if cross not in CROSS_METHODS:
        raise ValueError(f"cross must be one of {', '.join(CROSS_METHODS)}, got {cross!r}")
    run = partial(map_tasks, executor=executor, workers=workers, address=address,
                  progress=progress)
    with executor_session(executor, workers, address):
        return run_stages(ss, keep, radius, lk, run, graph_method=graph_method,
                          graph_options=graph_options, cross=cross, nprobe=nprobe, seed=seed)


def run_stages(ss: ShardSet, keep: int, radius: float, lk: int, run, *, graph_method: str,
               graph_options: dict | None, cross: str, nprobe: int, seed: int
               ) -> GreeDiResult:
    """The four stages of :func:`greedi_coverage` (``run``: ``map_tasks`` bound to the
    executor)."""
    items = list(enumerate(ss.sources))
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    local = run(lambda_free(shard_greedy, keep=lk, radius=radius, graph_method=graph_method,
                            graph_options=graph_options), items, desc="GreeDi: shards")
    seconds["shards"] = time.perf_counter() - t
    cand_global = np.concatenate([r["indices"] + ss.offsets[i] for i, r in enumerate(local)])
    C = np.vstack([r["points"] for r in local])
    t = time.perf_counter()
    inc = run(lambda_free(shard_cross, C=C, radius=radius, method=cross, nprobe=nprobe,
                          seed=seed), items, desc="GreeDi: cross")
    seconds["cross"] = time.perf_counter() - t
    t = time.perf_counter()
    indptr, members = join_incidence(inc, ss, len(C))
    picked, merged, merge_bound = greedy_over_sets(indptr, members, ss.n, keep)
    starts = np.concatenate([[0], np.cumsum([len(r["indices"]) for r in local])])
    shard_scores = [float(covered_by(indptr, members, ss.n, np.arange(a, b)).sum())
                    for a, b in zip(starts[:-1], starts[1:], strict=True)]
    best = int(np.argmax(shard_scores))
    if merged >= shard_scores[best]:
        chosen, source = picked, "merge"
    else:
        chosen, source = np.arange(starts[best], starts[best + 1]), f"shard {best}"
    seconds["merge"] = time.perf_counter() - t
    mask = covered_by(indptr, members, ss.n, chosen)
    objective = float(mask.sum())
    rss = {"shards": [r["rss"] for r in local], "cross": [r["rss"] for r in inc]}
    cross_info = merge_info([r["info"] for r in inc])
    if cross != "exact":
        t = time.perf_counter()
        pts = C[chosen]
        tasks = [(i, (s, mask[ss.offsets[i]:ss.offsets[i] + ss.sizes[i]]))
                 for i, s in enumerate(ss.sources)]
        out = run(lambda_free(rescore_item, points=pts, radius=radius), tasks,
                  desc="GreeDi: exact coverage")
        cross_info["objective_on_incidence"] = objective
        objective = float(sum(o["covered"] for o in out))
        rss["rescore"] = [o["rss"] for o in out]
        seconds["rescore"] = time.perf_counter() - t
    ratio = greedi_ratio(len(ss.sources), keep) if lk >= keep else float("nan")
    worst = min(float(ss.n), objective / ratio) if lk >= keep else float(ss.n)
    return GreeDiResult(
        indices=np.sort(cand_global[chosen]), objective=objective, total=ss.n,
        status="feasible", source=source, ratio=ratio,
        worst_case_bound=worst, merge_objective=merged,
        merge_bound=merge_bound, shard_objectives=[r["objective"] for r in local],
        shard_bounds=[r["bound"] for r in local], best_shard_objective=shard_scores[best],
        candidates=len(C), cross=cross_info, seconds=seconds, peak_rss_mib=rss)


def lambda_free(fn, **kwargs):
    """A picklable task ``(index, shard) -> fn(shard, index=index, **kwargs)``."""
    return partial(call_indexed, fn, kwargs)


def call_indexed(fn, kwargs: dict, item: tuple[int, Any]) -> Any:
    i, shard = item
    return fn(shard, index=i, **kwargs)


def rescore_item(item: tuple[Any, np.ndarray], *, index: int, points: np.ndarray,
                 radius: float) -> dict[str, Any]:
    shard, known = item
    return rescore(shard, index=index, points=points, radius=radius, known=known)


def join_incidence(inc: list[dict], ss: ShardSet, n_cand: int) -> tuple[np.ndarray,
                                                                       np.ndarray]:
    """The per-shard incidences joined: candidate -> covered global rows (CSR, rows in
    increasing order)."""
    cols = np.concatenate([np.repeat(np.arange(n_cand), np.diff(r["indptr"])) for r in inc])
    rows = np.concatenate([r["rows"] + ss.offsets[i] for i, r in enumerate(inc)])
    members = rows[np.argsort(cols, kind="stable")]
    counts = np.bincount(cols, minlength=n_cand)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), members


def merge_info(infos: list[dict]) -> dict[str, Any]:
    """The shards' incidence reports summed (recall pooled over the shards' samples)."""
    out: dict[str, Any] = {"method": infos[0]["method"],
                           "pairs": int(sum(i["pairs"] for i in infos))}
    if "true_pairs" in infos[0]:
        tp = sum(i["true_pairs"] for i in infos)
        fp = sum(i["found_pairs"] for i in infos)
        out.update(true_pairs=tp, found_pairs=fp, recall=fp / tp if tp else 1.0,
                   nprobe=infos[0]["nprobe"])
    return out
