"""Sharded sets and the sharded exact search, in process and on a Dask LocalCluster.

One LocalCluster (2 worker processes, one thread each) is shared by the module: starting one costs
a few seconds. Every result is compared with the single-process search over the concatenated
reference (``memaudit.knn``) or the float64 brute force of tests/naive.py, exactly (``==`` on
float64 distances and indices, ties by global index included).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memaudit import knn
from memaudit.cli import main
from memaudit.distributed import ShardedIndex, check_cluster, merge_topk, sharded_knn
from memaudit.runners import AuditConfig, run_audit
from memaudit.shards import ShardedSet, is_sharded_source
from memaudit.sources import load_dataset
from naive import naive_knn

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _write_stores(root, train, samples, holdout, cuts, prefix, chunk_rows):
    """train.npy, samples.npy, holdout.npy; shards/ cut at ``cuts``; train.zarr in chunks of
    ``chunk_rows`` rows."""
    import zarr

    for name, x in (("train", train), ("samples", samples), ("holdout", holdout)):
        np.save(root / f"{name}.npy", x)
    (root / "shards").mkdir()
    edges = [0, *cuts, len(train)]
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        np.save(root / "shards" / f"{prefix}{i:02d}.npy", train[a:b])
    z = zarr.open_array(str(root / "train.zarr"), mode="w", shape=train.shape,
                        chunks=(chunk_rows,) + train.shape[1:], dtype=train.dtype)
    z[:] = train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A training set with planted copies among the samples, as one .npy, a folder of three .npy
    shards of unequal sizes and a zarr array of 128-row chunks."""
    pytest.importorskip("zarr")
    root = tmp_path_factory.mktemp("sharded")
    rng = np.random.default_rng(7)
    train = rng.normal(size=(700, 12)).astype(np.float32)
    train[300] = train[10]  # a duplicated training item: d1 = d2 = 0 for its copy
    samples = np.vstack([rng.normal(size=(40, 12)),
                         train[[3, 299, 699]] + 1e-3, train[10:11]]).astype(np.float32)
    holdout = rng.normal(size=(50, 12)).astype(np.float32)
    _write_stores(root, train, samples, holdout, [150, 301], "part-", 128)
    return root, train, samples, holdout


def _sections(run):
    return json.loads(json.dumps(run.report.to_dict()["sections"]))


def _audit(root, train, **kw):
    return run_audit(AuditConfig(train=str(root / train), samples=str(root / "samples.npy"),
                                 holdout=str(root / "holdout.npy"), progress=False, **kw))


# -- sharded sets ------------------------------------------------------------------------------
def test_folder_of_npy_is_one_set_in_file_name_order(data):
    root, train, _, _ = data
    ds = load_dataset(str(root / "shards"), "train")
    assert ds.kind == "npy-shards" and ds.x.shape == train.shape
    assert [s.name for s in ds.x.shards] == ["part-00.npy", "part-01.npy", "part-02.npy"]
    pos = [0, 149, 150, 300, 301, 699, 5]
    assert np.array_equal(ds.x[pos], train[pos])
    assert np.array_equal(ds.x[::97], train[::97])
    with pytest.raises(ValueError, match="never loaded whole"):
        np.asarray(ds.x)


def test_zarr_shards_are_whole_chunks(data):
    root, train, _, _ = data
    ds = load_dataset(str(root / "train.zarr"), "train")
    x = ds.x
    assert ds.kind == "zarr" and all(s.lo % 128 == 0 for s in x.shards)
    small = ShardedSet.from_zarr(root / "train.zarr", shard_rows=256)
    assert [s.n for s in small.shards] == [256, 256, 188]
    assert np.array_equal(small[[0, 255, 256, 699]], train[[0, 255, 256, 699]])


def test_row_ranges_of_one_npy_search_like_the_file(data):
    from memaudit.shards import as_sharded

    root, train, samples, _ = data
    x = as_sharded(load_dataset(str(root / "train.npy"), "train"), "train", 160).x
    assert [(s.kind, s.lo, s.hi) for s in x.shards][-1] == ("npy", 640, 700)
    assert all(s.path.endswith("train.npy") for s in x.shards)  # file ranges, not copies
    want = knn(samples, train, k=3)
    got = sharded_knn(samples, x, k=3, batch_rows=10)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.distances, want.distances)


def test_mixed_folder_and_bad_shards_are_refused(tmp_path):
    from PIL import Image

    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="both .npy files .* and images"):
        is_sharded_source(tmp_path)
    (tmp_path / "b.png").unlink()
    np.save(tmp_path / "c.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"shard c.npy holds items of shape \(5,\) but shard a.npy"):
        load_dataset(str(tmp_path), "train")
    np.save(tmp_path / "c.npy", np.zeros((3, 4), np.float64))
    with pytest.raises(ValueError, match="shard c.npy is float64 but shard a.npy is float32"):
        load_dataset(str(tmp_path), "train")


def test_nan_in_a_shard_is_refused_naming_shard_and_item(tmp_path, data, client):
    root, train, _, _ = data
    bad = train[:200].copy()
    bad[77, 3] = np.nan
    np.save(tmp_path / "p0.npy", train[200:])
    np.save(tmp_path / "p1.npy", bad)
    with pytest.raises(ValueError, match=r"shard p1.npy holds NaN at item 77 \(item 577 of"):
        run_audit(AuditConfig(train=str(tmp_path), samples=str(root / "samples.npy"),
                              progress=False))
    # searched on the cluster without the loader's pass: the worker's check names it too
    ref = ShardedSet.from_npy_folder(tmp_path, "train")
    with pytest.raises(ValueError, match=r"train \(shard p1.npy\) contains 1 NaN .* item 77"):
        ShardedIndex(client=client).fit(ref, name="train").search(train[:5], k=2)


def test_cluster_specs_are_checked_before_work(tmp_path):
    for bad in ("local:0", "local:x", "spark://h:1", str(tmp_path / "none.json")):
        with pytest.raises(ValueError, match=r"cluster \(--cluster\)"):
            check_cluster(bad)
    check_cluster("local:2")
    check_cluster("tcp://127.0.0.1:8786")


def test_missing_extra_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'memaudit\[dask\]'"):
        check_cluster("local:2")
    check_cluster(None)  # in process: no dask needed


# -- the merge ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), m=st.integers(1, 6), k=st.integers(1, 5),
       cuts=st.lists(st.integers(1, 39), max_size=5), seed=st.integers(0, 2**16),
       exclude=st.booleans())
def test_sharded_search_equals_brute_force_with_ties(n, m, k, cuts, seed, exclude):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 3, size=(n, 3)).astype(np.float32)  # many exact ties
    q = ref if exclude else rng.integers(0, 3, size=(m, 3)).astype(np.float32)
    k = min(k, n - exclude)
    edges = sorted({c for c in cuts if c < n})
    shards = [ShardedSet.from_array(ref[a:b]).shards[0] for a, b in
              zip([0] + edges, edges + [n])]
    from dataclasses import replace

    starts = np.cumsum([0] + [s.n for s in shards])[:-1]
    sset = ShardedSet([replace(s, start=int(a)) for s, a in zip(shards, starts)], (3,),
                      np.float32, "parts")
    got = ShardedIndex(batch_rows=4).fit(sset).search(q, k, exclude_self=exclude)
    dist, idx, _ = naive_knn(q, ref, k, exclude_self=exclude)
    assert np.array_equal(got.indices, idx)
    assert np.array_equal(got.distances, dist)


def test_merge_orders_by_distance_then_global_index():
    d = np.array([[1.0, 0.5, 1.0, 0.5, 2.0]])
    i = np.array([[9, 7, 2, 3, 0]])
    md, mi = merge_topk(d, i, 4)
    assert mi.tolist() == [[3, 7, 2, 9]] and md.tolist() == [[0.5, 0.5, 1.0, 1.0]]


# -- on the cluster ----------------------------------------------------------------------------
def test_cluster_search_is_bit_identical(data, client):
    root, train, samples, _ = data
    ref = ShardedSet.from_npy_folder(root / "shards", "train")
    want = knn(samples, train, k=5)
    got = sharded_knn(samples, ref, k=5, client=client, batch_rows=16)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.distances, want.distances)
    own = sharded_knn(ref, ref, k=3, client=client, exclude_self=True, batch_rows=256)
    want = knn(train, train, k=3, exclude_self=True)
    assert np.array_equal(own.indices, want.indices) and np.array_equal(own.distances,
                                                                        want.distances)


@pytest.mark.parametrize("store", ["shards", "train.zarr"])
def test_audit_on_cluster_equals_in_process(data, client, store):
    root = data[0]
    whole = _audit(root, "train.npy")
    local = _audit(root, store)
    on_cluster = _audit(root, store, cluster=client, shard_rows=200)
    assert _sections(local) == _sections(whole) == _sections(on_cluster)
    r = on_cluster.report.nn_ratio
    assert np.array_equal(r.ratio, whole.report.nn_ratio.ratio)
    assert r.nn_index[40:44].tolist() == [3, 299, 699, 10] and r.ratio[43] == 0
    assert r.control is not None and r.closer_to_train is not None and r.carlini_rate is not None
    rec = on_cluster.report.to_dict()["config"]["cluster"]
    assert rec["workers"] == 2 and rec["threads"] == 2
    assert rec["shards"]["train"]["n_shards"] == (3 if store == "shards" else 4)


def test_audit_on_cluster_with_an_approximate_index_reports_recall(data, client):
    root = data[0]
    run = _audit(root, "shards", cluster=client, index="ivf")
    search = run.report.to_dict()["sections"]["nn_ratio"]["neighbors"]
    assert search["index"] == "ivf" and 0 < search["recall"] <= 1 and search["recall_sample"] > 0
    assert run.report.nn_ratio.nn_index[40:44].tolist() == [3, 299, 699, 10]


def test_cli_cluster_address_gives_the_same_report(data, client, tmp_path, capsys):
    root = data[0]
    args = ["audit", "--train", str(root / "shards"), "--samples", str(root / "samples.npy"),
            "--holdout", str(root / "holdout.npy"), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--cluster", client.scheduler.address]) == 0
    a, b = (json.loads((tmp_path / x / "report.json").read_text()) for x in "ab")
    assert a["sections"] == b["sections"]
    assert b["config"]["cluster"]["workers"] == 2 and a["config"]["cluster"]["workers"] == 0
    assert "Searched on a Dask cluster" in (tmp_path / "b" / "report.html").read_text()
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "c"), "--cluster", "local:0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "local:N" in err[0]


@pytest.mark.slow
def test_cli_local_cluster(data, tmp_path):
    root = data[0]
    args = ["audit", "--train", str(root / "train.zarr"), "--samples", str(root / "samples.npy"),
            "--holdout", str(root / "holdout.npy"), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--cluster", "local:2"]) == 0
    a, b = (json.loads((tmp_path / x / "report.json").read_text()) for x in "ab")
    assert a["sections"] == b["sections"]


# -- duplicates --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """uint8 images with duplicates planted across shard boundaries and copies among samples."""
    pytest.importorskip("zarr")
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, size=(8, 8, 8), dtype=np.uint8)
    # smooth 32x32 images (blocks of a random 8x8), so perceptual hashes differ between them
    train = np.stack([np.kron(rng.integers(0, 256, size=(8, 8)), np.ones((4, 4)))
                      for _ in range(240)]).astype(np.uint8)
    train[130] = train[20]  # across the shard boundary at 100
    train[230] = train[20]
    samples = np.concatenate([np.stack([np.kron(b, np.ones((4, 4))) for b in base]),
                              train[[5, 150, 239]]]).astype(np.uint8)
    holdout = np.stack([np.kron(rng.integers(0, 256, size=(8, 8)), np.ones((4, 4)))
                        for _ in range(30)]).astype(np.uint8)
    _write_stores(root, train, samples, holdout, [100, 170], "s", 64)
    return root


def _dup_results(run):
    return {k: json.loads(json.dumps(v.to_dict())) for k, v in run.results.items()}


@pytest.mark.parametrize("store", ["shards", "train.zarr"])
def test_duplicates_on_cluster_equal_in_process(images, client, store):
    from memaudit.runners import DuplicatesConfig, run_duplicates

    def run(train, **kw):
        return run_duplicates(DuplicatesConfig(
            train=str(images / train), samples=str(images / "samples.npy"),
            holdout=str(images / "holdout.npy"), method="phash", threshold="4", progress=False,
            **kw))

    whole = run("train.npy")
    sharded = run(store)
    on_cluster = run(store, cluster=client, shard_rows=50)
    assert _dup_results(whole) == _dup_results(sharded) == _dup_results(on_cluster)
    groups = [sorted(g["members"].tolist()) for g in on_cluster.results["train"].groups]
    assert [20, 130, 230] in groups  # one group across three shards
    pairs = on_cluster.results["samples_vs_train"].pairs.tolist()
    assert [[8, 5], [9, 150], [10, 239]] == [p for p in pairs if p[1] not in (20, 130, 230)]
    assert on_cluster.control.rate.count == 3
    exact = run_duplicates(DuplicatesConfig(train=str(images / store), method="exact",
                                            progress=False, cluster=client))
    assert [sorted(g["members"].tolist()) for g in exact.results["train"].groups] == [[20, 130, 230]]


@pytest.mark.parametrize("store", ["shards", "train.zarr"])
def test_embedding_duplicates_on_cluster_equal_in_process(data, client, store):
    """Embedding near-duplicates across shards: one task per pair of shards (or per shard
    against the samples), every pair decided on its float64 cosine, so the pairs, scores and
    groups equal the one-process run on the single .npy, bit for bit."""
    from memaudit.runners import DuplicatesConfig, run_duplicates

    root = data[0]

    def run(train, **kw):
        return run_duplicates(DuplicatesConfig(
            train=str(root / train), samples=str(root / "samples.npy"),
            holdout=str(root / "holdout.npy"), method="embedding", threshold="0.999",
            progress=False, **kw))

    whole = run("train.npy")
    local = run(store)
    on_cluster = run(store, cluster=client, shard_rows=200)
    assert _dup_results(whole) == _dup_results(local) == _dup_results(on_cluster)
    assert [10, 300] in on_cluster.results["train"].pairs.tolist()
    found = on_cluster.results["samples_vs_train"].pairs.tolist()
    assert [[40, 3], [41, 299], [42, 699], [43, 10], [43, 300]] == sorted(found)


# -- approximate indexes per shard -------------------------------------------------------------
@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_index_per_shard_reports_its_measured_recall(data, client, index):
    """Each shard builds its own approximate index; the merged lists' recall@k is measured
    against the sharded exact search on a seeded sample, as on one array: equal to the recall
    computed here against the brute force; an exhaustive IVF (nprobe = nlist) is exact."""
    root, train, samples, _ = data
    ref = ShardedSet.from_npy_folder(root / "shards", "train")
    q = np.vstack([samples, train[::7]])
    got = sharded_knn(q, ref, k=3, client=client, index=index, nlist=8, nprobe=2,
                      recall_sample=60, batch_rows=32)
    _, want, _ = naive_knn(q, train, 3)
    from memaudit.neighbors import _row_pairs, pair_recall, recall_rows

    sample = recall_rows(q.shape[0], 60, 0)
    assert got.index == index and got.recall_sample == 60
    assert got.recall == pair_recall(_row_pairs(got.indices[sample]), _row_pairs(want[sample]))
    assert 0.3 < got.recall <= 1.0
    # planted copies are found whatever the index
    assert got.indices[40:44, 0].tolist() == [3, 299, 699, 10]
    if index == "ivf":
        full = sharded_knn(q, ref, k=3, index="ivf", nlist=8, nprobe=8, recall_sample=60)
        assert full.recall == 1.0 and np.array_equal(full.indices, want)
    own = sharded_knn(ref, ref, k=2, exclude_self=True, index=index, nlist=8, nprobe=8,
                      recall_sample=50)
    assert not (own.indices == np.arange(len(train))[:, None]).any()


# -- subsequence search over sharded training series ------------------------------------------
def _same_search(a, b):
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), T=st.integers(16, 48), L=st.integers(3, 10), C=st.integers(1, 2),
       rows=st.integers(1, 7), batch=st.integers(1, 40), normalize=st.booleans(),
       replay=st.booleans(), seed=st.integers(0, 2**16))
def test_sharded_subsequence_search_equals_one_search(n, T, L, C, rows, batch, normalize, replay,
                                                      seed):
    """Shards of whole series, merged, give the one-process search bit for bit: distances,
    series, offsets, ties (repeated series in other shards, flat stretches, integer values)."""
    from memaudit.distributed import ShardedSeries, sharded_subsequence_search
    from memaudit.probes.subsequence import subsequence_search

    rng = np.random.default_rng(seed)
    train = rng.integers(0, 3, size=(n, T, C)).astype(float)
    train[n - 1] = train[0]  # the same series in the first and the last shard: exact ties
    train[min(1, n - 1), 2 : 2 + L + 2] = 0.0  # a flat stretch
    if replay:  # stride-1 runs of one training series (the diagonal engine)
        q = np.stack([train[n // 2, o : o + L] for o in range(T - L + 1)])
    else:
        q = rng.integers(0, 3, size=(25, L, C)).astype(float)
    want = subsequence_search(q, list(train), L, normalize=normalize)
    for parts in (ShardedSeries(ShardedSet.from_array(train, shard_rows=rows)),
                  ShardedSeries(list(train), shard_rows=rows)):
        _same_search(want, sharded_subsequence_search(q, parts, L, normalize=normalize,
                                                      batch_rows=batch))


def test_merge_compares_squared_distances():
    """Two squared distances that round to one square root: the smaller wins, whatever the
    series order (merging square roots would give the tie to the lower series)."""
    from memaudit.probes._subsequence_search import merge_subsequence_results

    a = 2.0
    b = np.nextafter(a, 3.0)
    while np.sqrt(b) != np.sqrt(a):
        a = np.nextafter(a, 3.0)
        b = np.nextafter(a, 3.0)
    assert b > a and np.sqrt(a) == np.sqrt(b)

    def part(d1, s1, d2, s2):
        return {"d1": np.array([d1]), "series1": np.array([s1]), "offset1": np.array([4]),
                "d2": np.array([d2]), "series2": np.array([s2]), "offset2": np.array([9]),
                "evaluable": np.array([True])}

    got = merge_subsequence_results([part(b, 0, 9.0, 0), part(a, 1, 5.0, 1)], squared=True)
    assert got["series1"].tolist() == [1] and got["d1"].tolist() == [a]
    assert got["series2"].tolist() == [0] and got["d2"].tolist() == [b]  # the other part's first
    got = merge_subsequence_results([part(a, 0, 3.0, 0), part(a, 1, 1.0, 1)], squared=True)
    assert got["series1"].tolist() == [0] and got["series2"].tolist() == [1]  # a tie: lower series


@pytest.fixture(scope="module")
def series_stores(tmp_path_factory):
    """Training series (n, 96, 2) with planted replays in the generated series, stored as one
    .npy, a folder of .npy shards and a zarr array; generated and held-out series beside them."""
    pytest.importorskip("zarr")
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(5)
    train = np.cumsum(rng.normal(size=(30, 96, 2)), axis=1)
    train[21] = train[4]  # a duplicated training series, in another shard
    samples = np.cumsum(rng.normal(size=(8, 80, 2)), axis=1)
    samples[2, 10:42] = train[13, 50:82]  # replays of training stretches
    samples[6, 40:72] = train[4, 7:39] * 3.0 + 1.0  # same shape (z-normalised), series 4 and 21
    holdout = np.cumsum(rng.normal(size=(8, 80, 2)), axis=1)
    _write_stores(root, train, samples, holdout, [9, 20], "ts-", 8)
    return root, train, samples


def _subsequences(root, train, **kw):
    from memaudit.runners import SubsequencesConfig, run_subsequences

    return run_subsequences(SubsequencesConfig(
        train=str(root / train), samples=str(root / "samples.npy"),
        holdout=str(root / "holdout.npy"), window=32, stride=2, progress=False, **kw))


@pytest.mark.parametrize("store", ["shards", "train.zarr"])
def test_subsequences_on_cluster_equal_in_process(series_stores, client, store):
    root, train, _ = series_stores
    whole = _subsequences(root, "train.npy")
    local = _subsequences(root, store)
    on_cluster = _subsequences(root, store, cluster=client, shard_rows=7)
    a, b, c = (json.loads(json.dumps(r.result.to_dict())) for r in (whole, local, on_cluster))
    assert a == b == c
    res = on_cluster.result
    assert np.array_equal(res.ratio, whole.result.ratio, equal_nan=True)
    hits = {(int(s), int(o)): m for s, o, m, f in zip(res.query_series, res.query_offset,
                                                      res.match_id, res.memorized) if f}
    assert hits[(2, 10)] == "13@50"
    assert hits[(6, 40)] == "4@7"  # the tie between series 4 and 21 goes to the lower one
    rec = on_cluster.resolved_config()["cluster"]
    # a folder: one shard per file; zarr: ranges of shard_rows = 7 of the 30 series
    assert rec["workers"] == 2 and rec["shards"]["train"]["n_shards"] == (3 if store == "shards"
                                                                          else 5)
    assert whole.cluster is None and whole.resolved_config()["cluster"] is None


def test_subsequences_cli_on_cluster_writes_the_same_report(series_stores, client, tmp_path):
    root = series_stores[0]
    args = ["subsequences", "--train", str(root / "shards"), "--samples",
            str(root / "samples.npy"), "--window", "32", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--cluster", client.scheduler.address]) == 0
    a, b = (json.loads((tmp_path / x / "subsequences.json").read_text()) for x in "ab")
    assert a["sections"] == b["sections"]
    assert b["config"]["cluster"]["workers"] == 2
    html_b = (tmp_path / "b" / "subsequences.html").read_text()
    assert "13@50" in html_b  # drawn from its shard
    assert "Searched on a Dask cluster" in html_b and "2 workers" in html_b
    assert "in this process, shard by shard" in (tmp_path / "a" / "subsequences.html").read_text()


def test_nan_in_a_series_shard_is_refused_naming_shard_and_series(tmp_path, series_stores,
                                                                  client):
    from memaudit.distributed import ShardedSeries, ShardedSubsequenceProbe

    root, train, samples = series_stores
    bad = train[10:].copy()
    bad[3, 40, 1] = np.nan
    np.save(tmp_path / "p0.npy", train[:10])
    np.save(tmp_path / "p1.npy", bad)
    probe = ShardedSubsequenceProbe(32, client=client).fit(
        ShardedSeries(ShardedSet.from_npy_folder(tmp_path, "train")))
    with pytest.raises(ValueError, match=r"shard p1.npy holds NaN in series 3 \(series 13 of"):
        probe.score(samples)


# -- failures (last: the cluster has one worker less while its nanny restarts it) -------------
def test_killed_worker_mid_search_leaves_the_result_unchanged(client):
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(3000, 16)).astype(np.float32)
    q = rng.normal(size=(240, 16)).astype(np.float32)
    want = knn(q, ref, k=4)
    first = threading.Event()
    killed = []

    class Watched(ShardedIndex):
        def _results(self, submitted):
            yield from super()._results(submitted)
            first.set()

    before = client.run(os.getpid)

    def kill():
        first.wait(60)
        victim = sorted(before.values())[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(time.monotonic())

    t = threading.Thread(target=kill)
    t.start()
    got = Watched(client=client, batch_rows=8).fit(ShardedSet.from_array(ref, shard_rows=500)
                                                   ).search(q, k=4)
    done = time.monotonic()
    t.join()
    assert killed and killed[0] < done  # the worker died while batches were still running
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.distances, want.distances)
    assert sorted(before.values())[0] not in client.run(os.getpid).values()  # it is gone
