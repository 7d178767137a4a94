"""Exact (and optionally indexed) top-k neighbour search of queries against a reference set.

The search never builds a dense ``n_queries x n_reference`` distance matrix. The reference set is
read once, in blocks (a memory-mapped ``.npy`` file larger than memory is streamed from disk), and
for each block the queries are scored in tiles whose size is bounded by ``tile_bytes``. A running
top-k per query is merged block by block. Three backends compute the tiles:

- ``"faiss"`` (default): ``faiss.knn``, FAISS's blocked BLAS search, called on our blocks;
- ``"numpy"``: ``|q|^2 + |r|^2 - 2 q.r`` with one float32 GEMM per tile and ``argpartition``;
- ``"torch"``: the same with ``torch.mm`` and ``torch.topk`` (CPU, or a GPU given as ``device``).

All three return the same neighbours up to ties. The candidates are then *refined*: their distances
are recomputed exactly, in float64, from the original rows, and sorted by (distance, index). This
removes the rounding of the GEMM expansion (an exact copy gets distance 0, not ~1e-3) and makes the
order of tied neighbours deterministic.

Approximate search (``index="ivf"`` or ``"hnsw"``) builds a FAISS index in memory and reports its
recall@k against exact search on a seeded sample of the queries, so a user never trusts an index
blindly.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np

from ._progress import Progress
from ._validation import as_2d_array, check_finite, check_positive_int, check_same_dim

__all__ = ["Neighbors", "NeighborIndex", "knn", "BACKENDS", "METRICS", "INDEXES"]

BACKENDS = ("faiss", "numpy", "torch")
METRICS = ("l2", "cosine")
INDEXES = ("exact", "ivf", "hnsw")


@dataclass(frozen=True)
class Neighbors:
    """The k nearest reference items of each query.

    Attributes
    ----------
    distances : ndarray of shape (n_queries, k), float64
        Ascending. Euclidean distance for ``metric="l2"``; ``1 - cosine similarity`` for
        ``metric="cosine"``.
    indices : ndarray of shape (n_queries, k), int64
        Row positions in the reference set.
    metric, backend, index : str
        How the search was done.
    recall : float or None
        For an approximate index: mean recall@k against exact search on ``recall_sample`` queries.
    recall_sample : int or None
        Number of queries the recall was measured on.
    """

    distances: np.ndarray
    indices: np.ndarray
    metric: str
    backend: str
    index: str = "exact"
    recall: float | None = None
    recall_sample: int | None = None

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


def _reference_blocks(ref: np.ndarray, rows: int, name: str):
    """Yield ``(start, float32 C-contiguous block)``; memory-mapped pages are released after use."""
    n = ref.shape[0]
    contiguous_f32 = ref.dtype == np.float32 and ref.flags.c_contiguous
    mm = getattr(ref, "_mmap", None) if isinstance(ref, np.memmap) else None
    buf = np.empty((min(rows, n), ref.shape[1]), dtype=np.float32) if mm is not None else None
    for start in range(0, n, rows):
        raw = ref[start : start + rows]
        if mm is not None:
            block = buf[: raw.shape[0]]  # one reused buffer: the consumer never keeps a block
            step = max(1, (32 << 20) // (4 * ref.shape[1]))
            for s in range(0, raw.shape[0], step):  # copy 32 MiB at a time, then release the pages
                np.copyto(block[s : s + step], raw[s : s + step], casting="unsafe")
                _release(mm)
            check_finite(block, name, offset=start)
        elif contiguous_f32:
            block = raw  # a view, no copy
        else:
            block = np.ascontiguousarray(raw, dtype=np.float32)
        yield start, block


def _release(mm) -> None:
    """Drop a memory map's pages from this process (they stay in the OS page cache)."""
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - no madvise on this OS
        pass


def _normalize_rows(x: np.ndarray, name: str, offset: int = 0) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"{name}: item {offset + int(zero[0])} has zero norm ({zero.size} such item(s) in this "
            "block); cosine distance is undefined for it"
        )
    return (x / norms).astype(np.float32, copy=False)


def _merge(best_d, best_i, cand_d, cand_i, k):
    """Keep the k smallest of the running and candidate lists (row-wise)."""
    d = np.concatenate([best_d, cand_d], axis=1)
    i = np.concatenate([best_i, cand_i], axis=1)
    if d.shape[1] > k:
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        d = np.take_along_axis(d, part, axis=1)
        i = np.take_along_axis(i, part, axis=1)
    return d, i


class _Tiler:
    """Top-k of a query block against a reference block, as squared L2 or negative inner product."""

    def __init__(self, backend: str, metric: str, device: str | None):
        self.backend = backend
        self.metric = metric
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

    def topk(self, q: np.ndarray, r: np.ndarray, k: int, q_sq=None, r_sq=None):
        """Return (scores, local indices), smaller score = nearer; both of shape (len(q), k)."""
        if self.backend == "faiss":
            m = self.faiss.METRIC_L2 if self.metric == "l2" else self.faiss.METRIC_INNER_PRODUCT
            d, i = self.faiss.knn(q, r, k, metric=m)
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


def _exact_distances(q_rows: np.ndarray, r_rows: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances between q_rows[i] and each r_rows[i, j] (shape (n, k, d) -> (n, k))."""
    q = q_rows.astype(np.float64, copy=False)[:, None, :]
    r = r_rows.astype(np.float64, copy=False)
    if metric == "l2":
        diff = r - q
        return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    qn = np.sqrt(np.einsum("ijk,ijk->ij", q, q))
    rn = np.sqrt(np.einsum("ijk,ijk->ij", r, r))
    cos = np.einsum("ijk,ijk->ij", np.broadcast_to(q, r.shape), r) / (qn * rn)
    return np.clip(1.0 - cos, 0.0, 2.0)


class NeighborIndex:
    """Top-k neighbour search against a fixed reference set (exact by default).

    Parameters
    ----------
    metric : {"l2", "cosine"}, default="l2"
        Euclidean distance, or cosine distance ``1 - cos(q, r)``.
    backend : {"faiss", "numpy", "torch"}, default="faiss"
        What computes the distance tiles of exact search. Approximate indexes always use FAISS.
    index : {"exact", "ivf", "hnsw"}, default="exact"
        ``"ivf"`` (FAISS IndexIVFFlat) and ``"hnsw"`` (IndexHNSWFlat) are approximate; their recall
        against exact search is measured on a sample of the queries and reported.
    block_bytes : int, default=256 MiB
        Size of one reference block held in memory (float32). Memory use is bounded by about
        ``block_bytes + tile_bytes`` plus the queries and the running top-k, whatever the sizes.
        An in-memory float32 reference is used in place when ``metric="l2"`` and the backend is
        FAISS (no copy).
    tile_bytes : int, default=256 MiB
        Size of one query-by-reference score tile (numpy and torch backends).
    refine : bool, default=True
        Recompute the distances of the returned neighbours exactly (float64) and sort by
        (distance, index).
    progress : bool or None, default=None
        Progress bar on stderr; ``None`` shows it when stderr is a terminal.
    nlist, nprobe : int, optional
        IVF parameters (defaults ``4 * sqrt(n)`` lists and 16 probes).
    hnsw_m, ef_search : int, default=32, 128
        HNSW parameters.
    recall_sample : int, default=500
        Queries on which an approximate index's recall is measured against exact search.
    seed : int, default=0
        Seed for the recall sample and IVF training.
    device : str, optional
        Torch device for ``backend="torch"`` (``"cpu"``, ``"cuda"``).

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
        block_bytes: int = 256 << 20,
        tile_bytes: int = 256 << 20,
        refine: bool = True,
        progress: bool | None = None,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        recall_sample: int = 500,
        seed: int = 0,
        device: str | None = None,
    ):
        self.metric = metric
        self.backend = backend
        self.index = index
        self.block_bytes = block_bytes
        self.tile_bytes = tile_bytes
        self.refine = refine
        self.progress = progress
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.recall_sample = recall_sample
        self.seed = seed
        self.device = device

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, reference, name: str = "reference") -> "NeighborIndex":
        """Store (and for approximate search, index) the reference set.

        Parameters
        ----------
        reference : array-like of shape (n_reference, ...) or numpy.memmap
            Items with any number of trailing axes (flattened). A memory-mapped array is streamed
            from disk block by block and never loaded whole.
        """
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {self.index!r}")
        check_positive_int(self.block_bytes, "block_bytes")
        check_positive_int(self.tile_bytes, "tile_bytes")
        self.reference_ = as_2d_array(reference, name)
        self.name_ = name
        self.n_reference_, self.n_features_ = self.reference_.shape
        self.approx_ = None
        if self.index != "exact":
            self.approx_ = self._build_approx()
        return self

    def _build_approx(self):
        import faiss

        x = np.ascontiguousarray(self.reference_, dtype=np.float32)
        check_finite(x, self.name_)
        if self.metric == "cosine":
            x = _normalize_rows(x, self.name_)
        d = x.shape[1]
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.index == "hnsw":
            idx = faiss.IndexHNSWFlat(d, check_positive_int(self.hnsw_m, "hnsw_m", 2), faiss_metric)
            idx.hnsw.efSearch = check_positive_int(self.ef_search, "ef_search")
        else:
            nlist = self.nlist or max(1, int(4 * np.sqrt(x.shape[0])))
            nlist = min(check_positive_int(nlist, "nlist"), x.shape[0])
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
        queries : array-like of shape (n_queries, ...)
            Same number of features as the reference.
        k : int, default=2
            Neighbours per query; at most the reference size (minus one with ``exclude_self``).
        exclude_self : bool, default=False
            The queries *are* the reference set (query i is reference item i): item i is not
            returned as its own neighbour. Exact duplicates of i elsewhere still are.

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
        k_search = k + 1 if exclude_self else k
        if k_search > self.n_reference_:
            extra = " (k + 1 with exclude_self)" if exclude_self else ""
            raise ValueError(
                f"k={k}{extra} is larger than the {self.n_reference_} item(s) of {self.name_}"
            )
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        if isinstance(q, np.memmap):
            check_finite(q32, name)
        if self.metric == "cosine":
            q32 = _normalize_rows(q32, name)
        if self.approx_ is not None:
            scores, idx = self._search_approx(q32, k_search)
        else:
            scores, idx = self._search_exact(q32, k_search)
        if exclude_self:
            idx, scores = _drop_self(idx, scores)
        if self.refine:
            dist, idx = self._refine(q, idx)
        else:
            dist = self._scores_to_distances(scores)
            order = np.lexsort((idx, dist), axis=1) if dist.size else np.zeros_like(idx)
            dist = np.take_along_axis(dist, order, axis=1)
            idx = np.take_along_axis(idx, order, axis=1)
        recall = sample = None
        if self.approx_ is not None:
            recall, sample = self._measure_recall(q32, k_search, exclude_self)
        return Neighbors(
            distances=dist,
            indices=idx,
            metric=self.metric,
            backend="faiss" if self.approx_ is not None else self.backend,
            index=self.index,
            recall=recall,
            recall_sample=sample,
        )

    def _search_exact(self, q32: np.ndarray, k: int):
        tiler = _Tiler(self.backend, self.metric, self.device)
        n_q, d = q32.shape
        in_place = (
            self.backend == "faiss"
            and self.metric == "l2"
            and not isinstance(self.reference_, np.memmap)
            and self.reference_.dtype == np.float32
            and self.reference_.flags.c_contiguous
        )
        ref_rows = self.n_reference_ if in_place else max(1, self.block_bytes // (4 * d))
        best_d = np.full((n_q, 0), np.inf, dtype=np.float32)
        best_i = np.full((n_q, 0), -1, dtype=np.int64)
        needs_norms = self.metric == "l2" and self.backend != "faiss"  # FAISS computes its own
        q_sq = np.einsum("ij,ij->i", q32, q32) if needs_norms else None
        with Progress(self.n_reference_ * n_q, f"knn ({self.backend})", self.progress) as bar:
            for start, block in _reference_blocks(self.reference_, ref_rows, self.name_):
                if self.metric == "cosine":
                    block = _normalize_rows(block, self.name_, offset=start)
                kk = min(k, block.shape[0])
                r_sq = np.einsum("ij,ij->i", block, block) if needs_norms else None
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
                best_d, best_i = _merge(best_d, best_i, cand_d, cand_i, k)
        return best_d, best_i

    def _search_approx(self, q32: np.ndarray, k: int):
        scores, idx = self.approx_.search(q32, k)
        if (idx < 0).any():
            raise RuntimeError(
                f"the {self.index} index returned fewer than k={k} neighbours for some queries; "
                "raise nprobe (IVF) or ef_search (HNSW)"
            )
        if self.metric == "cosine":
            scores = -scores
        return scores, idx.astype(np.int64)

    def _measure_recall(self, q32: np.ndarray, k: int, exclude_self: bool):
        rng = np.random.default_rng(self.seed)
        m = min(check_positive_int(self.recall_sample, "recall_sample"), q32.shape[0])
        rows = np.sort(rng.choice(q32.shape[0], size=m, replace=False))
        _, approx_i = self._search_approx(q32[rows], k)
        exact = NeighborIndex(self.metric, "faiss", refine=False, progress=False)
        exact.reference_, exact.name_ = self.reference_, self.name_
        exact.n_reference_, exact.n_features_ = self.reference_.shape
        _, exact_i = exact._search_exact(q32[rows], k)
        hits = [len(np.intersect1d(a, e)) for a, e in zip(approx_i, exact_i)]
        return float(np.mean(hits) / k), int(m)

    def _scores_to_distances(self, scores: np.ndarray) -> np.ndarray:
        s = scores.astype(np.float64)
        if self.metric == "l2":
            return np.sqrt(np.maximum(s, 0.0))
        return np.clip(1.0 + s, 0.0, 2.0)  # scores are -cos

    def _refine(self, q: np.ndarray, idx: np.ndarray):
        """Exact float64 distances of the candidates, sorted by (distance, index)."""
        n_q, k = idx.shape
        dist = np.empty((n_q, k), dtype=np.float64)
        chunk = max(1, (4 << 20) // max(1, 8 * k * self.n_features_))  # stays in cache
        ref = self.reference_
        mm = getattr(ref, "_mmap", None) if isinstance(ref, np.memmap) else None
        for s in range(0, n_q, chunk):
            sl = slice(s, s + chunk)
            flat = idx[sl].ravel()
            if mm is None:
                rows = np.take(ref, flat, axis=0)
            else:
                order = np.argsort(flat, kind="stable")  # sorted reads are kinder to the disk
                rows = np.empty((flat.size, self.n_features_), dtype=ref.dtype)
                rows[order] = ref[flat[order]]
                _release(mm)
            dist[sl] = _exact_distances(
                np.asarray(q[sl]), rows.reshape(idx[sl].shape + (self.n_features_,)), self.metric
            )
        order = np.lexsort((idx, dist), axis=1) if dist.size else np.zeros_like(idx)
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _drop_self(idx: np.ndarray, scores: np.ndarray):
    """Remove query i's own index from row i of a (n, k+1) result, else its worst entry."""
    n, k1 = idx.shape
    own = np.arange(n)[:, None]
    is_self = idx == own
    # rows without self: drop the last (worst) column; rows with self: drop that column
    has_self = is_self.any(axis=1)
    drop = np.where(has_self, is_self.argmax(axis=1), np.argmax(scores, axis=1))
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k1 - 1), scores[keep].reshape(n, k1 - 1)


def knn(queries, reference, k: int = 2, *, exclude_self: bool = False, **kwargs) -> Neighbors:
    """Find the ``k`` nearest items of ``reference`` for every row of ``queries``.

    A one-call form of ``NeighborIndex(**kwargs).fit(reference).search(queries, k)``; see
    :class:`NeighborIndex` for the options (metric, backend, index, block sizes, progress).

    Parameters
    ----------
    queries : array-like of shape (n_queries, ...)
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
