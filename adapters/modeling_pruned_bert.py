"""A BERT encoder whose blocks have their own numbers of attention heads and FFN widths.

This file is self-contained (it imports only ``torch`` and ``transformers``): pruneopt copies
it, unchanged, into the folder of every structurally pruned BERT it saves
(:func:`pruneopt.adapters.pruned_models.save_pruned`), where the folder's ``config.json``
names it in ``auto_map``. The model then loads with the usual calls plus
``trust_remote_code=True`` (the code run is this file, from the folder; nothing is
downloaded), with or without pruneopt installed::

    SentenceTransformer(folder, trust_remote_code=True)        # a saved SentenceTransformer
    AutoModel.from_pretrained(folder, trust_remote_code=True)  # the encoder alone

Why a modeling file: Hugging Face configs describe one head count and one FFN width for all
blocks, and transformers 5 no longer has ``config.pruned_heads``; ``auto_map`` with a
modeling file is the standard way to ship an architecture transformers does not have.

Config (:class:`PrunedBertConfig`, ``model_type = "pruned_bert"``): every ``BertConfig``
field, with ``num_attention_heads`` and ``intermediate_size`` those of the dense model
(the head size stays ``hidden_size // num_attention_heads``), plus

- ``num_attention_heads_per_layer``: heads kept in each block (1..``num_attention_heads``);
- ``intermediate_size_per_layer``: FFN neurons kept in each block (>= 1).

Model (:class:`PrunedBertModel`): a ``BertModel`` whose blocks have query/key/value maps of
``heads * head_size`` outputs, an attention-output map of that many inputs, and FFN maps of
the block's width. The forward pass is BertModel's own; the weights keep their names.
"""

from __future__ import annotations

from torch import nn
from transformers import BertConfig, BertModel

__all__ = ["PrunedBertConfig", "PrunedBertModel"]


class PrunedBertConfig(BertConfig):
    """``BertConfig`` plus the heads and FFN width of every block (see the module doc)."""

    model_type = "pruned_bert"

    def __init__(self, num_attention_heads_per_layer: list[int] | None = None,
                 intermediate_size_per_layer: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        n = int(self.num_hidden_layers)
        heads = (list(num_attention_heads_per_layer) if num_attention_heads_per_layer
                 is not None else [int(self.num_attention_heads)] * n)
        widths = (list(intermediate_size_per_layer) if intermediate_size_per_layer
                  is not None else [int(self.intermediate_size)] * n)
        if len(heads) != n or len(widths) != n:
            raise ValueError(f"num_attention_heads_per_layer and intermediate_size_per_layer "
                             f"need one entry per layer ({n}), got {len(heads)} and "
                             f"{len(widths)}")
        if not all(1 <= int(h) <= int(self.num_attention_heads) for h in heads):
            raise ValueError(f"heads per layer must be in 1..{self.num_attention_heads}, "
                             f"got {heads}")
        if not all(int(w) >= 1 for w in widths):
            raise ValueError(f"FFN widths per layer must be >= 1, got {widths}")
        self.num_attention_heads_per_layer = [int(h) for h in heads]
        self.intermediate_size_per_layer = [int(w) for w in widths]


class PrunedBertModel(BertModel):
    """``BertModel`` with the per-block shapes of a :class:`PrunedBertConfig`."""

    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        d = config.hidden_size
        for blk, heads, width in zip(self.encoder.layer, config.num_attention_heads_per_layer,
                                     config.intermediate_size_per_layer, strict=True):
            att = blk.attention.self
            inner = int(heads) * att.attention_head_size
            att.query, att.key, att.value = (nn.Linear(d, inner) for _ in range(3))
            att.num_attention_heads, att.all_head_size = int(heads), inner
            blk.attention.output.dense = nn.Linear(inner, d)
            blk.intermediate.dense = nn.Linear(d, int(width))
            blk.output.dense = nn.Linear(int(width), d)
        self.post_init()  # BERT's initialisation for the new maps (replaced when loading)
