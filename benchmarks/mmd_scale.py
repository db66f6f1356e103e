"""MMD selection at scale: ``lowrank`` against exact kernel herding, n = 10k .. 1M.

Instance (seeded): source n points ~ N(0, I_64), target m points ~ N(0.3, 0.8^2 I_64),
keep = m = min(n / 10, 10,000) (at 1M: keep 10k of 1M points matching a 10k target; the
exact re-scoring of a 100k kept set against a 100k target alone would be 3e10 kernel
evaluations, beyond the 60 s budget on this machine), RBF kernel with the median bandwidth.

The peer is exact kernel herding written plainly in numpy (:func:`herding`): greedy forward
selection that adds, at each step, the source point giving the smallest exact MMD^2 of the
kept set, with the kernel rows computed on demand (n (m + k) kernel evaluations). It runs on
one BLAS thread (on this shared machine the default threads made it 4-10x slower; the faster
is the fair peer). Where it would take too long (``--herding-max``), its two loops are timed
on a prefix (the first ``PREFIX_ROWS`` rows of the target means, the first
``PREFIX_STEPS`` steps) and scaled by the exact operation count (linear in rows and steps):
marked ~.

Per size and repeat, herding and ``pruneopt.solve(problem, solver="lowrank")`` run one after
the other in this process, each on a freshly built problem. Columns: the solver's seconds
(``sol.seconds``), the wall time of the solve call including the exact re-scoring of the
answer by ``problem.objective``, herding's seconds and herding + the exact MMD^2 of its answer
(the like-for-like pair), the ratios (median over repeats, range), and MMD^2 of both.
Exponents: the log-log slope of time against n. ``--rss N`` runs one lowrank solve at size N
in a fresh process and prints its time and peak RSS (``resource.getrusage``, input included);
``--previous COMMIT`` compares with the ``lowrank`` of an earlier commit instead.

    nice python benchmarks/mmd_scale.py
    nice python benchmarks/mmd_scale.py --rss 1000000
    nice python benchmarks/mmd_scale.py --previous b1d5ec0 --sizes 10000 30000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import _common
import numpy as np

import pruneopt  # noqa: E402
from pruneopt.formulations import MMDSelection  # noqa: E402

SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
DIM = 64
PREFIX_ROWS = 20_000
PREFIX_STEPS = 200


def instance(n: int, seed: int = 0, dim: int = DIM) -> tuple[np.ndarray, np.ndarray, int]:
    """(source, target, keep) of the benchmark at size n."""
    rng = np.random.default_rng(seed)
    m = keep = min(n // 10, 10_000)
    source = rng.standard_normal((n, dim))
    target = rng.standard_normal((m, dim))
    target *= 0.8
    target += 0.3
    return source, target, keep


def herding(S: np.ndarray, T: np.ndarray, k: int, bandwidth: float, *, block: int = 2048,
            steps: int | None = None) -> np.ndarray:
    """Exact kernel herding: k greedy steps, each adding the source point that minimizes the
    exact MMD^2 of the kept set (RBF kernel). ``steps``: stop early (timing only)."""
    g = 1.0 / (2.0 * bandwidth * bandwidth)
    sqS = np.einsum("ij,ij->i", S, S)
    sqT = np.einsum("ij,ij->i", T, T)
    n = len(S)
    c = np.empty(n)  # c_j = mean_t k(s_j, t)
    for a in range(0, n, block):
        d2 = sqS[a : a + block, None] + sqT[None, :] - 2.0 * S[a : a + block] @ T.T
        c[a : a + block] = np.exp(-g * np.maximum(d2, 0.0)).mean(1)
    acc = np.zeros(n)  # acc_j = sum_{i kept} k(s_j, s_i)
    taken = np.zeros(n, dtype=bool)
    kept = []
    for t in range(k if steps is None else steps):
        # MMD^2 after adding j, up to terms equal for every j, times (t + 1)
        score = (2.0 * acc + 1.0) / (t + 1) - 2.0 * c
        score[taken] = np.inf
        j = int(np.argmin(score))
        taken[j] = True
        kept.append(j)
        acc += np.exp(-g * np.maximum(sqS + sqS[j] - 2.0 * (S @ S[j]), 0.0))
    return np.sort(np.asarray(kept, dtype=np.int64))


def herding_estimate(S: np.ndarray, T: np.ndarray, k: int, bandwidth: float) -> float:
    """Herding's seconds from its loops timed on a prefix, scaled by the operation count."""
    rows = min(PREFIX_ROWS, len(S))
    t0 = time.perf_counter()
    herding(S[:rows], T, 0, bandwidth, steps=0)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    herding(S, T[:1], k, bandwidth, steps=PREFIX_STEPS)  # one target row: the steps dominate
    t_steps = time.perf_counter() - t0
    return t_rows * len(S) / rows + t_steps * k / PREFIX_STEPS


def one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def measure(n: int, repeats: int, herding_max: int, dim: int = DIM) -> dict:
    """Herding and lowrank on the size-n instance, ``repeats`` times, alternated."""
    S, T, keep = instance(n, dim=dim)
    bw = MMDSelection(S, T, keep).bandwidth
    rows = {"lr_solve": [], "lr_wall": [], "hd": [], "hd_obj": []}
    out: dict = {"n": n, "m": len(T), "keep": keep}
    for _ in range(repeats):
        if n <= herding_max:
            with one_blas_thread():
                t0 = time.perf_counter()
                idx = herding(S, T, keep, bw)
                rows["hd"].append(time.perf_counter() - t0)
            p = MMDSelection(S, T, keep, bandwidth=bw)
            t0 = time.perf_counter()
            out["hd_mmd2"] = p.objective(idx)
            rows["hd_obj"].append(rows["hd"][-1] + time.perf_counter() - t0)
        else:
            with one_blas_thread():
                rows["hd"].append(herding_estimate(S, T, keep, bw))
            out["hd_mmd2"] = None
        p = MMDSelection(S, T, keep, bandwidth=bw)
        t0 = time.perf_counter()
        sol = pruneopt.solve(p, solver="lowrank")
        rows["lr_wall"].append(time.perf_counter() - t0)
        rows["lr_solve"].append(sol.seconds)
        out["lr_mmd2"] = sol.objective
        out["info"] = sol.info
    if n > herding_max:
        rows["hd_obj"] = []
    out.update(rows)
    return out


def med(v: list[float]) -> float:
    return float(np.median(v))


def ratio(num: list[float], den: list[float]) -> str:
    r = np.asarray(num) / np.asarray(den)
    return f"{np.median(r):.1f} ({r.min():.1f}-{r.max():.1f})"


def table(results: list[dict]) -> str:
    lines = [
        "| n | keep = m | lowrank s | lowrank + re-score s | herding s | herding + MMD^2 s "
        "| speed-up (solver) | speed-up (with MMD^2) | lowrank MMD^2 | herding MMD^2 "
        "| lowrank / herding |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        est = r["hd_mmd2"] is None
        mark = "~" if est else ""
        hd_obj = f"{med(r['hd_obj']):.2f}" if r["hd_obj"] else "-"
        with_obj = ratio(r["hd_obj"], r["lr_wall"]) if r["hd_obj"] else "-"
        hq = "-" if est else f"{r['hd_mmd2']:.7g}"
        rel = "-" if est else f"{r['lr_mmd2'] / r['hd_mmd2']:.6f}"
        lines.append(
            f"| {r['n']:,} | {r['keep']:,} | {med(r['lr_solve']):.2f} | {med(r['lr_wall']):.2f} "
            f"| {mark}{med(r['hd']):.2f} | {hd_obj} | {mark}{ratio(r['hd'], r['lr_solve'])} "
            f"| {with_obj} | {r['lr_mmd2']:.7g} | {hq} | {rel} |")
    return "\n".join(lines)


def exponents(results: list[dict]) -> str:
    if len(results) < 2:
        return ""
    ns = np.log([r["n"] for r in results])
    out = []
    for key, name in (("lr_solve", "lowrank"), ("hd", "herding")):
        t = np.log([med(r[key]) for r in results])
        slope = np.diff(t) / np.diff(ns)
        out.append(f"{name}: " + ", ".join(
            f"{results[i]['n']:,}->{results[i + 1]['n']:,}: n^{s:.2f}"
            for i, s in enumerate(slope)))
    return "Time exponents (log-log slope between sizes) - " + "; ".join(out)


def previous_solver(commit: str):
    """The ``lowrank`` solver function of an earlier commit (``git show``), loaded beside the
    current one without registering it."""
    src = subprocess.run(["git", "-C", str(_common.ROOT), "show",
                          f"{commit}:solvers/mmd_lowrank.py"], capture_output=True, text=True,
                         check=True).stdout
    src = src.replace("from pruneopt.solvers.registry import Result, register",
                      "from pruneopt.solvers.registry import Result\n"
                      "register = lambda *a, **k: (lambda f: f)")
    ns: dict = {"__name__": f"lowrank_{commit}"}
    exec(compile(src, f"{commit}:solvers/mmd_lowrank.py", "exec"), ns)  # noqa: S102
    return ns["lowrank_solver"]


def against_previous(commit: str, sizes: list[int]) -> str:
    """The previous and the current lowrank on the same instances, in turn, one run each."""
    old = previous_solver(commit)
    lines = [f"| n | lowrank@{commit} s | lowrank s | speed-up | MMD^2 before | MMD^2 now "
             "| now / before |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        S, T, keep = instance(n)
        bw = MMDSelection(S, T, keep).bandwidth
        p = MMDSelection(S, T, keep, bandwidth=bw)
        t0 = time.perf_counter()
        res = old(p, None)
        t_old = time.perf_counter() - t0
        before = p.objective(res.decision)
        p = MMDSelection(S, T, keep, bandwidth=bw)
        sol = pruneopt.solve(p, solver="lowrank")
        lines.append(f"| {n:,} | {t_old:.2f} | {sol.seconds:.2f} | {t_old / sol.seconds:.1f} "
                     f"| {before:.7g} | {sol.objective:.7g} | {sol.objective / before:.5f} |")
    return "\n".join(lines)


def rss_child(n: int) -> None:
    """One lowrank solve at size n in this (fresh) process: JSON with seconds and peak RSS."""
    S, T, keep = instance(n)
    t0 = time.perf_counter()
    p = MMDSelection(S, T, keep)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = pruneopt.solve(p, solver="lowrank")
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, to MiB
    print(json.dumps({"n": n, "keep": keep, "m": len(T), "input_mib": (S.nbytes + T.nbytes) / 2**20,
                      "build_s": built, "solve_s": sol.seconds, "wall_s": wall,
                      "mmd2": sol.objective, "peak_rss_mib": rss, "info": sol.info}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--herding-max", type=int, default=30_000,
                    help="largest n at which herding runs in full (beyond: timed on a prefix)")
    ap.add_argument("--dim", type=int, default=DIM, help="feature dimension of the instance")
    ap.add_argument("--rss", type=int, default=None,
                    help="run one lowrank solve of this size in a fresh process; print RSS")
    ap.add_argument("--previous", default=None, metavar="COMMIT",
                    help="compare with the lowrank solver of this commit instead of herding")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        rss_child(args.child)
        return
    if args.rss is not None:
        warm = subprocess.run([sys.executable, str(Path(__file__)), "--child", "20000"],
                              capture_output=True, text=True, check=True)  # numba cache
        del warm
        out = subprocess.run([sys.executable, str(Path(__file__)), "--child", str(args.rss)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print("| n | keep = m | input MiB | build s | lowrank s | + re-score s | peak RSS MiB "
              "| MMD^2 |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {r['n']:,} | {r['keep']:,} | {r['input_mib']:.0f} | {r['build_s']:.1f} "
              f"| {r['solve_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} "
              f"| {r['mmd2']:.7g} |")
        print(f"\n{_common.machine()}; info {r['info']}")
        return
    S, T, keep = instance(2000)
    pruneopt.solve(MMDSelection(S, T, 200), solver="lowrank")  # compile / load numba cache
    print(f"{_common.machine()}; dimension {args.dim}\n")
    if args.previous is not None:
        print(against_previous(args.previous, args.sizes))
        return
    t0 = time.perf_counter()
    results = []
    for n in args.sizes:
        results.append(measure(n, args.repeats if n <= args.herding_max else 1,
                               args.herding_max, args.dim))
    print(table(results))
    print("\n" + exponents(results))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
