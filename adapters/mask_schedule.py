"""When training-time masks are recomputed and how sparse they are at each step.

The sparsity ramp is DPF's (Lin et al., ICLR 2020, after Zhu & Gupta 2017): over the
``ramp_steps`` optimizer steps after ``ramp_start``, the target sparsity (fraction of the
weights pruned, in [0, 1]) rises from ``s_i`` to ``s_f`` as a cubic,

    s_t = s_f + (s_i - s_f) (1 - (t - t_0) / T)^3     for t_0 <= t <= t_0 + T,

``s_t = s_i`` before ``t_0 = ramp_start`` and ``s_t = s_f`` after ``t_0 + T`` (``T =
ramp_steps``; ``T = 0``: ``s_f`` from step 0). It prunes fast early, when the weights still
move a lot, and slowly near the end.

**N:M patterns follow the ramp through a sequence of patterns.** An N:M mask has the fixed
density n/m, so the ramp's density ``d_t = 1 - s_t`` is rounded *up* to the next pattern of
the same ``m``: at step t the mask is ``n_t:m`` with ``n_t = max(n, ceil(d_t m))`` (for a
2:4 target from dense: 4:4 (no mask), 3:4, then 2:4; for 1:8: 8:8, 7:8, ..., 1:8). Every
mask on the way is a (transposable) N:M mask of the same block size solved by the same
solver, so the layer is always in a form sparse kernels accept and the last pattern is the
target; the alternative (unstructured magnitude sparsity ramped, then one switch to N:M)
would flip many weights at once at the switch, which is what the ramp is meant to avoid.
Unstructured masks (the top-k of each layer) follow ``s_t`` itself, ``k = round((1 - s_t)
numel)``.

Masks are recomputed at every step ``t`` (the number of optimizer steps done) with ``t %
every == 0`` and at the end of the ramp, as long as ``t <= until`` (``until=None``: for ever;
``until=0``: the masks of step 0 are kept, a static mask).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pruneopt.formulations.base import as_int
from pruneopt.formulations.nm import validate_nm

PATTERNS = ("transposable", "nm", "unstructured")


def check_fraction(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1], else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1] (a fraction of the weights), "
                         f"got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (a fraction of the weights pruned: 0 is "
                         f"dense, 1 prunes everything), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SparsitySchedule:
    """The cubic ramp and the recompute steps (module docstring).

    Parameters
    ----------
    pattern : ``"transposable"`` (W and W^T N:M), ``"nm"`` (W N:M along the input
        dimension) or ``"unstructured"`` (top-k of each layer).
    n, m : the target N:M pattern (kept n of every m); ignored for ``"unstructured"``.
    sparsity : the target fraction pruned ``s_f`` for ``"unstructured"`` (for N:M it is
        ``1 - n/m`` and must not be given).
    initial_sparsity : ``s_i``, where the ramp starts (default 0: dense).
    ramp_start, ramp_steps : ``t_0`` and ``T`` in optimizer steps.
    every : recompute interval in optimizer steps (>= 1).
    until : last step at which masks are recomputed (``None``: no end; 0: static).
    """

    pattern: str = "transposable"
    n: int = 2
    m: int = 4
    sparsity: float | None = None
    initial_sparsity: float = 0.0
    ramp_start: int = 0
    ramp_steps: int = 0
    every: int = 16
    until: int | None = None

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        n, m = validate_nm(self.n, self.m)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        if self.pattern == "unstructured":
            if self.sparsity is None:
                raise ValueError("pattern='unstructured' needs sparsity= (the target fraction "
                                 "of weights pruned, in [0, 1], e.g. 0.5)")
            object.__setattr__(self, "sparsity", check_fraction(self.sparsity, "sparsity"))
        elif self.sparsity is not None:
            raise ValueError(f"sparsity= is for pattern='unstructured'; an {n}:{m} pattern "
                             f"prunes 1 - n/m = {1 - n / m:g} of the weights (choose n and m)")
        s_i = check_fraction(self.initial_sparsity, "initial_sparsity")
        object.__setattr__(self, "initial_sparsity", s_i)
        if s_i > self.final_sparsity + 1e-12:
            raise ValueError(f"initial_sparsity={s_i:g} is above the target sparsity "
                             f"{self.final_sparsity:g}: the ramp only makes masks sparser")
        object.__setattr__(self, "ramp_start", as_int(self.ramp_start, "ramp_start", low=0))
        object.__setattr__(self, "ramp_steps", as_int(self.ramp_steps, "ramp_steps", low=0))
        try:
            every = as_int(self.every, "every", low=1)
        except ValueError:
            raise ValueError(f"every (the recompute interval, in optimizer steps) must be an "
                             f"integer >= 1, got {self.every!r}") from None
        object.__setattr__(self, "every", every)
        if self.until is not None:
            object.__setattr__(self, "until", as_int(self.until, "until", low=0))

    @property
    def final_sparsity(self) -> float:
        """``s_f``: the target fraction pruned."""
        if self.pattern == "unstructured":
            return float(self.sparsity)
        return 1.0 - self.n / self.m

    @property
    def ramp_end(self) -> int:
        return self.ramp_start + self.ramp_steps

    def sparsity_at(self, t: int) -> float:
        """``s_t`` of the cubic ramp (module docstring)."""
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        if self.ramp_steps == 0 or t >= self.ramp_end:
            return s_f
        if t <= self.ramp_start:
            return s_i
        frac = (t - self.ramp_start) / self.ramp_steps
        return s_f + (s_i - s_f) * (1.0 - frac) ** 3

    def n_at(self, t: int) -> int:
        """The N:M pattern's ``n_t = max(n, ceil((1 - s_t) m))`` at step t (``n_t = m``: no
        mask yet). For ``"unstructured"``: ``m`` if ``s_t = 0`` else 0 (unused)."""
        d = 1.0 - self.sparsity_at(t)
        if self.pattern == "unstructured":
            return self.m if d >= 1.0 else 0
        return max(self.n, min(self.m, math.ceil(d * self.m - 1e-9)))

    def density_at(self, t: int) -> float:
        """Fraction of weights kept at step t: ``n_t / m`` for N:M, ``1 - s_t`` otherwise."""
        if self.pattern == "unstructured":
            return 1.0 - self.sparsity_at(t)
        return self.n_at(t) / self.m

    def recomputes_at(self, t: int) -> bool:
        """Whether the masks are recomputed after the t-th optimizer step."""
        if self.until is not None and t > self.until:
            return False
        return t % self.every == 0 or (self.ramp_steps > 0 and t == self.ramp_end)

    def patterns(self) -> list[int]:
        """Every ``n_t`` the ramp goes through (N:M patterns; the solver must take them all)."""
        if self.pattern == "unstructured":
            return []
        first = self.n_at(0 if self.ramp_steps == 0 else self.ramp_start)
        return list(range(first, self.n - 1, -1))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
