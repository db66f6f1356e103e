"""OR-Tools CP-SAT for the coverage coresets (exact, with a time limit and a proven bound).

Defaults: one worker with ``linearization_level=2`` (the full LP relaxation in the search):
on these models it proves optima that the default two-worker portfolio does not reach.

Model: Booleans ``x_j`` (select j) and ``y_i`` (i covered), ``y_i <= sum_{j in N(i)} x_j``,
the budget (or the cover requirement) as a linear constraint, warm-started from the greedy
answer. CP-SAT needs integer coefficients: integral weights are used as they are (the proof
is then exact); other weights are scaled by ``weight_scale / max(w)`` and rounded, and the
bound is widened by the rounding error (``0.5 / scale`` per point), so it stays valid;
"optimal" is then said only when the objective meets that widened bound.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from pruneopt.formulations.base import is_integral
from pruneopt.formulations.coverage import CoverageSelection, CoverSelection, RadiusCover
from pruneopt.solvers.coverage_greedy import greedy_max_coverage, greedy_set_cover
from pruneopt.solvers.options import SEED, WARM_START, WORKERS, Integer, Real
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import better_of

OPTIONS = {"workers": WORKERS, "seed": SEED, "weight_scale": Real(1.0, 1e15),
           "warm_start": WARM_START, "linearization": Integer(0, 2)}


def _model(problem: RadiusCover):
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    n = problem.n
    x = [m.new_bool_var(f"x{j}") for j in range(n)]
    y = [m.new_bool_var(f"y{i}") for i in range(n)]
    g = problem.graph
    for i in range(n):
        nb = g.indices[g.indptr[i]:g.indptr[i + 1]]
        m.add(sum(x[int(j)] for j in nb) >= y[i])  # linear: it enters the LP relaxation
    return m, x, y


def _solve(m, x, hint: np.ndarray, time_limit: float | None, workers: int, seed: int,
           linearization: int):
    from ortools.sat.python import cp_model

    chosen = set(int(j) for j in hint)
    for j, v in enumerate(x):
        m.add_hint(v, j in chosen)
    solver = cp_model.CpSolver()
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    solver.parameters.linearization_level = int(linearization)
    status = solver.solve(m)
    return solver, status, cp_model


def _exact_weights(problem: RadiusCover) -> bool:
    """Integral weights small enough that every sum of them is exact in int64."""
    return is_integral(problem.weights, 2.0**53 / max(problem.n, 1))


def _scaled(problem: RadiusCover, weight_scale: float) -> tuple[np.ndarray, float, bool]:
    w = problem.weights
    if _exact_weights(problem):
        return w.astype(np.int64), 1.0, True
    s = float(weight_scale) / float(w.max())
    return np.round(w * s).astype(np.int64), s, False


@register("cpsat", CoverageSelection, guarantee="exact", requires=("ortools",),
          package="ortools", options=OPTIONS)
def cpsat_coverage(problem: CoverageSelection, time_limit: float | None, *, workers: int = 1,
                   seed: int = 0, weight_scale: float = 1e12, warm_start: bool = True,
                   linearization: int = 2) -> Result:
    """OR-Tools CP-SAT: exact max coverage with a proven upper bound.

    CP-SAT's bound is used only when it has a solution (OPTIMAL or FEASIBLE): stopped before
    that, its "bound" is not a bound, and the greedy answer is returned with the greedy's
    own bound (the greedy start is also returned whenever it is better than CP-SAT's)."""
    m, x, y = _model(problem)
    wi, s, exact = _scaled(problem, weight_scale)
    m.add(sum(x) <= problem.keep)
    m.maximize(sum(int(wi[i]) * y[i] for i in range(problem.n) if wi[i] != 0))
    start, gbound, _ = greedy_max_coverage(problem)
    solver, status, cp = _solve(m, x, start if warm_start else np.zeros(0, dtype=np.int64),
                                time_limit, workers, seed, linearization)
    info: dict[str, Any] = {"backend_status": solver.status_name(status),
                            "wall_time": solver.wall_time}
    if status == cp.INFEASIBLE:  # cannot happen: selecting nothing is feasible
        return Result(None, "infeasible", None, info)
    if status == cp.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {m.validate()}")
    if status not in (cp.OPTIMAL, cp.FEASIBLE):
        info["answer_from"] = "greedy start"
        return Result(start, "time_limit", max(gbound, problem.objective(start)), info)
    bound_int = solver.best_objective_bound
    npos = int((problem.weights > 0).sum())
    bound = bound_int if exact else (bound_int + 0.5 * npos) / s
    bound = min(bound, gbound) if math.isfinite(bound) else gbound
    sel = np.array([j for j in range(problem.n) if solver.boolean_value(x[j])], dtype=np.int64)
    sel, from_start = better_of(problem, sel, start)
    if from_start:
        info["answer_from"] = "greedy start"
    obj = problem.objective(sel)
    tol = problem.objective_tolerance(obj)
    if status == cp.OPTIMAL and (exact or obj >= bound - tol):
        return Result(sel, "optimal", obj if exact else bound, info, proof="backend")
    if status == cp.OPTIMAL:  # optimal for the rounded weights only
        return Result(sel, "feasible", max(bound, obj), info)
    return Result(sel, "time_limit", max(bound, obj), info)


@register("cpsat", CoverSelection, guarantee="exact", requires=("ortools",),
          package="ortools", options=OPTIONS)
def cpsat_cover(problem: CoverSelection, time_limit: float | None, *, workers: int = 1,
                seed: int = 0, weight_scale: float = 1e6, warm_start: bool = True,
                linearization: int = 2) -> Result:
    """OR-Tools CP-SAT: exact partial set cover with a proven lower bound.

    Fractional weights are scaled by ``weight_scale / max(w)`` (default 1e6: with
    coefficients near 1e9, CP-SAT 9.15's presolve returned a wrong "optimal" cover on a
    10-point instance, kept in ``tests/test_backends.py``) and rounded twice: weights up
    and the requirement down give a relaxation, whose optimum is a lower bound and is optimal
    when it truly covers enough; otherwise weights down and the requirement up give a
    restriction, whose answers truly cover enough, optimal when they meet the lower bound.
    ``time_limit`` covers both CP-SAT runs (the second gets what the first left).
    """
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    w = problem.weights
    start = greedy_set_cover(problem)[0]
    hint = start if warm_start else np.zeros(0, dtype=np.int64)

    def run(wi, need):
        m, x, y = _model(problem)
        m.add(sum(int(wi[i]) * y[i] for i in range(problem.n) if wi[i] != 0) >= need)
        m.minimize(sum(x))
        left = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
        solver, status, cp = _solve(m, x, hint, left, workers, seed, linearization)
        if status == cp.MODEL_INVALID:
            raise RuntimeError(f"CP-SAT rejected the model: {m.validate()}")
        found = status in (cp.OPTIMAL, cp.FEASIBLE)
        sel = (np.array([j for j in range(problem.n) if solver.boolean_value(x[j])],
                        dtype=np.int64) if found else None)
        lower = solver.best_objective_bound
        lower = float(math.ceil(lower - 1e-9)) if found and math.isfinite(lower) else None
        return solver.status_name(status), status == cp.OPTIMAL, status == cp.INFEASIBLE, \
            sel, lower

    def covers(sel) -> bool:
        try:
            problem.check(sel)
        except ValueError:
            return False
        return True

    info: dict[str, Any] = {}
    if _exact_weights(problem):  # integral weights: one exact run
        name, optimal, infeasible, sel, lower = run(w.astype(np.int64),
                                                     int(round(problem.required)))
        info["backend_status"] = name
        if infeasible:
            return Result(None, "infeasible", None, info)
        if optimal:
            return Result(sel, "optimal", float(len(sel)), info, proof="backend")
        sel, _ = better_of(problem, sel, start)
        return Result(sel, "time_limit", lower, info)
    s = float(weight_scale) / float(w.max())
    name, optimal, infeasible, sel, lower = run(np.ceil(w * s).astype(np.int64),
                                                int(math.floor(problem.required * s)))
    info["relaxation_status"] = name
    if infeasible:  # even the relaxation cannot cover enough
        return Result(None, "infeasible", None, info)
    if sel is not None and optimal and covers(sel):
        return Result(sel, "optimal", float(len(sel)), info,
                      proof="backend (optimal relaxation that covers enough)")
    name2, optimal2, _, sel2, _ = run(np.floor(w * s).astype(np.int64),
                                      int(math.ceil(problem.required * s)))
    info["restriction_status"] = name2
    if sel2 is not None and lower is not None and len(sel2) <= lower:
        return Result(sel2, "optimal", float(len(sel2)), info,
                      proof="backend (restriction meets the relaxation's bound)")
    status = "feasible" if optimal and optimal2 else "time_limit"
    best = None
    for cand in (sel2, sel, start):
        if cand is not None and covers(cand):
            best, _ = better_of(problem, best, cand)
    return Result(best, status, lower, info)
