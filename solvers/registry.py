"""The solver registry: who accepts which formulation, what they promise, and ``solve``.

Modelled on cvxpy's ``Problem.solve(solver=...)``: a solver is a name; each name may have
one implementation per formulation class. An implementation is a function

    impl(problem, time_limit: float | None, **options) -> Result

registered with :func:`register`, declaring what it guarantees (``"exact"``,
``"approximation"`` with a ratio, or ``"heuristic"``), the Python modules it imports (so that
a missing backend is reported before it is called, naming the pip package), the table of
its keyword options (:mod:`pruneopt.solvers.options`, checked before it runs) and whether
it honours ``time_limit``. Which solver ``solver=None`` picks is decided in one place,
:mod:`pruneopt.solvers.defaults`.

A proof of optimality is a typed field: ``Result.proof`` names what proves an
``"optimal"`` answer (``"backend"``, ``"exact algorithm"``, ``"bound meets objective"``,
``"residual graph"``...). An exact solver's "optimal" carries its own proof; a heuristic or
approximate solver may say "optimal" only with ``proof`` set.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pruneopt.formulations.base import Formulation
from pruneopt.solvers import defaults
from pruneopt.solvers.options import Constraint, check_options
from pruneopt.solvers.solution import STATUSES, Solution

GUARANTEES = ("exact", "approximation", "heuristic")


@dataclass
class Result:
    """What a solver implementation returns; :func:`solve` turns it into a :class:`Solution`."""

    decision: Any
    status: str
    bound: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: what proves an "optimal" status (None: no proof beyond the solver's guarantee)
    proof: str | None = None


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
    description: str
    accepts: Callable[[Any], str | None] | None = None
    options: Mapping[str, Constraint] = field(default_factory=dict)
    honours_time_limit: bool = True

    def refusal(self, problem: Any) -> str | None:
        """Why this solver cannot take ``problem`` (size, structure), or None if it can."""
        return None if self.accepts is None else self.accepts(problem)

    def installed(self) -> bool:
        return package_installed(*self.requires)


def package_installed(*modules: str) -> bool:
    """Whether every named module can be imported (found on the path; not imported). A
    module set to None in ``sys.modules`` counts as missing (as ``import`` treats it); the
    path search is done once per module and process (it costs ~0.1 ms, on every solve)."""
    return all(sys.modules[mod] is not None if mod in sys.modules else module_on_path(mod)
               for mod in modules)


@cache
def module_on_path(mod: str) -> bool:
    """Whether ``mod`` is found on the import path (cached: the path does not change under a
    running solve)."""
    return importlib.util.find_spec(mod) is not None


_REGISTRY: dict[tuple[str, type], SolverSpec] = {}


def register(
    name: str,
    problem: type,
    *,
    guarantee: str,
    ratio: float | None = None,
    requires: tuple[str, ...] = (),
    package: str | None = None,
    description: str = "",
    accepts: Callable[[Any], str | None] | None = None,
    options: Mapping[str, Constraint] | None = None,
    honours_time_limit: bool = True,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Decorator registering ``impl`` as solver ``name`` for formulations of type ``problem``.

    ``accepts(problem)`` may return a reason (str) why an instance is out of the solver's
    reach (e.g. too many patterns); such a solver is left out of :func:`available` and
    asking for it is a ``ValueError`` giving the reason. ``options`` declares every keyword
    option of ``impl`` (name -> :class:`~pruneopt.solvers.options.Constraint`); it must name
    exactly the keyword-only parameters of ``impl``. ``honours_time_limit=False``: the
    solver cannot stop early, and ``solve(..., time_limit=...)`` refuses it.
    """
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {GUARANTEES}, got {guarantee!r}")
    table = dict(options or {})

    def deco(impl: Callable[..., Result]) -> Callable[..., Result]:
        key = (name, problem)
        if key in _REGISTRY:
            raise ValueError(f"solver {name!r} is already registered for {problem.__name__}")
        params = list(inspect.signature(impl).parameters.values())[2:]
        if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            raise ValueError(f"solver {name!r}: declare its options, not **kwargs")
        declared = {p.name for p in params}
        if declared != set(table):
            raise ValueError(
                f"solver {name!r} ({problem.__name__}): options table {sorted(table)} does "
                f"not match the implementation's keyword options {sorted(declared)}")
        _REGISTRY[key] = SolverSpec(
            name=name,
            problem=problem,
            impl=impl,
            guarantee=guarantee,
            ratio=ratio,
            requires=tuple(requires),
            package=package,
            description=description or (impl.__doc__ or "").strip().split("\n")[0],
            accepts=accepts,
            options=table,
            honours_time_limit=honours_time_limit,
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
    return sorted(best.values(), key=lambda s: defaults.rank(type(problem), s.name))


def solvers(problem: Formulation | None = None) -> list[SolverSpec]:
    """Every registered implementation (for ``problem``'s type when given), installed or not,
    in the order of :mod:`~pruneopt.solvers.defaults` (the default first)."""
    if problem is None:
        return sorted(_REGISTRY.values(),
                      key=lambda s: (s.problem.__name__, defaults.rank(s.problem, s.name)))
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

    ``solver=None`` (or ``"auto"``): the rule of :mod:`pruneopt.solvers.defaults`, the first
    installed solver of the formulation's preference list that accepts the instance and
    whose default size limit it is within.
    """
    _check_problem(problem)
    specs = _specs_for(problem)
    kind = type(problem).__name__
    if solver is None or solver == "auto":
        usable = [s for s in specs if s.installed() and s.refusal(problem) is None]
        if not usable:
            raise ValueError(f"no installed solver accepts {kind}")
        sized = [s for s in usable if defaults.within_default_size(problem, s.name)]
        return (sized or usable)[0]
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


def solver_options(spec: SolverSpec) -> list[str]:
    """The keyword options ``spec`` takes (its declared table)."""
    return list(spec.options)


def check_time_limit(time_limit: Any) -> float | None:
    """``time_limit`` in seconds as a float > 0, or None (no limit; ``inf`` means none)."""
    if time_limit is None:
        return None
    if isinstance(time_limit, bool):
        raise ValueError(f"time_limit must be a number of seconds, got {time_limit!r}")
    try:
        t = float(time_limit)
    except (TypeError, ValueError):
        raise ValueError(f"time_limit must be a number of seconds, got {time_limit!r}") from None
    if not t > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    return None if math.isinf(t) else t


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
    time_limit = check_time_limit(time_limit)
    if time_limit is not None and not spec.honours_time_limit:
        raise ValueError(
            f"solver {spec.name!r} cannot stop at a time limit; call it without time_limit "
            f"or use one of: {', '.join(_time_limited(problem)) or 'none'}")
    check_options(spec.name, spec.problem.__name__, spec.options, options)
    t0 = time.perf_counter()
    res = spec.impl(problem, time_limit, **options)
    seconds = time.perf_counter() - t0
    if res.status not in STATUSES:
        raise RuntimeError(f"solver {spec.name!r} returned unknown status {res.status!r}")
    proof = res.proof
    if res.status == "optimal" and proof is None:
        if spec.guarantee != "exact":
            raise RuntimeError(
                f"{spec.name!r} is a {spec.guarantee} solver and cannot claim optimality "
                f"without a proof")
        proof = "exact algorithm"
    decision = res.decision
    objective = None
    if decision is not None:
        decision = problem.check(decision)
        objective = float(problem.objective(decision))
    elif res.status in ("optimal", "feasible"):
        raise RuntimeError(f"solver {spec.name!r} said {res.status!r} without a decision")
    bound = None if res.bound is None else float(res.bound)
    if bound is not None and objective is not None:
        slack = problem.objective_tolerance(objective)
        if (bound < objective - slack) if problem.sense == "max" else (bound > objective + slack):
            raise RuntimeError(
                f"solver {spec.name!r} reported bound {bound} on the wrong side of its own "
                f"objective {objective} ({problem.sense}imization): a bug, please report it"
            )
    if res.status == "optimal":
        bound = objective  # proven: the optimum is the answer's objective
    info = dict(res.info)
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
        proof=proof if res.status == "optimal" else None,
        info=info,
    )


def _time_limited(problem: Formulation) -> list[str]:
    return [s.name for s in _specs_for(problem)
            if s.honours_time_limit and s.installed() and s.refusal(problem) is None]
