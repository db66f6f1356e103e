"""N:M and transposable N:M masks on PyTorch models.

Every ``nn.Linear`` and ``nn.Conv2d`` (or any module type you list) whose name matches a
pattern gets a mask from :class:`~pruneopt.formulations.TransposableNM` (``transposable=True``,
the default) or :class:`~pruneopt.formulations.NMMask`, solved by any registered solver.

Shapes: a Linear weight is ``W`` of shape [out, in]; a convolution weight
[out, in/groups, kh, kw] is viewed as the matrix [out, in/groups * kh * kw]. N:M groups run
along the second axis (the input dimension, what sparse tensor cores use for ``W x``); a
transposable mask is also N:M along the first axis, so ``W^T`` (the backward pass) is N:M too.
Scores default to ``|W|``; the *kept-score ratio* of a layer is ``sum(|W| * mask) / sum(|W|)``
(at most n/m for nonnegative scores).

The functions and what they touch:

- :func:`nm_mask` -- one weight tensor -> (boolean mask, :class:`LayerReport`). Pure.
- :func:`compute_nm_masks` -- a model -> :class:`NMMaskPlan` (masks by module name and the
  per-layer report). **Does not modify the model.**
- :func:`apply_nm_masks` -- puts masks on the model with
  ``torch.nn.utils.prune.custom_from_mask`` (the state_dict then carries ``weight_orig``,
  ``weight_mask`` and the masked ``weight``, so it loads into a model with or without masks),
  then checks them with :func:`verify_nm`. Modifies the model (``inplace=False``: a deep copy
  is masked instead).
- :func:`prune_nm` -- compute + apply in one call (``inplace=True`` by default).
- :func:`make_permanent` -- ``prune.remove`` on every masked module: zeros become permanent.
- :func:`verify_nm` -- checks that the weights ``W`` (and ``W^T`` for transposable masks) of
  the selected layers are N:M (a mask if present, else the weight's zeros); raises
  ``ValueError`` listing the offenders.

Layer selection (:func:`select_modules`): by default every ``nn.Linear``/``nn.Conv2d``
except :data:`DEFAULT_EXCLUDE` (embeddings, pooler, heads); ``include`` patterns replace the
default, ``exclude`` patterns remove from it; a selection that comes out empty is a
``ValueError`` that shows real module names.

Layers whose matrix shape is not divisible by ``m`` (both dimensions for transposable masks,
the input dimension otherwise) are skipped with a report line saying why, or, with
``pad=True``, their scores are padded with zeros up to a multiple of ``m``, solved, and the
mask cropped back (the cropped mask is still N:M: every group only loses entries).
"""

from __future__ import annotations

import copy
import fnmatch
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

import pruneopt
from pruneopt.formulations.nm import NMMask, TransposableNM, validate_nm
from pruneopt.solvers.executors import check_executor, map_tasks

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
#: Layers left dense unless named explicitly (fnmatch on module / tensor names): token and
#: position embeddings, the BERT pooler (unused by sentence-transformers), output heads.
#: The pruning tools users compare with (SparseGPT, Wanda, llm-compressor) leave them dense.
DEFAULT_EXCLUDE: tuple[str, ...] = ("*embed*", "*pooler*", "*lm_head*")

ScoreSource = Mapping[str, Any] | Callable[[str, nn.Module], Any] | None


@dataclass
class LayerReport:
    """One line of the per-layer report.

    ``kept_ratio`` = kept score / total score (with ``|W|`` scores: the fraction of the
    layer's magnitude that survives); ``bound_ratio`` = kept score / ``bound``, where
    ``bound`` is the best proven upper bound on the kept score known for this layer (the
    solver's bound, or a cheap row/column relaxation); 1.0 means proven optimal.
    ``status`` is the solver's status, or ``"skipped"`` with the reason in ``skipped``.
    """

    name: str
    shape: tuple[int, ...]
    matrix_shape: tuple[int, int]
    n: int
    m: int
    transposable: bool
    solver: str | None = None
    status: str = "skipped"
    seconds: float = 0.0
    kept_score: float | None = None
    total_score: float | None = None
    kept_ratio: float | None = None
    bound: float | None = None
    bound_ratio: float | None = None
    density: float | None = None
    padded: bool = False
    skipped: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["matrix_shape"] = list(self.matrix_shape)
        d["info"] = {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerReport:
        """The row of :meth:`as_dict` (its ``info`` keeps the scalar entries only)."""
        return cls(**{**d, "shape": tuple(d["shape"]), "matrix_shape": tuple(d["matrix_shape"])})


@dataclass
class NMMaskPlan:
    """What :func:`compute_nm_masks` returns: ``masks[name]`` is a boolean tensor of the
    module's weight shape (only for layers that were solved), ``report`` one row per matched
    layer (solved or skipped), in module order."""

    masks: dict[str, torch.Tensor]
    report: list[LayerReport]
    n: int
    m: int
    transposable: bool

    def summary(self) -> dict[str, Any]:
        """Totals over the solved layers: kept score, total score, their ratio, seconds."""
        done = [r for r in self.report if r.skipped is None]
        kept = sum(r.kept_score or 0.0 for r in done)
        total = sum(r.total_score or 0.0 for r in done)
        bound = sum(r.bound or 0.0 for r in done) if all(r.bound is not None for r in done) \
            else None
        return {
            "layers": len(done),
            "skipped": len(self.report) - len(done),
            "kept_score": kept,
            "total_score": total,
            "kept_ratio": kept / total if total > 0 else None,
            "bound_ratio": kept / bound if bound else None,
            "seconds": sum(r.seconds for r in done),
        }

    def table(self) -> str:
        """The report as a markdown table."""
        head = "| layer | shape | solver | status | kept ratio | vs bound | seconds |"
        lines = [head, "|---|---|---|---|---:|---:|---:|"]
        for r in self.report:
            if r.skipped is not None:
                lines.append(f"| {r.name} | {tuple(r.shape)} | - | skipped: {r.skipped} | "
                             f"- | - | - |")
                continue
            vb = "-" if r.bound_ratio is None else f"{r.bound_ratio:.6f}"
            lines.append(f"| {r.name} | {tuple(r.shape)} | {r.solver} | {r.status} | "
                         f"{r.kept_ratio:.4f} | {vb} | {r.seconds:.3f} |")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def as_matrix(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """A weight of 2 or more dimensions viewed as [out, prod(rest)] (conv: [out, in*kh*kw])."""
    if isinstance(weight, torch.Tensor):
        a = weight.detach().to("cpu", torch.float64).numpy()
    else:
        a = np.asarray(weight, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"an N:M mask needs a weight with at least 2 dimensions, got shape "
                         f"{tuple(a.shape)}")
    return a.reshape(a.shape[0], -1)


def _fit_reason(shape: tuple[int, int], m: int, transposable: bool) -> str | None:
    R, C = shape
    if transposable and (R % m or C % m):
        return (f"matrix shape {R}x{C} is not divisible by m={m} in both dimensions "
                f"(pass pad=True / --pad to pad with zeros)")
    if not transposable and C % m:
        return (f"input dimension {C} is not divisible by m={m} "
                f"(pass pad=True / --pad to pad with zeros)")
    return None


def _cheap_bound(scores: np.ndarray, n: int, m: int, transposable: bool, exactly: bool) -> float:
    """A valid upper bound on the kept score (of the padded scores)."""
    if transposable:
        return TransposableNM(scores, n, m, exactly=exactly).row_col_bound()
    g = scores.reshape(-1, m)
    if not exactly:
        g = np.maximum(g, 0.0)
    return float(-np.sort(-g, axis=1)[:, :n].sum())  # the exact optimum of plain N:M


def nm_mask(
    weight: torch.Tensor | np.ndarray,
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    exactly: bool = False,
    solver: str | None = None,
    time_limit: float | None = None,
    pad: bool = False,
    scores: Any = None,
    name: str = "weight",
    options: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor | None, LayerReport]:
    """The N:M mask of one weight tensor (not modified) and its report line.

    ``scores`` (same shape as ``weight``; default ``|weight|``) is what the mask keeps the
    most of. Returns ``(mask, report)``: ``mask`` is a boolean tensor of ``weight``'s shape,
    or ``None`` when the layer is skipped (shape not divisible by ``m`` and ``pad=False``).
    ``time_limit`` (seconds) and ``options`` go to :func:`pruneopt.solve`.
    """
    n, m = validate_nm(n, m)
    shape = tuple(weight.shape)
    if scores is not None and tuple(np.shape(scores)) != shape:
        raise ValueError(f"scores for {name} have shape {tuple(np.shape(scores))}, expected the "
                         f"weight's shape {shape}")
    s = as_matrix(weight if scores is None else scores)
    if scores is None:
        s = np.abs(s)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} has NaN or inf entries; fix the weights before masking")
    R, C = s.shape
    rep = LayerReport(name=name, shape=shape, matrix_shape=(R, C), n=n, m=m,
                      transposable=bool(transposable))
    reason = _fit_reason((R, C), m, transposable)
    if reason is not None and not pad:
        rep.skipped = reason
        return None, rep
    if reason is not None:
        Rp = -(-R // m) * m if transposable else R
        Cp = -(-C // m) * m
        sp = np.zeros((Rp, Cp))
        sp[:R, :C] = s
        rep.padded = True
    else:
        sp = s
    problem = (TransposableNM if transposable else NMMask)(sp, n, m, exactly=exactly)
    t0 = time.perf_counter()
    sol = pruneopt.solve(problem, solver=solver, time_limit=time_limit, **dict(options or {}))
    rep.seconds = time.perf_counter() - t0
    rep.solver, rep.status = sol.solver, sol.status
    rep.info = dict(sol.info)
    if sol.decision is None:
        rep.skipped = f"solver {sol.solver!r} returned no mask (status {sol.status!r})"
        return None, rep
    mask = np.asarray(sol.decision, dtype=bool)[:R, :C]
    kept = float(s[mask].sum())
    total = float(s.sum())
    if sol.status == "optimal":  # proven: the optimum is the bound (padded zeros add nothing)
        bound = kept
    else:  # the cheap bound (two sorts of every block) only where there is no proof
        bound = _cheap_bound(sp, n, m, transposable, exactly)
        if sol.bound is not None:
            bound = min(bound, float(sol.bound))
    rep.kept_score, rep.total_score = kept, total
    rep.kept_ratio = kept / total if total > 0 else None
    rep.bound = max(bound, kept)  # padded zeros add nothing, the bound cannot be below kept
    rep.bound_ratio = kept / rep.bound if rep.bound > 0 else 1.0
    rep.density = float(mask.mean())
    return torch.from_numpy(mask.reshape(shape).copy()), rep


def _matches(name: str, patterns: Sequence[str] | None, regex: bool) -> bool:
    if patterns is None:
        return True
    if regex:
        return any(re.search(p, name) for p in patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _as_patterns(p: str | Iterable[str] | None) -> list[str] | None:
    if p is None:
        return None
    if isinstance(p, str):
        return [p]
    return list(p)


def _some(names: Sequence[str], k: int = 6) -> str:
    """Up to ``k`` of ``names``, spread over the list, for error messages."""
    if len(names) <= k:
        return ", ".join(names)
    pick = np.unique(np.linspace(0, len(names) - 1, k).round().astype(int))
    return ", ".join(names[i] for i in pick) + f" (of {len(names)})"


def _type_names(types: Sequence[type[nn.Module]]) -> str:
    return "/".join(t.__name__ for t in types)


def select_modules(
    model: nn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
    regex: bool = False,
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers to mask, in module order.

    Candidates are the modules of one of ``types`` with a weight of >= 2 dimensions.

    - ``include=None`` (the default selection): every candidate except those matching
      :data:`DEFAULT_EXCLUDE` (embeddings, pooler, output heads) or an ``exclude`` pattern.
    - ``include`` given: the candidates matching one of its patterns, except those matching
      ``exclude`` (:data:`DEFAULT_EXCLUDE` is not applied: what you include you name).

    Patterns are shell-style on the full module name (``fnmatch``: ``"*.attention.*"``;
    on a SentenceTransformer every name starts with ``0.``) or, with ``regex=True``,
    regular expressions searched in the name. A selection that comes out empty is a
    ``ValueError`` showing some of the model's real module names.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    types = tuple(types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise ValueError("types must be a non-empty sequence of nn.Module subclasses, e.g. "
                         "(nn.Linear, nn.Conv2d)")
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    if regex:
        for p in (inc or []) + (exc or []):
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"invalid regular expression {p!r}: {e}") from None
    candidates = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, types) and isinstance(w, torch.Tensor) and w.dim() >= 2:
            candidates.append((name, mod))
    names = [n for n, _ in candidates]
    kind = _type_names(types)
    if not candidates:
        raise ValueError(f"the model has no {kind} module with a weight of >= 2 dimensions; "
                         f"pass types=(...) with the layer classes to mask")
    if inc is None:
        chosen = [(n, m) for n, m in candidates
                  if not any(fnmatch.fnmatchcase(n, p) for p in DEFAULT_EXCLUDE)]
        if not chosen:
            raise ValueError(f"every {kind} module matches DEFAULT_EXCLUDE {DEFAULT_EXCLUDE} "
                             f"(embeddings, pooler, heads): {_some(names)}; name the layers "
                             f"to mask with include=")
    else:
        chosen = [(n, m) for n, m in candidates if _matches(n, inc, regex)]
        if not chosen:
            how = "regular expressions searched in" if regex else "fnmatch patterns on"
            hint = ""
            if not regex:
                wider = [f"*{p}" for p in inc if not p.startswith("*")
                         and any(fnmatch.fnmatchcase(n, f"*{p}") for n in names)]
                if wider:
                    hint = f"; did you mean include={wider if len(wider) > 1 else wider[0]!r}?"
            raise ValueError(f"include={include!r} matches none of the {len(names)} {kind} "
                             f"modules (patterns are {how} the full name); their names are "
                             f"like: {_some(names)}{hint}")
    if exc:
        kept = [(n, m) for n, m in chosen if not _matches(n, exc, regex)]
        if not kept:
            raise ValueError(f"exclude={exclude!r} removes all {len(chosen)} selected {kind} "
                             f"modules ({_some([n for n, _ in chosen])}); nothing left to mask")
        chosen = kept
    return chosen


def as_numpy(t: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    """A CPU NumPy array of ``t`` (zero-copy for a CPU tensor of a NumPy dtype; float32 for
    the others, e.g. bfloat16, which it holds exactly): what is sent to a worker."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().cpu()
    if t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.numpy()


def mask_task(task: tuple) -> tuple[np.ndarray | None, LayerReport]:
    """:func:`nm_mask` of one ``(name, weight, scores, n, m, solve_args)`` (what each
    executor worker runs for :func:`compute_nm_masks`); the mask as a NumPy array, which
    pickles without copies."""
    name, weight, sc, n, m, solve_args = task
    mask, rep = nm_mask(weight, n, m, scores=sc, name=name, **solve_args)
    return (None if mask is None else mask.numpy()), rep


def compute_nm_masks(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    exactly: bool = False,
    solver: str | None = None,
    time_limit: float | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
    regex: bool = False,
    pad: bool = False,
    scores: ScoreSource = None,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
) -> NMMaskPlan:
    """N:M masks for the selected layers of ``model``, **without modifying the model**.

    Parameters
    ----------
    n, m : keep ``n`` of every ``m`` (2:4 keeps half).
    transposable : masks N:M in both ``W`` and ``W^T`` (:class:`TransposableNM`); ``False``:
        plain N:M along the input dimension (:class:`NMMask`).
    exactly : exactly ``n`` per group/row/column instead of at most ``n``.
    solver, time_limit, options : passed to :func:`pruneopt.solve` for every layer
        (``solver=None``: the default exact solver; ``time_limit`` in seconds, per layer).
    include, exclude, types, regex : which layers (see :func:`select_modules`; default:
        every Linear/Conv2d except :data:`DEFAULT_EXCLUDE`). Matching nothing is a
        ``ValueError`` listing real module names.
    pad : pad layers whose shape is not divisible by ``m`` instead of skipping them.
    scores : importance of each weight: a mapping ``name -> tensor`` or a callable
        ``(name, module) -> tensor`` (weight-shaped); default ``|weight|``.
    progress : show a tqdm bar over the layers (advanced as each layer finishes).
    executor, workers, address : where the per-layer solves run (see
        :mod:`pruneopt.solvers.executors`): ``None`` in this process, ``"processes"`` a local
        pool of ``workers`` processes, ``"ray"`` the Ray cluster at ``address`` (or a local
        one). The masks and reports are the same as in process (``seconds`` aside); the
        weights are copied to the workers, the model stays here.

    Every matched layer gets a :class:`LayerReport` row; bad input raises ``ValueError``.
    """
    n, m = validate_nm(n, m)
    check_executor(executor)
    if scores is not None and not (isinstance(scores, Mapping) or callable(scores)):
        raise ValueError("scores must be a mapping name -> tensor or a callable "
                         "(name, module) -> tensor")
    chosen = select_modules(model, include=include, exclude=exclude, types=types, regex=regex)
    solve_args = dict(transposable=transposable, exactly=exactly, solver=solver,
                      time_limit=time_limit, pad=pad, options=dict(options or {}))
    tasks = []
    with torch.no_grad():
        for name, mod in chosen:
            if isinstance(scores, Mapping):
                sc = scores.get(name)
            elif callable(scores):
                sc = scores(name, mod)
            else:
                sc = None
            tasks.append((name, as_numpy(mod.weight), as_numpy(sc), n, m, solve_args))
    results = map_tasks(mask_task, tasks, executor=executor, workers=workers, address=address,
                        progress=progress, desc=f"{n}:{m} masks")
    masks: dict[str, torch.Tensor] = {}
    report: list[LayerReport] = []
    for (name, *_), (mask, rep) in zip(tasks, results, strict=True):
        report.append(rep)
        if mask is not None:
            # a Ray result is a read-only view of its object store: copy it then
            masks[name] = torch.from_numpy(mask if mask.flags.writeable else mask.copy())
    return NMMaskPlan(masks=masks, report=report, n=n, m=m, transposable=bool(transposable))


def _save_masked_weight(module: nn.Module, state_dict: dict, prefix: str,
                        _local_metadata: Any) -> None:
    """State-dict post-hook of a masked module: also save ``weight`` = ``weight_orig *
    weight_mask``, so that a model without masks loading the state dict gets the masked
    weights (a no-op once :func:`make_permanent` has removed the mask)."""
    orig = getattr(module, "weight_orig", None)
    mask = getattr(module, "weight_mask", None)
    if isinstance(orig, torch.Tensor) and isinstance(mask, torch.Tensor):
        state_dict[prefix + "weight"] = (orig * mask).detach()


def _skip_masked_weight(module: nn.Module, state_dict: dict, prefix: str,
                        *_args: Any) -> None:
    """Load-state-dict pre-hook of a masked module: given ``weight_orig`` too, the extra
    ``weight`` written by :func:`_save_masked_weight` is ignored (``strict=True`` works)."""
    if hasattr(module, "weight_orig") and prefix + "weight_orig" in state_dict:
        state_dict.pop(prefix + "weight", None)


_HOOKED = "_pruneopt_nm_state_dict_hooks"


def _hook_state_dict(module: nn.Module) -> None:
    """Register the two state-dict hooks on ``module`` once (they are no-ops on a module
    that carries no mask, so they survive :func:`make_permanent`, deep copies and pickling
    harmlessly)."""
    if not getattr(module, _HOOKED, False):
        module.register_state_dict_post_hook(_save_masked_weight)
        module.register_load_state_dict_pre_hook(_skip_masked_weight)
        setattr(module, _HOOKED, True)


def apply_nm_masks(
    model: nn.Module,
    masks: NMMaskPlan | Mapping[str, torch.Tensor],
    *,
    inplace: bool = True,
) -> nn.Module:
    """Put ``masks`` (name -> boolean weight-shaped tensor) on the model's modules with
    ``torch.nn.utils.prune.custom_from_mask``: ``weight`` becomes ``weight_orig * weight_mask``
    until :func:`make_permanent`. Given an :class:`NMMaskPlan`, the applied masks are then
    checked with :func:`verify_nm` (``W`` and, for transposable plans, ``W^T`` are N:M).
    **Modifies ``model``** unless ``inplace=False``, which masks and returns a deep copy.
    Returns the masked model.

    The state_dict of a masked module holds ``weight_orig``, ``weight_mask`` **and**
    ``weight`` (the masked weight, added by a state-dict hook): loaded into a model without
    masks (``strict=False``: ``weight_orig``/``weight_mask`` are unexpected there) it gives
    the masked weights, and loaded into a model masked the same way (``strict=True``) the
    extra ``weight`` is ignored. After :func:`make_permanent` the state_dict has ``weight``
    only."""
    plan = masks if isinstance(masks, NMMaskPlan) else None
    if plan is not None:
        masks = plan.masks
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"no module named {name!r} in the model")
        if tuple(mask.shape) != tuple(mod.weight.shape):
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has "
                             f"{tuple(mod.weight.shape)}")
        if plan is not None and not is_nm(mask, plan.n, plan.m, transposable=plan.transposable):
            raise ValueError(f"the mask for {name!r} is not {plan.n}:{plan.m}"
                             f"{' transposable' if plan.transposable else ''}; nothing applied")
    if not inplace:
        model = copy.deepcopy(model)
        modules = dict(model.named_modules())
    for name, mask in masks.items():
        mod = modules[name]
        prune.custom_from_mask(mod, "weight", mask.to(device=mod.weight.device, dtype=torch.bool))
        _hook_state_dict(mod)
    if plan is not None and masks:  # the applied masks (combined with earlier ones) are N:M
        verify_nm(model, plan.n, plan.m, transposable=plan.transposable, names=list(masks))
    return model


def prune_nm(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    inplace: bool = True,
    **kwargs: Any,
) -> tuple[nn.Module, NMMaskPlan]:
    """Compute (:func:`compute_nm_masks`, same keyword arguments) and apply
    (:func:`apply_nm_masks`) N:M masks. **Modifies ``model``** unless ``inplace=False``
    (then a masked deep copy is returned). Returns ``(masked model, plan)``."""
    plan = compute_nm_masks(model, n, m, **kwargs)
    return apply_nm_masks(model, plan, inplace=inplace), plan


def make_permanent(model: nn.Module) -> list[str]:
    """``prune.remove`` on every module holding a ``weight`` mask: the masked weights become
    plain parameters with permanent zeros (modifies ``model``). Returns the module names."""
    done = []
    for name, mod in model.named_modules():
        if prune.is_pruned(mod) and hasattr(mod, "weight_mask"):
            prune.remove(mod, "weight")
            done.append(name)
    return done


def _group_counts(mask: np.ndarray, m: int) -> np.ndarray:
    """Kept entries per group of m consecutive columns of each row (zero-padded)."""
    R, C = mask.shape
    Cp = -(-C // m) * m
    if Cp != C:
        mask = np.concatenate([mask, np.zeros((R, Cp - C), dtype=bool)], axis=1)
    return mask.reshape(R, Cp // m, m).sum(axis=2)


def is_nm(mask: torch.Tensor | np.ndarray, n: int, m: int, *, transposable: bool = True) -> bool:
    """Whether a weight-shaped mask (or weight: nonzeros count as kept) is N:M along the input
    dimension and, if ``transposable``, also along the output dimension (``W^T`` is N:M).

    For m-aligned groups this is exactly the transposable block constraint: at most ``n`` per
    row and per column of every m-by-m block. A last partial group counts as zero-padded.
    """
    n, m = validate_nm(n, m)
    a = as_matrix(mask) != 0
    ok = bool((_group_counts(a, m) <= n).all())
    if transposable:
        ok = ok and bool((_group_counts(a.T, m) <= n).all())
    return ok


def verify_nm(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    names: Iterable[str] | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
    regex: bool = False,
) -> list[str]:
    """Check that the weights of a model are N:M: ``W`` and, if ``transposable``, ``W^T``.

    Which modules: ``names`` if given, else :func:`select_modules` with ``include``,
    ``exclude``, ``types``, ``regex`` (default: every Linear/Conv2d except
    :data:`DEFAULT_EXCLUDE`, the layers :func:`prune_nm` masks by default). What is checked
    is the weight itself: the module's ``weight_mask`` when it carries one (masked by
    :func:`apply_nm_masks`), else the nonzero pattern of its ``weight`` (after
    :func:`make_permanent`, or in a model that loaded a pruned state_dict). A dense layer
    fails. Returns the names checked; raises ``ValueError`` listing every violation, or when
    no module matches. Does not modify the model."""
    n, m = validate_nm(n, m)
    modules = dict(model.named_modules()) if isinstance(model, nn.Module) else None
    if modules is None:
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if names is None:
        names = [k for k, _ in select_modules(model, include=include, exclude=exclude,
                                              types=types, regex=regex)]
    names = list(names)
    if not names:
        raise ValueError("no module to verify: names is empty")
    bad, checked = [], []
    for name in names:
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"no module named {name!r} in the model")
        mask = getattr(mod, "weight_mask", None)
        if mask is None:
            w = getattr(mod, "weight", None)
            if not isinstance(w, torch.Tensor):
                raise ValueError(f"module {name!r} has no weight to verify")
            mask = w.detach() != 0
        a = as_matrix(mask) != 0
        note = f" (density {a.mean():.2f})"
        if not (_group_counts(a, m) <= n).all():
            bad.append(f"{name}: W is not {n}:{m}{note}")
        if transposable and not (_group_counts(a.T, m) <= n).all():
            bad.append(f"{name}: W^T is not {n}:{m}{note}")
        checked.append(name)
    if bad:
        more = f"; and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise ValueError(f"N:M verification failed: {'; '.join(bad[:8])}{more} (to check only "
                         f"the layers that were masked, pass names=list(plan.masks) or "
                         f"include=/exclude=)")
    return checked
