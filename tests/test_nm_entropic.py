"""The entropic OT solver for transposable N:M masks: always a valid mask, an honest bound
(checked against exact solvers), at least half the optimum, and the same mask at any scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import TransposableNM
from pruneopt.solvers.nm_entropic import entropic_blocks, entropic_blocks_torch

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SCALES = st.builds(lambda e, mant: mant * 10.0**e, st.integers(-12, 11), st.floats(1.0, 9.99))


def scores(seed: int, shape: tuple[int, int], kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "abs":
        return np.abs(rng.standard_normal(shape))
    if kind == "ties":  # many equal scores and zeros
        return rng.integers(0, 3, size=shape).astype(float)
    if kind == "negative":
        return -np.abs(rng.standard_normal(shape))
    return rng.standard_normal(shape)  # signed


def valid(problem: TransposableNM, mask: np.ndarray) -> None:
    problem.check(mask)  # raises if a row or column breaks the rule
    if not problem.exactly:  # "at most" never keeps a score <= 0
        assert not (mask & (problem.scores <= 0)).any()


def exact_optimum(problem: TransposableNM) -> float:
    name = "enumerate" if "enumerate" in pruneopt.available(problem) else "ortools"
    sol = pruneopt.solve(problem, solver=name)
    assert sol.status == "optimal"
    return sol.objective


@SETTINGS
@given(m=st.integers(1, 9), data=st.data(), blocks=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       seed=st.integers(0, 10_000), kind=st.sampled_from(["abs", "ties", "negative", "signed"]),
       exactly=st.booleans(), scale=SCALES)
def test_always_a_valid_mask_and_an_honest_bound(m, data, blocks, seed, kind, exactly, scale):
    n = data.draw(st.integers(1, m))
    problem = TransposableNM(scores(seed, (blocks[0] * m, blocks[1] * m), kind) * scale, n, m,
                             exactly=exactly)
    sol = pruneopt.solve(problem, solver="entropic")
    assert sol.status in ("optimal", "feasible")
    valid(problem, sol.decision)
    opt = exact_optimum(problem)
    tol = 1e-9 * problem.objective_scale()
    assert sol.bound >= opt - tol  # the Lagrangian bounds the integer optimum
    assert sol.objective <= opt + tol
    if sol.status == "optimal":
        assert sol.objective == pytest.approx(opt, rel=1e-9, abs=tol)
    if kind in ("abs", "ties"):  # nonnegative scores: at least half of the optimum
        assert sol.objective >= 0.5 * opt - tol


@SETTINGS
@given(nm=st.sampled_from([(2, 4), (4, 8), (3, 8), (8, 16)]), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["abs", "ties", "signed"]), exactly=st.booleans(), scale=SCALES)
def test_same_mask_and_status_under_scaling(nm, seed, kind, exactly, scale):
    n, m = nm
    s = scores(seed, (2 * m, 2 * m), kind)
    a = pruneopt.solve(TransposableNM(s, n, m, exactly=exactly), solver="entropic")
    b = pruneopt.solve(TransposableNM(s * scale, n, m, exactly=exactly), solver="entropic")
    assert np.array_equal(a.decision, b.decision)
    assert a.status == b.status
    assert b.bound == pytest.approx(a.bound * scale, rel=1e-9)


@pytest.mark.parametrize("exactly", [False, True])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (8, 16), (16, 32)])
def test_near_the_optimum_on_random_scores(n, m, exactly):
    problem = TransposableNM(scores(0, (128, 128), "abs"), n, m, exactly=exactly)
    sol = pruneopt.solve(problem, solver="entropic")
    opt = pruneopt.solve(problem, solver="ortools").objective
    assert sol.objective >= 0.99 * opt
    assert opt <= sol.bound <= 1.01 * opt
    assert sol.info["kept_ratio_vs_bound"] == pytest.approx(sol.objective / sol.bound)


def test_a_tie_free_block_is_proven_optimal():
    # a block whose greedy is optimal and whose prices meet it: the bound proves it
    s = np.array([[9.0, 1, 1, 8], [1, 9, 8, 1], [1, 8, 9, 1], [8, 1, 1, 9]])
    sol = pruneopt.solve(TransposableNM(s, 2, 4, exactly=True), solver="entropic")
    assert sol.status == "optimal" and sol.proof == "bound meets objective"
    assert sol.objective == 68.0  # 9 + 8 in every row


def test_zero_and_tiny_blocks():
    z = np.zeros((8, 8))
    a = pruneopt.solve(TransposableNM(z, 2, 4), solver="entropic")
    assert a.decision.sum() == 0 and a.status == "optimal"
    b = pruneopt.solve(TransposableNM(z, 2, 4, exactly=True), solver="entropic")
    valid(TransposableNM(z, 2, 4, exactly=True), b.decision)
    c = pruneopt.solve(TransposableNM(np.full((4, 4), 1e-300), 2, 4), solver="entropic")
    assert c.decision.sum() == 8


def test_more_sweeps_do_not_lose_much_and_zero_sweeps_is_greedy_repaired():
    problem = TransposableNM(scores(1, (64, 64), "abs"), 4, 8)
    few = pruneopt.solve(problem, solver="entropic", iterations=0)
    many = pruneopt.solve(problem, solver="entropic", iterations=60, tau=0.003)
    valid(problem, few.decision)
    assert many.objective >= few.objective
    assert many.bound <= few.bound


def test_time_limit_gives_a_valid_mask():
    problem = TransposableNM(scores(2, (64, 64), "abs"), 4, 8, exactly=True)
    sol = pruneopt.solve(problem, solver="entropic", time_limit=1e-9)
    assert sol.status in ("time_limit", "feasible", "optimal")
    valid(problem, sol.decision)


def test_never_the_default_and_options_checked():
    for n, m in [(2, 4), (4, 8), (16, 32)]:
        problem = TransposableNM(scores(3, (2 * m, 2 * m), "abs"), n, m)
        assert pruneopt.solvers.get_solver(problem, None).guarantee == "exact"
    problem = TransposableNM(scores(3, (8, 8), "abs"), 2, 4)
    for bad in ({"tau": 0.0}, {"tau": 2.0}, {"iterations": -1}, {"tolerance": float("nan")},
                {"sweeps": 3}):
        with pytest.raises(ValueError):
            pruneopt.solve(problem, solver="entropic", **bad)


def test_the_blocks_function_reports_per_block_bounds():
    w = np.abs(np.random.default_rng(4).standard_normal((50, 8, 8)))
    x, bound, kept, counts = entropic_blocks(w, 3, False)
    assert x.shape == w.shape and x.dtype == bool
    assert np.allclose(kept, (w * x).sum(axis=(1, 2)))
    assert (bound >= kept - 1e-12).all() and counts["sweeps"] > 0


@pytest.mark.parametrize("exactly", [False, True])
@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 4), (3, 8), (8, 16)])
def test_torch_blocks_valid_and_close(n, m, exactly):
    torch = pytest.importorskip("torch")
    from pruneopt.formulations.nm import from_blocks

    for kind in ("abs", "ties", "signed"):
        s = scores(5, (4 * m, 4 * m), kind)
        problem = TransposableNM(s, n, m, exactly=exactly)
        x = entropic_blocks_torch(torch.as_tensor(problem.blocks()), n, exactly)
        assert x.dtype == torch.bool and x.device.type == "cpu"
        mask = from_blocks(x.numpy(), s.shape, m)
        valid(problem, mask)
        if kind != "signed":
            assert problem.objective(mask) >= 0.5 * exact_optimum(problem) - 1e-12
        if kind == "abs":
            assert problem.objective(mask) >= 0.97 * exact_optimum(problem)


def _benchmark():
    """benchmarks/nm_entropic.py as a module (benchmarks/ stays off sys.path: its
    coverage.py would shadow the coverage package)."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    if "_common" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_common", bench / "_common.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_common"] = mod
        spec.loader.exec_module(mod)
    spec = importlib.util.spec_from_file_location("bench_nm_entropic", bench / "nm_entropic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_tiny_run_and_refusal(tmp_path, capsys):
    bench = _benchmark()
    out = tmp_path / "e.md"
    bench.main(["--sizes", "16", "--nm", "4:8", "--repeats", "1", "--modes", "exactly",
                "--out", str(out)])
    printed = capsys.readouterr().out
    assert "tsenor plain" in printed and out.read_text().strip() == printed.strip()
    with pytest.raises(SystemExit):
        bench.main(["--out", str(Path(__file__).resolve().parents[1] / "README.md")])


def test_plain_tsenor_peer_keeps_at_most_n():
    bench = _benchmark()
    s = scores(6, (32, 32), "abs")
    mask = bench.tsenor_plain(s, 4, 8, iters=20)
    TransposableNM(s, 4, 8).check(mask)
