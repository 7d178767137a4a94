"""Exact neighbour search over a sharded reference set, in process or on a Dask cluster.

Each shard of the reference (:class:`memaudit.shards.ShardedSet`) is searched by the same exact
code as a single array (:class:`memaudit.neighbors.NeighborIndex`: float32 candidates, float64
refinement and certificate). Its float64 distances are those of the brute force, a function of the
two rows only, so the per-shard top-k lists, merged by (distance, global index), are the top-k of
the whole set: bit-identical to the single-process search over the concatenated reference, ties
included, whatever the number of shards, workers or the order in which results arrive.

The queries go out in batches of ``batch_rows``; a batch travels inside each shard's task (no
scattered data, so a task whose worker dies is rerun elsewhere by the scheduler with everything it
needs). The client merges one batch at a time, as the shards answer: it holds at most one batch of
partial results per shard. Workers open the shard files themselves and keep a fitted index of the
shards they searched last (:data:`CACHE_BYTES`), so the next batch does not re-read a shard's
ranges.

``dask`` and ``distributed`` are optional (``pip install 'memaudit[dask]'``) and imported only
when a cluster is asked for. A cluster is named by a spec (:func:`open_cluster`): ``local:N``
(a ``LocalCluster`` of N worker processes, one thread each), ``tcp://HOST:PORT`` (a running
scheduler), a ``scheduler.json`` file, or a ``distributed.Client``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import as_2d_array, check_ids, check_positive_int, check_same_dim
from .neighbors import METRICS, NeighborIndex, Neighbors
from .probes.nn_ratio import NNRatioProbe
from .probes.subsequence import SubsequenceProbe
from .shards import Shard, ShardedSet

__all__ = ["ShardedIndex", "sharded_knn", "merge_topk", "open_cluster", "check_cluster",
           "cluster_record", "ShardedNNRatioProbe", "DEFAULT_BATCH_ROWS", "CACHE_BYTES",
           "ShardedSeries", "SeriesGroup", "sharded_subsequence_search", "ShardedSubsequenceProbe"]

DEFAULT_BATCH_ROWS = 4096  # queries per batch sent to every shard
CACHE_BYTES = 1 << 30  # in-memory shard data a worker keeps fitted between batches
_MISSING = ("the cluster needs dask and distributed: pip install 'memaudit[dask]' (or run "
            "without --cluster)")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(_MISSING) from None
    return distributed


# -- clusters -----------------------------------------------------------------------------------
def check_cluster(spec) -> None:
    """Refuse a cluster spec that cannot name a cluster (one line), before any work."""
    if spec is None or not isinstance(spec, str):
        if spec is not None and type(spec).__name__ != "Client":
            raise TypeError(f"cluster (--cluster) must be local:N, tcp://HOST:PORT, a scheduler "
                            f"file or a distributed.Client, got {type(spec).__name__}")
        return
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not re.fullmatch(r"[1-9][0-9]*", n):
            raise ValueError(f"cluster (--cluster) local:N takes a number of worker processes "
                             f"N >= 1, got {spec!r}")
    elif re.match(r"^(tcp|tls|ucx|inproc)://", spec):
        pass
    elif spec.endswith(".json"):
        if not Path(spec).is_file():
            raise ValueError(f"cluster (--cluster): scheduler file {spec} does not exist; start "
                             "the scheduler with dask scheduler --scheduler-file " + spec)
    else:
        raise ValueError(f"cluster (--cluster) must be local:N, tcp://HOST:PORT or a "
                         f"scheduler .json file, got {spec!r}")
    _distributed()


@contextlib.contextmanager
def open_cluster(spec):
    """A ``distributed.Client`` for ``spec`` (see the module), closed on exit when opened here;
    ``None`` for ``None`` (in process)."""
    check_cluster(spec)
    if spec is None or not isinstance(spec, str):
        yield spec
        return
    distributed = _distributed()
    if spec.startswith("local:"):
        cluster = distributed.LocalCluster(n_workers=int(spec[6:]), threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
        try:
            client.wait_for_workers(int(spec[6:]), timeout=120)
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = (distributed.Client(scheduler_file=spec) if spec.endswith(".json")
                  else distributed.Client(spec, timeout="30s"))
    except OSError as exc:
        raise ValueError(f"cluster (--cluster): could not reach the scheduler {spec} ({exc})") \
            from None
    try:
        yield client
    finally:
        client.close()


def cluster_record(client, sets: dict) -> dict:
    """What the report states about where the search ran: workers, threads and the shards of
    every sharded set (``sets``: name -> array, ShardedSet or ShardedSeries)."""
    shards = {k: v.describe() for k, v in sets.items()
              if isinstance(v, (ShardedSet, ShardedSeries))}
    if client is None:
        return {"cluster": None, "workers": 0, "threads": 0, "shards": shards}
    # asked of the scheduler now: the client's cached scheduler_info() can predate the workers.
    # A lambda travels by value (cloudpickle), so the scheduler needs no memaudit installed.
    threads = client.run_on_scheduler(
        lambda dask_scheduler: {a: int(w.nthreads) for a, w in dask_scheduler.workers.items()})
    return {"cluster": str(getattr(client, "scheduler", None) and client.scheduler.address),
            "workers": len(threads), "threads": int(sum(threads.values())), "shards": shards}


# -- merging ------------------------------------------------------------------------------------
def merge_topk(dist: np.ndarray, idx: np.ndarray, k: int):
    """The ``k`` first of each row by (distance, index): rows of candidate lists from several
    shards (global indices, each at most once per row) -> their top-k, sorted."""
    if dist.shape[1] == 0:
        return dist, idx
    order = np.lexsort((idx, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _drop_own(dist, idx, own):
    """Remove item ``own[i]`` from row i of a sorted (m, k+1) list, else its last entry."""
    m, k1 = idx.shape
    hit = idx == own[:, None]
    drop = np.where(hit.any(axis=1), hit.argmax(axis=1), k1 - 1)
    keep = np.ones_like(hit)
    keep[np.arange(m), drop] = False
    return dist[keep].reshape(m, k1 - 1), idx[keep].reshape(m, k1 - 1)


# -- the per-shard task ------------------------------------------------------------------------
_cache: "OrderedDict[tuple, NeighborIndex]" = OrderedDict()
_cache_lock = threading.Lock()


def _fitted(shard: Shard, options: dict, name: str) -> NeighborIndex:
    key = (shard.key, tuple(sorted(options.items())))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    index = NeighborIndex(**options).fit(shard.load(), name=f"{name} (shard {shard.name})")
    with _cache_lock:
        _cache[key] = index
        while len(_cache) > 1 and (len(_cache) > 64 or _held_bytes() > CACHE_BYTES):
            _cache.popitem(last=False)  # the shard searched longest ago
    return index


def _held_bytes() -> int:
    """Bytes of shard data the cache holds in memory (memory maps hold none)."""
    return sum(v.reference_.nbytes for v in _cache.values()
               if not isinstance(v.reference_, np.memmap))


def _one_thread() -> None:
    """On a worker: FAISS uses the worker's threads, not every core of the machine."""
    try:
        from distributed import get_worker

        n = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    import faiss

    faiss.omp_set_num_threads(max(1, int(n)))


def search_shard(shard: Shard, queries: np.ndarray, k: int, options: dict, name: str,
                 q_name: str):
    """Top-``k`` (or fewer, for a smaller shard) of ``queries`` in one shard, exact or by the
    shard's own approximate index (``options["index"]``): float64 distances and *global*
    indices, and the number of queries the float64 pass recomputed."""
    _one_thread()
    index = _fitted(shard, options, name)
    kk = min(k, shard.n)
    nb = index.search(queries, kk, name=q_name)
    return nb.distances, nb.indices + shard.start, nb.exact_fallback


# -- the sharded index --------------------------------------------------------------------------
class ShardedIndex:
    """Exact top-k search of queries against a sharded reference (see the module).

    The interface of :class:`memaudit.neighbors.NeighborIndex` (``fit``, ``search`` ->
    :class:`memaudit.neighbors.Neighbors`), with the same results.

    Parameters
    ----------
    metric, backend, index : str
        As :class:`NeighborIndex`. ``index="exact"`` is bit-identical to one search over the
        whole set; ``"ivf"`` / ``"hnsw"`` build one approximate index per shard (on its worker),
        merge the shards' lists the same way and measure the recall@k of the merged lists
        against the sharded exact search on a seeded sample of ``recall_sample`` queries (500),
        as :class:`NeighborIndex` measures it on one array.
    client : distributed.Client, optional
        Where the shards are searched; ``None`` searches them in this process, one after another.
    batch_rows : int, default=DEFAULT_BATCH_ROWS
        Queries sent to every shard at a time.
    shard_rows : int, optional
        Rows per shard when ``fit`` is given an array or one ``.npy`` memory map (default about
        256 MiB a shard).
    **options
        Further :class:`NeighborIndex` options (``block_bytes``, ``tile_bytes``, ``margin``,
        ``seed``, ``progress``...).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).normal(size=(300, 8))
    >>> from memaudit.shards import ShardedSet
    >>> nb = ShardedIndex().fit(ShardedSet.from_array(ref, shard_rows=70)).search(ref[:2], k=2)
    >>> nb.indices[:, 0].tolist()
    [0, 1]
    """

    def __init__(self, metric: str = "l2", backend: str = "faiss", index: str = "exact", *,
                 client=None, batch_rows: int = DEFAULT_BATCH_ROWS, shard_rows: int | None = None,
                 **options):
        self.metric = metric
        self.backend = backend
        self.index = index
        self.client = client
        self.batch_rows = batch_rows
        self.shard_rows = shard_rows
        self.options = options

    def fit(self, reference, name: str = "reference") -> "ShardedIndex":
        """Keep the sharded reference (an array is cut into row ranges); nothing is read here:
        every shard is checked where it is searched, naming the shard and the item."""
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.index not in ("exact", "ivf", "hnsw"):
            raise ValueError(f"index must be 'exact', 'ivf' or 'hnsw', got {self.index!r}")
        check_positive_int(self.batch_rows, "batch_rows")
        if not isinstance(reference, ShardedSet):
            reference = ShardedSet.from_array(as_2d_array(reference, name), name, self.shard_rows)
        self.reference_ = reference
        self.name_ = name
        self.n_reference_, self.n_features_ = reference.shape
        self._options = dict(self.options, metric=self.metric, backend=self.backend,
                             index=self.index)
        self._options["progress"] = False  # per shard; the client shows none either
        if self.index != "exact":  # each shard's own index; the recall is measured here, whole
            self.recall_sample_ = self._options.pop("recall_sample", 500)
            self._options["recall_sample"] = 1
        return self

    def search(self, queries, k: int = 2, *, exclude_self: bool = False,
               name: str = "queries") -> Neighbors:
        """Exact top-``k`` of every query over all shards, merged by (distance, global index).

        ``exclude_self``: the queries are the reference set (query i is item i): each shard is
        asked for k + 1 and item i is removed from the merged list (else its last entry).
        """
        if not hasattr(self, "reference_"):
            raise RuntimeError("ShardedIndex is not fitted: call fit(reference) before search()")
        k = check_positive_int(k, "k")
        sharded_q = isinstance(queries, ShardedSet)
        q = queries if sharded_q else as_2d_array(queries, name)
        check_same_dim(q, self.reference_, name, self.name_)
        m = q.shape[0]
        if exclude_self and m != self.n_reference_:
            raise ValueError(f"exclude_self=True needs the queries to be the reference set, but "
                             f"{name} has {m} items and {self.name_} has {self.n_reference_}")
        if k + bool(exclude_self) > self.n_reference_:
            extra = " (k + 1 with exclude_self)" if exclude_self else ""
            raise ValueError(f"k={k}{extra} is larger than the {self.n_reference_} item(s) of "
                             f"{self.name_}")
        def rows(a, b):
            return q.block(a, b) if sharded_q else np.ascontiguousarray(q[a:b])

        own = np.arange(m) if exclude_self else None
        dist, idx, fallback = self._merged(rows, m, k, own, self._options, name)
        if self.index == "exact":
            return Neighbors(dist, idx, self.metric, self.backend, "exact",
                             exact_fallback=fallback)
        # the recall of the shards' approximate indexes together, against the sharded exact
        # search of a seeded sample of the queries (as NeighborIndex measures it on one array)
        from .neighbors import _row_pairs, pair_recall, recall_rows

        sample = recall_rows(m, self.recall_sample_, self.options.get("seed", 0))
        exact = dict(self._options, index="exact")
        exact.pop("recall_sample", None)
        qs = np.ascontiguousarray(q.rows(sample) if sharded_q else np.asarray(q)[sample])
        _, truth, _ = self._merged(lambda a, b: qs[a:b], sample.size, k,
                                   sample if exclude_self else None, exact, name)
        recall = pair_recall(_row_pairs(idx[sample]), _row_pairs(truth))
        return Neighbors(dist, idx, self.metric, self.backend, self.index, recall,
                         int(sample.size))

    def _merged(self, rows, m: int, k: int, own, options: dict, name: str):
        """Top-k of ``m`` queries (``rows(a, b)``: rows a..b) over every shard, merged by
        (distance, global index), batch by batch; ``own``: item i of query i is dropped (k + 1
        asked of the shards)."""
        kk = k + (own is not None)
        dist = np.empty((m, k))
        idx = np.empty((m, k), dtype=np.int64)
        fallback = 0
        batches = [(a, min(m, a + self.batch_rows)) for a in range(0, m, self.batch_rows)]
        pending = self._submit(rows(*batches[0]), kk, name, options) if batches else None
        for j, (a, b) in enumerate(batches):
            current = pending
            if j + 1 < len(batches):  # the next batch is on its way while this one is merged
                pending = self._submit(rows(*batches[j + 1]), kk, name, options)
            bd = np.full((b - a, 0), np.inf)
            bi = np.full((b - a, 0), -1, dtype=np.int64)
            for d_s, i_s, f_s in self._results(current):
                bd, bi = merge_topk(np.concatenate([bd, d_s], axis=1),
                                    np.concatenate([bi, i_s], axis=1), kk)
                fallback += int(f_s)
            if own is not None:
                bd, bi = _drop_own(bd, bi, own[a:b])
            dist[a:b], idx[a:b] = bd, bi
        return dist, idx, fallback

    def _submit(self, batch: np.ndarray, k: int, q_name: str, options: dict):
        args = (batch, k, options, self.name_, q_name)
        if self.client is None:
            return [(s, args) for s in self.reference_.shards]
        return [self.client.submit(search_shard, s, *args, pure=False)
                for s in self.reference_.shards]

    def _results(self, submitted):
        """Each shard's answer, as it arrives (in process: in shard order)."""
        if self.client is None:
            for shard, args in submitted:
                yield search_shard(shard, *args)
            return
        from distributed import as_completed

        for future in as_completed(submitted):
            out = future.result()
            future.release()
            yield out


def sharded_knn(queries, reference, k: int = 2, *, exclude_self: bool = False, client=None,
                **kwargs) -> Neighbors:
    """``ShardedIndex(client=client, **kwargs).fit(reference).search(queries, k)``: the result
    of :func:`memaudit.knn` on the concatenated reference, bit for bit."""
    return ShardedIndex(client=client, **kwargs).fit(reference).search(
        queries, k, exclude_self=exclude_self)


class _ShardedParams:
    """The sharded probes' extra parameters (``client``, ``batch_rows``, ``shard_rows``) beside
    those of the probe they extend (the first base class after this one)."""

    def _set_sharding(self, client, batch_rows, shard_rows) -> None:
        self.client = client
        self.batch_rows = batch_rows
        self.shard_rows = shard_rows

    def get_params(self) -> dict:
        base = type(self).__mro__[type(self).__mro__.index(_ShardedParams) + 1]
        names = inspect.signature(base.__init__).parameters
        out = {name: getattr(self, name) for name in names if name != "self"}
        out.update(client=self.client, batch_rows=self.batch_rows, shard_rows=self.shard_rows)
        return out


# -- the audit's probe on a sharded training set ------------------------------------------------
class ShardedNNRatioProbe(_ShardedParams, NNRatioProbe):
    """:class:`memaudit.probes.NNRatioProbe` whose searches run over a sharded training set (and,
    with ``client``, on a Dask cluster). Same parameters, plus ``client``, ``batch_rows`` and
    ``shard_rows`` (see :class:`ShardedIndex`); the same results as the in-process probe on the
    concatenated training set."""

    def __init__(self, *, client=None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 shard_rows: int | None = None, **params):
        super().__init__(**params)
        self._set_sharding(client, batch_rows, shard_rows)

    def _search(self, **extra):
        opts = dict(self.search_options or {})
        opts.update(extra)
        return ShardedIndex(self.metric, self.backend, self.index, client=self.client,
                            batch_rows=self.batch_rows, shard_rows=self.shard_rows,
                            seed=self.seed, **opts)

    def fit(self, train, ids=None) -> "ShardedNNRatioProbe":
        """Keep the sharded training set (an array is cut into row ranges) and its ids."""
        if not isinstance(train, ShardedSet):
            train = ShardedSet.from_array(as_2d_array(train, "train"), "train", self.shard_rows)
        self.check_params()
        self.threshold_ = float(self.threshold)
        if train.shape[0] < 2:
            raise ValueError("train has 1 item; the nearest-neighbour ratio needs at least 2 "
                             "training items (d2 is the distance to the second nearest)")
        self.train_ = train
        self.train_ids_ = check_ids(ids, train.shape[0], "train ids")
        self.index_ = self._search().fit(train, name="train")
        return self


# -- the runners' side ---------------------------------------------------------------------------
def uses_shards(client, datasets: dict) -> bool:
    """Whether a run goes through the sharded search: a cluster is given, or a set is sharded."""
    return client is not None or any(
        ds is not None and isinstance(ds.x, ShardedSet) for ds in datasets.values())


def shard_inputs(datasets: dict, reference: str, client, shard_rows: int | None):
    """The runners' inputs for the sharded search: the ``reference`` set as a ShardedSet (row
    ranges of its array or ``.npy`` file when it is not sharded already), every other sharded set
    read into one array (generated samples and held-out sets are queries: they are sent in
    batches, and fit in memory); and the record of the cluster for the report."""
    from dataclasses import replace

    from .shards import as_sharded

    out = {}
    for name, ds in datasets.items():
        if ds is None:
            out[name] = None
        elif name == reference:
            out[name] = as_sharded(ds, name, shard_rows)
        elif isinstance(ds.x, ShardedSet):
            out[name] = replace(ds, x=ds.x.block(0, ds.x.shape[0]))
        else:
            out[name] = ds
    out[reference].x.client = client  # its shards' summaries and codes are computed there
    record = cluster_record(client, {reference: out[reference].x})
    return out, record


# -- duplicates over a sharded training set -----------------------------------------------------
_HASHED = ("exact", "phash", "dhash")


def _shard_codes(shard: Shard, method: str, item_shape, scale, name: str):
    """The hash codes (or content digests) of one shard's items, and its notes."""
    from .adapters.images import duplicate_codes

    notes: list = []
    codes = duplicate_codes(shard.load(), method, item_shape, scale, f"{name} (shard {shard.name})",
                            notes)
    return codes, notes


def _embedding_block_pairs(qpart, rpart, thr, cross, names):
    """Exact embedding pairs between two shards (or the queries and a shard; within one shard
    when not ``cross``), with global indices: a function of each pair only
    (:func:`memaudit.probes._range_search.embedding_pairs`)."""
    from .probes._range_search import embedding_pairs

    xq = qpart.load() if isinstance(qpart, Shard) else qpart
    xr = rpart.load()
    qn = f"{names[0]} (shard {qpart.name})" if isinstance(qpart, Shard) else names[0]
    pairs, scores = embedding_pairs(xq, xr, thr, cross, (qn, f"{names[1]} (shard {rpart.name})"),
                                    False)
    q0 = qpart.start if isinstance(qpart, Shard) else 0
    return pairs + np.array([[q0, rpart.start]], dtype=np.int64), scores


def sharded_embedding_pairs(xq, xr: ShardedSet, thr, cross, names, progress, *, client=None):
    """:func:`memaudit.probes._range_search.embedding_pairs` against a sharded set, one task per
    pair of shards (within the set: shard a against shards b >= a) or per shard (queries in
    memory against the set), on ``client``'s workers or in this process. Every pair is decided
    on its float64 cosine, so the union of the tasks' pairs is the one-process answer."""
    from ._progress import Progress

    if cross:
        q = np.ascontiguousarray(xq.block(0, xq.shape[0]) if isinstance(xq, ShardedSet) else xq)
        jobs = [(q, r, True) for r in xr.shards]
    else:
        jobs = [(a, b, a is not b) for i, a in enumerate(xr.shards) for b in xr.shards[i:]]
    out_p, out_s = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    with Progress(len(jobs), "cosine range search (shards)", progress, unit="task") as bar:
        if client is None:
            results = (_embedding_block_pairs(a, b, thr, c, names) for a, b, c in jobs)
        else:
            from distributed import as_completed

            futures = [client.submit(_embedding_block_pairs, a, b, thr, c, names, pure=False)
                       for a, b, c in jobs]
            results = (f.result() for f in as_completed(futures))
        for p, sc in results:
            out_p.append(p)
            out_s.append(sc)
            bar.update(1)
    return np.concatenate(out_p), np.concatenate(out_s)


def _sharded_sets(method, sets, x: ShardedSet, name: str, item_shape, value_range, levels):
    """The duplicates matcher over ``sets`` with the sharded set's codes computed shard by
    shard (on the cluster when ``x.client`` is set), concatenated in set order; for
    "embedding" the vectors stay in their shards (searched by :func:`sharded_embedding_pairs`)."""
    from .image_duplicates import _Sets

    if method not in _HASHED + ("embedding",):
        raise ValueError(f"method {method!r} on a sharded set: the hashes ({', '.join(_HASHED)}) "
                         "and embedding are matched across shards; give the training set as one "
                         ".npy file for tiled_l2")
    matcher = _Sets(method, sets, item_shape, value_range, levels)
    if method == "embedding":
        return matcher
    parts = x.map(_shard_codes, method, item_shape, matcher.scale, name)
    matcher.codes[name] = np.concatenate([c for c, _ in parts])
    matcher.notes[name] = [n for _, ns in parts for n in ns]
    return matcher


def _search_args(index, seed, progress, x: ShardedSet):
    from functools import partial

    from .probes.duplicates import NPROBE, RECALL_SAMPLE

    if index != "exact":
        raise ValueError(f"index {index!r} on a sharded set: the embedding search across shards is "
                         "exact (index='exact'); give the training set as one .npy file for ivf")
    return (index, None, NPROBE, RECALL_SAMPLE, seed, progress,
            partial(sharded_embedding_pairs, client=getattr(x, "client", None)))


def sharded_duplicates(x: ShardedSet, method: str, *, ids=None, item_shape=None, threshold=None,
                       value_range=None, levels=None, index: str = "exact", seed: int = 0,
                       progress=None):
    """:func:`memaudit.image_duplicates.find_duplicates` over a sharded set: every shard's hash
    codes are computed where the shard is (``x.client``), then matched as one set, so pairs and
    groups join items of different shards; the result equals the in-process one."""
    from .probes.duplicates import check_index, check_threshold

    thr, source = check_threshold(method, threshold)
    check_index(method, index)
    ids = check_ids(ids, x.shape[0], "ids")
    item_shape = tuple(item_shape) if item_shape is not None else x.item_shape
    sets = _sharded_sets(method, [(x, "items")], x, "items", item_shape, value_range, levels)
    return sets.match(x, x, thr, source, False, ids, None, ("items", "items"),
                      *_search_args(index, seed, progress, x))


def sharded_copies(samples, reference: ShardedSet, method: str, *, holdout=None, sample_ids=None,
                   reference_ids=None, holdout_ids=None, item_shape=None, threshold=None,
                   value_range=None, levels=None, index: str = "exact", seed: int = 0,
                   progress=None, n_bootstrap=None, confidence=None):
    """:func:`memaudit.image_duplicates.find_copies` (and, with ``holdout``,
    ``find_copies_with_control``) against a sharded reference: its codes per shard, the samples'
    (and held-out items') in process. Returns a DuplicateResult, or a CopyRateResult with a
    holdout."""
    from .probes.duplicates import check_index, check_threshold, copy_rates

    q = as_2d_array(samples, "samples")
    check_same_dim(q, reference, "samples", "reference")
    thr, source = check_threshold(method, threshold)
    check_index(method, index)
    item_shape = tuple(item_shape) if item_shape is not None else reference.item_shape
    sets = [(q, "samples"), (reference, "reference")]
    h = None
    if holdout is not None:
        h = as_2d_array(holdout, "holdout")
        check_same_dim(h, reference, "holdout", "reference")
        sets.append((h, "holdout"))
    matcher = _sharded_sets(method, sets, reference, "reference", item_shape, value_range, levels)
    r_ids = check_ids(reference_ids, reference.shape[0], "reference_ids")
    args = _search_args(index, seed, progress, reference)
    res_s = matcher.match(q, reference, thr, source, True,
                          check_ids(sample_ids, q.shape[0], "sample_ids"), r_ids,
                          ("samples", "reference"), *args)
    if h is None:
        return res_s
    res_h = matcher.match(h, reference, thr, source, True,
                          check_ids(holdout_ids, h.shape[0], "holdout_ids"), r_ids,
                          ("holdout", "reference"), *args)
    return copy_rates(res_s, res_h, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)


def sharded_copies_with_control(samples, reference: ShardedSet, holdout, method: str, **kw):
    """``find_copies_with_control`` against a sharded reference (see :func:`sharded_copies`)."""
    return sharded_copies(samples, reference, method, holdout=holdout, **kw)


# -- subsequence search over sharded training series --------------------------------------------
@dataclass(frozen=True)
class SeriesGroup:
    """Whole training series held in memory, a shard of a list of series (lengths may differ):
    ``series`` are validated (length_i, channels) float64 arrays, the first at ``start``."""

    name: str
    start: int
    series: tuple

    @property
    def n(self) -> int:
        return len(self.series)


def _series_of(part, item_shape, layout: str, name: str) -> list:
    """The whole series of one shard as (length, channels) float64 arrays; a shard read from a
    store is checked here (NaN/Inf, magnitude), naming the shard and the series."""
    from ._series import as_series_list
    from .probes._subsequence_search import first_too_large, magnitude_error

    if isinstance(part, SeriesGroup):
        return list(part.series)
    x = np.asarray(part.load(), dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = "NaN" if np.isnan(x[i]).any() else "Inf"
        raise ValueError(f"{name}: shard {part.name} holds {value} in series {i} (series "
                         f"{part.start + i} of the set); remove or repair that series")
    i = first_too_large(x)
    if i is not None:
        raise magnitude_error(f"{name}: shard {part.name}, series {i} (series {part.start + i} of "
                              "the set),", x[i])
    return as_series_list(x.reshape((x.shape[0],) + tuple(item_shape)), name, layout)


def search_series_shard(part, item_shape, layout: str, queries: np.ndarray, length: int,
                        normalize: bool, zone: int, block_elements: int, name: str) -> dict:
    """The subsequence search of ``queries`` (m, length, channels) in one shard of whole training
    series: squared distances, series as positions in the whole set."""
    from .probes._subsequence_search import subsequence_search

    series = _series_of(part, item_shape, layout, name)
    found = subsequence_search(queries, series, length, normalize=normalize, exclusion_zone=zone,
                               block_elements=block_elements, squared=True)
    for key in ("series1", "series2"):
        found[key] = np.where(found[key] >= 0, found[key] + part.start, -1)
    return found


class ShardedSeries:
    """Training series as shards of whole series: a :class:`ShardedSet` of equal-length series
    (items (length,), (length, channels) or, with ``layout="NCT"``, (channels, length)), or a
    list of series cut into :class:`SeriesGroup` s. Indexing gives one series, read from its shard
    (what the report draws)."""

    def __init__(self, data, name: str = "train", layout: str = "NTC",
                 shard_rows: int | None = None):
        from ._series import as_series_list
        from .probes._subsequence_search import check_magnitude

        self.name, self.layout = name, layout
        if isinstance(data, ShardedSet):
            shape = tuple(data.item_shape)
            if len(shape) not in (1, 2):
                raise ValueError(f"{name}: items of shape {shape}; a series is (length,) or "
                                 "(length, channels) (layout NCT: (channels, length))")
            t_axis = 1 if (len(shape) == 2 and layout == "NCT") else 0
            self.sharded, self.item_shape = data, shape
            self.parts = list(data.shards)
            self.channels = 1 if len(shape) == 1 else shape[1 - t_axis]
            self.lengths = np.full(data.shape[0], shape[t_axis], dtype=np.int64)
            self.source = data.source
            return
        series = as_series_list(data, name, layout)
        check_magnitude(series, name)
        self.sharded, self.item_shape, self.source = None, None, "array"
        self.channels = series[0].shape[1]
        self.lengths = np.array([s.shape[0] for s in series], dtype=np.int64)
        if shard_rows is None:  # about DEFAULT_SHARD_BYTES of values a shard
            from .shards import DEFAULT_SHARD_BYTES

            per = max(1, int(DEFAULT_SHARD_BYTES // max(1, 8 * self.lengths.mean() * self.channels)))
        else:
            per = check_positive_int(shard_rows, "shard_rows")
        self.parts = [SeriesGroup(f"{name}[{a}:{min(a + per, len(series))}]", a,
                                  tuple(series[a : a + per])) for a in range(0, len(series), per)]

    def __len__(self) -> int:
        return int(self.lengths.size)

    def __getitem__(self, i) -> np.ndarray:
        i = int(i)
        if self.sharded is None:
            part = self.parts[int(np.searchsorted([p.start for p in self.parts], i, "right")) - 1]
            return part.series[i - part.start]
        from ._series import as_series_list

        row = np.asarray(self.sharded.rows([i]), dtype=np.float64)
        return as_series_list(row.reshape((1,) + self.item_shape), self.name, self.layout)[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def describe(self) -> dict:
        """The shards, for the report."""
        return {"source": self.source, "n_shards": len(self.parts), "n_series": len(self),
                "shards": [{"name": p.name, "start": p.start, "n_series": p.n}
                           for p in self.parts]}


def sharded_subsequence_search(queries, train: ShardedSeries, length: int, *,
                               normalize: bool = True, exclusion_zone: int | None = None,
                               client=None, batch_rows: int = DEFAULT_BATCH_ROWS,
                               block_elements: int = 1 << 24, progress=None) -> dict:
    """:func:`memaudit.probes.subsequence.subsequence_search` over training series in shards,
    each shard searched where it is (``client``: a Dask cluster; ``None``: in this process),
    the answers merged exactly (:func:`merge_subsequence_results`): bit-identical to one search
    over all the series. The query windows go out in batches of ``batch_rows``; the client holds
    one merged answer per batch and merges each shard's as it arrives."""
    from ._progress import Progress
    from .probes._subsequence_search import merge_subsequence_results

    q = np.ascontiguousarray(queries, dtype=np.float64)
    m, L = q.shape[0], int(length)
    zone = L - 1 if exclusion_zone is None else int(exclusion_zone)
    check_positive_int(batch_rows, "batch_rows")
    out = {"d1": np.empty(m), "series1": np.empty(m, np.int64), "offset1": np.empty(m, np.int64),
           "d2": np.empty(m), "series2": np.empty(m, np.int64), "offset2": np.empty(m, np.int64),
           "evaluable": np.empty(m, bool)}
    args = (train.item_shape, train.layout)
    batches = [(a, min(m, a + batch_rows)) for a in range(0, m, batch_rows)]

    def submit(a, b):
        rest = (q[a:b], L, bool(normalize), zone, int(block_elements), train.name)
        if client is None:
            return [(p, rest) for p in train.parts]
        return [client.submit(search_series_shard, p, *args, *rest, pure=False)
                for p in train.parts]

    def answers(submitted):
        if client is None:
            for p, rest in submitted:
                yield search_series_shard(p, *args, *rest)
            return
        from distributed import as_completed

        for future in as_completed(submitted):
            res = future.result()
            future.release()
            yield res

    with Progress(len(batches) * len(train.parts), "subsequence search (shards)",
                  progress, unit="shard") as bar:
        pending = submit(*batches[0]) if batches else None
        for j, (a, b) in enumerate(batches):
            current = pending
            if j + 1 < len(batches):
                pending = submit(*batches[j + 1])
            acc = None
            for found in answers(current):
                acc = found if acc is None else merge_subsequence_results([acc, found],
                                                                          squared=True)
                bar.update(1)
            for key in out:
                out[key][a:b] = acc[key]
    out["d1"], out["d2"] = np.sqrt(out["d1"]), np.sqrt(out["d2"])
    return out


class ShardedSubsequenceProbe(_ShardedParams, SubsequenceProbe):
    """:class:`memaudit.probes.SubsequenceProbe` over training series in shards (a
    :class:`ShardedSet` of equal-length series, or a list of series cut into groups), searched
    shard by shard in process or, with ``client``, on a Dask cluster. Same parameters, plus
    ``client``, ``batch_rows`` (query windows per batch) and ``shard_rows`` (series per shard of
    a list or array); the same results as the in-process probe."""

    def __init__(self, length: int, *, client=None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 shard_rows: int | None = None, **params):
        super().__init__(length, **params)
        self._set_sharding(client, batch_rows, shard_rows)

    def fit(self, train, ids=None) -> "ShardedSubsequenceProbe":
        """Keep the training series as shards (nothing of a store is read here: each shard's
        values are checked where it is searched, naming the shard and the series)."""
        zone = self._check_params()
        if self.metric != "euclidean":
            raise ValueError("metric='dtw' runs in one process: give the training series without "
                             "--cluster or shards")
        check_positive_int(self.batch_rows, "batch_rows")
        series = train if isinstance(train, ShardedSeries) else ShardedSeries(
            train, "train", self.layout, self.shard_rows)
        L = int(self.length)
        usable = series.lengths[series.lengths >= L] - L + 1
        if usable.size == 0:
            raise ValueError(f"every training series is shorter than the window length {L} "
                             f"(longest: {int(series.lengths.max())} steps)")
        if usable.size < 2 and usable[0] // 2 <= zone:
            raise ValueError("the training series hold no two windows outside each other's "
                             "exclusion zone, so the nearest-neighbour ratio d1/d2 is undefined: "
                             "give longer or more training series, or a smaller exclusion_zone")
        self.train_ = series
        self.train_ids_ = check_ids(ids, len(series), "ids")
        self.channels_ = series.channels
        self.zone_ = zone
        return self

    def _find(self, q, name: str) -> dict:
        return sharded_subsequence_search(q, self.train_, self.length, normalize=self.normalize,
                                          exclusion_zone=self.zone_, client=self.client,
                                          batch_rows=self.batch_rows,
                                          block_elements=self.block_elements,
                                          progress=self.progress)
