"""Save and reload models pruned through a :func:`~pruneopt.adapters.structure.structure_of`
structure.

A saved folder holds

- ``model.safetensors``: the pruned model's ``state_dict`` (safetensors; never pickles);
- ``structure.json``: ``{"format": "pruneopt-structured", "version": 1, ...}`` with the
  units and the dense indices each lost (``describe(removed)``), the options the structure
  was built with, every tensor's shape, and how the dense model is rebuilt: ``"dense":
  "config.json"`` (a Hugging Face model: its config saved beside by ``save_pretrained`` and
  its class name) or ``"user-supplied"`` (a plain torch module: the caller passes an
  instance of the dense architecture). For a structure from torch-pruning's graph the
  example inputs' shapes and dtypes are recorded, so the graph can be traced again;
- ``config.json`` for a Hugging Face model.

:func:`load_structured` rebuilds the dense architecture, applies the recorded surgery (the
same indices, not re-ranked), loads the state_dict strictly and returns the model (eval
mode), whose outputs equal the saved model's. The folder is written whole or not at all
(:func:`~pruneopt.adapters.folders.write_folder`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneopt.adapters.folders import check_model_folder, write_folder
from pruneopt.adapters.structure import structure_of

__all__ = ["FORMAT", "load_structured", "save_structured"]

FORMAT = "pruneopt-structured"
WEIGHTS, RECORD = "model.safetensors", "structure.json"


def _spec(inputs: Any) -> Any:
    """Shapes and dtypes of example inputs (tensors, tuples/lists and dicts of them)."""
    if isinstance(inputs, torch.Tensor):
        return {"shape": list(inputs.shape), "dtype": str(inputs.dtype).removeprefix("torch.")}
    if isinstance(inputs, Mapping):
        return {"dict": {str(k): _spec(v) for k, v in inputs.items()}}
    if isinstance(inputs, tuple | list):
        return {"tuple": [_spec(v) for v in inputs]}
    raise ValueError(f"example inputs of type {type(inputs).__name__} cannot be recorded; "
                     "use tensors, tuples or dicts of tensors")


def _inputs(spec: Any) -> Any:
    """Example inputs of the recorded shapes and dtypes (all ones)."""
    if "dict" in spec:
        return {k: _inputs(v) for k, v in spec["dict"].items()}
    if "tuple" in spec:
        return tuple(_inputs(v) for v in spec["tuple"])
    return torch.ones(spec["shape"], dtype=getattr(torch, spec["dtype"]))


def _is_hf(model: nn.Module) -> bool:
    return hasattr(getattr(model, "config", None), "save_pretrained")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as contiguous CPU tensors with no shared storage (tied weights are
    saved under each name)."""
    seen: set[int] = set()
    out = {}
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        if t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[k] = t
    return out


def save_structured(structure, removed: Sequence[int], folder: str | os.PathLike,
                    model: nn.Module | None = None, tokenizer: Any = None) -> Path:
    """Save ``structure.pruned(removed)`` (or ``model``, that pruned model after e.g.
    fine-tuning: its tensors must have the shapes of the surgery) into the new folder
    ``folder`` (format in the module doc), with ``tokenizer`` (a Hugging Face tokenizer,
    ``save_pretrained`` into the same folder) when given. Returns the folder.

    ``ValueError`` before anything is written: a non-empty or non-folder ``folder``, a bad
    ``removed``, a ``model`` whose shapes differ from the surgery's. Whole or not at all.
    """
    from safetensors.torch import save_file

    check_model_folder(folder)
    info = structure.describe(removed)
    expected = structure.pruned(removed)
    if model is None:
        model = expected
    else:
        want = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if want != have:
            diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
            raise ValueError(f"model does not have the shapes of structure.pruned(removed) "
                             f"(differs at {diff[:5]})")
    dense = structure.model
    hf = _is_hf(dense)
    example = getattr(structure, "example_inputs", None)
    state = _state(model)
    record: dict[str, Any] = {
        "format": FORMAT, "version": 1,
        "structure": type(structure).__name__,
        "dense": "config.json" if hf else "user-supplied",
        "class": f"{type(dense).__module__}.{type(dense).__qualname__}",
        "options": structure.options,
        "example_inputs": None if example is None else _spec(example),
        "units": info["units"],
        "shapes": {k: list(v.shape) for k, v in state.items()},
    }

    def fill(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if hf:
            dense.config.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))

    return write_folder(folder, fill)


def _read_record(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{str(folder)!r} has no readable {RECORD}; it was not written by "
                         "save_structured") from None
    if record.get("format") != FORMAT or record.get("version") != 1:
        raise ValueError(f"{str(folder / RECORD)!r} is not a {FORMAT} version 1 record")
    return record


def _dense_from_config(folder: Path, record: dict[str, Any]) -> nn.Module:
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(folder))
    cls = getattr(transformers, record["class"].rsplit(".", 1)[-1], None)
    if cls is None:
        raise ValueError(f"transformers has no class {record['class']!r}; pass dense=")
    return cls(config)


def load_structured(folder: str | os.PathLike, dense: nn.Module | None = None) -> nn.Module:
    """Load a folder written by :func:`save_structured`: rebuild the dense architecture
    (``dense``, an instance of it, required for a plain torch model; its weights do not
    matter and it is not modified), cut the recorded indices, load the saved weights
    strictly. Returns the pruned model in eval mode.

    ``ValueError``: not such a folder, a missing ``dense``, a ``dense`` of another
    architecture, missing / truncated / mismatched weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    record = _read_record(folder)
    if dense is None:
        if record["dense"] != "config.json":
            raise ValueError(f"{str(folder)!r} holds a plain torch model: pass dense=, an "
                             f"instance of the dense {record['class']}")
        dense = _dense_from_config(folder, record)
    opts = record["options"]
    example = None if record["example_inputs"] is None else _inputs(record["example_inputs"])
    structure = structure_of(dense, example, ignored_layers=opts["ignored_layers"],
                             kinds=opts["kinds"], round_to=opts["round_to"])
    ours = {(u.name, u.kind, u.size) for u in structure.units}
    saved = {(u["name"], u["kind"], u["size"]) for u in record["units"]}
    if ours != saved:
        raise ValueError(f"dense does not have the saved model's units (saved "
                         f"{sorted(saved - ours)[:3]}, found {sorted(ours - saved)[:3]}); "
                         f"pass an instance of the dense {record['class']}")
    model = structure.pruned_at({u["name"]: u["removed_indices"] for u in record["units"]})
    try:
        state = load_file(str(folder / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"cannot read {str(folder / WEIGHTS)!r} (missing, truncated or "
                         f"corrupt): {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the saved weights do not fit the rebuilt model: {exc}") from None
    return model.eval()
