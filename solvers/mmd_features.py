"""Low-rank feature maps of an MMD selection problem, for the ``lowrank`` solver.

Every source point s_j gets r raw features C_j (float32) and the map has an r x r metric G
(float64) such that phi(a) . phi(b) = C(a) G C(b)^T ~= k(a, b):

- ``"nystrom"`` (default for "rbf" and user kernels): r landmarks Z drawn (seeded) from the
  pooled source and target points, C(x) = k(x, Z) and G = k(Z, Z)^+ (pseudo-inverse, the
  eigenvalues below ``EIG_CUT`` of the largest dropped, or for the PSD built-in kernel
  damped by as much: float32 features cannot resolve the directions beyond). The n x r
  matrix C is never multiplied by G up front (that would be n r^2 work): the search only
  needs C_j . w for vectors w = G u.
- ``"rff"`` ("rbf" only): random Fourier features, r/2 frequencies w ~ N(0, I / bandwidth^2),
  C(x) = sqrt(2/r) [cos(W x), sin(W x)], G = I; unbiased, error O(1/sqrt(r)).
- ``"exact"`` (the linear kernel): C(x) = x / sqrt(scale), G = I (exact up to float32).

The kernel's own diagonal kappa_j = k(s_j, s_j) is kept exactly: the solver scores with
K ~= Phi Phi^T + diag(kappa - ||phi||^2) (the Nystrom approximation with its diagonal
corrected), so a point far from every landmark is not mistaken for a cheap one.

Scale: the RBF kernel is evaluated on (x - centre) / bandwidth, so multiplying the data by
any positive factor (with the median bandwidth) gives the same float32 features; the linear
kernel's features are divided by sqrt(max ||x||^2), the objective's scale. Units: C and G are
dimensionless for "rbf"; for "linear" the objective is in units of ``scale``.
Memory: 4 n r bytes for C (1 GB at n = 1M, r = 256), computed in row blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pruneopt.formulations.mmd import MMDSelection

#: Source rows per block when the features are computed (bounds the float64 temporaries).
BLOCK = 16384
#: Nystrom: eigenvalues of k(Z, Z) below this fraction of the largest are dropped.
EIG_CUT = 1e-6


@dataclass
class FeatureMap:
    """Raw features and metric of a low-rank kernel approximation (see the module docstring).

    ``C``: (n, r) float32 source features; ``G``: (r, r) float64 metric;
    ``target_mean``: (r,) float64, mean of the target's raw features; ``kappa``: (n,) float64,
    the exact kernel diagonal in the same units; ``scale``: the factor the kernel was divided
    by (1 for "rbf"); ``method``: the feature map's name; ``rank``: the features kept
    (the rank of G)."""

    C: np.ndarray
    G: np.ndarray
    target_mean: np.ndarray
    kappa: np.ndarray
    scale: float
    method: str
    rank: int

    def norms(self, rows: np.ndarray) -> np.ndarray:
        """||phi_j||^2 = C_j G C_j^T for the given rows (float64)."""
        X = self.C[rows].astype(np.float64)
        return np.einsum("ij,ij->i", X @ self.G, X)


def rbf_block(X: np.ndarray, Z: np.ndarray, zz: np.ndarray) -> np.ndarray:
    """exp(-||x - z||^2 / 2) for float32 rows X (b, d) and landmarks Z (r, d) with squared
    norms zz (r,), in place of one (b, r) float32 buffer."""
    out = X @ Z.T
    out *= np.float32(-2.0)
    out += np.einsum("ij,ij->i", X, X)[:, None]
    out += zz[None, :]
    np.maximum(out, np.float32(0.0), out=out)
    out *= np.float32(-0.5)
    np.exp(out, out=out)
    return out


def build_features(problem: MMDSelection, *, rank: int = 256, method: str | None = None,
                   seed: int = 0) -> FeatureMap:
    """The :class:`FeatureMap` of ``problem``: ``method`` "nystrom", "rff" or "exact"
    (linear kernel only); default exact for the linear kernel, Nystrom otherwise."""
    linear = problem.kernel_name == "linear" and problem.builtin_kernel
    rbf = problem.kernel_name == "rbf" and problem.builtin_kernel
    if method is None:
        method = "exact" if linear else "nystrom"
    rank = int(rank)
    if rank < 2:
        raise ValueError(f"rank must be >= 2, got {rank}")
    if method not in ("rff", "nystrom", "exact"):
        raise ValueError(f"method must be 'rff', 'nystrom' or 'exact', got {method!r}")
    if method == "exact" and not linear:
        raise ValueError("method='exact' features exist only for kernel='linear'")
    if method == "rff" and not rbf:
        raise ValueError("random Fourier features need kernel='rbf'; use method='nystrom'")
    rng = np.random.default_rng(seed)
    S, T = problem.source, problem.target
    n = len(S)
    if method == "exact":
        return _linear_map(S, T)
    if rbf:
        centre = S[rng.choice(n, min(n, 4096), replace=False)].mean(0)
        inv = 1.0 / problem.bandwidth

        def unit(X: np.ndarray) -> np.ndarray:
            return ((X - centre) * inv).astype(np.float32)
    if method == "rff":
        half = max(1, rank // 2)
        W = rng.normal(size=(problem.dim, half)).astype(np.float32)
        amp = np.float32(np.sqrt(1.0 / half))

        def raw(X: np.ndarray) -> np.ndarray:
            P = unit(X) @ W
            return np.hstack([np.cos(P), np.sin(P)]) * amp

        G = np.eye(2 * half)
        kappa = np.ones(n)
        kept = 2 * half
    else:
        pool_n = n + len(T)
        r = min(rank, pool_n)
        pick = np.sort(rng.choice(pool_n, r, replace=False))
        Z = np.vstack([S[pick[pick < n]], T[pick[pick >= n] - n]])
        if rbf:
            Zu = unit(Z)
            zz = np.einsum("ij,ij->i", Zu, Zu)
            KZ = rbf_block(Zu, Zu, zz).astype(np.float64)

            def raw(X: np.ndarray) -> np.ndarray:
                return rbf_block(unit(X), Zu, zz)

            kappa = np.ones(n)
        else:
            KZ = problem.gram(Z, Z)

            def raw(X: np.ndarray) -> np.ndarray:
                return np.asarray(problem.gram(X, Z), dtype=np.float32)

            kappa = _diagonal(problem, S)
        G, kept = landmark_metric(0.5 * (KZ + KZ.T), psd=rbf)
    C = np.empty((n, G.shape[0]), dtype=np.float32)
    for a in range(0, n, BLOCK):
        C[a : a + BLOCK] = raw(S[a : a + BLOCK])
    tmean = np.zeros(G.shape[0])
    for a in range(0, len(T), BLOCK):
        tmean += raw(T[a : a + BLOCK]).sum(0, dtype=np.float64)
    return FeatureMap(C, G, tmean / len(T), kappa, 1.0, method, kept)


def landmark_metric(KZ: np.ndarray, *, psd: bool) -> tuple[np.ndarray, int]:
    """(G, rank): the Nystrom metric of the landmarks' kernel matrix KZ. For a PSD kernel
    G = (KZ + eps I)^-1 with eps = ``EIG_CUT`` * max diag * r (a Cholesky factorization, a
    fifth of an eigendecomposition's time); otherwise, or if that fails, the pseudo-inverse
    over the eigenvalues above ``EIG_CUT`` of the largest."""
    r = len(KZ)
    if psd:
        eps = EIG_CUT * max(float(np.diag(KZ).max()), 1e-300) * r
        try:
            L = np.linalg.cholesky(KZ + eps * np.eye(r))
        except np.linalg.LinAlgError:
            pass
        else:
            Li = np.linalg.solve(L, np.eye(r))  # lower triangular L^-1
            return Li.T @ Li, r
    lam, U = np.linalg.eigh(KZ)
    good = lam > EIG_CUT * max(float(lam.max()), 1e-300)
    Ug = U[:, good]
    return (Ug / lam[good]) @ Ug.T, int(good.sum())


def _linear_map(S: np.ndarray, T: np.ndarray) -> FeatureMap:
    """The linear kernel's exact features x / sqrt(scale), scale = max ||x||^2."""
    sq = np.einsum("ij,ij->i", S, S)
    scale = max(float(sq.max()), float(np.einsum("ij,ij->i", T, T).max()), 1e-300)
    inv = 1.0 / np.sqrt(scale)
    C = (S * inv).astype(np.float32)
    G = np.eye(S.shape[1])
    return FeatureMap(C, G, (T * inv).mean(0), sq / scale, scale, "exact", S.shape[1])


def _diagonal(problem: MMDSelection, S: np.ndarray, block: int = 64) -> np.ndarray:
    """k(s_j, s_j) for every source point of a user kernel (blocks of ``block`` points)."""
    out = np.empty(len(S))
    for a in range(0, len(S), block):
        X = S[a : a + block]
        out[a : a + block] = np.diag(problem.gram(X, X))
    return out
