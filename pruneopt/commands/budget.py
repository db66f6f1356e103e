"""``pruneopt budget``: choose one level per layer within a cost budget (SPDY layer budgets).

Three modes:

- ``pruneopt budget TABLE.json --budget B`` (or ``--speedup S`` for an SPDY table): solve
  the table and print the levels as JSON. TABLE is either ``{"costs": [[...], ...],
  "errors": [[...], ...], "budget": B}`` (ragged lists, one per layer) or an SPDY timing and
  error table written by ``SpdyTable.save`` / ``pruneopt budget --minilm --save-table``.
- ``pruneopt budget MODEL --speedup S``: the whole SPDY pipeline on any supported model
  (:mod:`pruneopt.commands.budget_model`): a sentence-transformers / Hugging Face BERT folder,
  a Hugging Face causal-LM folder, or a ``torch.save``'d ``nn.Module`` file with
  ``--calib-inputs FILE.npy`` (loading a pickled module runs code: trust the file).
- ``pruneopt budget --minilm --speedup S``: the whole SPDY pipeline on the real
  all-MiniLM-L6-v2 (timing and error databases on this CPU, coefficient search, apply,
  measured end-to-end speedup), printed as JSON; a progress bar by default (``--no-progress``).

With ``--minilm``: ``--reconstruct N`` refits the shrunk matrices of the result on N further
sentences (layer-wise reconstruction); ``--reconstruct-search`` also scores every candidate
of the search after that refit; ``--save-model DIR`` writes the final model (reconstructed
when ``--reconstruct`` is given) to the new folder DIR, loadable with
``SentenceTransformer(DIR, trust_remote_code=True)``.

``-o/--output`` writes the JSON to a file instead (``--out`` is a deprecated alias). Every
output path (``-o``, ``--save-table``, ``--save-model``) is checked before any work, never
equal to the input table, and the outputs are written together at the end, whole or not at
all.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from pruneopt.adapters.files import OutputSet
from pruneopt.commands._common import (
    SOLVER_HELP,
    add_output,
    add_progress,
    add_time_limit,
    check_time_limit,
)


def register(sub) -> None:
    p = sub.add_parser("budget", help="layer budgets: one sparsity level per layer (SPDY)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("table", nargs="?", metavar="TABLE|MODEL",
                   help="JSON table (costs/errors/budget, or an SPDY table), or a MODEL: a "
                        "sentence-transformers / BERT folder, a causal-LM folder, or a "
                        "torch.save'd nn.Module file (unpickling runs code: trust the file; "
                        "needs --calib-inputs)")
    p.add_argument("--budget", type=float, help="cost budget (overrides the table's)")
    p.add_argument("--speedup", type=float, help="speedup target (SPDY tables, MODEL, --minilm)")
    p.add_argument("--solver", default=None, help=SOLVER_HELP + ": the exact 'dp'")
    add_time_limit(p)
    p.add_argument("--buckets", type=int, default=None, help="DP buckets (dp, dp_round)")
    add_output(p, required=False, old="--out", metavar="PATH",
               help="write the JSON here instead of printing it")
    p.add_argument("--minilm", action="store_true",
                   help="run the full SPDY pipeline on all-MiniLM-L6-v2")
    p.add_argument("--calib-inputs", metavar="FILE.npy",
                   help="calibration inputs of a torch module file (first axis = examples)")
    p.add_argument("--repair", choices=("bn", "none"), default="bn",
                   help="torch module files: re-estimate BatchNorm statistics on the "
                        "calibration inputs before scoring every candidate and in the result "
                        "(default bn; none: as pruned)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="calibration batch size (module inputs, causal-LM sentences)")
    p.add_argument("--calib", type=int, default=16,
                   help="calibration sentences (BERT, causal LM, --minilm)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (MODEL, --minilm)")
    p.add_argument("--steps", type=int, default=40, help="local-search steps (MODEL, --minilm)")
    p.add_argument("--random-starts", type=int, default=12,
                   help="random starts (MODEL, --minilm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-table", help="save the measured SPDY table here (MODEL, --minilm)")
    p.add_argument("--reconstruct", type=int, default=0, metavar="N",
                   help="refit the shrunk matrices on N further sentences (--minilm)")
    p.add_argument("--reconstruct-search", action="store_true",
                   help="score the search's candidates after that refit (needs --reconstruct)")
    p.add_argument("--save-model", metavar="DIR",
                   help="write the pruned model to this new folder (MODEL, --minilm)")
    add_progress(p, "no progress bars (MODEL, --minilm)")
    p.set_defaults(func=run)


def _outputs(args, kind: str) -> OutputSet:
    """The output files of this run, checked before any work (``-o``, ``--save-table``;
    ``--save-model``, a new folder, none of the files inside it)."""
    paths = {"output -o": args.output, "--save-table": args.save_table}
    files = {k: v for k, v in paths.items() if v is not None}
    if args.save_model is not None:
        from pruneopt.adapters.pruned_models import check_model_folder

        check_model_folder(args.save_model)
        folder = Path(args.save_model).resolve()
        for label, path in files.items():
            if folder in Path(path).resolve().parents:
                raise ValueError(f"{label} {path!r} is inside the --save-model folder; "
                                 "write it elsewhere")
    return OutputSet(files, inputs={"TABLE": args.table if kind == "table" else None})


def _json_writer(obj: dict[str, Any]):
    data = (json.dumps(obj, indent=1) + "\n").encode()
    return lambda f: f.write(data)


def _solution_json(problem, sol) -> dict[str, Any]:
    return {
        "levels": [int(v) for v in sol.decision] if sol.decision is not None else None,
        "names": problem.names,
        "objective": sol.objective,
        "cost": problem.cost(sol.decision) if sol.decision is not None else None,
        "budget": problem.budget,
        "status": sol.status, "bound": sol.bound, "gap": sol.gap,
        "solver": sol.solver, "seconds": sol.seconds,
    }


def run(args) -> int:
    """The handler of ``pruneopt budget``: the outputs are checked and their temporary files
    made before any work, and written together at the end (or not at all)."""
    from pruneopt.commands.budget_model import model_kind, run_model

    check_time_limit(args.time_limit)
    kind = "minilm" if args.minilm else model_kind(args.table) if args.table else "table"
    if args.minilm and args.table:
        raise ValueError("give a TABLE/MODEL or --minilm, not both")
    for flag, value in (("--save-table", args.save_table), ("--save-model", args.save_model)):
        if value and kind == "table":
            raise ValueError(f"{flag} needs --minilm or a MODEL (the full pipeline)")
    for flag, value in (("--reconstruct", args.reconstruct),
                        ("--reconstruct-search", args.reconstruct_search)):
        if value and kind != "minilm":
            raise ValueError(f"{flag} needs --minilm (the refit is for BERT encoders)")
    if args.calib_inputs is not None and kind != "module":
        raise ValueError("--calib-inputs is for a torch module file MODEL")
    if args.reconstruct_search and args.reconstruct < 1:
        raise ValueError("--reconstruct-search needs --reconstruct N: the N further sentences "
                         "the refits use (e.g. --reconstruct 64); refits scored on the "
                         "calibration sentences themselves overfit them")
    outputs = _outputs(args, kind)
    saved, st = None, None
    try:
        with outputs:
            if kind == "minilm":
                result, table, pruned = _minilm(args)
            elif kind == "table":
                result, table, pruned = _table(args), None, None
            else:
                result, table, pruned, st = run_model(args, kind)
            if "output -o" in outputs.paths:
                outputs.write("output -o", _json_writer(result))
            if "--save-table" in outputs.paths:
                outputs.write("--save-table", _json_writer(table))
            if args.save_model is not None:  # whole or not at all, last
                saved = _save_model(pruned, st, result, args.save_model, kind, args.table)
    except BaseException:
        if saved is not None:  # the files failed after the folder was written: remove it
            shutil.rmtree(saved, ignore_errors=True)
        raise
    if "output -o" not in outputs.paths:
        print(json.dumps(result, indent=1))
    if kind != "table" and not result["met"]:
        print(f"pruneopt budget: warning: measured speedup {result['measured_speedup']:.3f}x "
              f"is below the target {args.speedup:g}x", file=sys.stderr)
    return 0


def _save_model(pruned, st, result: dict[str, Any], folder: str, kind: str,
                source: str | None) -> Path:
    """Save ``pruned``: a BERT encoder with ``save_pruned``, any other model with
    ``save_structured`` (safetensors weights and ``structure.json``, the removed indices to
    rebuild it from the dense architecture: ``load_structured(DIR, dense=...)``; a causal
    LM with the input folder's tokenizer beside it)."""
    if kind in ("minilm", "bert"):
        from pruneopt.adapters.pruned_models import save_pruned

        return save_pruned(pruned, folder)
    from pruneopt.adapters.structured_models import save_structured

    tokenizer = None
    if kind == "causal_lm":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
    return Path(save_structured(st, result["removed"], folder, model=pruned,
                                tokenizer=tokenizer))


def _table(args) -> dict[str, Any]:
    """Solve the table of ``args.table``; the result as a JSON-ready dict."""
    import pruneopt
    from pruneopt.adapters import spdy
    from pruneopt.formulations import LayerBudget

    options = {} if args.buckets is None else {"buckets": args.buckets}
    if not args.table:
        raise ValueError("give a TABLE.json (or --minilm for the full pipeline)")
    try:
        with open(args.table) as f:
            data = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read {args.table}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.table} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{args.table}: expected a JSON object with costs/errors/budget")
    if "units" in data:  # an SPDY table
        table = spdy.SpdyTable.from_json(data)
        if args.speedup is None:
            raise ValueError("an SPDY table needs --speedup (e.g. --speedup 1.5)")
        problem = table.problem(args.speedup)
        if args.budget is not None:
            raise ValueError("give --speedup or --budget for an SPDY table, not both")
        sol = pruneopt.solve(problem, solver=args.solver, time_limit=args.time_limit, **options)
        out = _solution_json(problem, sol)
        lv = sol.decision
        unit_time = sum(float(t[k]) for t, k in zip(table.times, lv, strict=True))
        out["removed"] = [int(table.removed[i][k]) for i, k in enumerate(lv)]
        out["predicted_speedup"] = table.dense_time / (table.base_time + unit_time)
        out["speedup_target"] = args.speedup
    else:
        if "costs" not in data or "errors" not in data:
            raise ValueError(f"{args.table}: needs 'costs' and 'errors' (lists, one per layer)")
        budget = args.budget if args.budget is not None else data.get("budget")
        if budget is None:
            raise ValueError("no budget: put 'budget' in the table or pass --budget")
        if args.speedup is not None:
            raise ValueError("--speedup needs an SPDY table; use --budget for a plain table")
        problem = LayerBudget(data["costs"], data["errors"], budget, names=data.get("names"))
        sol = pruneopt.solve(problem, solver=args.solver, time_limit=args.time_limit, **options)
        out = _solution_json(problem, sol)
    return out


def _minilm(args) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The whole SPDY pipeline on MiniLM: (the report, the measured table as JSON, the final
    model: reconstructed with ``--reconstruct N``, unless ``--reconstruct-search`` found the
    refit harmful on the calibration sentences; ``report["reconstructed"]`` says which).
    ``heldout_cosine``: the chosen levels without refit; ``heldout_cosine_reconstructed``:
    with it."""
    from pruneopt.adapters import spdy
    from pruneopt.adapters.models import load_minilm, stdlib_sentences

    if args.speedup is None:
        raise ValueError("--minilm needs --speedup (e.g. --speedup 1.5)")
    if args.calib < 1 or args.repeats < 1:
        raise ValueError("--calib and --repeats must be >= 1")
    model = load_minilm()
    if args.reconstruct < 0:
        raise ValueError("--reconstruct must be >= 0 sentences")
    sents = stdlib_sentences(args.calib + 64 + args.reconstruct)
    calib = spdy.make_batches(model, sents[: args.calib], batch_size=args.calib)
    held = spdy.make_batches(model, sents[args.calib:args.calib + 64], batch_size=64)
    progress = not args.no_progress
    table = spdy.timing_database(model, calib, repeats=args.repeats, progress=progress)
    spdy.error_database(model, table, calib, progress=progress)
    recon = (spdy.make_batches(model, sents[args.calib + 64:], batch_size=64)
             if args.reconstruct else None)
    pruned, rep = spdy.spdy_prune(model, table, args.speedup, calib, seed=args.seed,
                                  random_starts=args.random_starts, steps=args.steps,
                                  repeats=args.repeats, reconstruct=args.reconstruct_search,
                                  reconstruct_batches=recon, progress=progress)
    ref = spdy.embed(model, held)
    final = pruned  # the returned (and saved) model
    if args.reconstruct_search:
        plain = spdy.apply_levels(model, table, rep["levels"]).eval()
        refit = pruned if rep["reconstructed"] else spdy.reconstruct(plain, model, recon)
    elif args.reconstruct:
        plain = pruned
        final = refit = spdy.reconstruct(pruned, model, recon)
        rep["reconstructed"] = True
    else:
        plain, refit = pruned, None
    rep["heldout_cosine"] = spdy.cosine_to(ref, spdy.embed(plain, held))
    if refit is not None:
        rep["heldout_cosine_reconstructed"] = spdy.cosine_to(ref, spdy.embed(refit, held))
    rep["units"] = [u.name for u in table.units]
    return rep, table.to_json(), final
