"""GreeDi coverage and MMD selection over shards: feasibility, an exact reference on the
whole data, the stated guarantees, identical answers on every executor (in process, a
process pool, a local Ray cluster of 2 CPUs started here), and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations.coverage import CoverageSelection
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers.coverage_distributed import greedi_coverage, greedi_ratio
from pruneopt.solvers.mmd_distributed import mmd_by_shards
from pruneopt.solvers.shards import dataset_shards

ray = pytest.importorskip("ray")

RADIUS = 0.5


def blobs(n: int, seed: int = 0, d: int = 3) -> np.ndarray:
    """Points around 12 seeded centres (structure to cover), float64."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (12, d))
    return centres[rng.integers(0, 12, n)] + rng.normal(0.0, 0.4, (n, d))


def split(X: np.ndarray, m: int, seed: int = 1) -> list[np.ndarray]:
    """A random partition into m shards (the setting of the expected guarantee)."""
    perm = np.random.default_rng(seed).permutation(len(X))
    return [X[p] for p in np.array_split(perm, m)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards():
    return split(blobs(900), 3)


@pytest.fixture(scope="module")
def reference(shards):
    """GreeDi in process, and the whole data's problem."""
    whole = CoverageSelection(np.vstack(shards), keep=12, radius=RADIUS)
    return greedi_coverage(shards, 12, RADIUS), whole


def test_greedi_feasible_and_scored_on_the_whole_data(reference):
    res, whole = reference
    assert len(res.indices) <= 12 and len(np.unique(res.indices)) == len(res.indices)
    whole.check(res.indices)
    assert res.objective == whole.objective(res.indices)  # exact, against the full graph
    assert res.status == "feasible"
    assert res.objective >= res.best_shard_objective and res.objective >= res.merge_objective
    assert res.merge_bound >= res.merge_objective
    assert res.worst_case_bound >= res.objective


def test_greedi_guarantee_against_the_single_machine_greedy(reference):
    res, whole = reference
    single = pruneopt.solve(whole, solver="greedy")
    assert res.objective >= greedi_ratio(3, 12) * single.objective
    assert res.objective >= 0.9 * single.objective  # random partition: near the greedy
    assert res.worst_case_bound >= single.objective


def test_greedi_fewer_local_candidates_claims_no_ratio(reference, shards):
    res, whole = reference
    few = greedi_coverage(shards, 12, RADIUS, local_keep=4)
    whole.check(few.indices)
    assert few.candidates <= 4 * len(shards) and len(few.indices) <= 12
    assert few.objective == whole.objective(few.indices)
    assert np.isnan(few.ratio) and few.worst_case_bound == whole.n
    assert few.merge_bound >= few.merge_objective


def test_greedi_same_on_every_executor_and_from_files(reference, shards, tmp_path,
                                                      ray_cluster):
    res, _ = reference
    paths = []
    for i, s in enumerate(shards):
        paths.append(tmp_path / f"shard{i}.npy")
        np.save(paths[-1], s)
    for executor in ("processes", "ray"):
        other = greedi_coverage([str(p) for p in paths], 12, RADIUS, executor=executor,
                                workers=2)
        np.testing.assert_array_equal(other.indices, res.indices)
        assert other.objective == res.objective and other.source == res.source


def test_greedi_and_mmd_over_a_ray_dataset(shards, ray_cluster):
    data = pytest.importorskip("ray.data")
    ds = data.from_numpy(np.vstack(shards))
    refs = dataset_shards(ds, shards=3)
    blocks = [np.asarray(ray.get(r)) for r in refs]
    assert len(refs) == 3 and np.array_equal(np.vstack(blocks), np.vstack(shards))
    res = greedi_coverage(refs, 12, RADIUS, executor="ray")
    same = greedi_coverage(blocks, 12, RADIUS)  # the same partition, as arrays
    assert np.array_equal(res.indices, same.indices) and res.objective == same.objective
    target = np.vstack(shards)[::7] + 0.1
    a = mmd_by_shards(refs, target, 30, executor="ray", seed=0)
    b = mmd_by_shards(blocks, target, 30, seed=0)
    assert np.array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="executor='ray'"):
        greedi_coverage(refs, 12, RADIUS, executor="processes")
    with pytest.raises(ValueError, match="column"):
        dataset_shards(ds, column="points")
    with pytest.raises(ValueError, match="positive integer"):
        dataset_shards(ds, shards=0)


def test_greedi_ivf_incidence_rescored_exactly(reference, shards):
    res, whole = reference
    ivf = greedi_coverage(shards, 12, RADIUS, cross="ivf", nprobe=2)
    assert ivf.objective == whole.objective(ivf.indices)
    assert 0.0 < ivf.cross["recall"] <= 1.0
    assert ivf.objective >= greedi_ratio(3, 12) * res.objective


@settings(max_examples=4, deadline=None)
@given(factor=st.sampled_from([1e-3, 0.37, 1.0, 2.5e4]), m=st.integers(1, 3))
def test_greedi_scale_invariant(factor, m):
    shards = split(blobs(240, seed=3), m, seed=4)
    a = greedi_coverage(shards, 6, RADIUS)
    b = greedi_coverage([s * factor for s in shards], 6, RADIUS * factor)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.objective == b.objective and a.status == b.status


def test_mmd_by_shards_feasible_guarantee_reproducible(shards, ray_cluster):
    rng = np.random.default_rng(5)
    target = blobs(300, seed=0)[:150] + rng.normal(0.2, 0.1, (150, 3))
    res = mmd_by_shards(shards, target, 45, seed=0)
    assert len(res.indices) == 45 and len(np.unique(res.indices)) == 45
    assert sum(res.shares) == 45 and res.shares == [15, 15, 15]
    whole = MMDSelection(np.vstack(shards), target, keep=45, bandwidth=res.bandwidth)
    whole.check(res.indices)
    ref = whole.objective(res.indices)
    assert res.objective == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert res.objective <= res.average_bound * (1 + 1e-9) + 1e-12  # Jensen
    again = mmd_by_shards(shards, target, 45, seed=0, executor="ray")
    np.testing.assert_array_equal(again.indices, res.indices)
    assert again.objective == pytest.approx(res.objective, rel=1e-12)


def test_bad_input(shards, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        greedi_coverage([str(tmp_path / "absent.npy")], 3, RADIUS)
    with pytest.raises(ValueError, match="different feature dimensions"):
        greedi_coverage([shards[0], shards[1][:, :2]], 3, RADIUS)
    bad = tmp_path / "cut.npy"
    np.save(bad, shards[0])
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot be read"):
        greedi_coverage([str(bad)], 3, RADIUS)
    with pytest.raises(ValueError, match="keep"):
        greedi_coverage(shards, 10_000, RADIUS)
    with pytest.raises(ValueError, match="cross"):
        greedi_coverage(shards, 3, RADIUS, cross="hnsw")
    with pytest.raises(ValueError, match="executor"):
        greedi_coverage(shards, 3, RADIUS, executor="threads")
    with pytest.raises(ValueError, match="list"):
        greedi_coverage(shards[0], 3, RADIUS)
    with pytest.raises(ValueError, match="target"):
        mmd_by_shards(shards, np.zeros((5, 2)), 3)
    with pytest.raises(ValueError, match="different feature dimensions"):
        mmd_by_shards([shards[0], shards[1][:, :2]], np.zeros((5, 3)), 3)
