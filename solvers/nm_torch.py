"""N:M solvers on torch tensors, on the tensor's device (CPU, CUDA, ...): shared helpers,
exact enumeration (``"enumerate-torch"``) and the top-n of :class:`NMMask` (``"topk-torch"``).

When the scores given to :class:`TransposableNM` or :class:`NMMask` are a torch tensor, the
problem keeps it (``problem.tensor``) and the solvers named ``*-torch`` (the default for
such problems, :mod:`pruneopt.solvers.defaults`) work on it where it lives and answer with a
bool tensor on the same device. Given NumPy scores they run on the CPU and answer with a
NumPy mask, so the NumPy path and its tests are the reference for both. torch is imported
lazily, inside the solvers.

``"enumerate-torch"`` is the algorithm of ``"enumerate"`` (:mod:`~pruneopt.solvers.nm_enumerate`,
whose docstring derives the bound). On the CPU it runs that module's numba kernels on the
tensor's own memory; elsewhere (:func:`enumerate_device`, also callable on the CPU) torch
operations do it: the K allowed patterns scored by one float32 matrix product per band of
block rows, the argmax proven by the float32 error bound
``E_b = (n m + 1) u A_b + 4 n m 2^-126`` (``A_b = sum |block b|``), near-ties (another
pattern within ``2 E_b``) re-scored in float64 (on the CPU for devices without float64).
``u`` follows torch's float32 matmul precision: 2^-24 at ``"highest"`` (torch's default),
2^-11 at ``"high"`` or with TF32 allowed on CUDA, 2^-8 at ``"medium"`` (bfloat16): a lower
precision only re-scores more blocks, never loses exactness. The threshold test runs in
float32: ``A_b`` summed in float32 (under-estimated by at most ``17 u A_b``) and the test's
own roundings are covered by scoring with ``(n m + 6) u`` instead of ``(n m + 1) u``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pruneopt.formulations.nm import NMMask, TransposableNM
from pruneopt.solvers.nm_enumerate import (
    PROOF,
    TINY,
    UNIT,
    enumerable,
    enumerate_array,
    power_of_two_scale,
    transposable_patterns,
)
from pruneopt.solvers.registry import Result, register

#: blocks scored at once by ``enumerate-torch``: on the CPU a cache-sized table, on an
#: accelerator enough work per kernel launch
CPU_CHUNK_BLOCKS = 4096
DEVICE_CHUNK_BLOCKS = 1 << 18


def problem_tensor(problem: TransposableNM | NMMask) -> tuple[Any, bool]:
    """``(scores tensor, numpy_out)``: the problem's tensor (numpy_out False), or its NumPy
    scores viewed as a CPU tensor (numpy_out True: answer with a NumPy mask)."""
    import torch

    if problem.tensor is not None:
        return problem.tensor, False
    return torch.from_numpy(problem.scores), True


@contextmanager
def cpu_threads(t: Any, threads: int = 1) -> Iterator[None]:
    """On the CPU, torch's intra-op threads limited to ``threads`` while the block limited
    (restored after): the solvers' work is many small operations per chunk, where threads
    only contend (on this 2-core machine under load, 100-300x slower with 2 threads)."""
    import torch

    if t.device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def answer(mask: Any, numpy_out: bool) -> Any:
    """The mask as the problem's caller gave the scores: a NumPy array or the tensor."""
    return mask.cpu().numpy() if numpy_out else mask


def exact_dtype(t: Any) -> Any:
    """float64 where the device has it (for sums that must not round), else float32."""
    import torch

    return torch.float32 if t.device.type == "mps" else torch.float64


def to_blocks_t(a: Any, m: int) -> Any:
    """(R, C) tensor -> (R/m * C/m, m, m) blocks in row-major block order (a copy)."""
    R, C = a.shape
    return a.reshape(R // m, m, C // m, m).permute(0, 2, 1, 3).reshape(-1, m, m)


def from_blocks_t(b: Any, shape: tuple[int, int], m: int) -> Any:
    """Inverse of :func:`to_blocks_t`."""
    R, C = shape
    return b.reshape(R // m, C // m, m, m).permute(0, 2, 1, 3).reshape(R, C)


def row_col_bound_t(w: Any, n: int, exactly: bool) -> float:
    """The row/column relaxation bound of blocks ``w`` (B, m, m): the better of each block
    row keeping its top-n and each block column keeping its top-n (positive parts for "at
    most"), summed in float64."""
    w = w.to(exact_dtype(w))
    if not exactly:
        w = w.clamp_min(0)
    top_r = w.topk(n, dim=2).values.sum()
    top_c = w.topk(n, dim=1).values.sum()
    return float(min(top_r, top_c))


def matmul_unit(device: Any) -> float:
    """The unit roundoff of torch's float32 matrix products on ``device`` under the current
    precision setting (module docstring)."""
    import torch

    unit = {"highest": UNIT, "high": 2.0**-11, "medium": 2.0**-8}.get(
        torch.get_float32_matmul_precision(), 2.0**-8)
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        unit = max(unit, 2.0**-11)
    return unit


def _chunk_rows(R: int, C: int, m: int, device: Any) -> int:
    per = CPU_CHUNK_BLOCKS if device.type == "cpu" else DEVICE_CHUNK_BLOCKS
    return max(1, per // max(1, C // m)) * m


def enumerate_blocks_t(band: Any, pats: Any, P32: Any, n: int, m: int, scale: float,
                       unit: float, clip: bool) -> tuple[Any, int]:
    """Best pattern of every block of ``band`` (h, C) tensor rows: ``(mask rows, number of
    blocks re-scored in float64)`` (module docstring)."""
    import torch

    k_pats = pats.shape[0]
    b = to_blocks_t(band, m).reshape(-1, m * m)
    if clip:
        b = b.clamp_min(0)
    w32 = (b.to(exact_dtype(b)) * scale).float()
    S = w32 @ P32  # (blocks, K) float32
    vmax, idx = S.max(dim=1)
    A = w32.abs().sum(dim=1)
    E = (n * m + 6) * unit * A + 4 * n * m * TINY
    near = (S >= (vmax - 2 * E)[:, None]).sum(dim=1) > 1
    rescored = int(near.sum())
    if rescored:
        rows = near.nonzero().squeeze(1)
        w64 = b[rows].to(exact_dtype(b))
        if w64.dtype != torch.float64:  # no float64 on this device: re-score on the CPU
            w64 = b[rows].cpu().double()
        P64 = pats.reshape(k_pats, -1).T.to(device=w64.device, dtype=torch.float64)
        idx[rows] = (w64 @ P64).argmax(dim=1).to(idx.device)
    x = pats.reshape(k_pats, -1)[idx]
    if clip:
        x = x & (b > 0)
    return from_blocks_t(x, tuple(band.shape), m), rescored


@register("enumerate-torch", TransposableNM, guarantee="exact", requires=("torch",),
          package="torch", accepts=enumerable)
def enumerate_torch(problem: TransposableNM, time_limit: float | None) -> Result:
    """``enumerate`` on the scores' torch device: float32 pattern scores by matrix products,
    near-ties re-scored in float64; a bool tensor out for tensor scores. On the CPU it runs
    the NumPy/numba enumeration on the tensor's own memory (no copy for float32 and
    float64; half types are widened to float32, exactly)."""
    import torch

    from pruneopt.solvers.nm_torch_greedy import greedy_mask_t

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    t, numpy_out = problem_tensor(problem)
    n, m, ex = problem.n, problem.m, problem.exactly
    dev = t.device
    K = len(transposable_patterns(n, m, ex))
    info: dict[str, Any] = {"patterns": K, "device": str(dev)}
    with cpu_threads(t):
        if dev.type == "cpu":
            a = t if t.dtype in (torch.float32, torch.float64) else t.float()
            mask, rescored, stopped_at = enumerate_array(a.numpy(), n, m, ex, deadline)
            out = torch.from_numpy(mask)
            info["matmul_unit"] = UNIT
        else:
            out, rescored, stopped_at = enumerate_device(t, n, m, ex, deadline)
            info["matmul_unit"] = matmul_unit(dev)
        info["rescored_blocks"] = rescored
        if stopped_at is not None:  # the time limit passed: the greedy fills the rest
            xb = to_blocks_t(out, m)
            xb[stopped_at:] = greedy_mask_t(to_blocks_t(t, m)[stopped_at:], n, ex)
            out = from_blocks_t(xb, problem.shape, m)
            info["blocks_enumerated"] = stopped_at
            return Result(answer(out, numpy_out), "time_limit",
                          row_col_bound_t(to_blocks_t(t, m), n, ex), info)
    return Result(answer(out, numpy_out), "optimal", None, info, proof=PROOF)


def enumerate_device(t: Any, n: int, m: int, exactly: bool,
                     deadline: float | None = None) -> tuple[Any, int, int | None]:
    """The enumeration in torch operations on ``t``'s device, a band of block rows at a
    time: ``(mask tensor, blocks re-scored in float64, stopped_at)`` as for
    :func:`~pruneopt.solvers.nm_enumerate.enumerate_array`."""
    import torch

    dev = t.device
    pats = torch.from_numpy(transposable_patterns(n, m, exactly)).to(dev)
    P32 = pats.reshape(len(pats), -1).T.float().contiguous()
    top = float(t.max()) if not exactly else float(t.abs().max())
    scale = power_of_two_scale(max(top, 0.0))
    unit = matmul_unit(dev)
    R, C = t.shape
    out = torch.zeros((R, C), dtype=torch.bool, device=dev)
    step = _chunk_rows(R, C, m, dev)
    rescored = 0
    for r0 in range(0, R, step):
        if deadline is not None and time.perf_counter() > deadline:
            return out, rescored, (r0 // m) * (C // m)
        out[r0:r0 + step], k = enumerate_blocks_t(t[r0:r0 + step], pats, P32, n, m, scale,
                                                  unit, not exactly)
        rescored += k
    return out, rescored, None


@register("enumerate-torch", NMMask, guarantee="exact", requires=("torch",), package="torch")
@register("topk-torch", NMMask, guarantee="exact", requires=("torch",), package="torch")
def topk_torch(problem: NMMask, time_limit: float | None) -> Result:
    """Top-n of every group of m consecutive entries on the scores' device (positive ones
    only for "at most"); one pass (``time_limit`` cannot cut it shorter)."""
    import torch

    t, numpy_out = problem_tensor(problem)
    g = t.reshape(-1, problem.m)
    if g.dtype in (torch.float16, torch.bfloat16):
        g = g.float()  # exact; topk of half types is not on every device
    x = torch.zeros(g.shape, dtype=torch.bool, device=g.device)
    with cpu_threads(t):
        x.scatter_(1, g.topk(problem.n, dim=1).indices, True)
        if not problem.exactly:
            x &= g > 0
    return Result(answer(x.reshape(problem.shape), numpy_out), "optimal", None,
                  {"device": str(g.device)}, proof="top-n of every group (exact by definition)")

