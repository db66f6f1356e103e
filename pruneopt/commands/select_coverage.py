"""``pruneopt select coverage``: keep the points whose radius balls cover the most data.

    pruneopt select coverage --features X.npy --keep K --radius R -o kept.npy

X.npy is a 2-D float array (points x features). K is the number of points to keep, or a
fraction in (0, 1) of them; R the covering radius in the units of X (``auto``: the radius at
which the average neighbourhood holds about n / K points,
:func:`pruneopt.formulations.geometry.default_radius`). ``--weights W.npy`` weights the
points. ``--cover F`` instead solves the set-cover form: the fewest points covering at least
the fraction F (then ``--keep`` only sets the scale of ``--radius auto``). ``--solver``
defaults to the registry's choice for the instance size. Writes the sorted kept indices
(int64), whole or not at all, after checking the output path before any work (never over an
input). Prints one summary line.
"""

from __future__ import annotations

import numpy as np

from pruneopt.adapters.files import OutputSet, npy_writer
from pruneopt.commands._common import (
    SOLVER_HELP,
    DeprecatedAlias,
    add_output,
    add_progress,
    add_time_limit,
    check_time_limit,
    keep_count,
    parse_keep,
)


def run(args) -> int:
    from pruneopt.adapters.files import load_npy
    from pruneopt.formulations.coverage import CoverageSelection, CoverSelection
    from pruneopt.formulations.geometry import default_radius
    from pruneopt.solvers import solve

    outputs = OutputSet({"output -o": args.output},
                        inputs={"--features": args.features, "--weights": args.weights},
                        suffixes={"output -o": (".npy",)})
    check_time_limit(args.time_limit)
    keep = parse_keep(args.keep)
    if args.cover is None and keep is None:
        raise ValueError("give --keep K (max coverage) or --cover F (set cover)")
    X = load_npy(args.features, "features", ndim=2)
    weights = None if args.weights is None else load_npy(args.weights, "weights", ndim=1)
    if keep is not None:
        keep = keep_count(keep, len(X))
    if args.radius == "auto":
        if keep is None:
            raise ValueError("--radius auto needs --keep (the scale: about n / keep points "
                             "per ball)")
        radius = default_radius(X, keep)
    else:
        try:
            radius = float(args.radius)
        except ValueError:
            raise ValueError(f"--radius must be a number or 'auto', got {args.radius!r}") from None
    if args.cover is not None:
        problem = CoverSelection(X, cover=args.cover, radius=radius, weights=weights)
    else:
        problem = CoverageSelection(X, keep=keep, radius=radius, weights=weights)
    with outputs:
        sol = solve(problem, solver=args.solver, time_limit=args.time_limit)
        if sol.decision is None:
            raise ValueError(f"solver {sol.solver!r} found no selection ({sol.status}); "
                             "raise --time-limit or use --solver greedy")
        outputs.write("output -o", npy_writer(np.asarray(sol.decision, dtype=np.int64)))
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
    p.add_argument("--keep", default=None, metavar="K",
                   help="number of points to keep, or a fraction in (0, 1)")
    p.add_argument("--budget", dest="keep", action=DeprecatedAlias, new="--keep")
    p.add_argument("--radius", required=True, help="covering radius, or 'auto'")
    p.add_argument("--cover", type=float, default=None,
                   help="set-cover form: fewest points covering this fraction (0, 1]")
    p.add_argument("--weights", default=None, help="optional (n,) .npy non-negative weights")
    p.add_argument("--solver", default=None,
                   help=SOLVER_HELP + "; e.g. highs, cpsat, greedy, lp-round, kcenter")
    add_time_limit(p)
    add_output(p, required=True, help="output .npy of kept indices")
    add_progress(p, "accepted as by every command (this one shows no progress bar)")
    p.set_defaults(func=run)
