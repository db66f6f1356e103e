"""pruneopt: pruning decisions as formal optimization models with swappable solvers.

>>> import pruneopt
>>> from pruneopt.formulations import TransposableNM
>>> sol = pruneopt.solve(TransposableNM(scores, n=2, m=4))  # doctest: +SKIP
"""

from pruneopt import formulations, solvers
from pruneopt.solvers import Solution, available, solve

__version__ = "0.1.0"

__all__ = ["Solution", "available", "formulations", "solve", "solvers", "__version__"]
