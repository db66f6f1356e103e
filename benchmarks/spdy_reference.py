"""Benchmark: our exact layer budget against the SPDY reference's own DP on its timing databases.

The SPDY reference code (Frantar & Alistarh 2022, github.com/IST-DASLab/spdy) ships timing
databases measured with DeepSparse (``timings/*.txt``: ResNet-18/34/50/101, YOLOv5s/m). They
are not ours to ship: fetch the repository elsewhere and pass its folders.

What the reference's DP is fed, mirrored from its ``spdy.py``/``database.py``: the budget is
``targettime = base / target - (base - prunable)``; the bucket width ``h = targettime /
dpbuckets`` (10,000 buckets); every level's time is made ``int(round(t / h))`` buckets (its
``__init__``); its search calls ``dp(costs)`` with ``costs[l][k] = coef[l] * (k / (K_l -
1))**2`` (its ``get_errors`` prior, times ``gen_costs``'s coefficients ``coef[l] ~ U(0, 1)``,
drawn as in its random initialisations). Its ``SPDY.dp`` is called directly (the method
itself, from the file given by ``--reference``, on an object holding the attributes its
``__init__`` sets; its ``modelutils`` import, torch/torchvision model helpers the DP does not
use, is stubbed). Ours: the same errors and budget as a
:class:`~pruneopt.formulations.LayerBudget` (:meth:`TimingTable.problem`), solved by
``pruneopt.solve(solver="dp")``, in the same process, call by call.

Per database and target (reachable ones only): our statuses and median seconds; the
reference's median seconds and the ratio ours / reference (median [range]); the reference's
budget use (its answer's true time / budget; median and max, %) and how many of its calls
exceed the budget; the gap ``(reference objective - optimum) / optimum`` (median and max over
the calls that are within budget; negative gaps are only possible over budget).

Three databases need ``read_spdy_timings(..., repair=True)`` (a duplicated dense line in the
YOLOv5 files, trailing names without levels in ``rn50_4block``); the repairs are counted.

Run:  python benchmarks/spdy_reference.py --timings DIR --reference DIR [--calls 100] [--out F]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from collections import Counter
from pathlib import Path

import _common
import numpy as np

import pruneopt
from pruneopt.adapters.timing_tables import TimingTable, read_spdy_timings

TARGETS = (1.5, 2.0, 2.5, 3.0)
BUCKETS = 10000


def load_reference(folder: Path):
    """The reference's ``SPDY`` class from ``folder/spdy.py`` (``modelutils`` stubbed)."""
    path = folder / "spdy.py"
    if not path.is_file():
        raise SystemExit(f"--reference {folder}: no spdy.py there (the IST-DASLab/spdy checkout)")
    sys.modules.setdefault("modelutils", types.ModuleType("modelutils"))
    spec = importlib.util.spec_from_file_location("spdy_reference_code", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SPDY


def reference_dp(SPDY, table: TimingTable, budget: float):
    """An object of the reference's class with what its ``__init__`` sets for ``dp``."""
    ref = SPDY.__new__(SPDY)
    ref.dpbuckets = BUCKETS
    ref.bucketsize = budget / BUCKETS
    ref.timings = [[int(round(float(t) / ref.bucketsize)) for t in row] for row in table.times]
    return ref


def prior(table: TimingTable) -> list[np.ndarray]:
    """The reference's error prior: level ``k`` of ``K`` errs ``(k / (K - 1))**2``."""
    return [(np.arange(t.size) / max(t.size - 1, 1)) ** 2 for t in table.times]


def run(table: TimingTable, SPDY, target: float, calls: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    base = prior(table)
    budget = table.budget(target)
    ref = reference_dp(SPDY, table, budget)
    stat, ours_s, ref_s, use, gaps, gaps_all, ratio = Counter(), [], [], [], [], [], []
    crashed = 0
    for _ in range(calls):
        coef = rng.uniform(0, 1, table.n_layers)
        errs = [c * e for c, e in zip(coef, base, strict=True)]
        t0 = time.perf_counter()
        sol = pruneopt.solve(table.problem(target, errs), solver="dp")
        ours = time.perf_counter() - t0
        costs = [[float(x) for x in e] for e in errs]
        t0 = time.perf_counter()
        try:
            lv = ref.dp(costs)
        except IndexError:  # its first layer indexes past the buckets when a level exceeds B
            crashed += 1
            continue
        theirs = time.perf_counter() - t0
        lv = np.asarray(lv)
        stat[sol.status] += 1
        ours_s.append(ours)
        ref_s.append(theirs)
        ratio.append(ours / theirs)
        t_ref = sum(float(t[k]) for t, k in zip(table.times, lv, strict=True))
        use.append(t_ref / budget)
        obj = float(sum(float(e[k]) for e, k in zip(errs, lv, strict=True)))
        gap = (obj - sol.objective) / sol.objective if sol.objective > 0 else 0.0
        gaps_all.append(gap)
        if t_ref <= budget * (1 + 1e-9):
            gaps.append(gap)
    use_a = np.asarray(use)
    return {"status": stat, "ours": ours_s, "ref": ref_s, "ratio": ratio, "use": use_a,
            "over": int((use_a > 1 + 1e-9).sum()), "n": len(use), "gaps": gaps,
            "gaps_all": gaps_all, "crashed": crashed}


def pct(v) -> str:
    return "-" if len(v) == 0 else f"{100 * float(np.median(v)):.2f} / {100 * float(np.max(v)):.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timings", required=True, type=Path, help="folder of the *.txt databases")
    ap.add_argument("--reference", required=True, type=Path,
                    help="folder holding the reference's spdy.py")
    ap.add_argument("--calls", type=int, default=100, help="DP calls per database and target")
    ap.add_argument("--targets", default=",".join(map(str, TARGETS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    SPDY = load_reference(args.reference)
    files = sorted(args.timings.glob("*.txt"))
    if not files:
        ap.error(f"--timings {args.timings}: no *.txt files")
    targets = [float(x) for x in args.targets.split(",")]
    pruneopt.solve(read_spdy_timings(files[0], repair=True).problem(  # compile the kernels
        1.5, prior(read_spdy_timings(files[0], repair=True))), solver="dp")
    out = [f"SPDY reference databases, {args.calls} DP calls per row (random coefficients "
           f"U(0,1) x the reference's (k/(K-1))^2 prior), {BUCKETS} buckets. "
           f"{_common.machine()}", "",
           "| database | layers x levels | target | ours: status | ours s (median) | "
           "ours / ref time | ref budget use % (median / max) | ref calls over budget | "
           "ref gap % within budget (median / max) |",
           "|---|---|---|---|---|---|---|---|---|"]
    totals = Counter()
    for f in files:
        table = read_spdy_timings(f, repair=True)
        fixes = len(table.meta["repairs"])
        kinds = sorted({t.size for t in table.times})
        shape = f"{table.n_layers} x {'/'.join(map(str, kinds))}" + (
            f" ({fixes} repairs)" if fixes else "")
        for tg in targets:
            if tg >= table.max_speedup():
                out.append(f"| {f.stem} | {shape} | {tg:g} | out of reach (max "
                           f"{table.max_speedup():.2f}x) | | | | | |")
                continue
            r = run(table, SPDY, tg, args.calls, args.seed)
            totals["rows"] += 1
            totals["calls"] += r["n"]
            totals["over"] += r["over"]
            totals["optimal"] += r["status"]["optimal"]
            totals["crashed"] += r["crashed"]
            st = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
            crash = f" ({r['crashed']} crashed)" if r["crashed"] else ""
            out.append(f"| {f.stem} | {shape} | {tg:g} | {st} | {np.median(r['ours']):.4f} | "
                       f"{_common.fmt_ratio(r['ratio'])} | {pct(r['use'])} | "
                       f"{r['over']} / {r['n']}{crash} | {pct(r['gaps'])} |")
    out += ["", f"In all: {totals['rows']} (database, target) rows, {totals['calls']} calls; ours "
            f"optimal in {totals['optimal']}; the reference over budget in {totals['over']} "
            f"({100 * totals['over'] / max(totals['calls'], 1):.1f}%)"
            + (f", crashed in {totals['crashed']}" if totals["crashed"] else "") + "."]
    text = "\n".join(out)
    print(text)
    if args.out:
        _common.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
