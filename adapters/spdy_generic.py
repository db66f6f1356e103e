"""The SPDY databases on any :class:`~pruneopt.adapters.units.Structure` (the general path).

**Timing** (:func:`structure_timing`): unit ``l`` at level ``k`` is timed as its *timed
modules* in the model pruned at that unit only (``structure.pruned`` with ``removed[l] = k``,
every other unit dense), each called on its inputs captured from a real forward pass of that
model over the calibration batches: the median seconds of ``repeats`` calls (after a
warm-up). The timed modules (:func:`timed_modules`) are the unit's ``modules``
(``StructUnit.modules``, the layers whose weights shrink) plus every leaf module whose input
shape changes when the unit alone is pruned (activations and pooling layers that run on the
unit's channels: a CNN's max-pooling costs as much as a convolution here).

A module ``m`` may be timed by ``n_m`` units (a chain CNN: ``conv2`` reads unit 1's channels
and writes unit 2's). With ``T_m`` its dense time and ``t_m(k)`` its time with unit ``l``
alone at level ``k``, the table's time of unit ``l`` at level ``k`` is

    ``time[l][k] = max(0, sum over its timed modules m of (T_m / n_m - (T_m - t_m(k))))``

(each unit holds a ``1/n_m`` share of every dense module it touches, and is credited the
*whole* saving it makes on it). So the dense unit times add up to the time of the distinct
timed modules, ``base = dense - sum of the dense unit times`` is the time of everything else
(layers no unit touches, overheads), and the table is exact, up to the timing noise, for the
dense model and for every unit pruned alone. The dense end-to-end time is the median of
``repeats`` whole passes.

*Not exactly additive* when several units are pruned: a shared module's time is a product
(``conv2`` costs ``c1 * c2``: pruning both to half leaves a quarter of its time, where the
sum of the two savings leaves none), so pruning neighbours saves less than the table
says; and parts of a unit that are not modules (a decoder's attention product, ``scaled_dot_product_
attention`` inside its attention module) are not timed at all. The table is a model of the
time, not the time; :func:`~pruneopt.adapters.spdy_search.spdy_prune`
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

__all__ = ["check_unit_levels", "module_call", "one_unit", "pruned_model", "repaired",
           "structure_errors", "structure_timing", "timed_modules"]

#: A repair of a pruned copy before it is scored (e.g. re-estimating BatchNorm statistics):
#: called on the copy, may change it in place, returns the model to use (or None: the copy).
Repair = Callable[[nn.Module], "nn.Module | None"]


def repaired(model: nn.Module, repair: Repair | None) -> nn.Module:
    """``model`` after ``repair`` (None: as it is), in eval mode; run outside inference mode
    with gradients off (a repair may run the model in training mode)."""
    if repair is None:
        return model
    with torch.inference_mode(False), torch.no_grad():
        out = repair(model)
    return (model if out is None else out).eval()


def pruned_model(structure: Structure, removed: Sequence[int]) -> nn.Module:
    """``structure.pruned(removed)``, run outside ``torch.inference_mode``: the copy's
    tensors are then ordinary tensors, which a ``repair`` (BatchNorm re-estimation, a
    refit) may update in place; inside inference mode they would be inference tensors."""
    with torch.inference_mode(False):
        return structure.pruned(removed)


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


def leaf_input_shapes(model: nn.Module, batch: Any) -> dict[str, list[tuple]]:
    """Per leaf module (no children) of ``model``, the shapes of the tensor arguments of
    each of its calls in one forward pass on ``batch``."""
    shapes: dict[str, list[tuple]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):
            def pre(_m, args, name=name):
                shapes.setdefault(name, []).append(
                    tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            hooks.append(mod.register_forward_pre_hook(pre))
    run_with_hooks(model, [batch], hooks)
    return shapes


def timed_modules(structure: Structure, removed: list[np.ndarray],
                  batch: Any) -> list[tuple[str, ...]]:
    """Per unit, its timed modules (see the module doc): its ``modules`` plus the leaf
    modules whose input shapes differ between the dense model and the model with that unit
    alone at its largest level of ``removed``, in the model's order."""
    dense = leaf_input_shapes(structure.model, batch)
    order = {n: i for i, (n, _) in enumerate(structure.model.named_modules())}
    out = []
    n = len(structure.units)
    for i, (u, r) in enumerate(zip(structure.units, removed, strict=True)):
        names = set(u.modules)
        if int(r.max()) > 0:
            model = pruned_model(structure, one_unit(n, i, int(r.max()))).eval()
            pruned = leaf_input_shapes(model, batch)
            names |= {m for m, s in pruned.items() if m in dense and dense[m] != s}
        out.append(tuple(sorted(names, key=lambda m: order.get(m, len(order)))))
    return out


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
    was = dense.training
    dense.eval()
    try:
        timed = timed_modules(structure, removed, batches[0])
        shares: dict[str, int] = {}
        for names in timed:
            for m in names:
                shares[m] = shares.get(m, 0) + 1
        full = {m: median(module_call(dense, [m], batches), repeats) for m in shares}
        times = []
        for i, (names, r) in enumerate(zip(timed, removed, strict=True)):
            row = []
            for k in r:
                held = sum(full[m] / shares[m] for m in names)  # the unit's dense share
                if k:
                    model = pruned_model(structure, one_unit(len(units), i, int(k))).eval()
                    saved = sum(full[m] - median(module_call(model, [m], batches), repeats)
                                for m in names)
                    held = max(0.0, held - saved)
                row.append(held)
                bar.update(1)
            times.append(np.asarray(row, dtype=float))
        dense_time = median(lambda: run_batches(dense, batches), repeats)
    finally:
        dense.train(was)
    return times, dense_time


@torch.inference_mode()
def structure_errors(structure: Structure, removed: list[np.ndarray], batches: Sequence[Any],
                     loss: str, *, bar: Any, repair: Repair | None = None) -> list[np.ndarray]:
    """Per unit, the calibration ``loss`` with only that unit pruned at each level of
    ``removed`` (level 0: 0), each pruned copy scored after ``repair`` (see
    :func:`repaired`). The dense model is not modified."""
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
                pruned = pruned_model(structure, one_unit(n, i, int(k))).eval()
                row.append(model_loss(repaired(pruned, repair), batches, ref, loss))
            bar.update(1)
        errors.append(np.asarray(row, dtype=float))
    return errors
