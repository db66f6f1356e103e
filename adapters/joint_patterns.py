"""The joint choice of pattern per unit: one timing table over (pattern, sparsity) levels.

For a BERT encoder (all-MiniLM-L6-v2 through :func:`pruneopt.adapters.models.load_minilm`),
every block gives two units, its self-attention and its FFN. The unit, not the single
linear layer, is the granularity because structured widths remove coupled rows and columns
(a head cuts query/key/value rows and output columns together; a neuron an intermediate row
and an output column), and a per-linear choice of N:M would only refine the N:M levels. The
levels of a unit (:mod:`.pattern_variants`): dense; structured widths (``heads`` /
``neurons`` at fractions :data:`WIDTHS`); plain N:M ``2:4``, ``4:8``; transposable N:M
``t2:4``, ``t4:8``; ``unstructured`` at :data:`UNSTRUCTURED` (CSR kernel). The choice

    minimize  sum_u e[u][k_u]   s.t.  sum_u t[u][k_u] <= T / s - T_out

is a :class:`~pruneopt.formulations.LayerBudget` (a multiple-choice knapsack over the union of
the patterns' levels), solved exactly by ``pruneopt.solve`` (``dp``).

**Errors** (:func:`joint_table`): ``e[u][k] = 1 - mean_i cos(f(x_i), f_dense(x_i))`` of the
embeddings on the calibration batches with only unit ``u`` at level ``k`` (as
:mod:`.spdy_errors`).

**Times**, seconds on this CPU (medians, ``threads`` torch threads), per ``mode``:

- ``"inference"``: the unit's forward on its captured inputs;
- ``"training"``: forward + backward (gradients of the weights and of the unit's input).

Dense, widths and (inference only) CSR have kernels here and are measured. N:M has no fast
CPU kernel: its CPU time *is* the dense time. For hardware that has one, bring a table
(:func:`pruneopt.adapters.timing_tables.read_timing_rows`) and :func:`with_times`, or model it
(:func:`modelled_nm_times`): a unit's dense GEMM seconds ``g`` (its linears alone, measured
here) shrink by a GEMM speedup ``a`` (e.g. ~1.6x for 2:4 on NVIDIA sparse tensor cores).
Inference saves ``g (1 - 1/a)``. Training has three GEMMs of equal FLOPs per linear (forward
``X W^T``, input gradient ``dY W``, weight gradient ``dY^T X``): plain N:M accelerates only the
forward one (``W^T`` is not N:M along its input dimension), saving ``g/3 (1 - 1/a)``;
transposable N:M also the input gradient, saving ``2g/3 (1 - 1/a)``; the weight gradient is
dense in both.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import pruneopt
from pruneopt.adapters.bert_surgery import Unit, bert_of, get_unit, set_unit, units_of
from pruneopt.adapters.calibration import cosine_to, embed, forward
from pruneopt.adapters.pattern_variants import (
    NM_PATTERNS,
    WIDTH,
    level_modules,
    unit_linears,
    width_removed,
)
from pruneopt.adapters.spdy_timing import capture_unit_inputs, median_seconds, torch_threads
from pruneopt.adapters.timing_tables import TimingTable

__all__ = ["FAMILIES", "apply_levels", "choose", "joint_levels", "joint_table",
           "modelled_nm_times", "restrict", "with_times"]

WIDTHS = (0.25, 0.5, 0.75)
UNSTRUCTURED = (0.9, 0.95)
MODES = ("inference", "training")
#: single-pattern families (for comparisons): family -> patterns (dense is always allowed)
FAMILIES: dict[str, tuple[str, ...]] = {
    "widths": ("heads", "neurons"), "2:4": ("2:4",), "4:8": ("4:8",), "t2:4": ("t2:4",),
    "t4:8": ("t4:8",), "unstructured": ("unstructured",)}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'inference' (forward) or 'training' (forward + "
                         f"backward), got {mode!r}")
    return mode


def joint_levels(unit: Unit, mode: str = "inference") -> list[tuple[str, float]]:
    """The default (pattern, sparsity) levels of ``unit``: dense, widths, N:M, and (in
    inference) unstructured CSR."""
    check_mode(mode)
    lv = [("dense", 0.0)]
    lv += [(WIDTH[unit.kind], f) for f in WIDTHS if width_removed(unit, f) > 0]
    lv += [(p, 0.5) for p in NM_PATTERNS]
    if mode == "inference":  # no CPU training kernel for CSR weights
        lv += [("unstructured", s) for s in UNSTRUCTURED]
    return lv


def clone_tree(x: Any) -> Any:
    """Tensors in ``x`` (tuples, lists, dicts) cloned: usable outside inference mode."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, tuple | list):
        return type(x)(clone_tree(v) for v in x)
    if isinstance(x, dict):
        return {k: clone_tree(v) for k, v in x.items()}
    return x


def capture_inputs(model: nn.Module, batches: Sequence[dict]) -> list[list[dict]]:
    """Per block, per batch: ``{"attn": (args, kwargs), "ffn": tensor}``
    (:func:`~pruneopt.adapters.spdy_timing.capture_unit_inputs`), cloned."""
    with torch.no_grad():
        caps = capture_unit_inputs(model, batches)
    return [[clone_tree(c) for c in blk] for blk in caps]


def first_tensor(y: Any) -> torch.Tensor:
    return y[0] if isinstance(y, tuple | list) else y


def unit_step(unit: Unit, modules: Any, inputs: list[dict], mode: str) -> Callable[[], None]:
    """One timed call: the unit's modules on every captured input (and, in training, the
    backward pass to the weights and the input)."""
    def run(x: dict, grad: bool) -> torch.Tensor:
        if unit.kind == "attention":
            args, kw = x["attn"]
            h = args[0].detach().requires_grad_(grad)
            return first_tensor(modules(h, *args[1:], **kw))
        inter, out = modules
        h = x["ffn"].detach().requires_grad_(grad)
        return out(inter(h), h)

    if mode == "inference":
        def fn() -> None:
            with torch.inference_mode():
                for x in inputs:
                    run(x, False)
    else:
        params = [p for m in (modules if isinstance(modules, tuple) else (modules,))
                  for p in m.parameters()]

        def fn() -> None:
            for p in params:
                p.grad = None
            for x in inputs:
                run(x, True).sum().backward()
    return fn


def gemm_seconds(unit: Unit, modules: Any, inputs: list[dict], mode: str, repeats: int) -> float:
    """Seconds of the unit's linear layers alone (their GEMMs), on inputs of the captured
    token counts; in training forward + backward."""
    tokens = [first_tensor(x["attn"][0] if unit.kind == "attention" else (x["ffn"],)).shape[:-1]
              for x in inputs]
    lins = [lin for _, lin in unit_linears(modules, unit)]
    xs = [[torch.randn(*t, lin.in_features) for t in tokens] for lin in lins]

    def fn() -> None:
        with torch.set_grad_enabled(mode == "training"):
            for lin, xl in zip(lins, xs, strict=True):
                for x in xl:
                    y = lin(x.requires_grad_(mode == "training"))
                    if mode == "training":
                        y.sum().backward()
    return median_seconds(fn, repeats)


def end_to_end(model: nn.Module, batches: Sequence[dict], mode: str, repeats: int) -> float:
    """Seconds of the whole model on ``batches`` (training: forward + backward)."""
    def fn() -> None:
        if mode == "inference":
            with torch.inference_mode():
                for b in batches:
                    forward(model, b)
            return
        model.zero_grad(set_to_none=True)
        for b in batches:
            y = forward(model, b)
            out = y["sentence_embedding"] if "sentence_embedding" in y else y.last_hidden_state
            out.sum().backward()
    return median_seconds(fn, repeats)


def joint_table(model: nn.Module, batches: Sequence[dict], *, mode: str = "inference",
                levels: Sequence[Sequence[tuple[str, float]]] | None = None, repeats: int = 5,
                threads: int | None = 1, errors: bool = True, progress: bool = True
                ) -> TimingTable:
    """The joint timing table of ``model``'s units (see the module docstring): times measured
    on this CPU in ``mode`` (N:M at the dense time), and, with ``errors``, each unit at each
    level alone scored on ``batches``. ``levels[u]`` overrides :func:`joint_levels` (level 0
    must be dense). ``model`` is not modified. ``meta["gemm_seconds"]``: the dense GEMM
    seconds of every unit (for :func:`modelled_nm_times`). ``dense_time`` is the measured
    end-to-end time, or the sum of the dense unit times if that is larger (units timed alone
    carry their own call overheads); ``base_time`` the rest (>= 0)."""
    from tqdm import tqdm

    check_mode(mode)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    work = copy.deepcopy(model).eval()
    bert = bert_of(work)
    units = units_of(work)
    lv = [joint_levels(u, mode) for u in units] if levels is None else [list(x) for x in levels]
    if len(lv) != len(units):
        raise ValueError(f"levels needs one list per unit ({len(units)}), got {len(lv)}")
    for u, x in zip(units, lv, strict=True):
        if not x or tuple(x[0]) != ("dense", 0.0):
            raise ValueError(f"{u.name}: level 0 must be ('dense', 0.0)")
        if mode == "training" and any(p == "unstructured" for p, _ in x):
            raise ValueError(f"{u.name}: no CPU training kernel for unstructured (CSR) weights; "
                             "drop those levels in training mode")
    caps = capture_inputs(work, batches)
    ref = embed(work, batches) if errors else None
    cache: dict = {}
    times, errs, gemm = [], [], []
    total = sum(len(x) for x in lv)
    bar = tqdm(total=total * (2 if errors else 1), desc=f"joint table ({mode})",
               disable=not progress)
    with torch_threads(threads):
        for u, x in zip(units, lv, strict=True):
            blk = bert.encoder.layer[u.block]
            row, erow = [], []
            dense_t = None
            for p, s in x:
                if p in NM_PATTERNS and dense_t is not None:
                    row.append(dense_t)  # no fast CPU kernel: the dense time
                else:
                    mods = level_modules(blk, u, p, s, csr=True, mask_cache=cache)
                    if mode == "inference":
                        for m in mods if isinstance(mods, tuple) else (mods,):
                            m.eval()
                    row.append(median_seconds(unit_step(u, mods, caps[u.block], mode), repeats))
                if p == "dense":
                    dense_t = row[-1]
                    gemm.append(gemm_seconds(u, get_unit(blk, u), caps[u.block], mode, repeats))
                bar.update(1)
            if errors:
                orig = get_unit(blk, u)
                for p, s in x:
                    if p == "dense":
                        erow.append(0.0)
                    else:
                        set_unit(blk, u, level_modules(blk, u, p, s, mask_cache=cache))
                        try:
                            erow.append(max(0.0, 1.0 - cosine_to(ref, embed(work, batches))))
                        finally:
                            set_unit(blk, u, orig)
                    bar.update(1)
                errs.append(np.asarray(erow))
            times.append(np.asarray(row))
        dense_time = end_to_end(work, batches, mode, repeats)
    bar.close()
    units_dense = sum(float(t[0]) for t in times)
    base_raw = dense_time - units_dense
    meta = {"mode": mode, "threads": threads, "repeats": int(repeats), "batches": len(batches),
            "dense_time_measured": dense_time, "base_time_raw": base_raw,
            "gemm_seconds": [float(g) for g in gemm],
            "nm_times": "dense time (no fast N:M kernel on this CPU)",
            "torch": torch.__version__}
    # the units, timed alone, can add up to more than the whole model (call overheads,
    # noise): then the model is taken as the sum of its dense units, so that the all-dense
    # choice predicts exactly 1x
    return TimingTable([u.name for u in units], [[p for p, _ in x] for x in lv],
                       [[s for _, s in x] for x in lv], times, max(dense_time, units_dense),
                       max(base_raw, 0.0),
                       errors=errs if errors else None, meta=meta)


def modelled_nm_times(table: TimingTable, gemm_speedup: Mapping[str, float],
                      unstructured_dense: bool = True) -> TimingTable:
    """A copy of ``table`` with N:M times modelled for hardware whose N:M GEMMs run
    ``gemm_speedup[pattern]`` times faster than dense (patterns without an entry keep their
    time), from ``table.meta["gemm_seconds"]`` (clipped to the unit's dense time) and
    ``meta["mode"]`` (module docstring).
    ``unstructured_dense``: unstructured levels at the dense time (no sparse-kernel win on
    that hardware); the other levels (dense, widths) keep their measured times."""
    g = table.meta.get("gemm_seconds")
    mode = check_mode(table.meta.get("mode", ""))
    if g is None or len(g) != table.n_layers:
        raise ValueError("the table has no meta['gemm_seconds'] (one per unit); build it with "
                         "joint_table")
    for p, a in gemm_speedup.items():
        if p not in NM_PATTERNS or not (math.isfinite(a) and a >= 1):
            raise ValueError(f"gemm_speedup: {p!r}: {a} (need an N:M pattern and a speedup "
                             ">= 1)")
    out = copy.deepcopy(table)
    for i, (pats, t) in enumerate(zip(out.patterns, out.times, strict=True)):
        for k, p in enumerate(pats):
            if p in gemm_speedup:
                share = 1.0 if mode == "inference" else (2 / 3 if NM_PATTERNS[p][2] else 1 / 3)
                gi = min(float(g[i]), float(t[0]))  # timing noise: never more than the unit
                t[k] = t[0] - gi * share * (1 - 1 / gemm_speedup[p])
            elif p == "unstructured" and unstructured_dense:
                t[k] = t[0]
    out.meta = {**table.meta, "nm_times": f"modelled: GEMM speedups {dict(gemm_speedup)}"}
    return out


def with_times(table: TimingTable, timed: TimingTable) -> TimingTable:
    """``table`` (its errors) with the times of ``timed`` (a table measured elsewhere, e.g.
    read by ``read_timing_rows``): every (layer, pattern, sparsity) of ``table`` must be in
    ``timed`` (``ValueError`` naming the first missing one); ``timed``'s dense and outside
    times replace ``table``'s."""
    idx = {n: i for i, n in enumerate(timed.names)}
    times = []
    for name, pats, sps in zip(table.names, table.patterns, table.sparsities, strict=True):
        if name not in idx:
            raise ValueError(f"timing table has no layer {name!r}")
        j = idx[name]
        have = {(p, round(float(s), 9)): float(t) for p, s, t in
                zip(timed.patterns[j], timed.sparsities[j], timed.times[j], strict=True)}
        row = []
        for p, s in zip(pats, sps, strict=True):
            key = (p, round(float(s), 9))
            if key not in have:
                raise ValueError(f"timing table: layer {name!r} has no level {p}@{s:g}")
            row.append(have[key])
        times.append(np.asarray(row))
    return TimingTable(table.names, table.patterns, table.sparsities, times, timed.dense_time,
                       timed.base_time, errors=table.errors,
                       meta={**table.meta, "times_from": timed.meta.get("source", "given")})


def restrict(table: TimingTable, patterns: Iterable[str]) -> tuple[TimingTable, list[np.ndarray]]:
    """The table with only the dense level and the levels whose pattern is in ``patterns``;
    also, per layer, the original level index of every kept level."""
    keep = set(patterns) | {"dense"}
    idx = [np.array([k for k, p in enumerate(ps) if p in keep]) for ps in table.patterns]
    return TimingTable(table.names, [[ps[k] for k in i] for ps, i in zip(table.patterns, idx,
                                                                           strict=True)],
                       [s[i] for s, i in zip(table.sparsities, idx, strict=True)],
                       [t[i] for t, i in zip(table.times, idx, strict=True)],
                       table.dense_time, table.base_time,
                       errors=None if table.errors is None else
                       [e[i] for e, i in zip(table.errors, idx, strict=True)],
                       meta=table.meta), idx


def choose(table: TimingTable, speedup: float, *, patterns: Iterable[str] | None = None,
           solver: str | None = "dp", **options: Any) -> tuple[np.ndarray, Any]:
    """The exact joint choice at ``speedup``: (level per unit, as indices into ``table``;
    the :class:`~pruneopt.Solution`). ``patterns``: allow only these (and dense), e.g.
    ``FAMILIES["widths"]``. ``ValueError`` naming the best reachable speedup when the target
    is out of reach with the allowed levels."""
    sub, idx = restrict(table, patterns) if patterns is not None else (
        table, [np.arange(t.size) for t in table.times])
    sol = pruneopt.solve(sub.problem(speedup), solver=solver, **options)
    lv = np.array([int(i[k]) for i, k in zip(idx, sol.decision, strict=True)], dtype=np.int64)
    return lv, sol


def apply_levels(model: nn.Module, table: TimingTable, levels: Sequence[int], *,
                 csr: bool | None = None) -> nn.Module:
    """A copy of ``model`` with every unit at its level ``levels[u]`` of ``table`` (widths
    as smaller dense matrices, N:M as zeroed weights, unstructured as zeroed weights or, with
    ``csr``, as :class:`~pruneopt.adapters.pattern_variants.CsrLinear` layers: the CSR
    kernel the inference table timed them with). ``csr=None``: CSR when the table was
    measured in ``"inference"`` mode (CSR has no backward here). ``model`` is not modified.
    ``ValueError`` if the table's layers are not the model's units."""
    lv = table.check_levels(levels)
    if csr is None:
        csr = table.meta.get("mode") == "inference"
    units = {u.name: u for u in units_of(model)}
    missing = [n for n in table.names if n not in units]
    if missing:
        raise ValueError(f"the table's layer {missing[0]!r} is not a unit of this model "
                         f"(units: {', '.join(units)})")
    out = copy.deepcopy(model)
    bert = bert_of(out)
    src = bert_of(model)
    cache: dict = {}
    for name, k in zip(table.names, lv, strict=True):
        u = units[name]
        p, s = table.patterns[table.names.index(name)][k], float(
            table.sparsities[table.names.index(name)][k])
        if p != "dense":
            set_unit(bert.encoder.layer[u.block], u,
                     level_modules(src.encoder.layer[u.block], u, p, s, csr=csr,
                                   mask_cache=cache))
    return out
