"""Coverage coresets: solvers against each other and an outside reference, in one run.

Instances:
- ``digits``: scikit-learn's 1,797 digits (64 pixels), keep k = 100, radius from
  ``default_radius`` (about n/k = 18 neighbours per point); max coverage and the set-cover
  form (cover 90 %).
- ``10k``: 10,000 digits-like points, k = 1,000: the fast solvers and apricot.
- ``50k``: 50,000 digits-like points (a random digit plus N(0, 1) pixel noise), k = 5,000,
  radius from ``default_radius`` (about 10 neighbours per point). End-to-end time
  includes building the radius graph.

For every solver: wall-clock seconds (the solve; the graph is built once beforehand and
timed separately), the covered fraction, the objective, and the gap to the best proven
bound of the instance (``|best bound - objective| / best bound``; 0 = proven optimal).
apricot-select's ``MaxCoverageSelection`` (lazy greedy, on the same sparse graph) is the
outside reference when it is installed (optional: ``pip install apricot-select``); at
n = 50,000 only with ``--apricot-50k`` (it did not finish within 15 minutes here).

    nice python benchmarks/coverage_solvers.py              # both instances (a few minutes)
    nice python benchmarks/coverage_solvers.py --quick      # digits only
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import _common  # noqa: F401 - measure the checkout this script sits in
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import pruneopt  # noqa: E402
from pruneopt.formulations.coverage import (  # noqa: E402
    CoverageSelection,
    CoverSelection,
    default_radius,
)


def digits_like(n: int, seed: int = 0) -> np.ndarray:
    """``n`` noisy copies of random digits: a digit plus N(0, 1) noise on each pixel."""
    base = load_digits().data
    rng = np.random.default_rng(seed)
    return base[rng.integers(0, len(base), n)] + rng.normal(0.0, 1.0, (n, base.shape[1]))


def apricot_select(problem: CoverageSelection) -> tuple[np.ndarray, float]:
    import scipy.sparse as sps
    from apricot import MaxCoverageSelection

    g = problem.graph
    G = sps.csr_matrix((np.ones(g.nnz), g.indices.astype(np.int32), g.indptr.astype(np.int32)),
                       shape=g.shape)
    t = time.perf_counter()
    sel = MaxCoverageSelection(problem.keep, optimizer="lazy", verbose=False).fit(G)
    return np.asarray(sel.ranking, dtype=np.int64), time.perf_counter() - t


def run_instance(name: str, problem, solvers: list[tuple[str, dict, float | None]],
                 graph_seconds: float, reference: bool) -> list[str]:
    rows = []
    sols = []
    for solver, opts, limit in solvers:
        sol = pruneopt.solve(problem, solver=solver, time_limit=limit, **opts)
        label = solver + "".join(f" {k}={v}" for k, v in opts.items())
        if limit is not None:
            label += f" (limit {limit:g} s)"
        if "lp_status" in sol.info and str(sol.info["lp_status"]).lower() != "optimal":
            label += " [LP unsolved: greedy fallback]"
        print(f"  {name}: {label}: {sol}", file=sys.stderr, flush=True)
        sols.append((label, sol))
    extra = []
    if reference and isinstance(problem, CoverageSelection) and importlib.util.find_spec(
            "apricot") is not None:
        sel, secs = apricot_select(problem)
        extra.append(("apricot MaxCoverage (lazy)", problem.objective(sel), secs, "feasible",
                      None, sel))
    maxi = problem.sense == "max"
    bounds = [s.bound for _, s in sols if s.bound is not None]
    best = (min(bounds) if maxi else max(bounds)) if bounds else None
    for label, s in sols:
        extra.append((label, s.objective, s.seconds, s.status, s.bound, s.decision))
    for label, obj, secs, status, bound, decision in extra:
        if obj is None:
            rows.append(f"| {name} | {label} | {status} | {secs:.2f} | - | - | - | - |")
            continue
        covered = problem.covered_weight(decision) / problem.total_weight
        gap = "-" if best is None else f"{abs(best - obj) / max(abs(best), 1e-12):.2%}"
        bnd = "-" if bound is None else f"{bound:g}"
        rows.append(f"| {name} | {label} | {status} | {secs:.2f} | {covered:.1%} | {obj:g} | "
                    f"{bnd} | {gap} |")
    rows.append(f"| {name} | (radius graph, built once) | | {graph_seconds:.2f} | | | | |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits only")
    ap.add_argument("--time-limit", type=float, default=60.0, help="for the exact solvers")
    ap.add_argument("--apricot-50k", action="store_true",
                    help="also run apricot at n = 50,000 (slow: over 15 minutes here)")
    args = ap.parse_args(argv)
    tl = args.time_limit
    print("| instance | solver | status | seconds | covered | objective | bound | gap to best "
          "bound |")
    print("|---|---|---|---:|---:|---:|---:|---:|")

    X = load_digits().data
    k = 100
    r = default_radius(X, k)
    p = CoverageSelection(X, keep=k, radius=r)
    t = time.perf_counter()
    p.graph  # noqa: B018 - build it once, timed
    g_s = time.perf_counter() - t
    solvers = [("highs", {}, tl), ("cpsat", {}, tl), ("greedy", {}, None),
               ("greedy", {"method": "lazy"}, None), ("greedy", {"lp_bound": True}, None),
               ("lp-round", {}, None), ("kcenter", {}, None)]
    name = f"digits max-cover n=1797 k={k} r={r:.3g}"
    print("\n".join(run_instance(name, p, solvers, g_s, True)), flush=True)
    c = CoverSelection(X, radius=r, cover=0.9, graph=p.graph)
    solvers = [("highs", {}, tl), ("cpsat", {}, tl), ("greedy", {}, None),
               ("lp-round", {}, None), ("kcenter", {}, None)]
    name = f"digits set-cover 90% r={r:.3g}"
    print("\n".join(run_instance(name, c, solvers, g_s, False)), flush=True)
    if args.quick:
        return

    n, k = 10_000, 1_000
    X = digits_like(n, seed=1)
    r = default_radius(X, k)
    p = CoverageSelection(X, keep=k, radius=r)
    t = time.perf_counter()
    p.graph  # noqa: B018
    g_s = time.perf_counter() - t
    solvers = [("greedy", {}, None), ("greedy", {"method": "lazy"}, None), ("kcenter", {}, None)]
    name = f"10k max-cover k={k} r={r:.3g}"
    print("\n".join(run_instance(name, p, solvers, g_s, True)), flush=True)

    n, k = 50_000, 5_000
    X = digits_like(n)
    t = time.perf_counter()
    r = default_radius(X, k)
    p = CoverageSelection(X, keep=k, radius=r)
    p.graph  # noqa: B018
    g_s = time.perf_counter() - t
    t = time.perf_counter()
    pruneopt.solve(p, solver="greedy")
    e2e = g_s + (time.perf_counter() - t)
    solvers = [("greedy", {}, None), ("greedy", {"method": "lazy"}, None),
               ("kcenter", {}, None), ("lp-round", {}, tl), ("highs", {}, tl), ("cpsat", {}, tl)]
    name = f"50k max-cover k={k} r={r:.3g}"
    print("\n".join(run_instance(name, p, solvers, g_s, args.apricot_50k)), flush=True)
    print(f"\n50k end to end (radius choice + graph + greedy): {e2e:.1f} s; graph "
          f"{p.graph.nnz:,} entries ({p.graph.nnz / n:.1f} per point)")


if __name__ == "__main__":
    main()
