"""The SPDY databases on any :class:`~pruneopt.adapters.units.Structure` (the general path).

**Timing** (:func:`structure_timing`): unit ``l`` at level ``k`` is timed as its
``modules`` (``StructUnit.modules``) in the model pruned at that unit only
(``structure.pruned`` with ``removed[l] = k``, every other unit dense), called on their
inputs captured from a real forward pass of that model over the calibration batches: the
median seconds of ``repeats`` calls (after a warm-up). The dense end-to-end time is measured
the same way on the whole model, and ``base = dense - sum of the dense unit times``.

*Not exactly additive*: where two units share a module (a chain CNN: ``conv2`` reads unit
1's channels and writes unit 2's), that module is timed in both units, and the table's sum
counts it twice; pruning both changes it once, by the product of both shrinkings. The table
is a model of the time, not the time; :func:`~pruneopt.adapters.spdy_search.spdy_prune`
measures every answer end to end and moves the table target until the measurement meets
the goal (:mod:`~pruneopt.adapters.spdy_correction`).

**Errors** (:func:`structure_errors`): every unit pruned alone at every level, scored by a
calibration loss of :mod:`~pruneopt.adapters.calib_loss` against the dense outputs (one
forward pass of the whole pruned model per level).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.calib_loss import loss_outputs, model_loss
from pruneopt.adapters.calibration import run_batches, run_with_hooks
from pruneopt.adapters.units import Structure

__all__ = ["check_unit_levels", "module_call", "one_unit", "structure_errors",
           "structure_timing"]


def check_unit_levels(units: Sequence[Any], levels: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """``levels`` (elements removed at each level, one list per unit) as int64 arrays, or
    ``ValueError``: one list per unit, starting at 0 (dense), inside ``0..size-1``."""
    removed = [np.asarray(r, dtype=np.int64) for r in levels]
    if len(removed) != len(units):
        raise ValueError(f"levels needs one list per unit ({len(units)}), got {len(removed)}")
    for u, r in zip(units, removed, strict=True):
        if r.ndim != 1 or r.size == 0 or r[0] != 0 or (r < 0).any() or (r >= u.size).any():
            raise ValueError(
                f"{u.name}: levels must start at 0 (dense) and stay in 0..{u.size - 1}")
    return removed


def one_unit(n: int, i: int, k: int) -> list[int]:
    """Removal counts with ``k`` elements of unit ``i`` removed and the ``n - 1`` others dense."""
    r = [0] * n
    r[i] = int(k)
    return r


def module_call(model: nn.Module, names: Sequence[str],
                batches: Sequence[Any]) -> Callable[[], None]:
    """A function calling the modules ``names`` of ``model`` on the inputs they receive in a
    forward pass over ``batches`` (captured once, here); ``ValueError`` for a missing name."""
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"the model has no module {missing[0]!r} (a unit's modules must be "
                         "qualified names of model.named_modules())")
    calls: list[tuple[nn.Module, tuple, dict]] = []
    hooks = []
    for n in names:
        def pre(m, args, kwargs):
            calls.append((m, args, dict(kwargs)))
        hooks.append(mods[n].register_forward_pre_hook(pre, with_kwargs=True))
    run_with_hooks(model, batches, hooks)

    def fn() -> None:
        for m, args, kwargs in calls:
            m(*args, **kwargs)
    return fn


@torch.inference_mode()
def structure_timing(structure: Structure, batches: Sequence[Any], removed: list[np.ndarray],
                     *, repeats: int, median: Callable[[Callable[[], object], int], float],
                     bar: Any) -> tuple[list[np.ndarray], float]:
    """``(times, dense_time)``: per unit the median seconds of its modules at every level of
    ``removed`` (see the module doc), and the dense model's end-to-end seconds. ``median``
    times a function (``spdy_timing.median_seconds``); ``bar`` is updated once per level."""
    units = structure.units
    dense = structure.model
    for u in units:
        if not u.modules:
            raise ValueError(f"{u.name}: the unit names no modules to time")
    times = []
    for i, (u, r) in enumerate(zip(units, removed, strict=True)):
        row = []
        for k in r:
            model = dense if k == 0 else structure.pruned(one_unit(len(units), i, int(k)))
            was = model.training
            model.eval()
            try:
                row.append(median(module_call(model, u.modules, batches), repeats))
            finally:
                model.train(was)
            bar.update(1)
        times.append(np.asarray(row, dtype=float))
    was = dense.training
    dense.eval()
    try:
        dense_time = median(lambda: run_batches(dense, batches), repeats)
    finally:
        dense.train(was)
    return times, dense_time


@torch.inference_mode()
def structure_errors(structure: Structure, removed: list[np.ndarray], batches: Sequence[Any],
                     loss: str, *, bar: Any) -> list[np.ndarray]:
    """Per unit, the calibration ``loss`` with only that unit pruned at each level of
    ``removed`` (level 0: 0). The dense model is not modified."""
    dense = structure.model
    was = dense.training
    dense.eval()
    try:
        ref = loss_outputs(dense, batches, loss)
    finally:
        dense.train(was)
    n = len(structure.units)
    errors = []
    for i, r in enumerate(removed):
        row = []
        for k in r:
            if k == 0:
                row.append(0.0)
            else:
                pruned = structure.pruned(one_unit(n, i, int(k))).eval()
                row.append(model_loss(pruned, batches, ref, loss))
            bar.update(1)
        errors.append(np.asarray(row, dtype=float))
    return errors
