"""Bad input is a clear ValueError, never a silent answer: complex data, low-precision torch
tensors (accepted), solver options outside their declared tables, extreme scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pruneopt
from pruneopt.formulations import (
    CoverageSelection,
    CoverSelection,
    LayerBudget,
    MMDSelection,
    NMMask,
    TransposableNM,
)
from pruneopt.solvers import register, solvers
from pruneopt.solvers.options import Integer

RNG = np.random.default_rng(0)
S = np.abs(RNG.standard_normal((8, 8)))


def _problems():
    X = RNG.normal(size=(12, 2))
    return {
        "nm": TransposableNM(S, 2, 4),
        "plain": NMMask(S, 2, 4),
        "budget": LayerBudget([[0, 1], [0, 2]], [[1.0, 0.0], [2.0, 0.0]], 2),
        "coverage": CoverageSelection(X, keep=3, radius=0.8),
        "cover": CoverSelection(X, cover=0.5, radius=0.8),
        "mmd": MMDSelection(X, RNG.normal(size=(5, 2)), 4),
    }


@pytest.mark.parametrize("make", [
    lambda z: TransposableNM(z, 2, 4),
    lambda z: NMMask(z, 2, 4),
    lambda z: LayerBudget([[0, 1]] * 4, z[:4, :2], 1),
    lambda z: LayerBudget(z[:4, :2].real.astype(complex) + 0j, [[0, 1]] * 4, 1),
    lambda z: CoverageSelection(z, keep=2, radius=1.0),
    lambda z: CoverageSelection(z.real, keep=2, radius=1.0, weights=z[:, 0]),
    lambda z: MMDSelection(z, z[:3], 2),
])
def test_complex_input_is_refused(make):
    z = S + 1j * S
    with pytest.raises(ValueError, match="complex"):
        make(z)


def test_complex_torch_tensor_is_refused():
    with pytest.raises(ValueError, match="complex"):
        TransposableNM(torch.tensor(S + 1j * S), 2, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_torch_tensors_are_accepted(dtype):
    t = torch.tensor(S).to(dtype)
    ref = np.asarray(t.float().numpy(), dtype=np.float64)  # the values the tensor holds
    for cls in (TransposableNM, NMMask):
        p = cls(t, 2, 4)
        assert np.array_equal(p.scores, ref)
        sol = pruneopt.solve(p)
        assert sol.status == "optimal"
        mask = torch.as_tensor(sol.decision)
        assert p.objective(mask) == pytest.approx(sol.objective)
    X = torch.tensor(RNG.normal(size=(10, 3))).to(dtype)
    assert CoverageSelection(X, keep=2, radius=1.0).features.dtype == np.float64
    assert MMDSelection(X, X[:4], 3).source.dtype == np.float64


# ------------------------------------------------------------------ solver options

BAD_OPTIONS = [
    ("nm", "ortools", {"scale": 0}, "scale"),
    ("nm", "ortools", {"scale": -1.0}, "scale"),
    ("nm", "ortools", {"scale": 1e30}, "smaller scale"),
    ("nm", "ortools", {"scale": float("nan")}, "scale"),
    ("nm", "greedy", {"complete": "yes"}, "complete"),
    ("budget", "cpsat", {"workers": -1}, "workers"),
    ("budget", "cpsat", {"seed": -1}, "seed"),
    ("budget", "cpsat", {"cost_scale": 0}, "cost_scale"),
    ("budget", "dp", {"buckets": 0}, "buckets"),
    ("budget", "dp", {"buckets": 2.5}, "buckets"),
    ("budget", "highs", {"threads": -3}, "threads"),
    ("budget", "highs", {"mip_rel_gap": -1}, "mip_rel_gap"),
    ("budget", "highs", {"mip_rel_gap": float("nan")}, "mip_rel_gap"),
    ("budget", "scipy", {"mip_rel_gap": 2.0}, "mip_rel_gap"),
    ("coverage", "cpsat", {"linearization": 7}, "linearization"),
    ("coverage", "greedy", {"method": "fast"}, "method"),
    ("coverage", "kcenter", {"seed": -1}, "seed"),
    ("mmd", "swap", {"seed": -1}, "seed"),
    ("mmd", "swap", {"start": "best"}, "start"),
    ("mmd", "relax-swap", {"foo": 1}, "has no option"),
    ("mmd", "lowrank", {"rank": 1}, "rank"),
    ("mmd", "scip", {"threads": 0}, "threads"),
]


@pytest.mark.parametrize(("kind", "solver", "options", "match"), BAD_OPTIONS)
def test_bad_solver_options_are_refused_before_the_backend_runs(kind, solver, options, match):
    with pytest.raises(ValueError, match=match):
        pruneopt.solve(_problems()[kind], solver=solver, **options)


def test_every_solver_declares_its_options():
    for spec in solvers():
        assert set(spec.options) == set(pruneopt.solvers.registry.solver_options(spec))
        for constraint in spec.options.values():
            assert constraint.describe()


def test_registering_undeclared_options_is_an_error():
    class Toy(TransposableNM):
        pass

    with pytest.raises(ValueError, match="options table"):
        @register("toy", Toy, guarantee="heuristic")
        def toy(problem, time_limit, *, depth: int = 3):  # pragma: no cover - never runs
            raise AssertionError

    with pytest.raises(ValueError, match="not \\*\\*kwargs"):
        @register("toy2", Toy, guarantee="heuristic", options={"depth": Integer(1, 9)})
        def toy2(problem, time_limit, **options):  # pragma: no cover - never runs
            raise AssertionError


# ------------------------------------------------------------------ extreme scales


@pytest.mark.parametrize("bandwidth", [1e-300, 1e-170, 1e170, 1e300])
def test_mmd_extreme_bandwidth_is_a_clear_error(bandwidth):
    X = RNG.normal(size=(10, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        MMDSelection(X, X[:4], 3, bandwidth=bandwidth)


def test_mmd_extreme_feature_scale_is_a_clear_error_or_works():
    X = RNG.normal(size=(10, 2))
    with pytest.raises(ValueError, match="too large in scale"):
        MMDSelection(X * 1e200, X[:4] * 1e200, 3)
    for f in (1e-100, 1e100):  # within float64's squares: the same selection as at scale 1
        a = pruneopt.solve(MMDSelection(X, X[:4] + 0.3, 3), solver="relax-swap")
        b = pruneopt.solve(MMDSelection(X * f, (X[:4] + 0.3) * f, 3), solver="relax-swap")
        assert np.array_equal(a.decision, b.decision)
        assert b.objective == pytest.approx(a.objective, rel=1e-6)


def test_huge_coverage_weights_are_solved_not_a_backend_error():
    X = np.arange(6.0)[:, None]
    p = CoverageSelection(X, keep=2, radius=1.0, weights=np.linspace(1, 2, 6) * 1e300)
    for name in pruneopt.available(p):
        sol = pruneopt.solve(p, solver=name)
        assert np.isfinite(sol.objective) and sol.objective > 0, name
