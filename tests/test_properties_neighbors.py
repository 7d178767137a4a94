"""Property-based tests of exact neighbour search (hypothesis): every backend equals the float64
brute force bit for bit, and the answer does not move under a common shift, a power-of-two scaling
or a permutation of the reference; the nn-ratio flags do not move under a shift or any positive
scaling. Data, sizes, magnitudes, offsets and duplicates are drawn, not seeded."""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memaudit
from memaudit.neighbors import BACKENDS, knn
from naive import naive_knn_scaled

pytest.importorskip("torch")

SETTINGS = settings(deadline=None, max_examples=int(os.environ.get("NB_EXAMPLES", 30)),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def point_sets(draw, max_n=24, max_q=6, max_d=7, nonzero=False):
    """(reference, queries) in float64: small integers (many exact ties) or float32-grid reals,
    with duplicated reference items and queries that copy reference items."""
    n = draw(st.integers(2, max_n))
    m = draw(st.integers(1, max_q))
    d = draw(st.integers(1, max_d))
    if draw(st.booleans()):
        elements = st.integers(-3, 3).map(float)
    else:
        elements = st.floats(-1, 1, width=32, allow_subnormal=False)
    ref = draw(hnp.arrays(np.float64, (n, d), elements=elements))
    q = draw(hnp.arrays(np.float64, (m, d), elements=elements))
    for a, b in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                              max_size=n)):
        ref[b] = ref[a]  # duplicated reference items
    for a, b in draw(st.lists(st.tuples(st.integers(0, m - 1), st.integers(0, n - 1)),
                              max_size=m)):
        q[a] = ref[b]  # queries that are copies of reference items
    if nonzero:  # cosine: zero vectors are refused, so none are drawn
        ref[~ref.any(axis=1), 0] = 1.0
        q[~q.any(axis=1), 0] = 1.0
    return ref, q


def _k(draw_k, n, exclude_self):
    return min(draw_k, n - int(exclude_self))


def _assert_brute_force(nb, q, ref, k, metric, exclude_self):
    want_d, want_i, _ = naive_knn_scaled(q, ref, k, metric, exclude_self=exclude_self)
    np.testing.assert_array_equal(nb.indices, want_i)
    np.testing.assert_array_equal(nb.distances, want_d)


@SETTINGS
@given(data=point_sets(), metric=st.sampled_from(["l2", "cosine"]),
       backend=st.sampled_from(BACKENDS), exclude_self=st.booleans(), k=st.integers(1, 5),
       margin=st.sampled_from([None, 0, 1]), exponent=st.integers(-1070, 1010),
       offset=st.integers(-(2**20), 2**20), float32=st.booleans())
def test_every_backend_equals_the_float64_brute_force(data, metric, backend, exclude_self, k,
                                                      margin, exponent, offset, float32):
    # any magnitude (2^-1070 .. 2^1010, float64; 2^-140 .. 2^120, float32), any offset, ties from
    # duplicates and integer grids, margin 0 (the float64 pass runs often)
    ref, q = data
    if metric == "cosine":
        ref[~ref.any(axis=1), 0] = 1.0
        q[~q.any(axis=1), 0] = 1.0
        offset = 0
    if float32:
        exponent = max(-140, min(exponent, 120))
    with np.errstate(over="ignore"):
        ref = np.ldexp(ref + offset, exponent)
        q = np.ldexp(q + offset, exponent)
    assume(np.isfinite(ref).all() and np.isfinite(q).all())
    if float32:
        assume(max(np.abs(ref).max(), np.abs(q).max()) < np.finfo(np.float32).max)
        ref, q = ref.astype(np.float32), q.astype(np.float32)
    if exclude_self:
        q = ref
    k = _k(k, ref.shape[0], exclude_self)
    top = max(float(np.abs(ref).max()), float(np.abs(q).max()))
    kwargs = dict(backend=backend, metric=metric, exclude_self=exclude_self, margin=margin)
    if metric == "l2" and top * 2 * math.sqrt(ref.shape[1]) >= 2.0**1023:
        with pytest.raises(ValueError, match="magnitude"):
            knn(q, ref, k, **kwargs)
        return
    if metric == "cosine" and not (ref.any(axis=1).all() and q.any(axis=1).all()):
        with pytest.raises(ValueError, match="zero norm"):  # a float32 cast underflowed to 0
            knn(q, ref, k, **kwargs)
        return
    nb = knn(q, ref, k, **kwargs)
    _assert_brute_force(nb, q, ref, k, metric, exclude_self)
    # (distance, index) order, as the brute force
    for dist, idx in zip(nb.distances, nb.indices):
        assert sorted(zip(dist.tolist(), idx.tolist())) == list(zip(dist.tolist(), idx.tolist()))


@SETTINGS
@given(data=point_sets(), backend=st.sampled_from(BACKENDS), k=st.integers(1, 4),
       exponent=st.integers(-60, 60), shift=st.integers(-(2**20), 2**20), float32=st.booleans())
def test_a_common_shift_changes_nothing(data, backend, k, exponent, shift, float32):
    # integer-grid data shifted by an integer offset stay exactly representable, so the shifted
    # problem is the same problem: same neighbours, bit-identical distances
    ref, q = data
    assume(np.all(ref == np.round(ref)) and np.all(q == np.round(q)))
    k = _k(k, ref.shape[0], False)
    dtype = np.float32 if float32 else np.float64
    base = knn(np.ldexp(q, exponent).astype(dtype), np.ldexp(ref, exponent).astype(dtype), k,
               backend=backend)
    moved = knn(np.ldexp(q + shift, exponent).astype(dtype),
                np.ldexp(ref + shift, exponent).astype(dtype), k, backend=backend)
    np.testing.assert_array_equal(moved.indices, base.indices)
    np.testing.assert_array_equal(moved.distances, base.distances)


@SETTINGS
@given(data=point_sets(nonzero=True), metric=st.sampled_from(["l2", "cosine"]),
       backend=st.sampled_from(BACKENDS), k=st.integers(1, 4), exponent=st.integers(-900, 900))
def test_a_power_of_two_scaling_only_scales_the_distances(data, metric, backend, k, exponent):
    ref, q = data
    k = _k(k, ref.shape[0], False)
    base = knn(q, ref, k, backend=backend, metric=metric)
    scaled = knn(np.ldexp(q, exponent), np.ldexp(ref, exponent), k, backend=backend, metric=metric)
    np.testing.assert_array_equal(scaled.indices, base.indices)
    want = np.ldexp(base.distances, exponent) if metric == "l2" else base.distances
    np.testing.assert_array_equal(scaled.distances, want)


@SETTINGS
@given(data=point_sets(nonzero=True), metric=st.sampled_from(["l2", "cosine"]),
       backend=st.sampled_from(BACKENDS), k=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_permuting_the_reference_permutes_the_indices(data, metric, backend, k, seed):
    ref, q = data
    k = _k(k, ref.shape[0], False)
    perm = np.random.default_rng(seed).permutation(ref.shape[0])  # the permutation is drawn too
    base = knn(q, ref, k, backend=backend, metric=metric)
    shuffled = knn(q, ref[perm], k, backend=backend, metric=metric)
    np.testing.assert_array_equal(shuffled.distances, base.distances)
    for dist, new, got, want in zip(base.distances, shuffled.indices, perm[shuffled.indices],
                                    base.indices):
        inner = dist < dist[-1]  # below the k-th distance no tie can swap items in or out
        assert set(got[inner].tolist()) == set(want[inner].tolist())
        # within a run of equal distances the items come in (new) index order
        assert sorted(zip(dist.tolist(), new.tolist())) == list(zip(dist.tolist(), new.tolist()))


@SETTINGS
@given(data=point_sets(max_n=40, nonzero=True), metric=st.sampled_from(["l2", "cosine"]),
       backend=st.sampled_from(BACKENDS), k=st.integers(1, 5), rows=st.integers(1, 9),
       tile=st.integers(1, 200), exclude_self=st.booleans())
def test_batched_equals_unbatched(data, metric, backend, k, rows, tile, exclude_self):
    ref, q = data
    q = ref if exclude_self else q
    k = _k(k, ref.shape[0], exclude_self)
    d = ref.shape[1]
    whole = knn(q, ref, k, backend=backend, metric=metric, exclude_self=exclude_self)
    tiny = knn(q, ref, k, backend=backend, metric=metric, exclude_self=exclude_self,
               block_bytes=rows * d * 8, tile_bytes=tile * 4)
    np.testing.assert_array_equal(tiny.indices, whole.indices)
    np.testing.assert_array_equal(tiny.distances, whole.distances)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40), d=st.integers(1, 8),
       n_copies=st.integers(0, 5), noise=st.sampled_from([0.0, 1e-4, 1e-2]),
       shift=st.floats(-1e6, 1e6), scale=st.floats(1e-6, 1e6),
       backend=st.sampled_from(BACKENDS))
def test_nn_ratio_flags_do_not_move_under_shift_or_positive_scaling(seed, n, d, n_copies, noise,
                                                                  shift, scale, backend):
    rng = np.random.default_rng(seed)
    train = rng.random((n, d))
    samples = np.vstack([train[rng.integers(0, n, n_copies)]
                         + noise * rng.standard_normal((n_copies, d)), rng.random((6, d))])
    base = memaudit.nn_ratio(samples, train, backend=backend, carlini_alpha=None)
    # a shift or a non-power-of-two scaling rounds the data: keep ratios clear of the threshold
    assume(np.all(np.abs(base.ratio - 1 / 3) > 1e-6))
    for t in (lambda x: x + shift, lambda x: x * scale):
        res = memaudit.nn_ratio(t(samples), t(train), backend=backend, carlini_alpha=None)
        np.testing.assert_array_equal(res.memorized, base.memorized)
        np.testing.assert_array_equal(res.nn_index[base.memorized], base.nn_index[base.memorized])
