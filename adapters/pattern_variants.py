"""One BERT unit at one (pattern, sparsity) level: the modules that replace it.

A unit is a block's self-attention or its feed-forward network (:mod:`.bert_surgery`). Its
levels, all applied to every linear layer of the unit (attention: query, key, value and
output; FFN: intermediate and output):

- ``("dense", 0)``: unchanged;
- ``("heads", f)`` / ``("neurons", f)``: structured widths, ``round(f * size)`` heads or
  FFN neurons removed (smaller dense matrices, :func:`.bert_surgery.pruned_unit`);
- ``("2:4", 0.5)``, ``("4:8", 0.5)``: plain N:M masks (n of every m weights kept along the
  input dimension), the exact magnitude optimum (:func:`.nm.nm_mask`);
- ``("t2:4", 0.5)``, ``("t4:8", 0.5)``: transposable N:M masks (also N:M along the output
  dimension, so ``W^T`` of the backward pass is N:M too; at most n kept per row and column
  of every m x m block, the exact magnitude optimum);
- ``("unstructured", s)``: the fraction ``s`` of smallest-magnitude weights of every linear
  removed; with ``csr=True`` the linears become :class:`CsrLinear` (torch's CSR kernel,
  inference only).

Masked weights are zeroed in copies (dense storage); the unit's original modules are never
modified.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from pruneopt.adapters.bert_surgery import Unit, get_unit, pruned_unit
from pruneopt.adapters.nm import nm_mask

__all__ = ["NM_PATTERNS", "CsrLinear", "level_modules", "unit_linears", "width_removed"]

#: N:M patterns: name -> (n, m, transposable)
NM_PATTERNS: dict[str, tuple[int, int, bool]] = {
    "2:4": (2, 4, False), "4:8": (4, 8, False), "t2:4": (2, 4, True), "t4:8": (4, 8, True)}
WIDTH = {"attention": "heads", "ffn": "neurons"}


def unit_linears(modules: Any, unit: Unit) -> list[tuple[str, nn.Linear]]:
    """The linear layers of a unit's modules (from :func:`get_unit`), with local names."""
    if unit.kind == "attention":
        return [(n, getattr(modules.self, n)) for n in ("query", "key", "value")] + [
            ("output", modules.output.dense)]
    inter, out = modules
    return [("intermediate", inter.dense), ("output", out.dense)]


def width_removed(unit: Unit, fraction: float) -> int:
    """Heads / neurons removed at width fraction ``fraction`` (at least one stays)."""
    return int(min(unit.size - 1, max(0, round(fraction * unit.size))))


class CsrLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored as torch CSR (``torch.sparse.mm``), inference only."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self.weight = lin.weight.detach().to_sparse_csr()
        self.bias = None if lin.bias is None else lin.bias.detach()
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.reshape(-1, self.in_features).T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the ``1 - sparsity`` largest ``|w|`` (ties kept)."""
    k = int(round(sparsity * w.numel()))
    if k == 0:
        return torch.ones_like(w, dtype=torch.bool)
    thr = w.detach().abs().flatten().kthvalue(k).values
    return w.detach().abs() > thr


def set_linear(modules: Any, unit: Unit, name: str, new: nn.Module) -> None:
    if unit.kind == "attention":
        if name == "output":
            modules.output.dense = new
        else:
            setattr(modules.self, name, new)
    elif name == "intermediate":
        modules[0].dense = new
    else:
        modules[1].dense = new


def level_modules(block: nn.Module, unit: Unit, pattern: str, sparsity: float, *,
                  csr: bool = False, mask_cache: dict | None = None) -> Any:
    """The replacement of ``unit`` in ``block`` at level ``(pattern, sparsity)`` (a new
    attention module, or a new ``(intermediate, output)`` pair; ``block`` is not modified).

    ``mask_cache`` (a dict, optional) keeps N:M masks by ``(unit name, linear, pattern)``:
    the transposable ones take a solve per matrix."""
    orig = get_unit(block, unit)
    if pattern == "dense":
        return copy.deepcopy(orig)
    if pattern in ("heads", "neurons"):
        if pattern != WIDTH[unit.kind]:
            raise ValueError(f"{unit.name}: pattern {pattern!r} does not apply to a "
                             f"{unit.kind} unit (use {WIDTH[unit.kind]!r})")
        return pruned_unit(block, unit, width_removed(unit, sparsity))
    if pattern not in NM_PATTERNS and pattern != "unstructured":
        raise ValueError(f"unknown pattern {pattern!r}; expected dense, heads, neurons, "
                         f"unstructured or one of {sorted(NM_PATTERNS)}")
    new = copy.deepcopy(orig)
    for name, lin in unit_linears(new, unit):
        if pattern == "unstructured":
            mask = magnitude_mask(lin.weight, sparsity)
        else:
            key = (unit.name, name, pattern)
            mask = None if mask_cache is None else mask_cache.get(key)
            if mask is None:
                n, m, tr = NM_PATTERNS[pattern]
                mask, rep = nm_mask(lin.weight, n, m, transposable=tr, name=name)
                if mask is None:
                    raise ValueError(f"{unit.name}.{name}: {rep.skipped}")
                if mask_cache is not None:
                    mask_cache[key] = mask
        with torch.no_grad():
            lin.weight.mul_(mask.to(lin.weight.dtype))
        if csr and pattern == "unstructured":
            set_linear(new, unit, name, CsrLinear(lin))
    return new
