"""MMD data selection (AdaPrune): keep the source points whose kernel mean matches the target.

Reference: Napoli & White, "Unsupervised Domain Adaptation Via Data Pruning" (AdaPrune).
Given source points ``s_1..s_n`` and (unlabeled) target points ``t_1..t_m``, keep exactly
``keep`` = k source points so that the kept set S matches the target in maximum mean
discrepancy. The objective is the biased (V-statistic) squared MMD, constant target term
included::

    MMD^2(S, T) = mean_{a,b in S} k(a, b) - 2 mean_{a in S, t in T} k(a, t)
                  + mean_{t,u in T} k(t, u)

With a binary keep variable x_i per source point and ``sum x = k`` this is the integer
quadratic program::

    minimize   x^T K x / k^2 - 2 c^T x / k + tt
    subject to sum_i x_i = k,  x in {0, 1}^n

where K_ij = k(s_i, s_j) (n x n), c_i = mean_t k(s_i, t) and tt = mean k(T, T). K is positive
semidefinite for the "rbf" and "linear" kernels, so the continuous relaxation (0 <= x <= 1)
is a convex QP whose optimum is a lower bound. Because x_i^2 = x_i on binary points and
sum x = k, ``K`` may be replaced by ``K - mu I`` plus the constant ``mu k`` for any ``mu``
without changing the integer problem; ``mu = lambda_min(K)`` gives the tightest such convex
relaxation and also convexifies a user kernel that is not PSD (:meth:`MMDSelection.convexified`).

Class-aware selection (``labels=`` with ``class_keep=`` or ``class_mix=``): with source labels
y_i in classes C, the single cardinality constraint becomes one per class,

    sum_{i : y_i = c} x_i = k_c   for every c in C,      sum_c k_c = k,

so the kept set has a prescribed class mix (e.g. the target's, estimated without target
labels) and MMD matching can no longer trade one class for another. ``sum x = k`` still
holds, so the ``K - mu I`` shift stays exact and the relaxation (now with C linear equality
constraints) is still a convex QP whose optimum is a lower bound. ``class_mix`` (proportions,
or ``"source"``) is turned into counts by :func:`apportion`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import numpy as np

from pruneopt.formulations.base import Formulation, as_array, as_int, to_numpy

KernelArg = str | Callable[[np.ndarray, np.ndarray], Any]

#: Row block used when kernel sums are accumulated without building a large matrix.
BLOCK = 2048
#: Points used to estimate the median pairwise distance (a seeded subsample beyond this).
MEDIAN_SAMPLE = 2000


def median_distance(points: np.ndarray, *, sample: int = MEDIAN_SAMPLE, seed: int = 0) -> float:
    """Median Euclidean distance over distinct pairs of ``points`` (a seeded subsample of
    ``sample`` points when there are more). Falls back to the mean non-zero distance, then
    1.0, when the median is 0 (many duplicates)."""
    pts = points
    if len(pts) > sample:
        pts = pts[np.random.default_rng(seed).choice(len(pts), sample, replace=False)]
    sq = (pts * pts).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pts @ pts.T, 0.0)
    iu = np.triu_indices(len(pts), k=1)
    dist = np.sqrt(d2[iu])
    if dist.size == 0:
        return 1.0
    med = float(np.median(dist))
    if med > 0:
        return med
    pos = dist[dist > 0]
    return float(pos.mean()) if pos.size else 1.0


def class_labels(labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, index)``: the sorted distinct labels and, for every point, the position of
    its label in ``classes`` (int64, length n). ``labels``: a 1-D sequence of n integers
    (integral floats accepted) or strings; anything else is a ``ValueError``."""
    arr = np.asarray(to_numpy(labels, "labels"))
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence of class labels, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"labels must have one entry per source point ({n}), got {len(arr)}")
    if arr.dtype == bool:
        raise ValueError("labels must be integers or strings, got booleans")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integers or strings; got non-integral or NaN "
                             "floats (class labels, not scores)")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "O":
        if not all(isinstance(v, str) for v in arr):
            raise ValueError("labels must be integers or strings (one type), got mixed objects")
        arr = arr.astype(str)
    elif arr.dtype.kind == "U":
        if not isinstance(labels, np.ndarray) and not all(
                isinstance(v, str | np.str_) for v in labels):  # numpy made ints strings
            raise ValueError("labels must be integers or strings (one type), got a mix")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers or strings, got dtype {arr.dtype}")
    classes, index = np.unique(arr, return_inverse=True)
    return classes, index.astype(np.int64)


def apportion(mix: np.ndarray, sizes: np.ndarray, keep: int) -> np.ndarray:
    """Integer counts k_c with sum k_c = keep, 0 <= k_c <= sizes_c, as close to keep * p_c as
    the sizes allow (p = mix / sum mix).

    Real shares first: s_c = min(sizes_c, lambda p_c) with lambda chosen so that sum s = keep
    (water-filling: a class too small for its share is kept whole and the rest is spread
    over the others in proportion to p); if the classes with p_c > 0 cannot hold keep
    points, the rest goes to the others in proportion to their sizes. Then the floors,
    plus one point for the largest fractional parts (largest remainder), within the sizes."""
    p = np.asarray(mix, dtype=np.float64)
    cap = np.asarray(sizes, dtype=np.float64)
    if p.shape != cap.shape or np.any(p < 0) or not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ValueError("class proportions must be finite, >= 0 and not all zero")
    if keep > cap.sum():
        raise ValueError(f"keep={keep} exceeds the {int(cap.sum())} source points")
    p = p / p.sum()
    pos = p > 0
    if cap[pos].sum() >= keep:
        # exact water level: saturate classes in order of cap / p until the rest fits
        idx = np.flatnonzero(pos)
        order = idx[np.argsort(cap[idx] / p[idx], kind="stable")]
        share = np.zeros(len(p))
        for j, c in enumerate(order):
            rest = order[j:]
            want = (keep - share.sum()) * (p[rest] / p[rest].sum())
            if cap[c] >= want[0]:  # no other class of the rest saturates either
                share[rest] = np.minimum(cap[rest], want)
                break
            share[c] = cap[c]
    else:
        share = np.where(pos, cap, 0.0)
        rest = keep - share.sum()
        share[~pos] = rest * cap[~pos] / cap[~pos].sum()
    out = np.minimum(np.floor(share + 1e-9), cap).astype(np.int64)
    while out.sum() < keep:
        frac = np.where(out < cap, share - out, -np.inf)
        out[int(np.argmax(frac))] += 1
    while out.sum() > keep:  # only through the 1e-9 above
        out[int(np.argmax(np.where(out > 0, out - share, -np.inf)))] -= 1
    return out


class MMDSelection(Formulation):
    """Keep ``keep`` of the ``n`` source points minimizing the squared MMD to the target.

    Parameters
    ----------
    source : array (n, d)
        Source points (numpy or torch), e.g. features of the training set.
    target : array (m, d)
        Target points (unlabeled), same feature dimension d.
    keep : int
        Number of source points to keep, 1 <= keep <= n.
    kernel : "rbf", "linear" or callable
        ``"rbf"``: k(x, y) = exp(-||x - y||^2 / (2 bandwidth^2)); ``"linear"``: x . y;
        a callable ``f(X, Y) -> (len(X), len(Y)) array`` for any other kernel (it should be
        positive semidefinite for MMD to be a metric; the solvers convexify it if it is not).
    bandwidth : "median" or float > 0
        RBF bandwidth (same units as the features). ``"median"``: the median pairwise
        distance of the pooled source and target points (seeded subsample of
        ``MEDIAN_SAMPLE`` points beyond that). The value used is stored in
        ``self.bandwidth`` (``None`` for non-RBF kernels).

    labels : sequence (n,), optional
        Class label of every source point (integers or strings), for class-aware selection
        with ``class_keep`` or ``class_mix``. Target labels are never needed.
    class_keep : mapping label -> int, optional
        k_c, the number of points to keep of each class (classes left out keep none). The
        counts must add up to ``keep`` (``keep=None``: their sum) and fit in the classes.
    class_mix : mapping label -> float, or "source", optional
        Proportions of the kept set's classes (e.g. the target's class mix, estimated
        without target labels), turned into counts k_c by :func:`apportion`; ``"source"``:
        the source's own class proportions (stratified selection).

    Decision: a sorted ``int64`` array of the ``keep`` kept source indices (``check`` also
    accepts a boolean mask of length n). Objective: MMD^2 (dimensionless for the RBF kernel),
    minimized. With classes, ``classes`` holds the sorted labels, ``class_index`` the class
    position of every source point and ``quota`` the counts k_c (aligned with ``classes``);
    without, there is one class and ``quota == [keep]``.
    """

    sense = "min"

    def __init__(
        self,
        source: Any,
        target: Any,
        keep: int | None = None,
        kernel: KernelArg = "rbf",
        bandwidth: float | str = "median",
        *,
        labels: Any = None,
        class_keep: Mapping[Any, int] | None = None,
        class_mix: Mapping[Any, float] | str | None = None,
    ) -> None:
        src = as_array(source, "source")
        tgt = as_array(target, "target")
        if src.ndim == 1:
            src = src[:, None]
        if tgt.ndim == 1:
            tgt = tgt[:, None]
        if src.ndim != 2 or tgt.ndim != 2:
            raise ValueError(
                f"source and target must be 2-D arrays (points x features), got shapes "
                f"{src.shape} and {tgt.shape}"
            )
        if src.shape[0] == 0:
            raise ValueError("source is empty: give at least one source point")
        if tgt.shape[0] == 0:
            raise ValueError("target is empty: give at least one target point")
        if src.shape[1] != tgt.shape[1]:
            raise ValueError(
                f"source and target have different feature dimensions ({src.shape[1]} vs "
                f"{tgt.shape[1]}); embed both with the same feature extractor"
            )
        for what, X in (("source", src), ("target", tgt)):
            with np.errstate(over="ignore", invalid="ignore"):
                ok = bool(np.isfinite(np.einsum("ij,ij->i", X, X)).all())
            if not ok:
                raise ValueError(
                    f"{what} is too large in scale: squared norms overflow float64; divide "
                    f"source and target by the same constant (the selection does not change "
                    f"with bandwidth='median')")
        self.source = src
        self.target = tgt
        self.n, self.dim = src.shape
        self.m = tgt.shape[0]
        self.set_classes(keep, labels, class_keep, class_mix)

        if callable(kernel):
            self.kernel_name = getattr(kernel, "__name__", "callable")
            self._kfun = kernel
            self.bandwidth = None
        elif kernel == "linear":
            self.kernel_name = "linear"
            self._kfun = None
            self.bandwidth = None
        elif kernel == "rbf":
            self.kernel_name = "rbf"
            self._kfun = None
            if isinstance(bandwidth, str):
                if bandwidth != "median":
                    raise ValueError(
                        f"bandwidth must be 'median' or a positive number, got {bandwidth!r}"
                    )
                bw = median_distance(np.vstack([src, tgt]))
            else:
                try:
                    bw = float(bandwidth)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"bandwidth must be 'median' or a positive number, got {bandwidth!r}"
                    ) from None
                if not np.isfinite(bw) or bw <= 0:
                    raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
            with np.errstate(over="ignore", under="ignore", divide="ignore"):
                inv = np.float64(1.0) / (np.float64(2.0) * bw * bw)
            if not (np.isfinite(inv) and inv > 0):
                raise ValueError(
                    f"bandwidth {bw:g} is out of float64's range for the RBF kernel "
                    f"(1 / (2 bandwidth^2) = {inv:g}); rescale the features, or use "
                    f"bandwidth='median'")
            self.bandwidth = bw
        else:
            raise ValueError(
                f"kernel must be 'rbf', 'linear' or a callable f(X, Y) -> matrix, got {kernel!r}"
            )
        self.kernel = self.kernel_name if self._kfun is None else kernel
        self._K: np.ndarray | None = None
        self._mu: float | None = None
        self._factor: tuple[np.ndarray, float] | None = None

    # ------------------------------------------------------------------ classes
    def set_classes(self, keep: int | None, labels: Any = None,
                    class_keep: Mapping[Any, int] | None = None,
                    class_mix: Mapping[Any, float] | str | None = None) -> None:
        """Validate and store ``keep`` and the per-class counts (see the class docstring)."""
        if labels is None:
            if class_keep is not None or class_mix is not None:
                raise ValueError("class_keep / class_mix need labels= (one class label per "
                                 "source point)")
            if keep is None:
                raise ValueError("keep is required (or give labels= and class_keep=)")
            self.keep = as_int(keep, "keep", low=1, high=self.n)
            self.labels = None
            self.classes = np.array([0])
            self.class_index = np.zeros(self.n, dtype=np.int64)
            self.quota = np.array([self.keep], dtype=np.int64)
            return
        classes, index = class_labels(labels, self.n)
        sizes = np.bincount(index, minlength=len(classes))
        if (class_keep is None) == (class_mix is None):
            raise ValueError("with labels=, give exactly one of class_keep= (counts per "
                             "class) or class_mix= (proportions, or 'source')")
        pos = {cls: i for i, cls in enumerate(classes.tolist())}

        def where(cls: Any) -> int:
            key = cls.item() if isinstance(cls, np.generic) else cls
            if key not in pos:
                raise ValueError(f"class {key!r} is not in the source labels (classes "
                                 f"present: {', '.join(map(repr, classes.tolist()))})")
            return pos[key]

        if class_keep is not None:
            if not isinstance(class_keep, Mapping):
                raise ValueError("class_keep must be a mapping class label -> count")
            quota = np.zeros(len(classes), dtype=np.int64)
            for cls, cnt in class_keep.items():
                c = where(cls)
                quota[c] = as_int(cnt, f"class_keep[{cls!r}]", low=0)
                if quota[c] > sizes[c]:
                    raise ValueError(f"class {cls!r} has {sizes[c]} source points, fewer than "
                                     f"its class_keep {quota[c]}; lower it")
            total = int(quota.sum())
            if keep is None:
                keep = total
            keep = as_int(keep, "keep", low=1, high=self.n)
            if total != keep:
                raise ValueError(f"class_keep adds up to {total} points but keep={keep}; make "
                                 f"the counts sum to keep (or pass keep=None)")
        else:
            if keep is None:
                raise ValueError("class_mix needs keep= (the total number of points)")
            keep = as_int(keep, "keep", low=1, high=self.n)
            if isinstance(class_mix, str):
                if class_mix != "source":
                    raise ValueError(f"class_mix must be a mapping label -> proportion or "
                                     f"'source', got {class_mix!r}")
                mix = sizes.astype(np.float64)
            elif isinstance(class_mix, Mapping):
                mix = np.zeros(len(classes))
                for cls, frac in class_mix.items():
                    try:
                        v = float(frac)
                    except (TypeError, ValueError):
                        raise ValueError(f"class_mix[{cls!r}] must be a number, got "
                                         f"{frac!r}") from None
                    if not np.isfinite(v) or v < 0:
                        raise ValueError(f"class_mix[{cls!r}] must be a finite number >= 0, "
                                         f"got {frac!r}")
                    mix[where(cls)] = v
                if mix.sum() <= 0:
                    raise ValueError("class_mix is all zero; give positive proportions")
            else:
                raise ValueError("class_mix must be a mapping label -> proportion or 'source'")
            quota = apportion(mix, sizes, keep)
        if quota.sum() == 0:  # pragma: no cover - keep >= 1 forbids it
            raise ValueError("class_keep keeps no points")
        self.keep = keep
        self.labels = classes[index]
        self.classes = classes
        self.class_index = index
        self.quota = quota

    @property
    def class_constrained(self) -> bool:
        """Whether the selection has per-class counts (``labels=`` was given)."""
        return self.labels is not None

    def class_groups(self) -> list[np.ndarray]:
        """Source indices of every class (aligned with ``classes`` and ``quota``)."""
        order = np.argsort(self.class_index, kind="stable")
        bounds = np.cumsum(np.bincount(self.class_index, minlength=len(self.classes)))
        return np.split(order, bounds[:-1])

    def class_counts(self, decision: Any) -> dict[Any, int]:
        """Kept points per class of a decision, ``{label: count}``."""
        idx = self.check(decision)
        cnt = np.bincount(self.class_index[idx], minlength=len(self.classes))
        return {cls: int(c) for cls, c in zip(self.classes.tolist(), cnt, strict=True)}

    def with_keep(self, keep: int | None = None, *, labels: Any = None,
                  class_keep: Mapping[Any, int] | None = None,
                  class_mix: Mapping[Any, float] | str | None = None) -> MMDSelection:
        """The same source, target and kernel with another ``keep`` and/or class counts
        (``labels=None`` reuses this problem's labels when class counts are given). The
        kernel matrix, target means and eigen-factors already computed are shared, not
        recomputed (they do not depend on the counts)."""
        new = copy.copy(self)
        if labels is None and (class_keep is not None or class_mix is not None):
            labels = self.labels
        new.set_classes(keep, labels, class_keep, class_mix)
        return new

    @property
    def builtin_kernel(self) -> bool:
        """Whether the kernel is the built-in "rbf" or "linear" (both PSD), not a callable."""
        return self._kfun is None

    def objective_scale(self) -> float:
        """The kernel's scale, ``max |k(x, x)|`` (MMD^2 is at most 4 times it): 1 for "rbf",
        the largest squared norm for "linear", a 256-point sample's for a callable."""
        if self.kernel_name == "rbf" and self.builtin_kernel:
            return 1.0
        if self.kernel_name == "linear" and self.builtin_kernel:
            return float(max(np.einsum("ij,ij->i", X, X).max()
                             for X in (self.source, self.target)))
        P = np.vstack([self.source[:128], self.target[:128]])
        return float(np.abs(np.diag(self.gram(P, P))).max())

    # ------------------------------------------------------------------ kernel evaluation
    def gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The kernel matrix k(X_i, Y_j), shape (len(X), len(Y))."""
        if self.kernel_name == "linear" and self._kfun is None:
            return X @ Y.T
        if self._kfun is not None:
            G = as_array(self._kfun(X, Y), "kernel(X, Y)")
            if G.shape != (len(X), len(Y)):
                raise ValueError(
                    f"the kernel callable returned shape {G.shape}, expected "
                    f"({len(X)}, {len(Y)})"
                )
            return G
        # d2 = |x|^2 + |y|^2 - 2 x.y, then exp(-d2 / (2 bandwidth^2)), in one buffer
        G = X @ Y.T
        G *= -2.0
        G += np.einsum("ij,ij->i", X, X)[:, None]
        G += np.einsum("ij,ij->i", Y, Y)[None, :]
        np.maximum(G, 0.0, out=G)
        G *= -1.0 / (2.0 * self.bandwidth**2)
        return np.exp(G, out=G)

    def kernel_mean(self, X: np.ndarray, Y: np.ndarray) -> float:
        """mean_{i,j} k(X_i, Y_j), accumulated in row blocks (never a len(X) x len(Y) matrix
        when len(X) > BLOCK). When ``Y is X`` and the kernel is a built-in one (symmetric),
        only the blocks on and above the diagonal are evaluated: half the kernel evaluations
        of the objective's self terms."""
        same = Y is X and self._kfun is None
        total = 0.0
        for a in range(0, len(X), BLOCK):
            Xa = X[a : a + BLOCK]
            for b in range(a if same else 0, len(Y), BLOCK):
                part = float(self.gram(Xa, Y[b : b + BLOCK]).sum())
                total += 2.0 * part if same and b != a else part
        return total / (len(X) * len(Y))

    def kernel_row_means(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """mean_j k(X_i, Y_j) for every i, in blocks."""
        out = np.zeros(len(X))
        for a in range(0, len(X), BLOCK):
            Xa = X[a : a + BLOCK]
            for b in range(0, len(Y), BLOCK):
                out[a : a + BLOCK] += self.gram(Xa, Y[b : b + BLOCK]).sum(1)
        return out / len(Y)

    @cached_property
    def target_term(self) -> float:
        """tt = mean k(T, T), the constant term of the objective."""
        return self.kernel_mean(self.target, self.target)

    @cached_property
    def cross_means(self) -> np.ndarray:
        """c_i = mean_t k(s_i, t) for every source point i (length n)."""
        return self.kernel_row_means(self.source, self.target)

    def source_gram(self) -> np.ndarray:
        """K = k(S, S) for all n source points, symmetrized (an n x n matrix: 8 n^2 bytes).

        Computed once and kept (the problem's data never change)."""
        if self._K is None:
            K = self.gram(self.source, self.source)
            self._K = 0.5 * (K + K.T)
        return self._K

    def quadratic(self) -> tuple[np.ndarray, np.ndarray, float]:
        """``(K, c, tt)`` with objective(x) = x^T K x / k^2 - 2 c^T x / k + tt on binary x."""
        return self.source_gram(), self.cross_means, self.target_term

    def kernel_shift(self) -> float:
        """mu, slightly below lambda_min(K): ``K - mu I`` is PSD and, on binary x with
        sum x = k, ``x^T K x = x^T (K - mu I) x + mu k``.

        One rule for every solver: the smallest eigenvalue (``eigvalsh``) minus a margin of
        ``1e-9 * scale * max(1, n / 100)`` for user kernels and n <= 1500; for the built-in
        PSD kernels above 1500 points ``-1e-12 * scale * n`` (lambda_min >= 0 up to the
        rounding of K), without an eigendecomposition. ``scale = max |K_ii|``."""
        if self._mu is None:
            K = self.source_gram()
            scale = max(float(np.abs(np.diag(K)).max()), 1e-300)
            if self.n <= 1500 or not self.builtin_kernel:
                lam = float(np.linalg.eigvalsh(K)[0])
                self._mu = lam - 1e-9 * scale * max(1.0, self.n / 100)
            else:
                self._mu = -1e-12 * scale * self.n
        return self._mu

    def factor(self) -> tuple[np.ndarray, float]:
        """``(L, mu)`` with ``K - mu I = L L^T`` (L is n x r, the columns of eigenvalues
        above ``1e-13`` of the largest dropped), mu = :meth:`kernel_shift`. Cached."""
        if self._factor is None:
            K = self.source_gram()
            mu = self.kernel_shift()
            w, V = np.linalg.eigh(K - mu * np.eye(self.n))
            top = max(float(np.abs(w).max()), 1e-300)
            good = w > 1e-13 * top
            self._factor = (V[:, good] * np.sqrt(w[good]), mu)
        return self._factor

    def convexified(self, K: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """A convex form of the integer problem: ``(L, mu, K)`` with ``K - mu I = L L^T``
        (see :meth:`factor`); on every binary x with sum x = k, x^T K x = ||L^T x||^2 + mu k,
        and the relaxation with this form is convex and at least as tight as the plain one
        when K is PSD. ``K`` is ignored (kept for compatibility): the problem's own kernel
        matrix is used."""
        L, mu = self.factor()
        return L, mu, self.source_gram()

    # ------------------------------------------------------------------ the contract
    def check(self, decision: Any) -> np.ndarray:
        """The decision as a sorted int64 array of ``keep`` distinct indices in [0, n).

        Accepts kept indices (any integer sequence) or a boolean mask of length n."""
        arr = np.asarray(to_numpy(decision, "decision"))
        if arr.dtype == bool:
            if arr.shape != (self.n,):
                raise ValueError(
                    f"a boolean keep mask must have shape ({self.n},), got {arr.shape}"
                )
            arr = np.flatnonzero(arr)
        arr = np.asarray(arr).reshape(-1)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError("kept indices must be integers")
        idx = np.unique(arr.astype(np.int64))
        if idx.size != arr.size:
            raise ValueError("kept indices contain duplicates")
        if idx.size != self.keep:
            raise ValueError(f"the decision keeps {idx.size} points; exactly keep={self.keep} "
                             f"are required")
        if idx.size and (idx[0] < 0 or idx[-1] >= self.n):
            raise ValueError(f"kept indices must lie in [0, {self.n}), got {idx[0]}..{idx[-1]}")
        if self.class_constrained:
            cnt = np.bincount(self.class_index[idx], minlength=len(self.classes))
            bad = np.flatnonzero(cnt != self.quota)
            if bad.size:
                c = int(bad[0])
                raise ValueError(f"the decision keeps {cnt[c]} points of class "
                                 f"{self.classes[c].item()!r}; class_keep requires "
                                 f"{self.quota[c]}")
        return idx

    def objective(self, decision: Any) -> float:
        """Biased squared MMD between the kept source points and the target."""
        idx = self.check(decision)
        S = self.source[idx]
        if "cross_means" in self.__dict__:  # already computed for every source point
            cross = float(self.cross_means[idx].mean())
        else:
            cross = self.kernel_mean(S, self.target)
        return float(self.kernel_mean(S, S) - 2.0 * cross + self.target_term)

    def mask(self, decision: Any) -> np.ndarray:
        """The decision as a boolean keep mask of length n."""
        out = np.zeros(self.n, dtype=bool)
        out[self.check(decision)] = True
        return out

    def math(self) -> str:
        kern = {
            "rbf": f"k(a,b) = exp(-||a-b||^2 / (2 * {self.bandwidth:.4g}^2))",
            "linear": "k(a,b) = a . b",
        }.get(self.kernel_name if self._kfun is None else "", f"k = {self.kernel_name} (user)")
        cons = "sum_i x_i = k"
        if self.class_constrained:
            per = ", ".join(f"{c!r}: {q}" for c, q in zip(self.classes.tolist(),
                                                           self.quota.tolist(), strict=True))
            cons = f"sum_(i in class c) x_i = k_c for every class c (k_c = {{{per}}})"
        return (
            f"MMD data selection: keep k = {self.keep} of n = {self.n} source points "
            f"(m = {self.m} target points, d = {self.dim})\n"
            f"minimize   (1/k^2) sum_ij K_ij x_i x_j - (2/k) sum_i c_i x_i + tt\n"
            f"subject to {cons},  x_i in {{0, 1}}\n"
            f"where K_ij = k(s_i, s_j), c_i = mean_t k(s_i, t), tt = mean k(T, T), {kern}\n"
            f"K is PSD, so relaxing x_i in [0, 1] gives a convex QP (a lower bound)"
        )

    def latex(self) -> str:
        return (
            r"$$\begin{aligned}\min_{x}\ & \frac{1}{k^2}\sum_{i,j} K_{ij}x_ix_j - \frac{2}{k}"
            r"\sum_i c_i x_i + \overline{k(T,T)}\\ \text{s.t.}\ & \textstyle\sum_i x_i = k = "
            + str(self.keep)
            + (r",\ \textstyle\sum_{i\in c} x_i = k_c\ \forall c" if self.class_constrained
               else "")
            + r",\quad x\in\{0,1\}^{"
            + str(self.n)
            + r"}\\ & K_{ij}=k(s_i,s_j),\ c_i=\tfrac{1}{m}\textstyle\sum_t k(s_i,t)"
            r"\end{aligned}$$"
        )

    def __repr__(self) -> str:
        bw = "" if self.bandwidth is None else f", bandwidth={self.bandwidth:.4g}"
        cls = f", classes={len(self.classes)}" if self.class_constrained else ""
        return (f"MMDSelection(n={self.n}, m={self.m}, d={self.dim}, keep={self.keep}, "
                f"kernel={self.kernel_name!r}{bw}{cls})")

    # ------------------------------------------------------------------ exports
    def to_pyomo(self):
        """The integer QP as a ``pyomo.environ.ConcreteModel``: binary ``x[i]``, constraint
        ``cardinality`` (sum x = k; with classes ``class_keep[c]``: sum over class c = k_c) and
        the quadratic objective ``mmd2`` written with the
        full kernel matrix (an MIQP; n^2 terms, so meant for inspection and small n)."""
        import pyomo.environ as pyo

        K, c, tt = self.quadratic()
        k = self.keep
        mdl = pyo.ConcreteModel(name="MMDSelection")
        mdl.I = pyo.RangeSet(0, self.n - 1)
        mdl.x = pyo.Var(mdl.I, domain=pyo.Binary)
        if self.class_constrained:
            groups = self.class_groups()
            mdl.C = pyo.RangeSet(0, len(groups) - 1)
            mdl.class_keep = pyo.Constraint(
                mdl.C, rule=lambda m_, c: sum(m_.x[int(i)] for i in groups[c])
                == int(self.quota[c]))
        else:
            mdl.cardinality = pyo.Constraint(expr=sum(mdl.x[i] for i in mdl.I) == k)
        quad = sum(
            float(K[i, j]) * mdl.x[i] * mdl.x[j] for i in range(self.n) for j in range(self.n)
        )
        lin = sum(float(c[i]) * mdl.x[i] for i in range(self.n))
        mdl.mmd2 = pyo.Objective(expr=quad / k**2 - 2.0 * lin / k + tt, sense=pyo.minimize)
        return mdl

    def to_cvxpy(self, relax: bool = False):
        """The problem as a ``cvxpy.Problem`` in factored (DCP) form:
        minimize ||L^T x||^2 / k^2 + mu/k - 2 c^T x / k + tt, sum x = k, x boolean (or in
        [0, 1] with ``relax=True``, a convex QP whose value is a lower bound).
        The variable is ``problem.variables()[0]``."""
        import cvxpy as cp

        L, mu, _ = self.convexified()
        c, tt, k = self.cross_means, self.target_term, self.keep
        x = cp.Variable(self.n, boolean=not relax, name="x")
        cons = [cp.sum(x) == k]
        if self.class_constrained:
            cons = [cp.sum(x[g]) == int(q) for g, q in zip(self.class_groups(), self.quota,
                                                          strict=True)]
        if relax:
            cons += [x >= 0, x <= 1]
        obj = cp.sum_squares(L.T @ x) / k**2 + mu / k - 2.0 * (c @ x) / k + tt
        return cp.Problem(cp.Minimize(obj), cons)
