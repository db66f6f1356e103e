"""Approximate radius graphs from an inverted-file index, their measured recall, and exact
re-scoring of a coverage on the true radius.

At a million points in 64 dimensions the exact radius graph costs more than the selection
by far. An inverted-file index (faiss ``IndexIVFFlat``: the points filed under their
nearest of ``nlist`` k-means centroids, a query scanning the ``nprobe`` nearest lists) finds
most radius neighbours at a fraction of the cost. What it returns is filtered so that
**every edge is a true neighbour** (``||x_i - x_j|| <= r``, re-checked in float64 from the
coordinates wherever float32 rounding could matter); it can only *miss* edges. Hence:

- the graph's recall (found / true neighbour pairs, self-pairs excluded) is measured on a
  seeded sample of query points against exact brute force (:func:`radius_recall`);
- the coverage computed on it is a lower bound of the true coverage of the same points,
  and :func:`exact_covered` re-scores a selection on the exact radius (only the points the
  graph leaves uncovered need a search, against the selected points alone).

faiss is imported lazily; install it with the ``scale`` extra
(``pip install "pruneopt[scale]"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import as_int
from pruneopt.formulations.geometry import as_features, as_indices, as_radius

__all__ = ["IVFGraphInfo", "exact_covered", "import_faiss", "ivf_radius_graph", "radius_recall"]

_CHUNK = 1 << 14


def import_faiss():
    """faiss, or ``ValueError`` naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ValueError("graph_method='ivf' needs faiss: pip install \"pruneopt[scale]\" "
                         "(or pip install faiss-cpu)") from None
    return faiss


@dataclass
class IVFGraphInfo:
    """How an approximate radius graph was built and how good it is.

    ``recall``: found / true neighbour pairs (self-pairs excluded) over ``sample`` seeded
    query points, against exact brute force; ``true_pairs`` is that denominator
    (``recall`` is 1.0 when the sample has no true pairs). ``mean_degree``: stored entries
    per point (the diagonal included). Seconds are wall-clock.
    """

    nlist: int
    nprobe: int
    recall: float
    sample: int
    true_pairs: int
    mean_degree: float
    build_seconds: float
    search_seconds: float
    recall_seconds: float


class _Frame:
    """The features centred and divided by their spread (float32 below works in units of
    order 1), with the float64 originals for exact re-checks.

    Two rounding bands on float32 squared distances (in units): ``tol_diff`` for distances
    summed from coordinate differences (faiss's IVF scan), about 10x the worst case
    ``2 * 1.2e-7 * sqrt(d) * r + d * 6e-8 * r^2`` near the threshold; ``tol_gram`` for Gram
    products ``|x|^2 + |y|^2 - 2 x.y``, 2.5x the worst case ``(d + 2) * 6e-8 * 2 max |x|^2``.
    A pair in a band is decided in float64 from the coordinates.
    """

    def __init__(self, X: np.ndarray, r: float) -> None:
        mu = X.mean(axis=0)
        self.X = X
        d = X.shape[1]
        self.unit = float(np.abs(X - mu).max()) or 1.0
        self.X32 = np.ascontiguousarray((X - mu) / self.unit, dtype=np.float32)
        self.sq = np.einsum("ij,ij->i", self.X32, self.X32)
        self.r2 = r * r
        ru = r / self.unit
        self.r2u = ru * ru
        self.tol_diff = 10.0 * (2.4e-7 * np.sqrt(d) * ru + d * 6e-8 * self.r2u)
        self.tol_gram = 2.5 * (d + 2) * 6e-8 * 2.0 * (float(self.sq.max()) + self.r2u)

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether ``||x_i - x_j|| <= r`` in float64 from coordinate differences."""
        out = np.empty(len(i), dtype=bool)
        for s in range(0, len(i), 1 << 16):
            d = self.X[i[s:s + (1 << 16)]] - self.X[j[s:s + (1 << 16)]]
            out[s:s + (1 << 16)] = np.einsum("ij,ij->i", d, d) <= self.r2
        return out

    def keep_true(self, i: np.ndarray, j: np.ndarray, d2: np.ndarray, tol: float) -> np.ndarray:
        """Mask of the candidate pairs (float32 squared distances ``d2``, in units) that are
        true neighbours: certain below the band, re-checked in it."""
        ok = d2 <= self.r2u - tol
        band = np.flatnonzero((d2 > self.r2u - tol) & (d2 <= self.r2u + tol))
        if len(band):
            ok[band] = self.exact(i[band], j[band])
        return ok

    def gram(self, q: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        """float32 squared distances (units) of the rows ``q`` to the rows ``ref`` (all
        rows when None)."""
        R = self.X32 if ref is None else self.X32[ref]
        rsq = self.sq if ref is None else self.sq[ref]
        return self.sq[q][:, None] + rsq[None, :] - 2.0 * (self.X32[q] @ R.T)


def ivf_radius_graph(features: Any, radius: float, *, nlist: int | None = None,
                     nprobe: int = 2, recall_sample: int = 1000, seed: int = 0,
                     threads: int = 1, progress: bool = False) -> tuple[sp.csr_array,
                                                                     IVFGraphInfo]:
    """An approximate radius graph from a faiss inverted-file index, and its recall.

    ``nlist`` (default ``2 sqrt(n)``, at most ``n / 32``) lists from 10 k-means iterations
    on a seeded sample of ``32 nlist`` points; every point queries its ``nprobe`` nearest
    lists for
    the points within ``radius`` (searched slightly wider, then filtered exactly). The
    graph is symmetrised (an edge found from either end is kept) and has the diagonal,
    boolean CSR like :func:`~pruneopt.formulations.geometry.radius_graph`, of which it is a
    subgraph. Memory: the float32 copy of the data plus ~5 bytes per stored entry.
    ``threads``: faiss's OpenMP threads during the call (restored after); 1 by default,
    since on a shared machine OpenMP's spinning threads made the search 2-7x slower here.
    """
    import time

    faiss = import_faiss()
    X = as_features(features)
    r = as_radius(radius)
    n, d = X.shape
    nprobe = as_int(nprobe, "nprobe", low=1)
    threads = as_int(threads, "threads", low=1)
    if nlist is None:
        nlist = int(min(max(1, 2 * np.sqrt(n)), max(1, n // 32)))
    nlist = as_int(nlist, "nlist", low=1, high=n)
    recall_sample = as_int(recall_sample, "recall_sample", low=0)
    fr = _Frame(X, r)
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        index = _ivf_index(faiss, fr.X32, nlist, seed)
        index.nprobe = min(nprobe, nlist)
        t1 = time.perf_counter()
        i, j = _ivf_pairs(index, fr, progress)
    finally:
        faiss.omp_set_num_threads(saved)
    n_pairs = len(i)
    diag = np.arange(n, dtype=np.int32)
    g = sp.coo_array((np.ones(2 * n_pairs + n, dtype=bool),
                      (np.concatenate([i, j, diag]), np.concatenate([j, i, diag]))),
                     shape=(n, n)).tocsr()
    del i, j
    g.sum_duplicates()
    g.sort_indices()
    if g.indices.dtype != np.int32 and g.nnz < 2**31 - 1:
        g = sp.csr_array((g.data, g.indices.astype(np.int32), g.indptr.astype(np.int32)),
                         shape=(n, n))
    t2 = time.perf_counter()
    recall, true_pairs = radius_recall(X, r, g, sample=recall_sample, seed=seed)
    t3 = time.perf_counter()
    info = IVFGraphInfo(nlist=nlist, nprobe=int(index.nprobe), recall=recall,
                        sample=min(recall_sample, n), true_pairs=true_pairs,
                        mean_degree=g.nnz / n, build_seconds=t1 - t0, search_seconds=t2 - t1,
                        recall_seconds=t3 - t2)
    return g, info


def _ivf_index(faiss, X32: np.ndarray, nlist: int, seed: int):
    """A trained and filled ``IndexIVFFlat`` (k-means on a seeded sample of 32 nlist)."""
    n, d = X32.shape
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.cp.seed = int(seed)
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 1  # a 32-per-list sample is enough to file points
    index.cp.max_points_per_centroid = 32
    rng = np.random.default_rng(seed)
    take = min(n, 32 * nlist)
    index.train(X32 if take == n else X32[np.sort(rng.choice(n, take, replace=False))])
    index.add(X32)
    return index


def _ivf_pairs(index, fr: _Frame, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Directed pairs (query, found), self-pairs dropped, each a true neighbour."""
    n = fr.X32.shape[0]
    rows, cols = [], []
    chunks = range(0, n, _CHUNK)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="ivf radius graph", unit="chunk")
    for s in chunks:
        lims, D, idx = index.range_search(fr.X32[s:s + _CHUNK], fr.r2u + fr.tol_diff)
        qi = np.repeat(np.arange(s, s + len(lims) - 1, dtype=np.int64),
                       np.diff(lims).astype(np.int64))
        idx = idx.astype(np.int64)
        off = qi != idx
        qi, idx, D = qi[off], idx[off], D[off]
        ok = fr.keep_true(qi, idx, D, fr.tol_diff)
        rows.append(qi[ok].astype(np.int32))
        cols.append(idx[ok].astype(np.int32))
    if not rows:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(rows), np.concatenate(cols)


def _true_neighbours(fr: _Frame, q: np.ndarray) -> list[np.ndarray]:
    """For each query row ``q[a]``, the indices of all points within r (exact: float32 Gram
    products, the band around the threshold re-checked in float64)."""
    out = []
    for s in range(0, len(q), 256):
        D = fr.gram(q[s:s + 256], None)
        a, b = np.nonzero(D <= fr.r2u + fr.tol_gram)
        ok = fr.keep_true(q[s + a], b, D[a, b], fr.tol_gram)
        a, b = a[ok], b[ok]
        out.extend(np.split(b, np.searchsorted(a, np.arange(1, D.shape[0]))))
    return out


def radius_recall(features: Any, radius: float, graph: Any, *, sample: int = 1000,
                  seed: int = 0) -> tuple[float, int]:
    """Recall of ``graph`` against the exact radius graph, on ``sample`` seeded query points:
    ``(found true pairs / true pairs, true pairs)``, self-pairs excluded (1.0 when the
    sample has no true pair). Exact brute force of the sample against all points."""
    X = as_features(features)
    r = as_radius(radius)
    n = X.shape[0]
    g = sp.csr_array(graph)
    if g.shape != (n, n):
        raise ValueError(f"graph must be {n} x {n}, got {g.shape}")
    sample = min(as_int(sample, "sample", low=0), n)
    if sample == 0:
        return 1.0, 0
    q = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    fr = _Frame(X, r)
    true = _true_neighbours(fr, q)
    found = total = 0
    for a, nb in zip(q, true, strict=True):
        nb = nb[nb != a]
        row = g.indices[g.indptr[a]:g.indptr[a + 1]]
        total += len(nb)
        found += int(np.isin(nb, row, assume_unique=True).sum())
    return (found / total if total else 1.0), int(total)


def exact_covered(features: Any, radius: float, selected: Any,
                  known: np.ndarray | None = None, *, seed: int = 0,
                  chunk: int = 1024, per_group: int = 32) -> np.ndarray:
    """Boolean mask of the points within ``radius`` of a selected point, exactly.

    ``known``: points already known to be covered (e.g. covered on a subgraph of the radius
    graph, whose edges are all true); only the others are searched, each against the
    selected points only. The selected points are filed under ``m ~ |S| / per_group``
    groups (nearest of a seeded sample, one Lloyd step; ``seed`` and the grouping only
    affect speed), with the exact radius ``rad_b`` of each group; a query x skips group b
    when
    ``d(x, c_b) - rad_b > r`` (triangle inequality, with a margin for float32 rounding),
    and the queries, sorted by their nearest group, are compared in chunks of ``chunk``
    with the union of their groups' members (float32 Gram products; pairs near the
    threshold re-checked in float64 from the coordinates). ``per_group``: selected points
    per group.
    """
    X = as_features(features)
    r = as_radius(radius)
    n = X.shape[0]
    sel = as_indices(selected, n, "selected")
    chunk = as_int(chunk, "chunk", low=1)
    per_group = as_int(per_group, "per_group", low=1)
    out = np.zeros(n, dtype=bool) if known is None else np.asarray(known, dtype=bool).copy()
    if out.shape != (n,):
        raise ValueError(f"known must be a boolean mask of shape ({n},)")
    out[sel] = True
    todo = np.flatnonzero(~out)
    if len(sel) == 0 or len(todo) == 0:
        return out
    fr = _Frame(X, r)
    tol = fr.tol_gram
    C, lab = _groups(fr.X32[sel], max(1, len(sel) // per_group), seed)
    diff = fr.X32[sel].astype(np.float64) - C[lab].astype(np.float64)
    rad = np.zeros(len(C))
    np.maximum.at(rad, lab, np.sqrt(np.einsum("ij,ij->i", diff, diff)))
    csq = np.einsum("ij,ij->i", C, C)
    margin = float(np.sqrt(tol)) + 1e-6 * (1.0 + float(rad.max()) + np.sqrt(fr.r2u))
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(len(C) + 1))
    home = np.concatenate([_nearest(fr.X32[todo[s:s + 4096]], C, csq)
                           for s in range(0, len(todo), 4096)])
    todo = todo[np.argsort(home, kind="stable")]
    for s in range(0, len(todo), chunk):
        q = todo[s:s + chunk]
        Q = fr.X32[q]
        Dc = fr.sq[q][:, None] + csq[None, :] - 2.0 * (Q @ C.T)
        near = (np.sqrt(np.maximum(Dc, 0.0)) - rad[None, :] <= np.sqrt(fr.r2u) + margin)
        groups = np.flatnonzero(near.any(axis=0))
        if len(groups) == 0:
            continue
        members = np.concatenate([order[starts[b]:starts[b + 1]] for b in groups])
        ref = sel[members]
        D = fr.gram(q, ref)
        m = D.min(axis=1)
        out[q[m <= fr.r2u - tol]] = True
        band = np.flatnonzero((m > fr.r2u - tol) & (m <= fr.r2u + tol))
        if len(band):
            a, b = np.nonzero(D[band] <= fr.r2u + tol)
            hit = fr.exact(q[band[a]], ref[b])
            out[q[band[a[hit]]]] = True
    return out


def _nearest(Y: np.ndarray, C: np.ndarray, csq: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``C`` for each row of ``Y`` (float32 Gram)."""
    return (csq[None, :] - 2.0 * (Y @ C.T)).argmin(axis=1)


def _groups(Y: np.ndarray, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` group centres (a seeded sample of the rows, moved by one Lloyd step) and each
    row's nearest centre."""
    rng = np.random.default_rng(seed)
    C = Y[np.sort(rng.choice(len(Y), m, replace=False))]
    for it in range(2):
        csq = np.einsum("ij,ij->i", C, C)
        lab = np.concatenate([_nearest(Y[s:s + 4096], C, csq) for s in range(0, len(Y), 4096)])
        if it == 1:
            return C, lab
        cnt = np.bincount(lab, minlength=m).astype(np.float32)
        S = sp.csr_array((np.ones(len(Y), dtype=np.float32), (lab, np.arange(len(Y)))),
                         shape=(m, len(Y)))
        newC = (S @ Y) / np.maximum(cnt, 1.0)[:, None]
        C = np.where(cnt[:, None] > 0, newC, C).astype(np.float32)
    return C, lab
