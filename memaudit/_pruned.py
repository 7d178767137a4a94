"""Exact pruned search: a PCA lower bound that skips most distance computations, never the answer.

Used by :class:`memaudit.neighbors.NeighborIndex` (``metric="l2"``, exact search) when it pays.
Real images are low-dimensional: the nearest neighbours of a digit are found among the items whose
projection on a few principal directions is near the digit's. The search here

1. fits an orthonormal projection ``W`` (``r`` rows, float32) by a randomized PCA of a seeded
   sample of the (float32-mapped) reference, and a centre ``mu``;
2. embeds every item ``x`` as ``a(x) = [W (x - mu), rho(x)]`` (``r + 1`` float32 values), where
   ``rho(x) = |(I - P)(x - mu)|`` is the norm of its residual off the projection's span ``P``;
   by Pythagoras and the triangle inequality
   ``|q - x|^2 >= |P (q - x)|^2 + (rho(q) - rho(x))^2``, so ``|a(q) - a(x)|`` bounds the distance
   from below, up to the rounding of the embedding, which is bounded rigorously (``eps``, below);
3. takes an upper bound ``U`` on each query's k-th distance from a few candidates proposed by a
   small IVF index on the embeddings: their float32 full distances widened by their error bound
   (any k real items bound it);
4. passes once over the embedded reference in cache-sized tiles (a float32 GEMM of ``r + 2``
   columns and one comparison per pair) and keeps every item whose bound is not above ``U``; the
   others are *proved* farther than ``U``, hence farther than the k-th neighbour;
5. scores the survivors on their full vectors and hands them to the index's certificate and
   float64 refinement, exactly like the candidates of the flat search: the result is the flat
   search's, bit for bit.

The rounding bound: with ``u`` the float32 unit roundoff, a float32 dot product of length ``d``
errs by at most ``gamma_d |x| |y|`` whatever the order of summation (Higham, "Accuracy and
Stability of Numerical Algorithms", Eq. 3.5); ``W`` is only nearly orthonormal once rounded to
float32, so its extreme singular values are bounded by Gershgorin discs of ``W W^T`` and enter the
residual and the bound. Every constant below is an upper bound of the error it names, computed in
float64 with relative slack; the tests compare the result with the flat search and the float64
brute force on image-like data, Gaussian data and adversarial offsets.

A query whose bound keeps too many items (more than ``n / 8``) goes to the flat search; a
projection whose sample leaves more than half of the energy in the residual is not used at all
(it could not prune), and neither is one for a small search (the sample and projection would cost
more than they save).

BLAS and FAISS run on one thread each in here, with the work split between Python threads (the
numba kernels and FAISS release the GIL): many small multi-threaded calls would each synchronise
their threads, which costs several times the work when another process holds a core.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# the flat search's error model
from ._roundoff import U32 as _U32
from ._roundoff import U64 as _U64
from ._roundoff import exact_in_float32 as _exact_in_float32
from ._roundoff import gamma as _gamma

__all__ = ["Pruner", "RANK", "worth_trying"]

RANK = 64  # projected dimensions: bench/knn.py --mnist (100k x 784) keeps 0.12% of the items at
# k = 2 (32: 1.1%, 16: 7.4%), and the projection pass costs (r + 2) / d of the flat search
SAMPLE = 2048  # reference rows the PCA is fitted on
MAX_RESIDUAL = 0.5  # sample energy left in the residual above which the bound cannot prune
MIN_WORK = 2.0e9  # n_queries x n_reference x d below which the flat search is used
MIN_QUERIES = 1000  # the projection of the reference costs about as much as the flat search of
# ~500 queries (MNIST-augmented 100k x 784); it is built for a search of at least this many, and
# reused by every later search of the same index (the audit: samples, then held-out control)
Q_TILE, R_TILE = 256, 2048  # the projection pass's tile: a 2 MiB float32 block stays in cache
IVF_LISTS, IVF_PROBES, IVF_TRAIN = 64, 6, 4096
EXTRA = 8  # candidates beyond k that the IVF index proposes for the upper bound
MAX_K = 16  # neighbours per query above which the automatic choice keeps the flat search: at
# k = 50 on MNIST-augmented the survivors (1% of the items, scored one pair at a time) and the
# queries given up cost more than the flat GEMM saves (bench/knn.py --mnist)
KEEP_SHARE = 0.8  # a block where fewer queries than this are pruned turns the pruning off

_UP = 1 + 2.0**-40  # relative slack for the rounding of the float64 formulas below


def worth_trying(n_queries: int, n_reference: int, d: int, k: int) -> bool:
    """A pruned search can pay: enough work, few neighbours, and a projection much narrower
    than the data."""
    return (float(n_queries) * n_reference * d >= MIN_WORK and d >= 4 * RANK and k <= MAX_K
            and n_reference >= 8 * IVF_LISTS and n_queries >= MIN_QUERIES)


class Pruner:
    """The projection of one reference set (under one float32 map) and the pruned candidate pass.

    Parameters
    ----------
    reference32 : callable(start, stop) -> float32 ndarray
        The float32-mapped reference rows ``[start, stop)`` (exactly the rows the flat search
        scores).
    n, d : int
        Reference size and dimension.
    rows_at : callable(rows) -> float32 ndarray
        The float32-mapped reference rows at the given positions (the PCA sample).
    seed : int
        Seeds the PCA sample, its random range finder and the IVF training.
    """

    def __init__(self, reference32, rows_at, n: int, d: int, seed: int):
        # small LAPACK calls and FAISS's OpenMP regions synchronise their threads at every call,
        # which costs several times the work when another process holds a core (the QR of the
        # PCA took 1.1 s instead of 0.01 s): one thread each here, the blocks split by us
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"), _faiss_threads(1):
            self._build(reference32, rows_at, n, d, seed)

    def _build(self, reference32, rows_at, n: int, d: int, seed: int):
        self.n, self.d = n, d
        self.usable = False
        self.keep_share = KEEP_SHARE
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, SAMPLE), replace=False))
        s = np.asarray(rows_at(sample), dtype=np.float32)
        mu = s.mean(axis=0, dtype=np.float64)
        s -= mu.astype(np.float32)
        total = float(np.einsum("ij,ij->", s, s, dtype=np.float64))
        r = min(RANK, d // 4)
        w = _top_directions(s, r, rng)  # (r, d) orthonormal in float64
        sw = s @ w.T.astype(np.float32)
        kept = float(np.einsum("ij,ij->", sw, sw, dtype=np.float64))
        self.residual_share = 1.0 - kept / total if total > 0 else 1.0
        if total <= 0 or self.residual_share > MAX_RESIDUAL:
            return
        self.r = r
        # |x - mu|^2 from |x|^2 - 2 mu.x + |mu|^2 (no pass of x - mu) unless |mu| dominates the
        # spread, where that difference would cancel
        self.direct = float(mu @ mu) > 4 * total / s.shape[0]
        self.w32 = np.ascontiguousarray(w.astype(np.float32))
        self.mu32 = mu.astype(np.float32)
        # one GEMM gives W x and mu.x: |x - mu|^2 = |x|^2 - 2 mu.x + |mu|^2 needs no pass of x - mu
        self.wmu32 = np.ascontiguousarray(np.vstack([self.w32, self.mu32[None, :]]))
        self._constants()
        step = max(1, (16 << 20) // (4 * d))
        starts = list(range(0, n, step))
        cuts = np.linspace(0, len(starts), _threads(len(starts)) + 1).astype(int)

        def embed_blocks(lo, hi):
            return [self.embed(reference32(a, min(n, a + step))) for a in starts[lo:hi]]

        parts = [x for p in _run(embed_blocks, [(int(lo), int(hi)) for lo, hi in
                                                zip(cuts[:-1], cuts[1:])]) for x in p]
        emb, eps, norm = zip(*parts)
        b = np.concatenate(emb)
        nb = np.einsum("ij,ij->i", b, b, dtype=np.float64)
        h = (nb / 2).astype(np.float32)
        # the tile pass computes a.b - h_j; kappa bounds |nb_j - 2 h_j| (nb_j exact)
        self.kappa = float(nb.max()) * (2 * _U32 + 4 * _gamma(r + 1, _U64)) * _UP
        self.h_max = float(h.max())
        self.b_max = math.sqrt(float(nb.max()) * (1 + 2 * _gamma(r + 1, _U64))) * _UP
        self.b2 = np.empty((n, r + 2), dtype=np.float32)
        self.b2[:, : r + 1] = b
        self.b2[:, r + 1] = -h
        self.eps_max = float(np.max(np.concatenate(eps)))
        self.r_norm = float(np.max(np.concatenate(norm)))  # bounds every |x|, x mapped float32
        import faiss

        lists = min(IVF_LISTS, max(1, n // 39))
        quantizer = faiss.IndexFlatL2(r + 1)
        self.ivf = faiss.IndexIVFFlat(quantizer, r + 1, lists, faiss.METRIC_L2)
        self.ivf.cp.seed = int(seed)
        self.ivf.cp.niter = 10
        train = np.sort(rng.choice(n, size=min(n, IVF_TRAIN), replace=False))
        self.ivf.train(np.ascontiguousarray(b[train]))
        self.ivf.add(np.ascontiguousarray(b))
        self.ivf.nprobe = min(IVF_PROBES, lists)
        self.usable = True

    # -- constants ---------------------------------------------------------------------------
    def _constants(self):
        r, d = self.r, self.d
        w = self.w32.astype(np.float64)
        g = w @ w.T
        row = np.sqrt(np.einsum("ij,ij->i", w, w)) * _UP
        err = _gamma(d, _U64) * float(row.max()) ** 2 * 2  # each computed G_ij against the exact
        off = np.abs(g).sum(axis=1) - np.abs(np.diag(g))
        lam_hi = float(np.max(np.diag(g) + off)) + 2 * r * err
        lam_lo = float(np.min(np.diag(g) - off)) - 2 * r * err
        if lam_lo <= 0:  # pragma: no cover - a float32 rounding of orthonormal rows never does this
            raise RuntimeError("internal error: the projection is not of full rank; please report")
        self.c = max(1.0, math.sqrt(lam_hi) * _UP)  # >= sigma_max(W), and >= 1
        self.sig_lo = math.sqrt(lam_lo) / _UP  # <= sigma_min(W)
        self.fro = math.sqrt(float(np.sum(row**2))) * _UP  # >= |W|_F
        self.beta = _gamma(d, _U32) * self.fro  # |fl(W x) - W x| <= beta |x|
        mu = self.mu32.astype(np.float64)
        self.m = w @ mu  # W mu in float64
        self.mu_norm = math.sqrt(float(mu @ mu)) * _UP
        self.m_err = 2 * _gamma(d, _U64) * self.fro * self.mu_norm + 2.0**-1000
        self.g_d = _gamma(d, _U32)  # a float32 dot product of length d: relative to |x| |y|
        self.mu_sq = float(mu @ mu)  # |mu|^2 (float64; relative error gamma_d(u64))

    def embed(self, x32: np.ndarray):
        """``(a, eps, norm)``: the float32 embeddings ``[W (x - mu), rho_hat]`` of float32 rows,
        a bound ``eps`` of each embedding's distance to the exact ``[W (x - mu), rho(x)]``, and
        a bound ``norm`` of ``|x|``."""
        r = self.r
        out = np.empty((x32.shape[0], r + 1), dtype=np.float32)
        c32 = out[:, :r]
        if self.direct:
            # project y = fl(x - mu): |y - (x - mu)| <= u |x - mu| componentwise, so the GEMM's
            # error scales with |x - mu|, not with the offset |x|
            y = x32 - self.mu32
            c32[...] = y @ self.w32.T
            nc = np.einsum("ij,ij->i", y, y).astype(np.float64)
            g = _gamma(self.d + 4, _U32)  # |y|^2 against |x - mu|^2: rounding of y, sum
            nc_lo, nc_hi = nc * (1 - g), nc * (1 + g) * _UP
            xm_hi = np.sqrt(nc_hi) * _UP  # >= |x - mu|, >= |y| / (1 + u)
            norm = (xm_hi + self.mu_norm) * _UP
            e_lin = (self.beta * xm_hi * (1 + _U32) + self.c * _U32 * xm_hi) * _UP
        else:
            p = x32 @ self.wmu32.T  # (m, r + 1): W x, then mu.x
            cx = p[:, :r].astype(np.float64)
            cx -= self.m
            c32[...] = cx
            xx = np.einsum("ij,ij->i", x32, x32).astype(np.float64)  # error <= g_d |x|^2
            x_hi = np.sqrt(np.maximum(xx, 0.0) * (1 + 2 * self.g_d)) * _UP  # >= |x|
            mx = p[:, r].astype(np.float64)  # mu.x, error <= g_d |mu| |x|
            nc = xx - 2 * mx + self.mu_sq
            e_nc = (self.g_d * (x_hi * x_hi + 2 * self.mu_norm * x_hi)
                    + 4 * _gamma(self.d, _U64) * self.mu_norm**2
                    + 4 * _U64 * (xx + 2 * np.abs(mx) + self.mu_sq)) * _UP
            nc_lo, nc_hi = nc - e_nc, nc + e_nc
            norm = np.minimum(x_hi, (np.sqrt(np.maximum(nc_hi, 0.0)) * _UP + self.mu_norm) * _UP)
            e_lin = self.beta * norm + self.m_err  # GEMM error of W x, and of W mu
        pc = np.sqrt(np.einsum("ij,ij->i", c32, c32, dtype=np.float64))
        gr = _gamma(self.r + 1, _U64)
        # |c32 - W (x - mu)| <= e_lin + float64 subtraction + float32 cast
        e_proj = (e_lin + (_U32 + 2 * _U64) * pc * (1 + gr)) * _UP
        p_hi = pc * (1 + gr) * _UP + e_proj
        p_lo = np.maximum(pc * (1 - gr) / _UP - e_proj, 0.0)
        rho_lo = np.sqrt(np.maximum(nc_lo - (p_hi / self.sig_lo) ** 2 * _UP, 0.0)) / _UP
        rho_hi = np.sqrt(np.maximum(nc_hi - (p_lo / self.c) ** 2 / _UP, 0.0)) * _UP
        out[:, r] = (rho_lo + rho_hi) / 2
        r64 = out[:, r].astype(np.float64)
        half = np.maximum(rho_hi - r64, r64 - rho_lo) * _UP
        eps = np.sqrt(e_proj**2 + half**2) * _UP
        return out, eps, norm

    # -- the candidate pass ------------------------------------------------------------------
    def thresholds(self, a, radius):
        """float32 ``t`` with: every item whose embedding lies within ``radius[i]`` of query i's
        (|a_i - b_j| <= radius) has tile score ``a_i.b_j - h_j >= t[i]``."""
        na = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        na_lo = na * (1 - 2 * _gamma(self.r + 1, _U64))
        a_hi = np.sqrt(na) * (1 + _gamma(self.r + 1, _U64)) * _UP
        delta = _gamma(self.r + 2, _U32) * (a_hi * self.b_max + self.h_max) * _UP
        r2 = (radius * _UP) ** 2 * _UP
        t = (na_lo - self.kappa - r2) / 2 - delta
        t -= 2.0**-40 * (np.abs(na) + self.kappa + r2 + delta) + 2.0**-1000
        t32 = t.astype(np.float32)
        above = t32.astype(np.float64) > t
        t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
        return t32

    def radius(self, eps_q, u_tilde):
        """Bound on |a(q) - a(x)| below which an item may be within ``u_tilde`` of the query
        (``u_tilde`` in the float32-mapped space)."""
        return (u_tilde * self.c + eps_q + self.eps_max) * _UP

    def survivors(self, a, t, cap: int):
        """Pairs (query row, item) whose tile score reaches the query's threshold, over the whole
        reference in cache-sized tiles, grouped by reference tile (so that scoring them next
        reads each reference row from cache); queries with more than ``cap`` survivors are given
        up (returned in ``over``) as soon as they pass it.

        The query rows are split between threads, each running one-thread BLAS products and the
        numba scan (which releases the GIL): hundreds of small multi-threaded products would
        each synchronise their threads, which costs several times the work when another process
        holds a core (measured: 0.11 s quiet, 1.05 s with both cores busy, for one pass).
        """
        from threadpoolctl import threadpool_limits

        m = a.shape[0]
        a2 = np.ascontiguousarray(np.hstack([a, np.ones((m, 1), dtype=np.float32)]))
        t = t.copy()
        counts = np.zeros(m, dtype=np.int64)
        over = np.zeros(m, dtype=bool)
        kernels = _kernels()
        cuts = np.linspace(0, m, _threads(-(-m // Q_TILE)) + 1).astype(int)
        with threadpool_limits(1, "blas"):
            parts = _run(self._pass, [(a2, t, counts, over, cap, int(lo), int(hi), kernels)
                                      for lo, hi in zip(cuts[:-1], cuts[1:])])
        got_i = [x for p in parts for x in p[0]]
        got_j = [x for p in parts for x in p[1]]
        if not got_i:
            return np.empty(0, np.int64), np.empty(0, np.int64), over
        pi, pj = np.concatenate(got_i), np.concatenate(got_j)
        keep = ~over[pi]
        return pi[keep], pj[keep], over

    def _pass(self, a2, t, counts, over, cap, q0, q1, kernels):
        """One thread's share of :meth:`survivors`: query rows [q0, q1) (it alone writes their
        entries of ``t``, ``counts`` and ``over``)."""
        got_i, got_j = [], []
        buf_i = np.empty(1 << 16, dtype=np.int64)
        buf_j = np.empty(1 << 16, dtype=np.int64)
        for rs in range(0, self.n, R_TILE):
            b = self.b2[rs : rs + R_TILE]
            for qs in range(q0, q1, Q_TILE):
                qe = min(q1, qs + Q_TILE)
                g = a2[qs:qe] @ b.T
                if kernels is None:
                    pi, pj = np.nonzero(g >= t[qs:qe, None])
                    pi += qs
                    pj += rs
                    np.add.at(counts, pi, 1)
                else:
                    while True:
                        got = kernels[1](g, t, qs, rs, counts, buf_i, buf_j)
                        if got >= 0:
                            break
                        buf_i = np.empty(2 * buf_i.size, dtype=np.int64)
                        buf_j = np.empty(2 * buf_j.size, dtype=np.int64)
                    pi, pj = buf_i[:got].copy(), buf_j[:got].copy()
                if not pi.size:
                    continue
                got_i.append(pi)
                got_j.append(pj)
                big = (counts[q0:q1] > cap) & ~over[q0:q1]
                if big.any():
                    over[q0:q1] |= big
                    t[q0:q1][big] = np.inf
        return got_i, got_j


def _threads(work_units: int) -> int:
    """Threads for work split in ``work_units`` pieces: at most the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, work_units))


def _run(fn, calls):
    """fn(*args) for each args, on one thread each (results in order); inline for one call.

    FAISS runs on one OpenMP thread inside each of them: OpenMP's thread count is a setting of
    the calling thread, so the caller's ``_faiss_threads(1)`` does not reach a new thread (which
    would start a team of every core's threads: two teams on two cores)."""
    if len(calls) == 1:
        return [fn(*calls[0])]

    def one(args):
        with _faiss_threads(1):
            return fn(*args)

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(one, args) for args in calls]]


class _faiss_threads:
    """FAISS's OpenMP thread count set for a block and restored after it (the caller's setting
    is left as it was)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import faiss

        self.faiss = faiss
        self.users = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        self.faiss.omp_set_num_threads(self.users)


def ivf_search(ivf, a: np.ndarray, c: int) -> np.ndarray:
    """The IVF index's ``c`` proposals per row, with FAISS on one OpenMP thread and the rows split
    between Python threads (FAISS releases the GIL): OpenMP threads spin-wait at each search's
    barrier, which costs several times the work when another process holds a core."""
    with _faiss_threads(1):
        cuts = np.linspace(0, a.shape[0], _threads(a.shape[0] // 256) + 1).astype(int)
        parts = _run(lambda lo, hi: ivf.search(a[lo:hi], c)[1],
                     [(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])])
    return np.concatenate(parts)


def _top_directions(s: np.ndarray, r: int, rng) -> np.ndarray:
    """Orthonormal rows spanning (about) the top-r principal directions of the centred sample ``s``
    (randomized range finder with one power iteration; Halko, Martinsson and Tropp 2011)."""
    n, d = s.shape
    p = min(d, r + 16)
    y = s.T @ (s @ rng.standard_normal((d, p)).astype(s.dtype))
    y, _ = np.linalg.qr(y)
    y = s.T @ (s @ y)
    qm, _ = np.linalg.qr(y.astype(np.float64))  # (d, p)
    small = (s @ qm.astype(s.dtype)).astype(np.float64)
    _, v = np.linalg.eigh(small.T @ small)  # right singular vectors, ascending
    w = v[:, ::-1][:, :r].T @ qm.T  # (r, d)
    w, _ = np.linalg.qr(w.T)
    return np.ascontiguousarray(w.T)


def pair_scores(q32: np.ndarray, ref: np.ndarray, pi: np.ndarray, pj: np.ndarray, m32) -> np.ndarray:
    """Squared distances |q32[pi] - map(ref[pj])|^2 (float64 sums of float32 differences), where
    ``map`` is the flat search's float32 map ``m32`` of the raw reference rows."""
    out = np.empty(pi.size)
    if not pi.size:
        return out
    d = q32.shape[1]
    # the map as _Map.apply computes it: in float32 for values float32 holds exactly, else in
    # float64 and rounded once
    in32 = m32.fast32 and _exact_in_float32(ref.dtype)
    if in32:
        mode = (1 if m32.e else 0) | (2 if m32.cs32 is not None else 0)
        inv = np.float64(m32.inv32 if m32.e else 1.0)
        cs = (m32.cs32 if m32.cs32 is not None else np.zeros(d, dtype=np.float32)).astype(np.float64)
    else:
        mode = 4
        inv = np.float64(m32.inv)
        cs = np.asarray(m32.cs, dtype=np.float64) if m32.cs is not None else np.zeros(d)
    kernels = _kernels()
    if kernels is not None:
        cuts = np.linspace(0, pi.size, _threads(pi.size // 4096) + 1).astype(int)
        _run(kernels[0], [(q32, ref, pi, pj, inv, cs, mode, out, int(lo), int(hi))
                          for lo, hi in zip(cuts[:-1], cuts[1:])])
        return out
    step = max(1, (8 << 20) // (8 * d))
    for a in range(0, pi.size, step):
        raw = ref[pj[a : a + step]]
        r = np.empty(raw.shape, dtype=np.float32)
        m32.apply(raw, r)
        diff = q32[pi[a : a + step]].astype(np.float64) - r
        out[a : a + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def _kernels():
    """The numba kernels (pair scores, tile scan) of ``memaudit._pruned_kernels``, compiled once
    and cached on disk; None without numba."""
    try:
        from . import _pruned_kernels
    except ImportError:  # pragma: no cover - numba ships with the timeseries extra
        return None
    return _pruned_kernels.pairs, _pruned_kernels.scan
