"""Generic MILP backends for every formulation that exports a :class:`MILPForm`.

- ``"highs"``: HiGHS through highspy (branch and cut; for a totally unimodular form it solves
  the LP with simplex and verifies that the vertex is integral, branching only if it is not).
- ``"scipy"``: ``scipy.optimize.milp`` (HiGHS as shipped inside SciPy).
- ``"pyomo"``: a Pyomo model solved by Pyomo's HiGHS interface (``appsi_highs``).

Every backend solves with the objective divided by ``form.objective_unit()`` (max |c|), so
that HiGHS's absolute tolerances act on numbers of order 1 at any scale of the data, and
scales the bound back. Status and bound come from the backend's own proof: ``"optimal"``
when it reports optimality with a zero gap (``mip_rel_gap``, default 0; absolute gap 0),
``"feasible"`` when the proof only holds within a gap the user allowed, else the incumbent
with ``"time_limit"`` and the dual bound.

Warm starts: the formulation's heuristic answer (:mod:`pruneopt.solvers.starts`) is passed
to HiGHS as a starting solution, and returned instead of the backend's incumbent when the
time limit stops the backend at something worse. ``time_limit`` covers building the model
too (Pyomo builds its expressions in Python).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Any

import numpy as np

from pruneopt.formulations.base import is_integral
from pruneopt.formulations.standard import MILPExportable, MILPForm, pyomo_model
from pruneopt.solvers.highs import FEASIBILITY_TOL, run_highs
from pruneopt.solvers.options import REL_GAP, THREADS
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import Start, better_of, heuristic_start, tighter

INTEGRALITY_TOL = 1e-6


def integral(x: np.ndarray, form: MILPForm) -> bool:
    """Whether the integer variables of ``x`` are integral (within 1e-6)."""
    xi = x[form.integrality.astype(bool)]
    return bool(np.all(np.abs(xi - np.round(xi)) <= INTEGRALITY_TOL))


def decode(form: MILPForm, x: np.ndarray | None) -> Any:
    """The decision of solution vector ``x`` (integer variables rounded), or None."""
    if x is None:
        return None
    x = np.array(x, dtype=float)
    mask = form.integrality.astype(bool)
    x[mask] = np.round(x[mask])
    return form.decode(x)


@contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


class _Clock:
    def __init__(self, time_limit: float | None) -> None:
        self.deadline = None if time_limit is None else time.perf_counter() + time_limit

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def out(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


def _finish(problem: MILPExportable, status: str, decision: Any, bound: float | None,
            info: dict[str, Any], start: Start | None) -> Result:
    """The backend's answer, or the heuristic start when that is better (then never
    "optimal"); a proven optimum keeps its status. The bound is the tighter of the
    backend's and the heuristic's."""
    if status == "infeasible":
        return Result(None, "infeasible", None, info)
    if status == "optimal":
        return Result(decision, "optimal", bound, info, proof="backend")
    if start is None:
        return Result(decision, status, bound, info)
    answer, from_start = better_of(problem, decision, start.decision)
    info["answer_from"] = "heuristic start" if from_start else "backend"
    return Result(answer, status, tighter(problem, bound, start.bound), info)


#: How far a backend's dual bound may stray, per variable, in units of max |c|: HiGHS's
#: dual feasibility tolerance (1e-10 here, 1e-7 inside SciPy and Pyomo on an objective
#: scaled to at most 1e-6 of that) times a margin of 10.
BOUND_SLACK = 1e-9


def widened(form: MILPForm, bound: float | None, unit: float) -> float | None:
    """A backend's dual bound made safe: moved away from the optimum by ``BOUND_SLACK`` per
    variable times the objective's unit (a MIP's dual bound is only as exact as the LP
    tolerances it was computed with)."""
    if bound is None:
        return None
    slack = BOUND_SLACK * len(form.c) * unit
    bound = bound + slack if form.sense == "max" else bound - slack
    if _integral_objective(form):  # the optimum is an integer: so is the best bound
        bound = math.floor(bound) if form.sense == "max" else math.ceil(bound)
    return float(bound)


def _integral_objective(form: MILPForm) -> bool:
    c = np.asarray(form.c, dtype=np.float64)
    ints = form.integrality.astype(bool)
    return (is_integral(c[ints]) and not np.any(c[~ints])
            and float(form.offset).is_integer())


def _gap_status(problem: MILPExportable, form: MILPForm, decision: Any, bound: float | None,
                unit: float) -> str:
    """"optimal" when the backend's ``bound`` meets the decision's objective (within the
    data-relative tolerance, or the backend's own precision, ``BOUND_SLACK`` per variable),
    else "feasible": the status the backend's proof supports."""
    if decision is None or bound is None:
        return "feasible"
    obj = problem.objective(decision)
    tol = max(problem.objective_tolerance(obj), BOUND_SLACK * len(form.c) * unit)
    return "optimal" if abs(bound - obj) <= tol else "feasible"


@register("highs", MILPExportable, guarantee="exact", requires=("highspy",), package="highspy",
          options={"mip_rel_gap": REL_GAP, "threads": THREADS})
def highs_solver(problem: MILPExportable, time_limit: float | None, *, mip_rel_gap: float = 0.0,
                 threads: int | None = None) -> Result:
    """HiGHS (highspy): MILP branch and cut; LP plus an integrality check for TU forms."""
    clock = _Clock(time_limit)
    form = problem.to_milp()
    unit = form.objective_unit()
    args = (form.c / unit, form.A, form.row_lower, form.row_upper, form.lower, form.upper)
    kw = {"sense": form.sense, "offset": form.offset / unit, "threads": threads}
    info: dict[str, Any] = {"objective_unit": unit}
    if form.totally_unimodular:
        # presolve gains nothing on these bipartite forms and grows super-linearly
        # (19 s of presolve vs 0.8 s of simplex on a 384 x 384 N:M LP)
        out = run_highs(*args, time_limit=clock.left(), presolve=False, **kw)
        if out.status == "optimal" and integral(out.x, form):
            info.update(backend_status=out.raw, lp_integral=True)
            return Result(decode(form, out.x), "optimal",
                          widened(form, out.dual_bound * unit, unit), info,
                          proof="backend (integral LP vertex of a TU matrix)")
        info["lp_integral"] = False  # a fractional TU vertex cannot come out of simplex
    start = heuristic_start(problem)
    if clock.out():
        return _finish(problem, "time_limit", None, None, info, start)
    x0 = None if start is None or form.encode is None else form.encode(start.decision)
    out = run_highs(*args, integrality=form.integrality, time_limit=clock.left(),
                    mip_rel_gap=mip_rel_gap, start=x0, **kw)
    info.update(backend_status=out.raw, mip_gap=out.mip_gap)
    if out.status in ("unbounded", "error"):
        raise RuntimeError(f"HiGHS ended with status {out.raw!r}")
    x = out.x if out.x is not None and integral(out.x, form) else None
    decision = decode(form, x)
    bound = None if out.dual_bound is None else out.dual_bound * unit
    status = out.status
    if status == "optimal" and mip_rel_gap > 0:
        status = _gap_status(problem, form, decision, bound, unit)  # within the gap asked
    return _finish(problem, status, decision, widened(form, bound, unit), info, start)


@register("scipy", MILPExportable, guarantee="exact", requires=("scipy",), package="scipy",
          options={"mip_rel_gap": REL_GAP})
def scipy_solver(problem: MILPExportable, time_limit: float | None, *,
                 mip_rel_gap: float = 0.0) -> Result:
    """scipy.optimize.milp (the HiGHS copy inside SciPy).

    SciPy exposes no absolute MIP gap (HiGHS's default 1e-6 applies), so the objective is
    passed in units of ``1e-6 max |c|`` (that gap is then 1e-12 of the largest coefficient),
    and "optimal" is said only when the reported dual bound meets the answer.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    clock = _Clock(time_limit)
    form = problem.to_milp()
    unit = form.objective_unit() * 1e-6
    sign = -1.0 if form.sense == "max" else 1.0

    def run(integrality):
        opts: dict[str, Any] = {"mip_rel_gap": mip_rel_gap}
        left = clock.left()
        if left is not None:
            opts["time_limit"] = max(left, 1e-3)
        return milp(sign * np.asarray(form.c, dtype=float) / unit,
                    constraints=[LinearConstraint(form.A, form.row_lower, form.row_upper)],
                    bounds=Bounds(form.lower, form.upper), integrality=integrality,
                    options=opts)

    def to_bound(value):
        return None if value is None or not np.isfinite(value) else (
            sign * value + form.offset / unit) * unit

    info: dict[str, Any] = {"objective_unit": unit}
    if form.totally_unimodular:  # the LP vertex is integral: solve the LP, verify
        res = run(np.zeros(len(form.c), dtype=int))
        if res.status == 0 and integral(res.x, form):
            info.update(backend_status=res.message, lp_integral=True)
            return Result(decode(form, res.x), "optimal",
                          widened(form, to_bound(res.fun), unit * 1e6), info,
                          proof="backend (integral LP vertex of a TU matrix)")
    start = heuristic_start(problem)
    if clock.out():
        return _finish(problem, "time_limit", None, None, info, start)
    res = run(form.integrality.astype(int))
    info["backend_status"] = res.message
    bound = to_bound(getattr(res, "mip_dual_bound", None))
    x = res.x if res.x is not None and integral(res.x, form) else None
    decision = decode(form, x)
    if res.status == 2:
        return Result(None, "infeasible", None, info)
    safe = widened(form, bound, unit * 1e6)
    if res.status == 0:
        status = _gap_status(problem, form, decision, bound, unit * 1e6)
        if status == "optimal":
            return Result(decision, "optimal", safe, info, proof="backend (bound = objective)")
        return _finish(problem, "feasible", decision, safe, info, start)
    if res.status == 1:
        return _finish(problem, "time_limit", decision, safe, info, start)
    raise RuntimeError(f"scipy.optimize.milp failed: {res.message}")


@register("pyomo", MILPExportable, guarantee="exact", requires=("pyomo", "highspy"),
          package="pyomo", options={"mip_rel_gap": REL_GAP})
def pyomo_solver(problem: MILPExportable, time_limit: float | None, *,
                 mip_rel_gap: float = 0.0) -> Result:
    """The MILP as a Pyomo model (variables ``x[j]``), solved by Pyomo's HiGHS interface.

    Built from ``problem.to_milp()`` (objective scaled to order 1) so that the decision can
    be decoded for every formulation; ``problem.to_pyomo()`` is the readable model."""
    import pyomo.environ as pyo
    from pyomo.opt import TerminationCondition as TC

    clock = _Clock(time_limit)
    form = problem.to_milp()
    unit = form.objective_unit()
    scaled = MILPForm(**{**form.__dict__, "c": form.c / unit, "offset": form.offset / unit})
    info: dict[str, Any] = {"objective_unit": unit}
    start = heuristic_start(problem)
    try:
        with _quiet("pyomo"):  # Pyomo logs an ERROR for the exception we raise
            model = pyomo_model(scaled, deadline=clock.deadline)
    except TimeoutError:
        info["backend_status"] = "time limit while building the model"
        return _finish(problem, "time_limit", None, None, info, start)
    left = clock.left()
    if left is not None and left <= 0:
        return _finish(problem, "time_limit", None, None, info, start)
    opt = pyo.SolverFactory("appsi_highs")
    opt.highs_options["mip_rel_gap"] = float(mip_rel_gap)
    opt.highs_options["mip_abs_gap"] = 0.0
    for name in ("primal_feasibility_tolerance", "dual_feasibility_tolerance",
                 "mip_feasibility_tolerance"):
        opt.highs_options[name] = FEASIBILITY_TOL
    # the legacy interface sets config.time_limit / load_solution from these arguments
    res = opt.solve(model, timelimit=None if left is None else max(left, 1e-3),
                    load_solutions=False)
    tc = res.solver.termination_condition
    info["backend_status"] = str(tc)
    lb, ub = res.problem.lower_bound, res.problem.upper_bound
    bound = ub if form.sense == "max" else lb
    raw = None if bound is None or not np.isfinite(bound) else float(bound) * unit
    bound = widened(form, raw, unit)
    if tc == TC.infeasible:
        return Result(None, "infeasible", None, info)
    try:
        with _quiet("pyomo"):  # a warning when loading a time-limited incumbent
            model.solutions.load_from(res)
        x = np.array([pyo.value(model.x[j]) for j in range(len(form.c))], dtype=float)
    except Exception:  # noqa: BLE001 - no solution to load
        x = None
    decision = decode(form, x if x is not None and integral(x, form) else None)
    if tc == TC.optimal:
        status = "optimal" if mip_rel_gap == 0 else _gap_status(problem, form, decision, raw,
                                                                unit)
        return _finish(problem, status, decision, bound, info, start)
    if tc in (TC.maxTimeLimit, TC.maxIterations) or decision is None:
        return _finish(problem, "time_limit", decision, bound, info, start)
    raise RuntimeError(f"Pyomo/HiGHS ended with {tc}")
