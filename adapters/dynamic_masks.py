"""Sparse training with dynamic masks: DPF, SR-STE and masked-gradient training.

The dense weights ``W`` stay the parameters; the forward and backward passes use the masked
weights ``W * M`` (``torch.nn.utils.parametrize``: ``module.weight`` *is* ``W * M``, the
parameter is ``module.parametrizations.weight.original``). With ``g = dL/d(W * M)``, the
gradient the optimizer sees on ``W`` is, by ``update``:

- ``"dpf"`` (dynamic pruning with feedback, Lin et al., ICLR 2020): ``g`` itself, the
  straight-through estimator. Pruned weights keep receiving the gradient of the masked
  model, so they can grow back when the mask is recomputed.
- ``"srste"`` (Zhou et al., ICLR 2021): ``g + lambda (1 - M) * W``, the straight-through
  gradient plus a decay ``lambda`` (``decay``, default 2e-4) that pulls pruned weights
  towards zero, which stabilises the mask.
- ``"masked"``: ``g * M`` (the gradient only on kept weights: the static-mask rule; pruned
  weights move only through the optimizer's own momentum or weight decay).

Every ``every`` optimizer steps (:mod:`~pruneopt.adapters.mask_schedule`) the masks are
recomputed from scores of the dense weights: ``|W|`` (``score="magnitude"``), Wanda's
``|W_rj| ||x_j||`` (``score="wanda"`` with per-layer input norms ``||x_j||``, e.g. from
:func:`wanda_input_norms`), or any callable ``score(name, module, W) -> weight-shaped``.
A mask is, per layer,

- ``pattern="transposable"``: the best mask of :class:`~pruneopt.formulations.
  TransposableNM` (W and W^T both N:M: the same mask serves the forward ``W x`` and the
  backward ``W^T g``; Hubara et al., NeurIPS 2021) by any registered solver: exact
  (``solver=None``: the registry's default, enumeration for 2:4, min-cost flow for 4:8) or
  Hubara's greedy 2-approximation (``solver="greedy"``; ``solver_options={"complete":
  False}`` for the plain greedy);
- ``pattern="nm"``: :class:`~pruneopt.formulations.NMMask` (top-n of every m inputs);
- ``pattern="unstructured"``: the top-k scores of the layer (``k = round((1 - s_t)
  numel)``, exact; no solver).

The sparsity ramps from dense to the target with DPF's cubic schedule; for N:M targets
the ramp runs through the patterns ``n_t:m`` with ``n_t`` from m down to n (the reasons are
in :mod:`~pruneopt.adapters.mask_schedule`).

Use with a plain loop and any optimizer::

    sp = DynamicSparsifier(model, "transposable", 2, 4, every=16, ramp_steps=200)
    for x, y in data:
        loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
        sp.step()                     # or once: sp.attach(opt)
    model = sp.finalize()             # plain modules, W * M baked in, N:M verified

The masks and the step counter are buffers of the parametrizations, so ``model.state_dict()``
carries them and ``model.load_state_dict`` resumes mid-schedule; the sparsifier's own
``state_dict()`` adds its settings and statistics (:mod:`~pruneopt.adapters.mask_stats`).
Every bad setting is a ``ValueError`` in the constructor, never mid-training.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

import pruneopt
from pruneopt.adapters.mask_schedule import PATTERNS, SparsitySchedule
from pruneopt.adapters.mask_stats import flip_count, kept_and_total
from pruneopt.adapters.nm import DEFAULT_TYPES, select_modules, verify_nm
from pruneopt.adapters.oneshot import calibration_statistics, default_forward
from pruneopt.formulations.nm import NMMask, TransposableNM
from pruneopt.solvers import get_solver
from pruneopt.solvers.options import check_options
from pruneopt.solvers.registry import check_time_limit

UPDATES = ("dpf", "srste", "masked")
#: SR-STE's decay on the pruned weights (Zhou et al. use lambda_w = 2e-4).
SRSTE_DECAY = 2e-4
SCORE_KINDS = ("magnitude", "wanda")

ScoreFn = Callable[[str, nn.Module, torch.Tensor], torch.Tensor]


class _MaskedWeight(torch.autograd.Function):
    """``W * M`` forward; backward by the update rule (module docstring)."""

    @staticmethod
    def forward(ctx, weight, mask, update, decay):
        ctx.save_for_backward(weight, mask)
        ctx.update, ctx.decay = update, decay
        return weight * mask.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        if ctx.update == "masked":
            g = grad * mask.to(grad.dtype)
        elif ctx.update == "srste":
            g = grad + ctx.decay * weight * (~mask).to(grad.dtype)
        else:
            g = grad
        return g, None, None, None


def settings_code(schedule: SparsitySchedule, update: str) -> torch.Tensor:
    """The settings a saved mask depends on, as an int64 vector (a buffer of each layer's
    parametrization, compared when a state_dict is loaded): pattern, n, m, update, every."""
    return torch.tensor([PATTERNS.index(schedule.pattern), schedule.n, schedule.m,
                         UPDATES.index(update), schedule.every], dtype=torch.int64)


class WeightMask(nn.Module):
    """The parametrization ``W -> W * M`` of one layer (buffers ``mask``, bool, weight-shaped;
    ``step``, the optimizer steps done; ``settings``, :func:`settings_code`)."""

    def __init__(self, mask: torch.Tensor, settings: torch.Tensor, update: str,
                 decay: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).clone())
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("settings", settings.clone())
        self.update, self.decay = update, float(decay)
        self.register_load_state_dict_pre_hook(self._check_settings)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _MaskedWeight.apply(weight, self.mask, self.update, self.decay)

    def _check_settings(self, module, state_dict, prefix, *_args) -> None:
        saved = state_dict.get(prefix + "settings")
        if saved is not None and not torch.equal(saved.to(torch.int64), self.settings):
            names = ("pattern", "n", "m", "update", "every")
            diff = [f"{k} {int(a)} (saved) vs {int(b)} (here)" for k, a, b in
                    zip(names, saved.tolist(), self.settings.tolist(), strict=True) if a != b]
            raise ValueError(f"the state_dict was saved by a sparsifier with other settings: "
                             f"{', '.join(diff)} (pattern codes {PATTERNS}, update codes "
                             f"{UPDATES}); build the sparsifier with the saved settings")


def wanda_input_norms(model: nn.Module, names: Sequence[str], batches: Sequence[Any], *,
                      forward: Callable[[nn.Module, Any], Any] = default_forward
                      ) -> dict[str, torch.Tensor]:
    """Per layer, the input norms ``||x_j|| = sqrt(H_jj)`` over the calibration batches (for
    ``score="wanda"``; a Conv2d's inputs are its unfolded patches, length in*kh*kw). Runs
    ``forward(model, batch)`` on each batch; does not modify the model."""
    stats = calibration_statistics(model, list(names), batches, forward=forward)
    missing = [n for n in names if n not in stats]
    if missing:
        raise ValueError(f"layers {missing} were not called on the calibration batches")
    return {n: torch.sqrt(torch.diagonal(stats[n].H)).to(torch.float32) for n in names}


def _matrix_shape(weight: torch.Tensor) -> tuple[int, int]:
    return weight.shape[0], int(np.prod(weight.shape[1:]))


def _fit_problems(layers: Sequence[tuple[str, nn.Module]], schedule: SparsitySchedule
                  ) -> list[str]:
    bad = []
    m = schedule.m
    for name, mod in layers:
        R, C = _matrix_shape(mod.weight)
        if schedule.pattern == "transposable" and (R % m or C % m):
            bad.append(f"{name} ({R}x{C})")
        elif schedule.pattern == "nm" and C % m:
            bad.append(f"{name} ({R}x{C})")
    return bad


class DynamicSparsifier:
    """Training-time masks on the selected layers of ``model`` (module docstring).

    **Modifies ``model``**: each selected layer's ``weight`` becomes parametrized
    (``W * M``); :meth:`finalize` turns them back into plain weights with zeros.

    Parameters
    ----------
    model : the model; layers chosen by ``include``/``exclude``/``types``/``regex`` like
        :func:`pruneopt.adapters.nm.select_modules` (default every Linear/Conv2d but
        embeddings, pooler, heads).
    pattern, n, m, sparsity : ``"transposable"`` or ``"nm"`` n:m masks, or
        ``"unstructured"`` top-k masks pruning the fraction ``sparsity``.
    update : ``"dpf"``, ``"srste"`` or ``"masked"``; ``decay``: SR-STE's lambda (only for
        ``"srste"``; default :data:`SRSTE_DECAY`), in gradient units per weight unit.
    every, ramp_steps, ramp_start, initial_sparsity, until : the schedule, in optimizer
        steps (:class:`~pruneopt.adapters.mask_schedule.SparsitySchedule`).
    solver, time_limit, solver_options : the N:M solver (any registered for the
        formulation; None: the exact default), seconds per layer, its options.
    score : ``"magnitude"``, ``"wanda"`` (needs ``input_norms``: name -> 1-D norms of the
        layer's inputs) or a callable ``(name, module, W) -> scores`` (weight-shaped, >= 0).
    compare_exact : also solve every recompute exactly (``exact_solver``, default the
        registry's exact default) to record ``exact_ratio`` (costs a second solve).
    """

    def __init__(
        self,
        model: nn.Module,
        pattern: str = "transposable",
        n: int = 2,
        m: int = 4,
        *,
        sparsity: float | None = None,
        update: str = "dpf",
        decay: float | None = None,
        every: int = 16,
        ramp_steps: int = 0,
        ramp_start: int = 0,
        initial_sparsity: float = 0.0,
        until: int | None = None,
        solver: str | None = None,
        time_limit: float | None = None,
        solver_options: Mapping[str, Any] | None = None,
        score: str | ScoreFn = "magnitude",
        input_norms: Mapping[str, Any] | None = None,
        compare_exact: bool = False,
        exact_solver: str | None = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
        regex: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if decay is not None and update != "srste":
            raise ValueError(f"decay is SR-STE's (update='srste'); update={update!r} has none")
        decay = SRSTE_DECAY if decay is None else decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) \
                or not math.isfinite(decay) or decay < 0:
            raise ValueError(f"decay must be a finite number >= 0, got {decay!r}")
        self.schedule = SparsitySchedule(pattern=pattern, n=n, m=m, sparsity=sparsity,
                                         initial_sparsity=initial_sparsity,
                                         ramp_start=ramp_start, ramp_steps=ramp_steps,
                                         every=every, until=until)
        self.update, self.decay = update, float(decay)
        layers = select_modules(model, include=include, exclude=exclude, types=types,
                                regex=regex)
        taken = [name for name, mod in layers if parametrize.is_parametrized(mod, "weight")
                 or hasattr(mod, "weight_orig")]
        if taken:
            raise ValueError(f"layers {taken} already carry a parametrization or a "
                             f"torch.nn.utils.prune mask; finalize or remove it first")
        bad = _fit_problems(layers, self.schedule)
        if bad:
            dims = "both dimensions" if pattern == "transposable" else "the input dimension"
            raise ValueError(f"{pattern} {n}:{m} masks need {dims} divisible by m={m}; these "
                             f"layers are not: {', '.join(bad)}; leave them out with "
                             f"exclude=[...] or choose another m")
        self.score, self.input_norms = self._check_score(score, input_norms, layers)
        self.solver, self.time_limit = solver, check_time_limit(time_limit)
        self.solver_options = dict(solver_options or {})
        self.compare_exact, self.exact_solver = bool(compare_exact), exact_solver
        self.solver_exact = self._check_solvers(layers)
        self.model = model
        self.layers: dict[str, nn.Module] = dict(layers)
        self.statistics: list[dict[str, Any]] = []
        self.finalized = False
        self._step_time = 0.0
        self._step_calls = 0
        self._last_call: float | None = None
        code = settings_code(self.schedule, update)
        for mod in self.layers.values():
            ones = torch.ones(mod.weight.shape, dtype=torch.bool, device=mod.weight.device)
            parametrize.register_parametrization(mod, "weight",
                                                 WeightMask(ones, code, update, self.decay))
        self._recompute(0)

    # ------------------------------------------------------------------ validation

    def _check_score(self, score, input_norms, layers):
        if callable(score):
            if input_norms is not None:
                raise ValueError("input_norms is for score='wanda'; a callable score has its "
                                 "own data")
            return score, None
        if score not in SCORE_KINDS:
            raise ValueError(f"score must be one of {SCORE_KINDS} or a callable (name, module, "
                             f"W) -> scores, got {score!r}")
        if score == "magnitude":
            if input_norms is not None:
                raise ValueError("input_norms is for score='wanda'")
            return score, None
        if input_norms is None:
            raise ValueError("score='wanda' needs input_norms (name -> ||x_j|| of the layer's "
                             "inputs), e.g. wanda_input_norms(model, names, batches)")
        norms = {}
        for name, mod in layers:
            if name not in input_norms:
                raise ValueError(f"input_norms has no entry for layer {name!r}")
            v = torch.as_tensor(input_norms[name], dtype=torch.float32).detach().reshape(-1)
            C = _matrix_shape(mod.weight)[1]
            if v.numel() != C:
                raise ValueError(f"input_norms[{name!r}] has {v.numel()} entries, the layer "
                                 f"has {C} inputs")
            if not torch.isfinite(v).all() or (v < 0).any():
                raise ValueError(f"input_norms[{name!r}] must be finite and >= 0")
            norms[name] = v.to(mod.weight.device)
        return score, norms

    def _problem_class(self) -> type:
        return TransposableNM if self.schedule.pattern == "transposable" else NMMask

    def _check_solvers(self, layers) -> bool:
        """Probe every (layer shape, n_t) the schedule will solve; True if exact."""
        if self.schedule.pattern == "unstructured":
            if self.solver is not None or self.solver_options or self.exact_solver:
                raise ValueError("unstructured masks are the exact top-k of each layer: "
                                 "solver, solver_options and exact_solver do not apply")
            return True
        cls = self._problem_class()
        m = self.schedule.m
        exact = True
        shapes = sorted({_matrix_shape(mod.weight) for _, mod in layers})
        for nt in self.schedule.patterns():
            if nt >= m:
                continue
            for shape in shapes:
                probe = cls(np.ones(shape), nt, m)
                try:
                    spec = get_solver(probe, self.solver)
                except ValueError as e:
                    raise ValueError(f"{self.schedule.pattern} {nt}:{m} masks of a "
                                     f"{shape[0]}x{shape[1]} layer: {e}") from None
                check_options(spec.name, cls.__name__, spec.options, self.solver_options)
                if self.time_limit is not None and not spec.honours_time_limit:
                    raise ValueError(f"solver {spec.name!r} cannot stop at a time limit; "
                                     f"drop time_limit")
                exact = exact and spec.guarantee == "exact"
                if self.compare_exact:
                    ex = get_solver(probe, self.exact_solver)
                    if ex.guarantee != "exact":
                        raise ValueError(f"exact_solver {ex.name!r} is not exact "
                                         f"({ex.guarantee}); name an exact solver or None")
        return exact

    # ------------------------------------------------------------------ masks

    def _param(self, name: str) -> WeightMask:
        return self.layers[name].parametrizations.weight[0]

    def dense_weight(self, name: str) -> torch.Tensor:
        """The dense parameter ``W`` of layer ``name`` (what the optimizer updates)."""
        return self.layers[name].parametrizations.weight.original

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The current masks (boolean, weight-shaped; the buffers themselves)."""
        return {name: self._param(name).mask for name in self.layers}

    @property
    def steps(self) -> int:
        """Optimizer steps done (the ``step`` buffer: restored by ``load_state_dict``)."""
        return int(self._param(next(iter(self.layers))).step)

    def scores(self, name: str) -> torch.Tensor:
        """The scores of layer ``name`` now (weight-shaped, float32, >= 0)."""
        mod = self.layers[name]
        W = self.dense_weight(name).detach()
        if callable(self.score):
            s = torch.as_tensor(self.score(name, mod, W)).detach()
            if tuple(s.shape) != tuple(W.shape):
                raise ValueError(f"score({name!r}, ...) returned shape {tuple(s.shape)}, "
                                 f"expected the weight's {tuple(W.shape)}")
            if not torch.isfinite(s).all():
                raise ValueError(f"score({name!r}, ...) returned NaN or inf")
            return s.to(torch.float32)
        s = W.abs().to(torch.float32)
        if self.score == "wanda":
            R, C = _matrix_shape(W)
            s = (s.reshape(R, C) * self.input_norms[name][None, :]).reshape(W.shape)
        return s

    def _solve(self, scores: torch.Tensor, nt: int, density: float, solver: str | None,
               options: Mapping[str, Any]) -> torch.Tensor | None:
        shape = scores.shape
        if self.schedule.pattern == "unstructured":
            k = int(round(density * scores.numel()))
            if k >= scores.numel():
                return torch.ones(shape, dtype=torch.bool, device=scores.device)
            mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
            mask[torch.topk(scores.reshape(-1), k, sorted=False).indices] = True
            return mask.reshape(shape)
        if nt >= self.schedule.m:
            return torch.ones(shape, dtype=torch.bool, device=scores.device)
        s = scores.detach().to("cpu", torch.float64).numpy().reshape(_matrix_shape(scores))
        problem = self._problem_class()(s, nt, self.schedule.m)
        sol = pruneopt.solve(problem, solver=solver, time_limit=self.time_limit, **options)
        if sol.decision is None:
            return None
        return torch.from_numpy(np.asarray(sol.decision, dtype=bool).reshape(shape).copy()
                                ).to(scores.device)

    def _recompute(self, t: int, *, target: bool = False) -> dict[str, Any]:
        sch = self.schedule
        nt = sch.n if target else sch.n_at(t)
        density = 1.0 - sch.final_sparsity if target else sch.density_at(t)
        rec: dict[str, Any] = {"step": t, "n": nt, "m": sch.m, "pattern": sch.pattern}
        flips = numel = kept_w = 0
        kept = total = exact_kept = 0.0
        solver_s = exact_s = 0.0
        kept_layer = {}
        failed = []
        with torch.no_grad():
            for name in self.layers:
                p = self._param(name)
                s = self.scores(name)
                t0 = time.perf_counter()
                new = self._solve(s, nt, density, self.solver, self.solver_options)
                solver_s += time.perf_counter() - t0
                if new is None:  # the solver stopped without a mask: keep the old one
                    failed.append(name)
                    new = p.mask.clone()
                k, tot = kept_and_total(s, new)
                kept, total = kept + k, total + tot
                kept_layer[name] = k / tot if tot > 0 else None
                if self.compare_exact and not self.solver_exact:
                    t1 = time.perf_counter()
                    ex = self._solve(s, nt, density, self.exact_solver, {})
                    exact_s += time.perf_counter() - t1
                    exact_kept += kept_and_total(s, ex)[0]
                flips += flip_count(p.mask, new)
                numel += new.numel()
                kept_w += int(new.sum())
                p.mask.copy_(new)
        mean_step = self._step_time / self._step_calls if self._step_calls else None
        rec.update(
            density=kept_w / numel, flip_rate=flips / numel,
            kept_ratio=kept / total if total > 0 else None,
            exact_ratio=(1.0 if self.solver_exact else
                         (kept / exact_kept if exact_kept > 0 else None))
            if self.compare_exact else None,
            solver_seconds=solver_s, exact_seconds=exact_s, step_seconds=mean_step,
            overhead=(solver_s / (sch.every * mean_step) if mean_step else None),
            layer_kept_ratio=kept_layer, failed=failed,
        )
        self.statistics.append(rec)
        self._step_time, self._step_calls = 0.0, 0
        return rec

    # ------------------------------------------------------------------ training

    def step(self) -> dict[str, Any] | None:
        """Call once after every ``optimizer.step()``: counts the step and, when the schedule
        says so, recomputes the masks. Returns the recompute's record, or None."""
        if self.finalized:
            raise RuntimeError("this sparsifier was finalized; build a new one to train on")
        now = time.perf_counter()
        if self._last_call is not None:
            self._step_time += now - self._last_call
            self._step_calls += 1
        t = self.steps + 1
        for name in self.layers:
            self._param(name).step.fill_(t)
        rec = self._recompute(t) if self.schedule.recomputes_at(t) else None
        self._last_call = time.perf_counter()
        return rec

    def attach(self, optimizer: torch.optim.Optimizer):
        """Call :meth:`step` after every ``optimizer.step()`` (a post-hook, like apex's ASP
        optimizer wrapper). Returns the hook handle (``.remove()`` detaches)."""
        return optimizer.register_step_post_hook(lambda *_: self.step())

    def density(self) -> float:
        """Fraction of the selected weights kept by the current masks."""
        ms = self.masks.values()
        return sum(int(mk.sum()) for mk in ms) / sum(mk.numel() for mk in ms)

    # ------------------------------------------------------------------ saving

    def settings(self) -> dict[str, Any]:
        """What a saved state depends on: the schedule, the update rule, the solver and the
        layers (names and shapes)."""
        return {
            "schedule": self.schedule.as_dict(), "update": self.update,
            "decay": self.decay if self.update == "srste" else None,
            "solver": self.solver, "solver_options": dict(self.solver_options),
            "score": self.score if isinstance(self.score, str) else "callable",
            "layers": {n: list(mod.weight.shape) for n, mod in self.layers.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        """Settings, step counter, masks (copies) and the statistics so far."""
        return {"settings": self.settings(), "step": self.steps,
                "masks": {k: v.detach().clone().cpu() for k, v in self.masks.items()},
                "statistics": copy.deepcopy(self.statistics)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (masks, step, statistics). ``ValueError`` if it was
        saved with other settings (naming the differences), before anything changes."""
        if not isinstance(state, Mapping) or "settings" not in state:
            raise ValueError("not a DynamicSparsifier state_dict (no 'settings')")
        mine, saved = self.settings(), state["settings"]
        diff = [f"{k}: {saved.get(k)!r} (saved) vs {mine[k]!r} (here)" for k in mine
                if saved.get(k) != mine[k]]
        if diff:
            raise ValueError(f"the state was saved with other settings: {'; '.join(diff)}; "
                             f"build the sparsifier with the saved settings")
        with torch.no_grad():
            for name, p in ((n, self._param(n)) for n in self.layers):
                p.mask.copy_(state["masks"][name].to(p.mask.device))
                p.step.fill_(int(state["step"]))
        self.statistics = copy.deepcopy(list(state.get("statistics", [])))
        self._step_time, self._step_calls, self._last_call = 0.0, 0, None

    # ------------------------------------------------------------------ the end

    def finalize(self) -> nn.Module:
        """Bake the masks in: every selected layer gets the plain weight ``W * M`` (zeros
        where pruned) and loses its parametrization; N:M masks are then checked with
        :func:`~pruneopt.adapters.nm.verify_nm` (W and, for transposable ones, W^T). If the
        ramp has not reached the target pattern yet, the masks are first recomputed at the
        target. Modifies and returns ``self.model``."""
        if self.finalized:
            return self.model
        sch = self.schedule
        if sch.n_at(self.steps) != sch.n or \
                (sch.pattern == "unstructured" and sch.sparsity_at(self.steps) != sch.sparsity):
            self._recompute(self.steps, target=True)
        for mod in self.layers.values():
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        self.finalized = True
        if sch.pattern != "unstructured":
            verify_nm(self.model, sch.n, sch.m, transposable=sch.pattern == "transposable",
                      names=list(self.layers))
        return self.model
