"""Exact (and optionally indexed) top-k neighbour search of queries against a reference set.

The search never builds a dense ``n_queries x n_reference`` distance matrix. The reference set is
read in blocks (a memory-mapped ``.npy`` file larger than memory is streamed from disk), and so are
the queries; for each pair of blocks the queries are scored in tiles whose size is bounded by
``tile_bytes``, and a running top list per query is merged block by block. Three backends score the
tiles in float32:

- ``"faiss"`` (default): ``faiss.knn``, FAISS's blocked BLAS search, called on our blocks;
- ``"numpy"``: ``|q|^2 + |r|^2 - 2 q.r`` with one float32 GEMM per tile and ``argpartition``;
- ``"torch"``: the same with ``torch.mm`` and ``torch.topk`` (CPU, or a GPU given as ``device``).

The float32 scores only *propose* candidates; the answer is exact (see docs/neighbors.md,
"Numerics"):

1. the data are centred on the reference mean and scaled by a power of two (no rounding) before
   the float32 cast, so that a common offset or magnitude changes nothing;
2. each query keeps ``k + margin`` candidates, whose distances are recomputed in float64 from the
   original rows (with power-of-two rescaling, so 1e300 and 1e-300 work) and sorted by
   (distance, index), as the brute force does;
3. a certificate, per query, proves from a rigorous float32 error bound that no item outside the
   list can be nearer than (or tie with) the k-th refined neighbour; a query that fails it is
   recomputed exactly by a float64 pass over the whole reference (blocked, bounded memory).

Approximate search (``index="ivf"`` or ``"hnsw"``) builds a FAISS index in memory and reports the
recall@k of what it returns against exact search on a seeded sample of the queries.
"""

from __future__ import annotations

import math
import mmap
import numbers
import os
from dataclasses import dataclass

import numpy as np

from ._progress import Progress
from ._roundoff import U32, U64
from ._roundoff import exact_in_float32 as _exact_in_float32
from ._roundoff import gamma as _gamma
from ._validation import as_2d_array, check_finite, check_positive_int, check_same_dim
from .stats import StatsConfig

__all__ = ["Neighbors", "NeighborIndex", "knn", "BACKENDS", "METRICS", "INDEXES", "unit_rows",
           "recall_rows", "pair_recall"]

BACKENDS = ("faiss", "numpy", "torch")
METRICS = ("l2", "cosine")
INDEXES = ("exact", "ivf", "hnsw")

_U32, _U64 = U32, U64  # unit roundoffs of float32 and float64
_STEP_BYTES = 16 << 20  # rows are converted, and memory-mapped pages released, this much at a time
_SQ_LOW, _SQ_HIGH = 2.0**-900, 2.0**900  # a float64 sum of squares in this range needs no rescaling
_ROW_LOW, _ROW_HIGH = 2.0**-400, 2.0**400  # the same for a row's largest magnitude (cosine)
_F64_TOP = 2.0**1023
_VIEW_BYTES = 256 << 20  # rows scored at a time when they are views, not copies
_PRUNE_ROWS = 1024  # query block of the pruned search
_DIST_TINY = 2.0**-1070  # absolute error of a computed distance in the subnormal range
# FAISS's database tile for our faiss.knn calls (its default is 1,024 rows). Measured with
# bench/faiss_tile.py on 2 cores: 1.23-1.62x less CPU at d = 256-1024 while another process is busy
# on one core, 0.94-1.10x on a quiet machine. Set around each call and restored after it, so the
# user's own FAISS setting is left as it was.
FAISS_DATABASE_TILE = 16384
# Query rows from which our faiss.knn calls take FAISS's BLAS path (below: its SIMD scan, one query
# at a time). FAISS 1.15 keeps the scan while rows x d < 128,000 (500 queries at d = 256, 125 at
# d = 1,024; older versions: rows < 20), which made a search of 16-500 queries up to 7.7x slower
# than the GEMM: `python bench/faiss_tile.py --blas` (2 cores, quiet), scan / GEMM at d = 64, 256,
# 1,024, 3,072: 16 queries 1.12, 1.53, 2.38, 4.08x; 256 queries 2.08, 4.55, 5.74, 7.41x; the scan
# wins at 2-8 queries (0.23-0.99x at d <= 256). Set around each call as the tile is.
FAISS_BLAS_ROWS = 12


@dataclass(frozen=True)
class Neighbors:
    """The k nearest reference items of each query.

    Attributes
    ----------
    distances : ndarray of shape (n_queries, k), float64
        Ascending. Euclidean distance for ``metric="l2"``; ``1 - cosine similarity`` (clipped to
        [0, 2]) for ``metric="cosine"``.
    indices : ndarray of shape (n_queries, k), int64
        Row positions in the reference set; equal distances come in increasing index order.
    metric, backend, index : str
        How the search was done.
    recall : float or None
        For an approximate index: mean recall@k of the returned neighbours against exact search,
        on ``recall_sample`` queries.
    recall_sample : int or None
        Number of queries the recall was measured on.
    exact_fallback : int
        Queries whose float32 candidates could not be certified and that were recomputed by the
        float64 pass over the whole reference (exact search only).
    pruned : int
        Queries answered by the pruned exact search (a PCA lower bound proved most items farther
        than the k-th neighbour without scoring them; see docs/neighbors.md, "Pruned search");
        the others by the flat search. The results are the same either way.
    """

    distances: np.ndarray
    indices: np.ndarray
    metric: str
    backend: str
    index: str = "exact"
    recall: float | None = None
    recall_sample: int | None = None
    exact_fallback: int = 0
    pruned: int = 0

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "backend": self.backend,
            "index": self.index,
            "k": self.k,
            "recall": self.recall,
            "recall_sample": self.recall_sample,
        }


# -- reading rows ------------------------------------------------------------------------------
def _mmap_of(x: np.ndarray):
    return getattr(x, "_mmap", None) if isinstance(x, np.memmap) else None


def _release(mm) -> None:
    """Drop a memory map's pages from this process (they stay in the OS page cache)."""
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - no madvise on this OS
        pass


class _Pager:
    """Release a memory map's pages after every ``_STEP_BYTES`` read from it (no-op otherwise)."""

    def __init__(self, x: np.ndarray):
        self.mm = _mmap_of(x)
        self.pending = 0

    def read(self, nbytes: int) -> None:
        if self.mm is not None:
            self.pending += int(nbytes)
            if self.pending >= _STEP_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.mm is not None and self.pending:
            _release(self.mm)
            self.pending = 0


def _step_rows(d: int, itemsize: int = 8) -> int:
    return max(1, _STEP_BYTES // (itemsize * d))


def _pread_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """``x[rows]`` of a memory-mapped 2-D array read with ``preadv`` from its file, in sorted
    runs of consecutive rows; ``None`` when that is not possible (then the map is read).

    Faulting scattered rows of a map in would map whole page-cache folios (up to 2 MiB each on
    recent Linux) into the process for every row; a file read maps nothing.
    """
    name = getattr(x, "filename", None)
    if (name is None or getattr(x, "mode", "r") == "c" or not hasattr(os, "preadv")
            or x.ndim != 2 or x.strides[1] != x.itemsize or x.strides[0] < x.shape[1] * x.itemsize):
        return None
    try:
        base = np.frombuffer(x._mmap, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):  # pragma: no cover - an unusual map
        return None
    origin = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY + (x.ctypes.data - base)
    uniq, inverse = np.unique(rows, return_inverse=True)
    got = np.empty((uniq.size, x.shape[1]), dtype=x.dtype)
    row_bytes = x.shape[1] * x.itemsize
    contiguous = x.strides[0] == row_bytes
    cuts = np.flatnonzero(np.diff(uniq) != 1) + 1 if contiguous else np.arange(1, uniq.size)
    with open(name, "rb", buffering=0) as fh:
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, uniq.size]):
            view = memoryview(got[a:b]).cast("B")
            pos, done = origin + int(uniq[a]) * x.strides[0], 0
            while done < view.nbytes:
                n = os.preadv(fh.fileno(), [view[done:]], pos + done)
                if n <= 0:  # pragma: no cover - the file shrank under the map
                    return None
                done += n
    return got[inverse.ravel()]


def _take_rows(x: np.ndarray, rows: np.ndarray, pager: _Pager) -> np.ndarray:
    """float64 copy of ``x[rows]``; a memory map is read from its file, not through the map."""
    rows = np.asarray(rows, dtype=np.int64)
    if pager.mm is not None:
        got = _pread_rows(x, rows)
        if got is not None:
            return got.astype(np.float64, copy=False)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size and (np.diff(rows) == 1).all():
        out = np.array(x[rows[0] : rows[-1] + 1], dtype=np.float64)
    elif pager.mm is None:
        out = np.take(x, rows, axis=0).astype(np.float64, copy=False)
    else:
        order = np.argsort(rows, kind="stable")  # sorted reads are kinder to the disk
        out = np.empty((rows.size, x.shape[1]), dtype=np.float64)
        out[order] = x[rows[order]]
    pager.read(out.size * x.dtype.itemsize)
    return out


@dataclass(frozen=True)
class _Ranges:
    """Per-feature minimum, maximum (and mean) of a set, in float64."""

    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray | None


def _column_ranges(x: np.ndarray, name: str, mean: bool) -> _Ranges:
    """Per-feature min and max (and mean) in one blocked pass; NaN/Inf of a memory map refused.

    A memory map's mean is taken over all rows during the pass; an in-memory array's over at most
    16,384 evenly spaced rows (it only serves as a centre: distances do not depend on it).
    """
    n, d = x.shape
    pager = _Pager(x)
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    total = np.zeros(d)
    step = _step_rows(d, x.dtype.itemsize)
    for s in range(0, n, step):
        blk = x[s : s + step]  # a view: a memory map's pages are read here, then released
        if pager.mm is not None:
            check_finite(blk, name, offset=s)
        np.minimum(lo, blk.min(axis=0), out=lo)
        np.maximum(hi, blk.max(axis=0), out=hi)
        if mean and pager.mm is not None:
            total += _scaled_sum(blk, n, max(-lo.min(), hi.max()))
        pager.read(blk.nbytes)
    pager.flush()
    if not mean:
        return _Ranges(lo, hi, None)
    if pager.mm is None:
        sample = x[:: max(1, n // 16384)]
        top = max(-lo.min(), hi.max())
        total = sum((_scaled_sum(sample[s : s + step], sample.shape[0], top)
                     for s in range(0, sample.shape[0], step)), np.zeros(d))
        n = sample.shape[0]
    return _Ranges(lo, hi, total * (_shrink(n) ** -1 / n))


def _shrink(n: int) -> float:
    return math.ldexp(1.0, -max(0, math.ceil(math.log2(n))))  # 2^-ceil(log2 n) <= 1/n


def _scaled_sum(blk: np.ndarray, n: int, top: float) -> np.ndarray:
    """float64 column sums of ``blk`` (values at most ``top`` in magnitude) times
    2^-ceil(log2 n): the sum over n rows cannot overflow."""
    if blk.dtype.kind == "f" and float(top) * blk.shape[0] >= 2.0**1000:
        return np.sum(blk * _shrink(n), axis=0, dtype=np.float64)
    return np.sum(blk, axis=0, dtype=np.float64) * _shrink(n)


def recall_rows(n: int, m: int, seed) -> np.ndarray:
    """The sorted, seeded sample of ``min(m, n)`` query rows on which an approximate search's
    recall is measured (neighbour search and the duplicates probe's range search alike)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(int(m), n), replace=False))


def pair_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact (query, item) pairs that the approximate search also returned (1.0 when
    exact search finds none). With k neighbours per query this is the mean recall@k."""
    if len(exact) == 0:
        return 1.0
    got = {tuple(p) for p in np.asarray(found).tolist()}
    return float(np.mean([tuple(p) in got for p in np.asarray(exact).tolist()]))


def _row_pairs(idx: np.ndarray) -> np.ndarray:
    """(row, item) pairs of a (m, k) neighbour table."""
    return np.stack([np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()], axis=1)


def unit_scales(t: np.ndarray, name: str, offset: int = 0):
    """``(factor, shift)`` of the float64 rows of ``t``: its unit rows are
    ``ldexp(t, -shift) * factor`` (rows whose squares would overflow or underflow are rescaled by
    the power of two ``2^shift`` first; ``shift`` is 0 elsewhere). Zero rows are refused."""
    sq = np.einsum("ij,ij->i", t, t)
    shift = np.zeros(t.shape[0], dtype=np.int64)
    bad = ~((sq >= _SQ_LOW) & (sq <= _SQ_HIGH))
    if bad.any():
        rows = np.flatnonzero(bad)
        sub = t[rows]
        top = np.max(np.abs(sub), axis=1)
        zero = np.flatnonzero(top == 0)
        if zero.size:
            raise ValueError(
                f"{name}: item {offset + int(rows[zero[0]])} has zero norm ({zero.size} such "
                "item(s) in this block); cosine distance is undefined for it"
            )
        e = np.frexp(top)[1]
        sub = np.ldexp(sub, -e[:, None])
        sq[rows] = np.einsum("ij,ij->i", sub, sub)
        shift[rows] = e
    return 1.0 / np.sqrt(sq), shift


def unit_rows(t: np.ndarray, name: str, offset: int = 0) -> np.ndarray:
    """Normalize the float64 rows of ``t`` in place (:func:`unit_scales`). Zero rows are
    refused."""
    factor, shift = unit_scales(t, name, offset)
    if shift.any():
        rows = np.flatnonzero(shift)
        t[rows] = np.ldexp(t[rows], -shift[rows][:, None])
    t *= factor[:, None]
    return t


def _exponent(x: float) -> int:
    """e with x / 2^e in [0.5, 1) (0 for x = 0), kept inside [-1000, 1000]."""
    return min(max(int(np.frexp(x)[1]), -1000), 1000) if x > 0 else 0


class _Map:
    """x -> fl(x * 2^-e - c): an exact power-of-two scaling, then one rounding of the centring.

    ``c`` is rounded to a float32 number when it can be, so that float32 and float64 inputs are
    centred on the same point (distances are invariant to it, not to two different ones).
    """

    def __init__(self, centre: np.ndarray | None, e: int, float32: bool):
        self.e = e
        self.s, self.inv = math.ldexp(1.0, e), math.ldexp(1.0, -e)
        cs = None if centre is None else centre * self.inv
        self.identity = cs is None and e == 0
        small = cs is None or bool(np.all(np.abs(cs) < 2.0**100))
        self.fast32 = float32 and -120 <= e <= 120 and small
        self.cs32 = None
        if self.fast32 and cs is not None:
            self.cs32 = cs.astype(np.float32)
            cs = self.cs32.astype(np.float64)
        self.cs = cs
        self.inv32 = np.float32(self.inv) if self.fast32 else None

    def apply(self, raw: np.ndarray, out: np.ndarray) -> None:
        if out.dtype == np.float32 and self.fast32 and _exact_in_float32(raw.dtype):
            if self.e:
                np.multiply(raw, self.inv32, out=out, casting="unsafe")
                if self.cs32 is not None:
                    np.subtract(out, self.cs32, out=out)
            elif self.cs32 is not None:
                np.subtract(raw, self.cs32, out=out, casting="unsafe")
            else:
                out[...] = raw
        elif self.identity:
            out[...] = raw
        else:
            t = np.multiply(raw, self.inv, dtype=np.float64)
            if self.cs is not None:
                t -= self.cs
            out[...] = t


class _Plan:
    """The maps from items to the vectors that are scored.

    ``l2``, float32 scores: x -> (x - c) / 2^e when the offset of the data (the reference mean c)
    outweighs their spread, else x -> x / 2^e; 2^e is a power of two that brings magnitudes
    outside [2^-40, 2^40] back to about 1 (else e = 0). The float64 pass always centres and
    scales, so that its values lie in [-1, 1]. Distances are only multiplied by 2^-e (exact).
    ``cosine``: x -> x / |x| (computed in float64 with power-of-two rescaling).
    """

    def __init__(self, metric: str, d: int, ref: _Ranges, queries: _Ranges | None):
        self.metric = metric
        self.d = d
        self.m32 = self.m64 = None
        self.s32 = self.s64 = 1.0
        if metric != "l2":
            return
        lo, hi = ref.lo, ref.hi
        if queries is not None:
            lo, hi = np.minimum(lo, queries.lo), np.maximum(hi, queries.hi)
        c = ref.mean
        spread = max(float(np.max(hi - c)), float(np.max(c - lo)), 0.0)
        top = max(float(np.max(np.abs(lo))), float(np.max(np.abs(hi))))
        z = math.ldexp(1.0, -_exponent(top))  # compare |c| and the half-ranges without overflow
        centre = float(np.sum((c * z) ** 2)) > float(np.sum(((hi - lo) * (z / 2)) ** 2))
        size = spread if centre else top
        e32 = 0 if size == 0 or 2.0**-40 <= size <= 2.0**40 else _exponent(size)
        self.m32 = _Map(c if centre else None, e32, float32=True)
        self.m64 = _Map(c, _exponent(spread), float32=False)
        self.s32, self.s64 = self.m32.s, self.m64.s

    def viewable(self, x: np.ndarray) -> bool:
        """The float32 map of ``x`` is ``x`` itself (an in-memory float32 array, no mapping)."""
        return (self.metric == "l2" and self.m32.identity and x.dtype == np.float32
                and _mmap_of(x) is None and x.flags.c_contiguous)

    def transform(self, x: np.ndarray, start: int, stop: int, out: np.ndarray, name: str,
                  pager: _Pager) -> np.ndarray:
        """The mapped rows ``x[start:stop]``, written into ``out`` (float32: the scored map;
        float64: the exact pass's), or a view of ``x`` when no copy is needed."""
        f32 = out.dtype == np.float32
        if f32 and self.viewable(x):
            return x[start:stop]
        step = _step_rows(self.d)
        for a in range(start, stop, step):
            b = min(stop, a + step)
            raw, o = x[a:b], out[a - start : b - start]
            if self.metric == "cosine":
                o[...] = unit_rows(np.array(raw, dtype=np.float64), name, a)
            else:
                (self.m32 if f32 else self.m64).apply(raw, o)
            pager.read(raw.nbytes)
        return out


# -- the exact distance ------------------------------------------------------------------------
def _scaled_l2(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Row-wise |q - r| with the difference rescaled by a power of two (no overflow/underflow)."""
    diff = q - r
    top = np.max(np.abs(diff), axis=1)
    out = np.zeros(q.shape[0])
    nz = top > 0
    e = np.frexp(top[nz])[1]
    y = np.ldexp(diff[nz], -e[:, None])
    out[nz] = np.ldexp(np.sqrt(np.sum(y * y, axis=-1)), e)
    return out


def _pow2_rows(x: np.ndarray) -> np.ndarray:
    """Rows whose largest magnitude lies outside [2^-400, 2^400] divided by a power of two."""
    top = np.max(np.abs(x), axis=-1)
    bad = (top > 0) & ~((top >= _ROW_LOW) & (top <= _ROW_HIGH))
    if not bad.any():
        return x
    x = x.copy()
    x[bad] = np.ldexp(x[bad], -np.frexp(top[bad])[1][..., None])
    return x


def _pair_distances(q: np.ndarray, r: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 distances between ``q[i]`` (shape (c, d)) and each ``r[i, j]`` ((c, j, d)).

    ``l2``: sqrt(sum((q - r)^2)), summed by numpy's pairwise sum along the features, exactly as
    ``tests/naive.py`` does; pairs whose sum of squares would overflow or underflow are recomputed
    with the difference rescaled by a power of two (the same value wherever both are defined).
    ``cosine``: 1 - q.r / (|q| |r|), clipped to [0, 2].
    """
    if metric == "l2":
        diff = q[:, None, :] - r
        with np.errstate(over="ignore", under="ignore"):  # such pairs are rescaled below
            sq = np.sum(np.square(diff, out=diff), axis=-1)
        dist = np.sqrt(sq)
        bad = ~((sq >= _SQ_LOW) & (sq <= _SQ_HIGH))
        if bad.any():
            i, j = np.nonzero(bad)
            dist[i, j] = _scaled_l2(q[i], r[i, j])
        return dist
    qs, rs = _pow2_rows(q), _pow2_rows(r)
    dot = np.sum(qs[:, None, :] * rs, axis=-1)
    nq = np.sqrt(np.sum(qs * qs, axis=-1))
    nr = np.sqrt(np.sum(rs * rs, axis=-1))
    return np.clip(1.0 - dot / (nq[:, None] * nr), 0.0, 2.0)


def _merge(best_d, best_i, cand_d, cand_i, k):
    """Keep the k smallest of the running and candidate lists (row-wise)."""
    d = np.concatenate([best_d, cand_d], axis=1)
    i = np.concatenate([best_i, cand_i], axis=1)
    if d.shape[1] > k:
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        d = np.take_along_axis(d, part, axis=1)
        i = np.take_along_axis(i, part, axis=1)
    return d, i


def _sort_rows(d: np.ndarray, i: np.ndarray):
    """Sort each row by (distance, index)."""
    if not d.size:
        return d, i
    order = np.lexsort((i, d), axis=1)
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def _merge_pairs(best_d, best_i, rows, pd, pi, k):
    """Merge (query row, distance, index) triples into sorted per-row top-k lists."""
    f = best_d.shape[0]
    all_r = np.concatenate([np.repeat(np.arange(f), k), rows])
    all_d = np.concatenate([best_d.ravel(), pd])
    all_i = np.concatenate([best_i.ravel(), pi])
    order = np.lexsort((all_i, all_d, all_r))
    all_r, all_d, all_i = all_r[order], all_d[order], all_i[order]
    starts = np.searchsorted(all_r, np.arange(f))
    rank = np.arange(all_r.size) - starts[all_r]
    keep = rank < k
    out_d = np.full((f, k), np.inf)
    out_i = np.full((f, k), -1, dtype=np.int64)
    out_d[all_r[keep], rank[keep]] = all_d[keep]
    out_i[all_r[keep], rank[keep]] = all_i[keep]
    return out_d, out_i


class _Tiler:
    """Top-k of a query block against a reference block, as squared L2 or negative inner product."""

    def __init__(self, backend: str, metric: str, device: str | None):
        self.backend = backend
        self.metric = metric
        self.input_roundoff = 0.0  # extra relative rounding of the GEMM inputs (TF32, bfloat16)
        if backend == "faiss":
            try:
                import faiss
            except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
                raise ImportError("backend='faiss' needs faiss-cpu: pip install faiss-cpu") from exc
            self.faiss = faiss
        elif backend == "torch":
            try:
                import torch
            except ImportError as exc:
                raise ImportError(
                    "backend='torch' needs torch: pip install 'memaudit[torch]'"
                ) from exc
            self.torch = torch
            self.device = torch.device(device or "cpu")
            precision = torch.get_float32_matmul_precision()
            tf32 = self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
            if precision == "medium":
                self.input_roundoff = 2.0**-8  # bfloat16 inputs
            elif precision == "high" or tf32:
                self.input_roundoff = 2.0**-11  # TF32 inputs

    def topk(self, q: np.ndarray, r: np.ndarray, k: int, q_sq=None, r_sq=None):
        """Return (scores, local indices), smaller score = nearer; both of shape (len(q), k)."""
        if self.backend == "faiss":
            m = self.faiss.METRIC_L2 if self.metric == "l2" else self.faiss.METRIC_INNER_PRODUCT
            cvar = self.faiss.cvar
            users = cvar.distance_compute_blas_database_bs, cvar.distance_compute_blas_threshold
            cvar.distance_compute_blas_database_bs = FAISS_DATABASE_TILE
            # 0: BLAS, the largest int: the scan, whether FAISS compares rows or rows x d
            cvar.distance_compute_blas_threshold = 0 if len(q) >= FAISS_BLAS_ROWS else 2**31 - 1
            try:
                d, i = self.faiss.knn(q, r, k, metric=m)
            finally:
                (cvar.distance_compute_blas_database_bs,
                 cvar.distance_compute_blas_threshold) = users
            if self.metric == "cosine":
                d = -d
            return d, i.astype(np.int64, copy=False)
        if self.backend == "numpy":
            g = q @ r.T
            if self.metric == "l2":
                g *= -2.0
                g += q_sq[:, None]
                g += r_sq[None, :]
            else:
                np.negative(g, out=g)
            if k < g.shape[1]:
                part = np.argpartition(g, k - 1, axis=1)[:, :k]
            else:
                part = np.broadcast_to(np.arange(g.shape[1]), g.shape).copy()
            return np.take_along_axis(g, part, axis=1), part.astype(np.int64, copy=False)
        torch = self.torch
        tq = torch.from_numpy(q).to(self.device)
        tr = torch.from_numpy(r).to(self.device)
        g = tq @ tr.T
        if self.metric == "l2":
            g.mul_(-2.0)
            g.add_(torch.from_numpy(q_sq).to(self.device)[:, None])
            g.add_(torch.from_numpy(r_sq).to(self.device)[None, :])
        else:
            g.neg_()
        vals, idx = torch.topk(g, k, dim=1, largest=False, sorted=False)
        return vals.cpu().numpy(), idx.cpu().numpy().astype(np.int64)


class _Bounds:
    """Rigorous error bounds of the float32 scores (pass 1) and float64 scores (exact pass).

    For unit roundoff u, a dot product of length d has error at most gamma_d sum |x_i y_i|
    whatever the summation order (Higham, "Accuracy and Stability of Numerical Algorithms",
    Eq. 3.5); the score |q|^2 + |r|^2 - 2 q.r therefore errs by at most gamma_{d+4} (|q| + |r|)^2.
    The float32 cast of the mapped values errs by u relative (plus 2^-126 absolute for flushed
    subnormals), i.e. by ``eta`` in distance.
    """

    def __init__(self, d: int, input_roundoff: float):
        up = input_roundoff
        self.g32 = _gamma(d + 4, _U32) + 2 * up + up * up
        self.ut32 = _U32 + 2.0**-52
        self.tiny32 = 2 * math.sqrt(d) * 2.0**-126
        self.g64 = _gamma(d + 4, _U64)
        self.tiny64 = 2 * math.sqrt(d) * 2.0**-1070
        # the computed exact distance against the true one: relative (l2, plus _DIST_TINY
        # absolute for subnormal results), absolute (cosine)
        self.dist_rel = _gamma(d + 4, _U64) + 2.0**-50
        self.dist_abs = 2 * _gamma(d + 6, _U64) + 2.0**-51
        gn = _gamma(d + 4, _U64)  # a float64 unit vector's componentwise error
        self.cos32 = (self.g32 * (1 + self.ut32) ** 2 * (1 + gn) ** 2
                      + 2 * (self.ut32 + gn) * (1 + self.ut32 + gn) + 2 * self.tiny32)
        self.cos64 = self.g64 * (1 + gn) ** 2 + 2 * gn * (2 + gn) + 2 * self.tiny64


def _norm_bound(sq: np.ndarray, d: int, u: float) -> np.ndarray:
    """Upper bound of |x| from a computed sum of squares (relative error <= gamma_d)."""
    g = _gamma(d, u)
    if g >= 1:
        return np.full(np.shape(sq), np.inf)
    return np.sqrt(np.asarray(sq, dtype=np.float64) / (1 - g)) * (1 + 2.0**-50)


class NeighborIndex:
    """Top-k neighbour search against a fixed reference set (exact by default).

    Parameters
    ----------
    metric : {"l2", "cosine"}, default="l2"
        Euclidean distance, or cosine distance ``1 - cos(q, r)``.
    backend : {"faiss", "numpy", "torch"}, default="faiss"
        What scores the float32 candidate tiles of exact search. Every backend returns the same
        neighbours and distances (those of the float64 brute force). Approximate indexes always
        use FAISS.
    index : {"exact", "ivf", "hnsw"}, default="exact"
        ``"ivf"`` (FAISS IndexIVFFlat) and ``"hnsw"`` (IndexHNSWFlat) are approximate; the recall
        of their results against exact search is measured on a sample of the queries and reported.
    block_bytes : int, default=64 MiB
        Size of one block of mapped float32 rows held in memory; the reference and the queries
        are both read in such blocks (memory-mapped files are streamed). Memory use is bounded by
        about ``2 * block_bytes + tile_bytes`` plus the running top lists, whatever the sizes. An
        in-memory float32 reference that needs no centring or scaling is used in place.
    tile_bytes : int, default=256 MiB
        Size of one query-by-reference score tile (numpy and torch backends, and the float64
        pass).
    refine : bool, default=True
        Recompute the distances of the candidates exactly (float64), sort by (distance, index)
        and certify the result (see docs/neighbors.md, "Numerics"). ``False`` returns the float32
        scores' neighbours and distances, exact only up to float32 rounding.
    margin : int, optional
        Extra float32 candidates kept per query beyond the ``k`` needed (default ``k + 8``); more
        make the certificate succeed more often on data with many near-ties.
    progress : bool or None, default=None
        Progress bar on stderr; ``None`` shows it when stderr is a terminal.
    nlist, nprobe : int, optional
        IVF parameters (defaults ``4 * sqrt(n)`` lists and 16 probes).
    hnsw_m, ef_search : int, default=32, 128
        HNSW parameters.
    recall_sample : int, default=500
        Queries on which an approximate index's recall is measured against exact search (at
        least 1; all queries when there are fewer).
    seed : int, default=0
        Seed for the recall sample and IVF training.
    device : str, optional
        Torch device for ``backend="torch"`` (``"cpu"``, ``"cuda"``).
    prune : bool or None, default=None
        Exact ``l2`` search only: try the pruned search (``memaudit._pruned``), which proves most
        items farther than the k-th neighbour from a PCA lower bound and scores only the others.
        ``None`` tries it when the search is large enough and the reference is in memory, and
        uses it when a sample of the reference leaves at most half of its energy off the
        projection; ``True`` tries it whatever the size; ``False`` never. The result is the same.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    >>> nb = NeighborIndex().fit(ref).search(ref[:5], k=2, exclude_self=True)
    >>> nb.indices.shape
    (5, 2)
    """

    def __init__(
        self,
        metric: str = "l2",
        backend: str = "faiss",
        index: str = "exact",
        *,
        block_bytes: int = 64 << 20,
        tile_bytes: int = 256 << 20,
        refine: bool = True,
        margin: int | None = None,
        progress: bool | None = None,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        recall_sample: int = 500,
        seed: int = StatsConfig.seed,
        device: str | None = None,
        prune: bool | None = None,
    ):
        self.metric = metric
        self.backend = backend
        self.index = index
        self.block_bytes = block_bytes
        self.tile_bytes = tile_bytes
        self.refine = refine
        self.margin = margin
        self.progress = progress
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.recall_sample = recall_sample
        self.seed = seed
        self.device = device
        self.prune = prune

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, reference, name: str = "reference") -> "NeighborIndex":
        """Store (and for approximate search, index) the reference set.

        Parameters
        ----------
        reference : array-like of shape (n_reference, ...) or numpy.memmap
            Items with any number of trailing axes (flattened). A memory-mapped array is streamed
            from disk block by block and never loaded whole; one pass here checks it for NaN/Inf
            and takes its per-feature ranges and mean.
        name : str, default="reference"
            Used in error messages.
        """
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {self.index!r}")
        check_positive_int(self.block_bytes, "block_bytes")
        check_positive_int(self.tile_bytes, "tile_bytes")
        if self.margin is not None:
            check_positive_int(self.margin, "margin", minimum=0)
        if self.index != "exact":
            if (isinstance(self.recall_sample, bool)
                    or not isinstance(self.recall_sample, numbers.Integral)
                    or self.recall_sample < 1):
                raise ValueError(
                    f"recall_sample must be an integer of at least 1 (the number of queries on "
                    f"which the approximate index's recall is measured), got {self.recall_sample!r}"
                )
        self.reference_ = as_2d_array(reference, name)
        self.name_ = name
        self.n_reference_, self.n_features_ = self.reference_.shape
        self.ranges_ = _column_ranges(self.reference_, name, mean=self.metric == "l2")
        self._r_sq_max = {}  # largest squared norm of the mapped reference, per float32 map
        self.approx_ = None
        if self.index != "exact":
            self.approx_plan_ = self._plan(None, name)
            self.approx_ = self._build_approx()
        return self

    def _plan(self, q_ranges: _Ranges | None, q_name: str) -> _Plan:
        """The mapping of both sets; refuses magnitudes whose distances exceed float64."""
        if self.metric == "l2":
            for rng, nm in ((self.ranges_, self.name_), (q_ranges, q_name)):
                if rng is None:
                    continue
                top = max(float(np.max(np.abs(rng.lo))), float(np.max(np.abs(rng.hi))))
                if top * 2 * math.sqrt(self.n_features_) >= _F64_TOP:
                    raise ValueError(
                        f"{nm} holds values of magnitude {top:.3g}: with {self.n_features_} "
                        "features their L2 distances can exceed the float64 range (1.8e308); "
                        "divide both sets by the same power of two (e.g. 2**-64), which scales "
                        "every distance by it and changes no neighbour"
                    )
        return _Plan(self.metric, self.n_features_, self.ranges_, q_ranges)

    def _build_approx(self):
        import faiss

        n, d = self.reference_.shape
        x = self.approx_plan_.transform(self.reference_, 0, n, np.empty((n, d), dtype=np.float32),
                                        self.name_, _Pager(self.reference_))
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.index == "hnsw":
            idx = faiss.IndexHNSWFlat(d, check_positive_int(self.hnsw_m, "hnsw_m", 2), faiss_metric)
            idx.hnsw.efSearch = check_positive_int(self.ef_search, "ef_search")
        else:
            nlist = self.nlist or max(1, int(4 * np.sqrt(n)))
            nlist = min(check_positive_int(nlist, "nlist"), n)
            quantizer = faiss.IndexFlat(d, faiss_metric)
            idx = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
            idx.cp.seed = int(self.seed)
            idx.train(x)
            idx.nprobe = min(check_positive_int(self.nprobe, "nprobe"), nlist)
        idx.add(x)
        return idx

    # -- searching ---------------------------------------------------------------------------
    def search(self, queries, k: int = 2, *, exclude_self: bool = False, name: str = "queries"):
        """Find the ``k`` nearest reference items of each query.

        Parameters
        ----------
        queries : array-like of shape (n_queries, ...) or numpy.memmap
            Same number of features as the reference. A memory-mapped array is streamed in
            blocks of ``block_bytes`` (checked for NaN/Inf first, block by block).
        k : int, default=2
            Neighbours per query; at most the reference size (minus one with ``exclude_self``).
        exclude_self : bool, default=False
            The queries *are* the reference set (query i is reference item i): item i is not
            returned as its own neighbour. Exact duplicates of i elsewhere still are.
        name : str, default="queries"
            Used in error messages.

        Returns
        -------
        Neighbors
        """
        if not hasattr(self, "reference_"):
            raise RuntimeError("NeighborIndex is not fitted: call fit(reference) before search()")
        k = check_positive_int(k, "k")
        q = as_2d_array(queries, name)
        check_same_dim(q, self.reference_, name, self.name_)
        if exclude_self and q.shape[0] != self.n_reference_:
            raise ValueError(
                f"exclude_self=True needs the queries to be the reference set, but {name} has "
                f"{q.shape[0]} items and {self.name_} has {self.n_reference_}"
            )
        if (k + 1 if exclude_self else k) > self.n_reference_:
            extra = " (k + 1 with exclude_self)" if exclude_self else ""
            raise ValueError(
                f"k={k}{extra} is larger than the {self.n_reference_} item(s) of {self.name_}"
            )
        self_rows = np.arange(q.shape[0]) if exclude_self else None
        if self.approx_ is not None:
            if _mmap_of(q) is not None:
                _column_ranges(q, name, mean=False)  # NaN/Inf before the search
            dist, idx = self._search_approx(q, k, self_rows, name)
            sample = recall_rows(q.shape[0], self.recall_sample, self.seed)
            recall = self._measure_recall(q, idx, sample, exclude_self, name)
            return Neighbors(dist, idx, self.metric, "faiss", self.index, recall, int(sample.size))
        need_ranges = self.metric == "l2" or _mmap_of(q) is not None
        plan = self._plan(_column_ranges(q, name, mean=False) if need_ranges else None, name)
        dist, idx, fallback, pruned = self._search_exact(q, k, self_rows, plan, name)
        return Neighbors(dist, idx, self.metric, self.backend, "exact", exact_fallback=fallback,
                         pruned=pruned)

    def _rows(self, itemsize: int) -> int:
        return max(1, self.block_bytes // (itemsize * self.n_features_))

    # -- exact search ------------------------------------------------------------------------
    def _search_exact(self, q: np.ndarray, k: int, self_rows, plan: _Plan, name: str):
        """Certified exact top-k of every query: float32 candidates, float64 refinement and
        certificate, and the float64 pass for the queries the certificate does not cover."""
        m, d = q.shape
        n = self.n_reference_
        tiler = _Tiler(self.backend, self.metric, self.device)
        bounds = _Bounds(d, tiler.input_roundoff)
        k_search = k + (self_rows is not None)
        margin = k_search + 8 if self.margin is None else int(self.margin)
        n_cand = min(n, k_search + margin) if self.refine else k_search
        q_rows = min(m, self._rows(4))
        r_rows = min(n, self._rows(4))
        # blocks that are views of in-memory float32 data cost no memory: score them 256 MiB at a
        # time (FAISS: all at once) to keep the products wide
        view_rows = max(1, _VIEW_BYTES // (4 * d))
        if plan.viewable(self.reference_):
            r_rows = n if self.backend == "faiss" else min(n, max(r_rows, view_rows))
        if plan.viewable(q):
            q_rows = min(m, max(q_rows, view_rows))
        pruner = self._pruner(plan, m, k_search) if self.refine else None
        if pruner is not None:  # blocks small enough to turn the pruning off early if it fails
            q_rows = min(q_rows, _PRUNE_ROWS)
        qbuf = np.empty((0 if plan.viewable(q) else q_rows, d), dtype=np.float32)
        rbuf = np.empty((0 if plan.viewable(self.reference_) else r_rows, d), dtype=np.float32)
        dist = np.empty((m, k), dtype=np.float64)
        idx = np.empty((m, k), dtype=np.int64)
        qpager = _Pager(q)
        fallback = pruned = 0
        with Progress(n * m, f"knn ({self.backend})", self.progress) as bar:
            for qs in range(0, m, q_rows):
                qe = min(m, qs + q_rows)
                q32 = plan.transform(q, qs, qe, qbuf[: qe - qs], name, qpager)
                qpager.flush()
                own = None if self_rows is None else self_rows[qs:qe]
                qrows = np.arange(qs, qe)
                if pruner is not None:
                    out = self._pruned_block(pruner, plan, bounds, q, qrows, q32, k, own, name,
                                             (tiler, n_cand, rbuf, r_rows, bar))
                    dist[qs:qe], idx[qs:qe], nf, np_ = out
                    fallback += nf
                    pruned += np_
                    if self.prune is None and np_ < pruner.keep_share * (qe - qs):
                        pruner = None  # too many queries it could not prune: flat from here
                    continue
                scores, cand, r_norm = self._candidates(tiler, plan, q32, n_cand, rbuf, r_rows,
                                                        bar)
                if not self.refine:
                    dist[qs:qe], idx[qs:qe] = self._unrefined(plan, scores, cand, own)
                    continue
                out = self._certify(plan, bounds, q, qrows, q32, scores, cand, r_norm, k, own,
                                    name)
                dist[qs:qe], idx[qs:qe], nf = out
                fallback += nf
        qpager.flush()
        return dist, idx, fallback, pruned

    # -- pruned exact search (memaudit._pruned) ----------------------------------------------
    def _pruner(self, plan: _Plan, m: int, k: int):
        """The reference's projection under this float32 map, when the pruned search applies
        and pays (built once per map, then reused by every search); else None."""
        from . import _pruned

        x = self.reference_
        n, d = x.shape
        if (self.prune is False or self.metric != "l2" or _mmap_of(x) is not None
                or x.dtype.kind not in "fiu" or x.dtype == np.float16 or d < 4 or n < 64):
            return None
        if self.prune is None and (self.backend != "faiss" or not _pruned.worth_trying(m, n, d, k)):
            return None
        m32 = plan.m32
        key = (m32.e, None if m32.cs32 is None else m32.cs32.tobytes())
        cache = self.__dict__.setdefault("_pruners", {})
        if key not in cache:
            def block(a, b):  # called from several threads: a buffer each
                out = np.empty((0 if plan.viewable(x) else b - a, d), dtype=np.float32)
                return plan.transform(x, a, b, out, self.name_, _Pager(x))

            def rows_at(rows):
                out = np.empty((rows.size, d), dtype=np.float32)
                m32.apply(x[rows], out)
                return out

            cache[key] = _pruned.Pruner(block, rows_at, n, d, self.seed)
        pr = cache[key]
        return pr if pr.usable else None

    def _pruned_block(self, pr, plan, bounds, q, qrows, q32, k, own, name, flat):
        """Exact top-k of one query block by the pruned search; queries it cannot prune (too
        many survivors) go to the flat search. Returns (distances, indices, float64-pass count,
        pruned count)."""
        from ._pruned import EXTRA, ivf_search, pair_scores

        n_q, d = q32.shape
        n = self.n_reference_
        tiler, n_cand, rbuf, r_rows, bar = flat
        a_emb, eps_q, _ = pr.embed(q32)
        c = min(n, k + (own is not None) + EXTRA)
        cand = ivf_search(pr.ivf, a_emb, c)
        valid = cand >= 0
        if own is not None:
            valid &= cand != own[:, None]
        a = _norm_bound(np.einsum("ij,ij->i", q32, q32, dtype=np.float64), d, _U64)
        ci, cj = np.nonzero(valid)
        near = np.full(cand.shape, np.inf)
        near[ci, cj] = self._upper_bound(plan, bounds,
                                         pair_scores(q32, self.reference_, ci, cand[ci, cj],
                                                     plan.m32), a[ci], pr.r_norm)
        upper = np.sort(near, axis=1)[:, k - 1]  # k real items: >= the k-th distance
        eta = bounds.ut32 * (a + pr.r_norm) * (1 + 2.0**-50) + bounds.tiny32
        with np.errstate(over="ignore", invalid="ignore"):
            u_t = (((upper + _DIST_TINY) / (plan.s32 * (1 - bounds.dist_rel) * (1 - 2.0**-40))
                    + eta) * (1 + 2.0**-40))
            t = pr.thresholds(a_emb, pr.radius(eps_q, u_t))
        lost = ~np.isfinite(upper)
        t[lost] = np.inf  # no bound: the flat search answers these
        pi, pj, over = pr.survivors(a_emb, t, max(4 * c, n // 8))
        over |= lost
        if own is not None:
            mine = pj == own[pi]
            pi, pj = pi[~mine], pj[~mine]
        score = pair_scores(q32, self.reference_, pi, pj, plan.m32)
        keep = self._lower_bound(plan, bounds, score, a[pi], pr.r_norm) <= upper[pi]
        pi, pj, score = pi[keep], pj[keep], score[keep]
        counts = np.bincount(pi, minlength=n_q)
        over |= counts < k  # pragma: no branch - the k items behind the bound always survive
        dist = np.empty((n_q, k))
        idx = np.empty((n_q, k), dtype=np.int64)
        nf = 0
        ok = np.flatnonzero(~over)
        if ok.size:
            sel = ~over[pi]
            pi, pj, score = pi[sel], pj[sel], score[sel]
            pos = np.full(n_q, -1)
            pos[ok] = np.arange(ok.size)
            width = int(counts[ok].max()) + 1  # one spare column: every list ends in a far one
            order = np.argsort(pi, kind="stable")
            pi, pj, score = pos[pi[order]], pj[order], score[order]
            starts = np.cumsum(counts[ok]) - counts[ok]
            col = np.arange(pi.size) - starts[pi]
            s_tab = np.full((ok.size, width), np.inf)
            c_tab = np.zeros((ok.size, width), dtype=np.int64)
            s_tab[pi, col] = score
            c_tab[pi, col] = pj
            out = self._certify(plan, bounds, q, qrows[ok], np.ascontiguousarray(q32[ok]),
                                s_tab, c_tab, pr.r_norm, k, None, name, left_above=upper[ok])
            dist[ok], idx[ok], nf = out
            bar.update(ok.size * n)
        rest = np.flatnonzero(over)
        if rest.size:
            q_rest = np.ascontiguousarray(q32[rest])
            scores, cand, r_norm = self._candidates(tiler, plan, q_rest, n_cand, rbuf, r_rows, bar)
            out = self._certify(plan, bounds, q, qrows[rest], q_rest, scores, cand, r_norm, k,
                                None if own is None else own[rest], name)
            dist[rest], idx[rest], nf2 = out
            nf += nf2
        return dist, idx, nf, int(ok.size)

    def _candidates(self, tiler: _Tiler, plan: _Plan, q32: np.ndarray, n_cand: int,
                    rbuf: np.ndarray, r_rows: int, bar: Progress):
        """Pass 1: the ``n_cand`` smallest float32 scores of each query, over every reference
        block; also an upper bound of the mapped reference norms (for the certificate)."""
        n_q, d = q32.shape
        n = self.n_reference_
        l2 = self.metric == "l2"
        numpy_like = self.backend != "faiss"
        q_sq = np.einsum("ij,ij->i", q32, q32) if l2 and numpy_like else None
        best_d = np.full((n_q, 0), np.inf, dtype=np.float32)
        best_i = np.full((n_q, 0), -1, dtype=np.int64)
        key = (plan.m32.identity, plan.m32.e, plan.m32.cs is None) if l2 else None
        known = getattr(self, "_r_sq_max", {}).get(key) if l2 else None
        r_sq_max = 0.0
        pager = _Pager(self.reference_)
        for start in range(0, n, r_rows):
            stop = min(n, start + r_rows)
            block = plan.transform(self.reference_, start, stop, rbuf[: stop - start], self.name_,
                                   pager)
            r_sq = None
            if l2 and (numpy_like or known is None):
                r_sq = np.einsum("ij,ij->i", block, block)
                r_sq_max = max(r_sq_max, float(r_sq.max()))
            kk = min(n_cand, block.shape[0])
            if self.backend == "faiss":
                q_rows = n_q  # FAISS tiles internally
            else:
                q_rows = max(1, self.tile_bytes // (4 * block.shape[0]))
            cand_d = np.empty((n_q, kk), dtype=np.float32)
            cand_i = np.empty((n_q, kk), dtype=np.int64)
            for qs in range(0, n_q, q_rows):
                sl = slice(qs, qs + q_rows)
                qsq = q_sq[sl] if q_sq is not None else None
                cand_d[sl], cand_i[sl] = tiler.topk(q32[sl], block, kk, qsq, r_sq)
                bar.update(cand_d[sl].shape[0] * block.shape[0])
            cand_i += start
            best_d, best_i = _merge(best_d, best_i, cand_d, cand_i, n_cand)
        pager.flush()
        if l2 and known is None:  # the reference's norms do not change between searches
            known = r_sq_max
            self._r_sq_max = {**getattr(self, "_r_sq_max", {}), key: r_sq_max}
        r_norm = float(_norm_bound(known, d, _U32)) if l2 else 1.0 + 2 * _U32
        return best_d, best_i, r_norm

    def _unrefined(self, plan: _Plan, scores, cand, own):
        """``refine=False``: distances from the float32 scores (not certified)."""
        if own is not None:
            cand, scores = _drop_self(cand, scores, own)
        s = scores.astype(np.float64)
        if self.metric == "l2":
            dist = np.sqrt(np.maximum(s, 0.0)) * plan.s32
        else:
            dist = np.clip(1.0 + s, 0.0, 2.0)  # scores are -cos
        return _sort_rows(dist, cand)

    def _refine(self, q: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Exact float64 distances between queries ``q[rows]`` and reference items ``cand``."""
        d = self.n_features_
        n_q, j = cand.shape
        out = np.empty((n_q, j), dtype=np.float64)
        if not out.size:
            return out
        budget = 4 << 20  # bytes of float64 rows per array (query rows, candidate rows, difference)
        cj = max(1, min(j, budget // (8 * d)))
        cq = max(1, budget // (8 * d * cj))
        qpager, rpager = _Pager(q), _Pager(self.reference_)
        for a in range(0, n_q, cq):
            qrows = _take_rows(q, rows[a : a + cq], qpager)
            for b in range(0, j, cj):
                c = cand[a : a + cq, b : b + cj]
                r = _take_rows(self.reference_, c.ravel(), rpager).reshape(c.shape + (d,))
                out[a : a + cq, b : b + cj] = _pair_distances(qrows, r, self.metric)
        qpager.flush()
        rpager.flush()
        return out

    def _lower_bound(self, plan: _Plan, bounds: _Bounds, score, a, r_norm):
        """Smallest exact distance (as computed) that an item with float32 score >= ``score`` can
        have: the certificate's left side."""
        with np.errstate(invalid="ignore", over="ignore"):
            if self.metric == "cosine":
                low = 1.0 + score - bounds.cos32 - bounds.dist_abs
            else:
                span = a + r_norm
                err = bounds.g32 * span * span
                eta = bounds.ut32 * span * (1 + 2.0**-50) + bounds.tiny32
                root = np.sqrt(np.maximum(score - err, 0.0))
                low = (np.maximum(root - eta, 0.0) * plan.s32 * (1 - bounds.dist_rel)
                       * (1 - 2.0**-40) - _DIST_TINY)
        return np.where(np.isposinf(score), np.inf, np.nan_to_num(low, nan=-np.inf))

    def _upper_bound(self, plan: _Plan, bounds: _Bounds, score, a, r_norm):
        """Largest exact distance (as computed) that an item with float32 score <= ``score``
        can have (l2): the pruned search's bound on a query's k-th distance."""
        span = a + r_norm
        err = bounds.g32 * span * span
        eta = bounds.ut32 * span * (1 + 2.0**-50) + bounds.tiny32
        root = np.sqrt(score + err) * (1 + 2.0**-50)
        return (root + eta) * plan.s32 * (1 + bounds.dist_rel) * (1 + 2.0**-40) + _DIST_TINY

    def _certify(self, plan, bounds, q, qrows, q32, scores, cand, r_norm, k, own, name,
                 left_above=None):
        """Refine the candidates of one query block; prove each query's top-k or recompute it.

        The k best-scored candidates are refined first; their k-th exact distance ``dk`` bounds
        the answer from above. A candidate (or any item left out of the list) whose float32 score
        proves it farther than ``dk`` needs no refinement; the others are refined, in score order,
        until one is proved farther (the rest then are too, scores being sorted). A query for
        which even the items left out of the list cannot be proved farther goes to the float64
        pass. Returns (distances, indices, number of queries recomputed by the float64 pass).

        ``qrows`` are the rows of ``q`` that ``q32`` maps. ``left_above`` (pruned search): every
        item outside the list is already proved farther than ``left_above[i]`` (its computed
        exact distance exceeds it), instead of scoring at least the largest kept score.
        """
        n_q, n_cand = cand.shape
        n = self.n_reference_
        if plan.metric == "l2" and plan.m32.identity and q.dtype == np.float32:
            src, rows = q32, np.arange(n_q)  # the scored rows are the original values
        else:
            src, rows = q, qrows
        s64 = scores.astype(np.float64)
        # every item outside the list scores at least the largest kept score
        if left_above is None:
            left_out = s64.max(axis=1) if n_cand < n else np.full(n_q, np.inf)
        if own is not None:
            s64[cand == own[:, None]] = np.inf
        s64, cand = _sort_rows(s64, cand)
        usable = n_cand - (own is not None)  # columns that surely hold no self match
        a = None
        if self.metric == "l2":
            a = _norm_bound(np.einsum("ij,ij->i", q32, q32, dtype=np.float64), self.n_features_,
                            _U64)[:, None]
        first = self._refine(src, rows, cand[:, :k])
        best_d, best_i = _sort_rows(first, cand[:, :k])
        dk = best_d[:, -1]
        far = self._lower_bound(plan, bounds, s64[:, k:usable], a, r_norm) > dk[:, None]
        stop = k + np.sum(~far, axis=1)  # first column proved farther (sorted scores: monotone)
        if left_above is None:
            far_left = self._lower_bound(plan, bounds, left_out[:, None], a, r_norm)[:, 0] > dk
        else:
            far_left = left_above >= dk
        more = np.flatnonzero(stop > k)
        if more.size:  # refine columns k .. stop - 1 of these rows, then re-sort them
            width = int(stop[more].max())
            pi, pj = np.nonzero(np.arange(k, width)[None, :] < stop[more, None])
            pj += k
            extra = np.full((more.size, width), np.inf)
            extra[:, :k] = first[more]
            extra[pi, pj] = self._refine(src, rows[more[pi]], cand[more[pi], pj][:, None])[:, 0]
            d_m, i_m = _sort_rows(extra, cand[more, :width])
            best_d[more], best_i[more] = d_m[:, :k], i_m[:, :k]
        todo = np.flatnonzero((stop == usable) & ~far_left)
        if todo.size:
            sub_own = None if own is None else own[todo]
            best_d[todo], best_i[todo] = self._float64_pass(plan, bounds, q, qrows[todo], k,
                                                            best_d[todo, -1], sub_own, name)
        return best_d, best_i, int(todo.size)

    def _float64_pass(self, plan, bounds, q, rows, k, bound, own, name):
        """Exact top-k of the queries ``q[rows]`` by a float64 pass over the whole reference.

        ``bound`` is an upper bound of each query's k-th distance (that of k real items). Every
        item whose float64 score could put it within the bound is refined exactly; the float64
        scores' error bound (gamma_{d+4} in float64) is tight, so few others are.
        """
        f = rows.size
        out_d = np.empty((f, k))
        out_i = np.empty((f, k), dtype=np.int64)
        chunk = self._rows(8)
        for a in range(0, f, chunk):
            sel = slice(a, a + chunk)
            out_d[sel], out_i[sel] = self._float64_chunk(plan, bounds, q, rows[sel], k,
                                                         bound[sel],
                                                         None if own is None else own[sel], name)
        return out_d, out_i

    def _float64_chunk(self, plan, bounds, q, rows, k, bound, own, name):
        d = self.n_features_
        n = self.n_reference_
        f = rows.size
        qpager = _Pager(q)
        qraw = _take_rows(q, rows, qpager)
        qpager.flush()
        q64 = plan.transform(qraw, 0, f, np.empty((f, d)), name, _Pager(qraw))
        l2 = self.metric == "l2"
        if l2:
            q_sq = np.einsum("ij,ij->i", q64, q64)
            a = _norm_bound(q_sq, d, _U64)
            base = (bound + _DIST_TINY) / (plan.s64 * (1 - bounds.dist_rel)) * (1 + 2.0**-50)
        best_d = np.full((f, k), np.inf)
        best_i = np.full((f, k), -1, dtype=np.int64)
        r_rows = min(n, self._rows(8))
        rbuf = np.empty((r_rows, d))
        pager = _Pager(self.reference_)
        for start in range(0, n, r_rows):
            stop = min(n, start + r_rows)
            block = plan.transform(self.reference_, start, stop, rbuf[: stop - start],
                                   self.name_, pager)
            if l2:
                r_sq = np.einsum("ij,ij->i", block, block)
                span = a + float(_norm_bound(r_sq.max(), d, _U64))
                eta = _U64 * 2 * span + bounds.tiny64
                thr = ((base + eta) ** 2 + bounds.g64 * span * span) * (1 + 2.0**-40)
            else:
                thr = bound + bounds.dist_abs + bounds.cos64 - 1.0 + 2.0**-50
            t_rows = max(1, self.tile_bytes // (8 * block.shape[0]))
            for ts in range(0, f, t_rows):
                sl = slice(ts, ts + t_rows)
                g = q64[sl] @ block.T
                if l2:
                    g *= -2.0
                    g += q_sq[sl, None]
                    g += r_sq[None, :]
                else:
                    np.negative(g, out=g)
                hit = g <= thr[sl, None]
                if own is not None:
                    mine = own[sl] - start
                    inside = np.flatnonzero((mine >= 0) & (mine < block.shape[0]))
                    hit[inside, mine[inside]] = False
                pi, pj = np.nonzero(hit)
                if not pi.size:
                    continue
                pi += ts
                pj += start
                pd = np.empty(pi.size)
                step = max(1, (4 << 20) // (8 * d))
                rpager = _Pager(self.reference_)
                for c in range(0, pi.size, step):
                    r = _take_rows(self.reference_, pj[c : c + step], rpager)
                    pd[c : c + step] = _pair_distances(qraw[pi[c : c + step]], r[:, None, :],
                                                       self.metric)[:, 0]
                rpager.flush()
                best_d, best_i = _merge_pairs(best_d, best_i, pi, pd, pj, k)
        pager.flush()
        if (best_i < 0).any():  # pragma: no cover - the bound admits the k items it came from
            raise RuntimeError("internal error: the float64 pass lost a neighbour; please report")
        return best_d, best_i

    # -- approximate search ------------------------------------------------------------------
    def _search_approx(self, q: np.ndarray, k: int, self_rows, name: str):
        m, d = q.shape
        k_search = k + (self_rows is not None)
        q_rows = min(m, self._rows(4))
        qbuf = np.empty((q_rows, d), dtype=np.float32)
        dist = np.empty((m, k))
        idx = np.empty((m, k), dtype=np.int64)
        pager = _Pager(q)
        for qs in range(0, m, q_rows):
            qe = min(m, qs + q_rows)
            q32 = self.approx_plan_.transform(q, qs, qe, qbuf[: qe - qs], name, pager)
            top = float(np.max(np.abs(q32))) if q32.size else 0.0
            if not top < 2.0**60:
                raise ValueError(
                    f"{name} lies about 2^{math.log2(top):.0f} times farther from the reference "
                    f"centre than the reference spreads; the approximate {self.index} index cannot "
                    "score it in float32: use index='exact'"
                )
            scores, cand = self.approx_.search(q32, k_search)
            if (cand < 0).any():
                raise RuntimeError(
                    f"the {self.index} index returned fewer than k={k_search} neighbours for some "
                    "queries; raise nprobe (IVF) or ef_search (HNSW)"
                )
            cand = cand.astype(np.int64)
            if self.metric == "cosine":
                scores = -scores
            if self_rows is not None:
                cand, scores = _drop_self(cand, scores, self_rows[qs:qe])
            if self.refine:
                dd = self._refine(q, np.arange(qs, qe), cand)
            else:
                s = scores.astype(np.float64)
                dd = (np.sqrt(np.maximum(s, 0.0)) * self.approx_plan_.s32 if self.metric == "l2"
                      else np.clip(1.0 + s, 0.0, 2.0))
            dist[qs:qe], idx[qs:qe] = _sort_rows(dd, cand)
        pager.flush()
        return dist, idx

    def _measure_recall(self, q: np.ndarray, found: np.ndarray, sample: np.ndarray,
                        exclude_self: bool, name: str) -> float:
        """Mean recall@k of the returned neighbours ``found`` on the queries ``sample``, against
        exact search done the same way (the self match removed from both sides)."""
        k = found.shape[1]
        exact = NeighborIndex(self.metric, "faiss", progress=False, block_bytes=self.block_bytes,
                              tile_bytes=self.tile_bytes)
        exact.reference_, exact.name_ = self.reference_, self.name_
        exact.n_reference_, exact.n_features_ = self.reference_.shape
        exact.ranges_ = self.ranges_
        qs = _take_rows(q, sample, _Pager(q))
        plan = exact._plan(_column_ranges(qs, name, mean=False), name)
        _, truth_i, _, _ = exact._search_exact(qs, k, sample if exclude_self else None, plan, name)
        return pair_recall(_row_pairs(found[sample]), _row_pairs(truth_i))


def _drop_self(idx: np.ndarray, scores: np.ndarray, own: np.ndarray):
    """Remove item ``own[i]`` from row i of a (n, k+1) result, else the row's worst entry."""
    n, k1 = idx.shape
    is_self = idx == own[:, None]
    has_self = is_self.any(axis=1)
    drop = np.where(has_self, is_self.argmax(axis=1), np.argmax(scores, axis=1))
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k1 - 1), scores[keep].reshape(n, k1 - 1)


def knn(queries, reference, k: int = 2, *, exclude_self: bool = False, **kwargs) -> Neighbors:
    """Find the ``k`` nearest items of ``reference`` for every row of ``queries``.

    A one-call form of ``NeighborIndex(**kwargs).fit(reference).search(queries, k)``; see
    :class:`NeighborIndex` for the options (metric, backend, index, block sizes, progress).
    Exact search returns the neighbours and float64 distances of the float64 brute force, ties in
    increasing index order, whatever the backend, offset or magnitude of the data.

    Parameters
    ----------
    queries : array-like or numpy.memmap of shape (n_queries, ...)
    reference : array-like or numpy.memmap of shape (n_reference, ...)
    k : int, default=2
    exclude_self : bool, default=False
        Set when ``queries`` is ``reference`` (self-query): item i is not its own neighbour.

    Returns
    -------
    Neighbors
        ``distances`` and ``indices`` of shape (n_queries, k), nearest first.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.eye(4, dtype=np.float32)
    >>> knn(ref[:1] * 0.9, ref, k=2).indices.tolist()
    [[0, 1]]
    """
    return NeighborIndex(**kwargs).fit(reference).search(queries, k, exclude_self=exclude_self)
