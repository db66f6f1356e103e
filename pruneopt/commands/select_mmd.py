"""``pruneopt select mmd``: keep the source points that best match a target in MMD.

    pruneopt select mmd --source S.npy --target T.npy --keep K -o kept.npy

S.npy and T.npy are 2-D float arrays (points x features, e.g. penultimate-layer features);
K is a count or a fraction in (0, 1). Writes the sorted kept indices (int64) to the output
(or a boolean keep mask with ``--mask``), atomically: a temporary file in the same folder
renamed over the target, so the output is complete or absent. Prints one summary line.
"""

from __future__ import annotations

import numpy as np

from pruneopt.adapters.files import load_npy, save_npy


def _keep(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--keep must be a count or a fraction in (0, 1), got {text!r}") from None
    if 0 < value < 1:
        return value
    if not value.is_integer():
        raise ValueError(f"--keep must be a whole count or a fraction in (0, 1), got {text!r}")
    return int(value)


def _bandwidth(text: str) -> float | str:
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--bandwidth must be 'median' or a number, got {text!r}") from None


def run(args) -> int:
    from pruneopt.adapters.mmd import select_mmd

    source = load_npy(args.source, "source")
    target = load_npy(args.target, "target")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    sol = select_mmd(source, target, _keep(args.keep), kernel=args.kernel,
                     bandwidth=_bandwidth(args.bandwidth), solver=args.solver,
                     time_limit=args.time_limit)
    out = sol.decision
    if args.mask:
        out = np.zeros(len(source), dtype=bool)
        out[sol.decision] = True
    save_npy(args.output, out)
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
    p.add_argument("-o", "--output", required=True, help="output .npy (kept indices)")
    p.add_argument("--kernel", default="rbf", choices=("rbf", "linear"))
    p.add_argument("--bandwidth", default="median", help="RBF bandwidth or 'median'")
    p.add_argument("--solver", default="auto",
                   help="auto (scip n<=30, relax-swap n<=3000, else lowrank) or a solver name")
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--mask", action="store_true", help="write a boolean keep mask instead")
    p.set_defaults(func=run)
