"""SPDY's search and the whole method: coefficients, levels, apply, measure, correct.

**Search** (:func:`spdy_search`): SPDY's per-unit coefficients ``c_l in [0, 1]`` rescale the
error database, ``e'[l][k] = c_l e[l][k]``; every candidate is solved by the exact
layer-budget solver (:func:`levels_for`) and scored by the calibration loss of the model
stitched from pre-pruned units (:func:`stitched_loss`). Random starts, then a local search
resampling a shrinking number of coefficients; seeded, with a progress bar.

**Speed correction** (:func:`correct_target`, used by :func:`spdy_prune`): the table is a
model of the real time, not the real time, so the levels solved for a target ``s`` can
measure slower *or faster* than ``s`` end to end. The table target is then moved, down as
well as up, by safeguarded secant steps on the measured speedup (in log space, towards
``s * (1 + tolerance / 2)``), bisecting inside the bracket of a target that missed and one
that met; of all the measured answers, the one that meets ``s`` with the least calibration
loss is kept.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.bert_surgery import UnitSwap, bert_of, prune_units
from pruneopt.adapters.calibration import cosine_to, embed
from pruneopt.adapters.spdy_table import SpdyTable
from pruneopt.adapters.spdy_timing import measure_speedup

__all__ = [
    "SearchResult",
    "apply_levels",
    "correct_target",
    "levels_for",
    "spdy_prune",
    "spdy_search",
    "stitched_loss",
]

#: Largest factor by which one correction round moves the table target when the answer is
#: not yet bracketed (timings are noisy; the old one-sided rule used the same cap).
MAX_STEP = 1.3


@dataclass
class SearchResult:
    """What :func:`spdy_search` returns: the best ``levels`` (one level index per unit), its
    calibration ``loss``, the ``coefficients`` that gave it, the speedup the table predicts
    for it, the number of distinct level sets scored, and the best loss after every
    candidate (``history``)."""

    levels: np.ndarray
    loss: float
    coefficients: np.ndarray
    speedup_table: float
    evaluations: int
    history: list[float]


def levels_for(table: SpdyTable, speedup: float, coefficients: np.ndarray | None = None,
               solver: str | None = None) -> np.ndarray:
    """Levels of least (coefficient-weighted) error meeting ``speedup`` on the table."""
    import pruneopt

    errors = table.require_errors()
    c = np.ones(len(table.units)) if coefficients is None else np.asarray(coefficients, float)
    if c.shape != (len(table.units),):
        raise ValueError(f"coefficients need one entry per unit ({len(table.units)}), got "
                         f"shape {c.shape}")
    problem = table.problem(speedup, [ci * e for ci, e in zip(c, errors, strict=True)])
    return np.asarray(pruneopt.solve(problem, solver=solver).decision, dtype=np.int64)


def apply_levels(model: nn.Module, table: SpdyTable, levels: Sequence[int], *,
                 inplace: bool = False) -> nn.Module:
    """``model`` with every unit pruned to ``table.removed[l][levels[l]]`` units removed.

    Works on a deep copy unless ``inplace=True``. Scores come from the dense weights.
    """
    return prune_units(model, table.units, table.removed_at(levels), inplace=inplace)


def stitched_loss(model: nn.Module, table: SpdyTable, levels: Sequence[int],
                  batches: Sequence[dict], reference: torch.Tensor | None = None,
                  cache: dict | None = None) -> float:
    """Calibration loss ``1 - mean cos`` of ``model`` with its units swapped for their
    versions at ``levels`` (taken from ``cache`` when there); ``model`` is restored after."""
    ref = reference if reference is not None else embed(model, batches)
    bert = bert_of(model)
    swaps = [UnitSwap(bert.encoder.layer[u.block], u, r, cache)
             for u, r in zip(table.units, table.removed_at(levels), strict=True)]
    for s in swaps:
        s.__enter__()
    try:
        return 1.0 - cosine_to(ref, embed(model, batches))
    finally:
        for s in reversed(swaps):
            s.__exit__()


def spdy_search(model: nn.Module, table: SpdyTable, speedup: float, batches: Sequence[dict], *,
                random_starts: int = 16, steps: int = 48, seed: int = 0,
                solver: str | None = None, progress: bool = True) -> SearchResult:
    """SPDY's search over per-unit coefficients for a speedup target (see module doc).

    Candidates: ``c = 1`` (the plain error database), then ``random_starts`` uniform
    draws in ``[0, 1]^L``, then ``steps`` local moves, each resampling ``m`` coefficients
    with ``m`` shrinking linearly from ``L // 2`` to 1 and kept when the loss improves.
    Every candidate's levels come from the exact layer-budget solver; identical levels are
    scored once. ``model`` is not modified (a working copy is used).
    """
    from tqdm import tqdm

    table.require_errors()
    table.problem(speedup)  # validates the target
    rng = np.random.default_rng(seed)
    work = copy.deepcopy(model).eval()
    ref = embed(work, batches)
    L = len(table.units)
    cache: dict = {}
    scored: dict[tuple, float] = {}

    def evaluate(c: np.ndarray) -> tuple[float, np.ndarray]:
        lv = levels_for(table, speedup, c, solver)
        key = tuple(int(v) for v in lv)
        if key not in scored:
            scored[key] = stitched_loss(work, table, lv, batches, ref, cache)
        return scored[key], lv

    history = []
    best_c = np.ones(L)
    best_loss, best_lv = evaluate(best_c)
    history.append(best_loss)
    bar = tqdm(total=random_starts + steps, desc=f"spdy {speedup:g}x", disable=not progress)
    for _ in range(random_starts):
        c = rng.uniform(0, 1, L)
        loss, lv = evaluate(c)
        if loss < best_loss:
            best_loss, best_lv, best_c = loss, lv, c
        history.append(best_loss)
        bar.update(1)
    for t in range(steps):
        m = max(1, int(round((L // 2) * (1 - t / max(steps, 1)))))
        c = best_c.copy()
        idx = rng.choice(L, size=min(m, L), replace=False)
        c[idx] = rng.uniform(0, 1, idx.size)
        loss, lv = evaluate(c)
        if loss < best_loss:
            best_loss, best_lv, best_c = loss, lv, c
        history.append(best_loss)
        bar.update(1)
    bar.close()
    return SearchResult(np.asarray(best_lv), float(best_loss), best_c,
                        table.predicted_speedup(best_lv), len(scored), history)


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


def spdy_prune(model: nn.Module, table: SpdyTable, speedup: float, batches: Sequence[dict], *,
               timing_batches: Sequence[dict] | None = None, random_starts: int = 16,
               steps: int = 48, seed: int = 0, max_rounds: int = 5, tolerance: float = 0.02,
               confirm: int = 2, repeats: int = 7, threads: int | None = 1,
               progress: bool = True
               ) -> tuple[nn.Module, dict]:
    """SPDY end to end: search, apply to a copy of ``model``, measure, correct the target.

    The search's levels are applied and timed end to end against ``model`` (on
    ``timing_batches``, default ``batches``). If the measured speedup misses ``speedup`` or
    beats it by more than ``tolerance`` (relative), the table target is moved down or up
    (:func:`correct_target`) and the levels re-solved with the same coefficients, up to
    ``max_rounds`` measurements. Every measured answer is scored by its calibration loss
    ``1 - mean cos`` on ``batches``; the one meeting ``speedup`` with the least loss is
    returned (none meets: the fastest, with ``"met": False``), after up to ``confirm``
    re-measurements guard it against timing noise (its speedup is the smaller of its
    measurements).

    Returns ``(pruned copy, report)``; the report holds the chosen ``levels``, ``removed``,
    ``measured_speedup``, ``predicted_speedup`` (by the table), ``met``,
    ``calibration_loss`` (of the chosen levels), ``search_loss``, ``coefficients``,
    ``rounds`` (one dict per measurement) and ``chosen_round``. ``model`` is not modified.
    """
    res = spdy_search(model, table, speedup, batches, random_starts=random_starts, steps=steps,
                      seed=seed, progress=progress)
    tb = timing_batches if timing_batches is not None else batches
    ref = embed(model, batches)

    def measure(levels: np.ndarray) -> dict[str, float]:
        pruned = apply_levels(model, table, levels).eval()
        meas = measure_speedup(model, pruned, tb, repeats=repeats, threads=threads)
        loss = 1.0 - cosine_to(ref, embed(pruned, batches))
        return {**meas, "loss": loss, "predicted_speedup": table.predicted_speedup(levels)}

    rounds, chosen = correct_target(
        speedup, lambda ask: levels_for(table, ask, res.coefficients), measure,
        first=res.levels, max_rounds=max_rounds, tolerance=tolerance,
        ceiling=table.max_speedup() * 0.999, confirm=confirm)
    best = rounds[chosen]
    pruned = apply_levels(model, table, best["levels"]).eval()
    report = {
        "target": float(speedup), "levels": best["levels"],
        "removed": table.removed_at(best["levels"]),
        "measured_speedup": best["speedup"], "predicted_speedup": best["predicted_speedup"],
        "met": best["speedup"] >= speedup, "calibration_loss": float(best["loss"]),
        "search_loss": float(res.loss), "search_evaluations": res.evaluations,
        "coefficients": res.coefficients.tolist(), "rounds": rounds, "chosen_round": chosen,
    }
    return pruned, report
