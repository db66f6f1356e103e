"""Benchmark: the exact 2:4 ``enumerate`` solver against its physical floor, as ratios.

    python benchmarks/nm_enumerate_floor.py                       # 1024^2, 4096^2, 8192^2
    python benchmarks/nm_enumerate_floor.py --sizes 1024 --repeats 5
    python benchmarks/nm_enumerate_floor.py --sizes 1024 --torch-flow   # flow vs flow-torch

In one process and in each repeat, on scores ``|N(0, 1)|`` (float64, R = C = size):

- **read**: one read of the matrix (``s.sum()``), the memory floor;
- **floor numpy / floor torch**: the bare float32 product of the blocks (already laid out
  as (blocks, 16) float32) with the K patterns, plus the argmax, in chunks of 4,096 blocks,
  written plainly as a user would (default threads); **... 1 thread**: the same with BLAS
  (torch: intra-op threads) limited to one thread (many small products: on a loaded
  machine threads only contend);
- **old float64**: the enumeration as it was before (float64 blocks, a blocks x K score
  table in chunks of 2^22 entries, argmax, patterns, unblock), written out here;
- **ours**: ``pruneopt.solve(TransposableNM(s, 2, 4))`` (the default, ``enumerate``),
  wall time including the formulation's feasibility check and re-scoring, and
  ``sol.seconds`` (the solver alone); **ours torch**: the same call on the scores as a
  float32 CPU tensor (the default is then ``enumerate-torch``, a bool tensor out).

Each time is divided by the floor of the same repeat (the fastest of the four floor
variants); the table gives the median [min, max] of those ratios, and the median seconds.
Prints markdown.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from _common import Tee, machine, refuse_overwrite, timed
from threadpoolctl import threadpool_limits

import pruneopt  # noqa: E402
from pruneopt.formulations import TransposableNM  # noqa: E402
from pruneopt.solvers.nm_enumerate import transposable_patterns  # noqa: E402

FLOOR_CHUNK = 4096


def floor_numpy(b32: np.ndarray, P: np.ndarray) -> np.ndarray:
    out = np.empty(len(b32), dtype=np.int64)
    for s in range(0, len(b32), FLOOR_CHUNK):
        out[s:s + FLOOR_CHUNK] = (b32[s:s + FLOOR_CHUNK] @ P).argmax(axis=1)
    return out


def floor_torch(b32: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    out = torch.empty(len(b32), dtype=torch.int64)
    for s in range(0, len(b32), FLOOR_CHUNK):
        out[s:s + FLOOR_CHUNK] = (b32[s:s + FLOOR_CHUNK] @ P).argmax(dim=1)
    return out


def old_float64(s: np.ndarray, pats: np.ndarray) -> np.ndarray:
    """The float64 enumeration of the previous release, written plainly."""
    R, C = s.shape
    w = np.maximum(s, 0.0).reshape(R // 4, 4, C // 4, 4).transpose(0, 2, 1, 3).reshape(-1, 4, 4)
    P = pats.reshape(len(pats), -1).astype(np.float64).T
    step = max(1, (1 << 22) // len(pats))
    x = np.empty(w.shape, dtype=bool)
    for a in range(0, len(w), step):
        c = w[a:a + step]
        x[a:a + step] = pats[(c.reshape(len(c), -1) @ P).argmax(axis=1)]
    mask = x.reshape(R // 4, C // 4, 4, 4).transpose(0, 2, 1, 3).reshape(R, C)
    return mask & (s > 0)


def solve_default(s: np.ndarray):
    return pruneopt.solve(TransposableNM(s, 2, 4))


def torch_flow(args, nms: list[str], out) -> None:
    """`flow-torch` / `flow` and torch-operations flow / `flow` (``flow_device``, what runs
    on accelerators, here on the CPU), ratios within a repeat, "at most" and exactly."""
    from pruneopt.solvers.nm_torch import cpu_threads
    from pruneopt.solvers.nm_torch_flow import flow_device

    def torch_ops(t, n, m, exactly):
        with cpu_threads(t):
            return flow_device(t, n, m, exactly)[0]

    out(f"flow-torch (float64 CPU tensor) against flow (NumPy); {machine()}\n")
    out("| size | n:m | mode | flow s | flow-torch s | flow-torch / flow: median [min, max] "
        "| torch ops s | torch ops / flow |")
    out("|---|---|---|---:|---:|---|---:|---|")
    for size in args.sizes:
        s = np.abs(np.random.default_rng(args.seed).standard_normal((size, size)))
        t = torch.from_numpy(s)
        for nm in nms:
            n, m = map(int, nm.split(":"))
            for exactly in (False, True):
                tf, tt, to = [], [], []
                for _ in range(args.repeats or 3):
                    a, x = timed(pruneopt.solve, TransposableNM(s, n, m, exactly=exactly),
                                 "flow")
                    b, y = timed(pruneopt.solve, TransposableNM(t, n, m, exactly=exactly),
                                 "flow-torch")
                    if abs(x.objective - y.objective) > 1e-9 * float(s.sum()):
                        raise RuntimeError(f"objectives differ: {x.objective}, {y.objective}")
                    c, z = timed(torch_ops, t, n, m, exactly)
                    if abs(float(s[z.numpy()].sum()) - x.objective) > 1e-9 * float(s.sum()):
                        raise RuntimeError("the torch-operations flow missed the optimum")
                    tf.append(a)
                    tt.append(b)
                    to.append(c)
                r = [b / a for a, b in zip(tf, tt, strict=True)]
                q = [c / a for a, c in zip(tf, to, strict=True)]
                out(f"| {size}^2 | {nm} | {'exactly' if exactly else 'at most'} | "
                    f"{statistics.median(tf):.3f} | {statistics.median(tt):.3f} | "
                    f"{statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}] | "
                    f"{statistics.median(to):.3f} | {statistics.median(q):.2f} "
                    f"[{min(q):.2f}, {max(q):.2f}] |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=0,
                    help="repeats per size (default: 5 at 1024^2, 3 at 4096^2, 2 beyond)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table here (a new file)")
    ap.add_argument("--torch-flow", nargs="*", default=None, metavar="N:M",
                    help="instead: time `flow` (NumPy) against `flow-torch` on the same "
                         "scores as a float64 CPU tensor, at these n:m (default 4:8 8:16)")
    args = ap.parse_args(argv)
    refuse_overwrite(ap.error, {"--out": args.out})
    out = Tee()
    if args.torch_flow is not None:
        torch_flow(args, args.torch_flow or ["4:8", "8:16"], out)
        out.save(args.out)
        return
    pats = transposable_patterns(2, 4, False)
    P = np.ascontiguousarray(pats.reshape(len(pats), -1).T, dtype=np.float32)
    Pt = torch.from_numpy(P)
    out(f"2:4 at most, {len(pats)} patterns; {machine()}; torch threads "
        f"{torch.get_num_threads()}\n")
    out("| size | method | seconds (median) | / floor: median [min, max] |")
    out("|---|---|---:|---|")
    warm = np.abs(np.random.default_rng(1).standard_normal((64, 64)))
    pruneopt.solve(TransposableNM(warm, 2, 4))  # compile / load the kernels
    for size in args.sizes:
        reps = args.repeats or (5 if size <= 1024 else 3 if size <= 4096 else 2)
        s = np.abs(np.random.default_rng(args.seed).standard_normal((size, size)))
        b32 = s.reshape(size // 4, 4, size // 4, 4).transpose(0, 2, 1, 3).reshape(-1, 16)
        b32 = np.ascontiguousarray(b32, dtype=np.float32)
        bt = torch.from_numpy(b32)
        st = torch.from_numpy(s.astype(np.float32))
        s32, total = st.double().numpy(), float(s.sum())
        times: dict[str, list[float]] = {}
        rescored = 0
        for _ in range(reps):
            row = {"read": timed(s.sum)[0],
                   "floor numpy": timed(floor_numpy, b32, P)[0]}
            with threadpool_limits(1, user_api="blas"):
                row["floor numpy 1 thread"] = timed(floor_numpy, b32, P)[0]
            row["floor torch"] = timed(floor_torch, bt, Pt)[0]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            row["floor torch 1 thread"] = timed(floor_torch, bt, Pt)[0]
            torch.set_num_threads(threads)
            t_old, m_old = timed(old_float64, s, pats)
            row["old float64"] = t_old
            t_ours, sol = timed(solve_default, s)
            row["ours: pruneopt.solve"] = t_ours
            row["ours: solver alone (sol.seconds)"] = sol.seconds
            rescored = sol.info["rescored_blocks"]
            t_torch, sol_t = timed(solve_default, st)
            row["ours torch: pruneopt.solve (float32 CPU tensor)"] = t_torch
            if abs(float(s32[sol_t.decision.numpy()].sum()) - sol_t.objective) > 1e-6 * total:
                raise RuntimeError("the torch answer's objective does not re-score")
            kept_old = float(s[m_old].sum())
            if abs(kept_old - sol.objective) > 1e-9 * float(s.sum()):
                raise RuntimeError(f"objectives differ: old {kept_old}, ours {sol.objective}")
            for k, v in row.items():
                times.setdefault(k, []).append(v)
        floors = [times[k] for k in times if k.startswith("floor")]
        floor = [min(f) for f in zip(*floors, strict=True)]  # the fastest floor, per repeat
        for k, ts in times.items():
            r = [t / f for t, f in zip(ts, floor, strict=True)]
            out(f"| {size}^2 | {k} | {statistics.median(ts):.4f} | "
                f"{statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}] |")
        out(f"| {size}^2 | (ours: blocks re-scored in float64) | {rescored} of "
            f"{(size // 4) ** 2} | |")
    out.save(args.out)


if __name__ == "__main__":
    main()
