"""SPDY's search and the whole method: coefficients, levels, apply, measure, correct.

**Search** (:func:`spdy_search`): SPDY's per-unit coefficients ``c_l in [0, 1]`` rescale the
error database, ``e'[l][k] = c_l e[l][k]``; every candidate is solved by the exact
layer-budget solver (:func:`levels_for`) and scored by the calibration loss of the model
stitched from pre-pruned units (:func:`stitched_loss`). Random starts, then a local search
resampling a shrinking number of coefficients; seeded, with a progress bar.

**With reconstruction** (``reconstruct=True``): every candidate is also scored after the
layer-wise refit of its shrunk matrices on sentences of their own
(:mod:`~pruneopt.adapters.reconstruction`, one block-wise pass per candidate, the dense side
computed once), so the search looks for the levels that are best *after* the repair; the
returned model is the reconstructed one (the plain one only where the refit did harm on
the calibration sentences).

**Any model**: ``model`` is a :class:`~pruneopt.adapters.units.Structure` or a BERT
encoder. On a BERT encoder candidates are stitched by swapping pre-pruned units into one
working copy (and the loss is ``1 - mean cos``); on any other structure every candidate is
``structure.pruned(...)`` scored by its calibration ``loss``
(:mod:`~pruneopt.adapters.calib_loss`; default by model type). Reconstruction is BERT's only.

**Speed correction** (:func:`~pruneopt.adapters.spdy_correction.correct_target`, used by
:func:`spdy_prune`): the measured end-to-end speedup, not the table, decides; the table
target is moved down or up until the measurement meets the goal.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters import reconstruction
from pruneopt.adapters.bert_structure import as_structure, is_bert_structure
from pruneopt.adapters.bert_surgery import UnitSwap, as_unit, bert_of, prune_units
from pruneopt.adapters.calib_loss import check_loss, loss_outputs, model_loss
from pruneopt.adapters.calibration import cosine_to, embed
from pruneopt.adapters.reconstruction import DenseTargets, reconstructed_loss
from pruneopt.adapters.spdy_correction import correct_target
from pruneopt.adapters.spdy_generic import Repair, pruned_model, repaired
from pruneopt.adapters.spdy_table import SpdyTable
from pruneopt.adapters.spdy_timing import measure_speedup
from pruneopt.adapters.units import Structure

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


def apply_levels(model: nn.Module | Structure, table: SpdyTable, levels: Sequence[int], *,
                 inplace: bool = False) -> nn.Module:
    """``model`` with every unit pruned to ``table.removed[l][levels[l]]`` elements removed.

    A BERT encoder: a deep copy unless ``inplace=True``. A
    :class:`~pruneopt.adapters.units.Structure`: ``structure.pruned(...)``, a new model (the
    dense one untouched; ``inplace=True`` is refused). Scores come from the dense weights.
    """
    removed = table.removed_at(levels)
    if isinstance(model, nn.Module):
        return prune_units(model, table.units, removed, inplace=inplace)
    if inplace:
        raise ValueError("inplace=True needs a BERT model; a Structure returns a new model")
    st = as_structure(model)
    if [u.name for u in st.units] != [u.name for u in table.units]:
        raise ValueError("the table's units are not the structure's")
    return pruned_model(st, removed)


def stitched_loss(model: nn.Module, table: SpdyTable, levels: Sequence[int],
                  batches: Sequence[dict], reference: torch.Tensor | None = None,
                  cache: dict | None = None, *, targets: DenseTargets | None = None,
                  ridge: float = 0.3) -> float:
    """Calibration loss ``1 - mean cos`` of ``model`` with its units swapped for their
    versions at ``levels`` (taken from ``cache`` when there); ``model`` is restored after.
    With ``targets`` (the dense side of a refit, on its own batches), the loss is the one
    after the layer-wise reconstruction, which changes no module (``reconstructed_loss``)."""
    ref = reference if reference is not None else embed(model, batches)
    bert = bert_of(model)
    swaps = [UnitSwap(bert.encoder.layer[as_unit(u).block], u, r, cache)
             for u, r in zip(table.units, table.removed_at(levels), strict=True)]
    for s in swaps:
        s.__enter__()
    try:
        if targets is not None:
            return reconstructed_loss(model, targets, batches, ref, ridge=ridge)
        return 1.0 - cosine_to(ref, embed(model, batches))
    finally:
        for s in reversed(swaps):
            s.__exit__()


def _check_reconstruct(reconstruct: bool, batches: Sequence[dict] | None) -> None:
    if reconstruct and not batches:
        raise ValueError("reconstruct=True needs reconstruct_batches, the sentences the refits "
                         "are fitted on: other sentences than the calibration batches (refits "
                         "scored on their own few sentences overfit them), or the calibration "
                         "batches themselves on purpose")


def spdy_search(model: nn.Module | Structure, table: SpdyTable, speedup: float,
                batches: Sequence[Any], *, random_starts: int = 16, steps: int = 48,
                seed: int = 0, solver: str | None = None, reconstruct: bool = False,
                reconstruct_batches: Sequence[dict] | None = None, ridge: float = 0.3,
                loss: str | None = None, repair: Repair | None = None,
                progress: bool = True) -> SearchResult:
    """SPDY's search over per-unit coefficients for a speedup target (see module doc).

    Candidates: ``c = 1`` (the plain error database), then ``random_starts`` uniform
    draws in ``[0, 1]^L``, then ``steps`` local moves, each resampling ``m`` coefficients
    with ``m`` shrinking linearly from ``L // 2`` to 1 and kept when the loss improves.
    Every candidate's levels come from the exact layer-budget solver; identical levels are
    scored once (by ``loss``, default by model type; after ``repair``, see
    :func:`spdy_prune`). ``model`` (a Structure or a BERT encoder) is not modified (a
    working copy is used).

    ``reconstruct=True``: each candidate's loss on ``batches`` is also measured after the
    layer-wise reconstruction (:func:`~pruneopt.adapters.reconstruction.reconstruct`, ridge
    ``ridge``) of its shrunk matrices, fitted on ``reconstruct_batches`` (required: other
    sentences than ``batches``, or ``batches`` itself on purpose; a refit scored on the few
    sentences it was fitted on overfits them and misleads the search, see the README), and
    the candidate's score is the smaller of the two losses (a refit on too few sentences can
    do harm; then :func:`spdy_prune` returns the plain model). Per candidate that adds one
    block-wise pass over ``reconstruct_batches`` and one over ``batches``.
    """
    from tqdm import tqdm

    table.require_errors()
    table.problem(speedup)  # validates the target
    _check_reconstruct(reconstruct, reconstruct_batches)
    st, name = _structure_loss(model, loss, reconstruct, repair)
    rng = np.random.default_rng(seed)
    L = len(table.units)
    cache: dict = {}
    scored: dict[tuple, float] = {}
    if is_bert_structure(st):
        work = copy.deepcopy(st.model).eval()
        ref = embed(work, batches)
        targets = DenseTargets(work, reconstruct_batches) if reconstruct else None

        def score(lv: np.ndarray) -> float:
            return stitched_loss(work, table, lv, batches, ref, cache)
    else:
        targets = None
        dense_ref = _reference(st.model, batches, name)

        def score(lv: np.ndarray) -> float:
            pruned = repaired(apply_levels(st, table, lv).eval(), repair)
            return model_loss(pruned, batches, dense_ref, name)

    def evaluate(c: np.ndarray) -> tuple[float, np.ndarray]:
        lv = levels_for(table, speedup, c, solver)
        key = tuple(int(v) for v in lv)
        if key not in scored:
            scored[key] = score(lv)
            if targets is not None:  # the loss of what spdy_prune would return
                scored[key] = min(scored[key], stitched_loss(
                    work, table, lv, batches, ref, cache, targets=targets, ridge=ridge))
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


def _structure_loss(model: Any, loss: str | None, reconstruct: bool,
                    repair: Repair | None) -> tuple[Structure, str]:
    """The structure of ``model`` and its loss name; ``ValueError`` for what it cannot do."""
    st = as_structure(model)
    if repair is not None and is_bert_structure(st):
        raise ValueError("repair= is for other models; a BERT encoder's repair is "
                         "reconstruct=True")
    name = check_loss(loss, st.model)
    if is_bert_structure(st) and name != "cosine":
        raise ValueError(f"a BERT encoder's SPDY search uses loss 'cosine', not {name!r}")
    if reconstruct and not is_bert_structure(st):
        raise ValueError("reconstruct=True is for BERT encoders only")
    return st, name


def _reference(dense: nn.Module, batches: Sequence[Any], loss: str) -> torch.Tensor:
    """The dense model's outputs for ``loss`` (in eval mode; its training flag restored)."""
    was = dense.training
    dense.eval()
    try:
        return loss_outputs(dense, batches, loss)
    finally:
        dense.train(was)


def spdy_prune(model: nn.Module | Structure, table: SpdyTable, speedup: float,
               batches: Sequence[Any], *, timing_batches: Sequence[Any] | None = None,
               random_starts: int = 16, steps: int = 48, seed: int = 0, max_rounds: int = 5,
               tolerance: float = 0.02, confirm: int = 2, repeats: int = 7,
               threads: int | None = 1, reconstruct: bool = False,
               reconstruct_batches: Sequence[dict] | None = None, ridge: float = 0.3,
               loss: str | None = None, repair: Repair | None = None,
               progress: bool = True) -> tuple[nn.Module, dict]:
    """SPDY end to end: search, apply to a copy of ``model``, measure, correct the target.

    The search's levels are applied and timed end to end against ``model`` (on
    ``timing_batches``, default ``batches``). If the measured speedup misses ``speedup`` or
    beats it by more than ``tolerance`` (relative), the table target is moved down or up
    (:func:`correct_target`) and the levels re-solved with the same coefficients, up to
    ``max_rounds`` measurements. Every measured answer is scored by its calibration loss
    on ``batches`` (``loss``: default by model type, ``1 - mean cos`` for a BERT encoder,
    see :mod:`~pruneopt.adapters.calib_loss`); the one meeting ``speedup`` with the least loss is
    returned (none meets: the fastest, with ``"met": False``), after up to ``confirm``
    re-measurements guard it against timing noise (its speedup is the smaller of its
    measurements).

    ``repair`` (any model but BERT): a function applied to every pruned copy before it is
    scored, and to the returned model (e.g. re-estimating BatchNorm statistics on
    calibration inputs; it must keep the shapes, so the speed). ``reconstruct=True`` (BERT):
    the search scores candidates after reconstruction (see
    :func:`spdy_search`; refits on ``reconstruct_batches``, required), every measured answer
    is reconstructed before its loss is taken, and the returned model is the reconstructed
    one (same shapes, so the same speed) unless the refit made its calibration loss worse
    (``report["reconstructed"]`` says which).

    Returns ``(pruned copy, report)``; the report holds the chosen ``levels``, ``removed``,
    ``measured_speedup``, ``predicted_speedup`` (by the table), ``met``,
    ``calibration_loss`` (of the chosen levels), ``search_loss``, ``coefficients``,
    ``rounds`` (one dict per measurement), ``chosen_round`` and ``reconstructed`` (whether
    the returned model is refitted), ``loss`` (its name); with ``reconstruct=True`` also
    ``unreconstructed_loss`` and ``reconstructed_loss`` of the chosen levels, and ``ridge``.
    ``model`` (a :class:`~pruneopt.adapters.units.Structure` or a BERT encoder) is not
    modified.
    """
    _check_reconstruct(reconstruct, reconstruct_batches)
    st, name = _structure_loss(model, loss, reconstruct, repair)
    res = spdy_search(model, table, speedup, batches, random_starts=random_starts, steps=steps,
                      seed=seed, reconstruct=reconstruct, reconstruct_batches=reconstruct_batches,
                      ridge=ridge, loss=loss, repair=repair, progress=progress)
    tb = timing_batches if timing_batches is not None else batches
    dense = st.model
    ref = _reference(dense, batches, name)
    targets = DenseTargets(dense, reconstruct_batches) if reconstruct else None

    losses: dict[tuple[int, ...], dict[str, Any]] = {}

    def build(levels: Sequence[int]) -> tuple[nn.Module, dict[str, Any]]:
        """The pruned model at ``levels`` and its losses; with ``reconstruct``, the refitted
        one unless the refit made the calibration loss worse (then the plain one)."""
        key = tuple(int(v) for v in levels)
        pruned = repaired(apply_levels(model, table, levels).eval(), repair)
        if targets is None:
            if key not in losses:
                losses[key] = {"loss": model_loss(pruned, batches, ref, name)}
            return pruned, losses[key]
        rec = reconstruction.reconstruct(pruned, targets, reconstruct_batches, ridge=ridge)
        if key not in losses:
            plain = 1.0 - cosine_to(ref, embed(pruned, batches))
            refit = 1.0 - cosine_to(ref, embed(rec, batches))
            losses[key] = {"loss": min(plain, refit), "reconstructed": refit <= plain,
                           "unreconstructed_loss": plain, "reconstructed_loss": refit}
        return (rec if losses[key]["reconstructed"] else pruned), losses[key]

    def measure(levels: np.ndarray) -> dict[str, Any]:
        pruned, info = build(levels)
        meas = measure_speedup(dense, pruned, tb, repeats=repeats, threads=threads)
        return {**meas, **info, "predicted_speedup": table.predicted_speedup(levels)}

    rounds, chosen = correct_target(
        speedup, lambda ask: levels_for(table, ask, res.coefficients), measure,
        first=res.levels, max_rounds=max_rounds, tolerance=tolerance,
        ceiling=table.max_speedup() * 0.999, confirm=confirm)
    best = rounds[chosen]
    pruned, info = build(best["levels"])
    report = {
        "target": float(speedup), "levels": best["levels"],
        "removed": table.removed_at(best["levels"]),
        "measured_speedup": best["speedup"], "predicted_speedup": best["predicted_speedup"],
        "met": best["speedup"] >= speedup, "calibration_loss": float(best["loss"]),
        "search_loss": float(res.loss), "search_evaluations": res.evaluations,
        "coefficients": res.coefficients.tolist(), "rounds": rounds, "chosen_round": chosen,
        "reconstructed": bool(info.get("reconstructed", False)), "loss": name,
    }
    if reconstruct:
        report.update(unreconstructed_loss=info["unreconstructed_loss"],
                      reconstructed_loss=info["reconstructed_loss"], ridge=float(ridge))
    return pruned, report
