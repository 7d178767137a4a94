"""Numba kernels of the pruned exact search (``memaudit._pruned``): compiled once, cached on disk.

Both are sequential and release the GIL: the caller runs them from a few Python threads on disjoint
ranges (pairs; query rows), which block rather than spin when another process holds a core.
Each pair's sum is computed on its own, so the results do not depend on the split.
"""

import numpy as np
from numba import njit

# reassociation only (vectorised sums): the error bound of a sum holds in any order
fast = {"reassoc", "contract"}

@njit(fastmath=fast, inline="always")
def _sq(qrow, rrow, inv, cs, mode):  # pragma: no cover - compiled
    # modes 0-3: float32 arithmetic (1: times 2^-e, 2: minus the centre); 4: float64, then
    # one rounding. inv and cs are float64 copies of float32 values in modes 0-3: the
    # float32 products and differences are formed exactly in float64 and rounded once
    s = 0.0
    d = qrow.size
    if mode == 0:
        for f in range(d):
            e = np.float64(qrow[f]) - np.float64(np.float32(rrow[f]))
            s += e * e
    elif mode == 1:
        for f in range(d):
            v = np.float32(np.float64(np.float32(rrow[f])) * inv)
            e = np.float64(qrow[f]) - np.float64(v)
            s += e * e
    elif mode == 2:
        for f in range(d):
            v = np.float32(np.float64(np.float32(rrow[f])) - cs[f])
            e = np.float64(qrow[f]) - np.float64(v)
            s += e * e
    elif mode == 3:
        for f in range(d):
            v = np.float32(np.float32(np.float64(np.float32(rrow[f])) * inv) - cs[f])
            e = np.float64(qrow[f]) - np.float64(v)
            s += e * e
    else:
        for f in range(d):
            v = np.float32(np.float64(rrow[f]) * inv - cs[f])
            e = np.float64(qrow[f]) - np.float64(v)
            s += e * e
    return s

@njit(fastmath=fast, cache=True, nogil=True)
def pairs(q32, ref, pi, pj, inv, cs, mode, out, lo, hi):  # pragma: no cover - compiled
    """out[t] for t in [lo, hi): the caller splits the pairs between threads."""
    for t in range(lo, hi):
        out[t] = _sq(q32[pi[t]], ref[pj[t]], inv, cs, mode)

@njit(cache=True, nogil=True)
def scan(g, t, qs, rs, counts, out_i, out_j):  # pragma: no cover - compiled
    """(row, column) of every g[i, j] >= t[qs + i], offset by (qs, rs); -1 if the buffers
    are too small (nothing counted then)."""
    m, w = g.shape
    k = 0
    cap = out_i.size
    for i in range(m):
        ti = t[qs + i]
        for j in range(w):
            if g[i, j] >= ti:
                if k == cap:
                    for u in range(k):  # undo the counts of this call
                        counts[out_i[u]] -= 1
                    return -1
                out_i[k] = qs + i
                out_j[k] = rs + j
                counts[qs + i] += 1
                k += 1
    return k

