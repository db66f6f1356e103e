"""OR-Tools CP-SAT for :class:`~pruneopt.formulations.LayerBudget`.

CP-SAT solves integer programs only, so the table is scaled to integers:

- **costs**: each layer is shifted by its cheapest level (``d = c - min c``, budget
  ``R = B - sum min c``); if every ``d`` and ``R`` is already an integer (and below 2**40)
  they are used as they are (exact); otherwise ``w = ceil(d * S)`` with ``S = cost_scale /
  R`` and the capacity ``floor(R * S) = cost_scale``. Rounding costs *up* keeps every answer
  truly within budget, but may exclude answers whose slack is below about
  ``layers / cost_scale`` of the budget.
- **errors**: each layer is shifted by its smallest error; if all are integers (below
  2**40) they are exact, else ``round(e * T)`` with ``T = error_scale / (largest shifted
  error)``, which changes each error by at most ``0.5 / T``.

Status: ``"optimal"`` only when both scalings were exact and CP-SAT proved optimality, or
when the answer meets the LP lower bound of the *unscaled* table. Otherwise ``"feasible"``,
with the LP bound (valid for the real table) as ``bound``. It is therefore registered as a
heuristic that certifies itself when it can: exact on integer tables.
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
        W = [np.ceil(d * S).astype(np.int64) for d in red.d]
        cap = int(np.floor(red.R * S)) if red.R > 0 else 0
    eshift = [e - e.min() for e in red.e]
    alle = np.concatenate(eshift)
    err_exact = is_integral(alle, _EXACT_MAX)
    if err_exact:
        V = [e.astype(np.int64) for e in eshift]
    else:
        T = error_scale / alle.max() if alle.max() > 0 else 1.0
        V = [np.rint(e * T).astype(np.int64) for e in eshift]
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
    lb = min(lb, obj)
    if st == cp_model.OPTIMAL and cost_exact and err_exact and not from_start:
        return Result(levels, "optimal", obj, info, proof="CP-SAT on the exact integer table")
    if gap_closed(obj, lb, problem.objective_scale()):
        return Result(levels, "optimal", lb, info, proof="LP bound meets the answer")
    return Result(levels, "feasible" if st == cp_model.OPTIMAL else "time_limit", lb, info)
