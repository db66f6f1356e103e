"""``pruneopt nm MODEL -o OUT``: N:M (transposable by default) masks on a saved state_dict.

Reads ``MODEL`` (``.pt``/``.pth``/``.bin`` through ``torch.load(weights_only=True)``, or
``.safetensors``), masks the selected weight tensors (default: every floating ``*.weight``
with >= 2 dimensions except embeddings, pooler and heads, see
:func:`pruneopt.adapters.checkpoints.select_tensors`; 4-D convolution weights viewed as
[out, in*kh*kw]) and writes the masked state_dict (zeros in place, the same keys) in the
format given by OUT's suffix, plus a JSON report (per tensor: shape, solver, status, seconds,
kept-score ratio ``sum|W| kept / sum|W|``, ratio to the best known bound; skipped tensors
with the reason). Every output path is checked before any work, and the two files are
written together or not at all (:class:`pruneopt.adapters.files.OutputSet`). The state_dict
I/O and masking live in :mod:`pruneopt.adapters.checkpoints`.

A safetensors ``MODEL`` -- a file, a sharded folder (``model.safetensors.index.json``) or
that index -- written to a ``.safetensors`` file or to a new folder (OUT without a suffix)
is streamed (:mod:`pruneopt.adapters.streaming`): every shard and index entry is checked
first, then each tensor is read memory-mapped, masked and written into a hidden temporary
folder next to OUT, renamed into place with the report only when the whole run succeeded;
memory stays at a few tensors whatever the checkpoint's size. A folder output keeps the
input's shard files and writes a consistent index. ``--executor processes|ray`` and
``--workers N`` run the per-tensor solves through
:func:`pruneopt.solvers.executors.map_tasks` (each task opens the file itself and returns
the packed mask bits), one pool or Ray session for the whole run; ``--address HOST:PORT``
names an existing Ray cluster (checked before anything is staged: an address that does
not answer is exit 2). A run that fails or is killed leaves nothing at OUT; a rerun
restarts from the first tensor (its hidden stage of the dead run is removed), or with
``--resume`` keeps the output shards the failed run finished
(:mod:`pruneopt.adapters.resumable`: a stage kept next to OUT, each shard listed once it is
on disk, reused only by the same job: same input headers and options).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pruneopt.adapters.checkpoints import (
    SAFE_SUFFIXES,
    SUFFIXES,
    check_safetensors_storable,
    load_state_dict,
    mask_checkpoint,
    mask_state_dict,
    save_state_dict,
    select_tensors,
    state_dict_writer,
)
from pruneopt.adapters.files import OutputSet
from pruneopt.adapters.resumable import ResumableStage, job_key
from pruneopt.adapters.streaming import StagedOutput, is_checkpoint_path, open_checkpoint
from pruneopt.commands._common import (
    SOLVER_HELP,
    add_output,
    add_progress,
    add_time_limit,
    check_time_limit,
)
from pruneopt.solvers.executors import check_address

__all__ = ["load_state_dict", "mask_state_dict", "register", "run", "save_state_dict"]


def streamed(model: str, out: Path) -> bool:
    """Whether ``pruneopt nm MODEL -o OUT`` streams tensor by tensor: a safetensors MODEL
    (file, index json or folder) written as ``.safetensors`` or as a folder (no suffix).
    ``ValueError`` for a sharded MODEL written to a ``.pt``-style file."""
    if not is_checkpoint_path(model):
        return False
    if out.suffix.lower() in SAFE_SUFFIXES or out.suffix == "":
        return True
    if Path(model).suffix.lower() not in SAFE_SUFFIXES:
        raise ValueError(f"a sharded MODEL is written tensor by tensor: give -o a .safetensors "
                         f"file or a new folder (no suffix), not {str(out)!r}")
    return False


def summary(rows) -> dict:
    """Totals of the report rows: masked and skipped counts, kept and total score, seconds."""
    done = [r for r in rows if r.skipped is None]
    kept = sum(r.kept_score for r in done)
    total = sum(r.total_score for r in done)
    return {
        "masked": len(done),
        "skipped": len(rows) - len(done),
        "kept_score": kept,
        "total_score": total,
        "kept_ratio": kept / total if total > 0 else None,
        "seconds": sum(r.seconds for r in done),
    }


def report_of(args, out: Path, rows) -> dict:
    """The JSON report of a run."""
    from pruneopt.adapters.nm import DEFAULT_EXCLUDE

    return {
        "model": str(args.model),
        "output": str(out),
        "n": args.n,
        "m": args.m,
        "transposable": bool(args.transposable),
        "solver": args.solver,
        "patterns": args.pattern,
        "exclude": None if args.pattern else list(DEFAULT_EXCLUDE),
        "summary": summary(rows),
        "tensors": [r.as_dict() for r in rows],
    }


def said(args, report: dict, out: Path, report_path: Path) -> None:
    s = report["summary"]
    ratio = s["kept_ratio"]
    print(f"masked {s['masked']} tensors ({s['skipped']} skipped) with "
          f"{'transposable ' if args.transposable else ''}{args.n}:{args.m}; kept "
          f"{'-' if ratio is None else f'{100 * ratio:.2f}%'} of the score; wrote {out} and "
          f"{report_path}")


def run_streamed(args, out: Path, report_path: Path) -> int:
    """``pruneopt nm`` on a safetensors checkpoint, tensor by tensor (module docstring)."""
    ckpt = open_checkpoint(args.model)  # every shard and index entry checked first
    if args.resume:
        options = {k: getattr(args, k) for k in ("n", "m", "transposable", "solver",
                                                 "time_limit", "pattern", "regex", "pad")}
        options["output"] = str(out.resolve())
        stage = ResumableStage(out, report_path, job_key(ckpt, options), inputs=[args.model])
    else:
        stage = StagedOutput(out, report_path, inputs=[args.model])
    with stage:
        rows = mask_checkpoint(
            ckpt, stage, args.n, args.m, transposable=args.transposable, solver=args.solver,
            time_limit=args.time_limit, patterns=args.pattern, regex=args.regex, pad=args.pad,
            executor=args.executor, workers=args.workers, address=args.address,
            progress=not args.no_progress)
        report = report_of(args, out, rows)
        if args.resume:
            report["resumed_shards"] = stage.resumed
        stage.commit(json.dumps(report, indent=2).encode())
    said(args, report, out, report_path)
    return 0


def run(args) -> int:
    """The handler of ``pruneopt nm``; returns the exit code."""
    from pruneopt.formulations.nm import validate_nm

    check_time_limit(args.time_limit)
    validate_nm(args.n, args.m)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.address is not None:
        if args.executor != "ray":
            raise ValueError("--address is the Ray cluster of --executor ray")
        check_address(args.address)  # before any output is staged
    out = Path(args.output)
    report_path = Path(args.report) if args.report else Path(str(out) + ".json")
    if streamed(args.model, out):
        return run_streamed(args, out, report_path)
    if args.resume:
        raise ValueError("--resume is for safetensors checkpoints streamed to a .safetensors "
                         "file or a folder")
    if args.executor is not None:
        raise ValueError("--executor runs on safetensors checkpoints written as .safetensors "
                         "or a folder; this MODEL/output pair is masked in process")
    outputs = OutputSet({"output -o": out, "--report": report_path},
                        inputs={"MODEL": args.model}, suffixes={"output -o": SUFFIXES})
    sd = load_state_dict(args.model)
    names, _ = select_tensors(sd, args.pattern, regex=args.regex)
    if out.suffix.lower() in SAFE_SUFFIXES:  # tensors left as they are keep their ties
        check_safetensors_storable(sd, out, names=[k for k in sd if k not in set(names)])
    with outputs:
        masked, rows = mask_state_dict(
            sd, args.n, args.m, transposable=args.transposable, solver=args.solver,
            time_limit=args.time_limit, patterns=args.pattern, regex=args.regex, pad=args.pad,
            progress=not args.no_progress)
        report = report_of(args, out, rows)
        text = json.dumps(report, indent=2).encode()
        outputs.write("output -o", state_dict_writer(masked, out))
        outputs.write("--report", lambda f: f.write(text))
    said(args, report, out, report_path)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "nm", help="N:M (transposable) masks on a saved state_dict (.pt or .safetensors)",
        description="Mask the weight tensors of a saved state_dict with N:M masks, "
                    "transposable by default (W and W^T both N:M; --no-transposable for plain "
                    "N:M along the input dimension); write the masked state_dict (format by "
                    "OUT's suffix) and a JSON report, together or not at all. 4-D convolution "
                    "weights are viewed as [out, in*kh*kw].",
    )
    p.add_argument("model", metavar="MODEL",
                   help="state_dict file (.pt/.pth/.bin or .safetensors), or a sharded "
                        "safetensors checkpoint (its folder or model.safetensors.index.json)")
    add_output(p, required=True,
               help="masked state_dict to write; format by suffix (.pt or .safetensors), or "
                    "a new folder (no suffix) of shards for a safetensors MODEL")
    p.add_argument("--n", type=int, default=2, help="weights kept per group (default 2)")
    p.add_argument("--m", type=int, default=4, help="group size (default 4)")
    p.add_argument("--transposable", action=argparse.BooleanOptionalAction, default=True,
                   help="N:M along both dimensions, per m x m block, so W^T is N:M too "
                        "(default: on, as compute_nm_masks; --no-transposable: plain N:M "
                        "along the input dimension)")
    p.add_argument("--solver", default=None, help=SOLVER_HELP)
    add_time_limit(p, "seconds per tensor")
    p.add_argument("--pattern", action="append", default=None, metavar="GLOB",
                   help="tensor names to mask (fnmatch, repeatable; default: every *.weight "
                        "with >= 2 dims except names matching *embed*, *pooler*, *lm_head*)")
    p.add_argument("--regex", action="store_true", help="--pattern values are regular expressions")
    p.add_argument("--pad", action="store_true",
                   help="pad tensors whose shape is not divisible by m (default: skip them)")
    p.add_argument("--report", default=None, metavar="PATH",
                   help="JSON report path (default OUT.json)")
    p.add_argument("--executor", choices=("processes", "ray"), default=None,
                   help="solve the tensors' masks in a local process pool or on Ray (default: "
                        "in process); safetensors checkpoints only")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker count of --executor (default: the CPUs available)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished output shards of a failed or killed run of the same "
                        "job in a stage folder next to OUT, and reuse them on a rerun with "
                        "--resume (streamed checkpoints only)")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster of --executor ray, as ray.init takes it ('auto': the "
                        "one this machine runs; default: a local one of --workers CPUs)")
    add_progress(p, "no progress bar")
    p.set_defaults(func=run)
