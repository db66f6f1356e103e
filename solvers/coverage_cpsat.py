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
from typing import Any

import numpy as np

from pruneopt.formulations.coverage import CoverageSelection, CoverSelection, _RadiusCover
from pruneopt.solvers.coverage_greedy import greedy_max_coverage, greedy_set_cover
from pruneopt.solvers.registry import Result, register


def _model(problem: _RadiusCover):
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


def _scaled(w: np.ndarray, weight_scale: float) -> tuple[np.ndarray, float, bool]:
    if np.all(w == np.round(w)):
        return w.astype(np.int64), 1.0, True
    s = float(weight_scale) / float(w.max())
    return np.round(w * s).astype(np.int64), s, False


@register("cpsat", CoverageSelection, guarantee="exact", requires=("ortools",),
          package="ortools", priority=55)
def cpsat_coverage(problem: CoverageSelection, time_limit: float | None, *, workers: int = 1,
                   seed: int = 0, weight_scale: float = 1e6, hint: bool = True,
                   linearization: int = 2) -> Result:
    """OR-Tools CP-SAT: exact max coverage with a proven upper bound."""
    m, x, y = _model(problem)
    wi, s, exact = _scaled(problem.weights, weight_scale)
    m.add(sum(x) <= problem.budget)
    m.maximize(sum(int(wi[i]) * y[i] for i in range(problem.n) if wi[i] != 0))
    start = greedy_max_coverage(problem)[0] if hint else np.zeros(0, dtype=np.int64)
    solver, status, cp = _solve(m, x, start, time_limit, workers, seed, linearization)
    info: dict[str, Any] = {"backend_status": solver.status_name(status),
                            "wall_time": solver.wall_time}
    if status == cp.INFEASIBLE:  # cannot happen: selecting nothing is feasible
        return Result(None, "infeasible", None, info)
    if status == cp.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {m.validate()}")
    bound_int = solver.best_objective_bound
    npos = int((problem.weights > 0).sum())
    bound = bound_int if exact else (bound_int + 0.5 * npos) / s
    if status not in (cp.OPTIMAL, cp.FEASIBLE):
        return Result(None, "time_limit", bound if math.isfinite(bound) else None, info)
    sel = np.array([j for j in range(problem.n) if solver.boolean_value(x[j])], dtype=np.int64)
    obj = problem.objective(sel)
    if status == cp.OPTIMAL and (exact or obj >= bound - 1e-9 * max(1.0, obj)):
        return Result(sel, "optimal", obj if exact else bound, info)
    if status == cp.OPTIMAL:  # optimal for the rounded weights only
        return Result(sel, "feasible", max(bound, obj), info)
    return Result(sel, "time_limit", max(bound, obj), info)


@register("cpsat", CoverSelection, guarantee="exact", requires=("ortools",),
          package="ortools", priority=55)
def cpsat_cover(problem: CoverSelection, time_limit: float | None, *, workers: int = 1,
                seed: int = 0, weight_scale: float = 1e6, hint: bool = True,
                linearization: int = 2) -> Result:
    """OR-Tools CP-SAT: exact partial set cover with a proven lower bound."""
    m, x, y = _model(problem)
    w = problem.weights
    if np.all(w == np.round(w)):
        wi, need, exact = w.astype(np.int64), int(round(problem.required)), True
    else:  # round weights down and the requirement up: every answer is truly feasible
        s = float(weight_scale) / float(w.max())
        wi = np.floor(w * s).astype(np.int64)
        need, exact = int(math.ceil(problem.required * s)), False
    m.add(sum(int(wi[i]) * y[i] for i in range(problem.n) if wi[i] != 0) >= need)
    m.minimize(sum(x))
    start = greedy_set_cover(problem)[0] if hint else np.zeros(0, dtype=np.int64)
    solver, status, cp = _solve(m, x, start, time_limit, workers, seed, linearization)
    info: dict[str, Any] = {"backend_status": solver.status_name(status),
                            "wall_time": solver.wall_time}
    if status == cp.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {m.validate()}")
    if status == cp.INFEASIBLE:
        if exact:
            return Result(None, "infeasible", None, info)
        raise RuntimeError("CP-SAT found the rounded cover infeasible; raise weight_scale")
    bound = float(math.ceil(solver.best_objective_bound - 1e-9)) if exact else None
    if status not in (cp.OPTIMAL, cp.FEASIBLE):
        return Result(None, "time_limit", bound, info)
    sel = np.array([j for j in range(problem.n) if solver.boolean_value(x[j])], dtype=np.int64)
    if status == cp.OPTIMAL and exact:
        return Result(sel, "optimal", float(len(sel)), info)
    if status == cp.OPTIMAL:
        return Result(sel, "feasible", None, info)
    return Result(sel, "time_limit", bound, info)
