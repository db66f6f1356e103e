"""The OR-Tools N:M solver: chunks, scale choice, certificate, time limit, honest statuses."""

from __future__ import annotations

import numpy as np
import pytest

import pruneopt
import pruneopt.solvers.nm_flow as nm_flow
from pruneopt.formulations import TransposableNM
from pruneopt.solvers.nm_flow import certify

pytest.importorskip("ortools")


def _problem(seed, shape, n, m, exactly, *, negative=False):
    w = np.random.default_rng(seed).standard_normal(shape)
    return TransposableNM(w if negative else np.abs(w), n, m, exactly=exactly)


@pytest.mark.parametrize("exactly", [False, True])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (3, 8), (1, 3)])
def test_many_chunks_with_a_short_last_one_match_flow(monkeypatch, n, m, exactly):
    # 9 x 7 blocks on chunks of 4 blocks: 15 full chunks and one of 3
    monkeypatch.setattr(nm_flow, "ORTOOLS_CHUNK_ELEMS", 4 * m * m)
    p = _problem(n + m, (9 * m, 7 * m), n, m, exactly, negative=True)
    sol = pruneopt.solve(p, solver="ortools")
    ref = pruneopt.solve(p, solver="flow")
    assert sol.status == "optimal" and sol.info["float_check_passed"]
    assert sol.info["blocks_failing_check"] == 0 and sol.info["scale_retries"] == 0
    assert sol.objective == pytest.approx(ref.objective, rel=1e-12)
    assert certify(p, sol.decision)
    if not exactly:
        assert not (sol.decision & (p.scores <= 0)).any()


def test_bad_cost_range_is_retried_with_a_smaller_scale(monkeypatch):
    # a margin below 1 puts the first costs above OR-Tools' limit: it answers BAD_COST_RANGE
    monkeypatch.setattr(nm_flow, "ORTOOLS_COST_MARGIN", 0.5)
    p = _problem(1, (32, 32), 2, 4, False)
    sol = pruneopt.solve(p, solver="ortools")
    assert sol.info["scale_retries"] == 1
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(pruneopt.solve(p, solver="flow").objective, rel=1e-12)


def test_a_scale_beyond_what_ortools_accepts_is_a_value_error():
    p = _problem(2, (16, 16), 2, 4, False)
    with pytest.raises(ValueError, match="smaller scale"):
        pruneopt.solve(p, solver="ortools", scale=1e30)


def test_a_coarse_scale_is_honest():
    """Costs rounded to integers of the scores: optimal only when the float check proves it,
    otherwise feasible with a bound that holds."""
    p = TransposableNM(np.random.default_rng(3).uniform(0, 2, (64, 64)), 2, 4)
    opt = pruneopt.solve(p, solver="flow").objective
    sol = pruneopt.solve(p, solver="ortools", scale=1.0)
    assert sol.status == "feasible"  # many blocks tie after rounding to 0, 1, 2
    assert not sol.info["float_check_passed"] and sol.info["blocks_failing_check"] > 0
    assert not certify(p, sol.decision)
    assert sol.objective <= opt + 1e-9 <= sol.bound + 2e-9


def test_time_limit_is_read_between_chunks(monkeypatch):
    monkeypatch.setattr(nm_flow, "ORTOOLS_CHUNK_ELEMS", 64)
    p = _problem(4, (256, 256), 2, 4, False)
    calls = {"n": 0}
    real = nm_flow._FlowGraph.solve

    def slow(self, w, scale):  # the first chunk uses up the time limit
        calls["n"] += 1
        import time

        time.sleep(0.05)
        return real(self, w, scale)

    monkeypatch.setattr(nm_flow._FlowGraph, "solve", slow)
    sol = pruneopt.solve(p, solver="ortools", time_limit=0.01)
    assert sol.status == "time_limit" and sol.info["stopped_early"]
    assert calls["n"] == 1
    p.check(sol.decision)
    assert sol.bound >= pruneopt.solve(p, solver="flow").objective - 1e-9
