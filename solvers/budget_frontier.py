"""Compiled kernels (numba) of the exact LayerBudget solver: flat tables, hulls, LP, frontier.

A table of ``L`` layers is held flat: layer ``l``'s levels are ``[off[l], off[l+1])`` of the
arrays ``d`` (extra cost over the layer's cheapest level, in the unit of the costs) and ``e``
(error, in the unit of the errors). After :func:`pareto_levels` every layer's levels are
sorted by ``d`` ascending with ``e`` strictly descending (dominated levels removed).

- :func:`pareto_levels`: per layer, sort by (cost, error) and keep the Pareto levels.
- :func:`hull_steps`: the lower convex hull of each layer's points and its steps
  ``(dd, de)`` between consecutive hull vertices (slopes ``de/dd`` strictly increasing).
- :func:`lp_greedy`: hull steps of all layers by slope; the LP relaxation of the
  multiple-choice knapsack takes them in that order while they fit (Sinha & Zoltners 1979),
  the critical step fractionally; the integer greedy skips a layer after its first step that
  does not fit.
- :func:`layer_min`: ``min_k e[l][k] + lam d[l][k]`` per layer (the Lagrangian terms).
- :func:`extend`: one step of the exact Pareto-frontier DP. A state is the (cost ``D``,
  error ``E``) of a choice for the layers done so far; a new layer's alive levels are added
  to every state, and a candidate survives only if it fits (``D <= R``), is not dominated
  (another state has no more cost and no more error) and its lower bound
  ``E + f(R - D)`` is below the threshold, where ``f(r)`` is the LP relaxation of the layers
  still to do at capacity ``r`` (exact, read from a Fenwick tree of their hull steps in
  slope order, O(log n) per state). The smallest bound of a pruned candidate is returned:
  it is a proven lower bound on every answer through a pruned state.

The functions are plain Python until :func:`compiled` is called: it compiles them with
``numba.njit(cache=True)`` in place (once per process; the machine code is cached on disk), so
that ``import pruneopt`` does not pay numba's import (about half a second) unless this solver
runs.
"""

from __future__ import annotations

import sys
import threading
import types

import numpy as np

from pruneopt.solvers.jit import load_numba


def pareto_levels(off, c, e):
    """(off2, d, e2, idx, cmin): per layer the Pareto levels by cost ascending (errors
    strictly descending), their extra cost ``d = c - min c``, original indices ``idx``."""
    L = off.size - 1
    n = c.size
    d_out = np.empty(n)
    e_out = np.empty(n)
    idx = np.empty(n, dtype=np.int64)
    off2 = np.zeros(L + 1, dtype=np.int64)
    cmin = np.empty(L)
    m = 0
    for li in range(L):
        a, b = off[li], off[li + 1]
        cs = c[a:b]
        es = e[a:b]
        order = np.argsort(cs, kind="mergesort")
        c0 = cs[order[0]]
        cmin[li] = c0
        best = np.inf
        j = 0
        while j < order.size:
            # the run of levels of equal cost: its least error (the first on ties)
            k = order[j]
            j += 1
            while j < order.size and cs[order[j]] == cs[k]:
                if es[order[j]] < es[k]:
                    k = order[j]
                j += 1
            if es[k] < best:
                best = es[k]
                d_out[m] = cs[k] - c0
                e_out[m] = es[k]
                idx[m] = k
                m += 1
        off2[li + 1] = m
    return off2, d_out[:m].copy(), e_out[:m].copy(), idx[:m].copy(), cmin


def hull_steps(off, d, e, alive):
    """Hull steps of every layer's alive levels: (layer, from, to, dd, de) arrays, steps of
    one layer consecutive and by increasing slope; ``from``/``to`` are flat level indices.
    The first alive level of a layer must be its cheapest (``d`` ascending)."""
    L = off.size - 1
    n = d.size
    s_l = np.empty(n, dtype=np.int64)
    s_a = np.empty(n, dtype=np.int64)
    s_b = np.empty(n, dtype=np.int64)
    hull = np.empty(n, dtype=np.int64)
    m = 0
    for li in range(L):
        h = 0
        for k in range(off[li], off[li + 1]):
            if not alive[k]:
                continue
            while h >= 2:
                i = hull[h - 2]
                j = hull[h - 1]
                # drop j if it lies on or above the segment i -> k
                if (e[j] - e[i]) * (d[k] - d[i]) >= (e[k] - e[i]) * (d[j] - d[i]):
                    h -= 1
                else:
                    break
            hull[h] = k
            h += 1
        for t in range(h - 1):
            s_l[m] = li
            s_a[m] = hull[t]
            s_b[m] = hull[t + 1]
            m += 1
    s_l, s_a, s_b = s_l[:m].copy(), s_a[:m].copy(), s_b[:m].copy()
    return s_l, s_a, s_b, d[s_b] - d[s_a], e[s_b] - e[s_a]


def lp_greedy(L, first, s_l, s_b, dd, de, order, R):
    """LP relaxation and integer greedy over hull steps taken in ``order`` (slope ascending).

    ``first[l]``: layer l's cheapest level (flat index). Returns (choice, anchor, crit, frac)
    with ``choice[l]`` the greedy's flat level per layer (within ``R``), ``anchor`` the LP's
    integer part (the steps before the critical one), ``crit`` the position in
    ``order`` of the first step that does not fit (``-1`` if all fit) and ``frac`` the
    fraction of it the LP takes."""
    choice = first.copy()
    anchor = choice
    used = 0.0
    crit = -1
    frac = 0.0
    blocked = np.zeros(L, dtype=np.bool_)
    for p in range(order.size):
        t = order[p]
        li = s_l[t]
        if crit < 0:
            if used + dd[t] <= R:
                used += dd[t]
                choice[li] = s_b[t]
                continue
            crit = p
            frac = (R - used) / dd[t]
            anchor = choice.copy()
            blocked[li] = True
            continue
        if blocked[li]:
            continue
        if used + dd[t] <= R:
            used += dd[t]
            choice[li] = s_b[t]
        else:
            blocked[li] = True
    if crit < 0:
        anchor = choice.copy()
    return choice, anchor, crit, frac


def layer_min(off, d, e, alive, lam):
    """Per layer ``min_k e + lam d`` over the alive levels (``inf`` if none is alive)."""
    L = off.size - 1
    out = np.full(L, np.inf)
    for li in range(L):
        for k in range(off[li], off[li + 1]):
            if alive[k]:
                v = e[k] + lam * d[k]
                if v < out[li]:
                    out[li] = v
    return out


def fenwick_build(vals):
    """A Fenwick (binary indexed) tree of ``vals`` (1-based nodes, ``tree[0]`` unused)."""
    n = vals.size
    tree = np.zeros(n + 1)
    for i in range(n):
        tree[i + 1] += vals[i]
        j = (i + 1) + ((i + 1) & -(i + 1))
        if j <= n:
            tree[j] += tree[i + 1]
    return tree


def fenwick_add(tree, i, v):
    """Add ``v`` at position ``i`` (0-based)."""
    n = tree.size - 1
    j = i + 1
    while j <= n:
        tree[j] += v
        j += j & -j


def lp_rest(tree_d, tree_e, slope, present, r):
    """The LP relaxation of the remaining layers' hull steps at capacity ``r``, relative to
    their cheapest levels: the largest prefix (in slope order) of present steps that fits,
    plus the next present step fractionally. A lower bound (exact up to rounding)."""
    n = tree_d.size - 1
    pos = 0
    rem = r
    acc = 0.0
    step = 1
    while step * 2 <= n:
        step *= 2
    while step > 0:
        q = pos + step
        if q <= n and tree_d[q] <= rem:
            pos = q
            rem -= tree_d[q]
            acc += tree_e[q]
        step //= 2
    # the next present step, taken fractionally (its slope is the most negative left)
    while pos < n and not present[pos]:
        pos += 1
    if pos < n and rem > 0.0:
        acc += rem * slope[pos]
    return acc


def extend(D, E, dk, ek, R, tree_d, tree_e, slope, present, thr):
    """Add one layer (alive levels ``dk`` ascending, ``ek`` descending) to the frontier
    ``(D, E)`` (``D`` ascending, ``E`` strictly descending).

    The frontier shifted by each level is merged in, one level at a time (two-pointer merge
    keeping only non-dominated states, O(states) per level); then every state's bound
    ``E + f(R - D)`` is checked against ``thr``. Returns (D', E', parent, choice,
    min_pruned): the surviving states, each one's parent index and level position, and the
    least bound of a state dropped by the bound (``inf`` if none). A dominated state's bound
    is at least its dominator's (``f`` decreases with capacity), so dropping it first is
    safe. Errors are relative to the cheapest levels (of the layers done and to do)."""
    S = D.size
    m = dk.size
    # level 0 (d = 0): the frontier itself
    aD = D + dk[0]
    aE = E + ek[0]
    aP = np.arange(S)
    aK = np.zeros(S, dtype=np.int64)
    for k in range(1, m):
        nb = 0
        while nb < S and D[nb] + dk[k] <= R:
            nb += 1
        na = aD.size
        cap = na + nb
        oD = np.empty(cap)
        oE = np.empty(cap)
        oP = np.empty(cap, dtype=np.int64)
        oK = np.empty(cap, dtype=np.int64)
        i = 0
        j = 0
        h = 0
        best = np.inf
        while i < na or j < nb:
            if j >= nb:
                take_a = True
            elif i >= na:
                take_a = False
            else:
                bd = D[j] + dk[k]
                take_a = aD[i] < bd or (aD[i] == bd and aE[i] <= E[j] + ek[k])
            if take_a:
                x = aD[i]
                y = aE[i]
                p = aP[i]
                q = aK[i]
                i += 1
            else:
                x = D[j] + dk[k]
                y = E[j] + ek[k]
                p = j
                q = k
                j += 1
            if y < best:
                best = y
                oD[h] = x
                oE[h] = y
                oP[h] = p
                oK[h] = q
                h += 1
        aD, aE, aP, aK = oD[:h], oE[:h], oP[:h], oK[:h]
    n = aD.size
    keep = np.empty(n, dtype=np.int64)
    h = 0
    min_pruned = np.inf
    for t in range(n):
        b = aE[t] + lp_rest(tree_d, tree_e, slope, present, R - aD[t])
        if b >= thr:
            if b < min_pruned:
                min_pruned = b
        else:
            keep[h] = t
            h += 1
    keep = keep[:h]
    return aD[keep], aE[keep], aP[keep], aK[keep], min_pruned


#: the kernels, callees before callers (numba resolves a callee when its caller compiles)
KERNELS = ("pareto_levels", "hull_steps", "lp_greedy", "layer_min", "fenwick_build",
           "fenwick_add", "lp_rest", "extend")


COMPILE_LOCK = threading.Lock()


def compiled() -> types.ModuleType:
    """This module with every kernel compiled by numba (compiles, or loads the cache, once;
    safe to call from several threads)."""
    module = sys.modules[__name__]
    with COMPILE_LOCK:
        if not getattr(module, "is_compiled", False):
            njit = load_numba().njit
            for name in KERNELS:
                setattr(module, name, njit(cache=True)(getattr(module, name)))
            module.is_compiled = True
    return module
