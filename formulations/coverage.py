"""Coverage coresets: choose data points whose radius-``r`` balls cover the data.

Reference: Zheng et al., "Coverage-centric Coreset Selection for High Pruning Rates"
(ICLR 2023). Two forms of geometric set cover over the points ``x_1..x_n`` (rows of
``features``, Euclidean distance, in the units of the features):

- :class:`CoverageSelection` (maximum coverage, ``sense="max"``)::

      maximize    sum_i w_i y_i
      subject to  y_i <= sum_{j in N(i)} x_j      for every point i
                  sum_j x_j <= k
                  x_j in {0, 1},  0 <= y_i <= 1

- :class:`CoverSelection` (partial set cover, ``sense="min"``)::

      minimize    sum_j x_j
      subject to  y_i <= sum_{j in N(i)} x_j      for every point i
                  sum_i w_i y_i >= cover * sum_i w_i
                  x_j in {0, 1},  0 <= y_i <= 1

where ``N(i) = {j : ||x_i - x_j|| <= r}`` (it contains ``i``: a point covers itself). The
neighbour graph is built once per problem by :func:`radius_graph` (exact, sparse).

:func:`coverage_curve` is the paper's evaluation: the fraction of the full data within
distance ``r`` of the coreset, as a function of ``r``, and its normalised area under the curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import Formulation, as_array, as_int
from pruneopt.formulations.standard import MILPExportable, MILPForm

__all__ = [
    "CoverSelection",
    "CoverageCurve",
    "CoverageSelection",
    "coverage_curve",
    "nearest_distances",
    "radius_for_budget",
    "radius_graph",
]

#: Default cap on the number of stored neighbour entries (directed, with the diagonal);
#: about 5 bytes each. Raise it, or lower the radius, for denser graphs.
MAX_EDGES = 100_000_000
_KDTREE_MAX_DIM = 8


def _features(features: Any) -> np.ndarray:
    X = as_array(features, "features")
    if X.ndim == 1:
        raise ValueError(
            f"features must be 2-D (n_points, n_dims), got shape {X.shape}; "
            "use features.reshape(-1, 1) for one-dimensional data"
        )
    if X.ndim != 2:
        raise ValueError(f"features must be 2-D (n_points, n_dims), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"features is empty (shape {X.shape}); give at least one point")
    return X


def _radius(radius: Any) -> float:
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a positive number, got {radius!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    return r


def _weights(weights: Any, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = as_array(weights, "weights", ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"weights must have one entry per point ({n}), got {w.shape[0]}")
    if (w < 0).any():
        raise ValueError("weights must be >= 0 (a point's value when covered)")
    if not w.sum() > 0:
        raise ValueError("weights must have a positive sum")
    return w


# ---------------------------------------------------------------------------------------
# The radius neighbour graph
# ---------------------------------------------------------------------------------------


def _sqdist_exact(X: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """``||X[i] - X[j]||^2`` computed from differences (no cancellation), in chunks."""
    out = np.empty(len(i))
    for s in range(0, len(i), chunk):
        d = X[i[s:s + chunk]] - X[j[s:s + chunk]]
        out[s:s + chunk] = np.einsum("ij,ij->i", d, d)
    return out


def _pairs_kdtree(X: np.ndarray, r: float, max_edges: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    tree = cKDTree(X)
    pairs = tree.query_pairs(r, output_type="ndarray")
    if 2 * len(pairs) + len(X) > max_edges:
        raise _too_dense(len(X), 2 * len(pairs) + len(X), max_edges, r)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _too_dense(n: int, edges: int, max_edges: int, r: float) -> ValueError:
    return ValueError(
        f"the radius graph at radius {r:g} has more than {max_edges:,} neighbour entries "
        f"(>= {edges:,} for {n:,} points, {edges / n:.0f} per point); use a smaller radius "
        f"(see radius_for_budget) or pass a larger max_edges if you have the memory "
        f"(about 5 bytes per entry)"
    )


def _pairs_blocked(X: np.ndarray, r: float, max_edges: int, seed: int,
                   progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j with ``||x_i - x_j|| <= r``, exact, for any dimension.

    The points are grouped around ``m ~ n / 48`` centres (two Lloyd steps from a seeded
    sample, in float32: the grouping only affects speed). By the triangle inequality a point
    x has no neighbour in group b when ``d(x, c_b) - rad_b > r``, so only the surviving
    blocks are computed, with a float32 Gram product; every pair within a band of the
    threshold that covers the float32 rounding error is re-checked in float64 from
    coordinate differences, so the graph is exact.
    """
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    r2 = r * r
    scale = float(sq.max()) + r2
    tol = 1e-4 * scale  # float32 Gram error is below ~(d + 2) * 6e-8 * 4 * max|x|^2
    margin = 1e-2 * np.sqrt(scale)  # on distances (sqrt of the squared-distance error)
    m = int(min(max(1, n // 48), 4096))
    X32 = Xc.astype(np.float32)
    rng = np.random.default_rng(seed)
    if m == 1:
        lab = np.zeros(n, dtype=np.int64)
        C = Xc.mean(axis=0, keepdims=True)
    else:
        C32 = X32[rng.choice(n, m, replace=False)]
        for _ in range(2):
            lab = _nearest_centre(X32, C32)
            cnt = np.bincount(lab, minlength=m).astype(np.float32)
            S = sp.csr_array((np.ones(n, dtype=np.float32), (lab, np.arange(n))), shape=(m, n))
            newC = (S @ X32) / np.maximum(cnt, 1.0)[:, None]
            C32 = np.where(cnt[:, None] > 0, newC, C32).astype(np.float32)
        lab = _nearest_centre(X32, C32)
        C = C32.astype(np.float64)
    order = np.argsort(lab, kind="stable")
    Xs = Xc[order]
    Xs32 = X32[order]
    sqs32 = sq[order].astype(np.float32)
    labs = lab[order]
    starts = np.searchsorted(labs, np.arange(m + 1))
    C32 = C.astype(np.float32)
    csq32 = np.einsum("ij,ij->i", C32, C32)
    diff = Xs - C[labs]
    own = np.sqrt(np.einsum("ij,ij->i", diff, diff))  # exact distance to the own centre
    rad = np.zeros(m)
    np.maximum.at(rad, labs, own)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    total = n
    groups = range(m)
    if progress:
        from tqdm.auto import tqdm

        groups = tqdm(groups, desc="radius graph", unit="group")
    for a in groups:
        s0, s1 = starts[a], starts[a + 1]
        if s1 == s0:
            continue
        Xa = Xs32[s0:s1]
        Da2 = sqs32[s0:s1, None] + csq32[None, :] - 2.0 * (Xa @ C32.T)
        Da = np.sqrt(np.maximum(Da2, 0.0))
        ok = (Da - rad[None, :] <= r + margin).any(axis=0)
        ok[:a] = False  # each unordered pair of groups once (a <= b)
        bs = np.flatnonzero(ok)
        if len(bs) == 0:
            continue
        lens = starts[bs + 1] - starts[bs]
        colidx = np.repeat(starts[bs] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        colidx += np.arange(lens.sum())
        G = Xa @ Xs32[colidx].T
        G *= -2.0
        G += sqs32[None, colidx]
        G += sqs32[s0:s1, None]
        ii, jj = np.nonzero(G <= r2 + tol)
        gi = ii + s0
        gj = colidx[jj]
        keep = gi < gj
        gi, gj = gi[keep], gj[keep]
        near = G[ii[keep], jj[keep]] >= r2 - tol
        if near.any():
            # from the original coordinates, exactly as a brute-force check would compute
            exact = _sqdist_exact(X, order[gi[near]], order[gj[near]]) <= r2
            drop = np.flatnonzero(near)[~exact]
            if len(drop):
                mask = np.ones(len(gi), dtype=bool)
                mask[drop] = False
                gi, gj = gi[mask], gj[mask]
        total += 2 * len(gi)
        if total > max_edges:
            raise _too_dense(n, total, max_edges, r)
        rows.append(order[gi])
        cols.append(order[gj])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _nearest_centre(X: np.ndarray, C: np.ndarray, chunk: int = 4096) -> np.ndarray:
    csq = np.einsum("ij,ij->i", C, C)
    lab = np.empty(len(X), dtype=np.int64)
    for s in range(0, len(X), chunk):
        D = csq[None, :] - 2.0 * (X[s:s + chunk] @ C.T)
        lab[s:s + chunk] = D.argmin(axis=1)
    return lab


class _one_blas_thread:
    """Limit BLAS to one thread (many small products: threads only contend)."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits

            self._ctx = threadpool_limits(1, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            self._ctx = None
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.unregister()
        return False


def radius_graph(features: Any, radius: float, *, method: str = "auto",
                 max_edges: int = MAX_EDGES, seed: int = 0,
                 progress: bool = False) -> sp.csr_array:
    """The radius neighbour graph: ``G[i, j] = True`` iff ``||x_i - x_j|| <= radius``.

    Symmetric, with the diagonal (every point is its own neighbour), stored as a boolean
    ``scipy.sparse.csr_array`` (int32 indices when they fit: about 5 bytes per entry).

    ``method``: ``"kdtree"`` (scipy ``cKDTree.query_pairs``; fast in low dimension),
    ``"blocked"`` (exact float64 distances on the blocks that survive a triangle-inequality
    test against ~n/48 cluster centres; fast in high dimension, where k-d trees degrade to
    brute force), or ``"auto"`` (k-d tree up to 8 dimensions, blocked above). Both are exact.
    Raises ``ValueError`` when the graph would exceed ``max_edges`` stored entries.
    """
    X = _features(features)
    r = _radius(radius)
    max_edges = as_int(max_edges, "max_edges", low=1)
    n, d = X.shape
    if method == "auto":
        method = "kdtree" if d <= _KDTREE_MAX_DIM else "blocked"
    if method == "kdtree":
        i, j = _pairs_kdtree(X, r, max_edges)
    elif method == "blocked":
        with _one_blas_thread():
            i, j = _pairs_blocked(X, r, max_edges, seed, progress)
    else:
        raise ValueError(f"method must be 'auto', 'kdtree' or 'blocked', got {method!r}")
    diag = np.arange(n, dtype=np.int64)
    rows = np.concatenate([i, j, diag])
    cols = np.concatenate([j, i, diag])
    g = sp.coo_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n)).tocsr()
    g.sort_indices()
    if g.nnz < 2**31 - 1 and g.indices.dtype != np.int32:
        g = sp.csr_array((g.data, g.indices.astype(np.int32), g.indptr.astype(np.int32)),
                         shape=(n, n))
    return g


def radius_for_budget(features: Any, budget: int, *, seed: int = 0,
                      sample: int = 5_000_000) -> float:
    """A radius at which the average neighbourhood holds about ``n / budget`` points.

    Then ``budget`` disjoint balls could just cover the data: a natural scale for a coreset
    of that size. Estimated as a quantile of the distances from a seeded random sample of
    rows to all points (about ``sample`` distances; all pairs when ``n`` is small).
    """
    X = _features(features)
    n = X.shape[0]
    budget = as_int(budget, "budget", low=1, high=n)
    if n < 2:
        raise ValueError("radius_for_budget needs at least two points")
    p = (n / budget - 1.0) / (n - 1.0)
    rows = min(n, max(64, int(sample) // n))
    rng = np.random.default_rng(seed)
    pick = np.arange(n) if rows == n else np.sort(rng.choice(n, rows, replace=False))
    Xc = (X - X.mean(axis=0)).astype(np.float32)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    with _one_blas_thread():
        D2 = sq[pick, None] + sq[None, :] - 2.0 * (Xc[pick] @ Xc.T)
    D2[np.arange(rows), pick] = np.inf  # not a point and itself
    D2 = D2.ravel()
    D2 = D2[np.isfinite(D2)]
    q = float(np.quantile(D2, min(max(p, 0.0), 1.0)))
    r = float(np.sqrt(max(q, 0.0)))
    if r <= 0:
        pos = D2[D2 > 0]
        r = float(np.sqrt(pos.min())) if len(pos) else 1.0
    return r


# ---------------------------------------------------------------------------------------
# The paper's evaluation: coverage of the full data as a function of the radius
# ---------------------------------------------------------------------------------------


def nearest_distances(features: Any, selected: Any, *, chunk: int = 2048) -> np.ndarray:
    """For every point, the Euclidean distance to its nearest selected point (float64)."""
    X = _features(features)
    sel = _indices(selected, X.shape[0], "selected")
    if len(sel) == 0:
        raise ValueError("selected is empty; select at least one point")
    Y = X[sel]
    if X.shape[1] <= _KDTREE_MAX_DIM:
        from scipy.spatial import cKDTree

        return cKDTree(Y).query(X, k=1)[0]
    mu = X.mean(axis=0)
    Xc, Yc = X - mu, Y - mu
    ysq = np.einsum("ij,ij->i", Yc, Yc)
    out = np.empty(X.shape[0])
    for s in range(0, X.shape[0], chunk):
        B = Xc[s:s + chunk]
        D = ysq[None, :] - 2.0 * (B @ Yc.T)
        k = D.argmin(axis=1)
        diff = B - Yc[k]  # exact distance to the arg-min (Gram only picks it)
        out[s:s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    out[sel] = 0.0
    return out


@dataclass
class CoverageCurve:
    """Coverage of the full data by a coreset: ``coverage[t]`` is the (weighted) fraction of
    points within distance ``radii[t]`` of the coreset; ``auc`` is the area under the curve
    divided by the radius range (1.0 = everything covered at every radius)."""

    radii: np.ndarray
    coverage: np.ndarray
    auc: float


def coverage_curve(features: Any, selected: Any, radii: Any = None, *, r_max: float | None = None,
                   num: int = 101, weights: Any = None) -> CoverageCurve:
    """The coverage metric of Zheng et al. (2023): ``P_r(S)``, the fraction of the data within
    distance ``r`` of the coreset ``S``, over a grid of radii, and its normalised AUC.

    ``radii`` (increasing, >= 0) is the grid; by default ``num`` points on ``[0, r_max]``,
    where ``r_max`` defaults to the median distance of the data to its mean (a property of
    the data alone, so curves of different coresets share the grid). ``weights`` weight the
    points (default 1 each).
    """
    X = _features(features)
    n = X.shape[0]
    w = _weights(weights, n)
    dist = nearest_distances(X, selected)
    if radii is None:
        if r_max is None:
            r_max = float(np.median(np.linalg.norm(X - X.mean(axis=0), axis=1)))
            r_max = r_max if r_max > 0 else 1.0
        r_max = _radius(r_max)
        num = as_int(num, "num", low=2)
        radii = np.linspace(0.0, r_max, num)
    else:
        radii = as_array(radii, "radii", ndim=1)
        if len(radii) < 2 or (np.diff(radii) <= 0).any() or radii[0] < 0:
            raise ValueError("radii must be at least two increasing numbers >= 0")
    ww = np.ones(n) if w is None else w
    order = np.argsort(dist)
    cum = np.concatenate(([0.0], np.cumsum(ww[order])))
    cov = cum[np.searchsorted(dist[order], radii, side="right")] / cum[-1]
    span = radii[-1] - radii[0]
    auc = float(np.sum((cov[1:] + cov[:-1]) * np.diff(radii)) / 2.0 / span)
    return CoverageCurve(radii=radii, coverage=cov, auc=auc)


# ---------------------------------------------------------------------------------------
# The formulations
# ---------------------------------------------------------------------------------------


def _indices(decision: Any, n: int, name: str = "decision") -> np.ndarray:
    """``decision`` (indices, or a boolean mask of length n) as sorted unique int64 indices."""
    if hasattr(decision, "detach") and hasattr(decision, "cpu"):
        decision = decision.detach().cpu().numpy()
    arr = np.asarray(decision)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"a boolean {name} must have shape ({n},), got {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of point indices, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(
                arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer point indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} has indices outside [0, {n - 1}]")
    uniq = np.unique(arr)
    if len(uniq) != len(arr):
        raise ValueError(f"{name} selects some points more than once")
    return uniq


class _RadiusCover(MILPExportable, Formulation):
    """Shared data of both coverage forms: points, radius, weights, neighbour graph."""

    #: above this many points ``solve(problem)`` defaults to an approximate solver (the ILP
    #: proves the optimum on digits' 1,797 points in seconds, and finds nothing in minutes
    #: at 50,000); name an exact solver to run it anyway
    EXACT_DEFAULT_MAX_N = 2_000

    def exact_by_default(self) -> bool:
        return self.n <= self.EXACT_DEFAULT_MAX_N

    def __init__(self, features: Any, radius: float, weights: Any = None, *, graph: Any = None,
                 max_edges: int = MAX_EDGES, progress: bool = False) -> None:
        self.features = _features(features)
        self.n = int(self.features.shape[0])
        self.radius = _radius(radius)
        self._w = _weights(weights, self.n)
        self.max_edges = as_int(max_edges, "max_edges", low=1)
        self.progress = bool(progress)
        self._graph: sp.csr_array | None = None
        if graph is not None:
            g = sp.csr_array(graph)
            if g.shape != (self.n, self.n):
                raise ValueError(f"graph must be {self.n} x {self.n}, got {g.shape}")
            g = sp.csr_array((g != 0) + sp.eye_array(self.n, dtype=bool, format="csr"))
            g.sort_indices()
            self._graph = g

    @property
    def weights(self) -> np.ndarray:
        """Weight of each point (ones when none were given)."""
        return np.ones(self.n) if self._w is None else self._w

    @property
    def weighted(self) -> bool:
        return self._w is not None

    @property
    def total_weight(self) -> float:
        return float(self.weights.sum())

    @property
    def graph(self) -> sp.csr_array:
        """The radius neighbour graph (built on first use, see :func:`radius_graph`)."""
        if self._graph is None:
            self._graph = radius_graph(self.features, self.radius, max_edges=self.max_edges,
                                       progress=self.progress)
        return self._graph

    def neighbors(self, i: int) -> np.ndarray:
        """Indices of the points within ``radius`` of point ``i`` (including ``i``)."""
        g = self.graph
        return g.indices[g.indptr[i]:g.indptr[i + 1]].astype(np.int64)

    def degree(self) -> np.ndarray:
        """Number of points each point covers (``|N(j)|``)."""
        return np.diff(self.graph.indptr).astype(np.int64)

    def covered(self, decision: Any) -> np.ndarray:
        """Boolean mask of the points within ``radius`` of a selected point."""
        sel = _indices(decision, self.n)
        g = self.graph
        mask = np.zeros(self.n, dtype=bool)
        if len(sel):
            starts, ends = g.indptr[sel], g.indptr[sel + 1]
            lens = ends - starts
            idx = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            idx += np.arange(lens.sum())
            mask[g.indices[idx]] = True
        return mask

    def covered_weight(self, decision: Any) -> float:
        """Total weight of the covered points."""
        return float(self.weights[self.covered(decision)].sum())

    def _cover_rows(self) -> sp.csr_array:
        """Rows ``y_i - sum_{j in N(i)} x_j <= 0`` over variables ``[x, y]``."""
        g = sp.csr_array(self.graph, dtype=np.float64)
        return sp.hstack([-g, sp.eye_array(self.n, format="csr")], format="csr")

    def _decode(self, x: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.asarray(x)[: self.n] > 0.5).astype(np.int64)


class CoverageSelection(_RadiusCover):
    """Maximum coverage: at most ``budget`` points whose radius balls cover the most data.

    ``features``: (n, d) array (numpy or torch), Euclidean distance in its units.
    ``budget`` k: the maximum number of selected points. ``radius`` r > 0.
    ``weights``: optional non-negative value of each point when covered (default 1: the
    objective is then the number of covered points).
    ``graph``: optional precomputed (n, n) radius graph to reuse across budgets.
    Decision: sorted array of selected indices. Objective: covered count (or weight).
    """

    sense = "max"

    def __init__(self, features: Any, budget: int, radius: float, weights: Any = None, *,
                 graph: Any = None, max_edges: int = MAX_EDGES, progress: bool = False) -> None:
        super().__init__(features, radius, weights, graph=graph, max_edges=max_edges,
                         progress=progress)
        self.budget = as_int(budget, "budget", low=1)
        if self.budget > self.n:
            raise ValueError(
                f"budget ({self.budget}) is larger than the number of points ({self.n}); "
                f"use budget <= {self.n}"
            )

    def objective(self, decision: Any) -> float:
        return self.covered_weight(decision)

    def check(self, decision: Any) -> np.ndarray:
        sel = _indices(decision, self.n)
        if len(sel) > self.budget:
            raise ValueError(f"{len(sel)} points selected, more than the budget {self.budget}")
        return sel

    def math(self) -> str:
        what = "w_i y_i" if self.weighted else "y_i"
        return (
            f"Maximum coverage: n = {self.n} points in R^{self.features.shape[1]}, "
            f"radius r = {self.radius:g}, budget k = {self.budget}\n"
            f"maximize sum_i {what}   (covered {'weight' if self.weighted else 'points'})\n"
            f"subject to y_i <= sum_(j in N(i)) x_j  for all i,  "
            f"N(i) = {{j : ||x_i - x_j|| <= r}}\n"
            f"sum_j x_j <= {self.budget},  x in {{0,1}}^n,  0 <= y <= 1"
        )

    def latex(self) -> str:
        w = "w_i\\," if self.weighted else ""
        return (
            "$$\\begin{aligned}\\max_{x,y}\\ & \\sum_{i=1}^{" + str(self.n) + "} " + w + "y_i\\\\"
            "\\text{s.t. } & y_i \\le \\sum_{j \\in N(i)} x_j,\\quad N(i) = \\{j : "
            "\\lVert x_i - x_j \\rVert \\le " + f"{self.radius:g}" + "\\}\\\\"
            "& \\textstyle\\sum_j x_j \\le " + str(self.budget) + ",\\quad x \\in \\{0,1\\}^n,"
            "\\ 0 \\le y \\le 1\\end{aligned}$$"
        )

    def to_milp(self) -> MILPForm:
        n = self.n
        budget_row = sp.csr_array(np.concatenate([np.ones(n), np.zeros(n)])[None, :])
        A = sp.vstack([self._cover_rows(), budget_row], format="csr")
        return MILPForm(
            c=np.concatenate([np.zeros(n), self.weights]),
            A=A,
            row_lower=np.full(n + 1, -np.inf),
            row_upper=np.concatenate([np.zeros(n), [float(self.budget)]]),
            lower=np.zeros(2 * n),
            upper=np.ones(2 * n),
            integrality=np.concatenate([np.ones(n), np.zeros(n)]).astype(np.int8),
            sense="max",
            decode=self._decode,
        )

    def pyomo_model(self):
        """A readable Pyomo model: ``x[j]`` (select j), ``y[i]`` (i covered), ``cover[i]``,
        ``budget``, objective ``covered``. (``to_pyomo()`` is the matrix-built model that
        the generic ``"pyomo"`` solver uses.)"""
        import pyomo.environ as pyo

        m = pyo.ConcreteModel(name="CoverageSelection")
        m.P = pyo.RangeSet(0, self.n - 1)
        m.x = pyo.Var(m.P, domain=pyo.Binary)
        m.y = pyo.Var(m.P, bounds=(0, 1))
        w = self.weights
        m.covered = pyo.Objective(expr=sum(float(w[i]) * m.y[i] for i in range(self.n)),
                                  sense=pyo.maximize)
        m.cover = pyo.Constraint(
            m.P, rule=lambda _m, i: _m.y[i] <= sum(_m.x[int(j)] for j in self.neighbors(i)))
        m.budget = pyo.Constraint(expr=sum(m.x[j] for j in m.P) <= self.budget)
        return m


class CoverSelection(_RadiusCover):
    """Partial set cover: the fewest points whose radius balls cover at least a fraction
    ``cover`` of the data (of its total weight when ``weights`` are given).

    ``cover`` in (0, 1]; 1 is classical set cover. Decision: sorted selected indices.
    Objective: the number of selected points (``sense="min"``). Always feasible (every
    point covers itself).
    """

    sense = "min"

    def __init__(self, features: Any, radius: float, cover: float = 1.0, weights: Any = None, *,
                 graph: Any = None, max_edges: int = MAX_EDGES, progress: bool = False) -> None:
        super().__init__(features, radius, weights, graph=graph, max_edges=max_edges,
                         progress=progress)
        try:
            c = float(cover)
        except (TypeError, ValueError):
            raise ValueError(f"cover must be a fraction in (0, 1], got {cover!r}") from None
        if not (0.0 < c <= 1.0):
            raise ValueError(f"cover must be a fraction in (0, 1], got {cover!r}")
        self.cover = c

    @property
    def required(self) -> float:
        """The weight that must be covered: ``cover * total weight`` (rounded up to an
        integer when the weights are integers, so ``cover=0.5`` of 7 points means 4)."""
        need = self.cover * self.total_weight
        w = self.weights
        if np.all(w == np.round(w)):
            return float(np.ceil(need - 1e-9))
        return need

    def objective(self, decision: Any) -> float:
        return float(len(_indices(decision, self.n)))

    def check(self, decision: Any) -> np.ndarray:
        sel = _indices(decision, self.n)
        got = self.covered_weight(sel)
        if got < self.required - 1e-9 * max(1.0, self.total_weight):
            raise ValueError(
                f"the selection covers {got:g} of the required {self.required:g} "
                f"({self.cover:.0%} of {self.total_weight:g}); select more points"
            )
        return sel

    def math(self) -> str:
        return (
            f"Partial set cover: n = {self.n} points in R^{self.features.shape[1]}, "
            f"radius r = {self.radius:g}, cover >= {self.cover:g}\n"
            f"minimize sum_j x_j   (selected points)\n"
            f"subject to y_i <= sum_(j in N(i)) x_j  for all i,  "
            f"N(i) = {{j : ||x_i - x_j|| <= r}}\n"
            f"sum_i {'w_i ' if self.weighted else ''}y_i >= {self.required:g},  "
            f"x in {{0,1}}^n,  0 <= y <= 1"
        )

    def latex(self) -> str:
        w = "w_i\\," if self.weighted else ""
        return (
            "$$\\begin{aligned}\\min_{x,y}\\ & \\sum_{j=1}^{" + str(self.n) + "} x_j\\\\"
            "\\text{s.t. } & y_i \\le \\sum_{j \\in N(i)} x_j,\\quad N(i) = \\{j : "
            "\\lVert x_i - x_j \\rVert \\le " + f"{self.radius:g}" + "\\}\\\\"
            "& \\textstyle\\sum_i " + w + "y_i \\ge " + f"{self.required:g}" +
            ",\\quad x \\in \\{0,1\\}^n,\\ 0 \\le y \\le 1\\end{aligned}$$"
        )

    def to_milp(self) -> MILPForm:
        n = self.n
        cover_row = sp.csr_array(np.concatenate([np.zeros(n), self.weights])[None, :])
        A = sp.vstack([self._cover_rows(), cover_row], format="csr")
        return MILPForm(
            c=np.concatenate([np.ones(n), np.zeros(n)]),
            A=A,
            row_lower=np.concatenate([np.full(n, -np.inf), [self.required]]),
            row_upper=np.concatenate([np.zeros(n), [np.inf]]),
            lower=np.zeros(2 * n),
            upper=np.ones(2 * n),
            integrality=np.concatenate([np.ones(n), np.zeros(n)]).astype(np.int8),
            sense="min",
            decode=self._decode,
        )

    def pyomo_model(self):
        """A readable Pyomo model: ``x[j]``, ``y[i]``, ``cover[i]``, ``enough``, ``size``."""
        import pyomo.environ as pyo

        m = pyo.ConcreteModel(name="CoverSelection")
        m.P = pyo.RangeSet(0, self.n - 1)
        m.x = pyo.Var(m.P, domain=pyo.Binary)
        m.y = pyo.Var(m.P, bounds=(0, 1))
        w = self.weights
        m.size = pyo.Objective(expr=sum(m.x[j] for j in m.P), sense=pyo.minimize)
        m.cover = pyo.Constraint(
            m.P, rule=lambda _m, i: _m.y[i] <= sum(_m.x[int(j)] for j in self.neighbors(i)))
        m.enough = pyo.Constraint(
            expr=sum(float(w[i]) * m.y[i] for i in range(self.n)) >= self.required)
        return m
