"""``pruneopt budget MODEL --speedup S``: the SPDY pipeline on any supported model.

MODEL is one of:

- a sentence-transformers folder (``modules.json``) or a Hugging Face BERT folder
  (``config.json`` with ``model_type`` "bert"): the BERT units (heads, FFN neurons),
  calibration on standard-library sentences, loss ``1 - mean cos``; ``--minilm`` is this
  case for the bundled all-MiniLM-L6-v2;
- a Hugging Face causal-LM folder (``config.json`` whose architecture ends in ``ForCausalLM``
  or ``LMHeadModel``): units from torch-pruning's dependency graph (attention heads, MLP
  widths), calibration on standard-library sentences, loss the mean next-token KL;
- a file written by ``torch.save(module)`` (a whole ``nn.Module``; **loading it unpickles it,
  which runs code: load only files you trust**) with ``--calib-inputs FILE.npy`` (an array
  of model inputs, first axis = examples): units from the dependency graph, loss the KL of
  the softmax outputs (a classifier); ``--repair bn`` (default) re-estimates the BatchNorm
  statistics of every pruned candidate on the calibration inputs before it is scored, and
  of the returned model (``--repair none``: as pruned).

Every case: timing and error databases on this CPU, the coefficient search, apply, the
measured end-to-end speedup with the correction loop; the report holds the target, the
measured and table speedups, the levels and removed elements per unit and the loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["model_kind", "run_model"]


def model_kind(path: str) -> str:
    """``"table"`` (a ``.json`` file), ``"bert"``, ``"causal_lm"`` (a folder) or
    ``"module"`` (any other file); ``ValueError`` for a folder of no known kind or a path
    that does not exist."""
    p = Path(path)
    if p.is_dir():
        if (p / "modules.json").is_file():
            return "bert"
        try:
            config = json.loads((p / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"{path}: a model folder needs modules.json (sentence-"
                             "transformers) or a readable config.json (Hugging Face)") from None
        if config.get("model_type") == "bert":
            return "bert"
        archs = [str(a) for a in config.get("architectures") or []]
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            return "causal_lm"
        raise ValueError(f"{path}: unsupported model (model_type {config.get('model_type')!r}, "
                         f"architectures {archs}); supported: BERT encoders, causal LMs")
    if p.suffix.lower() == ".json" or not p.exists():
        return "table"
    return "module"


def _load_module(path: str) -> Any:
    import torch
    from torch import nn

    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises many types; all mean "not a module file"
        raise ValueError(f"cannot load {path} as a torch.save'd module: "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not an nn.Module (save the "
                         "whole module with torch.save(model, path))")
    return model.eval()


def _calib_inputs(path: str | None) -> Any:
    import numpy as np

    if path is None:
        raise ValueError("a torch module file needs --calib-inputs FILE.npy (model inputs, "
                         "first axis = examples)")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read --calib-inputs {path}: {exc}") from None
    if x.ndim < 1 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"--calib-inputs {path}: need a numeric array with at least one "
                         f"example, got dtype {x.dtype} shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"--calib-inputs {path}: has NaN or infinite values")
    return x


def _structure_of(model: Any, example: Any) -> Any:
    """A's dependency-graph structure of ``model`` (extra ``structure``)."""
    from pruneopt.adapters.structure import structure_of

    return structure_of(model, example)


def _prepare(args, kind: str) -> tuple[Any, list, list, str, Any]:
    """``(structure, calibration batches, held-out batches, loss, repair)`` for MODEL."""
    from pruneopt.adapters import spdy
    from pruneopt.adapters.models import stdlib_sentences

    if kind == "module":
        x = _calib_inputs(args.calib_inputs)
        model = _load_module(args.table)
        batches = spdy.tensor_batches(x, args.batch_size)
        repair = None
        if args.repair == "bn":
            from pruneopt.adapters.batchnorm import recalibrate_batchnorm

            inputs = torch_inputs(batches)

            def repair(m):
                recalibrate_batchnorm(m, inputs, batch_size=args.batch_size)
        return _structure_of(model, batches[0][:1]), batches, [], "kl", repair
    sents = stdlib_sentences(args.calib + 64)
    if args.no_progress:  # transformers' own loading bars too
        from transformers.utils import logging

        logging.disable_progress_bar()
    if kind == "bert":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(args.table), device="cpu").eval()
        calib = spdy.make_batches(model, sents[: args.calib], batch_size=args.calib)
        held = spdy.make_batches(model, sents[args.calib:], batch_size=64)
        return spdy.BertStructure(model), calib, held, "cosine", None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(args.table)).eval()
    tok = AutoTokenizer.from_pretrained(str(args.table))
    calib = spdy.tokenized_batches(tok, sents[: args.calib], args.batch_size)
    held = spdy.tokenized_batches(tok, sents[args.calib:], args.batch_size)
    return _structure_of(model, calib[0]), calib, held, "next_token_kl", None


def torch_inputs(batches: list) -> Any:
    """The tensor batches as one tensor."""
    import torch

    return torch.cat(list(batches))


def run_model(args, kind: str) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    """The pipeline on MODEL: ``(report, table JSON, pruned model, structure)``."""
    from pruneopt.adapters import spdy

    if args.speedup is None:
        raise ValueError("a MODEL needs --speedup (e.g. --speedup 1.5)")
    if args.calib < 1 or args.repeats < 1 or args.batch_size < 1:
        raise ValueError("--calib, --repeats and --batch-size must be >= 1")
    st, calib, held, loss, repair = _prepare(args, kind)
    if not st.units:
        raise ValueError(f"{args.table}: the model has no prunable units")
    progress = not args.no_progress
    table = spdy.timing_database(st, calib, repeats=args.repeats, progress=progress)
    spdy.error_database(st, table, calib, loss=loss, repair=repair, progress=progress)
    table.problem(args.speedup)  # an unreachable target stops here, stating the best
    pruned, rep = spdy.spdy_prune(st, table, args.speedup, calib, seed=args.seed,
                                  random_starts=args.random_starts, steps=args.steps,
                                  repeats=args.repeats, loss=loss, repair=repair,
                                  progress=progress)
    if held:
        from pruneopt.adapters.calib_loss import loss_outputs, model_loss

        rep["heldout_loss"] = model_loss(pruned, held, loss_outputs(st.model, held, loss), loss)
    rep["units"] = [{"name": u.name, "kind": u.kind, "size": u.size, "removed": int(r)}
                    for u, r in zip(st.units, rep["removed"], strict=True)]
    rep["model"] = {"path": str(args.table), "kind": kind}
    rep["repair"] = "bn" if repair is not None else None
    return rep, table.to_json(), pruned, st
