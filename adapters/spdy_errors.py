"""The SPDY error database: every unit pruned alone to every level, scored on calibration data.

Any :class:`~pruneopt.adapters.units.Structure`: the loss (``loss``, default by the model's
type, see :mod:`~pruneopt.adapters.calib_loss`: ``1 - mean cos`` of sentence embeddings,
the KL of a classifier's softmax, the next-token KL of a causal LM) of the model with that
unit alone pruned (:func:`~pruneopt.adapters.spdy_generic.structure_errors`).

On a BERT encoder the loss is ``1 - mean_i cos(f(x_i), f_dense(x_i))`` over the calibration
sentences, with ``f`` the mean-pooled, unit-norm sentence embedding (all-MiniLM-L6-v2's own
pooling). Blocks before the pruned unit are not recomputed: their outputs are cached from one
dense pass, so a unit of block ``b`` costs a forward pass through blocks ``b..end`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.bert_structure import as_structure, is_bert_structure
from pruneopt.adapters.bert_surgery import UnitSwap, as_unit, bert_of
from pruneopt.adapters.calib_loss import check_loss
from pruneopt.adapters.calibration import cosine_to, mean_pooled, run_with_hooks
from pruneopt.adapters.spdy_generic import Repair, structure_errors
from pruneopt.adapters.spdy_table import SpdyTable
from pruneopt.adapters.units import Structure

__all__ = ["error_database"]


def _capture_block_inputs(model: nn.Module, batches: Sequence[dict]) -> list[list[tuple]]:
    """Per block, per batch: the ``(args, kwargs)`` of the block's forward call."""
    bert = bert_of(model)
    caps: list[list[tuple]] = [[] for _ in bert.encoder.layer]
    hooks = []
    for i, blk in enumerate(bert.encoder.layer):
        def pre(_m, args, kwargs, i=i):
            caps[i].append((args, dict(kwargs)))
        hooks.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
    run_with_hooks(model, batches, hooks)
    return caps


@torch.inference_mode()
def error_database(model: nn.Module | Structure, table: SpdyTable, batches: Sequence[Any], *,
                   loss: str | None = None, repair: Repair | None = None,
                   progress: bool = True) -> SpdyTable:
    """Fill ``table.errors``: each unit pruned alone at each level, its calibration ``loss``
    on ``batches`` (level 0 is 0; default by model type, see the module doc; a BERT encoder
    takes ``"cosine"`` only). ``repair``: a function applied to every pruned copy before it
    is scored (e.g. BatchNorm re-estimation; not for BERT, whose repair is the
    reconstruction). ``model``: a :class:`~pruneopt.adapters.units.Structure` or a BERT
    encoder, not modified. Returns ``table``."""
    from tqdm import tqdm

    st = as_structure(model)
    name = check_loss(loss, st.model)
    if [u.name for u in st.units] != [u.name for u in table.units]:
        raise ValueError("the table's units are not the model's; time this model first")
    if not batches:
        raise ValueError("need at least one calibration batch")
    if not is_bert_structure(st):
        bar = tqdm(total=sum(r.size for r in table.removed), desc="errors", disable=not progress)
        table.errors = structure_errors(st, table.removed, batches, name, bar=bar,
                                        repair=repair)
        bar.close()
        return table
    if name != "cosine":
        raise ValueError(f"a BERT encoder's error database uses loss 'cosine', not {name!r}")
    if repair is not None:
        raise ValueError("repair= is for other models; a BERT encoder's repair is "
                         "reconstruct=True in spdy_prune")
    work = copy.deepcopy(st.model).eval()
    bert = bert_of(work)
    caps = _capture_block_inputs(work, batches)
    masks = [b["attention_mask"] for b in batches]
    blocks = list(bert.encoder.layer)

    def run_from(i: int) -> torch.Tensor:
        out = []
        for bi, mask in enumerate(masks):
            args, kw = caps[i][bi]
            h = args[0]
            for j in range(i, len(blocks)):
                h = blocks[j](h, *args[1:], **kw)
                h = h[0] if isinstance(h, tuple) else h
            out.append(mean_pooled(h, mask))
        return torch.cat(out)

    ref = run_from(0)
    errors = []
    bar = tqdm(total=sum(r.size for r in table.removed), desc="errors", disable=not progress)
    for unit, r in zip(table.units, table.removed, strict=True):
        u = as_unit(unit)
        row = []
        for k in r:
            if k == 0:
                row.append(0.0)
            else:
                with UnitSwap(blocks[u.block], u, int(k)):
                    row.append(max(0.0, 1.0 - cosine_to(ref, run_from(u.block))))
            bar.update(1)
        errors.append(np.asarray(row))
    bar.close()
    table.errors = errors
    return table
