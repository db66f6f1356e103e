"""Compiled (Numba) kernels of the solvers, one module per solver that uses them.

The solvers import these modules on first use, so that importing pruneopt does not import
(or compile) Numba.
"""
