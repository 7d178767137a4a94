import numpy as np
import pytest

from memaudit.neighbors import BACKENDS, NeighborIndex, knn
from naive import assert_neighbors_match, naive_knn

torch = pytest.importorskip("torch")  # the torch backend is part of the tested set


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_random_inputs_match_brute_force(rng, backend, metric, k):
    ref = rng.normal(size=(120, 9))
    q = rng.normal(size=(37, 9))
    nb = knn(q, ref, k, backend=backend, metric=metric)
    assert nb.distances.shape == nb.indices.shape == (37, k)
    assert nb.indices.dtype == np.int64
    _, want_i = assert_neighbors_match(nb.distances, nb.indices, q, ref, k, metric)
    np.testing.assert_array_equal(nb.indices, want_i)  # no ties in continuous data


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_on_an_integer_lattice(backend):
    # 5x5 lattice: many reference points are exactly equidistant from each query
    grid = np.array([(i, j) for i in range(5) for j in range(5)], dtype=np.float32)
    q = np.array([[2, 2], [0.5, 0.5], [2, 0.5], [4, 4]], dtype=np.float32)
    for k in (1, 3, 4, 6):
        nb = knn(q, grid, k, backend=backend)
        assert_neighbors_match(nb.distances, nb.indices, q, grid, k)
    # the refine step orders ties by index: the query at (0.5, 0.5) has 4 tied nearest points
    nb = knn(q, grid, 4, backend=backend)
    np.testing.assert_array_equal(nb.indices[1], [0, 1, 5, 6])
    np.testing.assert_allclose(nb.distances[1], np.sqrt(0.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exclude_self(rng, backend, metric):
    ref = rng.normal(size=(60, 5))
    nb = knn(ref, ref, 3, exclude_self=True, backend=backend, metric=metric)
    assert_neighbors_match(nb.distances, nb.indices, ref, ref, 3, metric, exclude_self=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_self_keeps_exact_duplicates(rng, backend):
    ref = rng.normal(size=(30, 4))
    ref[7] = ref[19]  # an exact duplicate pair
    nb = knn(ref, ref, 2, exclude_self=True, backend=backend)
    assert nb.indices[7, 0] == 19 and nb.distances[7, 0] == 0.0
    assert nb.indices[19, 0] == 7 and nb.distances[19, 0] == 0.0
    assert not (nb.indices == np.arange(30)[:, None]).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_equals_n_and_one_reference_item(rng, backend):
    ref = rng.normal(size=(8, 3))
    q = rng.normal(size=(5, 3))
    nb = knn(q, ref, 8, backend=backend)
    assert_neighbors_match(nb.distances, nb.indices, q, ref, 8)
    nb = knn(ref, ref, 7, exclude_self=True, backend=backend)
    assert_neighbors_match(nb.distances, nb.indices, ref, ref, 7, exclude_self=True)
    one = knn(q, ref[:1], 1, backend=backend)
    np.testing.assert_array_equal(one.indices, 0)
    np.testing.assert_allclose(one.distances[:, 0], np.linalg.norm(q - ref[0], axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_equals_unbatched(rng, backend):
    ref = rng.normal(size=(257, 16)).astype(np.float32)
    q = rng.normal(size=(45, 16)).astype(np.float32)
    whole = knn(q, ref, 4, backend=backend)
    # 7 reference rows per block and 3 query rows per tile: many blocks, ragged ends
    tiny = knn(q, ref, 4, backend=backend, block_bytes=7 * 16 * 4, tile_bytes=3 * 7 * 4)
    np.testing.assert_array_equal(whole.indices, tiny.indices)
    np.testing.assert_allclose(whole.distances, tiny.distances)


@pytest.mark.parametrize("backend", BACKENDS)
def test_memmap_reference_streams_and_matches(tmp_path, rng, backend):
    ref = rng.normal(size=(300, 12)).astype(np.float32)
    q = rng.normal(size=(20, 12)).astype(np.float32)
    np.save(tmp_path / "ref.npy", ref)
    mm = np.load(tmp_path / "ref.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    nb = knn(q, mm, 3, backend=backend, block_bytes=50 * 12 * 4)
    assert_neighbors_match(nb.distances, nb.indices, q, ref, 3)
    np.testing.assert_array_equal(nb.indices, knn(q, ref, 3, backend=backend).indices)


def test_memmap_with_nan_is_refused_with_its_position(tmp_path, rng):
    ref = rng.normal(size=(100, 4)).astype(np.float32)
    ref[73, 2] = np.nan
    np.save(tmp_path / "ref.npy", ref)
    mm = np.load(tmp_path / "ref.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="NaN.*item 73"):
        knn(ref[:3] * 0, mm, 2, block_bytes=16 * 4 * 4)


def test_dtypes_and_tensors(rng):
    ref = rng.integers(0, 255, size=(50, 6)).astype(np.uint8)
    q = rng.integers(0, 255, size=(7, 6)).astype(np.int32)
    nb = knn(q, ref, 2)
    assert_neighbors_match(nb.distances, nb.indices, q, ref, 2)
    tq = torch.from_numpy(q.astype(np.float32))
    np.testing.assert_array_equal(knn(tq, torch.from_numpy(ref.astype(np.float64)), 2).indices,
                                  nb.indices)


def test_images_are_flattened(rng):
    ref = rng.normal(size=(40, 3, 4, 4))
    q = rng.normal(size=(6, 3, 4, 4))
    nb = knn(q, ref, 2)
    assert_neighbors_match(nb.distances, nb.indices, q, ref, 2)


@pytest.mark.parametrize(
    "queries, reference, k, kwargs, error, match",
    [
        (np.zeros((2, 3)), np.zeros((0, 3)), 1, {}, ValueError, "reference is empty"),
        (np.zeros((0, 3)), np.zeros((4, 3)), 1, {}, ValueError, "queries is empty"),
        (np.zeros((2, 3)), np.zeros((4, 5)), 1, {}, ValueError, "3 features.*5"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 5, {}, ValueError, "larger than the 4"),
        (np.zeros((4, 3)), np.zeros((4, 3)), 4, {"exclude_self": True}, ValueError, "k \\+ 1"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 0, {}, ValueError, "k must be at least 1"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 1.5, {}, TypeError, "k must be an integer"),
        (np.zeros((2, 3)), np.full((4, 3), np.inf), 1, {}, ValueError, "Inf"),
        (np.array([[np.nan, 0, 0]]), np.zeros((4, 3)), 1, {}, ValueError, "queries contains 1 NaN"),
        (np.zeros((2, 3), complex), np.zeros((4, 3)), 1, {}, TypeError, "complex128"),
        (np.zeros((2, 3), bool), np.zeros((4, 3)), 1, {}, TypeError, "bool"),
        (np.array([["a", "b"]]), np.zeros((4, 2)), 1, {}, TypeError, "<U1"),
        (np.zeros(3), np.zeros((4, 3)), 1, {}, ValueError, "1-D array"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 1, {"metric": "cosine"}, ValueError, "zero norm"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 1, {"metric": "manhattan"}, ValueError, "metric"),
        (np.zeros((2, 3)), np.zeros((4, 3)), 1, {"backend": "annoy"}, ValueError, "backend"),
        (np.zeros((2, 3)), np.zeros((5, 3)), 1, {"exclude_self": True}, ValueError, "the reference set"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(queries, reference, k, kwargs, error, match):
    with pytest.raises(error, match=match):
        knn(queries, reference, k, **kwargs)


def test_search_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        NeighborIndex().search(np.zeros((1, 2)))


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_approximate_index_reports_measured_recall(rng, index, metric):
    centers = rng.normal(size=(20, 16)) * 5
    ref = (centers[rng.integers(0, 20, 3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    q = (centers[rng.integers(0, 20, 400)] + rng.normal(size=(400, 16))).astype(np.float32)
    nb = knn(q, ref, 5, index=index, metric=metric, recall_sample=150, nprobe=2, seed=3)
    assert nb.index == index and nb.recall_sample == 150
    # recomputed by hand on the same seeded sample: identical to the reported figure
    sample = np.sort(np.random.default_rng(3).choice(400, size=150, replace=False))
    exact = knn(q[sample], ref, 5, metric=metric).indices
    approx = NeighborIndex(metric, index=index, nprobe=2, seed=3, refine=False).fit(ref)
    got = approx.search(q[sample], 5).indices
    want = np.mean([len(np.intersect1d(a, b)) for a, b in zip(got, exact)]) / 5
    assert nb.recall == pytest.approx(want)
    assert 0.3 < nb.recall <= 1.0


def test_ivf_with_few_probes_has_recall_below_one(rng):
    ref = rng.normal(size=(4000, 32)).astype(np.float32)  # no cluster structure: IVF struggles
    nb = knn(ref[:300], ref, 10, index="ivf", nlist=64, nprobe=1, recall_sample=300)
    assert nb.recall < 0.9  # the report says so instead of pretending to be exact


def test_progress_bar_goes_to_stderr(rng, capsys):
    ref = rng.normal(size=(100, 4))
    knn(ref, ref, 2, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "knn (faiss)" in captured.err and "100.0%" in captured.err


def test_naive_reference_itself():
    # the brute-force reference agrees with a closed form: points on a line
    ref = np.arange(10, dtype=float)[:, None]
    d, i, _ = naive_knn(np.array([[3.2]]), ref, 3)
    np.testing.assert_array_equal(i, [[3, 4, 2]])
    np.testing.assert_allclose(d, [[0.2, 0.8, 1.2]])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memmap_search_keeps_resident_memory_bounded(tmp_path):
    # a 256 MiB reference streamed in 16 MiB blocks: the process's peak resident memory grows by
    # far less than the file (its pages are released after each block)
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "ref.npy"  # written here, read in a fresh process that measures itself
    ref = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(65536, 1024))
    for s in range(0, 65536, 4096):
        ref[s:s + 4096] = np.random.default_rng(s).standard_normal((4096, 1024), dtype=np.float32)
    ref.flush()
    del ref
    code = textwrap.dedent(f"""
        import numpy as np
        from memaudit.neighbors import knn
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        mm = np.load({str(path)!r}, mmap_mode="r")
        q = np.asarray(mm[:50]) + 0.0
        before = hwm()
        nb = knn(q, mm, 2, block_bytes=16 << 20, progress=False)
        assert (nb.indices[:, 0] == np.arange(50)).all()
        print(hwm() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth = int(out.stdout.strip())
    assert growth < 96 << 20, f"peak resident memory grew by {growth / 2**20:.0f} MiB"
