"""One-shot sparsification with calibration data (adapters.oneshot): sequential statistics,
exact masks for calibration-aware scores, exact refits, conversion, fine-tune with masks held."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pruneopt.adapters.nm import is_nm
from pruneopt.adapters.oneshot import (
    LayerStats,
    calibration_statistics,
    effective_target,
    layer_groups,
    sparsify,
)
from pruneopt.formulations import MaskedReconstruction


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 8))


MIX = torch.randn(16, 16, generator=torch.Generator().manual_seed(99))


def _data(seed: int = 0, batches: int = 8, rows: int = 32) -> list[torch.Tensor]:
    """Calibration (or held-out) inputs of one distribution: correlated features."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 16, generator=g) @ MIX for _ in range(batches)]


def _output_error(a: nn.Module, b: nn.Module, data) -> float:
    with torch.no_grad():
        return float(sum(((a(x) - b(x)) ** 2).sum() for x in data))


def test_statistics_are_x_transpose_x_of_the_layer_inputs():
    model, data = _mlp(), _data()
    st = calibration_statistics(model, ["2"], data)["2"]
    with torch.no_grad():
        X = torch.cat([torch.relu(model[0](x)) for x in data]).double()
    assert st.tokens == X.shape[0]
    torch.testing.assert_close(st.H, X.T @ X, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(st.sum_p, X.sum(0), rtol=1e-9, atol=1e-9)
    dense = calibration_statistics(model, ["2"], data, dense=copy.deepcopy(model))["2"]
    torch.testing.assert_close(dense.G, dense.H)  # an unpruned twin: the same inputs


def test_groups_follow_the_call_order_and_shared_inputs():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.c(self.a(x) + self.b(x))

    groups = layer_groups(Fork(), ["c", "b", "a"], torch.randn(4, 8))
    assert groups == [["a", "b"], ["c"]]


def test_effective_target_without_correction_is_the_dense_weight():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    W = rng.normal(size=(4, 6))
    st = LayerStats(torch.from_numpy(X.T @ X), None, torch.from_numpy(X.sum(0)), None, 50)
    Wt, H, means = effective_target(W, None, st, 0.01)
    assert np.array_equal(Wt, W) and means is None
    # a free bias: the refit of every weight kept reproduces the dense layer exactly
    b = rng.normal(size=4)
    Wt, Hc, (mu_p, mu_d) = effective_target(W, b, st, 0.0)
    np.testing.assert_allclose(Wt, W, atol=1e-9)
    np.testing.assert_allclose(Hc, (X - X.mean(0)).T @ (X - X.mean(0)), atol=1e-9)


@pytest.mark.parametrize("transposable", [True, False])
@pytest.mark.parametrize("score", ["magnitude", "wanda", "obs"])
def test_sparsify_gives_nm_layers_and_leaves_the_model_alone(score, transposable):
    model, data = _mlp(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, rep = sparsify(model, 2, 4, transposable=transposable, score=score,
                           calibration=data, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    done = [r for r in rep.layers if r.skipped is None]
    assert {r.name for r in done} == {"0", "2", "4"}
    for r in done:
        w = dict(pruned.named_modules())[r.name].weight
        assert is_nm(w, 2, 4, transposable=transposable)
        assert r.mask_status == "optimal" and r.kept_score <= r.score_bound * (1 + 1e-9)
        assert r.error_after <= r.error_masked * (1 + 1e-9)  # the refit never hurts


def test_reconstruction_lowers_the_output_error():
    model, data, held = _mlp(1), _data(1), _data(2)
    plain, _ = sparsify(model, 2, 4, score="wanda", reconstruct=False, calibration=data,
                        progress=False)
    refit, _ = sparsify(model, 2, 4, score="wanda", calibration=data, progress=False)
    sgpt, _ = sparsify(model, 2, 4, score="obs", method="sparsegpt", calibration=data,
                       progress=False)
    e_plain = _output_error(plain, model, held)
    assert _output_error(refit, model, held) < 0.8 * e_plain
    assert _output_error(sgpt, model, held) < 0.8 * e_plain


def test_refit_matches_a_least_squares_reference():
    """The pruned layer's refit weights and bias are the least squares on the calibration
    inputs, with a free bias (one Linear, damping 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    data = [torch.randn(64, 8) @ torch.randn(8, 8) for _ in range(2)]
    pruned, _ = sparsify(model, 2, 4, transposable=True, score="magnitude", damping=0.0,
                         calibration=data, progress=False)
    X = torch.cat(data).double().numpy()
    with torch.no_grad():
        Y = model(torch.cat(data)).double().numpy()
    w = pruned[0].weight.detach().double().numpy()
    for r in range(4):
        S = w[r] != 0
        A = np.hstack([X[:, S], np.ones((len(X), 1))])
        sol = np.linalg.lstsq(A, Y[:, r], rcond=None)[0]
        np.testing.assert_allclose(w[r, S], sol[:-1], rtol=1e-4, atol=1e-5)
        assert float(pruned[0].bias[r].detach()) == pytest.approx(sol[-1], rel=1e-4, abs=1e-5)


def test_conversion_of_an_unstructured_sparse_model():
    """Hubara et al.: a model pruned without structure becomes N:M; with the refit its
    outputs stay much closer than with the mask alone."""
    model, data, held = _mlp(3), _data(3), _data(4)
    from torch.nn.utils import prune

    sparse = copy.deepcopy(model)
    for mod in (sparse[0], sparse[2], sparse[4]):
        prune.l1_unstructured(mod, "weight", amount=0.5)
        prune.remove(mod, "weight")
    masked, _ = sparsify(sparse, 2, 4, score="magnitude", reconstruct=False, progress=False)
    refit, rep = sparsify(sparse, 2, 4, score="magnitude", calibration=data, progress=False)
    for mod in (refit[0], refit[2], refit[4]):
        assert is_nm(mod.weight, 2, 4, transposable=True)
    assert _output_error(refit, sparse, held) < 0.7 * _output_error(masked, sparse, held)


def test_finetune_holds_the_masks_and_lowers_the_loss():
    model, data = _mlp(5), _data(5)
    pruned, rep = sparsify(model, 2, 4, score="wanda", calibration=data, finetune=60, lr=1e-3,
                           progress=False)
    assert rep.finetune_steps == 60 and len(rep.finetune_losses) == 60
    assert np.mean(rep.finetune_losses[-10:]) < np.mean(rep.finetune_losses[:10])
    for mod in (pruned[0], pruned[2], pruned[4]):
        assert not hasattr(mod, "weight_orig")  # plain weights again
        assert is_nm(mod.weight, 2, 4, transposable=True)


def test_conv2d_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    data = [torch.randn(8, 3, 6, 6) for _ in range(12)]
    pruned, rep = sparsify(model, 2, 4, score="obs", calibration=data, progress=False)
    done = {r.name: r for r in rep.layers}
    assert done["2"].skipped is None and is_nm(pruned[2].weight, 2, 4, transposable=True)
    assert done["2"].error_after <= done["2"].error_masked
    assert done["0"].skipped is not None  # 8 x 27: not divisible by 4 in both dimensions


def test_bad_input_is_refused_before_any_work():
    model = _mlp()
    with pytest.raises(ValueError, match="needs calibration"):
        sparsify(model, 2, 4, score="wanda", progress=False)
    with pytest.raises(ValueError, match="needs calibration"):
        sparsify(model, 2, 4, score="magnitude", reconstruct=True, calibration=[],
                 progress=False)
    with pytest.raises(ValueError, match="score"):
        sparsify(model, 2, 4, score="random", calibration=_data(), progress=False)
    with pytest.raises(ValueError, match="method"):
        sparsify(model, 2, 4, method="obc", calibration=_data(), progress=False)
    with pytest.raises(ValueError, match="n must be <= m"):
        sparsify(model, 5, 4, calibration=_data(), progress=False)
    tiny = [torch.randn(4, 16)]  # 4 tokens for 16 inputs: under-determined
    with pytest.raises(ValueError, match="under-determined"):
        sparsify(model, 2, 4, calibration=tiny, damping=0.0, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rep = sparsify(model, 2, 4, calibration=tiny, progress=False)
    assert any("under-determined" in str(w.message) for w in caught)
    assert rep.layers[0].underdetermined


def test_masked_reconstruction_error_is_the_output_error():
    rng = np.random.default_rng(0)
    X, W = rng.normal(size=(30, 8)), rng.normal(size=(3, 8))
    mask = rng.random((3, 8)) < 0.5
    p = MaskedReconstruction(W, X.T @ X, mask, damping=0.0)
    w = np.where(mask, W, 0.0)
    assert p.objective(w) == pytest.approx(float(((X @ (w - W).T) ** 2).sum()), rel=1e-9)


def test_block_cache_gives_the_statistics_of_a_full_pass():
    """Running only block 1 on cached inputs gives the same X^T X and cross terms as
    running the whole MiniLM with hooks (after block 0 was pruned)."""
    from pruneopt.adapters.calibration import make_batches
    from pruneopt.adapters.models import load_minilm, stdlib_sentences
    from pruneopt.adapters.oneshot import BlockCache, default_forward, find_blocks

    dense = load_minilm()
    batches = make_batches(dense, stdlib_sentences(12), 6)
    pruned, _ = sparsify(dense, 2, 4, score="magnitude", reconstruct=False,
                         include="*layer.0.*", progress=False)
    names = [n for n, mod in pruned.named_modules()
             if ".layer.1.attention.self." in n and isinstance(mod, nn.Linear)]
    prefix = find_blocks(pruned, names)
    assert prefix is not None and prefix.endswith("encoder.layer")
    cache = BlockCache(prefix, pruned, dense, batches, default_forward)
    fast = cache.statistics(names)
    full = calibration_statistics(pruned, names, batches, dense=dense)
    for n in names:
        assert fast[n].tokens == full[n].tokens > 0
        torch.testing.assert_close(fast[n].H, full[n].H, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(fast[n].G, full[n].G, rtol=1e-6, atol=1e-6)
