"""Property-based tests of the subsequence search (hypothesis): equal to the float64 double loop on
drawn inputs (walks with a drawn baseline, plateaus, duplicated stretches), invariant to a common
shift, to the order of the training series and to the block size."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memaudit.probes.subsequence import subsequence_search
from naive import naive_subsequence

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    """Training series and query windows: random walks at a drawn baseline, with plateaus at
    dyadic levels (exact ties) and stretches copied within the training set and into queries."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    L = draw(st.integers(2, 12))
    C = draw(st.integers(1, 2))
    base = draw(st.sampled_from([0.0, 1e3, 1e6, -3e5]))
    lengths = draw(st.lists(st.integers(L, 4 * L + 20), min_size=1, max_size=3))
    if len(lengths) == 1:
        lengths[0] = max(lengths[0], 2 * L + 2 * L + 2)  # room for a second stretch
    train = [np.cumsum(rng.standard_normal((n, C)), axis=0) + base for n in lengths]
    for s in train:  # plateaus
        if draw(st.booleans()) and s.shape[0] > L + 4:
            a = int(rng.integers(0, s.shape[0] - L))
            s[a : a + L + int(rng.integers(0, 4))] = base + 0.5 * int(rng.integers(-4, 5))
    if draw(st.booleans()):  # a stretch that occurs twice
        i, j = int(rng.integers(len(train))), int(rng.integers(len(train)))
        a = int(rng.integers(train[i].shape[0] - L + 1))
        b = int(rng.integers(train[j].shape[0] - L + 1))
        if i != j or abs(a - b) >= L:
            train[j][b : b + L] = train[i][a : a + L]
    m = draw(st.integers(1, 5))
    q = np.cumsum(rng.standard_normal((m, L, C)), axis=1) + base
    for k in range(m):
        kind = draw(st.sampled_from(["fresh", "copy", "flat"]))
        if kind == "copy":
            s = train[int(rng.integers(len(train)))]
            o = int(rng.integers(s.shape[0] - L + 1))
            q[k] = s[o : o + L]
        elif kind == "flat":
            q[k] = base + 0.25 * int(rng.integers(-8, 9))
    zone = draw(st.integers(0, L - 1))
    return q, train, L, zone


def _agrees(found, want, normalize):
    for i, (d1, s1, o1, d2, s2, o2) in enumerate(want):
        if normalize and not found["evaluable"][i]:
            assert np.isnan(found["d1"][i])  # a constant query window: not evaluable
            continue
        scale = 1e-9 * (1 + abs(d1))
        assert abs(found["d1"][i] - d1) <= scale + (1e-7 if normalize else 0)
        assert abs(found["d2"][i] - d2) <= 1e-9 * (1 + abs(d2)) + (1e-7 if normalize else 0)
        exact_tie = not normalize and found["d1"][i] == d1  # the same value: the same tie set
        if exact_tie or not np.isclose(d1, d2, rtol=1e-9, atol=1e-7):
            # ties go to the lowest (series, offset), as in the double loop
            assert (found["series1"][i], found["offset1"][i]) == (s1, o1)


@SETTINGS
@given(problems(), st.booleans())
def test_search_equals_the_float64_double_loop(problem, normalize):
    q, train, L, zone = problem
    found = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=zone)
    _agrees(found, naive_subsequence(q, train, L, normalize, zone), normalize)


@SETTINGS
@given(problems(), st.booleans(), st.sampled_from([1e3, -1e6, 0.5]))
def test_a_common_shift_changes_nothing(problem, normalize, shift):
    q, train, L, zone = problem
    a = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=zone)
    b = subsequence_search(q + shift, [s + shift for s in train], L, normalize=normalize,
                           exclusion_zone=zone)
    np.testing.assert_array_equal(a["evaluable"], b["evaluable"])
    ok = a["evaluable"]
    np.testing.assert_allclose(b["d1"][ok], a["d1"][ok], rtol=1e-6, atol=1e-6)
    # the same stretch wherever the nearest is clear of the second (always for exact copies)
    clear = ok & ((a["d1"] == 0) | (a["d2"] - a["d1"] > 1e-6 * (1 + a["d1"])))
    np.testing.assert_array_equal(b["series1"][clear], a["series1"][clear])
    np.testing.assert_array_equal(b["offset1"][clear], a["offset1"][clear])


@SETTINGS
@given(problems(), st.booleans(), st.randoms(use_true_random=False), st.integers(1, 64))
def test_training_order_and_block_size_change_nothing(problem, normalize, rnd, block):
    q, train, L, zone = problem
    a = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=zone)
    # blocks of a few windows: every series cut into pieces, the second-pass path
    b = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=zone,
                           block_elements=block)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    perm = list(range(len(train)))
    rnd.shuffle(perm)
    c = subsequence_search(q, [train[p] for p in perm], L, normalize=normalize, exclusion_zone=zone)
    np.testing.assert_array_equal(c["d1"], a["d1"])
    np.testing.assert_array_equal(c["d2"], a["d2"])
    unique = a["evaluable"] & (a["d1"] < a["d2"])
    back = np.array(perm)[np.maximum(c["series1"], 0)]
    np.testing.assert_array_equal(back[unique], a["series1"][unique])
    np.testing.assert_array_equal(c["offset1"][unique], a["offset1"][unique])
