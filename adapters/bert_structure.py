"""A BERT encoder as a :class:`~pruneopt.adapters.units.Structure`, and :func:`as_structure`.

:class:`BertStructure` wraps a Hugging Face ``BertModel`` (alone, or inside a
SentenceTransformer such as all-MiniLM-L6-v2) with the surgery of
:mod:`~pruneopt.adapters.bert_surgery`: two units per transformer block, its self-attention
(``kind="attention"``, elements = heads) and its feed-forward network (``kind="ffn"``,
elements = intermediate neurons), named ``"block{i}.attention"`` / ``"block{i}.ffn"``.
Heads and neurons go by magnitude (``||W_in[j]|| ||W_out[:, j]||``, lowest first), scored
once on the dense weights.

The SPDY functions (timing, errors, search, apply) take any ``Structure``; on a
``BertStructure`` they keep the encoder's fast paths (units timed on their captured inputs,
errors from cached block inputs, candidates stitched by swapping pre-pruned units).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from pruneopt.adapters.bert_surgery import (
    bert_of,
    head_scores,
    neuron_scores,
    prune_units,
    units_of,
)
from pruneopt.adapters.units import StructUnit, Structure

__all__ = ["BertStructure", "as_structure", "is_bert_structure"]


def _prefix(model: nn.Module, inner: nn.Module) -> str:
    """The qualified name of ``inner`` in ``model`` followed by a dot (``""`` if they are
    the same module)."""
    for name, mod in model.named_modules():
        if mod is inner:
            return f"{name}." if name else ""
    raise ValueError("the BERT encoder is not a submodule of the model")


class BertStructure:
    """The prunable units of a BERT encoder and their surgery (see the module doc).

    ``model``: a ``BertModel`` or a SentenceTransformer wrapping one (never modified);
    ``units``: per block, ``block{i}.attention`` (size = heads) then ``block{i}.ffn``
    (size = neurons), with the qualified names of the modules whose shapes change.
    """

    def __init__(self, model: nn.Module) -> None:
        bert = bert_of(model)
        pre = _prefix(model, bert)
        self.model = model
        self.units: list[StructUnit] = []
        for u in units_of(model):
            blk = f"{pre}encoder.layer.{u.block}"
            mods = ((f"{blk}.attention",) if u.kind == "attention"
                    else (f"{blk}.intermediate", f"{blk}.output"))
            self.units.append(StructUnit(u.name, u.kind, u.size, mods))

    def check_removed(self, removed: Sequence[int]) -> list[int]:
        """``removed`` as ints, one per unit, each in ``0..size-1``; ``ValueError`` otherwise."""
        r = [int(v) for v in removed]
        if len(r) != len(self.units):
            raise ValueError(f"removed needs one count per unit ({len(self.units)}), got {len(r)}")
        for u, v in zip(self.units, r, strict=True):
            if not 0 <= v < u.size:
                raise ValueError(f"{u.name}: can remove 0..{u.size - 1} of {u.size}, got {v}")
        return r

    def pruned(self, removed: Sequence[int]) -> nn.Module:
        """A pruned deep copy: ``removed[i]`` heads/neurons of unit ``i`` gone."""
        return prune_units(self.model, self.units, self.check_removed(removed))

    def describe(self, removed: Sequence[int]) -> dict[str, Any]:
        """Per unit: ``name``, ``kind``, ``size`` and the ``removed`` element indices
        (heads or neurons, ascending), the same ones :meth:`pruned` removes."""
        r = self.check_removed(removed)
        bert = bert_of(self.model)
        out = []
        for u, k in zip(self.units, r, strict=True):
            blk = bert.encoder.layer[int(u.name[5:u.name.index(".")])]
            s = head_scores(blk.attention) if u.kind == "attention" else neuron_scores(blk)
            gone = np.sort(np.argsort(-s, kind="stable")[len(s) - k:]) if k else []
            out.append({"name": u.name, "kind": u.kind, "size": u.size,
                        "removed": [int(i) for i in gone]})
        return {"structure": "bert", "units": out}


def is_bert_structure(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`BertStructure`."""
    return isinstance(obj, BertStructure)


def as_structure(obj: Any) -> Structure:
    """``obj`` as a :class:`~pruneopt.adapters.units.Structure`: a structure as it is, a
    BERT encoder (or a SentenceTransformer wrapping one) as a :class:`BertStructure`;
    ``ValueError`` for any other model (build its structure first, e.g. with
    ``pruneopt.adapters.structure.structure_of(model, example_inputs)``)."""
    if isinstance(obj, Structure) and not isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, nn.Module):
        try:
            return BertStructure(obj)
        except ValueError:
            pass
    raise ValueError(
        f"expected a Structure (model, units, pruned, describe) or a BERT encoder, got "
        f"{type(obj).__name__}; wrap other models with "
        "pruneopt.adapters.structure.structure_of(model, example_inputs)")
