"""Many independent problems solved at once: ``solve_many(problems, executor=...)``.

``solve_many(problems, solver, executor=..., **options)`` is
``[solve(p, solver, **options) for p in problems]``, run by
:func:`pruneopt.solvers.executors.map_tasks` in this process (``executor=None``), in a local
pool of processes (``"processes"``) or on a Ray cluster (``"ray"``). The problems may be of
different formulations (``solver=None`` picks each one's default). Every problem is checked
in this process before any work is sent out (a bad solver name, option or time limit is a
``ValueError`` at once, naming the problem's position), and the answers come back in input
order. With a deterministic solver the solutions are the same whichever executor runs them
(``seconds`` aside: the wall time of each solve where it ran). Registers no solver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pruneopt.formulations.base import Formulation
from pruneopt.solvers.executors import map_tasks
from pruneopt.solvers.options import check_options
from pruneopt.solvers.registry import check_time_limit, get_solver, solve
from pruneopt.solvers.solution import Solution


def solve_task(task: tuple[Formulation, str | None, dict[str, Any]]) -> Solution:
    """One ``(problem, solver, options)`` solved (the function each worker runs)."""
    problem, solver, options = task
    return solve(problem, solver, **options)


def solve_many(
    problems: Iterable[Formulation],
    solver: str | None = None,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    *,
    progress: bool = True,
    solver_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> list[Solution]:
    """``[pruneopt.solve(p, solver, **options) for p in problems]`` on ``executor``.

    Parameters
    ----------
    problems : formulations, of one type or several.
    solver : a solver name for every problem, or ``None`` for each problem's default.
    executor, workers, address : where to run (see :mod:`pruneopt.solvers.executors`):
        ``None`` in process, ``"processes"`` a local pool of ``workers`` processes,
        ``"ray"`` the Ray cluster at ``address`` (or a local one of ``workers`` CPUs).
    progress : a tqdm bar over the problems, advanced as each one finishes.
    options : ``time_limit`` (seconds, per problem) and backend options, as for ``solve``.
    solver_options : more backend options, for the names this function takes itself:
        CP-SAT's search ``workers`` is ``solver_options={"workers": 4}`` (``workers=`` is
        the executor's).

    Returns the :class:`Solution` of each problem, in input order; nothing if any solve
    fails (its error is raised; a dead worker is a ``RuntimeError``).
    """
    problems = list(problems)
    clash = set(options) & set(solver_options or {})
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} given both as an option and in "
                         f"solver_options; give it once")
    options = {**options, **dict(solver_options or {})}
    for i, p in enumerate(problems):
        try:
            spec = get_solver(p, solver)
            check_time_limit(options.get("time_limit"))
            check_options(spec.name, spec.problem.__name__, spec.options,
                          {k: v for k, v in options.items() if k != "time_limit"})
        except ValueError as exc:
            raise ValueError(f"problem {i} of {len(problems)}: {exc}") from None
    tasks = [(p, solver, dict(options)) for p in problems]
    return map_tasks(solve_task, tasks, executor=executor, workers=workers, address=address,
                     progress=progress, desc="solve_many")
