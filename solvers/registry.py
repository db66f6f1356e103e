"""The solver registry: who accepts which formulation, what they promise, and ``solve``.

Modelled on cvxpy's ``Problem.solve(solver=...)``: a solver is a name; each name may have
one implementation per formulation class. An implementation is a function

    impl(problem, time_limit: float | None, **options) -> Result

registered with :func:`register`, declaring what it guarantees (``"exact"``,
``"approximation"`` with a ratio, or ``"heuristic"``), the Python modules it imports (so that
a missing backend is reported before it is called, naming the pip package), and a priority
used to choose the default (``solver=None``): the installed exact solver with the lowest
priority number.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pruneopt.formulations.base import Formulation
from pruneopt.solvers.solution import STATUSES, Solution

GUARANTEES = ("exact", "approximation", "heuristic")


@dataclass
class Result:
    """What a solver implementation returns; :func:`solve` turns it into a :class:`Solution`."""

    decision: Any
    status: str
    bound: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SolverSpec:
    """One registered implementation of a solver name for one formulation class."""

    name: str
    problem: type
    impl: Callable[..., Result]
    guarantee: str
    ratio: float | None
    requires: tuple[str, ...]
    package: str | None
    priority: int
    description: str
    accepts: Callable[[Any], str | None] | None = None

    def refusal(self, problem: Any) -> str | None:
        """Why this solver cannot take ``problem`` (size, structure), or None if it can."""
        return None if self.accepts is None else self.accepts(problem)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(mod) is not None for mod in self.requires)


_REGISTRY: dict[tuple[str, type], SolverSpec] = {}


def register(
    name: str,
    problem: type,
    *,
    guarantee: str,
    ratio: float | None = None,
    requires: tuple[str, ...] = (),
    package: str | None = None,
    priority: int = 100,
    description: str = "",
    accepts: Callable[[Any], str | None] | None = None,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Decorator registering ``impl`` as solver ``name`` for formulations of type ``problem``.

    ``accepts(problem)`` may return a reason (str) why an instance is out of the solver's
    reach (e.g. too many patterns); such a solver is left out of :func:`available` and
    asking for it is a ``ValueError`` giving the reason.
    """
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {GUARANTEES}, got {guarantee!r}")

    def deco(impl: Callable[..., Result]) -> Callable[..., Result]:
        key = (name, problem)
        if key in _REGISTRY:
            raise ValueError(f"solver {name!r} is already registered for {problem.__name__}")
        _REGISTRY[key] = SolverSpec(
            name=name,
            problem=problem,
            impl=impl,
            guarantee=guarantee,
            ratio=ratio,
            requires=tuple(requires),
            package=package,
            priority=priority,
            description=description or (impl.__doc__ or "").strip().split("\n")[0],
            accepts=accepts,
        )
        return impl

    return deco


def _specs_for(problem: Formulation) -> list[SolverSpec]:
    specs = [s for (_, cls), s in _REGISTRY.items() if isinstance(problem, cls)]
    # The most specific class wins when a name is registered for a class and its parent.
    best: dict[str, SolverSpec] = {}
    for s in specs:
        cur = best.get(s.name)
        if cur is None or issubclass(s.problem, cur.problem):
            best[s.name] = s
    return sorted(best.values(), key=lambda s: (s.priority, s.name))


def solvers(problem: Formulation | None = None) -> list[SolverSpec]:
    """Every registered implementation (for ``problem``'s type when given), installed or not."""
    if problem is None:
        return sorted(_REGISTRY.values(), key=lambda s: (s.problem.__name__, s.priority, s.name))
    return _specs_for(problem)


def available(problem: Formulation) -> list[str]:
    """Names of the installed solvers that accept ``problem``, the default first."""
    _check_problem(problem)
    return [s.name for s in _specs_for(problem) if s.installed() and s.refusal(problem) is None]


def _check_problem(problem: Any) -> None:
    if not isinstance(problem, Formulation):
        raise ValueError(
            f"solve expects a pruneopt formulation (e.g. pruneopt.formulations.TransposableNM), "
            f"got {type(problem).__name__}"
        )


def get_solver(problem: Formulation, solver: str | None) -> SolverSpec:
    """The spec :func:`solve` would use; ``ValueError`` naming the alternatives otherwise.

    ``solver=None``: the installed exact solver with the lowest priority number, unless the
    problem says an exact solve is not sensible at its size
    (``problem.exact_by_default()``), then the first approximate one.
    """
    _check_problem(problem)
    specs = _specs_for(problem)
    kind = type(problem).__name__
    if solver is None:
        usable = [s for s in specs if s.installed() and s.refusal(problem) is None]
        if not usable:
            raise ValueError(f"no installed solver accepts {kind}")
        exact = [s for s in usable if s.guarantee == "exact"]
        approx = [s for s in usable if s.guarantee != "exact"]
        if exact and (problem.exact_by_default() or not approx):
            return exact[0]
        return approx[0]
    if not isinstance(solver, str):
        raise ValueError(f"solver must be a name (str) or None, got {type(solver).__name__}")
    by_name = {s.name: s for s in specs}
    if solver not in by_name:
        every = sorted({name for name, _ in _REGISTRY})
        if solver in every:
            raise ValueError(
                f"solver {solver!r} does not accept {kind}; solvers for {kind}: "
                f"{', '.join(available(problem)) or 'none installed'}"
            )
        raise ValueError(
            f"unknown solver {solver!r}; solvers for {kind}: "
            f"{', '.join(available(problem)) or 'none installed'}"
        )
    spec = by_name[solver]
    if not spec.installed():
        raise ValueError(
            f"solver {solver!r} needs the package {spec.package or spec.requires[0]!r}, which is "
            f"not installed (pip install {spec.package or spec.requires[0]}); installed "
            f"solvers for {kind}: {', '.join(available(problem)) or 'none'}"
        )
    reason = spec.refusal(problem)
    if reason is not None:
        raise ValueError(
            f"solver {solver!r} does not accept this {kind}: {reason}; solvers that do: "
            f"{', '.join(available(problem)) or 'none'}"
        )
    return spec


def solver_options(spec: SolverSpec) -> list[str] | None:
    """The keyword options ``spec`` takes (``None``: it takes any, ``**kwargs``)."""
    params = list(inspect.signature(spec.impl).parameters.values())[2:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def _check_options(spec: SolverSpec, options: dict[str, Any]) -> None:
    allowed = solver_options(spec)
    if allowed is None:
        return
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"solver {spec.name!r} ({spec.problem.__name__}) has no option "
            f"{', '.join(map(repr, unknown))}; its options: {', '.join(allowed) or 'none'}"
        )


def solve(
    problem: Formulation,
    solver: str | None = None,
    time_limit: float | None = None,
    **options: Any,
) -> Solution:
    """Solve ``problem`` with the named solver (``None``: the best installed exact one).

    The answer is checked for feasibility and re-scored with ``problem.objective``, so every
    solver's answer is comparable. ``time_limit`` is in seconds; options go to the backend.
    """
    spec = get_solver(problem, solver)
    if time_limit is not None:
        try:
            time_limit = float(time_limit)
        except (TypeError, ValueError):
            raise ValueError(
                f"time_limit must be a number of seconds, got {time_limit!r}") from None
        if not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    _check_options(spec, options)
    t0 = time.perf_counter()
    res = spec.impl(problem, time_limit, **options)
    seconds = time.perf_counter() - t0
    if res.status not in STATUSES:
        raise RuntimeError(f"solver {spec.name!r} returned unknown status {res.status!r}")
    if res.status == "optimal" and spec.guarantee != "exact" and not res.info.get("certified"):
        raise RuntimeError(
            f"{spec.name!r} is a {spec.guarantee} solver and cannot claim optimality")
    decision = res.decision
    objective = None
    if decision is not None:
        decision = problem.check(decision)
        objective = float(problem.objective(decision))
    elif res.status in ("optimal", "feasible"):
        raise RuntimeError(f"solver {spec.name!r} said {res.status!r} without a decision")
    bound = None if res.bound is None else float(res.bound)
    if res.status == "optimal" and bound is None:
        bound = objective
    if bound is not None and objective is not None:
        slack = 1e-6 * max(1.0, abs(objective))
        if (bound < objective - slack) if problem.sense == "max" else (bound > objective + slack):
            raise RuntimeError(
                f"solver {spec.name!r} reported bound {bound} on the wrong side of its own "
                f"objective {objective} ({problem.sense}imization): a bug, please report it"
            )
    info = dict(res.info)
    info.setdefault("guarantee", spec.guarantee)
    if spec.ratio is not None:
        info.setdefault("ratio", spec.ratio)
    return Solution(
        decision=decision,
        objective=objective,
        status=res.status,
        bound=bound,
        solver=spec.name,
        seconds=seconds,
        sense=problem.sense,
        guarantee=spec.guarantee,
        info=info,
    )
