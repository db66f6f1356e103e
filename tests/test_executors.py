"""The executor argument: the same answers in process, in a local pool and on a local Ray
cluster (started once for this module with 2 CPUs and shut down at its end), and clean
errors for bad executors, a missing Ray, an unreachable address, a task that raises and a
worker that dies."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from net import free_port
from torch import nn

import pruneopt
from pruneopt.adapters.nm import compute_nm_masks, is_nm
from pruneopt.formulations import CoverageSelection, LayerBudget, MMDSelection, TransposableNM
from pruneopt.solvers.executors import executor_session, map_tasks

ray = pytest.importorskip("ray")

EXECUTORS = [None, "processes", "ray"]


# Runs before the cluster fixture starts Ray (tests run in file order): with Ray already
# initialized, map_tasks uses that cluster and does not connect anywhere.
def test_unreachable_address_is_a_value_error_before_ray_starts():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match="cannot reach a Ray cluster"):
        map_tasks(abs, [1, -2], executor="ray", address=address)
    with pytest.raises(ValueError, match="host:port"):
        map_tasks(abs, [1], executor="ray", address="no-port-here")
    assert not ray.is_initialized()


def test_a_call_without_a_cluster_starts_and_stops_its_own():
    assert map_tasks(abs, [-1, 2, -3], executor="ray", workers=1) == [1, 2, 3]
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


class Small(nn.Module):
    """Four layers of mixed shapes (one not divisible by 4: skipped, or padded)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 16)
        self.c = nn.Linear(16, 12)
        self.d = nn.Linear(12, 8)


def mixed_problems() -> list:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    return [
        TransposableNM(rng.random((8, 8)), 2, 4),
        TransposableNM(rng.random((8, 12)) * 1e-6, 2, 4),
        LayerBudget(rng.random((5, 3)), rng.random((5, 3)), 3.0),
        CoverageSelection(x, radius=1.0, keep=4),
        MMDSelection(x[:12], x[12:], keep=3),
    ]


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_model_masks_identical_to_in_process(cluster, executor):
    model = Small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = compute_nm_masks(model, 2, 4, pad=True, progress=False)
    got = compute_nm_masks(model, 2, 4, pad=True, progress=False, executor=executor,
                           workers=2)
    assert list(got.masks) == list(ref.masks) == ["a", "b", "c", "d"]
    for name, mask in ref.masks.items():
        assert torch.equal(got.masks[name], mask)
        assert is_nm(got.masks[name][: mask.shape[0] // 4 * 4, : mask.shape[1] // 4 * 4], 2, 4)
    for r, g in zip(ref.report, got.report, strict=True):
        assert (g.name, g.status, g.solver, g.kept_score, g.bound) == \
            (r.name, r.status, r.solver, r.kept_score, r.bound)
    for k, v in model.state_dict().items():  # the model is not touched
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_solve_many_mixed_problems_identical_to_in_process(cluster, executor):
    problems = mixed_problems()
    ref = [pruneopt.solve(p) for p in problems]
    got = pruneopt.solve_many(problems, executor=executor, workers=2, progress=False)
    assert len(got) == len(ref)
    for p, r, g in zip(problems, ref, got, strict=True):
        assert (g.status, g.solver, g.objective, g.bound) == (r.status, r.solver, r.objective,
                                                               r.bound)
        assert np.array_equal(np.asarray(g.decision), np.asarray(r.decision))
        p.check(g.decision)


def test_solve_many_scaled_batch_same_answers(cluster):
    """Multiplying every instance by a positive factor changes neither answer nor status."""
    rng = np.random.default_rng(1)
    base = [rng.random((8, 8)) for _ in range(3)]
    for factor in (1e-8, 3.0, 1e6):
        a = pruneopt.solve_many([TransposableNM(s, 2, 4) for s in base], executor="ray",
                                progress=False)
        b = pruneopt.solve_many([TransposableNM(s * factor, 2, 4) for s in base],
                                executor="ray", progress=False)
        for x, y in zip(a, b, strict=True):
            assert x.status == y.status == "optimal"
            assert np.array_equal(x.decision, y.decision)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 6),
       factor=st.floats(1e-6, 1e6), executor=st.sampled_from([None, "ray"]))
def test_solve_many_is_solve_in_order_at_any_scale(cluster, seed, count, factor, executor):
    """solve_many == [solve(p)] in input order, for batches of any size and any positive
    scale of the data (same masks and status; objectives scale by the factor)."""
    rng = np.random.default_rng(seed)
    scores = [rng.random((4 * int(rng.integers(1, 4)), 8)) for _ in range(count)]
    ref = [pruneopt.solve(TransposableNM(s, 2, 4)) for s in scores]
    got = pruneopt.solve_many([TransposableNM(s * factor, 2, 4) for s in scores],
                              executor=executor, progress=True)
    for r, g in zip(ref, got, strict=True):
        assert g.status == r.status == "optimal"
        assert np.array_equal(g.decision, r.decision)
        assert math.isclose(g.objective, r.objective * factor, rel_tol=1e-12)


def test_solver_workers_go_through_solver_options(cluster):
    """``workers=`` is the executor's; CP-SAT's own ``workers`` option has its own way in."""
    p = mixed_problems()[2]
    ref = pruneopt.solve(p, solver="cpsat", workers=1)
    (got,) = pruneopt.solve_many([p], solver="cpsat", executor="ray", workers=2,
                                 solver_options={"workers": 1}, progress=False)
    assert (got.status, got.objective) == (ref.status, ref.objective)
    with pytest.raises(ValueError, match="given both"):
        pruneopt.solve_many([p], solver="cpsat", seed=0, solver_options={"seed": 1})


def test_bad_executor_workers_and_options():
    with pytest.raises(ValueError, match="executor must be"):
        map_tasks(abs, [1], executor="dask")
    with pytest.raises(ValueError, match="executor must be"):
        compute_nm_masks(Small(), 2, 4, executor="threads", progress=False)
    with pytest.raises(ValueError, match="workers must be"):
        map_tasks(abs, [1], executor="processes", workers=0)
    with pytest.raises(ValueError, match="address is for executor='ray'"):
        map_tasks(abs, [1], executor="processes", address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="problem 2 of 5.*'flow'"):  # a LayerBudget
        pruneopt.solve_many(mixed_problems(), solver="flow", executor="processes")
    with pytest.raises(ValueError, match="problem 0 of 1"):
        pruneopt.solve_many(mixed_problems()[:1], executor="ray", time_limit=-1)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without Ray
    with pytest.raises(ValueError, match=r"pruneopt\[ray\]"):
        map_tasks(abs, [1], executor="ray")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_task_that_raises_raises_its_error(cluster, executor):
    with pytest.raises(ValueError, match="math domain error"):
        map_tasks(math.sqrt, [4.0, -1.0, 9.0], executor=executor, workers=2)


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_a_dead_worker_is_a_runtime_error(cluster, executor):
    with pytest.raises(RuntimeError, match="died.*nothing was returned"):
        map_tasks(os._exit, [3, 3], executor=executor, workers=2)
    # the cluster and the pool machinery still work afterwards
    assert map_tasks(abs, [-1, -2], executor=executor, workers=2) == [1, 2]


def worker_pid(_x) -> int:
    return os.getpid()


def test_a_session_keeps_one_pool_for_every_call():
    with executor_session("processes", workers=2):
        first = set(map_tasks(worker_pid, range(8), executor="processes", workers=2))
        second = set(map_tasks(worker_pid, range(8), executor="processes", workers=2))
    assert os.getpid() not in first and len(first) <= 2
    assert second <= first  # the same processes served both calls
    fresh = set(map_tasks(worker_pid, range(2), executor="processes", workers=2))
    assert not fresh & first  # after the session: a new pool
