"""Low-rank MMD selection for large n: never builds an n x n (or n x m) kernel matrix.

Each point gets r raw features C(x) with a metric G, phi(a) . phi(b) = C(a) G C(b)^T ~=
k(a, b) (:mod:`pruneopt.solvers.mmd_features`: Nystrom by default, random Fourier features,
or the exact linear features), and the kernel's diagonal is kept exact. In feature space

    MMD^2(S, T) ~= ||mean_S phi - mean_T phi||^2 + sum_{j in S} (kappa_j - ||phi_j||^2) / k^2

(+ a constant), and the solver minimizes it over sets of k points in three phases:

1. **stochastic greedy** forward selection (Mirzasoleiman et al. 2015): each step scores
   (n / k) ln(1 / eps) random candidates, O(n r ln(1/eps) + k r^2) in all;
2. **batched 1-swaps** scored in feature space: a round computes the witness h = C G u of
   every point (one pass over C, O(n r)), takes the best kept and outside points
   and applies the best non-overlapping swaps of the pair matrix exactly
   (``BATCH``: k / 64 candidates per side, within [64, 256]);
3. **exact polish**: the same swap step with the exact kernel on the ``pool`` best kept and
   outside candidates (by feature score): O(pool (k + m)) kernel evaluations a round, which
   removes most of the feature approximation's error from the final answer.

``iters > 0`` adds a second start, the continuous relaxation solved by accelerated
projected gradient (FISTA, projection onto the capped simplex by bisection) rounded to its
k largest entries, improved by the same swaps; the better start (in feature space) is kept.
It is off by default: on the 64-D benchmark it did not lower the final MMD^2 (n = 10k:
0.00587925 with ``iters=200`` against 0.00587912 without; 30k: the same answer) and costs
2 passes over C per iteration.

Class-aware problems (per-class counts k_c): greedy draws its candidates from the classes not
yet full, swaps and the polish exchange points of the same class, the relaxation projects onto
each class's capped simplex and rounds to the k_c largest entries of each class.

Time O(n r (d + ln(1/eps) + rounds) + pool (k + m) d), memory 4 n r bytes (float32 C).
It is a heuristic for the exact-kernel objective (``problem.objective`` re-scores the answer
with the exact kernel, in blocks); it reports no bound (a bound in feature space would not
bound the exact-kernel optimum).
"""

from __future__ import annotations

import time

import numpy as np

from pruneopt.formulations.geometry import one_blas_thread
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers.mmd_features import FeatureMap, build_features
from pruneopt.solvers.mmd_heuristics import round_top
from pruneopt.solvers.mmd_search import (
    apply_pairs,
    matvec,
    rmatvec,
    stochastic_greedy,
    swap_scores,
)
from pruneopt.solvers.options import SEED, Integer, OneOf
from pruneopt.solvers.registry import Result, register

#: Kept and outside candidates per swap round in feature space: k / 64 within these bounds.
BATCH = (64, 256)
#: Stochastic greedy: each step looks at (n / k) ln(1 / EPS) random candidates.
EPS = 0.01
#: Default rank: 256, and 512 from ``RANK_UP`` points on (a larger kept set is refined
#: finer; measured on the 64-D benchmark: at n = 100k rank 256 ended 0.002 % above exact
#: herding's MMD^2, 512 below; at 10k 512 was slower and no better). The n x r float32
#: features may take at most ``FEATURE_BYTES`` with the default (rank 201 at n = 1M).
RANK, RANK_UP, FEATURE_BYTES = 256, 50_000, 768 * 2**20
#: The exact polish stops after a round that swaps fewer than 1/SETTLE of its candidates.
SETTLE = 64
#: A swap must lower k^2 MMD^2 by more than this fraction of k * max kappa (round-off guard).
TOL = 1e-11


def project_capped_simplex(v: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    """Euclidean projection of v onto {0 <= x <= 1, sum x = k} (bisection on the shift)."""
    lo, hi = float(v.min()) - 1.0, float(v.max())
    for _ in range(iters):
        tau = 0.5 * (lo + hi)
        if np.clip(v - tau, 0.0, 1.0).sum() > k:
            lo = tau
        else:
            hi = tau
    return np.clip(v - 0.5 * (lo + hi), 0.0, 1.0)


def project_classes(v: np.ndarray, k: int, groups: list[np.ndarray] | None = None,
                    quota: np.ndarray | None = None) -> np.ndarray:
    """Projection onto {0 <= x <= 1, sum x = k}, or with ``groups``/``quota`` onto the product
    of {0 <= x_c <= 1, sum x_c = quota_c} (the classes project independently)."""
    if groups is None:
        return project_capped_simplex(v, k)
    out = np.empty_like(v)
    for g, q in zip(groups, quota, strict=True):
        out[g] = project_capped_simplex(v[g], int(q))
    return out


def relax_features(fm: FeatureMap, k: int, *, iters: int = 200, tol: float = 1e-4,
                   deadline: float | None = None, groups: list[np.ndarray] | None = None,
                   quota: np.ndarray | None = None) -> np.ndarray:
    """FISTA on min ||Phi^T x / k - mu||^2 over the capped simplex (per class with
    ``groups``/``quota``), Phi = C G^(1/2); returns x. Stops after ``iters`` iterations or
    when an iteration moves x by less than ``tol * k`` in l1."""
    n = fm.C.shape[0]
    v = np.random.default_rng(0).normal(size=fm.C.shape[1])
    for _ in range(20):  # power iteration for ||Phi||_2^2 = lambda_max(G C^T C)
        v = fm.G @ rmatvec(fm.C, matvec(fm.C, v))
        v /= np.linalg.norm(v) + 1e-300
    sig2 = float(np.linalg.norm(fm.G @ rmatvec(fm.C, matvec(fm.C, v))))
    step = k * k / (2.0 * max(sig2, 1e-300))
    x = project_classes(np.full(n, k / n), k, groups, quota)
    y, t = x.copy(), 1.0
    for _ in range(iters):
        if deadline is not None and time.perf_counter() > deadline:
            break
        w = fm.G @ (rmatvec(fm.C, y) / k - fm.target_mean)
        x_new = project_classes(y - step * (2.0 / k) * matvec(fm.C, w), k, groups, quota)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        moved = float(np.abs(x_new - x).sum())
        x, t = x_new, t_new
        if moved < tol * k:  # the iterates have settled
            break
    return x


class SwapState:
    """A kept set in feature space: the mask, sigma = sum of the kept raw features, and
    nu_j = ||phi_j||^2 of the kept points (see :mod:`pruneopt.solvers.mmd_search`)."""

    def __init__(self, fm: FeatureMap, idx: np.ndarray, class_index: np.ndarray,
                 groups: list[np.ndarray]) -> None:
        n = fm.C.shape[0]
        self.fm, self.k = fm, len(idx)
        self.cls, self.groups = class_index, groups
        self.inset = np.zeros(n, dtype=bool)
        self.inset[idx] = True
        self.sigma = fm.C[idx].sum(0, dtype=np.float64)
        self.nu = np.zeros(n)
        self.nu[idx] = fm.norms(idx)
        self.tol = TOL * self.k * max(float(fm.kappa.max()), 1e-300)

    def scores(self) -> np.ndarray:
        """The removal score R of every kept point and the add score A of every other."""
        fm, k = self.fm, self.k
        w = fm.G @ (self.sigma / k - fm.target_mean)
        return swap_scores(fm.C, w, fm.kappa, self.nu, self.inset, k)

    def candidates(self, score: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(I, J): the ``batch`` lowest removal scores among the kept points and add scores
        among the others, per class (``batch`` scaled by the class's share)."""
        if len(self.groups) == 1:
            kin = np.flatnonzero(self.inset)
            bi, bo = min(batch, len(kin)), min(batch, len(score) - len(kin))
            if bi == 0 or bo == 0:
                return kin[:0], kin[:0]
            outside = np.where(self.inset, np.inf, score)
            J = np.argpartition(outside, bo - 1)[:bo]
            del outside
            return kin[np.argpartition(score[kin], bi - 1)[:bi]], J
        ins, outs = [], []
        for grp in self.groups:
            kin, kout = grp[self.inset[grp]], grp[~self.inset[grp]]
            b = min(batch, max(8, -(-batch * len(kin) // self.k)))
            bi, bo = min(b, len(kin)), min(b, len(kout))
            if bi == 0 or bo == 0:
                continue
            ins.append(kin[np.argpartition(score[kin], bi - 1)[:bi]])
            outs.append(kout[np.argpartition(score[kout], bo - 1)[:bo]])
        empty = np.zeros(0, dtype=np.int64)
        return (np.concatenate(ins) if ins else empty, np.concatenate(outs) if outs else empty)

    def swap(self, i: int, j: int, nu_j: float) -> None:
        self.inset[i], self.inset[j] = False, True
        self.sigma += self.fm.C[j].astype(np.float64) - self.fm.C[i]
        self.nu[j], self.nu[i] = nu_j, 0.0

    def value(self) -> float:
        """The feature-space MMD^2 (diagonal corrected) minus the target's constant."""
        fm, k = self.fm, self.k
        u = self.sigma / k - fm.target_mean
        idx = np.flatnonzero(self.inset)
        return float(u @ fm.G @ u + (fm.kappa[idx] - self.nu[idx]).sum() / k**2)


def feature_swaps(st: SwapState, *, batch: int | None = None, rounds: int = 200,
                  deadline: float | None = None) -> int:
    """Batched 1-swap rounds in feature space until a round makes none; returns the swaps.
    ``batch``: candidates per side and round (default k / 64 within :data:`BATCH`)."""
    if batch is None:
        batch = int(min(BATCH[1], max(BATCH[0], st.k // 64)))
    swaps = 0
    for _ in range(rounds):
        if deadline is not None and time.perf_counter() > deadline:
            break
        score = st.scores()
        I, J = st.candidates(score, batch)
        if len(I) == 0:
            break
        X = st.fm.C[np.concatenate([I, J])].astype(np.float64)
        M = X @ st.fm.G @ X.T
        pairs = apply_pairs(score[J], score[I], M, st.cls[I], st.cls[J], st.tol)
        for p, q in pairs:
            st.swap(int(I[p]), int(J[q]), float(M[len(I) + q, len(I) + q]))
        swaps += len(pairs)
        if len(pairs) == 0:
            break
    return swaps


def exact_polish(problem: MMDSelection, st: SwapState, *, pool: int = 256, rounds: int = 5,
                 deadline: float | None = None) -> int:
    """Swap rounds scored with the exact kernel on the ``pool`` best kept and outside
    candidates (chosen by feature score): per round the kernel sums g_x = sum_{l in S} k(x, l),
    the target means c_x and the pair matrix of the candidates, O(pool (k + m + pool))
    kernel evaluations (c_x once per candidate). Stops when a round swaps fewer than 1/64
    of its candidates. k^2 dMMD^2 of swap i -> j = A_j + R_i - 2 k(s_i, s_j) with
    A_j = 2 g_j + k(s_j, s_j) - 2 k c_j and R_i = -2 g_i + k(s_i, s_i) + 2 k c_i.
    Returns the swaps made."""
    S, T, k = problem.source, problem.target, st.k
    tol = TOL * k * problem.objective_scale()
    cross = np.full(len(S), np.nan)  # c_x, computed once per candidate
    swaps = 0
    for _ in range(rounds):
        if deadline is not None and time.perf_counter() > deadline:
            break
        I, J = st.candidates(st.scores(), pool)
        if len(I) == 0:
            break
        P = np.concatenate([I, J])
        kept = np.flatnonzero(st.inset)
        g = problem.kernel_row_means(S[P], S[kept]) * k
        new = P[np.isnan(cross[P])]
        if len(new):
            cross[new] = problem.kernel_row_means(S[new], T)
        c = cross[P]
        KP = problem.gram(S[P], S[P])
        KP = 0.5 * (KP + KP.T)
        d = np.diag(KP)
        b = len(I)
        a_ex = 2.0 * g[b:] + d[b:] - 2.0 * k * c[b:]
        r_ex = -2.0 * g[:b] + d[:b] + 2.0 * k * c[:b]
        pairs = apply_pairs(a_ex, r_ex, KP, st.cls[I], st.cls[J], tol)
        for p, q in pairs:
            st.swap(int(I[p]), int(J[q]), float(st.fm.norms(J[q : q + 1])[0]))
        swaps += len(pairs)
        if len(pairs) * SETTLE < len(I):  # (nearly) settled: another round would not pay
            break
    return swaps


def default_rank(n: int) -> int:
    """The default feature rank for n source points (:data:`RANK`, :data:`RANK_UP`,
    :data:`FEATURE_BYTES`)."""
    rank = 2 * RANK if n >= RANK_UP else RANK
    return int(min(rank, max(32, FEATURE_BYTES // (4 * n))))


def polish_pool(k: int) -> int:
    """Default candidates per side of the exact polish: k / 8 within [256, 1024] (measured on
    the 64-D benchmark: 128 at n = 30k and 512 at n = 100k left the answer 0.03 % and 0.002 %
    above exact herding's MMD^2, k / 8 below)."""
    return int(min(1024, max(256, k // 8)))


def greedy_samples(n: int, k: int) -> int:
    """Candidates per stochastic greedy step, (n / k) ln(1 / EPS), at least 32 (at most n)."""
    return int(min(n, max(32, np.ceil(n / k * np.log(1.0 / EPS)))))


@register("lowrank", MMDSelection, guarantee="heuristic",
          options={"rank": Integer(2, 1 << 16, allow_none=True),
                   "method": OneOf("rff", "nystrom", "exact", allow_none=True),
                   "seed": SEED, "iters": Integer(0, None), "rounds": Integer(0, None),
                   "pool": Integer(0, None, allow_none=True)})
def lowrank_solver(problem: MMDSelection, time_limit: float | None, *, rank: int | None = None,
                   method: str | None = None, seed: int = 0, iters: int = 0,
                   rounds: int = 200, pool: int | None = None) -> Result:
    """Nystrom / random Fourier features (``rank`` default :data:`RANK`, less where the
    features would pass :data:`FEATURE_BYTES`); stochastic greedy (and with ``iters`` > 0 the
    relaxation + top-k), batched swaps in feature space, then swaps on the exact kernel
    among ``pool`` candidates (default :func:`polish_pool`; ``pool=0``: no polish); the
    better start (large n)."""
    with one_blas_thread():
        return lowrank_search(problem, time_limit, rank=rank, method=method, seed=seed,
                              iters=iters, rounds=rounds, pool=pool)


def lowrank_search(problem: MMDSelection, time_limit: float | None, *, rank: int | None,
                   method: str | None, seed: int, iters: int, rounds: int,
                   pool: int | None) -> Result:
    """The body of :func:`lowrank_solver` (run on one BLAS thread: its products are small or
    memory-bound, and threads only contend on a shared machine)."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    k = problem.keep
    if rank is None:
        rank = default_rank(problem.n)
    fm = build_features(problem, rank=rank, method=method, seed=seed)
    groups = problem.class_groups()
    order = np.concatenate(groups).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int64)
    quota = problem.quota.astype(np.int64)
    cls = problem.class_index
    draws = np.random.default_rng(seed).random((k, greedy_samples(problem.n, k)))
    start = stochastic_greedy(fm.C, fm.G, fm.target_mean, fm.kappa, quota, order, starts,
                              draws)
    best = SwapState(fm, np.sort(start), cls, groups)
    swaps = feature_swaps(best, rounds=rounds, deadline=deadline)
    won = "stochastic-greedy"
    if iters > 0:
        x = relax_features(fm, k, iters=iters, deadline=deadline,
                           groups=groups if problem.class_constrained else None, quota=quota)
        other = SwapState(fm, round_top(problem, x), cls, groups)
        swaps += feature_swaps(other, rounds=rounds, deadline=deadline)
        if other.value() < best.value():
            best, won = other, "relax"
    feature_value = best.value()
    polished = 0
    pool = polish_pool(k) if pool is None else pool
    if pool > 0 and fm.method != "exact":
        polished = exact_polish(problem, best, pool=pool, deadline=deadline)
    return Result(np.flatnonzero(best.inset).astype(np.int64), "feasible", None,
                  {"rank": fm.rank, "method": fm.method, "swaps": swaps,
                   "exact_swaps": polished, "start_won": won,
                   "feature_mmd2": feature_value * fm.scale})
