"""Attention heads and MLP widths of a Hugging Face decoder (Llama-style), by hand surgery.

A block ``model.model.layers[b]`` has ``self_attn.{q,k,v,o}_proj`` and
``mlp.{gate,up,down}_proj``. Its two units:

- ``model.layers.{b}.self_attn``, ``kind="heads"``, size ``G`` (the key/value heads; with
  multi-head attention ``G = H``, the heads): removing element ``g`` deletes rows
  ``g*d .. g*d+d-1`` of k and v (``d = head_dim``; and their biases) and, for each of the
  ``r = H / G`` query heads ``h = g*r .. g*r+r-1`` that read it (grouped-query attention),
  rows ``h*d .. h*d+d-1`` of q and the same columns of o. The forward infers the head
  counts from the shapes (``view(..., -1, head_dim)``) and repeats each key/value head
  ``num_key_value_groups = r`` times, unchanged; the module's ``num_heads`` /
  ``num_key_value_heads`` attributes are set to the kept counts.
- ``model.layers.{b}.mlp``, ``kind="neurons"``, size ``I // round_to``: removing neuron ``j``
  deletes row ``j`` of gate and up and column ``j`` of down.

Importance of a head (group) / neuron: the sum of its squared weights in the unit's layers
(rows of q, k, v / gate, up, columns of o / down). torch-pruning is not used here: its graph couples
every block through the residual stream and does not know the head reshape, and three slices
per unit are simpler.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.unit_removal import RemovalMixin, ignored_names
from pruneopt.adapters.units import StructUnit

__all__ = ["DecoderStructure", "decoder_blocks", "is_decoder"]

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def decoder_blocks(model: nn.Module) -> tuple[str, list[nn.Module]] | None:
    """``(prefix, blocks)`` of a Llama-style decoder (``prefix`` the qualified name of the
    block list, e.g. ``"model.layers"``), or ``None`` if ``model`` is not one."""
    for prefix in ("model.layers", "layers"):
        try:
            blocks = model.get_submodule(prefix)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList) and len(blocks) and all(
                hasattr(b, "self_attn") and hasattr(b, "mlp")
                and all(isinstance(getattr(b.self_attn, p, None), nn.Linear) for p in ATTN)
                and all(isinstance(getattr(b.mlp, p, None), nn.Linear) for p in MLP)
                for b in blocks):
            return prefix, list(blocks)
    return None


def is_decoder(model: nn.Module) -> bool:
    """Whether ``model`` has Llama-style decoder blocks (:func:`decoder_blocks`)."""
    return decoder_blocks(model) is not None


def _sq_rows(w: torch.Tensor, size: int) -> np.ndarray:
    """Sum of squares of ``w``'s rows in ``size`` equal consecutive slices."""
    return w.detach().double().reshape(size, -1).pow(2).sum(1).numpy()


def _cut(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping the rows (``dim=0``, with the bias) or the columns
    (``dim=1``) ``keep`` of ``linear``'s weight."""
    w = linear.weight.detach().index_select(dim, keep).clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach().index_select(0, keep) if dim == 0
                           else linear.bias.detach())
    new.train(linear.training)
    return new


class DecoderStructure(RemovalMixin):
    """Heads and MLP widths of every block of a Llama-style decoder (see the module doc)."""

    def __init__(self, model: nn.Module, *, ignored_layers=None, kinds=None,
                 round_to: int = 1) -> None:
        found = decoder_blocks(model)
        if found is None:
            raise ValueError("not a Llama-style decoder (blocks with self_attn.q/k/v/o_proj "
                             "and mlp.gate/up/down_proj)")
        prefix, blocks = found
        self.model, self.round_to, self.prefix = model, round_to, prefix
        skip = ignored_names(model, ignored_layers)
        self.options = {"kinds": list(kinds) if kinds else None, "round_to": round_to,
                        "ignored_layers": sorted(skip)}
        self.units: list[StructUnit] = []
        self.importance: list[np.ndarray] = []
        self.head_dim: dict[str, tuple[int, int]] = {}  # unit -> (head_dim, q per kv)
        for b, blk in enumerate(blocks):
            att, mlp = blk.self_attn, blk.mlp
            d = int(getattr(att, "head_dim", 0) or 0)
            q_out, k_out = att.q_proj.out_features, att.k_proj.out_features
            if not d or q_out % d:
                raise ValueError(f"block {b}: q_proj width {q_out} is not a multiple of "
                                 f"head_dim {d}")
            heads, groups = q_out // d, k_out // d
            if k_out % d or att.v_proj.out_features != k_out or not groups or heads % groups:
                raise ValueError(f"block {b}: {heads} query heads and k/v widths {k_out}, "
                                 f"{att.v_proj.out_features} (head_dim {d}) do not form "
                                 "whole key/value groups")
            base = f"{prefix}.{b}"
            for kind, name, parts in (("heads", f"{base}.self_attn", ATTN),
                                      ("neurons", f"{base}.mlp", MLP)):
                mods = tuple(f"{name}.{p}" for p in parts)
                if (kinds and kind not in kinds) or skip & {name, base, *mods}:
                    continue
                if kind == "heads":
                    per_q = (_sq_rows(att.q_proj.weight, heads)
                             + _sq_rows(att.o_proj.weight.t(), heads))
                    score = (per_q.reshape(groups, -1).sum(1) + _sq_rows(att.k_proj.weight,
                             groups) + _sq_rows(att.v_proj.weight, groups))
                    size = groups
                    self.head_dim[name] = (d, heads // groups)
                else:
                    width = mlp.up_proj.out_features
                    score = (_sq_rows(mlp.gate_proj.weight, width)
                             + _sq_rows(mlp.up_proj.weight, width)
                             + _sq_rows(mlp.down_proj.weight.t(), width))
                    size = width // round_to
                if size < 2:
                    continue
                self.units.append(StructUnit(name, kind, size, mods))
                self.importance.append(score)
        if not self.units:
            raise ValueError(f"{type(model).__name__} has no prunable unit (every block's "
                             "heads and MLP were ignored, filtered out, or of size 1)")

    def pruned_at(self, indices: Mapping[str, Sequence[int]]) -> nn.Module:
        """A deep copy of the dense model with ``indices[unit name]`` heads / neurons cut."""
        known = {u.name: u for u in self.units}
        bad = [n for n in indices if n not in known]
        if bad:
            raise ValueError(f"unknown units {bad}")
        work = copy.deepcopy(self.model)
        for name, idxs in indices.items():
            if len(idxs) == 0:
                continue
            module = work.get_submodule(name)
            if known[name].kind == "heads":
                d, rep = self.head_dim[name]
                gone = {int(i) for i in idxs}
                kept = [g for g in range(known[name].size) if g not in gone]
                kv = torch.tensor([g * d + j for g in kept for j in range(d)])
                q = torch.tensor([(g * rep + r) * d + j for g in kept for r in range(rep)
                                  for j in range(d)])
                module.q_proj = _cut(module.q_proj, q, 0)
                module.k_proj = _cut(module.k_proj, kv, 0)
                module.v_proj = _cut(module.v_proj, kv, 0)
                module.o_proj = _cut(module.o_proj, q, 1)
                module.num_heads, module.num_key_value_heads = len(kept) * rep, len(kept)
                module.num_key_value_groups = rep
            else:
                width = module.up_proj.out_features
                gone = set(int(i) for i in idxs)
                keep = torch.tensor([j for j in range(width) if j not in gone])
                module.gate_proj = _cut(module.gate_proj, keep, 0)
                module.up_proj = _cut(module.up_proj, keep, 0)
                module.down_proj = _cut(module.down_proj, keep, 1)
                module.intermediate_size = len(keep)
        return work
