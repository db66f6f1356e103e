"""``pruneopt select mmd``: keep the source points that best match a target in MMD.

    pruneopt select mmd --source S.npy --target T.npy --keep K -o kept.npy

S.npy and T.npy are 2-D float arrays (points x features, e.g. penultimate-layer features);
K is a count or a fraction in (0, 1). ``--solver`` defaults to the registry's choice for the
instance size. Writes the sorted kept indices (int64) to the output (or a boolean keep mask
with ``--mask``), whole or not at all, after checking the output path before any work (never
over an input). Prints one summary line.
"""

from __future__ import annotations

import numpy as np

from pruneopt.adapters.files import OutputSet, load_npy, npy_writer
from pruneopt.commands._common import (
    SOLVER_HELP,
    add_output,
    add_progress,
    add_time_limit,
    check_time_limit,
    parse_keep,
)


def _bandwidth(text: str) -> float | str:
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--bandwidth must be 'median' or a number, got {text!r}") from None


def run(args) -> int:
    from pruneopt.adapters.mmd import select_mmd

    outputs = OutputSet({"output -o": args.output},
                        inputs={"--source": args.source, "--target": args.target},
                        suffixes={"output -o": (".npy",)})
    check_time_limit(args.time_limit)
    keep, bandwidth = parse_keep(args.keep), _bandwidth(args.bandwidth)
    source = load_npy(args.source, "source", ndim=2)
    target = load_npy(args.target, "target", ndim=2)
    with outputs:
        sol = select_mmd(source, target, keep, kernel=args.kernel, bandwidth=bandwidth,
                         solver=args.solver, time_limit=args.time_limit)
        out = sol.decision
        if args.mask:
            out = np.zeros(len(source), dtype=bool)
            out[sol.decision] = True
        outputs.write("output -o", npy_writer(np.asarray(out)))
    bound = "none" if sol.bound is None else f"{sol.bound:.6g}"
    print(f"kept {len(sol.decision)} of {len(source)}: MMD^2 = {sol.objective:.6g}, "
          f"lower bound = {bound}, status = {sol.status}, solver = {sol.solver}, "
          f"{sol.seconds:.2f} s -> {args.output}")
    return 0


def register(kinds) -> None:
    p = kinds.add_parser("mmd", help="MMD data selection (AdaPrune): match a target sample",
                         description="Keep the source points whose kernel mean best "
                         "matches a target sample (minimum squared MMD, AdaPrune); write "
                         "the kept indices to a .npy file.")
    p.add_argument("--source", required=True, help="source points, .npy (n x d)")
    p.add_argument("--target", required=True, help="target points, .npy (m x d)")
    p.add_argument("--keep", required=True, help="number of points to keep, or a fraction")
    add_output(p, required=True, help="output .npy (kept indices)")
    add_progress(p, "accepted as by every command (this one shows no progress bar)")
    p.add_argument("--kernel", default="rbf", choices=("rbf", "linear"))
    p.add_argument("--bandwidth", default="median", help="RBF bandwidth or 'median'")
    p.add_argument("--solver", default=None, help=SOLVER_HELP)
    add_time_limit(p)
    p.add_argument("--mask", action="store_true", help="write a boolean keep mask instead")
    p.set_defaults(func=run)
