"""Structured surgery on BERT encoders: prunable units and smaller dense copies of them.

Every transformer block of a Hugging Face ``BertModel`` (alone, or inside a
``sentence_transformers.SentenceTransformer`` such as all-MiniLM-L6-v2) gives two
:class:`Unit` s: its self-attention (pruned by whole heads) and its feed-forward network
(pruned by intermediate neurons). Removed heads drop their rows of the query/key/value
matrices and their columns of the attention-output matrix; removed neurons drop their rows
of the intermediate matrix and their columns of the output matrix. What is left are smaller
*dense* matrices, so every removed head or neuron saves time with the ordinary kernels.

Which heads/neurons go is decided by magnitude: a neuron's score is
``||W_in[j, :]|| * ||W_out[:, j]||``, a head's is the product of the norms of its value rows
and its attention-output columns (:func:`head_scores`, :func:`neuron_scores`).

This module is the only one that knows the layout of a BERT block (``attention.self``,
``intermediate.dense``, ...); the SPDY modules reach it through :func:`pruned_unit`,
:func:`get_unit`, :func:`set_unit` and :class:`UnitSwap`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Unit",
    "UnitSwap",
    "as_unit",
    "bert_of",
    "get_unit",
    "head_scores",
    "keep_columns",
    "keep_rows",
    "n_heads",
    "neuron_scores",
    "prune_units",
    "pruned_attention",
    "pruned_ffn",
    "pruned_unit",
    "set_unit",
    "units_of",
]


def bert_of(model: nn.Module) -> nn.Module:
    """The Hugging Face ``BertModel`` inside ``model`` (a SentenceTransformer or a BertModel)."""
    if hasattr(model, "encoder") and hasattr(model.encoder, "layer"):
        return model
    first = None
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        pass
    inner = getattr(first, "auto_model", None)
    if inner is not None and hasattr(inner, "encoder") and hasattr(inner.encoder, "layer"):
        return inner
    raise ValueError(
        f"expected a BERT encoder (a transformers BertModel or a SentenceTransformer wrapping "
        f"one), got {type(model).__name__}"
    )


@dataclass(frozen=True)
class Unit:
    """One prunable unit: ``kind`` "attention" (heads) or "ffn" (neurons) of ``block``;
    ``size`` is its number of heads or neurons in the dense model."""

    block: int
    kind: str
    size: int

    @property
    def name(self) -> str:
        return f"block{self.block}.{self.kind}"


def as_unit(u: Any) -> Unit:
    """``u`` as a BERT :class:`Unit`: a :class:`Unit` as it is, or any unit named
    ``"block{i}.attention"`` / ``"block{i}.ffn"`` (a
    :class:`~pruneopt.adapters.bert_structure.BertStructure` unit); ``ValueError`` otherwise."""
    if isinstance(u, Unit):
        return u
    m = re.fullmatch(r"block(\d+)\.(attention|ffn)", str(getattr(u, "name", "")))
    if m is None:
        raise ValueError(f"{getattr(u, 'name', u)!r} is not a BERT unit (expected a name "
                         "block<i>.attention or block<i>.ffn)")
    return Unit(int(m.group(1)), m.group(2), int(u.size))


def n_heads(attn: nn.Module) -> int:
    """Number of attention heads of a BERT attention module (as it is now, after pruning)."""
    return int(attn.self.query.out_features // attn.self.attention_head_size)


def units_of(model: nn.Module) -> list[Unit]:
    """The prunable units of ``model``, in forward order (attention, ffn of each block)."""
    bert = bert_of(model)
    out = []
    for i, blk in enumerate(bert.encoder.layer):
        out.append(Unit(i, "attention", n_heads(blk.attention)))
        out.append(Unit(i, "ffn", int(blk.intermediate.dense.out_features)))
    return out


def head_scores(attn: nn.Module) -> np.ndarray:
    """Magnitude score of every head: ||value rows|| * ||output columns|| (one per head)."""
    hs = attn.self.attention_head_size
    v = attn.self.value.weight.detach().float()
    o = attn.output.dense.weight.detach().float()
    H = v.shape[0] // hs
    s = [float(v[h * hs:(h + 1) * hs].norm() * o[:, h * hs:(h + 1) * hs].norm()) for h in range(H)]
    return np.asarray(s)


def neuron_scores(block: nn.Module) -> np.ndarray:
    """Magnitude score of every FFN neuron: ||W_in[j, :]|| * ||W_out[:, j]||."""
    w_in = block.intermediate.dense.weight.detach().float()
    w_out = block.output.dense.weight.detach().float()
    return (w_in.norm(dim=1) * w_out.norm(dim=0)).cpu().numpy()


def keep_rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new ``nn.Linear`` with only the output rows ``idx`` of ``lin`` (weight and bias)."""
    new = nn.Linear(lin.in_features, idx.numel(), bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[idx])
    return new.to(device=lin.weight.device, dtype=lin.weight.dtype)


def keep_columns(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new ``nn.Linear`` with only the input columns ``idx`` of ``lin`` (bias unchanged)."""
    new = nn.Linear(idx.numel(), lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new.to(device=lin.weight.device, dtype=lin.weight.dtype)


def _kept(scores: np.ndarray, remove: int) -> np.ndarray:
    """Sorted indices of the ``len(scores) - remove`` highest scores (stable on ties)."""
    return np.sort(np.argsort(-scores, kind="stable")[: len(scores) - remove])


def pruned_attention(attn: nn.Module, remove: int) -> nn.Module:
    """A copy of ``attn`` without its ``remove`` lowest-scoring heads (at least one stays)."""
    H = n_heads(attn)
    if not 0 <= remove < H:
        raise ValueError(f"can remove 0..{H - 1} of {H} heads, got {remove}")
    new = copy.deepcopy(attn)
    if remove == 0:
        return new
    hs = attn.self.attention_head_size
    keep_heads = _kept(head_scores(attn), remove)
    idx = torch.as_tensor(np.concatenate([np.arange(h * hs, (h + 1) * hs) for h in keep_heads]))
    for name in ("query", "key", "value"):
        setattr(new.self, name, keep_rows(getattr(attn.self, name), idx))
    new.output.dense = keep_columns(attn.output.dense, idx)
    new.self.num_attention_heads = H - remove
    new.self.all_head_size = (H - remove) * hs
    return new


def pruned_ffn(block: nn.Module, remove: int) -> tuple[nn.Module, nn.Module]:
    """Copies of ``block.intermediate`` and ``block.output`` without ``remove`` neurons."""
    n = int(block.intermediate.dense.out_features)
    if not 0 <= remove < n:
        raise ValueError(f"can remove 0..{n - 1} of {n} FFN neurons, got {remove}")
    inter = copy.deepcopy(block.intermediate)
    out = copy.deepcopy(block.output)
    if remove == 0:
        return inter, out
    idx = torch.as_tensor(_kept(neuron_scores(block), remove))
    inter.dense = keep_rows(block.intermediate.dense, idx)
    out.dense = keep_columns(block.output.dense, idx)
    return inter, out


def pruned_unit(block: nn.Module, unit: Unit, remove: int, *, inference: bool = False) -> Any:
    """The pruned replacement of ``unit`` in ``block`` (not installed): an attention module,
    or the ``(intermediate, output)`` pair of an FFN. ``inference=True`` puts the new modules
    in eval mode; otherwise they keep the training flag of the originals."""
    if unit.kind == "attention":
        new = pruned_attention(block.attention, int(remove))
    elif unit.kind == "ffn":
        new = pruned_ffn(block, int(remove))
    else:
        raise ValueError(f"unknown unit kind {unit.kind!r}; expected 'attention' or 'ffn'")
    if inference:
        for mod in new if isinstance(new, tuple) else (new,):
            mod.eval()
    return new


def get_unit(block: nn.Module, unit: Unit) -> Any:
    """The modules of ``unit`` now in ``block`` (what :func:`set_unit` puts back)."""
    if unit.kind == "attention":
        return block.attention
    return block.intermediate, block.output


def set_unit(block: nn.Module, unit: Unit, modules: Any) -> None:
    """Install ``modules`` (from :func:`pruned_unit` or :func:`get_unit`) as ``unit``."""
    if unit.kind == "attention":
        block.attention = modules
    else:
        block.intermediate, block.output = modules


def prune_units(model: nn.Module, units: Sequence[Unit], removed: Sequence[int], *,
                inplace: bool = False) -> nn.Module:
    """``model`` (a deep copy unless ``inplace``) with ``removed[i]`` heads/neurons of
    ``units[i]`` removed (any counts, not only table levels). Scores come from the weights
    of ``model`` before pruning."""
    units = [as_unit(u) for u in units]
    target = model if inplace else copy.deepcopy(model)
    bert = bert_of(target)
    for u, r in zip(units, removed, strict=True):
        if int(r):
            blk = bert.encoder.layer[u.block]
            set_unit(blk, u, pruned_unit(blk, u, int(r)))
    return target


class UnitSwap:
    """Context manager: ``unit`` of ``block`` replaced by its version with ``remove``
    heads/neurons removed, the original put back on exit. ``cache`` (a dict, optional) keeps
    the pruned versions by ``(block, kind, remove)`` so that repeated swaps are cheap."""

    def __init__(self, block: nn.Module, unit: Unit, remove: int, cache: dict | None = None):
        self.block, self.unit, self.remove, self.cache = block, as_unit(unit), int(remove), cache
        self.old: Any = None

    def _variant(self) -> Any:
        key = (self.unit.block, self.unit.kind, self.remove)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        v = pruned_unit(self.block, self.unit, self.remove, inference=True)
        if self.cache is not None:
            self.cache[key] = v
        return v

    def __enter__(self) -> UnitSwap:
        if self.remove:
            self.old = get_unit(self.block, self.unit)
            set_unit(self.block, self.unit, self._variant())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.remove:
            set_unit(self.block, self.unit, self.old)
