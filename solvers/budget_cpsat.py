"""OR-Tools CP-SAT for :class:`~pruneopt.formulations.LayerBudget`.

CP-SAT solves integer programs only, so the table is scaled to integers:

- **costs**: each layer is shifted by its cheapest level (``d = c - min c``, budget
  ``R = B - sum min c``); if every ``d`` and ``R`` is already an integer (and below 2**40)
  they are used as they are (exact); otherwise ``w = ceil(d * S)`` with ``S = cost_scale /
  R`` and the capacity ``floor(R * S) = cost_scale``. Rounding costs *up* keeps every answer
  truly within budget, but may exclude answers whose slack is below about
  ``layers / cost_scale`` of the budget. Scaled costs within ``1e-12 cost_scale`` of an
  integer are rounded to it (the check's own tolerance is 1e-9 of the budget): a table
  that is integral up to a common factor is then scaled exactly, at any scale.
- **errors**: each layer is shifted by its smallest error; if all are integers (below
  2**40) they are exact, else ``round(e * T)`` with ``T = error_scale / (largest shifted
  error)``, which changes layer l's error by at most ``delta_l`` (measured).

Status: ``"optimal"`` when the costs were scaled exactly, CP-SAT proved the optimum ``O*``
of the rounded table and the lower bound ``(O* - sum_l delta_l) / T`` (plus the shifts)
meets the answer; or when the answer meets the LP lower bound of the *unscaled* table.
Otherwise ``"feasible"``, with the best valid bound. It is therefore registered as a
heuristic that certifies itself when it can (always on tables integral up to a factor).
"""

from __future__ import annotations

import numpy as np

from pruneopt.formulations.base import is_integral
from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.solvers.budget_dp import gap_closed, levels_of, lp_greedy, reduce
from pruneopt.solvers.options import SEED, WORKERS, Integer
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import better_of

_EXACT_MAX = 2.0**40
SCALE = Integer(1, 10**12)


@register("cpsat", LayerBudget, guarantee="heuristic", requires=("ortools",), package="ortools",
          options={"cost_scale": SCALE, "error_scale": SCALE, "workers": WORKERS, "seed": SEED})
def cpsat_solver(problem: LayerBudget, time_limit: float | None, *, cost_scale: int = 10**6,
                 error_scale: int = 10**6, workers: int = 1, seed: int = 0) -> Result:
    """OR-Tools CP-SAT on the integer-scaled table (exact on integer tables)."""
    from ortools.sat.python import cp_model

    red = reduce(problem, pareto=False)
    alld = np.concatenate(red.d)
    cost_exact = is_integral(alld, _EXACT_MAX) and float(red.R).is_integer() and red.R < _EXACT_MAX
    if cost_exact:
        W = [d.astype(np.int64) for d in red.d]
        cap = int(red.R)
    else:
        S = cost_scale / red.R if red.R > 0 else 1.0
        near = 1e-12 * cost_scale

        def up(q: np.ndarray) -> np.ndarray:
            r = np.rint(q)
            return np.where(np.abs(q - r) <= near, r, np.ceil(q))

        W = [up(d * S).astype(np.int64) for d in red.d]
        cap = int(np.floor(red.R * S + near)) if red.R > 0 else 0
        cost_exact = all(bool(np.all(np.abs(d * S - np.rint(d * S)) <= near)) for d in red.d)
    eshift = [e - e.min() for e in red.e]
    alle = np.concatenate(eshift)
    T = 1.0
    if is_integral(alle, _EXACT_MAX):
        V = [e.astype(np.int64) for e in eshift]
    else:
        T = error_scale / alle.max() if alle.max() > 0 else 1.0
        V = [np.rint(e * T).astype(np.int64) for e in eshift]
    delta = float(sum(float(np.abs(v - e * T).max()) for v, e in zip(V, eshift, strict=True)))
    err_exact = delta == 0.0
    m = cp_model.CpModel()
    xs = []
    for li, w in enumerate(W):
        x = [m.NewBoolVar(f"x{li}_{k}") for k in range(w.size)]
        m.AddExactlyOne(x)
        xs.append(x)
    m.Add(sum(int(wk) * xk for w, x in zip(W, xs, strict=True)
              for wk, xk in zip(w, x, strict=True) if wk) <= cap)
    m.Minimize(sum(int(vk) * xk for v, x in zip(V, xs, strict=True)
                   for vk, xk in zip(v, x, strict=True) if vk))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = float(time_limit)
    st = solver.Solve(m)
    info = {"cost_exact": cost_exact, "error_exact": err_exact,
            "backend_status": solver.StatusName(st)}
    red_p = reduce(problem)
    gpos, lb, _, _ = lp_greedy(red_p)
    start = levels_of(red_p, gpos)  # the greedy answer: never return anything worse
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # INFEASIBLE only when rounding costs up excluded every answer; else out of time
        info["answer_from"] = "greedy"
        return Result(start, "time_limit", min(lb, problem.objective(start)), info)
    pos = np.array([int(np.argmax([solver.Value(xk) for xk in x])) for x in xs])
    levels = np.array([int(i[p]) for i, p in zip(red.idx, pos, strict=True)])
    levels, from_start = better_of(problem, levels, start)
    if from_start:
        info["answer_from"] = "greedy"
    obj = problem.objective(levels)
    if st == cp_model.OPTIMAL and cost_exact:
        # the rounded table's optimum, corrected by the measured rounding of the errors
        shift = float(sum(float(e.min()) for e in red.e))
        lb = max(lb, (solver.ObjectiveValue() - delta) / T + shift)
        if err_exact and not from_start:
            return Result(levels, "optimal", obj, info, proof="CP-SAT on the exact integer table")
    lb = min(lb, obj)
    if gap_closed(obj, lb, problem.objective_scale()):
        return Result(levels, "optimal", lb, info, proof="LP bound meets the answer")
    return Result(levels, "feasible" if st == cp_model.OPTIMAL else "time_limit", lb, info)
