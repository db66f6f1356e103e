"""``pruneopt solvers``: the solver registry as a table (what accepts what, with what promise)."""

from __future__ import annotations

from pruneopt.solvers import solvers


def table() -> str:
    """Markdown table of every registered solver implementation."""
    lines = [
        "| formulation | solver | guarantee | needs | installed |",
        "|---|---|---|---|---|",
    ]
    for s in solvers():
        promise = s.guarantee + (f" (ratio {s.ratio:.4g})" if s.ratio is not None else "")
        needs = s.package or "-"
        kind = "any MILP export" if s.problem.__name__ == "MILPExportable" else s.problem.__name__
        lines.append(f"| {kind} | `{s.name}` | {promise} | {needs} | "
                     f"{'yes' if s.installed() else 'no'} |")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("solvers", help="list the registered solvers and what they guarantee")
    p.set_defaults(func=lambda args: print(table()) or 0)
