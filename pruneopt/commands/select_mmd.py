"""``pruneopt select mmd``: keep the source points that best match a target in MMD.

    pruneopt select mmd --source S.npy --target T.npy --keep K -o kept.npy

S.npy and T.npy are 2-D float arrays (points x features, e.g. penultimate-layer features);
K is a count or a fraction in (0, 1). ``--solver`` defaults to the registry's choice for the
instance size. Writes the sorted kept indices (int64) to the output (or a boolean keep mask
with ``--mask``), whole or not at all, after checking the output path before any work (never
over an input). Prints one summary line.

Class-aware selection (one count per class, :class:`~pruneopt.formulations.MMDSelection`)::

    pruneopt select mmd --source S.npy --target T.npy --labels y.npy --keep K \
        --class-mix em -o kept.npy

``--labels y.npy``: one class label per source row (integers, or strings). With it exactly one
of ``--class-keep FILE.json`` (``{"label": count, ...}``, every source class listed, 0 to keep
none; the counts add up to ``--keep``, which may then be left out) or ``--class-mix``:
``source`` (the source's own proportions: stratified), ``em`` / ``pseudo`` (the target's
proportions estimated without target labels by a logistic regression fitted on the source
features and labels: :func:`~pruneopt.adapters.domain_shift.estimate_class_mix`) or a
``FILE.json`` of proportions (``{"label": p, ...}``, every source class listed, p >= 0,
normalized). Proportions become counts by :func:`~pruneopt.formulations.mmd.apportion`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
from pruneopt.formulations.mmd import class_labels


def _bandwidth(text: str) -> float | str:
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--bandwidth must be 'median' or a number, got {text!r}") from None


MIX_METHODS = ("source", "pseudo", "em")


def _labels(path: str, n: int) -> np.ndarray:
    """The ``--labels`` file: a 1-D .npy of n integer (or string) labels, checked by
    :func:`~pruneopt.formulations.mmd.class_labels`."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        arr = None  # load_npy below says what is wrong
    if not (isinstance(arr, np.ndarray) and arr.dtype.kind == "U"):
        arr = load_npy(path, "labels", ndim=1)
    elif arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels file {path!r} must hold a non-empty 1-D array, got shape "
                         f"{arr.shape}")
    if len(arr) != n:
        raise ValueError(f"labels file {path!r} has {len(arr)} labels but the source has {n} "
                         f"rows; give one label per source row")
    try:
        classes, index = class_labels(arr, n)
    except ValueError as exc:
        raise ValueError(f"--labels {path}: {exc}") from None
    return classes[index]  # integral floats as integers


def _class_json(path: str, flag: str, labels: np.ndarray) -> dict[Any, Any]:
    """``{label: number}`` from a JSON object; keys are turned into the labels' type, and
    every class of ``labels`` must be listed (give 0 to keep none of a class)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag}: {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{flag}: {path!r} must hold a JSON object {{\"label\": number, ...}}")
    numeric = labels.dtype.kind != "U"
    out: dict[Any, Any] = {}
    for key, value in data.items():
        cls: Any = key
        if numeric:
            try:
                cls = int(key)
            except ValueError:
                raise ValueError(f"{flag} {path}: class {key!r} is not an integer, but the "
                                 f"labels are integers") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{flag} {path}: class {key!r} has {value!r}, not a number")
        out[cls] = value
    present = np.unique(labels).tolist()
    missing = [c for c in present if c not in out]
    if missing:
        raise ValueError(f"{flag} {path}: class {missing[0]!r} of the labels is missing "
                         f"({len(missing)} missing in all); list every class (0 to keep none)")
    return out


def _class_options(args, source: np.ndarray, target: np.ndarray
                   ) -> tuple[np.ndarray | None, dict[str, Any], str | None]:
    """``(labels, {"class_keep" or "class_mix": ...}, where)`` from the class options;
    ``where`` names the option (and file) that the formulation's class errors come from."""
    if args.labels is None:
        if args.class_keep is not None or args.class_mix is not None:
            raise ValueError("--class-keep / --class-mix need --labels FILE.npy (one class "
                             "label per source row)")
        return None, {}, None
    if (args.class_keep is None) == (args.class_mix is None):
        raise ValueError("with --labels give exactly one of --class-keep FILE.json (counts "
                         "per class) or --class-mix source|pseudo|em|FILE.json")
    labels = _labels(args.labels, len(source))
    if args.class_keep is not None:
        where = f"--class-keep {args.class_keep}"
        return labels, {"class_keep": _class_json(args.class_keep, "--class-keep", labels)}, where
    if args.class_mix == "source":
        return labels, {"class_mix": "source"}, f"--labels {args.labels}"
    if args.class_mix in ("pseudo", "em"):
        from pruneopt.adapters.domain_shift import estimate_class_mix

        where = f"--class-mix {args.class_mix}"
        try:
            mix = estimate_class_mix(source, labels, target, method=args.class_mix)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return labels, {"class_mix": mix}, where
    if not args.class_mix.endswith(".json"):
        raise ValueError(f"--class-mix must be one of {', '.join(MIX_METHODS)} or a .json file "
                         f"of proportions, got {args.class_mix!r}")
    where = f"--class-mix {args.class_mix}"
    return labels, {"class_mix": _class_json(args.class_mix, "--class-mix", labels)}, where


def run(args) -> int:
    from pruneopt.adapters.mmd import mmd_problem
    from pruneopt.solvers import solve

    inputs = {"--source": args.source, "--target": args.target, "--labels": args.labels,
              "--class-keep": args.class_keep}
    if args.class_mix not in (None, *MIX_METHODS):
        inputs["--class-mix"] = args.class_mix
    outputs = OutputSet({"output -o": args.output},
                        inputs={k: v for k, v in inputs.items() if v is not None},
                        suffixes={"output -o": (".npy",)})
    check_time_limit(args.time_limit)
    keep, bandwidth = parse_keep(args.keep), _bandwidth(args.bandwidth)
    if keep is None and args.class_keep is None:
        raise ValueError("--keep is required (it may be left out with --class-keep, whose "
                         "counts add up to it)")
    source = load_npy(args.source, "source", ndim=2)
    target = load_npy(args.target, "target", ndim=2)
    labels, classes, where = _class_options(args, source, target)
    try:
        problem = mmd_problem(source, target, keep, kernel=args.kernel, bandwidth=bandwidth,
                              labels=labels, **classes)
    except ValueError as exc:
        if where is not None and "class" in str(exc):
            msg = str(exc).replace("(or pass keep=None)", "(or leave out --keep)")
            raise ValueError(f"{where}: {msg}") from None
        raise
    with outputs:
        sol = solve(problem, solver=args.solver, time_limit=args.time_limit)
        out = sol.decision
        if args.mask:
            out = np.zeros(len(source), dtype=bool)
            out[sol.decision] = True
        outputs.write("output -o", npy_writer(np.asarray(out)))
    bound = "none" if sol.bound is None else f"{sol.bound:.6g}"
    per_class = ""
    if labels is not None:
        counts = problem.class_counts(sol.decision)
        per_class = " (per class: " + ", ".join(f"{c}: {k}" for c, k in counts.items()) + ")"
    print(f"kept {len(sol.decision)} of {len(source)}{per_class}: MMD^2 = {sol.objective:.6g}, "
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
    p.add_argument("--keep", default=None,
                   help="number of points to keep, or a fraction (required unless "
                        "--class-keep gives the counts)")
    add_output(p, required=True, help="output .npy (kept indices)")
    add_progress(p, "accepted as by every command (this one shows no progress bar)")
    p.add_argument("--kernel", default="rbf", choices=("rbf", "linear"))
    p.add_argument("--bandwidth", default="median", help="RBF bandwidth or 'median'")
    p.add_argument("--solver", default=None, help=SOLVER_HELP)
    add_time_limit(p)
    p.add_argument("--mask", action="store_true", help="write a boolean keep mask instead")
    p.add_argument("--labels", default=None, metavar="FILE.npy",
                   help="class label of every source row (integers or strings), for "
                        "class-aware selection with --class-keep or --class-mix")
    p.add_argument("--class-keep", default=None, metavar="FILE.json",
                   help='points to keep per class, {"label": count, ...} (every class; the '
                        "counts add up to --keep)")
    p.add_argument("--class-mix", default=None, metavar="source|pseudo|em|FILE.json",
                   help="class proportions of the kept set: the source's own (source), the "
                        "target's estimated from a logistic regression on the source (em: "
                        'EM on the prior; pseudo: predicted shares), or {"label": p, ...}')
    p.set_defaults(func=run)
