"""Conformance cases: tiny instances with an independent brute-force optimum.

Each formulation contributes a module ``tests/cases_<topic>.py`` defining ``CASES``: a list
of :class:`Case`. ``tests/test_conformance.py`` runs every case against every installed
solver that accepts it and checks feasibility, agreement of exact solvers with brute force,
approximation ratios, and the honesty of ``status`` and ``bound``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    name: str
    make: Callable[[int], Any]  # seed -> problem (small enough for brute force)
    brute: Callable[[Any], float]  # problem -> optimal objective (independent of solvers)
    seeds: tuple[int, ...] = (0, 1, 2)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-solver options
    # solvers whose answers are exact only up to a documented tolerance (e.g. scaled costs)
    rel_tol: dict[str, float] = field(default_factory=dict)
