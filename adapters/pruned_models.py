"""Save and load structurally pruned BERT encoders (the output of SPDY's ``spdy_prune``).

A structurally pruned BERT has, in each block, its own number of attention heads and its
own FFN width. Hugging Face's ``BertConfig`` has one head count and one width for all blocks
(and transformers 5 dropped ``config.pruned_heads``), so a plain ``save_pretrained`` folder
does not load back: ``BertModel.from_pretrained`` builds 12 heads and 1536 neurons per block
and refuses the smaller weights.

:func:`save_pruned` writes the model in its own format with the standard Hugging Face
mechanism for an architecture transformers does not ship (``auto_map`` plus a modeling
file in the folder, as used by many models on the Hub):

- the usual files (``SentenceTransformer.save`` or ``save_pretrained``: weights as
  safetensors, tokenizer, pooling, ...), unchanged;
- ``config.json`` with ``model_type = "pruned_bert"``, the per-block
  ``num_attention_heads_per_layer`` and ``intermediate_size_per_layer``, and an
  ``auto_map`` naming the classes of ``modeling_pruned_bert.py``;
- ``modeling_pruned_bert.py``: a ~40-line subclass of ``BertModel`` that builds those
  shapes (a copy of ``pruneopt/adapters/modeling_pruned_bert.py``; it imports only torch and
  transformers, so the folder loads without pruneopt).

Loading is one call, the one the input model used, plus ``trust_remote_code=True`` (which
runs that modeling file from the folder; nothing is downloaded)::

    SentenceTransformer(folder, trust_remote_code=True)        # or load_pruned(folder)
    AutoModel.from_pretrained(folder, trust_remote_code=True)  # a saved bare BertModel

Without ``trust_remote_code=True`` transformers raises a ``ValueError`` asking for it, and
``BertModel.from_pretrained(folder)`` raises on the mismatched shapes: no way of loading
gives silently re-initialised weights (unless one asks for ``ignore_mismatched_sizes``).
Why not a pruneopt-only loader: the folder would then need pruneopt to load, and would not
load the way the input model did.

The folder is written whole or not at all: into a hidden temporary folder beside it
(``.{name}.{pid}.{random}.tmp``), flushed to disk, then renamed. An existing non-empty
folder is refused; temporary folders left by a killed process are removed on the next save
into the same parent folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from pruneopt.adapters.bert_surgery import bert_of, n_heads
from pruneopt.adapters.calibration import is_sentence_transformer
from pruneopt.adapters.folders import check_model_folder, write_folder

__all__ = ["MODELING_FILE", "MODEL_TYPE", "check_model_folder", "load_pruned", "pruned_shapes",
           "save_pruned"]

#: ``model_type`` of the saved configs, and the modeling file written beside them.
MODEL_TYPE = "pruned_bert"
MODELING_FILE = "modeling_pruned_bert.py"
AUTO_MAP = {"AutoConfig": "modeling_pruned_bert.PrunedBertConfig",
            "AutoModel": "modeling_pruned_bert.PrunedBertModel"}
NOTICE = (
    "\n## Structurally pruned with pruneopt\n\n"
    "The blocks of this model have their own numbers of attention heads and FFN widths "
    "(`num_attention_heads_per_layer`, `intermediate_size_per_layer` in `config.json`), "
    "built by `modeling_pruned_bert.py` in this folder. Load it with "
    "`SentenceTransformer(folder, trust_remote_code=True)` (or "
    "`AutoModel.from_pretrained(folder, trust_remote_code=True)` for the encoder alone); "
    "the usage examples below predate the pruning.\n"
)


def pruned_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The heads kept and the FFN width of every block of ``model``'s BERT encoder, as
    ``{"num_attention_heads_per_layer": [...], "intermediate_size_per_layer": [...]}``;
    ``ValueError`` if a block's matrices disagree with each other or with the config."""
    bert = bert_of(model)
    cfg = bert.config
    head_size = cfg.hidden_size // cfg.num_attention_heads
    heads, widths = [], []
    for i, blk in enumerate(bert.encoder.layer):
        att, h = blk.attention.self, n_heads(blk.attention)
        inner, w = h * head_size, int(blk.intermediate.dense.out_features)
        shapes_ok = (att.attention_head_size == head_size
                     and all(getattr(att, m).out_features == inner
                             for m in ("query", "key", "value"))
                     and blk.attention.output.dense.in_features == inner
                     and att.num_attention_heads == h and att.all_head_size == inner
                     and blk.output.dense.in_features == w)
        if not shapes_ok:
            raise ValueError(f"block {i}: the attention/FFN matrices have inconsistent shapes; "
                             "prune with pruneopt.adapters.bert_surgery.prune_units")
        heads.append(h)
        widths.append(w)
    return {"num_attention_heads_per_layer": heads, "intermediate_size_per_layer": widths}


def _write_config(folder: Path, shapes: dict[str, list[int]]) -> None:
    path = folder / "config.json"
    cfg: dict[str, Any] = json.loads(path.read_text())
    cfg.update(model_type=MODEL_TYPE, architectures=["PrunedBertModel"], auto_map=AUTO_MAP,
               **shapes)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / MODELING_FILE).write_bytes(Path(__file__).with_name(MODELING_FILE).read_bytes())


def _encoder_folder(folder: Path) -> Path:
    """The sub-folder of a saved SentenceTransformer that holds module 0 (the encoder)."""
    modules = json.loads((folder / "modules.json").read_text())
    first = min(modules, key=lambda m: int(m["idx"]))
    return folder / first["path"]


def save_pruned(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save a structurally pruned BERT encoder so that it loads back with the same outputs.

    ``model``: a SentenceTransformer wrapping a BERT (saved with ``model.save``: tokenizer,
    pooling and normalisation included) or a bare ``BertModel`` (``save_pretrained``), with
    any heads and FFN neurons removed per block (:func:`~pruneopt.adapters.bert_surgery.
    prune_units`, ``spdy_prune``). ``path``: a new folder, or an empty one; its parent must
    exist. The format and how to load it are in the module doc; in short
    ``SentenceTransformer(path, trust_remote_code=True)``. ``model`` is not modified.

    Returns the folder. ``ValueError``: a non-empty or non-folder ``path``, a missing or
    read-only parent, a model that is not a BERT encoder. Whole or not at all.
    """
    check_model_folder(path)
    shapes = pruned_shapes(model)

    def fill(tmp: Path) -> None:
        if is_sentence_transformer(model):
            model.save(str(tmp))
            encoder = _encoder_folder(tmp)
            card = tmp / "README.md"
            if card.is_file():
                text = card.read_text()
                head, sep, body = text.partition("\n---\n") if text.startswith("---") else (
                    "", "", text)
                card.write_text(head + sep + NOTICE + body)
        else:
            bert_of(model).save_pretrained(str(tmp))
            encoder = tmp
        _write_config(encoder, shapes)

    return write_folder(path, fill)


def load_pruned(path: str | os.PathLike, *, device: str = "cpu") -> nn.Module:
    """Load a folder written by :func:`save_pruned`: a ``SentenceTransformer`` if one was
    saved, else the ``PrunedBertModel`` (a ``BertModel``), in eval mode on ``device``.

    The same as ``SentenceTransformer(path, trust_remote_code=True, device=device)`` (or
    ``AutoModel.from_pretrained(path, trust_remote_code=True)``), after checking that the
    folder is one of :func:`save_pruned`'s (``ValueError`` saying what is missing).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    st = (folder / "modules.json").is_file()
    encoder = _encoder_folder(folder) if st else folder
    try:
        cfg = json.loads((encoder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{str(encoder)!r} has no readable config.json") from None
    if cfg.get("model_type") != MODEL_TYPE or not (encoder / MODELING_FILE).is_file():
        raise ValueError(f"{str(folder)!r} was not written by save_pruned (config model_type "
                         f"{cfg.get('model_type')!r}, expected {MODEL_TYPE!r} with "
                         f"{MODELING_FILE}); load it the usual way")
    if st:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device=device, trust_remote_code=True)
    else:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(folder), trust_remote_code=True).to(device)
    return model.eval()
