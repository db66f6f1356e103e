"""Geometry of point sets, shared by the coverage formulations and their solvers.

Points are the rows of ``features`` (Euclidean distance, in the units of the features):

- :func:`radius_graph`: the exact radius neighbour graph ``G[i, j] = ||x_i - x_j|| <= r``
  (k-d tree in low dimension, a blocked triangle-inequality search in high dimension);
- :func:`default_radius`: a radius at which about ``n / keep`` points fall in a ball;
- :func:`nearest_distances` and :func:`coverage_curve`: the coverage metric of Zheng et
  al. (2023), the fraction of the data within ``r`` of a coreset as a function of ``r``;
- validation of features, radii, weights and index decisions (``as_*``), and
  :class:`one_blas_thread` (many small products run faster on one BLAS thread).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import as_array, as_int, finite_scale, to_numpy

__all__ = [
    "MAX_EDGES",
    "CoverageCurve",
    "as_features",
    "as_indices",
    "as_radius",
    "as_weights",
    "coverage_curve",
    "default_radius",
    "nearest_distances",
    "one_blas_thread",
    "radius_for_budget",
    "radius_graph",
]

MAX_EDGES = 100_000_000
_KDTREE_MAX_DIM = 8


def as_features(features: Any) -> np.ndarray:
    """``features`` as a finite float64 (n_points, n_dims) array whose squared distances
    fit in float64, else ``ValueError``."""
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
    with np.errstate(over="ignore", invalid="ignore"):
        spread = float(np.abs(X - X.mean(axis=0)).max()) if X.size else 0.0
        ok = np.isfinite(spread * spread * X.shape[1] * 4.0)
    if not ok:
        raise ValueError(
            f"features are too large in scale: squared distances overflow float64 (spread "
            f"{spread:.3g}); divide the features by a constant (and the radius with them)")
    return X


def as_radius(radius: Any) -> float:
    """``radius`` as a finite float > 0, else ``ValueError``."""
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a positive number, got {radius!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    return r



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
    unit = float(np.abs(Xc).max()) or 1.0  # float32 below: work in units of the spread
    Xc = Xc / unit
    r_exact2 = r * r
    r = r / unit
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
            exact = _sqdist_exact(X, order[gi[near]], order[gj[near]]) <= r_exact2
            drop = np.flatnonzero(near)[~exact]
            if len(drop):
                mask = np.ones(len(gi), dtype=bool)
                mask[drop] = False
                gi, gj = gi[mask], gj[mask]
        total += 2 * len(gi)
        if total > max_edges:
            raise _too_dense(n, total, max_edges, r * unit)
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


@cache
def blas_controller():
    """threadpoolctl's controller, made once per process (making one reads the loaded
    libraries, ~4 ms: too much for a solve of 10 ms). BLAS libraries loaded after its first
    use are not limited by :class:`one_blas_thread`."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class one_blas_thread:
    """Limit BLAS to one thread (many small products: threads only contend)."""

    def __enter__(self):
        try:
            self._ctx = blas_controller().limit(limits=1, user_api="blas")
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
    X = as_features(features)
    r = as_radius(radius)
    max_edges = as_int(max_edges, "max_edges", low=1)
    n, d = X.shape
    if method == "auto":
        method = "kdtree" if d <= _KDTREE_MAX_DIM else "blocked"
    if method == "kdtree":
        i, j = _pairs_kdtree(X, r, max_edges)
    elif method == "blocked":
        with one_blas_thread():
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


def default_radius(features: Any, keep: int, *, seed: int = 0,
                   sample: int = 5_000_000) -> float:
    """A radius at which the average neighbourhood holds about ``n / keep`` points.

    Then ``keep`` disjoint balls could just cover the data: a natural scale for a coreset
    of that size. Estimated as a quantile of the distances from a seeded random sample of
    rows to all points (about ``sample`` distances; all pairs when ``n`` is small), in the
    units of the features (scaling the features scales the radius by the same factor).
    """
    X = as_features(features)
    n = X.shape[0]
    keep = as_int(keep, "keep", low=1, high=n)
    if n < 2:
        raise ValueError("default_radius needs at least two points")
    p = (n / keep - 1.0) / (n - 1.0)
    rows = min(n, max(64, int(sample) // n))
    rng = np.random.default_rng(seed)
    pick = np.arange(n) if rows == n else np.sort(rng.choice(n, rows, replace=False))
    Xc = X - X.mean(axis=0)
    unit = float(np.abs(Xc).max()) or 1.0  # float32 below: work in units of the spread
    Xc = (Xc / unit).astype(np.float32)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    with one_blas_thread():
        D2 = sq[pick, None] + sq[None, :] - 2.0 * (Xc[pick] @ Xc.T)
    D2[np.arange(rows), pick] = np.inf  # not a point and itself
    D2 = D2.ravel()
    D2 = D2[np.isfinite(D2)]
    q = float(np.quantile(D2, min(max(p, 0.0), 1.0)))
    r = float(np.sqrt(max(q, 0.0)))
    if r <= 0:
        pos = D2[D2 > 0]
        r = float(np.sqrt(pos.min())) if len(pos) else 1.0
    return r * unit


def radius_for_budget(features: Any, budget: int, **kwargs: Any) -> float:
    """Deprecated name of :func:`default_radius` (``budget`` is the number of points kept)."""
    warnings.warn("radius_for_budget is deprecated; use default_radius(features, keep)",
                  DeprecationWarning, stacklevel=2)
    budget = as_int(budget, "budget", low=1)
    return default_radius(features, budget, **kwargs)


# ---------------------------------------------------------------------------------------
# The paper's evaluation: coverage of the full data as a function of the radius
# ---------------------------------------------------------------------------------------


def nearest_distances(features: Any, selected: Any, *, chunk: int = 2048) -> np.ndarray:
    """For every point, the Euclidean distance to its nearest selected point (float64)."""
    X = as_features(features)
    sel = as_indices(selected, X.shape[0], "selected")
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
    X = as_features(features)
    n = X.shape[0]
    w = as_weights(weights, n)
    dist = nearest_distances(X, selected)
    if radii is None:
        if r_max is None:
            r_max = float(np.median(np.linalg.norm(X - X.mean(axis=0), axis=1)))
            r_max = r_max if r_max > 0 else 1.0
        r_max = as_radius(r_max)
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



def as_weights(weights: Any, n: int) -> np.ndarray | None:
    """``weights`` as n finite non-negative floats with a positive, finite sum (or None)."""
    if weights is None:
        return None
    w = as_array(weights, "weights", ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"weights must have one entry per point ({n}), got {w.shape[0]}")
    if (w < 0).any():
        raise ValueError("weights must be >= 0 (a point's value when covered)")
    if not finite_scale(w, "weights") > 0:
        raise ValueError("weights must have a positive sum")
    return w


def as_indices(decision: Any, n: int, name: str = "decision") -> np.ndarray:
    """``decision`` (indices, or a boolean mask of length n) as sorted unique int64 indices."""
    arr = np.asarray(to_numpy(decision, name))
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


