import os
import re

import numpy as np
import pytest

import memaudit
from memaudit.neighbors import BACKENDS, NeighborIndex, knn
from naive import assert_neighbors_match, naive_knn, naive_knn_scaled, naive_recall

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
    # the bar reaches its end: "100%" from tqdm, "100.0%" from the fallback writer without it
    assert "knn (faiss)" in captured.err and re.search(r"\b100(\.0)?%", captured.err)


def test_naive_reference_itself():
    # the brute-force reference agrees with a closed form: points on a line
    ref = np.arange(10, dtype=float)[:, None]
    d, i, _ = naive_knn(np.array([[3.2]]), ref, 3)
    np.testing.assert_array_equal(i, [[3, 4, 2]])
    np.testing.assert_allclose(d, [[0.2, 0.8, 1.2]])


def _random_memmap(path, n, d=1024):
    """A float32 .npy of n x d standard normals, written in 4096-row blocks (never whole in RAM)."""
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 4096):
        x[s:s + 4096] = np.random.default_rng(s).standard_normal((min(4096, n - s), d),
                                                                 dtype=np.float32)
    x.flush()
    return path


def _peak_growth(path, setup, work):
    """Bytes by which a fresh process's peak resident memory grows while it runs ``work`` (lines
    of Python that see ``mm``, ``path`` memory-mapped, and ``first``, its first 50 rows in RAM),
    after ``setup`` (the imports, not measured); the file was written by this process."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        {setup}
        mm = np.load({str(path)!r}, mmap_mode="r")
        first = np.asarray(mm[:50]) + 0.0
        before = hwm()
    """) + textwrap.dedent(work) + "\nprint(hwm() - before)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memmap_search_keeps_resident_memory_bounded(tmp_path):
    # a 256 MiB reference streamed in 16 MiB blocks: the process's peak resident memory grows by
    # far less than the file (its pages are released after each block)
    path = _random_memmap(tmp_path / "ref.npy", 65536)
    growth = _peak_growth(path, "from memaudit.neighbors import knn", """
        nb = knn(first, mm, 2, block_bytes=16 << 20, progress=False)
        assert (nb.indices[:, 0] == np.arange(50)).all()
    """)
    assert growth < 96 << 20, f"peak resident memory grew by {growth / 2**20:.0f} MiB"


# -- exact numerics (issue 12) ------------------------------------------------------------------
def test_issue_12_reproduction_common_offset():
    # 50 noisy copies of training items, all shifted by +1000: every backend finds all 50
    r = np.random.default_rng(0)
    t = r.random((1000, 100))
    s = t[:50] + 0.01 * r.standard_normal((50, 100))
    got = [int(memaudit.nn_ratio(s + 1000, t + 1000, backend=b, carlini_alpha=None).memorized.sum())
           for b in BACKENDS]
    assert got == [50, 50, 50]


_BASE = np.random.default_rng(7).random((90, 12))
_QUERY = np.vstack([_BASE[:8] + 0.01 * np.random.default_rng(8).standard_normal((8, 12)),
                    np.random.default_rng(9).random((12, 12))])
_CASES = {
    "shift +1000": lambda x: x + 1000,
    "shift +1e6": lambda x: x + 1e6,
    "shift +1e6 float32": lambda x: (x + 1e6).astype(np.float32),
    "scale 1e-3": lambda x: x * 1e-3,
    "scale 1e3": lambda x: x * 1e3,
    "1e30 float32": lambda x: (x * 1e30).astype(np.float32),
    "1e30 float64": lambda x: x * 1e30,
    "1e38 float32": lambda x: (x * 3e38).astype(np.float32),
    "1e300 float64": lambda x: x * 1e300,
    "1e-30 float32": lambda x: (x * 1e-30).astype(np.float32),
    "1e-30 float64": lambda x: x * 1e-30,
    "1e-300 float64": lambda x: x * 1e-300,
}
_WANT = {}


def _want(case, metric, exclude_self):
    key = (case, metric, exclude_self)
    if key not in _WANT:
        ref = _CASES[case](_BASE)
        q = ref if exclude_self else _CASES[case](_QUERY)
        _WANT[key] = naive_knn_scaled(q, ref, 3, metric, exclude_self=exclude_self)[:2]
    return _WANT[key]


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_every_backend_is_identical_to_the_float64_brute_force(tmp_path, case, metric):
    # indices and float64 distances bit for bit, ties in (distance, index) order, for in-memory
    # and memory-mapped references, with and without exclude_self
    ref = _CASES[case](_BASE)
    np.save(tmp_path / "ref.npy", ref)
    mm = np.load(tmp_path / "ref.npy", mmap_mode="r")
    for exclude_self in (False, True):
        want_d, want_i = _want(case, metric, exclude_self)
        q = ref if exclude_self else _CASES[case](_QUERY)
        for backend in BACKENDS:
            for reference in (ref, mm):
                nb = knn(q, reference, 3, backend=backend, metric=metric, exclude_self=exclude_self)
                np.testing.assert_array_equal(nb.indices, want_i)
                np.testing.assert_array_equal(nb.distances, want_d)


@pytest.mark.parametrize("backend", BACKENDS)
def test_planted_copies_survive_huge_and_tiny_magnitudes(backend):
    # the issue: near 1e38 (float32) every copy was lost; 1e300 (float64) was called "Inf";
    # 1e-30 underflowed. The same 10 noisy copies are flagged at every magnitude.
    r = np.random.default_rng(3)
    train = r.random((200, 30))
    samples = np.vstack([train[:10] + 1e-3 * r.standard_normal((10, 30)), r.random((20, 30))])
    want = np.arange(30) < 10
    for scale, dtype in ((3e37, np.float32), (1e300, np.float64), (1e-30, np.float32),
                         (1e-30, np.float64), (1e-300, np.float64)):
        res = memaudit.nn_ratio((samples * scale).astype(dtype), (train * scale).astype(dtype),
                                backend=backend, carlini_alpha=None)
        np.testing.assert_array_equal(res.memorized, want)
        np.testing.assert_array_equal(res.nn_index[:10], np.arange(10))


def test_magnitudes_beyond_float64_distances_are_refused():
    ref = np.full((5, 100), 1e307)
    ref[0] = -1e307  # distances up to 2e308 * 10: beyond float64
    with pytest.raises(ValueError, match="magnitude 1e\\+307.*power of two"):
        knn(ref[:2], ref, 1)
    with pytest.raises(ValueError, match="Inf"):
        knn(ref[:2], np.full((5, 100), np.inf), 1)
    # cosine distances do not depend on the magnitude: accepted
    assert knn(ref[:2], ref, 1, metric="cosine").distances.max() <= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_beyond_the_candidate_list_go_to_the_exact_pass(backend):
    # 40 copies of one item tie at the k-th distance; only a few fit in the float32 candidate
    # list, and the float32 scores cannot order the rest: the certificate fails and the float64
    # pass returns the copies with the lowest indices, as the brute force does
    r = np.random.default_rng(4)
    ref = r.normal(size=(300, 6))
    ref[100:140] = ref[5]
    q = ref[5:6] + 0.5
    nb = knn(q, ref, 4, backend=backend, margin=0)
    want_d, want_i, _ = naive_knn_scaled(q, ref, 4)
    np.testing.assert_array_equal(nb.indices, want_i)
    np.testing.assert_array_equal(nb.distances, want_d)
    assert nb.indices[0].tolist() == [5, 100, 101, 102] and nb.exact_fallback == 1
    # random data: the certificate covers every query, no float64 pass
    assert knn(r.normal(size=(50, 6)), ref[:100], 3, backend=backend).exact_fallback == 0


def test_reduced_precision_torch_matmul_stays_exact():
    # with TF32 / bfloat16 GEMMs allowed the certificate's bound widens; the answer does not change
    r = np.random.default_rng(5)
    ref, q = r.normal(size=(400, 64)) + 10, r.normal(size=(30, 64)) + 10
    want_d, want_i, _ = naive_knn_scaled(q, ref, 3)
    before = torch.get_float32_matmul_precision()
    try:
        for precision in ("high", "medium"):
            torch.set_float32_matmul_precision(precision)
            nb = knn(q, ref, 3, backend="torch")
            np.testing.assert_array_equal(nb.indices, want_i)
            np.testing.assert_array_equal(nb.distances, want_d)
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_magnitudes_have_a_cosine_distance(dtype):
    # 1e-30 in float32: the squares underflow in float32; the norms are taken in float64
    r = np.random.default_rng(6)
    ref = (r.normal(size=(50, 8)) * 1e-30).astype(dtype)
    nb = knn(ref, ref, 2, metric="cosine", exclude_self=True)
    want_d, want_i, _ = naive_knn_scaled(ref, ref, 2, "cosine", exclude_self=True)
    np.testing.assert_array_equal(nb.indices, want_i)
    np.testing.assert_array_equal(nb.distances, want_d)


# -- memory-mapped queries and references ---------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_memmap_queries_stream_in_blocks_and_match(tmp_path, rng, backend):
    ref = rng.normal(size=(120, 10)).astype(np.float32) + 50
    q = rng.normal(size=(230, 10)).astype(np.float32) + 50
    np.save(tmp_path / "q.npy", q)
    mq = np.load(tmp_path / "q.npy", mmap_mode="r")
    want = knn(q, ref, 3, backend=backend)
    got = knn(mq, ref, 3, backend=backend, block_bytes=17 * 10 * 4)  # 17 rows per block
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.distances, want.distances)
    # both sides memory-mapped, self-query
    np.save(tmp_path / "r.npy", q)
    mr = np.load(tmp_path / "r.npy", mmap_mode="r")
    got = knn(mq, mr, 2, backend=backend, exclude_self=True, block_bytes=23 * 10 * 4)
    np.testing.assert_array_equal(got.indices, knn(q, q, 2, exclude_self=True).indices)


def test_memmap_queries_with_nan_are_refused_before_the_search(tmp_path, rng):
    q = rng.normal(size=(100, 4)).astype(np.float32)
    q[61, 1] = np.nan
    np.save(tmp_path / "q.npy", q)
    mq = np.load(tmp_path / "q.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="candidates contains 1 NaN.*item 61"):
        NeighborIndex(block_bytes=16 * 4 * 4).fit(q[:10] * 0 + 1).search(mq, 1, name="candidates")


def test_memmap_views_and_layouts_are_read_correctly(tmp_path, rng):
    # rows are read from the file (not faulted in through the map): slices, N-D items, Fortran
    # order and a big-endian file must give the same rows as the array in memory
    x = rng.normal(size=(80, 3, 2, 2))
    q = rng.normal(size=(9, 3, 2, 2))
    for arr in (x, np.asfortranarray(x.reshape(80, 12)), x.astype(">f8")):
        np.save(tmp_path / "x.npy", arr)
        mm = np.load(tmp_path / "x.npy", mmap_mode="r")
        for ref in (mm, mm[13:]):
            nb = knn(q.reshape(9, -1), ref, 3)
            want_d, want_i, _ = naive_knn_scaled(q, np.asarray(ref, dtype=np.float64), 3)
            np.testing.assert_array_equal(nb.indices, want_i)
            np.testing.assert_array_equal(nb.distances, want_d)


# -- recall of approximate indexes ---------------------------------------------------------------
@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_recall_with_exclude_self_compares_like_with_like(rng, index):
    # the issue: with exclude_self the self match counted as a hit (0.592 reported, 0.387 true).
    # The reported recall equals the brute force's recall of the returned lists on the sample.
    ref = rng.normal(size=(800, 24)).astype(np.float32)
    nb = knn(ref, ref, 5, exclude_self=True, index=index, nlist=8, nprobe=1, hnsw_m=4,
             ef_search=8, recall_sample=60, seed=11)
    sample = np.sort(np.random.default_rng(11).choice(800, size=60, replace=False))
    truth = naive_recall(nb.indices[sample], ref[sample], ref, 5, own=sample)
    assert nb.recall == pytest.approx(truth, abs=1e-12)
    assert not (nb.indices == np.arange(800)[:, None]).any()
    # counting the self match as a hit would add about one hit in k + 1 to each query
    assert nb.recall < 0.8


def test_recall_sample_larger_than_the_queries_uses_them_all(rng):
    ref = rng.normal(size=(500, 8)).astype(np.float32)
    nb = knn(ref[:40], ref, 3, index="ivf", nlist=8, nprobe=1, recall_sample=10_000)
    assert nb.recall_sample == 40
    assert nb.recall == pytest.approx(naive_recall(nb.indices, ref[:40], ref, 3), abs=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_recall_sample_must_be_a_positive_integer(rng, bad):
    ref = rng.normal(size=(100, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="recall_sample must be an integer of at least 1"):
        knn(ref, ref, 2, index="hnsw", recall_sample=bad)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError)])
def test_margin_is_checked(rng, bad, error):
    with pytest.raises(error, match="margin"):
        knn(np.zeros((1, 2)), np.eye(2), 1, margin=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_certificate_catches_what_float32_cannot_separate(backend):
    # one coordinate at +-1e6 (so nothing to centre), neighbours 1e-5 apart in the others: the
    # float32 expansion cannot order them (numpy/torch get every row wrong without refinement),
    # the certificate refuses every query, and the float64 pass returns the brute force's answer
    r = np.random.default_rng(0)
    ref = r.random((400, 8)) * 1e-3
    ref[:, 0] = r.choice([-1e6, 1e6], 400)
    q = ref[:20] + r.standard_normal((20, 8)) * 1e-5
    q[:, 0] = ref[:20, 0]
    want_d, want_i, _ = naive_knn_scaled(q, ref, 3)
    nb = knn(q, ref, 3, backend=backend)
    np.testing.assert_array_equal(nb.indices, want_i)
    np.testing.assert_array_equal(nb.distances, want_d)
    assert nb.exact_fallback == 20
    if backend != "faiss":
        assert not (knn(q, ref, 3, backend=backend, refine=False).indices == want_i).all()


def test_distance_attack_streams_memory_mapped_candidates(tmp_path, rng):
    from memaudit.probes.sample_attacks import distance_attack

    cand = rng.normal(size=(300, 6)).astype(np.float32) + 100
    gen = np.vstack([cand[:20] + 1e-3, rng.normal(size=(40, 6)).astype(np.float32) + 100])
    np.save(tmp_path / "c.npy", cand)
    mc = np.load(tmp_path / "c.npy", mmap_mode="r")
    want = -naive_knn_scaled(cand, gen, 1)[0][:, 0]
    np.testing.assert_array_equal(distance_attack(mc, gen, block_bytes=37 * 6 * 4), want)
    cand[123, 4] = np.inf
    np.save(tmp_path / "c.npy", cand)
    with pytest.raises(ValueError, match="candidates contains 0 NaN and 1 Inf.*item 123"):
        distance_attack(np.load(tmp_path / "c.npy", mmap_mode="r"), gen)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memmap_queries_keep_resident_memory_bounded(tmp_path):
    # a 128 MiB memory-mapped candidate set against 50 samples, 16 MiB blocks: the process grows
    # by far less than the file (it used to be read whole)
    path = _random_memmap(tmp_path / "cand.npy", 32768)
    growth = _peak_growth(path, "from memaudit.probes.sample_attacks import distance_attack", """
        score = distance_attack(mm, first, block_bytes=16 << 20)
        assert (score[:50] == 0).all() and (score[50:] < 0).all()
    """)
    assert growth < 96 << 20, f"peak resident memory grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize("n_queries", [5, 40])
def test_faiss_tile_is_ours_during_the_search_and_the_users_after(rng, n_queries):
    """Our FAISS database tile and BLAS threshold (the GEMM from FAISS_BLAS_ROWS queries, the SIMD
    scan below) during the search, the user's own settings after it, the exact answer either way."""
    faiss = pytest.importorskip("faiss")
    from memaudit.neighbors import FAISS_BLAS_ROWS, FAISS_DATABASE_TILE

    ref, q = rng.random((3000, 16)), rng.random((n_queries, 16))
    before = (faiss.cvar.distance_compute_blas_database_bs,
              faiss.cvar.distance_compute_blas_threshold)
    seen = []
    real_knn = faiss.knn

    def spy(*args, **kwargs):
        seen.append((faiss.cvar.distance_compute_blas_database_bs,
                     faiss.cvar.distance_compute_blas_threshold))
        return real_knn(*args, **kwargs)

    faiss.cvar.distance_compute_blas_database_bs = 777  # a user's own settings
    faiss.cvar.distance_compute_blas_threshold = 55
    try:
        faiss.knn = spy
        got = knn(q, ref, k=2, backend="faiss")
    finally:
        faiss.knn = real_knn
        user = (faiss.cvar.distance_compute_blas_database_bs,
                faiss.cvar.distance_compute_blas_threshold)
        (faiss.cvar.distance_compute_blas_database_bs,
         faiss.cvar.distance_compute_blas_threshold) = before
    threshold = 0 if n_queries >= FAISS_BLAS_ROWS else 2**31 - 1
    assert seen and set(seen) == {(FAISS_DATABASE_TILE, threshold)}
    assert user == (777, 55)  # restored
    want = naive_knn(q, ref, 2)
    np.testing.assert_array_equal(got.indices, want[1])
