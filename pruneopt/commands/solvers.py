"""``pruneopt solvers``: the solver registry as a table (what accepts what, with what promise)."""

from __future__ import annotations

from pruneopt.solvers import solvers
from pruneopt.solvers.options import describe


def table(*, options: bool = False) -> str:
    """Markdown table of every registered solver implementation, in the order of the
    default rule; ``options=True`` adds each solver's declared options and what they take."""
    head = "| formulation | solver | guarantee | needs | installed |"
    lines = [head + (" options |" if options else ""), "|---|---|---|---|---|" + (
        "---|" if options else "")]
    for s in solvers():
        promise = s.guarantee + (f" (ratio {s.ratio:.4g})" if s.ratio is not None else "")
        needs = s.package or "-"
        kind = "any MILP export" if s.problem.__name__ == "MILPExportable" else s.problem.__name__
        row = f"| {kind} | `{s.name}` | {promise} | {needs} | {'yes' if s.installed() else 'no'} |"
        if options:
            row += " " + ("; ".join(f"`{k}`: {v}" for k, v in describe(s.options).items())
                          or "-") + " |"
        lines.append(row)
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("solvers", help="list the registered solvers and what they guarantee")
    p.add_argument("--options", action="store_true",
                   help="also list each solver's options and the values they take")
    p.set_defaults(func=lambda args: print(table(options=args.options)) or 0)
