"""Benchmark: transposable N:M mask solvers, time and kept score vs the exact optimum.

    python benchmarks/nm_masks.py                 # 2:4 and 4:8 on 1024^2 and 4096^2
    python benchmarks/nm_masks.py --sizes 1024    # quicker

Scores are |W| for W with i.i.d. standard normal entries (seed 0). Every solver runs through
``pruneopt.solve``; the kept-score ratio is its objective over the exact optimum ("flow").
Slow reference solvers (networkx per block, Pyomo, HiGHS/SciPy on the largest matrix) are run
on the first block rows only and their time is scaled to the whole matrix (marked ~).
Peak memory of the default solver is measured with tracemalloc (NumPy reports to it).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import pruneopt
from pruneopt.formulations import TransposableNM

# largest number of blocks each solver is run on in full; beyond it, a slice, scaled
FULL_LIMIT = {"networkx": 2048, "pyomo": 2048, "highs": 8192, "scipy": 8192}


LAST_INFO: dict = {}


def run(problem: TransposableNM, solver: str) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    sol = pruneopt.solve(problem, solver=solver)
    LAST_INFO.clear()
    LAST_INFO.update(sol.info)
    return time.perf_counter() - t0, sol.objective, sol.status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--nm", nargs="+", default=["2:4", "4:8"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    print("| matrix | n:m | solver | seconds | kept score / optimum | status | note |")
    print("|---|---|---|---|---|---|---|")

    def emit(r):
        rows.append(r)
        print(f"| {r[0]}^2 | {r[1]} | " + " | ".join(str(c) for c in r[2:]) + " |", flush=True)

    for size in args.sizes:
        w = np.abs(np.random.default_rng(args.seed).standard_normal((size, size)))
        for nm in args.nm:
            n, m = map(int, nm.split(":"))
            full = TransposableNM(w, n, m)
            default = pruneopt.solvers.get_solver(full, None).name
            tracemalloc.start()
            t_def, opt, _ = run(full, default)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            t_flow, opt_flow, _ = run(full, "flow")
            assert abs(opt_flow - opt) <= 1e-9 * opt
            times = {}
            for solver in pruneopt.available(full):
                limit = FULL_LIMIT.get(solver)
                if solver == default:
                    t, obj, status = t_def, opt, "optimal"
                    note = f"default; peak {peak:.0f} MiB"
                elif limit is not None and full.num_blocks > limit:
                    block_rows = max(1, limit // (size // m))
                    part = TransposableNM(w[: block_rows * m], n, m)
                    t, obj, status = run(part, solver)
                    ref = pruneopt.solve(part, solver="flow").objective
                    t *= full.num_blocks / part.num_blocks
                    ratio = obj / ref
                    times[solver] = t
                    emit((size, nm, solver, f"~{t:.2f}", f"{ratio:.6f}", status,
                                 f"timed on {part.num_blocks} blocks, scaled"))
                    continue
                else:
                    t, obj, status = run(full, solver)
                    note = ""
                    if solver == "ortools":  # the flow alone, without our optimality check
                        times["ortools (flow only)"] = LAST_INFO["seconds_without_check"]
                        note = f"{LAST_INFO['seconds_without_check']:.3f} s without the check"
                times[solver] = t
                emit((size, nm, solver, f"{t:.3f}", f"{obj / opt:.6f}", status, note))
            for solver in ("ortools", "ortools (flow only)", "networkx"):
                if solver in times:
                    emit((size, nm, f"speed-up of {default} vs {solver}", "",
                                 f"{times[solver] / t_def:.1f}x", "", "same run"))


if __name__ == "__main__":
    main()
