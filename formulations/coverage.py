"""Coverage coresets: choose data points whose radius-``r`` balls cover the data.

Reference: Zheng et al., "Coverage-centric Coreset Selection for High Pruning Rates"
(ICLR 2023). Two forms of geometric set cover over the points ``x_1..x_n`` (rows of
``features``, Euclidean distance, in the units of the features):

- :class:`CoverageSelection` (maximum coverage, ``sense="max"``)::

      maximize    sum_i w_i y_i
      subject to  y_i <= sum_{j in N(i)} x_j      for every point i
                  sum_j x_j <= k                   (k = keep)
                  x_j in {0, 1},  0 <= y_i <= 1

- :class:`CoverSelection` (partial set cover, ``sense="min"``)::

      minimize    sum_j x_j
      subject to  y_i <= sum_{j in N(i)} x_j      for every point i
                  sum_i w_i y_i >= cover * sum_i w_i
                  x_j in {0, 1},  0 <= y_i <= 1

where ``N(i) = {j : ||x_i - x_j|| <= r}`` (it contains ``i``: a point covers itself). The
neighbour graph is built once per problem by :func:`~pruneopt.formulations.geometry.
radius_graph` (exact, sparse). The geometry (graph, radius heuristics, the coverage curve of
the paper's evaluation) lives in :mod:`pruneopt.formulations.geometry`.

Both classes take the same keywords, ``CoverageSelection(features, keep=k, radius=r)`` and
``CoverSelection(features, cover=f, radius=r)``; the older positional orders (and
``budget=`` for ``keep``) still work, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import RTOL, Formulation, as_int, is_integral
from pruneopt.formulations.geometry import (  # noqa: F401 - re-exported (older import path)
    MAX_EDGES,
    CoverageCurve,
    as_features,
    as_indices,
    as_radius,
    as_weights,
    coverage_curve,
    default_radius,
    nearest_distances,
    radius_for_budget,
    radius_graph,
)
from pruneopt.formulations.neighbors import exact_covered, import_faiss, ivf_radius_graph
from pruneopt.formulations.standard import MILPExportable, MILPForm

GRAPH_METHODS = ("exact", "ivf")

__all__ = [
    "CoverSelection",
    "CoverageCurve",
    "CoverageSelection",
    "RadiusCover",
    "coverage_curve",
    "default_radius",
    "nearest_distances",
    "radius_for_budget",
    "radius_graph",
]


def _legacy(cls: str, args: tuple, order: tuple[str, ...], given: dict[str, Any]) -> None:
    """Map old positional arguments onto the keywords (with a DeprecationWarning)."""
    if not args:
        return
    if len(args) > len(order):
        raise TypeError(f"{cls}() takes at most {len(order) + 1} positional arguments")
    warnings.warn(
        f"{cls}: pass {', '.join(order[:len(args)])} by keyword "
        f"(e.g. {cls}(features, {', '.join(f'{k}=...' for k in order[:len(args)])}))",
        DeprecationWarning, stacklevel=3)
    for name, value in zip(order, args, strict=False):
        if given.get(name) is not None:
            raise TypeError(f"{cls}() got {name!r} both by position and by keyword")
        given[name] = value


class RadiusCover(MILPExportable, Formulation):
    """Shared data of both coverage forms: points, radius, weights, neighbour graph.

    Solvers may use every public attribute and method here (``graph``, ``weights``,
    ``covered``, ``degree``, ``integral_weights``).
    """

    def __init__(self, features: Any, radius: float, weights: Any = None, *, graph: Any = None,
                 max_edges: int = MAX_EDGES, progress: bool = False,
                 graph_method: str = "exact", graph_options: dict | None = None) -> None:
        if graph_method not in GRAPH_METHODS:
            raise ValueError(f"graph_method must be one of {', '.join(GRAPH_METHODS)}, got "
                             f"{graph_method!r}")
        if graph_method == "ivf":
            import_faiss()  # a clear ValueError now, naming the extra, if it is missing
        self.graph_method = graph_method
        self.graph_options = dict(graph_options or {})
        self.graph_info: dict[str, Any] | None = None
        self.features = as_features(features)
        self.n = int(self.features.shape[0])
        if radius is None:
            raise ValueError("radius is required: the covering radius in the units of the "
                             "features (see pruneopt.formulations.geometry.default_radius)")
        self.radius = as_radius(radius)
        self._w = as_weights(weights, self.n)
        self.max_edges = as_int(max_edges, "max_edges", low=1)
        self.progress = bool(progress)
        self._graph: sp.csr_array | None = None
        if graph is not None:
            g = sp.csr_array(graph)
            if g.shape != (self.n, self.n):
                raise ValueError(f"graph must be {self.n} x {self.n}, got {g.shape}")
            g = sp.csr_array((g != 0) + sp.eye_array(self.n, dtype=bool, format="csr"))
            g.sort_indices()
            self._graph = g

    @property
    def weights(self) -> np.ndarray:
        """Weight of each point (ones when none were given)."""
        return np.ones(self.n) if self._w is None else self._w

    @property
    def weighted(self) -> bool:
        return self._w is not None

    @property
    def total_weight(self) -> float:
        return float(self.weights.sum())

    @property
    def integral_weights(self) -> bool:
        """Whether every weight is an integer (exact arithmetic for integer backends)."""
        return is_integral(self.weights)

    @property
    def graph(self) -> sp.csr_array:
        """The radius neighbour graph, built on first use: exact (:func:`radius_graph`,
        ``graph_method="exact"``) or from a faiss inverted-file index
        (:func:`~pruneopt.formulations.neighbors.ivf_radius_graph`, ``graph_method="ivf"``,
        ``graph_options`` passed on; its measured recall lands in :attr:`graph_info`).
        An approximate graph holds only true edges but may miss some: the objective on it
        is a lower bound of the true coverage (:meth:`exact_covered_weight` re-scores)."""
        if self._graph is None:
            if self.graph_method == "ivf":
                opts = {"progress": self.progress, **self.graph_options}
                self._graph, info = ivf_radius_graph(self.features, self.radius, **opts)
                self.graph_info = {"method": "ivf", **asdict(info)}
            else:
                self._graph = radius_graph(self.features, self.radius, max_edges=self.max_edges,
                                           progress=self.progress, **self.graph_options)
        return self._graph

    @property
    def graph_exact(self) -> bool:
        """Whether :attr:`graph` is the exact radius graph (a given ``graph`` counts as
        exact: it is the caller's definition of the neighbourhoods)."""
        return self.graph_method == "exact"

    def exact_covered_weight(self, decision: Any) -> float:
        """The covered weight on the exact radius. Equal to :meth:`covered_weight` on an
        exact graph; on an approximate one, the points it leaves uncovered are searched
        against the selected points (:func:`~pruneopt.formulations.neighbors.exact_covered`).
        """
        if self.graph_exact:
            return self.covered_weight(decision)
        mask = exact_covered(self.features, self.radius, decision, known=self.covered(decision))
        return float(self.weights[mask].sum())

    def neighbors(self, i: int) -> np.ndarray:
        """Indices of the points within ``radius`` of point ``i`` (including ``i``)."""
        g = self.graph
        return g.indices[g.indptr[i]:g.indptr[i + 1]].astype(np.int64)

    def degree(self) -> np.ndarray:
        """Number of points each point covers (``|N(j)|``)."""
        return np.diff(self.graph.indptr).astype(np.int64)

    def covered(self, decision: Any) -> np.ndarray:
        """Boolean mask of the points within ``radius`` of a selected point."""
        sel = as_indices(decision, self.n)
        g = self.graph
        mask = np.zeros(self.n, dtype=bool)
        if len(sel):
            starts, ends = g.indptr[sel], g.indptr[sel + 1]
            lens = ends - starts
            idx = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            idx += np.arange(lens.sum())
            mask[g.indices[idx]] = True
        return mask

    def covered_weight(self, decision: Any) -> float:
        """Total weight of the covered points."""
        return float(self.weights[self.covered(decision)].sum())

    def _cover_rows(self) -> sp.csr_array:
        """Rows ``y_i - sum_{j in N(i)} x_j <= 0`` over variables ``[x, y]``."""
        g = sp.csr_array(self.graph, dtype=np.float64)
        return sp.hstack([-g, sp.eye_array(self.n, format="csr")], format="csr")

    def _decode(self, x: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.asarray(x)[: self.n] > 0.5).astype(np.int64)

    def _encode(self, decision: Any) -> np.ndarray:
        """The MILP vector ``[x, y]`` of a selection (y = covered)."""
        x = np.zeros(2 * self.n)
        x[as_indices(decision, self.n)] = 1.0
        x[self.n:] = self.covered(decision)
        return x

    def _pyomo(self, name: str):
        import pyomo.environ as pyo

        m = pyo.ConcreteModel(name=name)
        m.P = pyo.RangeSet(0, self.n - 1)
        m.x = pyo.Var(m.P, domain=pyo.Binary)
        m.y = pyo.Var(m.P, bounds=(0, 1))
        m.cover = pyo.Constraint(
            m.P, rule=lambda _m, i: _m.y[i] <= sum(_m.x[int(j)] for j in self.neighbors(i)))
        return m

    def pyomo_model(self):
        """Deprecated name of :meth:`to_pyomo`."""
        warnings.warn("pyomo_model() is deprecated; use to_pyomo()", DeprecationWarning,
                      stacklevel=2)
        return self.to_pyomo()


class CoverageSelection(RadiusCover):
    """Maximum coverage: at most ``keep`` points whose radius balls cover the most data.

    Parameters
    ----------
    features : (n, d) array or tensor
        The points; Euclidean distance in their units.
    keep : int
        k, the largest number of selected points (``budget=`` is a deprecated alias).
    radius : float
        r > 0, the covering radius (see :func:`default_radius`).
    weights : (n,) array, optional
        Non-negative value of each point when covered (default 1: the objective is then
        the number of covered points).
    graph : (n, n) sparse matrix, optional
        A precomputed radius graph to reuse across sizes.
    graph_method : {"exact", "ivf"}
        How :attr:`graph` is built: exact, or from a faiss inverted-file index (the
        ``scale`` extra) whose recall is measured into :attr:`graph_info`; with "ivf" the
        objective is a lower bound of the true coverage (see :meth:`exact_covered_weight`).
    graph_options : dict, optional
        Passed to the graph builder (e.g. ``{"nprobe": 4}`` for "ivf").

    Decision: sorted array of selected indices. Objective: covered count (or weight).
    """

    sense = "max"

    def __init__(self, features: Any, *args: Any, keep: int | None = None,
                 radius: float | None = None, weights: Any = None, graph: Any = None,
                 max_edges: int = MAX_EDGES, progress: bool = False,
                 budget: int | None = None, graph_method: str = "exact",
                 graph_options: dict | None = None) -> None:
        given = {"keep": keep if keep is not None else budget, "radius": radius,
                 "weights": weights}
        if keep is not None and budget is not None:
            raise TypeError("CoverageSelection() got both keep= and its old name budget=")
        if budget is not None:
            warnings.warn("CoverageSelection(budget=...) is deprecated; use keep=",
                          DeprecationWarning, stacklevel=2)
        _legacy("CoverageSelection", args, ("keep", "radius", "weights"), given)
        super().__init__(features, given["radius"], given["weights"], graph=graph,
                         max_edges=max_edges, progress=progress, graph_method=graph_method,
                         graph_options=graph_options)
        word = "budget" if budget is not None else "keep"  # the name the caller used
        if given["keep"] is None:
            raise ValueError("keep is required: the largest number of points to select")
        self.keep = as_int(given["keep"], word, low=1)
        if self.keep > self.n:
            raise ValueError(
                f"{word} ({self.keep}) is larger than the number of points ({self.n}); "
                f"use {word} <= {self.n}"
            )

    @property
    def budget(self) -> int:
        """Deprecated name of :attr:`keep`."""
        return self.keep

    def objective_scale(self) -> float:
        return self.total_weight

    def objective(self, decision: Any) -> float:
        return self.covered_weight(decision)

    def check(self, decision: Any) -> np.ndarray:
        sel = as_indices(decision, self.n)
        if len(sel) > self.keep:
            raise ValueError(f"{len(sel)} points selected, more than keep={self.keep}")
        return sel

    def math(self) -> str:
        what = "w_i y_i" if self.weighted else "y_i"
        return (
            f"Maximum coverage: n = {self.n} points in R^{self.features.shape[1]}, "
            f"radius r = {self.radius:g}, keep k = {self.keep}\n"
            f"maximize sum_i {what}   (covered {'weight' if self.weighted else 'points'})\n"
            f"subject to y_i <= sum_(j in N(i)) x_j  for all i,  "
            f"N(i) = {{j : ||x_i - x_j|| <= r}}\n"
            f"sum_j x_j <= {self.keep},  x in {{0,1}}^n,  0 <= y <= 1"
        )

    def latex(self) -> str:
        w = "w_i\\," if self.weighted else ""
        return (
            "$$\\begin{aligned}\\max_{x,y}\\ & \\sum_{i=1}^{" + str(self.n) + "} " + w + "y_i\\\\"
            "\\text{s.t. } & y_i \\le \\sum_{j \\in N(i)} x_j,\\quad N(i) = \\{j : "
            "\\lVert x_i - x_j \\rVert \\le " + f"{self.radius:g}" + "\\}\\\\"
            "& \\textstyle\\sum_j x_j \\le " + str(self.keep) + ",\\quad x \\in \\{0,1\\}^n,"
            "\\ 0 \\le y \\le 1\\end{aligned}$$"
        )

    def to_milp(self) -> MILPForm:
        n = self.n
        budget_row = sp.csr_array(np.concatenate([np.ones(n), np.zeros(n)])[None, :])
        A = sp.vstack([self._cover_rows(), budget_row], format="csr")
        return MILPForm(
            c=np.concatenate([np.zeros(n), self.weights]),
            A=A,
            row_lower=np.full(n + 1, -np.inf),
            row_upper=np.concatenate([np.zeros(n), [float(self.keep)]]),
            lower=np.zeros(2 * n),
            upper=np.ones(2 * n),
            integrality=np.concatenate([np.ones(n), np.zeros(n)]).astype(np.int8),
            sense="max",
            decode=self._decode,
            encode=self._encode,
        )

    def to_pyomo(self):
        """A readable Pyomo model: ``x[j]`` (select j), ``y[i]`` (i covered), ``cover[i]``,
        ``keep`` (at most k selected), objective ``covered``."""
        import pyomo.environ as pyo

        m = self._pyomo("CoverageSelection")
        w = self.weights
        m.covered = pyo.Objective(expr=sum(float(w[i]) * m.y[i] for i in range(self.n)),
                                  sense=pyo.maximize)
        m.keep = pyo.Constraint(expr=sum(m.x[j] for j in m.P) <= self.keep)
        return m


class CoverSelection(RadiusCover):
    """Partial set cover: the fewest points whose radius balls cover at least a fraction
    ``cover`` of the data (of its total weight when ``weights`` are given).

    Parameters
    ----------
    features : (n, d) array or tensor
        The points; Euclidean distance in their units.
    cover : float
        The fraction in (0, 1] of the (weighted) data to cover; 1 is classical set cover.
    radius : float
        r > 0, the covering radius.
    weights : (n,) array, optional
        Non-negative weight of each point (default 1).

    Decision: sorted selected indices. Objective: the number of selected points
    (``sense="min"``). Always feasible (every point covers itself).
    """

    sense = "min"

    def __init__(self, features: Any, *args: Any, cover: float | None = None,
                 radius: float | None = None, weights: Any = None, graph: Any = None,
                 max_edges: int = MAX_EDGES, progress: bool = False,
                 graph_method: str = "exact", graph_options: dict | None = None) -> None:
        given = {"radius": radius, "cover": cover, "weights": weights}
        _legacy("CoverSelection", args, ("radius", "cover", "weights"), given)
        super().__init__(features, given["radius"], given["weights"], graph=graph,
                         max_edges=max_edges, progress=progress, graph_method=graph_method,
                         graph_options=graph_options)
        c = 1.0 if given["cover"] is None else given["cover"]
        try:
            c = float(c)
        except (TypeError, ValueError):
            raise ValueError(f"cover must be a fraction in (0, 1], got {c!r}") from None
        if not (0.0 < c <= 1.0):
            raise ValueError(f"cover must be a fraction in (0, 1], got {c!r}")
        self.cover = c

    def objective_scale(self) -> float:
        return float(self.n)

    @property
    def required(self) -> float:
        """The weight that must be covered: ``cover * total weight`` (rounded up to an
        integer when the weights are integers, so ``cover=0.5`` of 7 points means 4)."""
        need = self.cover * self.total_weight
        if self.integral_weights:
            return float(math.ceil(need - RTOL * self.total_weight))
        return need

    def enough(self, covered_weight: float) -> bool:
        """Whether ``covered_weight`` meets :attr:`required` (up to summation rounding,
        ``RTOL`` of the total weight)."""
        return covered_weight >= self.required - RTOL * self.total_weight

    def objective(self, decision: Any) -> float:
        return float(len(as_indices(decision, self.n)))

    def check(self, decision: Any) -> np.ndarray:
        sel = as_indices(decision, self.n)
        got = self.covered_weight(sel)
        if not self.enough(got):
            raise ValueError(
                f"the selection covers {got:g} of the required {self.required:g} "
                f"({self.cover:.0%} of {self.total_weight:g}); select more points"
            )
        return sel

    def math(self) -> str:
        return (
            f"Partial set cover: n = {self.n} points in R^{self.features.shape[1]}, "
            f"radius r = {self.radius:g}, cover >= {self.cover:g}\n"
            f"minimize sum_j x_j   (selected points)\n"
            f"subject to y_i <= sum_(j in N(i)) x_j  for all i,  "
            f"N(i) = {{j : ||x_i - x_j|| <= r}}\n"
            f"sum_i {'w_i ' if self.weighted else ''}y_i >= {self.required:g},  "
            f"x in {{0,1}}^n,  0 <= y <= 1"
        )

    def latex(self) -> str:
        w = "w_i\\," if self.weighted else ""
        return (
            "$$\\begin{aligned}\\min_{x,y}\\ & \\sum_{j=1}^{" + str(self.n) + "} x_j\\\\"
            "\\text{s.t. } & y_i \\le \\sum_{j \\in N(i)} x_j,\\quad N(i) = \\{j : "
            "\\lVert x_i - x_j \\rVert \\le " + f"{self.radius:g}" + "\\}\\\\"
            "& \\textstyle\\sum_i " + w + "y_i \\ge " + f"{self.required:g}" +
            ",\\quad x \\in \\{0,1\\}^n,\\ 0 \\le y \\le 1\\end{aligned}$$"
        )

    def to_milp(self) -> MILPForm:
        """The cover row is written in units of the total weight (``sum_i (w_i / W) y_i >=
        required / W``), so backends' absolute tolerances act on numbers of order 1 at any
        scale of the weights."""
        n = self.n
        W = self.total_weight
        cover_row = sp.csr_array(np.concatenate([np.zeros(n), self.weights / W])[None, :])
        A = sp.vstack([self._cover_rows(), cover_row], format="csr")
        # the required fraction, lowered by the check's own slack so that a selection the
        # check accepts is never cut off by the row's rounding
        need = self.required / W - RTOL
        return MILPForm(
            c=np.concatenate([np.ones(n), np.zeros(n)]),
            A=A,
            row_lower=np.concatenate([np.full(n, -np.inf), [need]]),
            row_upper=np.concatenate([np.zeros(n), [np.inf]]),
            lower=np.zeros(2 * n),
            upper=np.ones(2 * n),
            integrality=np.concatenate([np.ones(n), np.zeros(n)]).astype(np.int8),
            sense="min",
            decode=self._decode,
            encode=self._encode,
        )

    def to_pyomo(self):
        """A readable Pyomo model: ``x[j]``, ``y[i]``, ``cover[i]``, ``enough``, ``size``."""
        import pyomo.environ as pyo

        m = self._pyomo("CoverSelection")
        w = self.weights
        m.size = pyo.Objective(expr=sum(m.x[j] for j in m.P), sense=pyo.minimize)
        m.enough = pyo.Constraint(
            expr=sum(float(w[i]) * m.y[i] for i in range(self.n)) >= self.required)
        return m
