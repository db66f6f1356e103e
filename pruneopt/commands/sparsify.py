"""``pruneopt sparsify MODEL -o OUT_DIR``: a model folder in, an N:M-sparse model folder out.

    pruneopt sparsify minilm --n 2 --m 4 --scores wanda --reconstruct -o minilm-2of4

MODEL is ``minilm`` (the bundled all-MiniLM-L6-v2) or a folder holding a sentence-transformers
or Hugging Face model. Every Linear layer of the encoder is masked (embeddings, pooler and
heads are left dense unless ``--include`` names them), with calibration text from
``--calibration FILE`` (one sentence per line; default: real English sentences from the
standard library's docstrings). OUT_DIR (new, or an empty folder) receives the model with
the masked weights baked in, loadable with ``SentenceTransformer(OUT_DIR)`` or
``AutoModel.from_pretrained(OUT_DIR)``, and ``sparsify_report.json`` (per layer: solver,
status, kept score and bound, reconstruction error before and after). Written whole or
not at all.

``--stream`` (with ``--scores magnitude --no-reconstruct``): a model folder of any size whose
weights are safetensors (one file or shards with their index) is read and written tensor by
tensor, as ``pruneopt nm`` does (:func:`pruneopt.adapters.checkpoints.mask_checkpoint`:
memory-mapped reads, output shards written as they go, peak memory a few tensors, not the
model) into a NEW folder; the folder's other files (config, tokenizer, pooling, ...) are
copied, weight files in other formats are left out (and listed in the report). Tensors
masked: every ``*.weight`` with two or more dimensions except ``*embed*``, ``*pooler*`` and
``*lm_head*`` (``--include GLOB`` picks module names instead). Calibration scores
(``wanda``, ``obs``) and the refit need the model's activations, which a tensor-by-tensor
pass does not have: they load the model. ``--executor``/``--workers``/``--address`` as
``pruneopt nm``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pruneopt.commands._common import add_progress
from pruneopt.formulations.reconstruction import DAMPING


def _sentences(path: str | None, count: int) -> list[str]:
    if path is None:
        from pruneopt.adapters.models import stdlib_sentences

        return stdlib_sentences(count)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"calibration file {path!r} does not exist")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise ValueError(f"calibration file {path!r} is not UTF-8 text") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"calibration file {path!r} holds no text (one sentence per line)")
    return lines[:count]


def _quiet_hub() -> None:
    """No loading/writing bars from transformers and the hub (``--no-progress``)."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - both come with the minilm extra
        pass


#: Weight files of other formats, never copied into a streamed output (they would hold the
#: dense weights beside the masked ones).
OTHER_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.safetensors",
                 "*.onnx", "*.gguf")


def run_streamed(args) -> int:
    """``pruneopt sparsify --stream`` (module docstring): the checkpoint masked tensor by
    tensor into a stage folder, the model's other files copied beside it, renamed at the
    end."""
    import fnmatch
    import shutil

    from pruneopt.adapters.checkpoints import mask_checkpoint
    from pruneopt.adapters.streaming import INDEX_NAME, StagedOutput, open_checkpoint
    from pruneopt.commands.nm import summary

    for flag, bad in (("--scores", args.scores != "magnitude"), ("--reconstruct",
                      args.reconstruct), ("--finetune", args.finetune > 0),
                      ("--method", args.method != "mask-refit")):
        if bad:
            raise ValueError(f"--stream needs --scores magnitude --no-reconstruct (no "
                             f"{flag}): calibration scores, the refit and fine-tuning need "
                             "the model's activations; drop --stream to load the model")
    src = Path(args.model)
    if not src.is_dir():
        raise ValueError(f"--stream needs a model folder, got {args.model!r}")
    ckpt = open_checkpoint(src)  # every shard and index entry checked first
    if ckpt.folder.resolve() != src.resolve():
        raise ValueError(f"--stream: the weights of {args.model!r} are not at its top level")
    written = set(ckpt.shards) | ({INDEX_NAME} if ckpt.sharded else set())
    patterns = None if args.include is None else [f"{g}.weight" for g in args.include]
    out = Path(args.output)
    stage = StagedOutput(out, None, inputs=[src])
    left_out = []
    with stage:
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if p.is_dir() or str(rel) in written:
                continue
            if any(fnmatch.fnmatch(p.name, g) for g in OTHER_WEIGHTS):
                left_out.append(str(rel))
                continue
            dst = stage.data_path(str(rel))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)
        rows = mask_checkpoint(
            ckpt, stage, args.n, args.m, transposable=args.transposable, solver=args.solver,
            patterns=patterns, executor=args.executor, workers=args.workers,
            address=args.address, progress=not args.no_progress)
        info = {"model": args.model, "n": args.n, "m": args.m,
                "transposable": bool(args.transposable), "scores": "magnitude",
                "reconstruct": False, "streamed": True, "not_copied": left_out,
                "summary": summary(rows), "tensors": [r.as_dict() for r in rows]}
        stage.data_path("sparsify_report.json").write_text(json.dumps(info, indent=1))
        stage.commit()
    s = info["summary"]
    print(f"{'transposable ' if args.transposable else ''}{args.n}:{args.m}: {s['masked']} "
          f"tensors ({s['skipped']} skipped), magnitude scores, streamed -> {out}")
    return 0


def run(args) -> int:
    from pruneopt.adapters.model_folders import check_output_folder, load_model, save_model
    from pruneopt.adapters.oneshot import sparsify
    from pruneopt.formulations.nm import validate_nm

    validate_nm(args.n, args.m)
    if args.finetune < 0:
        raise ValueError(f"--finetune must be a number of steps >= 0, got {args.finetune}")
    if args.calibration_size < 1:
        raise ValueError(f"--calibration-size must be >= 1, got {args.calibration_size}")
    if args.model != "minilm" and not Path(args.model).exists():
        raise ValueError(f"model {args.model!r} is neither 'minilm' nor an existing folder")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.address is not None:
        from pruneopt.solvers.executors import check_address

        if args.executor != "ray":
            raise ValueError("--address is the Ray cluster of --executor ray")
        check_address(args.address)
    if args.stream:
        return run_streamed(args)
    if args.executor is not None or args.address is not None:
        raise ValueError("--executor/--address run the solves of --stream; without it the "
                         "layers are masked in process")
    source = None if args.model == "minilm" else args.model
    check_output_folder(args.output, source)  # before any work
    if args.no_progress:
        _quiet_hub()
    sentences = _sentences(args.calibration, args.calibration_size)
    loaded = load_model(args.model)
    batches = loaded.batches(sentences, args.batch_size)
    pruned, report = sparsify(
        loaded.model, args.n, args.m, transposable=args.transposable, score=args.scores,
        reconstruct=args.reconstruct, method=args.method, calibration=batches,
        damping=args.damping, finetune=args.finetune, lr=args.lr, include=args.include,
        mask_solver=args.solver, seed=args.seed, progress=not args.no_progress)
    info = report.as_dict()
    info.update(model=args.model, calibration_sentences=len(sentences))
    out = save_model(loaded, pruned, args.output,
                     extra={"sparsify_report.json": json.dumps(info, indent=1).encode()})
    done = [r for r in report.layers if r.skipped is None]
    after = [r.error_after for r in done if r.error_after is not None]
    mean_after = f", mean layer error {sum(after) / len(after):.4f}" if after else ""
    print(f"{'transposable ' if args.transposable else ''}{args.n}:{args.m}: {len(done)} layers "
          f"({len(report.layers) - len(done)} skipped), scores {args.scores}"
          f"{', reconstructed' if args.reconstruct else ''}{mean_after}; "
          f"{report.seconds:.1f} s -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sparsify", help="a model folder in, an N:M-sparse model folder out",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL",
                   help="'minilm' or a sentence-transformers / Hugging Face model folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="new (or empty) folder for the sparse model and its report")
    p.add_argument("--n", type=int, default=2, help="weights kept per group (default 2)")
    p.add_argument("--m", type=int, default=4, help="group size (default 4)")
    p.add_argument("--transposable", action="store_true", default=True,
                   help="W and W^T both N:M (the default)")
    p.add_argument("--no-transposable", dest="transposable", action="store_false",
                   help="plain N:M along the input dimension")
    p.add_argument("--scores", choices=("magnitude", "wanda", "obs"), default="wanda",
                   help="what the exact mask keeps most of (default wanda)")
    p.add_argument("--reconstruct", action="store_true", default=True,
                   help="refit the kept weights on the calibration data (the default)")
    p.add_argument("--no-reconstruct", dest="reconstruct", action="store_false",
                   help="masks only")
    p.add_argument("--method", choices=("mask-refit", "sparsegpt"), default="mask-refit",
                   help="exact mask then exact refit (default), or SparseGPT's joint update")
    p.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                   help="distillation steps with the masks held (default 0: off)")
    p.add_argument("--lr", type=float, default=1e-4,
                   help="fine-tune learning rate (default 1e-4)")
    p.add_argument("--calibration", default=None, metavar="FILE.txt",
                   help="calibration text, one sentence per line (default: standard-library "
                        "docstrings)")
    p.add_argument("--calibration-size", type=int, default=512, metavar="N",
                   help="calibration sentences used (default 512)")
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch size")
    p.add_argument("--damping", type=float, default=DAMPING,
                   help=f"ridge, as a fraction of mean(diag X^T X) (default {DAMPING})")
    p.add_argument("--include", action="append", default=None, metavar="GLOB",
                   help="layers to mask (fnmatch on module names; default: every Linear "
                        "but embeddings, pooler and heads)")
    p.add_argument("--solver", default=None, help="N:M mask solver (default: exact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", action="store_true",
                   help="read and write the safetensors weights tensor by tensor (any size; "
                        "needs --scores magnitude --no-reconstruct)")
    p.add_argument("--executor", choices=("processes", "ray"), default=None,
                   help="with --stream: solve the masks in a process pool or on Ray")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker count of --executor (default: the CPUs available)")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="with --executor ray: the cluster, as ray.init takes it")
    add_progress(p)
    p.set_defaults(func=run)
