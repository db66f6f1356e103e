"""Timing on this CPU: the SPDY timing database and end-to-end speedup measurements.

**Timing database** (:func:`timing_database`): each unit's forward time at each level,
measured on the calibration batches (inputs captured from a real forward pass), the median
over ``repeats``; plus the dense model's end-to-end time and the time outside the units
(embeddings, pooling, overheads), ``base = dense - sum of dense unit times``. Any
:class:`~pruneopt.adapters.units.Structure` (see :mod:`~pruneopt.adapters.spdy_generic`: a
unit's ``modules`` in the model pruned at that unit only); a BERT encoder (or its
:class:`~pruneopt.adapters.bert_structure.BertStructure`) keeps its fast path, the pruned
attention / FFN alone on the inputs captured from the dense model.

**End to end** (:func:`measure_speedup`): dense and pruned models run alternately on the
same batches, medians of the seconds per pass, ``speedup = dense / pruned``.

All times are wall-clock seconds (``time.perf_counter``) with ``threads`` torch threads
(default 1: the most stable on a shared machine).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.bert_structure import as_structure, is_bert_structure
from pruneopt.adapters.bert_surgery import as_unit, bert_of, pruned_unit, units_of
from pruneopt.adapters.calibration import run_batches, run_with_hooks
from pruneopt.adapters.spdy_generic import check_unit_levels, structure_timing
from pruneopt.adapters.spdy_table import SpdyTable
from pruneopt.adapters.units import Structure

__all__ = [
    "capture_unit_inputs",
    "default_levels",
    "measure_speedup",
    "median_seconds",
    "timing_database",
    "torch_threads",
]

#: FFN keep fractions of the default levels (1 = dense).
FFN_KEEP: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored
    after (``n=None``: unchanged)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    ts = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure_speedup(dense: nn.Module, pruned: nn.Module, batches: Sequence[Any], *,
                    repeats: int = 7, threads: int | None = 1) -> dict[str, float]:
    """End-to-end time of ``dense`` and ``pruned`` on ``batches`` (alternating runs, medians).

    Returns ``dense_seconds`` and ``pruned_seconds`` (seconds per pass over all batches) and
    ``speedup = dense / pruned``.
    """
    td, tp = [], []
    with torch_threads(threads):
        run_batches(dense, batches[:1])
        run_batches(pruned, batches[:1])
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            run_batches(dense, batches)
            td.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_batches(pruned, batches)
            tp.append(time.perf_counter() - t0)
    d, p = float(np.median(td)), float(np.median(tp))
    return {"dense_seconds": d, "pruned_seconds": p, "speedup": d / p}


def default_levels(unit: Any, ffn_keep: Sequence[float] | None = None) -> np.ndarray:
    """Elements REMOVED at each level: heads 0..H-1 (``kind`` "attention" or "heads"; at
    least one head stays); any other unit (FFN neurons, channels) by keep fractions
    :data:`FFN_KEEP` (1, 0.9, ..., 0.1, 0.05) unless ``ffn_keep`` is given."""
    if unit.kind in ("attention", "heads"):
        return np.arange(unit.size, dtype=np.int64)
    fr = np.asarray(ffn_keep if ffn_keep is not None else FFN_KEEP, dtype=float)
    keep = np.unique(np.clip(np.round(fr * unit.size), 1, unit.size).astype(np.int64))[::-1]
    return unit.size - keep


def capture_unit_inputs(model: nn.Module, batches: Sequence[dict]) -> list[list[dict]]:
    """Per block, per batch: ``{"attn": (args, kwargs), "ffn": tensor}``, the inputs of the
    block's attention call and of its FFN."""
    bert = bert_of(model)
    caps: list[list[dict]] = [[] for _ in bert.encoder.layer]
    hooks = []
    for i, blk in enumerate(bert.encoder.layer):
        def pre_attn(_m, args, kwargs, i=i):
            caps[i].append({"attn": (args, dict(kwargs))})

        def pre_ffn(_m, args, i=i):
            caps[i][-1]["ffn"] = args[0]
        hooks.append(blk.attention.register_forward_pre_hook(pre_attn, with_kwargs=True))
        hooks.append(blk.intermediate.register_forward_pre_hook(pre_ffn))
    run_with_hooks(model, batches, hooks)
    return caps


def _unit_call(unit: Any, modules, inputs: list[dict]) -> Callable[[], None]:
    """A function running the (pruned) ``modules`` of ``unit`` on its captured inputs."""
    if unit.kind == "attention":
        def fn() -> None:
            for x in inputs:
                modules(*x["attn"][0], **x["attn"][1])
    else:
        inter, out = modules

        def fn() -> None:
            for x in inputs:
                out(inter(x["ffn"]), x["ffn"])
    return fn


@torch.inference_mode()
def timing_database(model: nn.Module | Structure, batches: Sequence[Any], *,
                    levels: Sequence[Sequence[int]] | None = None, repeats: int = 7,
                    threads: int | None = 1, progress: bool = True) -> SpdyTable:
    """Measure every unit at every level on this CPU (median seconds of ``repeats``).

    ``model``: any :class:`~pruneopt.adapters.units.Structure`, or a BERT encoder /
    SentenceTransformer (its units as :func:`units_of` gives them). ``batches``: what the
    model's calibration runner takes (:func:`~pruneopt.adapters.calibration.forward`).
    ``levels[l]``: numbers of elements removed (default :func:`default_levels`, level 0
    must be 0, i.e. dense). ``threads``: torch threads while timing (default 1, the most
    stable on a shared machine; the end-to-end measurements use the same). Returns a
    :class:`SpdyTable` without errors (see ``error_database``); the model is not modified.
    """
    from tqdm import tqdm

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not batches:
        raise ValueError("need at least one calibration batch")
    st = as_structure(model)
    bert_path = is_bert_structure(st)
    units = list(st.units) if st is model or not bert_path else units_of(model)
    if not units:
        raise ValueError("the model has no prunable units")
    if levels is None:
        levels = [default_levels(u) for u in units]
    removed = check_unit_levels(units, levels)
    with torch_threads(threads):
        bar = tqdm(total=sum(r.size for r in removed), desc="timing", disable=not progress)
        if bert_path:
            times = _bert_times(st.model, units, removed, batches, repeats, bar)
            dense_time = median_seconds(lambda: run_batches(st.model, batches), repeats)
        else:
            times, dense_time = structure_timing(st, batches, removed, repeats=repeats,
                                                 median=median_seconds, bar=bar)
        bar.close()
    base_raw = dense_time - sum(float(t[0]) for t in times)
    base = max(base_raw, 0.0)  # isolated unit timings can add up to more than the whole
    meta = {"base_time_raw": base_raw, "repeats": int(repeats), "threads": threads,
            "batches": len(batches),
            "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "mode": "structured (smaller dense matrices)",
            "timing": "bert units on captured inputs" if bert_path else
            "unit modules in the model pruned at that unit only (not exactly additive)"}
    return SpdyTable(units, removed, times, None, dense_time, base, meta)


def _bert_times(model: nn.Module, units: Sequence[Any], removed: Sequence[np.ndarray],
                batches: Sequence[dict], repeats: int, bar: Any) -> list[np.ndarray]:
    """The BERT fast path: each pruned attention / FFN alone on the dense model's inputs."""
    bert = bert_of(model)
    caps = capture_unit_inputs(model, batches)
    times = []
    for unit, r in zip(units, removed, strict=True):
        u = as_unit(unit)
        blk = bert.encoder.layer[u.block]
        row = []
        for k in r:
            mods = pruned_unit(blk, u, int(k), inference=True)
            row.append(median_seconds(_unit_call(u, mods, caps[u.block]), repeats))
            bar.update(1)
        times.append(np.asarray(row))
    return times
