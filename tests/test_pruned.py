"""The pruned exact search (memaudit._pruned) returns the flat search's neighbours, bit for bit."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memaudit import _pruned
from memaudit.neighbors import NeighborIndex, knn
from naive import naive_knn_scaled


def image_like(n, d=256, rank=12, noise=0.02, seed=0, dups=10):
    """Low-rank 'images' in [0, 1] plus noise, with exact duplicates (ties) planted."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, rank))
    basis = rng.standard_normal((rank, d)) / np.sqrt(rank)
    x = 0.5 + 0.15 * z @ basis + noise * rng.standard_normal((n, d))
    x = np.clip(x, 0, 1)
    src = rng.choice(n, size=dups, replace=False)
    x[rng.choice(n, size=dups, replace=False)] = x[src]
    return x


def _pair(n_ref=3000, n_q=300, d=256, seed=0):
    x = image_like(n_ref + n_q, d=d, seed=seed)
    ref, q = x[:n_ref], x[n_ref:].copy()
    q[:20] = ref[:20] + 1e-3 * np.random.default_rng(seed + 1).standard_normal((20, d))
    q[20:30] = ref[30:40]  # exact copies: distance 0
    return q, ref


_MAPS = {
    "float32": lambda x: x.astype(np.float32),
    "float64": lambda x: x,
    "uint8": lambda x: np.round(x * 255).astype(np.uint8),
    "int16 offset": lambda x: (np.round(x * 255) + 20000).astype(np.int16),
    "offset +1000 float32": lambda x: (x + 1000).astype(np.float32),
    "offset +1e6 float64": lambda x: x + 1e6,
    "scale 1e-30 float32": lambda x: (x * 1e-30).astype(np.float32),
    "scale 1e30 float64, offset": lambda x: (x + 5) * 1e30,
}


@pytest.mark.parametrize("case", list(_MAPS))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_pruned_equals_flat_and_the_brute_force(case, k):
    q, ref = _pair()
    q, ref = _MAPS[case](q), _MAPS[case](ref)
    flat = knn(q, ref, k, prune=False)
    got = knn(q, ref, k, prune=True)
    assert got.pruned > 0.9 * len(q), "the pruned path did not run"
    assert flat.pruned == 0
    np.testing.assert_array_equal(got.indices, flat.indices)
    np.testing.assert_array_equal(got.distances, flat.distances)
    want_d, want_i = naive_knn_scaled(q[:60], ref, k)[:2]
    np.testing.assert_array_equal(got.indices[:60], want_i)
    np.testing.assert_array_equal(got.distances[:60], want_d)


@pytest.mark.parametrize("k", [1, 3])
def test_exclude_self_with_duplicates(k):
    _, ref = _pair()
    ref = ref.astype(np.float32)
    flat = knn(ref, ref, k, exclude_self=True, prune=False)
    got = knn(ref, ref, k, exclude_self=True, prune=True)
    assert got.pruned > 0.9 * len(ref)
    np.testing.assert_array_equal(got.indices, flat.indices)
    np.testing.assert_array_equal(got.distances, flat.distances)
    assert not (got.indices == np.arange(len(ref))[:, None]).any()
    # planted duplicates: each finds its twin at distance 0
    assert (got.distances[:, 0] == 0).sum() >= 10


def test_gaussian_data_is_not_pruned_and_the_answer_is_unchanged():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((3000, 256)).astype(np.float32)
    q = rng.standard_normal((200, 256)).astype(np.float32)
    ix = NeighborIndex(prune=True).fit(ref)
    got = ix.search(q, 2)
    assert got.pruned == 0
    assert not next(iter(ix._pruners.values())).usable  # most energy off any 64 directions
    flat = knn(q, ref, 2, prune=False)
    np.testing.assert_array_equal(got.indices, flat.indices)
    np.testing.assert_array_equal(got.distances, flat.distances)


def test_the_automatic_choice():
    # small searches and many neighbours keep the flat search; a large one on image-like data
    # uses the pruned one
    assert not _pruned.worth_trying(100, 3000, 256, 2)
    assert not _pruned.worth_trying(2000, 100_000, 784, 50)
    assert _pruned.worth_trying(1000, 100_000, 784, 2)
    assert not _pruned.worth_trying(1000, 100_000, 128, 2)  # d < 4 r


def test_queries_far_from_the_data_go_to_the_flat_search():
    q, ref = _pair()
    q = q.astype(np.float32)
    q[:5] = 0.5  # a flat grey image: its bound cannot exclude most items? then the flat search
    q[5:10] = 40.0  # far away: every item is about equally far, nothing can be excluded
    ref = ref.astype(np.float32)
    got = knn(q, ref, 2, prune=True)
    flat = knn(q, ref, 2, prune=False)
    assert got.pruned < len(q)
    np.testing.assert_array_equal(got.indices, flat.indices)
    np.testing.assert_array_equal(got.distances, flat.distances)


def test_the_embedding_bound_is_below_every_distance():
    # the heart of the proof: |a(q) - a(x)| - eps_q - eps_x <= c |q - x| for every pair, on data
    # with a large offset (the residual norms then come from a cancelling difference)
    q, ref = _pair(n_ref=1500, n_q=200)
    for shift, direct in ((-0.5, False), (0.0, True), (300.0, True)):
        r32 = (ref + shift).astype(np.float32)
        q32 = (q + shift).astype(np.float32)
        pr = _pruned.Pruner(lambda a, b: r32[a:b], lambda rows: r32[rows], len(r32), 256, 0)
        assert pr.usable and pr.direct == direct
        ea, eps_q, norm_q = pr.embed(q32)
        eb, eps_r, norm_r = pr.embed(r32)
        assert (norm_q >= np.linalg.norm(q32.astype(np.float64), axis=1)).all()
        emb = np.sqrt(((ea[:, None, :].astype(np.float64) - eb[None, :, :]) ** 2).sum(-1))
        true = np.sqrt(((q32[:, None, :].astype(np.float64) - r32[None, :, :]) ** 2).sum(-1))
        low = (emb - eps_q[:, None] - eps_r[None, :]) / pr.c
        assert (low <= true * (1 + 1e-12)).all()
        # and it is a useful bound: most of the distance is kept
        assert np.median(low / np.maximum(true, 1e-12)) > 0.8


def test_thresholds_keep_every_item_within_the_radius():
    q, ref = _pair(n_ref=1500, n_q=200)
    r32, q32 = ref.astype(np.float32), q.astype(np.float32)
    pr = _pruned.Pruner(lambda a, b: r32[a:b], lambda rows: r32[rows], len(r32), 256, 0)
    a, eps_q, _ = pr.embed(q32)
    e = np.sqrt(((a[:, None, :].astype(np.float64) - pr.b2[None, :, : pr.r + 1]) ** 2).sum(-1))
    radius = np.quantile(e, 0.05, axis=1)
    t = pr.thresholds(a, radius)
    g = np.hstack([a, np.ones((len(a), 1), np.float32)]) @ pr.b2.T
    inside = e <= radius[:, None]
    assert inside.sum() > 0
    assert (g[inside] >= np.repeat(t[:, None], e.shape[1], axis=1)[inside]).all()
    pi, pj, over = pr.survivors(a, t, cap=len(r32))
    got = np.zeros_like(inside)
    got[pi, pj] = True
    assert not over.any()
    assert (got | ~inside).all()  # every item within the radius survives


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), k=st.integers(1, 6), shift=st.sampled_from([0.0, 7.5, 1e4]),
       dups=st.integers(0, 40), dtype=st.sampled_from([np.float32, np.float64]))
def test_property_pruned_equals_flat(seed, k, shift, dups, dtype):
    x = image_like(1300, d=128, rank=6, seed=seed, dups=max(dups, 1)) + shift
    ref, q = x[:1200].astype(dtype), x[1200:].astype(dtype)
    q[:dups // 4] = ref[: dups // 4]
    got = knn(q, ref, k, prune=True)
    flat = knn(q, ref, k, prune=False)
    np.testing.assert_array_equal(got.indices, flat.indices)
    np.testing.assert_array_equal(got.distances, flat.distances)


def test_the_callers_thread_settings_are_left_as_they_were():
    # the pruned search runs FAISS and BLAS on one thread each inside (threads of its own split
    # the work) and restores both afterwards
    import faiss
    from threadpoolctl import threadpool_info

    q, ref = _pair()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    try:
        got = knn(q.astype(np.float32), ref.astype(np.float32), 2, prune=True)
        assert got.pruned > 0
        assert faiss.omp_get_max_threads() == 3
        assert [(i["internal_api"], i["num_threads"]) for i in threadpool_info()] == blas
    finally:
        faiss.omp_set_num_threads(before)


def test_without_numba_the_numpy_path_gives_the_same_answer(monkeypatch):
    q, ref = _pair()
    q, ref = q.astype(np.float32), (ref + 3).astype(np.float64)  # a centred float64 map too
    want = knn(q, ref, 3, prune=False)
    monkeypatch.setattr(_pruned, "_kernels", lambda: None)
    got = knn(q, ref, 3, prune=True)
    assert got.pruned > 0.9 * len(q)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.distances, want.distances)


def test_faiss_runs_on_one_thread_in_every_worker_thread():
    """OpenMP's thread count belongs to the calling thread: the pruned search's worker threads set
    their own (a team of every core's threads each would oversubscribe the cores). Discriminates
    where the default OpenMP thread count is above one (OMP_NUM_THREADS unset on 2+ cores, as in CI)."""
    faiss = pytest.importorskip("faiss")
    users = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)  # a caller's own setting, above one
    try:
        with _pruned._faiss_threads(1):
            seen = _pruned._run(lambda i: faiss.omp_get_max_threads(), [(i,) for i in range(3)])
        assert seen == [1, 1, 1]
        assert faiss.omp_get_max_threads() == 3  # the caller's setting, restored
    finally:
        faiss.omp_set_num_threads(users)
