"""Benchmark of the MMD data-selection solvers, n = 20 .. 100,000 source points.

Instance (seeded): source ~ N(0, I_5), target ~ N(0.5, 0.7^2 I_5) with m = min(max(n/2, 20),
2000) points, RBF kernel with the median bandwidth, keep = n/4 (n <= 1000) or n/10.
For each n every applicable solver runs once in the same process (time limits below) and a
seeded random subset is the baseline. Columns: the solver's seconds (``sol.seconds``,
without the exact re-scoring of the answer), MMD^2 of the answer, its ratio to the best MMD^2
found at that n, and the gap to the best proven lower bound at that n, (MMD^2 - bound) / MMD^2
(the bound is the best of SCIP's dual bound and the convex relaxation bound; "-" where none
is computable: the dense relaxation needs the n x n kernel).

    nice python benchmarks/mmd_selection.py
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401 - measure the checkout this script sits in
import numpy as np

import pruneopt  # noqa: E402
from pruneopt.formulations import MMDSelection  # noqa: E402

SIZES = (20, 40, 200, 1000, 5000, 20_000, 100_000)


def instance(n: int, seed: int = 0) -> MMDSelection:
    rng = np.random.default_rng(seed)
    m = min(max(n // 2, 20), 2000)
    source = rng.normal(size=(n, 5))
    target = rng.normal(size=(m, 5)) * 0.7 + 0.5
    return MMDSelection(source, target, n // 4 if n <= 1000 else n // 10)


def plan(n: int) -> list[tuple[str, dict]]:
    """(solver, options) pairs run at size n."""
    runs: list[tuple[str, dict]] = []
    if n <= 200:
        runs.append(("scip", {"time_limit": 30.0 if n <= 40 else 20.0}))
    if n <= 5000:
        runs += [("relax-swap", {}), ("relax-round", {}), ("greedy", {})]
    if n <= 1000:
        runs.append(("swap", {}))
    runs.append(("lowrank", {}))
    return runs


def bench(sizes) -> str:
    lines = [
        "| n | m | keep | solver | status | seconds | MMD^2 | / best MMD^2 | gap to best bound |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for n in sizes:
        problem = instance(n)
        rows = []
        for name, opts in plan(n):
            if name not in pruneopt.available(problem):
                continue
            opts = dict(opts)
            tl = opts.pop("time_limit", None)
            sol = pruneopt.solve(problem, solver=name, time_limit=tl, **opts)
            rows.append((name, sol.status, sol.seconds, sol.objective, sol.bound))
        t0 = time.perf_counter()
        idx = np.sort(np.random.default_rng(1).choice(n, problem.keep, replace=False))
        rows.append(("random subset", "-", time.perf_counter() - t0, problem.objective(idx), None))
        best = min(r[3] for r in rows)
        bounds = [r[4] for r in rows if r[4] is not None]
        lb = max(bounds) if bounds else None
        for name, status, sec, obj, _ in rows:
            gap = "-" if lb is None else f"{max(obj - lb, 0.0) / obj:.1%}"
            lines.append(f"| {n:,} | {problem.m:,} | {problem.keep:,} | {name} | {status} | "
                         f"{sec:.2f} | {obj:.3g} | {obj / best:.2f} | {gap} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(bench(args.sizes))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
