"""SPDY's search and the whole method: coefficients, levels, apply, measure.

**Search** (:func:`spdy_search`): SPDY's per-unit coefficients ``c_l in [0, 1]`` rescale the
error database, ``e'[l][k] = c_l e[l][k]``; every candidate is solved by the exact
layer-budget solver (:func:`levels_for`) and scored by the calibration loss of the model
stitched from pre-pruned units (:func:`stitched_loss`). Random starts, then a local search
resampling a shrinking number of coefficients; seeded, with a progress bar.

**Apply and measure** (:func:`spdy_prune`): the levels are applied to a copy of the model
and the end-to-end speedup is measured; a shortfall raises the table target.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

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
    "levels_for",
    "spdy_prune",
    "spdy_search",
    "stitched_loss",
]

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


def spdy_prune(model: nn.Module, table: SpdyTable, speedup: float, batches: Sequence[dict], *,
               timing_batches: Sequence[dict] | None = None, random_starts: int = 16,
               steps: int = 48, seed: int = 0, max_rounds: int = 5, repeats: int = 7,
               threads: int | None = 1, progress: bool = True) -> tuple[nn.Module, dict]:
    """SPDY end to end: search, apply to a copy of ``model``, measure the real speedup.

    If the measured end-to-end speedup falls short of ``speedup`` (the table is a model of
    the real time, not the real time), the table target is raised by the shortfall and the
    levels re-solved with the same coefficients, up to ``max_rounds`` times. The report says
    whether the target was met on the measured time (``"met"``). ``model`` is not modified.
    """
    res = spdy_search(model, table, speedup, batches, random_starts=random_starts, steps=steps,
                      seed=seed, progress=progress)
    tb = timing_batches if timing_batches is not None else batches
    ask = float(speedup)
    levels = res.levels
    rounds = []
    pruned = None
    for _ in range(max_rounds):
        pruned = apply_levels(model, table, levels).eval()
        meas = measure_speedup(model, pruned, tb, repeats=repeats, threads=threads)
        rounds.append({"table_target": ask, "levels": [int(v) for v in levels], **meas})
        if meas["speedup"] >= speedup:
            break
        # raise the table target by the shortfall (at most 30% a round: timings are noisy)
        ask = min(ask * min(speedup / meas["speedup"] * 1.01, 1.3), table.max_speedup() * 0.999)
        levels = levels_for(table, ask, res.coefficients)
    last = rounds[-1]
    report = {
        "target": float(speedup), "levels": last["levels"],
        "removed": table.removed_at(last["levels"]),
        "measured_speedup": last["speedup"], "met": last["speedup"] >= speedup,
        "calibration_loss": float(res.loss), "search_evaluations": res.evaluations,
        "coefficients": res.coefficients.tolist(), "rounds": rounds,
    }
    return pruned, report
