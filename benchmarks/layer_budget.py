"""Benchmark: every LayerBudget solver on synthetic SPDY-like tables; prints a markdown table.

Tables: ``L`` layers x ``K`` levels; level ``k`` is sparsity ``s = 0.95 k / (K - 1)``; a
layer's time falls linearly with sparsity from its dense time (uniform in [1, 3]) by a
layer-specific factor in [0.6, 0.9] (plus timing noise), its error grows convexly,
``sens * (exp(3 s) - 1)`` with a log-normal sensitivity (plus 3% noise). The budget is
``dense time / speedup``, speedup 1.25, 1.5 and 2 for seeds 0, 1, 2.

For every solver: median seconds, seconds relative to HiGHS (highspy MILP) measured in the
same run, the worst relative gap of its answer to the exact optimum, the largest budget use
(cost / budget; over 100% means an over-budget answer), and its statuses. The row
``spdy-nearest`` is SPDY's reference rounding (nearest bucket, 10,000 buckets), which is not a
registered solver because its answers can be over budget.

Run:  nice python benchmarks/layer_budget.py [--sizes 50x40,200x40,1000x100] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import pruneopt
from pruneopt.formulations import LayerBudget
from pruneopt.solvers.budget_dp import bucket_dp, levels_of, reduce

SPEEDUPS = (1.25, 1.5, 2.0)


def synthetic_table(L: int, K: int, seed: int, speedup: float) -> LayerBudget:
    """A realistic-looking SPDY table (see the module docstring)."""
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50x40,200x40,1000x100")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args(argv)
    solvers = [("dp", {}), ("dp (certify=False)", {"certify": False}), ("dp_round", {}),
               ("greedy", {}), ("highs", {}), ("scipy", {}), ("cpsat", {}), ("pyomo", {})]
    rows = []
    for size in args.sizes.split(","):
        L, K = (int(v) for v in size.lower().split("x"))
        stats: dict[str, dict] = defaultdict(lambda: defaultdict(list))
        for seed in range(args.seeds):
            p = synthetic_table(L, K, seed, SPEEDUPS[seed % len(SPEEDUPS)])
            opt = pruneopt.solve(p, solver="dp")
            assert opt.status == "optimal"
            for label, opts in solvers:
                name = label.split(" ")[0]
                if name == "pyomo" and L * K > 10_000:
                    continue  # building the matrix-form Pyomo model takes minutes at this size
                sol = pruneopt.solve(p, solver=name, time_limit=args.time_limit, **opts)
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
            counts = defaultdict(int)
            for s in st["status"]:
                counts[s] += 1
            rows.append((size, label, np.median(st["t"]), np.median(st["t"]) / t_highs,
                         100 * max(st["gap"]), 100 * np.nanmax(st["use"]),
                         np.nanmax(st["bgap"]) * 100 if not np.all(np.isnan(st["bgap"])) else None,
                         ", ".join(f"{k} {v}" for k, v in counts.items())))
    print(f"{args.seeds} tables per size (speedups {SPEEDUPS[:args.seeds]}); "
          f"time limit {args.time_limit:g} s\n")
    print("| size | solver | median s | time / HiGHS | worst gap to optimum % | max budget use % "
          "| worst proven gap % | statuses |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for size, label, t, r, g, u, bg, sts in rows:
        bgs = "-" if bg is None else f"{bg:.4f}"
        gs = "no answer" if np.isinf(g) else f"{g:.4f}"
        print(f"| {size} | {label} | {t:.3f} | {r:.2f} | {gs} | {u:.4f} | {bgs} | {sts} |")


if __name__ == "__main__":
    main()
