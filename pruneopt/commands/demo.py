"""``pruneopt demo``: transposable 2:4 masks on the real pretrained all-MiniLM-L6-v2.

Loads the sentence encoder (extra ``pruneopt[minilm]``, offline), masks every ``nn.Linear``
of its BERT encoder (the default layer selection of :func:`pruneopt.adapters.nm.select_modules`:
6 layers x 6 matrices; the pooler, unused by sentence-transformers, and the embeddings stay
dense) with a transposable N:M mask
(each m x m block keeps at most n per row and per column, so W and W^T are both N:M), once
with the exact default solver and once with the 2-approximation (``greedy``), and prints:

- kept |W|: the fraction of the encoder's total weight magnitude that the masks keep;
- vs exact: that kept magnitude divided by the exact solver's (the optimum);
- solve s: the wall-clock seconds of all the solves;
- cosine: the cosine similarity between the masked model's sentence embeddings and the dense
  model's, on real English sentences (standard-library docstrings), mean and minimum.

A plain (not transposable) N:M row is printed for reference: the most magnitude any N:M
mask along the input dimension can keep.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from pruneopt.commands._common import SOLVER_HELP, add_progress


def _embed(model, sentences: list[str]):
    import torch

    with torch.no_grad():
        e = model.encode(sentences, convert_to_tensor=True, show_progress_bar=False,
                         batch_size=32)
    return torch.nn.functional.normalize(e.float(), dim=-1)


def demo_layers(bert, include: str | None = None) -> list[str]:
    """Names of the Linear layers of ``bert`` (a ``BertModel``) that the demo masks: those
    matching ``include`` (fnmatch), or by default the layer selection of
    :func:`pruneopt.adapters.nm.select_modules` (every Linear but the embeddings, the pooler
    and heads: the 36 encoder matrices of MiniLM). ``ValueError`` when nothing matches."""
    from torch import nn

    from pruneopt.adapters.nm import select_modules

    return [name for name, _ in select_modules(bert, include=include, types=(nn.Linear,))]


def run_demo(
    n: int = 2,
    m: int = 4,
    *,
    sentences: int = 64,
    exact_solver: str | None = None,
    approx_solver: str = "greedy",
    plain: bool = True,
    include: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The rows of the demo table (one dict per method); the model on disk is not touched.

    ``include`` (fnmatch pattern on the BERT module names, e.g. ``"encoder.layer.0.*"``)
    chooses the Linear layers masked; default: the 36 Linear layers of the encoder.
    """
    from torch import nn
    from tqdm import tqdm

    from pruneopt.adapters.models import load_minilm, stdlib_sentences
    from pruneopt.adapters.nm import apply_nm_masks, compute_nm_masks, verify_nm
    from pruneopt.formulations.nm import validate_nm

    n, m = validate_nm(n, m)
    if not isinstance(sentences, int) or sentences < 1:
        raise ValueError(f"--sentences must be a positive integer, got {sentences!r}")
    if not progress:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    model = load_minilm()
    texts = stdlib_sentences(sentences)
    bert = model[0].auto_model
    layers = demo_layers(bert, include)
    dense = _embed(model, texts)

    methods = [("transposable", exact_solver, True), ("transposable", approx_solver, True)]
    if plain:
        methods.append(("plain N:M", None, False))
    rows: list[dict[str, Any]] = []
    bar = tqdm(methods, desc="demo", unit="method", disable=not progress)
    for kind, solver, transposable in bar:
        bar.set_postfix_str(f"{kind} {solver or 'default'}")
        plan = compute_nm_masks(bert, n, m, transposable=transposable, solver=solver,
                                include=layers, types=(nn.Linear,), progress=progress)
        if not plan.masks:
            raise ValueError(f"no selected Linear layer of MiniLM fits {n}:{m}; use an m "
                             f"dividing 384")
        masked = copy.deepcopy(model)
        apply_nm_masks(masked[0].auto_model, plan)
        verify_nm(masked[0].auto_model, n, m, transposable=transposable, names=plan.masks)
        t0 = time.perf_counter()
        emb = _embed(masked, texts)
        enc_s = time.perf_counter() - t0
        cos = (emb * dense).sum(-1)
        summ = plan.summary()
        solved = [r for r in plan.report if r.skipped is None]
        rows.append({
            "mask": kind,
            "solver": solved[0].solver if solved else solver,
            "status": ",".join(sorted({r.status for r in solved})),
            "layers": summ["layers"],
            "kept": summ["kept_ratio"],
            "kept_score": summ["kept_score"],
            "seconds": summ["seconds"],
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
            "encode_seconds": enc_s,
        })
        del masked
    exact_kept = rows[0]["kept_score"]
    for r in rows:
        r["vs_exact"] = r["kept_score"] / exact_kept if exact_kept > 0 else None
    return rows


def format_table(rows: list[dict[str, Any]], n: int, m: int, sentences: int) -> str:
    lines = [
        f"all-MiniLM-L6-v2 encoder, {rows[0]['layers']} Linear layers, {n}:{m} masks, "
        f"cosine to the dense model on {sentences} sentences",
        "",
        "| mask | solver | status | kept abs(W) | vs exact | solve s | cosine mean | cosine min |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mask']} | {r['solver']} | {r['status']} | {100 * r['kept']:.2f}% | "
            f"{r['vs_exact']:.4f} | {r['seconds']:.2f} | {r['cos_mean']:.4f} | "
            f"{r['cos_min']:.4f} |")
    return "\n".join(lines)


def run(args) -> int:
    """The handler of ``pruneopt demo``."""
    rows = run_demo(args.n, args.m, sentences=args.sentences, exact_solver=args.solver,
                    approx_solver=args.approx_solver, plain=not args.no_plain,
                    include=args.include, progress=not args.no_progress)
    print(format_table(rows, args.n, args.m, args.sentences))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="transposable 2:4 masks on the real all-MiniLM-L6-v2 (needs [minilm])",
        description="Mask the Linear layers of the pretrained all-MiniLM-L6-v2 encoder with "
                    "transposable N:M masks (exact solver and 2-approximation) and print kept "
                    "magnitude, solve time and the cosine similarity of sentence embeddings to "
                    "the dense model on real sentences.",
    )
    p.add_argument("--n", type=int, default=2, help="weights kept per group (default 2)")
    p.add_argument("--m", type=int, default=4, help="group size (default 4)")
    p.add_argument("--sentences", type=int, default=64,
                   help="number of real sentences for the cosine similarity (default 64)")
    p.add_argument("--solver", default=None,
                   help="exact solver (" + SOLVER_HELP.split("(", 1)[1])
    p.add_argument("--approx-solver", default="greedy",
                   help="approximate solver to compare (default greedy, the 2-approximation)")
    p.add_argument("--include", default=None, metavar="GLOB",
                   help="BERT module names to mask (fnmatch, e.g. 'encoder.layer.0.*'; "
                        "default: the 36 encoder Linear layers, the unused pooler left dense)")
    p.add_argument("--no-plain", action="store_true", help="omit the plain N:M reference row")
    add_progress(p)
    p.set_defaults(func=run)
