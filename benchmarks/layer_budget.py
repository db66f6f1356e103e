"""Benchmark: LayerBudget solvers on several shapes of table; prints markdown tables.

Three parts (``--part``: ``scaling``, the default; ``solvers``; ``shapes``; ``both`` for the
last two; ``all``):

**scaling** (``--layers``, default ``500,1000,2000,5000,10000``; ``--levels`` 100;
``--scaling-seeds`` 3 tables per size, speedups cycling through ``SPEEDUPS``): the exact
``dp`` against ``greedy`` and against HiGHS called directly through highspy on the
multiple-choice MILP (:func:`highs_direct`, default options, the seed-0 table of each size up
to ``--highs-max-layers``), in the same process, table by table, on the ``FAMILIES``
(``convex``, ``nonconvex``, ``uncorrelated``, ``ties``, ``minilm``, ``linear``: see each
generator). Per
row: median and range of ``dp``'s seconds, its statuses, the ratios ``dp / greedy``,
``dp / read`` (one pass over the table, the floor of any exact solver) and ``dp / HiGHS``
(median [min-max]), the greedy's worst gap; then the exponent ``b`` of ``t ~ L^b`` fitted to
the median times per family (and what ``L log L`` itself fits over the same sizes).

**solvers** (``--sizes``, default ``50x40,200x40,1000x100``): every registered solver on the
``convex`` synthetic tables below, ``--seeds`` tables per size. For every solver: median
seconds, seconds relative to HiGHS (highspy MILP) measured in the same run, the worst relative
gap of its answer to the exact optimum, the largest budget use (cost / budget; over 100% means
an over-budget answer), the worst proven gap and its statuses. The row ``spdy-nearest`` is
nearest-bucket rounding of the reduced table in the manner of SPDY's reference (10,000
buckets; the reference itself rounds absolute times, see benchmarks/spdy_reference.py), not a
registered solver because its answers can be over budget.

**shapes** (``--shapes``, default all): the greedy (LP relaxation rounded down) and SPDY's
plain DP (``dp_round``, 10,000 buckets) against the exact optimum (``dp``, checked against
HiGHS), per shape of table; ``--shape-seeds`` tables per shape (seed s has speedup
``SPEEDUPS[s % 3]``); gap = (objective - optimum) / optimum, median and max over the tables:

- ``convex``: L x K (default 200 x 40) levels at sparsity ``s = 0.95 k / (K - 1)``; a layer's
  time falls linearly with s from its dense time (uniform in [1, 3]) by a factor in
  [0.6, 0.9] (plus 0.5% noise); its error ``sens (exp(3 s) - 1)`` (plus 3% noise), log-normal
  ``sens`` (sigma 1). Smooth, nearly convex: the LP is almost integral.
- ``coarse``: 20 such layers with only 4 levels (sparsity 0, 0.5, 0.75, 0.9): big steps, so
  the step the greedy cannot take wastes much budget.
- ``fine-nonconvex``: 50 layers x 100 levels whose time is a staircase (it only drops every
  8 to 16 levels, as kernels change tile size) with 5% noise and whose error has 20% noise
  and bumps: many levels off the convex hull.
- ``heavy-tailed``: 50 layers (about ResNet-50's count of convolutions) whose dense times are
  log-normal with sigma 1.5 (a few layers hold most of the time, as in CNNs where the
  high-resolution convolutions dominate), log-normal sensitivities (sigma 1.5), 20 levels;
  ``heavy-tailed-small``: the same with 20 layers (about ResNet-18's) and 10 levels.
- ``minilm``: the measured SPDY table of all-MiniLM-L6-v2 in
  ``benchmarks/spdy_minilm_table.json`` (12 units, 11-12 levels, CPU timings with their
  noise) at speedup targets 1.25, 1.5, 2, 3, 4 (one table, five budgets).

Run:  nice python benchmarks/layer_budget.py [--highs-max-layers 5000] [--part both] [--out F]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import _common
import numpy as np

import pruneopt
from pruneopt.formulations import LayerBudget
from pruneopt.solvers.budget_dp import bucket_dp, levels_of, reduce

SPEEDUPS = (1.25, 1.5, 2.0)
MINILM_TABLE = Path(__file__).resolve().parent / "spdy_minilm_table.json"
MINILM_TARGETS = (1.25, 1.5, 2.0, 3.0, 4.0)
SHAPES = ("convex", "coarse", "fine-nonconvex", "heavy-tailed", "heavy-tailed-small", "minilm")


def synthetic_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """The ``convex`` shape (see the module docstring)."""
    rng = np.random.default_rng(seed)
    costs, errors = [], []
    s = np.linspace(0.0, 0.95, K)
    for _ in range(L):
        dense = rng.uniform(1, 3)
        c = dense * (1 - s * rng.uniform(0.6, 0.9)) + rng.normal(0, 0.005, K)
        e = rng.lognormal(0, 1) * (np.exp(3 * s) - 1) * (1 + rng.normal(0, 0.03, K))
        costs.append(np.maximum(c, 0))
        errors.append(np.maximum(e, 0))
    budget = sum(float(c[0]) for c in costs) / speedup
    return LayerBudget(costs, errors, budget)


def coarse_table(seed: int, speedup: float, L: int = 20) -> LayerBudget:
    rng = np.random.default_rng(seed)
    s = np.array([0.0, 0.5, 0.75, 0.9])
    costs, errors = [], []
    for _ in range(L):
        dense = rng.uniform(1, 3)
        c = dense * (1 - s * rng.uniform(0.6, 0.9)) * (1 + rng.normal(0, 0.005, s.size))
        e = rng.lognormal(0, 1) * (np.exp(3 * s) - 1) * (1 + rng.normal(0, 0.03, s.size))
        costs.append(np.maximum(c, 0))
        errors.append(np.maximum(e, 0))
    return LayerBudget(costs, errors, sum(float(c[0]) for c in costs) / speedup)


def fine_nonconvex_table(seed: int, speedup: float, L: int = 50, K: int = 100) -> LayerBudget:
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, 0.95, K)
    costs, errors = [], []
    for _ in range(L):
        dense = rng.uniform(1, 3)
        tile = int(rng.integers(8, 17))  # time only drops every `tile` levels
        stair = np.floor(np.arange(K) / tile) * tile / (K - 1) * 0.95
        c = dense * (1 - stair * rng.uniform(0.6, 0.9)) * (1 + rng.normal(0, 0.05, K))
        bumps = 0.3 * np.sin(rng.uniform(5, 20) * s + rng.uniform(0, 6)) ** 2
        e = rng.lognormal(0, 1) * (np.exp(3 * s) - 1 + bumps * s) * (1 + rng.normal(0, 0.2, K))
        e[0] = 0.0
        costs.append(np.maximum(c, 0))
        errors.append(np.maximum(e, 0))
    return LayerBudget(costs, errors, sum(float(c[0]) for c in costs) / speedup)


def heavy_tailed_table(seed: int, speedup: float, L: int = 50, K: int = 20) -> LayerBudget:
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, 0.9, K)
    costs, errors = [], []
    for _ in range(L):
        dense = rng.lognormal(0, 1.5)
        c = dense * (1 - s * rng.uniform(0.5, 0.9)) * (1 + rng.normal(0, 0.01, K))
        e = rng.lognormal(0, 1.5) * (np.exp(3 * s) - 1) * (1 + rng.normal(0, 0.05, K))
        costs.append(np.maximum(c, 0))
        errors.append(np.maximum(e, 0))
    return LayerBudget(costs, errors, sum(float(c[0]) for c in costs) / speedup)


def random_nonconvex_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """``nonconvex``: :func:`fine_nonconvex_table`'s staircase times and bumpy, noisy errors
    (many levels off the convex hull) at ``L`` layers x ``K`` levels."""
    return fine_nonconvex_table(seed, speedup, L=L, K=K)


def uncorrelated_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """``uncorrelated``: costs uniform in [0, 1] and errors uniform in [0, 1], independent:
    no structure at all (most levels dominated, the rest far from convex)."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(0, 1, (L, K))
    E = rng.uniform(0, 1, (L, K))
    return LayerBudget(C, E, float(C.max(axis=1).sum()) / (1 + speedup))


def ties_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """``ties``: integer costs and errors (0..K), 10 distinct layer profiles each repeated
    ``L/10`` times: exact duplicates, equal slopes and many optima of equal error."""
    rng = np.random.default_rng(seed)
    k = np.arange(K)
    profiles = []
    for _ in range(10):
        c = np.round((K - k) * rng.uniform(0.5, 1.5)).astype(float)
        e = np.round(k ** 2 / K * rng.uniform(0.5, 2.0)).astype(float)
        profiles.append((c, e))
    rows = [profiles[i % 10] for i in range(L)]
    C = np.array([r[0] for r in rows])
    E = np.array([r[1] for r in rows])
    return LayerBudget(C, E, float(np.floor(C[:, 0].sum() / speedup)))


def linear_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """``linear``: errors almost proportional to costs (``e = -a c + N(0, 1e-6)``, ``a`` in
    [0.9, 1.1] per layer, costs uniform in [0, 1]): the strongly correlated knapsack, hard for
    bounds (nearly every level is on, or within noise of, the convex hull)."""
    rng = np.random.default_rng(seed)
    C = np.sort(rng.uniform(0, 1, (L, K)), axis=1)
    E = -C * rng.uniform(0.9, 1.1, (L, 1)) + rng.normal(0, 1e-6, (L, K))
    return LayerBudget(C, E, float(C.mean(axis=1).sum()) / speedup * 1.25)


def minilm_tiled_table(L: int, seed: int, speedup: float) -> LayerBudget:
    """``minilm``: the measured MiniLM SPDY table's 12 units (11-12 levels) tiled to ``L``
    layers, each copy's times and errors scaled by independent log-normal factors (sigma
    0.1, as if other layers of the same kinds) plus 1% noise per level."""
    import json

    d = json.loads(MINILM_TABLE.read_text())
    rng = np.random.default_rng(seed)
    costs, errors = [], []
    for i in range(L):
        t = np.asarray(d["times"][i % 12])
        e = np.asarray(d["errors"][i % 12])
        costs.append(t * rng.lognormal(0, 0.1) * (1 + rng.normal(0, 0.01, t.size)))
        errors.append(np.maximum(e * rng.lognormal(0, 0.1) * (1 + rng.normal(0, 0.01, e.size)),
                                 0))
    return LayerBudget(costs, errors, sum(float(c[0]) for c in costs) / speedup)


FAMILIES = {
    "convex": lambda L, K, sd, sp: synthetic_table(L, K, sd, sp),
    "nonconvex": random_nonconvex_table,
    "uncorrelated": uncorrelated_table,
    "ties": ties_table,
    "minilm": lambda L, K, sd, sp: minilm_tiled_table(L, sd, sp),
    "linear": linear_table,
}


def shape_tables(shape: str, seeds: int, L: int = 200, K: int = 40):
    """(label, LayerBudget) pairs of one shape."""
    if shape == "minilm":
        from pruneopt.adapters.spdy import SpdyTable

        table = SpdyTable.load(MINILM_TABLE)
        for t in MINILM_TARGETS:
            yield f"speedup {t:g}", table.problem(t)
        return
    make = {"convex": lambda sd, sp: synthetic_table(L, K, sd, sp), "coarse": coarse_table,
            "fine-nonconvex": fine_nonconvex_table, "heavy-tailed": heavy_tailed_table,
            "heavy-tailed-small": lambda sd, sp: heavy_tailed_table(sd, sp, L=20, K=10)}[shape]
    for seed in range(seeds):
        sp = SPEEDUPS[seed % len(SPEEDUPS)]
        yield f"seed {seed}, speedup {sp:g}", make(seed, sp)


def shapes_part(out, shapes, seeds, time_limit, L, K):
    out(f"\nPer shape of table: gap to the exact optimum (`dp`, proven; HiGHS agrees), median "
        f"and max over the tables; {seeds} tables per synthetic shape (speedups cycling "
        f"through {SPEEDUPS}), the MiniLM table at {MINILM_TARGETS}.\n")
    out("| shape | tables | layers x levels | greedy gap % median / max | dp_round gap % "
        "median / max | median s: dp / greedy / dp_round / highs | dp optimal |")
    out("|---|---:|---|---|---|---|---|")
    for shape in shapes:
        gaps: dict[str, list[float]] = defaultdict(list)
        secs: dict[str, list[float]] = defaultdict(list)
        n_opt, n, dims = 0, 0, set()
        for _label, p in shape_tables(shape, seeds, L, K):
            n += 1
            dims.add(f"{p.n_layers} x {max(len(c) for c in p.costs)}")
            opt = pruneopt.solve(p, solver="dp", time_limit=time_limit)
            n_opt += opt.status == "optimal"
            secs["dp"].append(opt.seconds)
            ref = pruneopt.solve(p, solver="highs", time_limit=time_limit)
            secs["highs"].append(ref.seconds)
            if ref.status == "optimal":
                assert abs(ref.objective - opt.objective) <= 1e-6 * max(1.0, abs(opt.objective))
            for name in ("greedy", "dp_round"):
                sol = pruneopt.solve(p, solver=name)
                assert p.cost(sol.decision) <= p.budget * (1 + 1e-9)
                gaps[name].append(100 * (sol.objective - opt.objective) / abs(opt.objective))
                secs[name].append(sol.seconds)

        def gm(v):
            return f"{np.median(v):.3f} / {max(v):.3f}"

        ts = " / ".join(f"{np.median(secs[k]):.3f}" for k in ("dp", "greedy", "dp_round", "highs"))
        out(f"| {shape} | {n} | {', '.join(sorted(dims))} | {gm(gaps['greedy'])} | "
            f"{gm(gaps['dp_round'])} | {ts} | {n_opt} of {n} |")


def solvers_part(out, sizes, seeds, time_limit):
    solvers = [("dp", {}), ("dp (certify=False)", {"certify": False}), ("dp_round", {}),
               ("greedy", {}), ("highs", {}), ("scipy", {}), ("cpsat", {}), ("pyomo", {})]
    rows = []
    for size in sizes.split(","):
        L, K = (int(v) for v in size.lower().split("x"))
        stats: dict[str, dict] = defaultdict(lambda: defaultdict(list))
        for seed in range(seeds):
            p = synthetic_table(L, K, seed, SPEEDUPS[seed % len(SPEEDUPS)])
            opt = pruneopt.solve(p, solver="dp")
            assert opt.status == "optimal"
            for label, opts in solvers:
                name = label.split(" ")[0]
                if name == "pyomo" and L * K > 10_000:
                    continue  # building the matrix-form Pyomo model takes minutes at this size
                sol = pruneopt.solve(p, solver=name, time_limit=time_limit, **opts)
                st = stats[label]
                st["t"].append(sol.seconds)
                if sol.decision is None:  # stopped by the time limit without an answer
                    st["gap"].append(np.inf)
                    st["use"].append(np.nan)
                    st["status"].append(f"{sol.status} (no answer)")
                    st["bgap"].append(np.nan)
                    continue
                st["gap"].append((sol.objective - opt.objective) / abs(opt.objective))
                st["use"].append(p.cost(sol.decision) / p.budget)
                st["status"].append(sol.status)
                st["bgap"].append(sol.gap if sol.gap is not None else np.nan)
            t0 = time.perf_counter()
            pos, _ = bucket_dp(reduce(p, pareto=False), 10000, "nearest")
            lv = levels_of(reduce(p, pareto=False), pos)
            st = stats["spdy-nearest"]
            st["t"].append(time.perf_counter() - t0)
            st["gap"].append((p.objective(lv) - opt.objective) / abs(opt.objective))
            st["use"].append(p.cost(lv) / p.budget)
            st["status"].append("over budget" if p.cost(lv) > p.budget else "feasible")
            st["bgap"].append(np.nan)
        t_highs = np.median(stats["highs"]["t"])
        for label, st in stats.items():
            counts: dict[str, int] = defaultdict(int)
            for s in st["status"]:
                counts[s] += 1
            rows.append((size, label, np.median(st["t"]), np.median(st["t"]) / t_highs,
                         100 * max(st["gap"]), 100 * np.nanmax(st["use"]),
                         np.nanmax(st["bgap"]) * 100 if not np.all(np.isnan(st["bgap"])) else None,
                         ", ".join(f"{k} {v}" for k, v in counts.items())))
    out(f"\nAll solvers on the convex tables, {seeds} tables per size (speedups "
        f"{SPEEDUPS[:seeds]}); time limit {time_limit:g} s\n")
    out("| size | solver | median s | time / HiGHS | worst gap to optimum % | max budget use % "
        "| worst proven gap % | statuses |")
    out("|---|---|---:|---:|---:|---:|---:|---|")
    for size, label, t, r, g, u, bg, sts in rows:
        bgs = "-" if bg is None else f"{bg:.4f}"
        gs = "no answer" if np.isinf(g) else f"{g:.4f}"
        out(f"| {size} | {label} | {t:.3f} | {r:.2f} | {gs} | {u:.4f} | {bgs} | {sts} |")


def highs_direct(p: LayerBudget, time_limit: float) -> tuple[str, float, float | None, float]:
    """The multiple-choice MILP passed to HiGHS through highspy, as its users write it
    (binaries ``x[l,k]``, one row per layer, one budget row; HiGHS's default options, so its
    relative MIP gap tolerance is 1e-4). (status, seconds, objective or None, mip gap)."""
    import highspy

    t0 = time.perf_counter()
    L, n = p.n_layers, int(p.levels.sum())
    layer = np.repeat(np.arange(L), p.levels)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, L + 1
    lp.col_cost_ = np.concatenate(p.errors)
    lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
    lp.row_lower_ = np.concatenate([np.ones(L), [-highspy.kHighsInf]])
    lp.row_upper_ = np.concatenate([np.ones(L), [p.budget]])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * n + 1, 2)
    lp.a_matrix_.index_ = np.stack([layer, np.full(n, L)], axis=1).ravel()
    lp.a_matrix_.value_ = np.stack([np.ones(n), np.concatenate(p.costs)], axis=1).ravel()
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    h.passModel(lp)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    obj = None
    if info.primal_solution_status == 2:  # a feasible solution
        x = np.asarray(h.getSolution().col_value)
        obj = p.objective(np.array([int(np.argmax(x[a:b])) for a, b in
                                    zip(np.r_[0, np.cumsum(p.levels)[:-1]],
                                        np.cumsum(p.levels), strict=True)]))
    return status, time.perf_counter() - t0, obj, float(info.mip_gap)


def read_floor(p: LayerBudget) -> float:
    """Seconds to read the table once (each layer's least cost and least error): what any
    exact solver must at least do, since every level can matter."""
    t0 = time.perf_counter()
    off = np.r_[0, np.cumsum(p.levels)[:-1]]
    np.minimum.reduceat(np.concatenate(p.costs), off)
    np.minimum.reduceat(np.concatenate(p.errors), off)
    return time.perf_counter() - t0


def fit_exponent(Ls, ts) -> float:
    """Least-squares slope of log t over log L."""
    return float(np.polyfit(np.log(Ls), np.log(ts), 1)[0])


def scaling_part(out, families, sizes, K, seeds, highs_max, time_limit):
    """``dp`` vs ``greedy`` vs HiGHS (highspy, direct) over L; ratios per table."""
    warm = synthetic_table(50, 20, 0, 1.5)
    pruneopt.solve(warm, solver="dp")  # numba: compile or load the cache before timing
    out(f"\n`dp` (exact) against `greedy` (LP rounded, heuristic) and HiGHS called directly "
        f"(highspy, default options, seed 0 of each size up to {highs_max} layers, time limit "
        f"{time_limit:g} s); {seeds} tables per row (speedups {SPEEDUPS[:seeds]}); "
        f"{K} levels (minilm: the measured 11-12). Ratios are per table, median [min-max]; "
        f"read = one pass over the table (each layer's least cost and error).\n")
    out("| family | layers | dp median s [range] | dp status | dp / greedy | greedy gap % max "
        "| dp / read | dp / HiGHS (seed 0) | HiGHS status, gap |")
    out("|---|---:|---|---|---|---:|---|---:|---|")
    fits = {}
    for fam in families:
        med = []
        for L in sizes:
            ts, rg, rr, gaps, sts, hs = [], [], [], [], defaultdict(int), "-"
            rh = "-"
            for seed in range(seeds):
                p = FAMILIES[fam](L, K, seed, SPEEDUPS[seed % len(SPEEDUPS)])
                floor = min(read_floor(p) for _ in range(3))
                sol = pruneopt.solve(p, solver="dp", time_limit=time_limit)
                g = pruneopt.solve(p, solver="greedy")
                ts.append(sol.seconds)
                sts[sol.status] += 1
                rg.append(sol.seconds / g.seconds)
                rr.append(sol.seconds / floor)
                gaps.append(100 * (g.objective - sol.objective) / max(abs(sol.objective), 1e-300))
                assert p.cost(sol.decision) <= p.budget + p.tolerance
                if seed == 0 and L <= highs_max:
                    st, hsec, hobj, hgap = highs_direct(p, time_limit)
                    rh = f"{sol.seconds / hsec:.3f}"
                    worse = "" if hobj is None else (
                        f", obj {100 * (hobj - sol.objective) / abs(sol.objective):+.4f} %")
                    hs = f"{st} in {hsec:.1f} s, gap {hgap:.1e}{worse}"
                    if hobj is not None:
                        assert hobj >= sol.objective - 1e-9 * max(1.0, abs(sol.objective))
            med.append(float(np.median(ts)))

            def r(v):
                return f"{np.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

            stat = ", ".join(f"{k} {v}" for k, v in sts.items())
            out(f"| {fam} | {L} | {np.median(ts):.3f} [{min(ts):.3f}-{max(ts):.3f}] | {stat} | "
                f"{r(rg)} | {max(gaps):.4f} | {r(rr)} | {rh} | {hs} |")
        fits[fam] = med
    ref = fit_exponent(sizes, [L * np.log(L) for L in sizes])
    out(f"\nScaling exponent b of the median `dp` time, t ~ L^b over L = "
        f"{', '.join(map(str, sizes))} (L log L itself fits b = {ref:.2f} over this range):\n")
    out("| family | " + " | ".join(f"median s at {L}" for L in sizes) + " | b |")
    out("|---|" + "---:|" * (len(sizes) + 1))
    for fam, med in fits.items():
        out(f"| {fam} | " + " | ".join(f"{t:.3f}" for t in med)
            + f" | {fit_exponent(sizes, med):.2f} |")
    pooled = np.median(np.array(list(fits.values())), axis=0)
    out("| all (median of families) | " + " | ".join(f"{t:.3f}" for t in pooled)
        + f" | {fit_exponent(sizes, pooled):.2f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["scaling", "solvers", "shapes", "both", "all"],
                    default="scaling", help="both: solvers and shapes; all: the three")
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    ap.add_argument("--layers", default="500,1000,2000,5000,10000",
                    help="layer counts of the scaling part")
    ap.add_argument("--levels", type=int, default=100, help="levels per layer (scaling part)")
    ap.add_argument("--scaling-seeds", type=int, default=3)
    ap.add_argument("--highs-max-layers", type=int, default=2000,
                    help="run HiGHS (seed 0) up to this many layers (scaling part)")
    ap.add_argument("--sizes", default="50x40,200x40,1000x100")
    ap.add_argument("--seeds", type=int, default=3, help="tables per size (solvers part)")
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    ap.add_argument("--shape-seeds", type=int, default=20, help="tables per synthetic shape")
    ap.add_argument("--convex-size", default="200x40", help="L x K of the convex shape")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("-o", "--out", help="also write the markdown to this new file")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out}, inputs=[MINILM_TABLE])
    out = _common.Tee()
    out(f"{_common.machine()}; pruneopt from {pruneopt.__file__}")
    if args.part in ("scaling", "all"):
        scaling_part(out, args.families, [int(v) for v in args.layers.split(",")],
                     args.levels, args.scaling_seeds, args.highs_max_layers, args.time_limit)
    if args.part in ("shapes", "both", "all"):
        L, K = (int(v) for v in args.convex_size.lower().split("x"))
        shapes_part(out, args.shapes, args.shape_seeds, args.time_limit, L, K)
    if args.part in ("solvers", "both", "all"):
        solvers_part(out, args.sizes, args.seeds, args.time_limit)
    out.save(args.out)


if __name__ == "__main__":
    main()
