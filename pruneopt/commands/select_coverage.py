"""``pruneopt select coverage``: keep the points whose radius balls cover the most data.

    pruneopt select coverage --features X.npy --budget K --radius R -o kept.npy

X.npy is a 2-D float array (points x features). K is the number of points to keep, R the
covering radius in the units of X (``auto``: the radius at which the average neighbourhood
holds about n / K points). ``--weights W.npy`` weights the points. ``--cover F`` instead
solves the set-cover form: the fewest points covering at least the fraction F (then
``--budget`` is not used). Writes the sorted kept indices (int64) atomically: a temporary
file in the same folder renamed over the target. Prints one summary line.
"""

from __future__ import annotations

import numpy as np

from pruneopt.adapters.files import load_npy, save_npy


def run(args) -> int:
    from pruneopt.formulations.coverage import (
        CoverageSelection,
        CoverSelection,
        radius_for_budget,
    )
    from pruneopt.solvers import solve

    X = load_npy(args.features, "features")
    weights = None if args.weights is None else load_npy(args.weights, "weights")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    if args.cover is None and args.budget is None:
        raise ValueError("give --budget K (max coverage) or --cover F (set cover)")
    if args.radius == "auto":
        if args.budget is None:
            raise ValueError("--radius auto needs --budget")
        radius = radius_for_budget(X, args.budget)
    else:
        try:
            radius = float(args.radius)
        except ValueError:
            raise ValueError(f"--radius must be a number or 'auto', got {args.radius!r}") from None
    if args.cover is not None:
        problem = CoverSelection(X, radius=radius, cover=args.cover, weights=weights)
    else:
        problem = CoverageSelection(X, budget=args.budget, radius=radius, weights=weights)
    sol = solve(problem, solver=args.solver, time_limit=args.time_limit)
    if sol.decision is None:
        raise ValueError(f"solver {sol.solver!r} found no selection ({sol.status}); "
                         "raise --time-limit or use --solver greedy")
    save_npy(args.output, np.asarray(sol.decision, dtype=np.int64))
    covered = problem.covered_weight(sol.decision) / problem.total_weight
    bound = "none" if sol.bound is None else f"{sol.bound:g}"
    print(f"kept {len(sol.decision)} of {problem.n} points, radius {radius:g}, covered "
          f"{covered:.1%}; {sol.solver}: {sol.status}, objective {sol.objective:g}, "
          f"bound {bound}, {sol.seconds:.2f} s -> {args.output}")
    return 0


def register(kinds) -> None:
    p = kinds.add_parser(
        "coverage",
        help="max coverage (or set cover) coreset at a radius: write kept indices",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("--features", required=True, help="(n, d) .npy float array")
    p.add_argument("--budget", type=int, default=None, help="number of points to keep")
    p.add_argument("--radius", required=True, help="covering radius, or 'auto'")
    p.add_argument("--cover", type=float, default=None,
                   help="set-cover form: fewest points covering this fraction (0, 1]")
    p.add_argument("--weights", default=None, help="optional (n,) .npy non-negative weights")
    p.add_argument("--solver", default="greedy",
                   help="greedy (default), highs, cpsat, lp-round, kcenter, scipy, pyomo")
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("-o", "--output", required=True, help="output .npy of kept indices")
    p.set_defaults(func=run)
