"""Range search engines of the duplicates probe: Hamming (FAISS binary), cosine and L2 over blocks.

- :func:`binary_pairs`: every pair of 64-bit codes within a Hamming distance (``IndexBinaryFlat``).
- :func:`float_pairs`: an exact range search over blocks of the reference (and of the queries),
  read in blocks of about ``FLOAT_BLOCK_BYTES`` (pages of a memory map released, every block
  checked for NaN/Inf), so memory is bounded by the block size, in memory or memory-mapped. :func:`embedding_pairs` runs it on inner products of unit vectors.
- :class:`IVFBuckets`: approximate cosine range search (k-means cells, one GEMM per cell) with
  :func:`measure_recall` against exact search on a sample.
- :func:`exact_pairs`: equal keys (content digests), by sorting.
- :func:`tiled_pairs`: the tiled l2 distance of Carlini et al. 2023 (:func:`tiled_l2_distance`),
  exact: an L2 range search at the threshold returns every candidate (the squared global RMS
  difference is the size-weighted mean of the squared tile RMS differences, so it never exceeds
  the largest tile's), and the tiles are compared on those only.
"""

from __future__ import annotations

import numpy as np

from .._blocks import BLOCK_BYTES, HASH_BITS, iter_blocks
from .._progress import Progress
from ..neighbors import pair_recall, recall_rows, unit_rows

FLOAT_BLOCK_BYTES = 32 << 20  # float32 bytes per block of the float search
TILE_GRID = 4  # Carlini et al. 2023: 16 non-overlapping tiles (4 x 4), the largest tile distance


def blocked_range_search(index, queries, radius, step, desc, progress):
    """Range search of ``queries`` in blocks of ``step``: (query rows, matched rows, values)."""
    out_i, out_j, out_v = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    with Progress(queries.shape[0], desc, progress) as bar:
        for s in range(0, queries.shape[0], step):
            lims, vals, idx = index.range_search(queries[s : s + step], radius)
            out_i.append(np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64))) + s)
            out_j.append(idx.astype(np.int64))
            out_v.append(vals)
            bar.update(min(step, queries.shape[0] - s))
    return tuple(np.concatenate(v) for v in (out_i, out_j, out_v))


def binary_pairs(codes_q, codes_r, max_distance, cross, progress):
    import faiss

    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(codes_r)
    # FAISS keeps distances strictly below the radius
    i, j, dd = blocked_range_search(index, codes_q, int(max_distance) + 1, 65536,
                                     "hamming range search", progress)
    keep = np.ones(i.size, bool) if cross else i < j
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64), dd[keep].astype(float)


def normalized(block, name, offset=0):
    """Unit rows (float32) for the cosine search: the neighbour search's normalisation
    (:func:`memaudit.neighbors.unit_rows`, float64, zero rows refused)."""
    return unit_rows(np.array(block, dtype=np.float64), name, offset).astype(np.float32)


def float_blocks(x, name, prep):
    """``[(start, stop)]`` row ranges of the float search and a loader ``k -> prepared block``.

    Every input, in memory or memory-mapped, is cut into blocks of about ``FLOAT_BLOCK_BYTES`` of
    float32, each read (checked, its pages released when memory-mapped) and prepared when needed,
    so that memory holds a few blocks, never a prepared copy of the set; a set of one block is
    prepared once.
    """
    n, d = x.shape
    rows = max(1, FLOAT_BLOCK_BYTES // (4 * max(1, d)))
    ranges = [(s, min(n, s + rows)) for s in range(0, n, rows)]
    cache = {}  # the block of a one-block set, prepared once

    def load(k):
        if k in cache:
            return cache[k]
        s, e = ranges[k]
        block = np.empty((e - s, d), dtype=np.float32)
        for o, b in iter_blocks(x[s:e], name, row_bytes=8 * d):
            block[o : o + len(b)] = prep(b, s + o)
        if len(ranges) == 1:
            cache[k] = block
        return block

    return ranges, load


def float_pairs(xq, xr, cross, prep_q, prep_r, build, radius, refine, names, progress, desc):
    """Exact range search over blocks of the reference (and of the queries).

    ``build(block)`` makes a FAISS index of one reference block; ``refine(qb, rb, i, j, v, qs,
    rs)`` turns candidate pairs (local rows of the blocks starting at rows qs and rs, search
    values) into (kept mask, scores). Within one set, block
    ``a`` of queries is searched against blocks ``b >= a`` only and pairs keep ``i < j``.
    """
    r_ranges, r_load = float_blocks(xr, names[1], prep_r)
    if cross:
        q_ranges, q_load = float_blocks(xq, names[0], prep_q)
    else:
        q_ranges, q_load = r_ranges, r_load
    out_i, out_j, out_s = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    total = len(r_ranges) * len(q_ranges) if cross else len(r_ranges) * (len(r_ranges) + 1) // 2
    with Progress(total, desc, progress) as bar:
        for b, (rs, _) in enumerate(r_ranges):
            rb = r_load(b)
            index = build(rb)
            for a, (qs, _) in enumerate(q_ranges if cross else q_ranges[: b + 1]):
                qb = rb if (not cross and a == b) else q_load(a)
                lims, vals, idx = index.range_search(qb, radius)
                i = np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
                j = idx.astype(np.int64)
                if not cross and a == b:
                    keep = i < j
                    i, j, vals = i[keep], j[keep], vals[keep]
                keep, scores = refine(qb, rb, i, j, vals, qs, rs)
                out_i.append(i[keep] + qs)
                out_j.append(j[keep] + rs)
                out_s.append(scores[keep])
                bar.update(1)
    i, j, s = (np.concatenate(v) for v in (out_i, out_j, out_s))
    return np.stack([i, j], axis=1).astype(np.int64), s.astype(float)


def cosine_margin(d: int) -> float:
    """Bound on |float32 inner product of the float32 unit rows - the cosine| for d features:
    the rounding of each unit row to float32 (2 u) and a float32 sum of d products of
    magnitude at most 1 in all (gamma_d), u = 2^-24, with a 1% allowance."""
    u = 2.0 ** -24
    return 1.01 * ((d + 3) * u) + 1e-12


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the paired float64 rows ``a[i]``, ``b[i]``: a function of the two
    rows only (numpy's pairwise sums along the features; rows prescaled by a power of two where
    their squares would leave float64's range, :func:`memaudit.neighbors._pow2_rows`)."""
    from ..neighbors import _pow2_rows

    a, b = _pow2_rows(np.asarray(a, np.float64)), _pow2_rows(np.asarray(b, np.float64))
    dot = np.sum(a * b, axis=-1)
    return dot / (np.sqrt(np.sum(a * a, axis=-1)) * np.sqrt(np.sum(b * b, axis=-1)))


def _rows_of(x, rows) -> np.ndarray:
    """``x[rows]`` as float64, read in sorted order (a memory map or a sharded set)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, x.shape[1]))
    order = np.argsort(rows, kind="stable")
    out = np.empty((rows.size, x.shape[1]))
    got = x.rows(rows[order]) if hasattr(x, "rows") else x[rows[order]]
    out[order] = np.asarray(got, dtype=np.float64)
    return out


def embedding_pairs(xq, xr, thr, cross, names, progress):
    """Every pair with cosine >= thr, exactly: the float32 range search proposes the pairs
    within :func:`cosine_margin` below thr, and each is decided on its float64 cosine
    (:func:`pair_cosines`), which is also its score. The decision is a function of the pair
    only, so blocks, memory maps and shards do not change the answer."""
    import faiss

    radius = np.nextafter(np.float32(thr - cosine_margin(xr.shape[1])), np.float32(-1))

    def build(rb):
        idx = faiss.IndexFlatIP(rb.shape[1])
        idx.add(rb)
        return idx

    def refine(qb, rb, i, j, sim, qs, rs):
        c = pair_cosines(_rows_of(xq, i + qs), _rows_of(xr, j + rs))
        return c >= thr, c

    return float_pairs(xq, xr, cross,
                        lambda b, o: normalized(b, names[0], o),
                        lambda b, o: normalized(b, names[1], o), build, radius, refine, names,
                        progress, "cosine range search")


def range_index(xr, index, nlist, nprobe, seed, name: str = "reference"):
    """The approximate cosine index (:class:`IVFBuckets`) of ``xr`` as given."""
    if index == "exact":
        raise ValueError("range_index builds the approximate index; exact search is "
                         "embedding_pairs")
    return IVFBuckets(xr, nlist, nprobe, seed, name)


class UnitRows:
    """A set's rows as unit vectors (float32, bit for bit :func:`normalized`'s) without a copy of
    the set: one checking pass (NaN/Inf, zero norm, each named by the item's position) keeps the
    float64 factor 1 / ||x_i|| of every row and its power-of-two prescale
    (:func:`memaudit.neighbors.unit_scales`); :meth:`take` scales the rows it gathers. Memory:
    16 bytes a row, plus the rows taken."""

    def __init__(self, x, name: str):
        from ..neighbors import unit_scales

        self.x, self.name = x, name
        self.factor = np.empty(x.shape[0])
        self.shift = np.zeros(x.shape[0], dtype=np.int64)
        for o, b in iter_blocks(x, name, row_bytes=8 * max(1, x.shape[1])):
            f, e = unit_scales(np.array(b, dtype=np.float64), name, o)
            self.factor[o : o + len(b)], self.shift[o : o + len(b)] = f, e

    @property
    def shape(self) -> tuple:
        return self.x.shape

    def subset(self, rows) -> "UnitRows":
        """The rows ``rows`` (gathered as given, with their factors: not checked again)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = object.__new__(UnitRows)
        out.x, out.name = np.asarray(self.x[rows]), self.name
        out.factor, out.shift = self.factor[rows], self.shift[rows]
        return out

    def __getitem__(self, key) -> "UnitRows":
        if not isinstance(key, slice):
            raise TypeError("UnitRows takes a slice of rows (take() for unit rows)")
        a, b, step = key.indices(self.x.shape[0])
        if (a, b, step) == (0, self.x.shape[0], 1):
            return self
        return self.subset(np.arange(a, b, step))

    def take(self, rows) -> np.ndarray:
        """Unit rows of ``x[rows]`` (float32), gathered and scaled in blocks."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.x.shape[1]), dtype=np.float32)
        step = max(1, BLOCK_BYTES // (8 * max(1, self.x.shape[1])))
        for a in range(0, rows.size, step):
            r = rows[a : a + step]
            t = np.array(self.x[r], dtype=np.float64)
            sh = self.shift[r]
            if sh.any():
                t = np.ldexp(t, -sh[:, None])
            t *= self.factor[r][:, None]
            out[a : a + step] = t
        return out

    def blocks(self):
        """``(start, unit rows)`` over blocks of the set."""
        n = self.x.shape[0]
        step = max(1, BLOCK_BYTES // (8 * max(1, self.x.shape[1])))
        for a in range(0, n, step):
            yield a, self.take(np.arange(a, min(n, a + step)))


class IVFBuckets:
    """Approximate cosine range search: k-means cells, then one GEMM per cell.

    Every reference vector lives in the cell of its nearest centroid; a query is compared, by a
    dense matrix product, with the members of its ``nprobe`` nearest cells. Near-duplicates sit next
    to each other, so they share a cell or a neighbouring one. Unlike FAISS's IVF scanner, which
    compares one query with one list at a time, this runs at GEMM speed.

    The vectors are kept as given (``xr``, in memory or memory-mapped, as :class:`UnitRows`) and
    normalised where they are used: a block at a time when they are assigned to cells, a cell's
    members when the cell is searched, so the index holds no copy of the set (memory: 16 bytes a
    row, the cell lists and one cell's rows).
    """

    def __init__(self, xr, nlist, nprobe, seed, name: str = "reference"):
        import faiss

        n, d = xr.shape
        self.units = xr if isinstance(xr, UnitRows) else UnitRows(xr, name)  # every item checked
        self.nlist = min(nlist or max(1, int(np.sqrt(n))), n)
        self.nprobe = min(int(nprobe), self.nlist)
        rng = np.random.default_rng(seed)
        pick = (np.arange(n) if n <= 64 * self.nlist
                else np.sort(rng.choice(n, 64 * self.nlist, replace=False)))
        km = faiss.Kmeans(d, self.nlist, niter=10, seed=int(seed), spherical=True, verbose=False)
        km.train(np.ascontiguousarray(self.units.take(pick)))
        self.centroids = km.centroids
        home = np.empty(n, dtype=np.int64)
        for o, u in self.units.blocks():
            home[o : o + len(u)] = faiss.knn(u, self.centroids, 1,
                                             metric=faiss.METRIC_INNER_PRODUCT)[1][:, 0]
        order = np.argsort(home, kind="stable")
        self.members = np.split(order, np.cumsum(np.bincount(home, minlength=self.nlist))[:-1])

    def range_search(self, xq, thresh, name: str = "queries"):
        """FAISS-like output: (lims, similarities, indices), similarities > thresh; ``xq`` as
        given (normalised here, cell by cell)."""
        import faiss

        uq = xq if isinstance(xq, UnitRows) else UnitRows(xq, name)
        probes = np.empty((xq.shape[0], self.nprobe), dtype=np.int64)
        for o, u in uq.blocks():
            probes[o : o + len(u)] = faiss.knn(u, self.centroids, self.nprobe,
                                               metric=faiss.METRIC_INNER_PRODUCT)[1]
        rows, cols, sims = [], [], []
        cell_of = probes.ravel()
        q_of = np.repeat(np.arange(xq.shape[0]), self.nprobe)
        order = np.argsort(cell_of, kind="stable")
        bounds = np.cumsum(np.bincount(cell_of, minlength=self.nlist))[:-1]
        for cell, qs in zip(range(self.nlist), np.split(q_of[order], bounds)):
            m = self.members[cell]
            if qs.size == 0 or m.size == 0:
                continue
            sim = uq.take(qs) @ self.units.take(m).T
            i, j = np.nonzero(sim > thresh)
            rows.append(qs[i])
            cols.append(m[j])
            sims.append(sim[i, j])
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        sims = np.concatenate(sims) if sims else np.zeros(0, np.float32)
        order = np.argsort(rows, kind="stable")
        rows, cols, sims = rows[order], cols[order], sims[order]
        lims = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=xq.shape[0]))])
        return lims, sims, cols


def range_pairs(idx, xq, min_sim, cross, progress, desc="cosine range search"):
    # FAISS's exact search in blocks of queries; the cell-by-cell GEMMs take all queries at once.
    # FAISS keeps inner products strictly above the threshold: lower it by one ulp.
    step = xq.shape[0] if isinstance(idx, IVFBuckets) else 16384
    i, j, sim = blocked_range_search(idx, xq, np.nextafter(np.float32(min_sim), -1), step, desc,
                                      progress)
    keep = sim >= min_sim
    i, j, sim = i[keep], j[keep], sim[keep]
    if not cross:  # a pair may be found from either end: orient it (low, high) and keep it once
        a, b = np.minimum(i, j), np.maximum(i, j)
        keep = a != b
        pairs, first = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0, return_index=True)
        return pairs.astype(np.int64), sim[keep][first].astype(float)
    return np.stack([i, j], axis=1).astype(np.int64), sim.astype(float)


def _exact_sample_pairs(uq, ur: UnitRows, thr):
    """Every (query, reference) pair with cosine >= thr between the unit rows ``uq`` and the
    set ``ur`` (normalised a block at a time: no copy of it), by float32 products (the sums of
    :class:`IVFBuckets`)."""
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for s, u in ur.blocks():
        i, j = np.nonzero(uq @ u.T >= thr)
        rows.append(i.astype(np.int64))
        cols.append(j.astype(np.int64) + s)
    i, j = np.concatenate(rows), np.concatenate(cols)
    order = np.lexsort((j, i))
    return np.stack([i[order], j[order]], axis=1)


def measure_recall(idx, fq, fr, thr, cross, m, seed, names=("queries", "reference")):
    """Share of the exact pairs of a seeded query sample that the approximate index also found
    (``fq``, ``fr`` as given: normalised where they are used)."""
    rows = recall_rows(fq.shape[0], m, seed)
    uq = fq if isinstance(fq, UnitRows) else UnitRows(fq, names[0])
    ur = fr if isinstance(fr, UnitRows) else UnitRows(fr, names[1])
    sample = uq.subset(rows)
    e_pairs = _exact_sample_pairs(sample.take(np.arange(rows.size)), ur, thr)
    a_pairs, _ = range_pairs(idx, sample, thr, True, False)
    if not cross:  # within a set: the query matching itself is not a duplicate pair
        e_pairs = e_pairs[rows[e_pairs[:, 0]] != e_pairs[:, 1]]
        a_pairs = a_pairs[rows[a_pairs[:, 0]] != a_pairs[:, 1]]
    return pair_recall(a_pairs, e_pairs), int(rows.size)


# ----------------------------------------------------------------------------- exact matches
def exact_pairs(h_q, h_r, cross):
    """Pairs of equal keys (content digests, ``S16``): across sets every (query, reference) pair,
    within one set every (i, j) with i < j of each class of equal items."""
    if not cross:
        order = np.argsort(h_q, kind="stable")
        s = h_q[order]
        bounds = np.flatnonzero(s[1:] != s[:-1]) + 1
        pairs = [np.zeros((0, 2), np.int64)]
        for run in np.split(order, bounds):
            if run.size >= 2:
                run = np.sort(run)
                a, b = np.triu_indices(run.size, 1)
                pairs.append(np.stack([run[a], run[b]], axis=1))
        pairs = np.concatenate(pairs).astype(np.int64)
        return pairs, np.zeros(len(pairs))
    order = np.argsort(h_r, kind="stable")
    s = h_r[order]
    lo = np.searchsorted(s, h_q, "left")
    hi = np.searchsorted(s, h_q, "right")
    counts = hi - lo
    i = np.repeat(np.arange(len(h_q)), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    j = order[starts + np.arange(counts.sum())] if counts.sum() else np.zeros(0, np.int64)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    return pairs, np.zeros(len(pairs))


# ----------------------------------------------------------------------------- tiled l2
def _tile_bounds(h, w):
    rows = [int(r[0]) for r in np.array_split(np.arange(h), TILE_GRID)]
    cols = [int(c[0]) for c in np.array_split(np.arange(w), TILE_GRID)]
    return rows, cols


def tiled_l2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest tile RMS difference between images ``a[k]`` and ``b[k]`` (pairs, pixels in [0, 1]).

    ``a`` and ``b`` are (m, H, W) or (m, H, W, C); tiles follow ``np.array_split`` of each side
    into 4, so sides that do not divide by 4 give tiles that differ by one pixel.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim == 3:
        d = d[..., None]
    h, w = d.shape[1:3]
    rows, cols = _tile_bounds(h, w)
    sums = np.add.reduceat(np.add.reduceat((d * d).sum(axis=3), rows, axis=1), cols, axis=2)
    counts = np.outer(np.diff(rows + [h]), np.diff(cols + [w])) * d.shape[3]
    return np.sqrt(sums / counts).reshape(len(d), -1).max(axis=1)


def tiled_pairs(xq, xr, thr, cross, hwc, preps, convention, names, progress):
    """Pairs within tiled l2 distance ``thr``: rows are images laid out ``hwc`` = (H, W, C),
    read block by block through ``preps`` (one ``(block, offset) -> float32 rows in [0, 1]`` per
    set); ``convention`` names the pixel convention in the out-of-range error."""
    import faiss

    if min(hwc[:2]) < TILE_GRID:
        raise ValueError(f"tiled_l2 needs images of at least {TILE_GRID} x {TILE_GRID} pixels, "
                         f"{names[0]} are {hwc[0]} x {hwc[1]}")
    d = xr.shape[1]

    def images(rows):
        return rows.reshape((len(rows),) + tuple(hwc))

    def checked(prep, name):
        def f(block, offset):
            u = prep(block, offset)
            lo, hi = float(u.min()), float(u.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                bad = int(np.flatnonzero(((u < -1e-6) | (u > 1 + 1e-6)).any(axis=1))[0])
                raise ValueError(
                    f"tiled_l2 compares pixels in [0, 1]; {name} item {offset + bad} has values "
                    f"outside {convention}: give the value_range that holds them (uint8 images "
                    "are divided by 255 automatically)")
            return u
        return f

    def build(rb):
        idx = faiss.IndexFlatL2(d)
        idx.add(rb)
        return idx

    chunk = max(1, (32 << 20) // (8 * d))

    def refine(qb, rb, i, j, _, qs, rs):
        dist = np.concatenate([tiled_l2_distance(images(qb[i[s : s + chunk]]), images(rb[j[s : s + chunk]]))
                               for s in range(0, len(i), chunk)]) if len(i) else np.zeros(0)
        return dist <= thr, dist

    # global RMS <= largest tile RMS, so every match lies within this L2 radius (FAISS keeps
    # squared distances strictly below it; widen by a relative 1e-5 against float32 rounding)
    radius = np.float32(thr**2 * d * (1 + 1e-5) + 1e-6)
    return float_pairs(xq, xr, cross, checked(preps[0], names[0]), checked(preps[1], names[1]),
                       build, radius, refine, names, progress, "l2 range search (tiled_l2)")
