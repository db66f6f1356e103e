"""N:M and transposable N:M masks (Hubara et al., NeurIPS 2021).

Notation: a weight matrix ``W`` of shape (R, C) (for ``nn.Linear``: [out, in]); scores
``s = |W|`` (any finite reals are accepted); a mask ``x`` in {0,1}^(R x C), 1 = kept.

- **N:M** (:class:`NMMask`): in every group of ``m`` consecutive entries of a row (along the
  input dimension, C), keep at most ``n``. What sparse tensor cores accelerate for ``W x``.
- **Transposable N:M** (:class:`TransposableNM`): in every ``m``-by-``m`` block, keep at most
  ``n`` entries in each row and in each column, so that both ``W`` and ``W^T`` are N:M and
  the same mask accelerates the forward (``W x``) and the backward (``W^T g``) pass::

      maximize    sum_ij s_ij x_ij
      subject to  sum_{j in block cols} x_ij <= n   for each row i of each block
                  sum_{i in block rows} x_ij <= n   for each column j of each block
                  x_ij in {0, 1}

  Each block is an independent bipartite b-matching (a min-cost flow: source -> row
  nodes with capacity n, row -> column arcs with capacity 1 and cost -s_ij, column nodes
  -> sink with capacity n); the constraint matrix is totally unimodular, so the LP
  relaxation has integral optimal vertices.

``exactly=True`` asks for exactly ``n`` per row and column (the flow value fixed at n*m, the
form of the paper's flow network). With nonnegative scores the "at most" optimum is never
smaller and is often larger (on 2-10 % of random 4x4 blocks): a block with fewer than n
entries in a row is still a valid N:M block for sparse kernels, so "at most" is the default.
"""

from __future__ import annotations

import math
from functools import cache
from itertools import combinations
from typing import Any

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import Formulation, as_array, as_int, finite_scale, to_numpy
from pruneopt.formulations.standard import MILPExportable, MILPForm


def validate_nm(n: Any, m: Any) -> tuple[int, int]:
    """``(n, m)`` as ints with 1 <= n <= m, else a ``ValueError`` saying which is wrong."""
    m = as_int(m, "m", low=1)
    n = as_int(n, "n", low=1)
    if n > m:
        raise ValueError(f"n must be <= m (n:m keeps n of every m), got n={n}, m={m}")
    return n, m


def to_blocks(a: np.ndarray, m: int) -> np.ndarray:
    """(R, C) -> (R/m * C/m, m, m): the m-by-m blocks in row-major block order (a copy)."""
    R, C = a.shape
    return a.reshape(R // m, m, C // m, m).transpose(0, 2, 1, 3).reshape(-1, m, m)


def from_blocks(blocks: np.ndarray, shape: tuple[int, int], m: int) -> np.ndarray:
    """Inverse of :func:`to_blocks`."""
    R, C = shape
    return blocks.reshape(R // m, C // m, m, m).transpose(0, 2, 1, 3).reshape(R, C)


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (duck-typed: formulations do not import torch)."""
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


#: entries per band of rows in the formulations' own passes over the scores
BAND_ENTRIES = 1 << 20


def row_bands(shape: tuple[int, ...]) -> list[slice]:
    """Slices of rows of about :data:`BAND_ENTRIES` entries covering a 2-D ``shape``."""
    step = max(1, BAND_ENTRIES // max(1, shape[1]))
    return [slice(r, r + step) for r in range(0, shape[0], step)]


def numpy_view(t: Any) -> np.ndarray | None:
    """A CPU tensor's memory as a NumPy array (no copy; NumPy's single-threaded loops are
    far faster than torch's on a loaded CPU), or None (other devices, bfloat16)."""
    if t.device.type != "cpu":
        return None
    try:
        return t.numpy()
    except (TypeError, RuntimeError):
        return None


def tensor_scores(x: Any, name: str = "scores") -> tuple[Any, float]:
    """``(tensor, sum |s|)``: the scores detached and checked (2-D, non-empty, real, finite,
    ``sum |s|`` finite in float64), kept on their device and in their float dtype (integer
    and bool tensors become float64)."""
    t = x.detach()
    if t.is_complex():
        raise ValueError(f"{name} is complex; pass real numbers (e.g. the magnitude .abs())")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; pass a non-empty 2-D array of weight scores")
    if not t.is_floating_point():
        t = t.double()
    view = numpy_view(t)
    finite = bool(np.isfinite(view).all()) if view is not None else bool(t.isfinite().all())
    if not finite:
        bad = int((~t.isfinite()).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite entries; replace them first")
    with np.errstate(over="ignore"):
        if view is not None:
            total = sum(float(np.abs(view[r]).sum(dtype=np.float64))
                        for r in row_bands(view.shape))
        else:
            total = float(t.double().abs().sum())
    if not math.isfinite(total):
        finite_scale(as_array(t, name), name)  # raises, with the message
    return t, total


class _MaskProblem(Formulation):
    """Shared by the N:M formulations. Scores given as a torch tensor are also kept as they
    are (``tensor``, on their device; solvers ending in ``-torch`` work on it and answer with
    a bool tensor there); the float64 NumPy copy ``scores`` is then made on first use."""

    sense = "max"

    def __init__(self, scores: Any, n: int, m: int, *, exactly: bool = False) -> None:
        self.n, self.m = validate_nm(n, m)
        self.exactly = bool(exactly)
        if is_tensor(scores):
            self.tensor, self._scale = tensor_scores(scores)
            self._numpy: np.ndarray | None = None
            self._shape = tuple(int(d) for d in self.tensor.shape)
            return
        self.tensor = None
        self._numpy = as_array(scores, "scores", ndim=2)
        if self._numpy.size == 0:
            raise ValueError("scores is empty; pass a non-empty 2-D array of weight scores")
        self._shape = self._numpy.shape
        with np.errstate(over="ignore"):
            total = sum(float(np.abs(self._numpy[r]).sum()) for r in row_bands(self._shape))
        self._scale = total if math.isfinite(total) else finite_scale(self._numpy, "scores")

    @property
    def scores(self) -> np.ndarray:
        """The scores as a float64 NumPy array (for tensor input: copied once, on first use)."""
        if self._numpy is None:
            self._numpy = as_array(self.tensor, "scores", ndim=2)
        return self._numpy

    def objective_scale(self) -> float:
        """``sum |s_ij|``: the largest kept score any mask could reach."""
        return self._scale

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def objective(self, decision: Any) -> float:
        """Kept score: sum of ``scores`` where the mask is true (a bool tensor is summed on
        the scores' device, in float64)."""
        mask = self._as_mask(decision)
        if is_tensor(mask) and self.tensor is not None and mask.device.type != "cpu":
            return float((self.tensor.double() * mask.to(self.tensor.device)).sum())
        if is_tensor(mask):
            mask = mask.cpu().numpy()
        s = numpy_view(self.tensor) if self.tensor is not None else None
        s = self.scores if s is None else s
        # faster than s[mask].sum(); float64 products and sums whatever the scores' dtype,
        # in bands of rows (no temporary the size of the matrix)
        if s.dtype == np.float64:
            return float(sum((s[r] * mask[r]).sum() for r in row_bands(s.shape)))
        return float(sum(np.multiply(s[r], mask[r], dtype=np.float64).sum()
                         for r in row_bands(s.shape)))

    def _as_mask(self, decision: Any) -> Any:
        """The decision as a bool mask of the problem's shape: a tensor stays a tensor."""
        mask = decision if is_tensor(decision) else np.asarray(to_numpy(decision, "mask"))
        if tuple(mask.shape) != self.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {self.shape}")
        if str(mask.dtype) not in ("bool", "torch.bool"):
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("mask entries must be 0/1 or boolean")
            mask = mask != 0
        return mask

    def _check_counts(self, counts: Any, what: str) -> None:
        bad = counts > self.n if not self.exactly else counts != self.n
        if bool(bad.any()):
            word = "exactly" if self.exactly else "at most"
            k = int(bad.sum())
            raise ValueError(
                f"mask is infeasible: {k} {what} do not keep {word} {self.n} of {self.m} "
                f"(counts seen: {sorted(set(counts[bad].ravel().tolist()))[:5]})"
            )


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def line_counts(mask: Any, axis: int) -> Any:
    """Sums of a bool mask (NumPy or torch) along ``axis``, as small integers. Along a last
    axis of 1, 2, 4 or 8 entries of a contiguous NumPy mask, the entries are read as one
    machine word and their set bits counted (each True is the byte 0x01): 100x faster than
    a reduction over so short an axis."""
    if is_tensor(mask):
        view = numpy_view(mask)
        if view is None:
            return mask.sum(dim=axis)
        mask = view
    size = mask.shape[axis]
    word = _WORDS.get(size)
    if (axis in (-1, mask.ndim - 1) and word is not None and mask.flags.c_contiguous
            and hasattr(np, "bitwise_count")):
        return np.bitwise_count(mask.view(word))[..., 0]
    small = np.uint8 if size < 256 else np.int64
    return mask.view(np.uint8).sum(axis=axis, dtype=small)


class NMMask(_MaskProblem, MILPExportable):
    """Plain N:M mask: keep at most ``n`` (or exactly, ``exactly=True``) of every ``m``
    consecutive entries along each row (axis 1, the input dimension of ``nn.Linear``).

    The exact answer is the top-n of every group (solver ``"topk"``).
    """

    def __init__(self, scores: Any, n: int, m: int, *, exactly: bool = False) -> None:
        super().__init__(scores, n, m, exactly=exactly)
        if self.shape[1] % self.m:
            raise ValueError(
                f"the number of columns {self.shape[1]} is not divisible by m={self.m}; "
                f"pad or slice the matrix (the adapters can pad for you)"
            )

    def groups(self, a: np.ndarray) -> np.ndarray:
        """(R, C) -> (R * C/m, m)."""
        return a.reshape(-1, self.m)

    def check(self, decision: Any) -> Any:
        mask = self._as_mask(decision)
        self._check_counts(line_counts(mask.reshape(-1, self.m), 1),
                           "groups of m consecutive entries")
        return mask

    def math(self) -> str:
        word = "=" if self.exactly else "<="
        R, C = self.shape
        return (
            f"N:M mask, n={self.n}, m={self.m}, scores s of shape {R}x{C}\n"
            f"maximize   sum_ij s_ij x_ij\n"
            f"subject to sum_(j in g) x_ij {word} {self.n}  for each row i and each group g of "
            f"{self.m} consecutive columns\n"
            f"           x_ij in {{0,1}}"
        )

    def latex(self) -> str:
        rel = "=" if self.exactly else r"\le"
        return (
            r"$$\max_{x\in\{0,1\}^{R\times C}} \sum_{ij} s_{ij}x_{ij}\quad\text{s.t.}\quad "
            rf"\sum_{{j\in g}} x_{{ij}} {rel} {self.n}\ \ \forall i,\ g\ (|g|={self.m})$$"
        )

    def to_milp(self) -> MILPForm:
        R, C = self.shape
        nvar = R * C
        ngroups = nvar // self.m
        rows = np.repeat(np.arange(ngroups), self.m)
        A = sp.csr_array((np.ones(nvar), (rows, np.arange(nvar))), shape=(ngroups, nvar))
        lo = np.full(ngroups, float(self.n) if self.exactly else -np.inf)
        return MILPForm(
            c=self.scores.ravel().copy(), A=A, row_lower=lo,
            row_upper=np.full(ngroups, float(self.n)), lower=np.zeros(nvar),
            upper=np.ones(nvar), integrality=np.ones(nvar, dtype=bool), sense="max",
            decode=lambda x: x.reshape(R, C) > 0.5, totally_unimodular=True,
        )


class TransposableNM(_MaskProblem, MILPExportable):
    """Transposable N:M mask: in every ``m``-by-``m`` block keep at most ``n`` entries per
    row and per column (exactly ``n`` with ``exactly=True``), maximizing the kept score.

    Parameters
    ----------
    scores : (R, C) array or tensor
        Importance of each weight, usually ``|W|``. R and C must be divisible by m.
    n, m : int
        Keep ``n`` of every ``m`` (1 <= n <= m).
    exactly : bool
        Exactly ``n`` per row and column instead of at most ``n``.
    """

    def __init__(self, scores: Any, n: int, m: int, *, exactly: bool = False) -> None:
        super().__init__(scores, n, m, exactly=exactly)
        R, C = self.shape
        if R % self.m or C % self.m:
            raise ValueError(
                f"scores shape {self.shape} is not divisible by m={self.m} in both dimensions; "
                f"pad or slice the matrix (the adapters can pad for you)"
            )

    @property
    def num_blocks(self) -> int:
        R, C = self.shape
        return (R // self.m) * (C // self.m)

    def blocks(self, a: np.ndarray | None = None) -> np.ndarray:
        """The m-by-m blocks of ``a`` (default: the scores), shape (num_blocks, m, m)."""
        return to_blocks(self.scores if a is None else a, self.m)

    def unblock(self, blocks: np.ndarray) -> np.ndarray:
        return from_blocks(blocks, self.shape, self.m)

    def check(self, decision: Any) -> Any:
        """The mask (NumPy or a bool tensor, kept as given) if every block row and column
        keeps at most (exactly) n, else a ``ValueError`` saying how many do not."""
        mask = self._as_mask(decision)
        R, C = self.shape
        m = self.m
        b = mask.reshape(R // m, m, C // m, m)  # a view: [block row, row, block col, col]
        self._check_counts(line_counts(b, 3), "block rows")
        self._check_counts(line_counts(b, 1), "block columns")
        return mask

    def row_col_bound(self) -> float:
        """A cheap upper bound: the better of dropping the column or the row constraints
        (each row, resp. column, of each block keeps its top-n positive scores)."""
        b = self.blocks()
        if not self.exactly:
            b = np.maximum(b, 0.0)
        top_r = -np.sort(-b, axis=2)[:, :, : self.n].sum()
        top_c = -np.sort(-b, axis=1)[:, : self.n, :].sum()
        return float(min(top_r, top_c))

    def math(self) -> str:
        word = "=" if self.exactly else "<="
        R, C = self.shape
        return (
            f"Transposable N:M mask, n={self.n}, m={self.m}, scores s of shape {R}x{C} "
            f"({self.num_blocks} blocks of {self.m}x{self.m})\n"
            f"maximize   sum_ij s_ij x_ij\n"
            f"subject to sum_(j in block cols) x_ij {word} {self.n}  for each block row i\n"
            f"           sum_(i in block rows) x_ij {word} {self.n}  for each block column j\n"
            f"           x_ij in {{0,1}}   (totally unimodular: the LP relaxation is integral)"
        )

    def latex(self) -> str:
        rel = "=" if self.exactly else r"\le"
        return (
            r"$$\max_{x\in\{0,1\}^{R\times C}} \sum_{ij} s_{ij}x_{ij}\quad\text{s.t.}\quad "
            rf"\sum_{{j\in B_c}} x_{{ij}} {rel} {self.n},\ \ \sum_{{i\in B_r}} x_{{ij}} {rel} "
            rf"{self.n}\quad \forall\ {self.m}\times{self.m}\ \text{{blocks}}\ B_r\times B_c$$"
        )

    def to_milp(self) -> MILPForm:
        """One binary per entry, one row constraint and one column constraint per block
        line; the matrix is the incidence matrix of a bipartite graph (TU)."""
        R, C = self.shape
        m = self.m
        idx = np.arange(R * C).reshape(R, C)
        vb = self.blocks(idx)  # (B, m, m) variable index per block entry
        nb = vb.shape[0]
        row_id = (np.arange(nb)[:, None, None] * m + np.arange(m)[None, :, None]) + np.zeros(
            (1, 1, m), dtype=int)
        col_id = nb * m + (np.arange(nb)[:, None, None] * m + np.arange(m)[None, None, :]) + \
            np.zeros((1, m, 1), dtype=int)
        cons = np.concatenate([row_id.ravel(), col_id.ravel()])
        var = np.concatenate([vb.ravel(), vb.ravel()])
        A = sp.csr_array((np.ones(cons.size), (cons, var)), shape=(2 * nb * m, R * C))
        ncons = 2 * nb * m
        lo = np.full(ncons, float(self.n) if self.exactly else -np.inf)
        return MILPForm(
            c=self.scores.ravel().copy(), A=A, row_lower=lo,
            row_upper=np.full(ncons, float(self.n)), lower=np.zeros(R * C), upper=np.ones(R * C),
            integrality=np.ones(R * C, dtype=bool), sense="max",
            decode=lambda x: x.reshape(R, C) > 0.5, totally_unimodular=True,
        )

    def to_networkx(self, block: int | None = None):
        """The min-cost flow network (``networkx.DiGraph``) of one block or of all blocks.

        Nodes ``"s"``, ``"t"``, ``("r", b, i)``, ``("c", b, j)``; arcs s->row (capacity n),
        row->col (capacity 1, weight = -score, for maximization), col->t (capacity n); node
        demands -F at s and F at t, F = n*m per block. With ``exactly=False`` an arc s->t
        (capacity F, weight 0) lets flow bypass, so rows and columns may keep fewer than n.
        Scores are floats; networkx's network simplex is exact on them only up to float
        rounding (it is documented for integers), hence the solver checks the answer.
        """
        import networkx as nx

        bl = self.blocks()
        ids = range(bl.shape[0]) if block is None else [int(block)]
        g = nx.DiGraph()
        total = self.n * self.m * len(ids)
        g.add_node("s", demand=-total)
        g.add_node("t", demand=total)
        for b in ids:
            for i in range(self.m):
                g.add_edge("s", ("r", b, i), capacity=self.n, weight=0)
                g.add_edge(("c", b, i), "t", capacity=self.n, weight=0)
                for j in range(self.m):
                    g.add_edge(("r", b, i), ("c", b, j), capacity=1, weight=-float(bl[b, i, j]))
        if not self.exactly:
            g.add_edge("s", "t", capacity=total, weight=0)
        return g


# ----------------------------------------------------------------------------- diversity


@cache
def _count_transposable(m: int, n: int, exactly: bool) -> int:
    """Number of m x m 0/1 matrices whose rows and columns all sum to n (or to <= n)."""

    @cache
    def rec(rows_left: int, cap: tuple[int, ...]) -> int:
        if rows_left == 0:
            return int(all(c == 0 for c in cap)) if exactly else 1
        if exactly and sum(cap) != rows_left * n:
            return 0
        total = 0
        sizes = [n] if exactly else range(n + 1)
        open_cols = [j for j, c in enumerate(cap) if c > 0]
        for k in sizes:
            for cols in combinations(open_cols, k):
                new = list(cap)
                for j in cols:
                    new[j] -= 1
                total += rec(rows_left - 1, tuple(sorted(new)))
        return total

    return rec(m, tuple([n] * m))


def mask_diversity(kind: str, n: int, m: int, *, exactly: bool = True) -> int:
    """Mask diversity (Hubara et al.): how many masks a constraint allows for one m x m block.

    - ``"unstructured"``: any mask with the same density, ``C(m^2, n m)``;
    - ``"nm"``: n of every m along rows, ``C(m, n)^m``;
    - ``"transposable"``: n per row and per column, counted exactly (e.g. 90 for 2:4).

    ``exactly=False`` counts masks with at most n per group / row / column instead.
    """
    n, m = validate_nm(n, m)
    if kind == "unstructured":
        return math.comb(m * m, n * m) if exactly else sum(
            math.comb(m * m, k) for k in range(n * m + 1))
    if kind == "nm":
        per = math.comb(m, n) if exactly else sum(math.comb(m, k) for k in range(n + 1))
        return per**m
    if kind == "transposable":
        return _count_transposable(m, n, exactly)
    raise ValueError(f"kind must be 'unstructured', 'nm' or 'transposable', got {kind!r}")
