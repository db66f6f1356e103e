"""One-shot N:M sparsification with calibration data: a model in, a pruned model out.

The anchors' ``oneshot`` shape (llm-compressor; SparseGPT and Wanda underneath), with the
masks solved exactly by pruneopt's N:M solvers:

1. **Calibration, sequentially.** The layers to prune are put in *groups* in the order the
   model calls them (layers that read the same input tensor, like an attention block's
   query, key and value maps, form one group). For each group in turn the calibration
   batches run through the model, **already pruned** up to that group, and a hook
   accumulates ``H = X^T X`` of each layer's inputs (float64; padding tokens left out when
   the batch has an ``attention_mask``), and ``G = X_p^T X_d`` against the dense model's
   inputs on the same tokens. When the layers sit in a list of blocks that feed each other
   (a transformer's ``encoder.layer``), the block inputs are cached and only the current
   block runs for a group (:class:`BlockCache`; memory: two copies of one block's input
   activations); otherwise the whole model runs, stopping once the group has been reached.
2. **Scores** (:func:`pruneopt.formulations.reconstruction.saliency`): ``"magnitude"``
   ``|W|``, ``"wanda"`` ``|W_rj| sqrt(H_jj)``, ``"obs"`` ``W_rj^2 / [H_d^{-1}]_jj``.
3. **Mask**: the optimal N:M (transposable) mask for the score, by the registry's exact
   solver (``mask_solver``; the report keeps its status and bound).
4. **Reconstruction** (``reconstruct=True``): the kept weights refit exactly to the dense
   layer's outputs on the calibration inputs (:class:`~pruneopt.formulations.
   MaskedReconstruction`, AdaPrune's layer-wise step), or ``method="sparsegpt"``: SparseGPT's
   joint mask and update with an exact mask per slab, then the same refit
   (:class:`~pruneopt.formulations.JointReconstruction`).
5. **Fine-tune** (``finetune=steps``, off by default): knowledge distillation to the dense
   model's outputs on the calibration batches with the masks held by
   ``torch.nn.utils.prune`` (pruned weights stay zero), Adam, a progress bar.

The result is a copy of the model (``inplace=False``) with the masked weights baked in
(plain tensors with zeros: it saves and loads like the input), and a :class:`SparsifyReport`
(per layer: solver, mask status, kept score and its bound, reconstruction error before and
after, relative to removing the whole layer). An already unstructured-sparse model converts
to N:M the same way (Hubara et al.'s first use of AdaPrune): its zeros score 0.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
import torch
from torch import nn
from torch.nn.utils import prune

import pruneopt
from pruneopt.adapters.calibration import forward as encoder_forward
from pruneopt.adapters.nm import DEFAULT_TYPES, as_matrix, select_modules, verify_nm
from pruneopt.formulations.nm import NMMask, TransposableNM, validate_nm
from pruneopt.formulations.reconstruction import (
    DAMPING,
    SCORES,
    JointReconstruction,
    MaskedReconstruction,
    damped,
    saliency,
)

METHODS = ("mask-refit", "sparsegpt")


@dataclass
class LayerRecord:
    """One line of the report. Errors are ``E(w) / E(0)``: the output error on the
    calibration data (damping included) relative to removing every weight of the layer."""

    name: str
    shape: tuple[int, ...]
    tokens: int = 0
    score: str = "magnitude"
    mask_solver: str | None = None
    mask_status: str | None = None
    kept_score: float | None = None
    score_bound: float | None = None
    error_masked: float | None = None
    error_after: float | None = None
    reconstructed: bool = False
    underdetermined: bool = False
    seconds: float = 0.0
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class SparsifyReport:
    """What :func:`sparsify` did: the settings, one :class:`LayerRecord` per selected layer,
    the fine-tune losses, and the total seconds."""

    n: int
    m: int
    transposable: bool
    score: str
    reconstruct: bool
    method: str
    layers: list[LayerRecord] = field(default_factory=list)
    calibration_batches: int = 0
    finetune_steps: int = 0
    finetune_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [r.as_dict() for r in self.layers]
        return d

    def table(self) -> str:
        """The per-layer report as a markdown table."""
        lines = ["| layer | shape | mask | kept score / bound | error masked | error after |",
                 "|---|---|---|---:|---:|---:|"]
        for r in self.layers:
            if r.skipped:
                lines.append(f"| {r.name} | {tuple(r.shape)} | skipped: {r.skipped} | | | |")
                continue
            ratio = (r.kept_score / r.score_bound if r.score_bound else float("nan"))
            after = "-" if r.error_after is None else f"{r.error_after:.4f}"
            lines.append(f"| {r.name} | {tuple(r.shape)} | {r.mask_solver} {r.mask_status} | "
                         f"{ratio:.6f} | {r.error_masked:.4f} | {after} |")
        return "\n".join(lines)


# ------------------------------------------------------------------------ calibration


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on one calibration batch: a dict of tokenized text (SentenceTransformer
    or Hugging Face encoder, :func:`pruneopt.adapters.calibration.forward`), a tensor, or a
    ``(inputs, ...)`` tuple / list (the inputs only, e.g. a DataLoader's ``(x, y)``)."""
    if isinstance(batch, dict):
        return encoder_forward(model, batch)
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once every layer of a group has run."""


def _layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows the layer multiplies by its weight matrix: (tokens, in) for a Linear,
    (positions, in*kh*kw) for a Conv2d (its unfolded patches)."""
    if isinstance(module, nn.Conv2d):
        cols = torch.nn.functional.unfold(x, module.kernel_size, dilation=module.dilation,
                                          padding=module.padding, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


@dataclass
class LayerStats:
    """Calibration statistics of one layer (float64): ``H = X_p^T X_p`` of the inputs it sees
    in the model being pruned, ``G = X_p^T X_d`` against the inputs the dense model's same
    layer sees on the same tokens (``None`` for ``target="pruned"``), their column sums
    and the token count."""

    H: torch.Tensor
    G: torch.Tensor | None
    sum_p: torch.Tensor
    sum_d: torch.Tensor | None
    tokens: int


class _Capture:
    """Accumulates the statistics of a group's layers; stops the forward pass once all ran.

    With ``dense`` (the same model, unpruned), each batch first runs through it to record
    the group's dense inputs, which the pass through the pruned model then pairs token by
    token with its own (``G``)."""

    def __init__(self, modules: dict[str, nn.Module], dense: dict[str, nn.Module] | None):
        self.modules = modules
        self.dense = dense
        self.stats: dict[str, LayerStats] = {}
        self.keep: torch.Tensor | None = None  # real tokens of the current batch
        self.seen: set[str] = set()
        self.rows: dict[str, torch.Tensor] = {}
        self.dense_rows: dict[str, torch.Tensor] = {}

    def _rows(self, module: nn.Module, args: tuple) -> torch.Tensor:
        rows = _layer_inputs(module, args[0].detach())
        if (self.keep is not None and not isinstance(module, nn.Conv2d)
                and rows.shape[0] == self.keep.numel()):
            rows = rows[self.keep]
        return rows.to(torch.float64)

    def hook(self, name: str, store: dict[str, torch.Tensor], count: int):
        def pre(module: nn.Module, args: tuple) -> None:
            if name not in store:  # a layer called twice in one pass: its first call
                store[name] = self._rows(module, args)
            self.seen.add(name)
            if len(self.seen) == count:
                raise _Reached

        return pre

    def _pass(self, modules: dict[str, nn.Module], model: nn.Module, batch: Any,
              forward: Callable[[nn.Module, Any], Any], store: dict[str, torch.Tensor]):
        self.seen = set()
        handles = [mod.register_forward_pre_hook(self.hook(name, store, len(modules)))
                   for name, mod in modules.items()]
        try:
            forward(model, batch)
        except _Reached:
            pass
        finally:
            for h in handles:
                h.remove()

    def run(self, model: nn.Module, batches: Sequence[Any],
            forward: Callable[[nn.Module, Any], Any], dense_model: nn.Module | None, *,
            dense_batches: Sequence[Any] | None = None,
            keeps: Sequence[torch.Tensor | None] | None = None) -> None:
        """Statistics over ``batches`` (run by ``forward``); the dense twin gets
        ``dense_batches`` (default the same batches); ``keeps`` are the real-token masks
        (default: each batch's ``attention_mask``)."""
        dense_batches = batches if dense_batches is None else dense_batches
        with torch.inference_mode():
            for i, b in enumerate(batches):
                if keeps is not None:
                    self.keep = keeps[i]
                else:
                    mask = b.get("attention_mask") if isinstance(b, dict) else None
                    self.keep = None if mask is None else mask.reshape(-1).bool()
                dense_rows: dict[str, torch.Tensor] = {}
                if self.dense is not None:
                    self._pass(self.dense, dense_model, dense_batches[i], forward, dense_rows)
                rows: dict[str, torch.Tensor] = {}
                self._pass(self.modules, model, b, forward, rows)
                for name, xp in rows.items():
                    xd = dense_rows.get(name)
                    st = self.stats.get(name)
                    h, sp = xp.T @ xp, xp.sum(0)
                    g = None if xd is None else xp.T @ xd
                    sd = None if xd is None else xd.sum(0)
                    if st is None:
                        self.stats[name] = LayerStats(h, g, sp, sd, xp.shape[0])
                    else:
                        st.H += h
                        st.sum_p += sp
                        st.tokens += xp.shape[0]
                        if g is not None:
                            st.G += g
                            st.sum_d += sd


@dataclass
class _Call:
    """The positional and keyword arguments of one call of a module."""

    args: tuple
    kwargs: dict


def _call(module: nn.Module, call: _Call) -> Any:
    return module(*call.args, **call.kwargs)


def _hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


class BlockCache:
    """Calibration that runs one block at a time (SparseGPT's way), for models whose layers
    to prune sit in a list of repeated blocks (``encoder.layer`` of a BERT, ``layers`` of a
    decoder) that feed each other.

    The inputs of the first block are captured once for every calibration batch; a group's
    statistics then come from running only its block on the cached inputs (the pruned
    model's, and the dense model's for the cross terms), and :meth:`advance` pushes both
    through a finished block. Memory: two copies of one block's input activations."""

    def __init__(self, prefix: str, target: nn.Module, reference: nn.Module | None,
                 batches: Sequence[Any], forward: Callable[[nn.Module, Any], Any]) -> None:
        self.prefix = prefix
        self.blocks = target.get_submodule(prefix)
        self.dense_blocks = None if reference is None else reference.get_submodule(prefix)
        self.keeps = []
        for b in batches:
            mask = b.get("attention_mask") if isinstance(b, dict) else None
            self.keeps.append(None if mask is None else mask.reshape(-1).bool())
        self.calls = self._first_inputs(target, batches, forward)
        self.dense_calls = list(self.calls) if reference is not None else None
        self.index = 0

    def _first_inputs(self, model, batches, forward) -> list[_Call]:
        calls: list[_Call] = []

        def pre(_m, args, kwargs):
            calls.append(_Call(tuple(args), dict(kwargs)))
            raise _Reached

        h = self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
        try:
            with torch.inference_mode():
                for b in batches:
                    try:
                        forward(model, b)
                    except _Reached:
                        pass
        finally:
            h.remove()
        return calls

    def block_of(self, name: str) -> int | None:
        rest = name[len(self.prefix) + 1:] if name.startswith(self.prefix + ".") else None
        head = None if rest is None else rest.split(".")[0]
        return int(head) if head is not None and head.isdigit() else None

    def advance(self, to: int) -> None:
        """Push the cached inputs through the blocks before ``to`` (already pruned)."""
        with torch.inference_mode():
            while self.index < to:
                blk = self.blocks[self.index]
                self.calls = [_Call((_hidden(_call(blk, c)),) + c.args[1:], c.kwargs)
                              for c in self.calls]
                if self.dense_calls is not None:
                    dblk = self.dense_blocks[self.index]
                    self.dense_calls = [_Call((_hidden(_call(dblk, c)),) + c.args[1:],
                                              c.kwargs) for c in self.dense_calls]
                self.index += 1

    def statistics(self, group: Sequence[str]) -> dict[str, LayerStats]:
        """:class:`LayerStats` of a group of layers of one block (at or after the cache)."""
        i = self.block_of(group[0])
        self.advance(i)
        local = [n[len(f"{self.prefix}.{i}."):] for n in group]
        blk = self.blocks[i]
        mods = {n: blk.get_submodule(loc) for n, loc in zip(group, local, strict=True)}
        dense = None
        if self.dense_calls is not None:
            dblk = self.dense_blocks[i]
            dense = {n: dblk.get_submodule(loc) for n, loc in zip(group, local, strict=True)}
        cap = _Capture(mods, dense)
        cap.run(blk, self.calls, _call, None if dense is None else self.dense_blocks[i],
                dense_batches=self.dense_calls, keeps=self.keeps)
        return cap.stats


def find_blocks(model: nn.Module, names: Sequence[str]) -> str | None:
    """The name of the ``nn.ModuleList`` of blocks that holds every layer in ``names`` (and
    whose blocks feed one another), or None: then calibration runs the whole model."""
    best = None
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) < 2:
            continue
        inside = all(n.startswith(prefix + ".") and n[len(prefix) + 1:].split(".")[0].isdigit()
                     for n in names)
        if inside and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def _chained(model: nn.Module, prefix: str, batch: Any,
             forward: Callable[[nn.Module, Any], Any]) -> bool:
    """Whether each block of ``prefix`` takes the previous block's output as its first
    input (checked on one batch), so that the blocks can be run one at a time."""
    blocks = model.get_submodule(prefix)
    seen_in: list[torch.Tensor] = []
    seen_out: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda _m, a: seen_in.append(a[0])) for b in blocks]
    hooks += [b.register_forward_hook(lambda _m, _a, o: seen_out.append(_hidden(o)))
              for b in blocks]
    try:
        with torch.inference_mode():
            forward(model, batch)
    finally:
        for h in hooks:
            h.remove()
    if len(seen_in) != len(blocks) or len(seen_out) != len(blocks):
        return False
    return all(torch.equal(seen_in[j + 1], seen_out[j]) for j in range(len(blocks) - 1))


def layer_groups(model: nn.Module, names: Sequence[str], batch: Any,
                 forward: Callable[[nn.Module, Any], Any] = default_forward) -> list[list[str]]:
    """``names`` grouped in the order ``model`` calls them on ``batch``; consecutive layers
    that read the same input tensor share a group. Layers never called are left out."""
    modules = dict(model.named_modules())
    order: list[tuple[str, int]] = []

    def hook(name):
        def pre(_m, args):
            if name not in {n for n, _ in order}:
                order.append((name, args[0].data_ptr()))
        return pre

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.inference_mode():
            forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    last_ptr = None
    for name, ptr in order:
        if groups and ptr == last_ptr:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_ptr = ptr
    return groups


def calibration_statistics(model: nn.Module, names: Sequence[str], batches: Sequence[Any], *,
                           dense: nn.Module | None = None,
                           forward: Callable[[nn.Module, Any], Any] = default_forward
                           ) -> dict[str, LayerStats]:
    """:class:`LayerStats` of the named layers over ``batches`` (one pass each through
    ``model`` and, when given, through ``dense``, its unpruned twin with the same layer
    names, for the cross statistics). Neither model is modified."""
    modules = dict(model.named_modules())
    dense_mods = None if dense is None else dict(dense.named_modules())
    cap = _Capture({n: modules[n] for n in names},
                   None if dense_mods is None else {n: dense_mods[n] for n in names})
    cap.run(model, batches, forward, dense)
    return cap.stats


def effective_target(W: np.ndarray, bias: np.ndarray | None, st: LayerStats,
                     damping: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The least-squares problem a layer's kept weights solve, in standard form.

    The kept weights ``w`` (and, for a layer with a bias, a free bias ``c``) minimize
    ``||X_p w^T + c - (X_d W^T + b)||^2 + lambda ||w - W||^2`` over the calibration tokens:
    match the dense layer's outputs on the dense model's inputs (AdaPrune's target; with
    ``G = None`` the pruned model's own inputs, SparseGPT's). With a free bias the inputs are
    centred; then ``E(w) = sum_r (w_r - W*_r)^T H_d (w_r - W*_r) + const`` with ``H_d =
    H_c + lambda I`` and ``H_d W*^T = G_c W^T + lambda W^T``. Returns ``(W*, H_c, mean)``:
    the effective dense weights and covariance for :class:`MaskedReconstruction` /
    :class:`JointReconstruction`, and what the bias needs (``None`` without one)."""
    N = max(st.tokens, 1)
    H = st.H.numpy()
    G = H if st.G is None else st.G.numpy()
    mu_p = st.sum_p.numpy() / N
    mu_d = mu_p if st.sum_d is None else st.sum_d.numpy() / N
    if bias is not None:  # the bias absorbs the means: centred statistics
        H = H - N * np.outer(mu_p, mu_p)
        G = G - N * np.outer(mu_p, mu_d)
    Hd = damped(H, damping)
    lam = float(Hd[0, 0] - H[0, 0])
    if st.G is None and bias is None:
        return W, H, None
    rhs = G @ W.T + lam * W.T  # (C, R): one right-hand side per output row
    Wstar = sla.cho_solve(sla.cho_factor(Hd, check_finite=False), rhs, check_finite=False).T
    return Wstar, H, (None if bias is None else (mu_p, mu_d))


# ------------------------------------------------------------------------ the pipeline


def _needs_calibration(score: str, reconstruct: bool, finetune: int) -> bool:
    return score != "magnitude" or reconstruct or finetune > 0


def _validate(n, m, score, method, damping, finetune, calibration, reconstruct):
    n, m = validate_nm(n, m)
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(finetune, bool) or not isinstance(finetune, int) or finetune < 0:
        raise ValueError(f"finetune must be a number of steps >= 0, got {finetune!r}")
    if not (isinstance(damping, int | float) and np.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    if _needs_calibration(score, reconstruct, finetune):
        if calibration is None or len(calibration) == 0:
            what = [w for w, on in ((f"score={score!r}", score != "magnitude"),
                                    ("reconstruct=True", reconstruct),
                                    ("finetune", finetune > 0)) if on]
            raise ValueError(f"{', '.join(what)} needs calibration batches (e.g. "
                             f"pruneopt.adapters.calibration.make_batches(model, sentences)); "
                             f"or use score='magnitude', reconstruct=False")
    return n, m


def _matrix_weight(module: nn.Module) -> np.ndarray:
    return as_matrix(module.weight)


def _write_weight(module: nn.Module, w: np.ndarray) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w.reshape(module.weight.shape)).to(
            module.weight.dtype))


def _process(name: str, module: nn.Module, st: LayerStats | None, *, n: int, m: int,
             transposable: bool, score: str, reconstruct: bool, method: str, damping: float,
             mask_solver: str | None, time_limit: float | None
             ) -> tuple[np.ndarray | None, LayerRecord]:
    """Mask (and refit) one layer in place; returns its mask (weight-shaped, bool)."""
    t0 = time.perf_counter()
    W = _matrix_weight(module)
    R, C = W.shape
    rec = LayerRecord(name=name, shape=tuple(module.weight.shape), score=score,
                      tokens=0 if st is None else st.tokens)
    if C % m or (transposable and R % m):
        rec.skipped = (f"matrix shape {R}x{C} is not divisible by m={m}"
                       f"{' in both dimensions' if transposable else ''}")
        return None, rec
    if isinstance(module, nn.Conv2d) and module.groups != 1 and st is not None:
        rec.skipped = "grouped convolution: calibration statistics need groups=1"
        return None, rec
    bias = None
    if getattr(module, "bias", None) is not None:
        bias = module.bias.detach().to("cpu", torch.float64).numpy()
    Wt, H, means = W, None, None
    if st is not None:
        if st.tokens < C:
            rec.underdetermined = True
            if damping == 0:
                raise ValueError(f"{name}: {st.tokens} calibration tokens for {C} inputs leave "
                                 f"the least squares under-determined; use damping > 0 or "
                                 f"more calibration text")
        Wt, H, means = effective_target(W, bias if reconstruct else None, st, damping) \
            if reconstruct else (W, st.H.numpy(), None)
    s = saliency(Wt, H, score, damping=damping)
    problem = (TransposableNM if transposable else NMMask)(s, n, m)
    if reconstruct and method == "sparsegpt":
        joint = JointReconstruction(Wt, H, n, m, transposable=transposable, damping=damping)
        sol = pruneopt.solve(joint, solver="sparsegpt", time_limit=time_limit)
        w = np.asarray(sol.decision)
        mask = w != 0
        rec.mask_solver, rec.mask_status = "sparsegpt (exact mask per slab)", sol.status
        rec.kept_score = float(s[mask].sum())
        msol = pruneopt.solve(problem, solver=mask_solver, time_limit=time_limit)
        rec.score_bound = float(msol.bound if msol.bound is not None else msol.objective)
    else:
        msol = pruneopt.solve(problem, solver=mask_solver, time_limit=time_limit)
        mask = np.asarray(msol.decision, dtype=bool)
        rec.mask_solver, rec.mask_status = msol.solver, msol.status
        rec.kept_score = float(msol.objective)
        rec.score_bound = float(msol.bound if msol.bound is not None else msol.objective)
        w = np.where(mask, W, 0.0)
        if reconstruct:
            fit = MaskedReconstruction(Wt, H, mask, damping=damping)
            w = np.asarray(pruneopt.solve(fit, time_limit=time_limit).decision)
    if H is not None:
        ref = MaskedReconstruction(Wt, H, mask, damping=damping)
        scale = ref.objective_scale() or 1.0
        rec.error_masked = ref.objective(np.where(mask, W, 0.0)) / scale
        rec.error_after = ref.objective(w) / scale
    rec.reconstructed = bool(reconstruct)
    _write_weight(module, w)
    if means is not None and bias is not None:  # the free bias: dense mean output - w mu_p
        mu_p, mu_d = means
        new_bias = W @ mu_d + bias - w @ mu_p
        with torch.no_grad():
            module.bias.copy_(torch.from_numpy(new_bias).to(module.bias.dtype))
    rec.seconds = time.perf_counter() - t0
    return mask.reshape(module.weight.shape), rec


def model_output(model: nn.Module, batch: Any,
                 forward: Callable[[nn.Module, Any], Any] = default_forward) -> torch.Tensor:
    """The tensor to distil: a SentenceTransformer's ``sentence_embedding``, a Hugging Face
    output's ``last_hidden_state``, or the output itself."""
    out = forward(model, batch)
    if isinstance(out, dict):
        for key in ("sentence_embedding", "last_hidden_state", "logits"):
            if key in out:
                return out[key]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, tuple | list):
        return out[0]
    return out


def finetune_masked(model: nn.Module, dense: nn.Module, masks: dict[str, torch.Tensor],
                    batches: Sequence[Any], steps: int, *, lr: float = 1e-4, seed: int = 0,
                    forward: Callable[[nn.Module, Any], Any] = default_forward,
                    progress: bool = True) -> list[float]:
    """Distil ``dense``'s outputs into ``model`` (in place) for ``steps`` Adam steps over the
    calibration ``batches``, with the masks held by ``torch.nn.utils.prune`` (the pruned
    weights stay exactly zero). Returns the mean-squared-error loss of every step."""
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    with torch.no_grad():
        targets = [model_output(dense, b, forward).detach().float() for b in batches]
    for name, mk in masks.items():
        prune.custom_from_mask(modules[name], "weight", mk.to(modules[name].weight.device))
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    was = model.training
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="fine-tune (masks held)", disable=not progress, leave=False)
    try:
        for _ in bar:
            i = int(torch.randint(len(batches), (1,), generator=gen))
            loss = torch.nn.functional.mse_loss(model_output(model, batches[i], forward).float(),
                                                targets[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3g}")
    finally:
        model.train(was)
        for name in masks:
            prune.remove(modules[name], "weight")
    return losses


def sparsify(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    score: str = "wanda",
    reconstruct: bool = True,
    method: str = "mask-refit",
    calibration: Sequence[Any] | None = None,
    damping: float = DAMPING,
    target_inputs: str = "dense",
    finetune: int = 0,
    lr: float = 1e-4,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
    mask_solver: str | None = None,
    time_limit: float | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    inplace: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, SparsifyReport]:
    """N:M (transposable) sparsification of ``model`` with calibration data (module docstring).

    Parameters
    ----------
    n, m : keep ``n`` of every ``m`` (2:4 keeps half).
    transposable : ``W`` and ``W^T`` both N:M (one mask for the forward and backward pass).
    score : ``"magnitude"``, ``"wanda"`` or ``"obs"`` (the last two need ``calibration``).
    reconstruct : refit the kept weights to the dense layer's outputs (needs calibration).
    method : ``"mask-refit"`` (exact mask for the score, exact refit) or ``"sparsegpt"``.
    calibration : batches for ``forward(model, batch)`` (for a SentenceTransformer: the dicts
        of :func:`pruneopt.adapters.calibration.make_batches`).
    damping : ridge, as a fraction of mean(diag X^T X) (needed when a layer sees fewer
        calibration tokens than it has inputs; such layers are flagged ``underdetermined``).
    target_inputs : what the refit reproduces: ``"dense"`` the dense layer's outputs on the
        dense model's inputs (AdaPrune; corrects the error of the layers before), or
        ``"pruned"`` the dense layer's outputs on the pruned model's inputs (SparseGPT).
        A layer's bias is refit with its weights (it absorbs the shift of the mean output).
    finetune : Adam steps of distillation to the dense model with the masks held (0: off);
        ``lr`` its learning rate.
    include, exclude, types : which layers (:func:`pruneopt.adapters.nm.select_modules`;
        default every Linear/Conv2d but embeddings, pooler and heads).
    mask_solver, time_limit : the N:M mask solver (None: the registry's exact default) and
        seconds per layer.
    forward : ``forward(model, batch)`` (default: SentenceTransformer / Hugging Face / plain
        call); ``inplace``: prune ``model`` itself instead of a copy.

    Returns ``(pruned_model, report)``; the pruned layers hold plain weights with zeros.
    """
    t0 = time.perf_counter()
    n, m = _validate(n, m, score, method, damping, finetune, calibration, reconstruct)
    forward = forward or default_forward
    if target_inputs not in ("dense", "pruned"):
        raise ValueError(f"target_inputs must be 'dense' or 'pruned', got {target_inputs!r}")
    dense_target = reconstruct and target_inputs == "dense"
    # the unpruned model, for dense targets and distillation (model itself unless inplace)
    reference = copy.deepcopy(model) if inplace and (dense_target or finetune) else model
    target = model if inplace else copy.deepcopy(model)
    chosen = [name for name, _ in select_modules(target, include=include, exclude=exclude,
                                                  types=types)]
    report = SparsifyReport(n=n, m=m, transposable=bool(transposable), score=score,
                            reconstruct=bool(reconstruct), method=method,
                            calibration_batches=0 if calibration is None else len(calibration))
    modules = dict(target.named_modules())
    calibrated = _needs_calibration(score, reconstruct, 0)
    if calibrated:
        groups = layer_groups(target, chosen, calibration[0], forward)
        never = [nm_ for nm_ in chosen if all(nm_ not in g for g in groups)]
    else:
        groups, never = [[nm_] for nm_ in chosen], []
    from tqdm.auto import tqdm

    masks: dict[str, torch.Tensor] = {}
    records: dict[str, LayerRecord] = {}
    bar = tqdm(groups, desc=f"{n}:{m} sparsify", unit="group", disable=not progress,
               leave=False)
    cache = None
    if calibrated:
        prefix = find_blocks(target, [nm_ for g in groups for nm_ in g])
        if prefix is not None and _chained(target, prefix, calibration[0], forward):
            cache = BlockCache(prefix, target, reference if dense_target else None,
                               calibration, forward)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for group in bar:
            stats: dict[str, LayerStats] = {}
            if cache is not None:
                stats = cache.statistics(group)
            elif calibrated:
                stats = calibration_statistics(target, group, calibration, forward=forward,
                                               dense=reference if dense_target else None)
            for name in group:
                mk, rec = _process(name, modules[name], stats.get(name), n=n,
                                   m=m, transposable=transposable, score=score,
                                   reconstruct=reconstruct, method=method, damping=damping,
                                   mask_solver=mask_solver, time_limit=time_limit)
                records[name] = rec
                if mk is not None:
                    masks[name] = torch.from_numpy(mk)
    for name in never:
        records[name] = LayerRecord(name=name, shape=tuple(modules[name].weight.shape),
                                    skipped="not called on the calibration data")
    report.layers = [records[name] for name in chosen]
    if any(r.underdetermined for r in report.layers):
        warnings.warn("some layers saw fewer calibration tokens than inputs: their least "
                      "squares are under-determined and rely on the damping (see the report)",
                      stacklevel=2)
    if finetune:
        report.finetune_losses = finetune_masked(target, reference, masks, calibration, finetune,
                                                 lr=lr, seed=seed, forward=forward,
                                                 progress=progress)
        report.finetune_steps = finetune
    if masks:
        verify_nm(target, n, m, transposable=transposable, names=list(masks))
    report.seconds = time.perf_counter() - t0
    return target, report
