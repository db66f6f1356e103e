"""The torch N:M backends (``*-torch``): tensor in, tensor out, on the scores' device, and
the same optimum as the NumPy exact solvers (the reference) for every float dtype."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import NMMask, TransposableNM

torch = pytest.importorskip("torch")

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def scores(seed: int, shape, kind: str = "abs"):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(0, 3, shape, generator=g).double()
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    return w.abs() if kind == "abs" else w


def reference(t, n: int, m: int, exactly: bool) -> float:
    """The NumPy exact optimum of the same values (the tensor widened to float64)."""
    p = TransposableNM(t.double().cpu().numpy(), n, m, exactly=exactly)
    return pruneopt.solve(p, solver="enumerate" if m <= 4 else "flow").objective


def assert_tensor_answer(sol, problem, device):
    assert torch.is_tensor(sol.decision) and sol.decision.dtype == torch.bool
    assert sol.decision.device.type == torch.device(device).type
    problem.check(sol.decision)
    assert sol.objective == pytest.approx(problem.objective(sol.decision), rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", ["enumerate-torch", "flow-torch"])
@pytest.mark.parametrize("exactly", [False, True])
def test_exact_torch_solvers_match_numpy(device, dtype, solver, exactly):
    for (n, m), kind in [((2, 4), "abs"), ((1, 4), "signed"), ((3, 4), "ties"),
                         ((4, 8), "abs"), ((2, 8), "signed")]:
        if solver == "enumerate-torch" and m > 4:
            continue
        t = scores(n * m, (4 * m, 6 * m), kind).to(dtype).to(device)
        p = TransposableNM(t, n, m, exactly=exactly)
        sol = pruneopt.solve(p, solver=solver)
        assert sol.status == "optimal"
        assert_tensor_answer(sol, p, device)
        total = float(t.double().abs().sum())
        assert sol.objective == pytest.approx(reference(t, n, m, exactly),
                                              abs=2**-24 * total), (n, m, kind)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_scores_pick_torch_solvers_and_numpy_stays_numpy(device):
    t = scores(0, (16, 16)).float().to(device)
    assert pruneopt.solvers.get_solver(TransposableNM(t, 2, 4), None).name == "enumerate-torch"
    assert pruneopt.solvers.get_solver(TransposableNM(t, 4, 8), None).name == "flow-torch"
    assert pruneopt.solvers.get_solver(NMMask(t, 2, 4), None).name == "topk-torch"
    a = t.cpu().numpy()
    assert pruneopt.solvers.get_solver(TransposableNM(a, 2, 4), None).name == "enumerate"
    assert pruneopt.solvers.get_solver(NMMask(a, 2, 4), None).name == "topk"
    # a torch solver given NumPy scores answers in NumPy, with the same optimum
    for name in ("enumerate-torch", "flow-torch", "greedy-torch"):
        sol = pruneopt.solve(TransposableNM(a, 2, 4), solver=name)
        assert isinstance(sol.decision, np.ndarray) and sol.decision.dtype == bool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_mask_topk_torch(device, dtype):
    for exactly in (False, True):
        t = scores(1, (6, 16), "signed").to(dtype).to(device)
        p = NMMask(t, 2, 4, exactly=exactly)
        sol = pruneopt.solve(p)
        assert sol.solver == "topk-torch"
        assert_tensor_answer(sol, p, device)
        ref = pruneopt.solve(NMMask(t.double().cpu().numpy(), 2, 4, exactly=exactly))
        assert sol.objective == pytest.approx(ref.objective, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_torch_is_the_numpy_greedy(device):
    for exactly in (False, True):
        for n, m in [(2, 4), (4, 8)]:
            t = scores(m + exactly, (4 * m, 4 * m)).to(device)  # continuous: no ties
            p = TransposableNM(t, n, m, exactly=exactly)
            sol = pruneopt.solve(p, solver="greedy-torch")
            assert sol.status == "feasible"
            assert_tensor_answer(sol, p, device)
            ref = pruneopt.solve(TransposableNM(t.cpu().numpy(), n, m, exactly=exactly),
                                 solver="greedy")
            assert np.array_equal(sol.decision.cpu().numpy(), ref.decision)
            best = reference(t, n, m, exactly)
            assert sol.objective <= best * (1 + 1e-12) and sol.bound >= best * (1 - 1e-12)
            if not exactly:
                assert sol.objective >= best / 2


def test_time_limit_fills_with_the_greedy():
    t = scores(2, (64, 64)).float()
    for name in ("enumerate-torch", "flow-torch"):
        p = TransposableNM(t, 2, 4)
        sol = pruneopt.solve(p, solver=name, time_limit=1e-9)
        assert sol.status == "time_limit" and sol.bound >= sol.objective
        assert_tensor_answer(sol, p, "cpu")


def test_scores_tensor_is_not_modified_and_objective_takes_numpy_masks():
    t = scores(3, (8, 8), "signed").float()
    before = t.clone()
    p = TransposableNM(t, 2, 4)
    sol = pruneopt.solve(p)
    assert torch.equal(t, before)
    mask_np = sol.decision.numpy()
    assert p.objective(mask_np) == pytest.approx(sol.objective, rel=1e-12)
    assert p.check(mask_np) is not None
    with pytest.raises(ValueError, match="infeasible"):
        p.check(torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        TransposableNM(torch.full((4, 4), float("nan")), 2, 4)


@SETTINGS
@given(seed=st.integers(0, 2**16), exp=st.integers(-30, 30), nm=st.sampled_from(
       [(2, 4), (1, 4), (3, 4), (2, 8), (4, 8)]), exactly=st.booleans(),
       kind=st.sampled_from(["abs", "signed", "ties"]), dtype=st.sampled_from(DTYPES))
def test_torch_exact_equals_numpy_at_any_scale(seed, exp, nm, exactly, kind, dtype):
    n, m = nm
    if dtype == torch.float16:
        exp = max(-10, min(exp, 10))  # float16 holds up to 65504
    t = (scores(seed, (2 * m, 3 * m), kind) * 2.0**exp).to(dtype)
    p = TransposableNM(t, n, m, exactly=exactly)
    best = reference(t, n, m, exactly)
    tol = 2**-24 * float(t.double().abs().sum())
    for name in (["enumerate-torch"] if m <= 4 else []) + ["flow-torch"]:
        sol = pruneopt.solve(p, solver=name)
        assert sol.status == "optimal"
        assert sol.objective == pytest.approx(best, abs=tol), name


@pytest.mark.parametrize("precision", ["highest", "medium"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_device_enumeration_in_torch_ops_is_exact(dtype, precision):
    """The torch-operations path (what runs on CUDA), run here on the CPU; a lower matmul
    precision setting only re-scores more blocks."""
    from pruneopt.solvers.nm_torch import enumerate_device

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        for (n, m), kind, ex in [((2, 4), "abs", False), ((2, 4), "ties", False),
                                 ((1, 4), "signed", True), ((3, 4), "abs", False)]:
            t = scores(7, (8 * m, 8 * m), kind).to(dtype)
            mask, rescored, stopped = enumerate_device(t, n, m, ex)
            assert stopped is None and mask.dtype == torch.bool
            p = TransposableNM(t, n, m, exactly=ex)
            p.check(mask)
            assert p.objective(mask) == pytest.approx(
                reference(t, n, m, ex), abs=2**-24 * float(t.double().abs().sum()))
            if kind == "ties":
                assert rescored > 0
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exactly", [False, True])
def test_device_flow_in_torch_ops_is_exact(dtype, exactly):
    """The torch-operations flow (what runs on CUDA), run here on the CPU."""
    from pruneopt.solvers.nm_torch_flow import flow_device

    for (n, m), kind in [((2, 4), "ties"), ((1, 4), "signed"), ((4, 8), "abs"),
                         ((2, 8), "signed"), ((8, 16), "abs")]:
        t = scores(n + m, (4 * m, 4 * m), kind).to(dtype)
        mask, stopped = flow_device(t, n, m, exactly)
        assert not stopped and mask.dtype == torch.bool
        p = TransposableNM(t, n, m, exactly=exactly)
        p.check(mask)
        assert p.objective(mask) == pytest.approx(
            reference(t, n, m, exactly), abs=2**-24 * float(t.double().abs().sum()))
