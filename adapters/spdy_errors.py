"""The SPDY error database: every unit pruned alone to every level, scored on calibration data.

The loss of a model is ``1 - mean_i cos(f(x_i), f_dense(x_i))`` over the calibration
sentences, with ``f`` the mean-pooled, unit-norm sentence embedding (all-MiniLM-L6-v2's own
pooling). Blocks before the pruned unit are not recomputed: their outputs are cached from one
dense pass, so a unit of block ``b`` costs a forward pass through blocks ``b..end`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.bert_surgery import UnitSwap, bert_of
from pruneopt.adapters.calibration import cosine_to, mean_pooled, run_with_hooks
from pruneopt.adapters.spdy_table import SpdyTable

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
def error_database(model: nn.Module, table: SpdyTable, batches: Sequence[dict], *,
                   progress: bool = True) -> SpdyTable:
    """Fill ``table.errors``: each unit pruned alone at each level, loss ``1 - mean cos``
    (in [0, 2], level 0 is 0) of the embeddings to the dense model's on ``batches``.
    ``model`` is not modified (a working copy is used). Returns ``table``."""
    from tqdm import tqdm

    work = copy.deepcopy(model).eval()
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
    for u, r in zip(table.units, table.removed, strict=True):
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
