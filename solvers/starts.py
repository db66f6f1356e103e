"""Heuristic starts for the exact backends: one fast, feasible answer per formulation.

A solver module registers the start of its formulation with :func:`register_start`; the
generic exact backends (:mod:`pruneopt.solvers.milp`, CP-SAT) warm-start from it and return
it when they are stopped by the time limit before finding anything better, so a
time-limited exact solve is never worse than the heuristic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_STARTS: dict[type, Callable[[Any], Any]] = {}


def register_start(cls: type) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Decorator: ``fn(problem) -> (decision, bound)`` is the heuristic start for ``cls``
    (``bound``: a proven bound on the optimum that comes with it, or None)."""

    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _STARTS[cls] = fn
        return fn

    return deco


@dataclass
class Start:
    """A heuristic answer and the bound proven with it (None: no bound)."""

    decision: Any
    bound: float | None


def heuristic_start(problem: Any) -> Start | None:
    """The registered heuristic answer for ``problem`` (checked), or None if it has none."""
    for cls in type(problem).__mro__:
        fn = _STARTS.get(cls)
        if fn is not None:
            decision, bound = fn(problem)
            return Start(problem.check(decision), None if bound is None else float(bound))
    return None


def tighter(problem: Any, a: float | None, b: float | None) -> float | None:
    """The tighter of two proven bounds (the smaller for a maximization)."""
    if a is None or b is None:
        return b if a is None else a
    return min(a, b) if problem.sense == "max" else max(a, b)


def better_of(problem: Any, decision: Any, start: Any) -> tuple[Any, bool]:
    """``(answer, from_start)``: ``start`` when ``decision`` is None or strictly worse."""
    if start is None:
        return decision, False
    if decision is None:
        return start, True
    a, b = problem.objective(start), problem.objective(decision)
    if problem.better(a, b) and abs(a - b) > problem.objective_tolerance(a):
        return start, True
    return decision, False
