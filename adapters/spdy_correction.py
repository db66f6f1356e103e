"""SPDY's speed correction: move the table target until the measured speedup meets the goal.

The table is a model of the real time, not the real time, so the levels solved for a target
``s`` can measure slower *or faster* than ``s`` end to end. :func:`correct_target` moves the
table target, down as well as up, by safeguarded secant steps on the measured speedup (in
log space, towards ``s * (1 + tolerance / 2)``), bisecting inside the bracket of a target that
missed and one that met; of all the measured answers, the one that meets ``s`` with the least
calibration loss is kept. It knows nothing of models: ``spdy_prune`` gives it the functions
that solve and measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MAX_STEP", "correct_target"]

#: Largest factor by which one correction round moves the table target when the answer is
#: not yet bracketed (timings are noisy; the old one-sided rule used the same cap).
MAX_STEP = 1.3



def _next_target(points: list[tuple[float, float]], target: float, aim: float,
                 ceiling: float) -> float | None:
    """The next table target from the ``(table target, measured speedup)`` points so far,
    or None when there is nothing new to try (see :func:`correct_target`)."""
    meets = [p for p in points if p[1] >= target]
    misses = [p for p in points if p[1] < target]
    if meets and misses:
        lo, hi = max(misses), min(meets)  # largest target that missed, smallest that met
        if lo[0] >= hi[0]:
            return None  # not monotone: the timing noise is larger than the steps left
        x_lo, x_hi = math.log(lo[0]), math.log(hi[0])
        y_lo, y_hi = math.log(lo[1]), math.log(hi[1])
        w = x_hi - x_lo
        if w < 1e-4:
            return None
        # secant (regula falsi); bisection when the last step stayed on the same side, which
        # is where regula falsi creeps (the Illinois remedy, in its simplest form)
        same_side = (points[-1][1] >= target) == (points[-2][1] >= target)
        if y_hi > y_lo and not same_side:
            x = x_lo + (math.log(aim) - y_lo) * w / (y_hi - y_lo)
            x = min(max(x, x_lo + 0.1 * w), x_hi - 0.1 * w)  # safeguard: inside the bracket
        else:
            x = x_lo + w / 2
    else:
        a, s = points[-1]
        slope = 1.0  # measured speedup proportional to the table target
        prev = [p for p in points[:-1] if abs(math.log(p[0] / a)) > 1e-6]
        if prev:
            a0, s0 = prev[-1]
            fit = math.log(s / s0) / math.log(a / a0)
            if fit > 0.2:
                slope = min(fit, 5.0)
        step = (math.log(aim) - math.log(s)) / slope
        x = math.log(a) + max(-math.log(MAX_STEP), min(math.log(MAX_STEP), step))
    ask = min(max(math.exp(x), 1.0), ceiling)
    if any(abs(ask - p[0]) <= 1e-9 * ask for p in points):
        return None
    return ask


def correct_target(target: float, levels_at: Callable[[float], np.ndarray],
                   measure: Callable[[np.ndarray], dict[str, float]], *,
                   first: np.ndarray | None = None, max_rounds: int = 5,
                   tolerance: float = 0.02, ceiling: float = math.inf, confirm: int = 2
                   ) -> tuple[list[dict[str, Any]], int]:
    """Move the table target until the measured speedup meets ``target``, down or up.

    ``levels_at(ask)``: the levels solved for table target ``ask``; ``measure(levels)``: a
    dict with at least ``"speedup"`` (measured end to end) and ``"loss"`` (the error to
    minimise). Round 0 measures ``first`` (default ``levels_at(target)``). After each round
    the next table target is a safeguarded secant step in log space towards
    ``target * (1 + tolerance / 2)``: from the last points while every measurement is on one
    side of ``target`` (at most a factor :data:`MAX_STEP` a round); once there is a bracket
    (the largest target that missed, the smallest that met), a secant step inside it, or a
    bisection when the previous step did not change sides. Level sets already
    measured are not measured again (they still narrow the bracket). Targets stay in
    ``[1, ceiling]``.

    Stops when a round meets ``target`` by at most ``tolerance`` (relative), after
    ``max_rounds`` level sets measured, or when no new table target is left. The answer is
    the round that meets ``target`` with the least loss (none meets: the fastest). Close to
    the target timing noise alone can make an answer "meet", so a round that meets within
    ``tolerance``, and the final answer, are measured again (at most ``confirm`` extra
    measurements in all): a round's ``speedup`` is the smaller of its measurements (all in
    ``speedups``); one that then misses counts as a miss, and the correction goes on.

    Returns ``(rounds, chosen)``: one dict per level set measured (``table_target``,
    ``levels``, what ``measure`` gave, ``speedups``) and the index of the answer.
    """
    target = float(target)
    if not target >= 1.0:
        raise ValueError(f"target must be >= 1, got {target}")
    if int(max_rounds) < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if not 0.0 < float(tolerance) < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    if int(confirm) < 0:
        raise ValueError(f"confirm must be >= 0, got {confirm}")
    aim = target * (1.0 + float(tolerance) / 2)
    rounds: list[dict[str, Any]] = []
    seen: dict[tuple[int, ...], int] = {}
    asked: list[tuple[float, tuple[int, ...]]] = []  # (table target, level set), in order
    left = int(confirm)

    def remeasure(i: int) -> None:
        r = rounds[i]
        r["speedups"].append(float(measure(np.asarray(r["levels"]))["speedup"]))
        r["speedup"] = min(r["speedups"])

    def best() -> int:
        met = [i for i, r in enumerate(rounds) if r["speedup"] >= target]
        if met:
            return min(met, key=lambda i: (rounds[i]["loss"], -rounds[i]["speedup"]))
        return max(range(len(rounds)), key=lambda i: rounds[i]["speedup"])

    ask = min(target, ceiling)
    lv = np.asarray(first if first is not None else levels_at(ask), dtype=np.int64)
    for _ in range(8 * int(max_rounds)):  # level sets seen before cost a solve, not a round
        key = tuple(int(v) for v in lv)
        new = key not in seen
        if new:
            seen[key] = len(rounds)
            meas = dict(measure(lv))
            rounds.append({"table_target": ask, "levels": list(key), **meas,
                           "speedups": [float(meas["speedup"])]})
        asked.append((ask, key))
        i = seen[key]
        if new and target <= rounds[i]["speedup"] <= target * (1.0 + float(tolerance)):
            if left > 0:  # close to the target: make sure noise did not make it meet
                left -= 1
                remeasure(i)
            if rounds[i]["speedup"] >= target:
                break
        if len(rounds) >= max_rounds:
            break
        nxt = _next_target([(a, rounds[seen[k]]["speedup"]) for a, k in asked], target, aim,
                           ceiling)
        if nxt is None:
            break
        ask = nxt
        lv = np.asarray(levels_at(ask), dtype=np.int64)
    while left > 0:  # the answer, if not measured twice yet
        r = rounds[best()]
        if r["speedup"] < target or len(r["speedups"]) > 1:
            break
        left -= 1
        remeasure(best())
    return rounds, best()
