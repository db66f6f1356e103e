"""pruneopt: pruning decisions as formal optimization models with swappable solvers.

>>> import pruneopt
>>> from pruneopt.formulations import TransposableNM
>>> sol = pruneopt.solve(TransposableNM(scores, n=2, m=4))  # doctest: +SKIP
"""

from pathlib import Path as _Path

# The repository keeps formulations/, solvers/ and adapters/ at its top level; an installed
# wheel holds them inside this package (pyproject.toml's package-dir). When this package is
# imported from a checkout (the folder next to them, whatever is installed), its subpackages
# are looked up in the checkout's top level too, so `pruneopt.formulations` always means
# the code beside this file.
_here = _Path(__file__).resolve().parent
_checkout = _here.parent / "formulations" / "__init__.py"
if not (_here / "formulations").is_dir() and _checkout.is_file():
    __path__.append(str(_here.parent))  # noqa: F821 - __path__ is the package's own

from pruneopt import formulations, solvers  # noqa: E402
from pruneopt.solvers import Solution, available, solve, solve_many  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Solution", "available", "formulations", "solve", "solve_many", "solvers", "__version__"]
