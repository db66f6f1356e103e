"""Benchmark: the entropic OT solver for transposable N:M masks against a plain TSENOR-style
entropic OT + Dykstra, the greedy, the exact default and OR-Tools, in one process.

    python benchmarks/nm_entropic.py                     # 1024^2, 2:4 4:8 8:16 16:32, both modes
    python benchmarks/nm_entropic.py --sizes --large 4096  # only 4096^2 at 8:16, 1 repeat
    python benchmarks/nm_entropic.py --sizes 256 --repeats 1  # a quick look

Scores ``s = |W|``, W i.i.d. standard normal (``--seed``). Peers, each timed from the score
matrix to the mask, in turn within each repeat:

- ``floor``: ``np.abs(W).sum()``, one read of the matrix;
- ``tsenor plain``: entropic OT + Dykstra as a user writes it from the TSENOR paper, in NumPy
  over all blocks at once (:func:`tsenor_plain`: ``X = exp((w / max - 1) / tau)``, then
  ``--plain-iters`` rounds of row scaling to n, column scaling to n and the capped
  projection ``min(X, 1)`` with its Dykstra correction; rounding: the greedy on X). Its mask
  keeps at most n per line (valid "at most"); for "exactly" the blocks it leaves short are
  counted;
- ``entropic`` (``pruneopt.solve(..., solver="entropic")``, problem construction included);
- ``entropic torch cpu``: :func:`~pruneopt.solvers.nm_entropic.entropic_blocks_torch` on a
  float64 CPU tensor of the blocks (``--threads`` torch threads), mask unblocked (at the
  ``--large`` sizes only with ``--large-torch``);
- ``greedy``, the exact default (``solver=None``) and ``ortools``, through ``pruneopt.solve``.

Kept score is over the exact default's proven optimum; ``bound - opt`` is the entropic
solver's Lagrangian bound over the optimum, minus 1. Times: median [min, max] over the
repeats; ratios are taken within each repeat. Prints markdown; ``--out FILE`` also writes
it to a new file (never over a committed one).
"""

from __future__ import annotations

import argparse
import os

import _common
import numpy as np
import torch

import pruneopt
from pruneopt.formulations import TransposableNM
from pruneopt.formulations.nm import from_blocks, to_blocks
from pruneopt.solvers.nm_entropic import entropic_blocks_torch


def tsenor_plain(s: np.ndarray, n: int, m: int, tau: float = 0.01,
                 iters: int = 100) -> np.ndarray:
    """Entropic OT + Dykstra (TSENOR-style), written plainly: a mask with at most n per line."""
    b = to_blocks(s, m)
    w = b / np.maximum(b.max(axis=(1, 2), keepdims=True), 1e-300)
    X = np.exp((w - 1.0) / tau)
    Q = np.ones_like(X)
    for _ in range(iters):
        X *= n / np.maximum(X.sum(axis=2, keepdims=True), 1e-300)  # rows sum to n
        X *= n / np.maximum(X.sum(axis=1, keepdims=True), 1e-300)  # columns sum to n
        Y = X * Q
        X = np.minimum(Y, 1.0)  # capacity x <= 1, with Dykstra's correction Q
        Q = Y / np.maximum(X, 1e-300)
    nb = b.shape[0]
    order = np.argsort(-X.reshape(nb, -1), axis=1)  # greedy: largest X first
    rowc = np.zeros((nb, m), dtype=np.int64)
    colc = np.zeros((nb, m), dtype=np.int64)
    x = np.zeros((nb, m * m), dtype=bool)
    ids = np.arange(nb)
    for k in range(m * m):
        i, j = order[:, k] // m, order[:, k] % m
        take = (rowc[ids, i] < n) & (colc[ids, j] < n)
        x[ids, order[:, k]] = take
        rowc[ids, i] += take
        colc[ids, j] += take
    return from_blocks(x.reshape(nb, m, m), s.shape, m)


def entropic_torch(s: np.ndarray, n: int, m: int, exactly: bool) -> np.ndarray:
    blocks = torch.as_tensor(to_blocks(s, m))
    return from_blocks(entropic_blocks_torch(blocks, n, exactly).numpy(), s.shape, m)


timed, fmt_r = _common.timed, _common.fmt_ratio


def fmt_t(v: list[float]) -> str:
    return _common.fmt_seconds(v, 4)


def bench_case(out, s, n, m, exactly, repeats, plain_iters, torch_too=True):
    """One (matrix, n:m, mode): every peer ``repeats`` times in turn; the times."""
    def solve(name):
        return lambda: pruneopt.solve(TransposableNM(s, n, m, exactly=exactly), solver=name)

    default = pruneopt.solvers.get_solver(TransposableNM(s[:m, :m], n, m, exactly=exactly),
                                          None).name
    peers = {"floor": lambda: np.abs(s).sum(),
             "tsenor plain": lambda: tsenor_plain(s, n, m, iters=plain_iters),
             "entropic": solve("entropic"),
             "entropic torch cpu": lambda: entropic_torch(s, n, m, exactly),
             "greedy": solve("greedy"),
             f"default ({default})": solve(None),
             "ortools": solve("ortools")}
    if not torch_too:
        del peers["entropic torch cpu"]
    small = s[: 2 * m, : 2 * m]  # warm-up (imports, compilation), not timed
    tsenor_plain(small, n, m, iters=2)
    if torch_too:
        entropic_torch(small, n, m, exactly)
    for name in ("entropic", "greedy", None, "ortools"):
        pruneopt.solve(TransposableNM(small, n, m, exactly=exactly), solver=name)
    times = {k: [] for k in peers}
    answers = {}
    for _ in range(repeats):
        for k, f in peers.items():
            t, a = timed(f)
            times[k].append(t)
            answers.setdefault(k, a)
    problem = TransposableNM(s, n, m, exactly=exactly)
    best = answers[f"default ({default})"]
    assert best.status == "optimal"
    opt = best.objective
    base = times[f"default ({default})"]
    mode = "exactly" if exactly else "at most"
    for k in peers:
        a = answers[k]
        note = ""
        if k == "floor":
            kept, status = "-", "-"
        elif isinstance(a, np.ndarray):
            status = "(no proof)"
            if k == "tsenor plain" and exactly:
                short = int((to_blocks(a, m).sum(axis=2) < n).any(axis=1).sum())
                note = f"{short} of {problem.num_blocks} blocks short of n (invalid exactly)"
            else:
                problem.check(a)
            kept = f"{problem.objective(a) / opt:.5f}"
        else:
            kept, status = f"{a.objective / opt:.5f}", a.status
            if k == "entropic":
                note = (f"bound / opt - 1 = {a.bound / opt - 1:.1e}; "
                        f"{a.info['sweeps_per_block']:.1f} sweeps per block")
        ratio = [t / b for t, b in zip(times[k], base, strict=True)]
        out(f"| {s.shape[0]}^2 | {n}:{m} | {mode} | {k} | {fmt_t(times[k])} | {fmt_r(ratio)} | "
            f"{kept} | {status} | {note} |")
    times["default"] = base
    return times


def summarize(out, summary):
    def r(t, a, b):
        return fmt_r([x / y for x, y in zip(t[a], t[b], strict=True)])

    out("\nSpeed-ups within each repeat (B's time / A's time), median [min, max]:\n")
    out("| matrix | n:m | mode | entropic vs default | entropic vs ortools | entropic vs tsenor "
        "plain | entropic vs greedy | entropic / floor |")
    out("|---|---|---|---|---|---|---|---|")
    for size, nm, mode, t in summary:
        floor = [x / y for x, y in zip(t["entropic"], t["floor"], strict=True)]
        out(f"| {size}^2 | {nm} | {mode} | {r(t, 'default', 'entropic')} | "
            f"{r(t, 'ortools', 'entropic')} | {r(t, 'tsenor plain', 'entropic')} | "
            f"{r(t, 'greedy', 'entropic')} | {np.median(floor):.0f}x |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1024])
    ap.add_argument("--nm", nargs="+", default=["2:4", "4:8", "8:16", "16:32"])
    ap.add_argument("--large", type=int, nargs="*", default=[],
                    help="larger matrices, run for --large-nm only")
    ap.add_argument("--large-nm", nargs="+", default=["8:16"])
    ap.add_argument("--modes", nargs="+", choices=["at-most", "exactly"],
                    default=["at-most", "exactly"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-repeats", type=int, default=1)
    ap.add_argument("--large-torch", action="store_true",
                    help="the torch CPU peer at the --large sizes too (slow: ~20x entropic)")
    ap.add_argument("--plain-iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", help="also write the markdown to this new file")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    torch.set_num_threads(args.threads)
    out = _common.Tee()
    import numba

    out(f"{_common.machine()}; numpy {np.__version__}, numba {numba.__version__}, torch "
        f"{torch.__version__} ({args.threads} thread(s)); pruneopt from {pruneopt.__file__}; "
        f"scores |N(0,1)|, seed {args.seed}; tsenor plain: tau 0.01, {args.plain_iters} "
        f"iterations")
    out("\n| matrix | n:m | mode | solver | seconds: median [min, max] | time / default: "
        "median [min, max] | kept / optimum | status | note |")
    out("|---|---|---|---|---|---|---|---|---|")
    summary = []
    runs = [(size, args.nm, args.repeats, True) for size in args.sizes]
    runs += [(size, args.large_nm, args.large_repeats, args.large_torch) for size in args.large]
    for size, nm_list, repeats, torch_too in runs:
        s = np.abs(np.random.default_rng(args.seed).standard_normal((size, size)))
        for nm in nm_list:
            n, m = map(int, nm.split(":"))
            for mode in args.modes:
                t = bench_case(out, s, n, m, mode == "exactly", repeats, args.plain_iters,
                               torch_too)
                summary.append((size, nm, mode.replace("-", " "), t))
    summarize(out, summary)
    if hasattr(os, "getloadavg"):
        out(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    out.save(args.out)


if __name__ == "__main__":
    main()
