"""Duplicates inside a set, and copies across two sets: exact, perceptual and embedding matches.

Duplicated training items are the ones diffusion models copy first (Carlini et al. 2023; Somepalli
et al. 2023). This probe answers two questions with the same machinery:

- within one set (training-set hygiene): which items are duplicates of each other;
- across two sets (samples vs training set): which generated samples copy which training items.

Methods:

- ``"exact"``: equal content hashes of the decoded pixels (:func:`memaudit.hashing.content_hashes`);
- ``"phash"`` / ``"dhash"``: 64-bit perceptual hashes within a Hamming distance (default 10 bits,
  the default of imagededup), searched exactly with a FAISS binary index;
- ``"embedding"``: cosine similarity at or above a threshold (default 0.95) on any feature vectors
  (pixels, CLIP embeddings), by FAISS range search: exact by default; ``index="ivf"`` groups the
  vectors in k-means cells and compares each query with its nearest cells by GEMM, and its recall
  against exact search is measured on a sample and reported;
- ``"tiled_l2"``: the extraction distance of Carlini et al. 2023 on images: split both images into
  a 4 x 4 grid of non-overlapping tiles, take the root-mean-square pixel difference (pixels in
  [0, 1]) of each pair of tiles and keep the largest; a pair matches when it is at most the
  threshold. Exact: the squared global RMS difference is the (size-weighted) mean of the squared
  tile RMS differences, so it never exceeds the largest tile's; an exact L2 range search at the
  threshold therefore returns every candidate, and the tiles are compared on those only.

Matches are edges of a graph; duplicate groups are its connected components
(scipy.sparse.csgraph), so a chain of near-copies ends up in one group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .._progress import Progress
from .._validation import (as_2d_array, check_fraction, check_ids, check_positive_int,
                           check_same_dim)
from ..hashing import HASH_BITS, content_hashes, dhash, phash, to_grayscale_images
from ..results import jsonable

__all__ = ["DuplicateResult", "find_duplicates", "find_copies", "tiled_l2_distance", "METHODS",
           "DEFAULTS"]

METHODS = ("exact", "phash", "dhash", "embedding", "tiled_l2")
TILE_GRID = 4  # Carlini et al. 2023: 16 non-overlapping tiles (4 x 4), the largest tile distance
# threshold and where it comes from, per method
DEFAULTS = {
    "exact": (0, "identical decoded pixels (8-bit), content hash"),
    "phash": (10, "Hamming distance <= 10 of 64 bits: imagededup's default max_distance_threshold"),
    "dhash": (10, "Hamming distance <= 10 of 64 bits: imagededup's default max_distance_threshold"),
    "embedding": (0.95, "cosine similarity >= 0.95: memaudit's default for near-identical items "
                        "(imagededup uses 0.9 for CNN features)"),
    "tiled_l2": (0.15, "largest RMS pixel difference over a 4 x 4 grid of tiles <= 0.15 (pixels in "
                       "[0, 1]): the tiled l2 distance of Carlini et al. 2023 (Sec. 4), threshold "
                       "memaudit's default; check it against a held-out control"),
}


@dataclass(frozen=True)
class DuplicateResult:
    """Matched pairs and duplicate groups.

    Attributes
    ----------
    method : str
    threshold : float
        Hamming distance (hashes, at most), cosine similarity (embedding, at least), tiled l2
        distance (tiled_l2, at most), or 0 (exact).
    threshold_source : str
    cross : bool
        True for copies across two sets (queries vs reference), False within one set.
    pairs : ndarray of shape (m, 2)
        Matched (i, j): within a set, positions with i < j; across sets, (query position, reference
        position).
    scores : ndarray of shape (m,)
        Hamming distance or cosine similarity of each pair (0 for exact matches).
    groups : list of dict
        Connected components with at least two members, largest first: ``{"queries": positions,
        "reference": positions}`` across sets, ``{"members": positions}`` within a set.
    ids, reference_ids : ndarray
        Ids of the (query) items and, across sets, of the reference items.
    n_items, n_reference : int
    recall : float or None
        For an approximate index: recall of the matched pairs against exact search on a sample.
    recall_sample : int or None
    """

    method: str
    threshold: float
    threshold_source: str
    cross: bool
    pairs: np.ndarray
    scores: np.ndarray
    groups: list
    ids: np.ndarray
    reference_ids: np.ndarray | None
    n_items: int
    n_reference: int
    index: str = "exact"
    recall: float | None = None
    recall_sample: int | None = None
    notes: list = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_duplicated(self) -> int:
        """Items in some group (within a set), or queries matched to a reference item (across)."""
        if self.cross:
            return int(np.unique(self.pairs[:, 0]).size)
        return int(sum(len(g["members"]) for g in self.groups))

    def matches(self, i: int) -> np.ndarray:
        """Reference positions matched to query ``i`` (across sets), best first."""
        sel = self.pairs[:, 0] == i
        # best first: highest similarity (embedding) or smallest Hamming distance (hashes)
        key = -self.scores[sel] if self.method == "embedding" else self.scores[sel]
        return self.pairs[sel, 1][np.argsort(key, kind="stable")]

    def to_dict(self, max_groups: int = 50) -> dict:
        def named(g):
            if self.cross:
                return {"queries": jsonable(self.ids[g["queries"]]),
                        "reference": jsonable(self.reference_ids[g["reference"]]),
                        "size": len(g["queries"]) + len(g["reference"])}
            return {"members": jsonable(self.ids[g["members"]]), "size": len(g["members"])}

        return jsonable({
            "probe": "duplicates",
            "method": self.method,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "cross": self.cross,
            "n_items": self.n_items,
            "n_reference": self.n_reference,
            "n_pairs": self.n_pairs,
            "n_groups": len(self.groups),
            "n_duplicated": self.n_duplicated,
            "index": self.index,
            "recall": self.recall,
            "recall_sample": self.recall_sample,
            "groups": [named(g) for g in self.groups[:max_groups]],
            "notes": self.notes,
        })

    def summary(self) -> str:
        what = "queries matching a reference item" if self.cross else "items in duplicate groups"
        line = (f"{self.method}: {self.n_pairs} matched pairs, {len(self.groups)} groups, "
                f"{self.n_duplicated} {what} (threshold {self.threshold:g}: {self.threshold_source})")
        if self.recall is not None:
            line += f"; {self.index} recall {self.recall:.4f} on {self.recall_sample} queries"
        return line


# ----------------------------------------------------------------------------- pair finders
def _exact_pairs(h_q, h_r, cross):
    table: dict = {}
    for j, h in enumerate(h_r):
        table.setdefault(h, []).append(j)
    pairs = []
    for i, h in enumerate(h_q):
        for j in table.get(h, ()):
            if cross or i < j:
                pairs.append((i, j))
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs, np.zeros(len(pairs))


def _blocked_range_search(index, queries, radius, step, desc, progress):
    """Range search of ``queries`` in blocks of ``step``: (query rows, matched rows, values)."""
    out_i, out_j, out_v = [], [], []
    with Progress(queries.shape[0], desc, progress) as bar:
        for s in range(0, queries.shape[0], step):
            lims, vals, idx = index.range_search(queries[s : s + step], radius)
            out_i.append(np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64))) + s)
            out_j.append(idx)
            out_v.append(vals)
            bar.update(min(step, queries.shape[0] - s))
    return tuple(np.concatenate(v) for v in (out_i, out_j, out_v))


def _binary_pairs(codes_q, codes_r, max_distance, cross, progress):
    import faiss

    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(codes_r)
    # FAISS keeps distances strictly below the radius
    i, j, dd = _blocked_range_search(index, codes_q, int(max_distance) + 1, 65536,
                                     "hamming range search", progress)
    keep = np.ones(i.size, bool) if cross else i < j
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64), dd[keep].astype(float)


def _normalized(x, name):
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name}: item {int(np.flatnonzero(norms[:, 0] == 0)[0])} has zero norm; "
                         "cosine similarity is undefined for it")
    return x / norms


def _range_index(xr, index, nlist, nprobe, seed):
    import faiss

    if index != "exact":
        return _IVFBuckets(xr, nlist, nprobe, seed)
    idx = faiss.IndexFlatIP(xr.shape[1])
    idx.add(xr)
    return idx


class _IVFBuckets:
    """Approximate cosine range search: k-means cells, then one GEMM per cell.

    Every reference vector lives in the cell of its nearest centroid; a query is compared, by a
    dense matrix product, with the members of its ``nprobe`` nearest cells. Near-duplicates sit next
    to each other, so they share a cell or a neighbouring one. Unlike FAISS's IVF scanner, which
    compares one query with one list at a time, this runs at GEMM speed.
    """

    def __init__(self, xr, nlist, nprobe, seed):
        import faiss

        n, d = xr.shape
        self.nlist = min(nlist or max(1, int(np.sqrt(n))), n)
        self.nprobe = min(int(nprobe), self.nlist)
        rng = np.random.default_rng(seed)
        sample = xr if n <= 64 * self.nlist else xr[np.sort(rng.choice(n, 64 * self.nlist,
                                                                      replace=False))]
        km = faiss.Kmeans(d, self.nlist, niter=10, seed=int(seed), spherical=True, verbose=False)
        km.train(np.ascontiguousarray(sample))
        self.centroids = km.centroids
        _, home = faiss.knn(xr, self.centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
        self.xr = xr
        order = np.argsort(home[:, 0], kind="stable")
        self.members = np.split(order, np.cumsum(np.bincount(home[:, 0], minlength=self.nlist))[:-1])

    def range_search(self, xq, thresh):
        """FAISS-like output: (lims, similarities, indices), similarities > thresh."""
        import faiss

        _, probes = faiss.knn(xq, self.centroids, self.nprobe, metric=faiss.METRIC_INNER_PRODUCT)
        rows, cols, sims = [], [], []
        cell_of = probes.ravel()
        q_of = np.repeat(np.arange(xq.shape[0]), self.nprobe)
        order = np.argsort(cell_of, kind="stable")
        bounds = np.cumsum(np.bincount(cell_of, minlength=self.nlist))[:-1]
        for cell, qs in zip(range(self.nlist), np.split(q_of[order], bounds)):
            m = self.members[cell]
            if qs.size == 0 or m.size == 0:
                continue
            sim = xq[qs] @ self.xr[m].T
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


def _range_pairs(idx, xq, min_sim, cross, progress, desc="cosine range search"):
    # FAISS's exact search in blocks of queries; the cell-by-cell GEMMs take all queries at once.
    # FAISS keeps inner products strictly above the threshold: lower it by one ulp.
    step = xq.shape[0] if isinstance(idx, _IVFBuckets) else 16384
    i, j, sim = _blocked_range_search(idx, xq, np.nextafter(np.float32(min_sim), -1), step, desc,
                                      progress)
    keep = sim >= min_sim
    i, j, sim = i[keep], j[keep], sim[keep]
    if not cross:  # a pair may be found from either end: orient it (low, high) and keep it once
        a, b = np.minimum(i, j), np.maximum(i, j)
        keep = a != b
        pairs, first = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0, return_index=True)
        return pairs.astype(np.int64), sim[keep][first].astype(float)
    return np.stack([i, j], axis=1).astype(np.int64), sim.astype(float)


def _tiles(x, item_shape, name):
    """Images as (n, G*G, tile pixels) float32 in [0, 1] (integers are divided by 255)."""
    from ..adapters.pixels import image_layout

    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(f"tiled_l2 needs images; {name} of shape {tuple(item_shape)} are not images "
                         "(arrays shaped (n, H, W), (n, H, W, C) or (n, C, H, W), or an image folder)")
    x = np.asarray(x)
    scaled = x.astype(np.float32) / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    lo, hi = float(scaled.min()), float(scaled.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"tiled_l2 compares pixels in [0, 1]; {name} range from {lo:g} to {hi:g}: "
                         "scale them (uint8 images are divided by 255 automatically)")
    n = x.shape[0]
    if layout == "flat-square":
        side = int(np.sqrt(x.shape[1]))
        imgs = scaled.reshape(n, side, side, 1)
    elif layout == "HW":
        imgs = scaled.reshape((n,) + tuple(item_shape) + (1,))
    elif layout == "CHW":
        imgs = np.moveaxis(scaled.reshape((n,) + tuple(item_shape)), 1, 3)
    else:
        imgs = scaled.reshape((n,) + tuple(item_shape))
    h, w = imgs.shape[1:3]
    if h < TILE_GRID or w < TILE_GRID:
        raise ValueError(f"tiled_l2 needs images of at least {TILE_GRID} x {TILE_GRID} pixels, "
                         f"{name} are {h} x {w}")
    rows = np.array_split(np.arange(h), TILE_GRID)
    cols = np.array_split(np.arange(w), TILE_GRID)
    return [np.ascontiguousarray(imgs[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].reshape(n, -1))
            for r in rows for c in cols], scaled.reshape(n, -1)


def tiled_l2_distance(tiles_a, tiles_b, i, j) -> np.ndarray:
    """Largest tile RMS difference between items ``tiles_a[:, i]`` and ``tiles_b[:, j]`` (pairs)."""
    out = np.zeros(len(i), dtype=np.float64)
    for ta, tb in zip(tiles_a, tiles_b):
        d = ta[i].astype(np.float64) - tb[j]
        out = np.maximum(out, np.sqrt(np.mean(d * d, axis=1)))
    return out


def _tiled_pairs(tq, fq, tr, fr, thr, cross, progress):
    import faiss

    index = faiss.IndexFlatL2(fr.shape[1])
    index.add(fr)
    # global RMS <= largest tile RMS, so every match lies within this L2 radius (FAISS keeps
    # squared distances strictly below it; widen by a relative 1e-5 against float32 rounding)
    radius = np.float32(thr**2 * fr.shape[1] * (1 + 1e-5) + 1e-6)
    i, j, _ = _blocked_range_search(index, fq, radius, 16384, "l2 range search (tiled_l2)", progress)
    if not cross:
        keep = i < j
        i, j = i[keep], j[keep]
    dist = np.concatenate([tiled_l2_distance(tq, tr, i[s : s + 65536], j[s : s + 65536])
                           for s in range(0, len(i), 65536)]) if len(i) else np.zeros(0)
    keep = dist <= thr
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64), dist[keep]


def _groups(pairs, n_q, n_r, cross):
    if cross:
        n = n_q + n_r
        a, b = pairs[:, 0], pairs[:, 1] + n_q
    else:
        n = n_q
        a, b = pairs[:, 0], pairs[:, 1]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=labels.max() + 1 if n else 0)
    groups = []
    for lab in np.flatnonzero(sizes >= 2):
        members = np.flatnonzero(labels == lab)
        if cross:
            groups.append({"queries": members[members < n_q],
                           "reference": members[members >= n_q] - n_q})
        else:
            groups.append({"members": members})
    groups.sort(key=lambda g: (-sum(len(v) for v in g.values()), int(next(iter(g.values()))[0])))
    return groups


# ----------------------------------------------------------------------------- public API
def _threshold(method, threshold):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    default, source = DEFAULTS[method]
    if threshold is None:
        return default, source
    if method == "embedding":
        return check_fraction(threshold, "threshold (cosine similarity)", low_open=True,
                              high_open=False), "user"
    if method == "tiled_l2":
        t = float(threshold)
        if not np.isfinite(t) or t <= 0 or t > 1:
            raise ValueError(f"threshold (tiled l2, pixels in [0, 1]) must be in (0, 1], got {threshold!r}")
        return t, "user"
    if method in ("phash", "dhash"):
        t = check_positive_int(threshold, "threshold (Hamming distance)", minimum=0)
        if t > HASH_BITS:
            raise ValueError(f"threshold (Hamming distance) must be at most {HASH_BITS}, got {t}")
        return t, "user"
    return 0, source


def _features(x, method, item_shape, name):
    if method == "exact":
        return content_hashes(x, item_shape)
    if method in ("phash", "dhash"):
        imgs = to_grayscale_images(x, item_shape)
        return phash(imgs) if method == "phash" else dhash(imgs)
    if method == "tiled_l2":
        return _tiles(x, item_shape, name)
    return _normalized(x, name)


def _run(xq, xr, method, threshold, cross, item_shape, ids, ref_ids, index, nlist, nprobe,
         recall_sample, seed, progress):
    thr, source = _threshold(method, threshold)
    if index not in ("exact", "ivf"):
        raise ValueError(f"index must be 'exact' or 'ivf', got {index!r}")
    if index != "exact" and method != "embedding":
        raise ValueError("an approximate index applies to method='embedding' only")
    fq = _features(xq, method, item_shape, "queries" if cross else "items")
    fr = _features(xr, method, item_shape, "reference") if cross else fq
    recall = sample = None
    if method == "exact":
        pairs, scores = _exact_pairs(fq, fr, cross)
    elif method in ("phash", "dhash"):
        pairs, scores = _binary_pairs(fq, fr, thr, cross, progress)
    elif method == "tiled_l2":
        (tq, flat_q), (tr, flat_r) = fq, fr
        pairs, scores = _tiled_pairs(tq, flat_q, tr, flat_r, thr, cross, progress)
        fq, fr = flat_q, flat_r
    else:
        idx = _range_index(fr, index, nlist, nprobe, seed)
        pairs, scores = _range_pairs(idx, fq, thr, cross, progress)
        if index != "exact":
            recall, sample = _measure_recall(idx, fq, fr, thr, cross, recall_sample, seed)
    groups = _groups(pairs, fq.shape[0] if method != "exact" else len(fq),
                     (fr.shape[0] if method != "exact" else len(fr)) if cross else 0, cross)
    return DuplicateResult(
        method=method, threshold=thr, threshold_source=source, cross=cross, pairs=pairs,
        scores=scores, groups=groups, ids=ids, reference_ids=ref_ids if cross else None,
        n_items=len(ids), n_reference=len(ref_ids) if cross else 0, index=index, recall=recall,
        recall_sample=sample,
    )


def _measure_recall(idx, fq, fr, thr, cross, m, seed):
    """Share of the exact pairs of a seeded query sample that the approximate index also found."""
    rng = np.random.default_rng(seed)
    m = min(int(m), fq.shape[0])
    rows = np.sort(rng.choice(fq.shape[0], size=m, replace=False))
    exact = _range_index(fr, "exact", None, 1, seed)
    e_pairs, _ = _range_pairs(exact, fq[rows], thr, True, False)
    a_pairs, _ = _range_pairs(idx, fq[rows], thr, True, False)
    if not cross:  # within a set: the query matching itself is not a duplicate pair
        e_pairs = e_pairs[rows[e_pairs[:, 0]] != e_pairs[:, 1]]
        a_pairs = a_pairs[rows[a_pairs[:, 0]] != a_pairs[:, 1]]
    if len(e_pairs) == 0:
        return 1.0, m
    found = {tuple(p) for p in a_pairs.tolist()}
    return float(np.mean([tuple(p) in found for p in e_pairs.tolist()])), m


def find_duplicates(x, method: str = "embedding", *, ids=None, item_shape=None, threshold=None,
                    index: str = "exact", nlist: int | None = None, nprobe: int = 8,
                    recall_sample: int = 1000, seed: int = 0, progress=None) -> DuplicateResult:
    """Duplicate groups within one set (training-set hygiene).

    Parameters
    ----------
    x : array-like of shape (n_items, ...)
        Images (for exact and perceptual hashes) or feature vectors (for embedding).
    method : {"exact", "phash", "dhash", "embedding", "tiled_l2"}, default="embedding"
    ids : array-like, optional
        Item names (file names, original indices).
    item_shape : tuple, optional
        Shape of one image ((H, W), (H, W, C), (C, H, W)) when ``x`` is flat; taken from ``x``
        when it is not.
    threshold : float, optional
        Hamming distance at most (hashes; default 10), cosine similarity at least (embedding;
        default 0.95) or tiled l2 distance at most (tiled_l2, pixels in [0, 1]; default 0.15).
    index : {"exact", "ivf"}, default="exact"
        Embedding only: exact range search, or k-means cells searched by one GEMM per cell
        (``nlist`` cells, default sqrt(n); each query scans its ``nprobe`` nearest cells) with
        its recall against exact search measured on ``recall_sample`` queries. Within a set, a
        pair can also be found from its other end, so the reported recall is a lower bound.

    Returns
    -------
    DuplicateResult
    """
    raw_shape = tuple(np.shape(x))[1:]
    arr = as_2d_array(x, "items", min_rows=1)
    item_shape = tuple(item_shape) if item_shape is not None else raw_shape
    ids = check_ids(ids, arr.shape[0], "ids")
    return _run(arr, arr, method, threshold, False, item_shape, ids, None, index, nlist, nprobe,
                recall_sample, seed, progress)


def find_copies(samples, reference, method: str = "embedding", *, sample_ids=None,
                reference_ids=None, item_shape=None, threshold=None, index: str = "exact",
                nlist: int | None = None, nprobe: int = 8, recall_sample: int = 1000,
                seed: int = 0, progress=None) -> DuplicateResult:
    """Which samples copy which reference (training) items; same options as :func:`find_duplicates`.

    ``pairs[:, 0]`` are sample positions and ``pairs[:, 1]`` reference positions; groups join the
    samples and training items connected by matches.
    """
    raw_shape = tuple(np.shape(samples))[1:]
    q = as_2d_array(samples, "samples")
    r = as_2d_array(reference, "reference")
    check_same_dim(q, r, "samples", "reference")
    item_shape = tuple(item_shape) if item_shape is not None else raw_shape
    return _run(q, r, method, threshold, True, item_shape,
                check_ids(sample_ids, q.shape[0], "sample_ids"),
                check_ids(reference_ids, r.shape[0], "reference_ids"), index, nlist, nprobe,
                recall_sample, seed, progress)
