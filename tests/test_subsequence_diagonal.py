"""The stride-1 diagonal engine of the subsequence search (issue 18, item 4): the same answers as the
GEMM engine and as the float64 double loop, on random walks, planted replays, large baselines, flat
plateaus (exact ties), several channels, z-normalised and raw; the automatic choice; bounded memory.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memaudit.probes._subsequence_search import MIN_RUN, stride1_runs, subsequence_search
from naive import naive_subsequence
from test_properties_subsequence import problems

KEYS = ("d1", "series1", "offset1", "d2", "series2", "offset2", "evaluable")


def _windows(series, L):
    """Every window (stride 1) of one series (N, C): (N - L + 1, L, C)."""
    return np.lib.stride_tricks.sliding_window_view(series, L, axis=0).transpose(0, 2, 1).copy()


def _same(a, b):
    """Identical outputs: offsets exactly, distances to float64 precision (both are the float64
    distance of the same pair, so in practice bit for bit)."""
    for k in KEYS:
        if k.startswith("d"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-12, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _naive_equal(found, q, train, L, normalize, zone):
    for i, (d1, s1, o1, d2, s2, o2) in enumerate(naive_subsequence(q, train, L, normalize, zone)):
        if not found["evaluable"][i]:
            assert np.isnan(found["d1"][i])
            continue
        assert found["d1"][i] == pytest.approx(d1, rel=1e-9, abs=1e-7 if normalize else 1e-9)
        assert found["d2"][i] == pytest.approx(d2, rel=1e-9, abs=1e-7 if normalize else 1e-9)
        # exact ties are ties in float64 only for raw values (z-values carry each window's
        # rounding): there the lowest (series, offset) must be reported as well
        if (not normalize and d1 == d2) or not np.isclose(d1, d2, rtol=1e-9, atol=1e-7):
            assert (found["series1"][i], found["offset1"][i]) == (s1, o1)


def _both(q, train, L, **kw):
    g = subsequence_search(q, train, L, engine="gemm", **kw)
    d = subsequence_search(q, train, L, engine="diagonal", **kw)
    _same(d, g)
    return d


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("base", [0.0, 1e3, 1e6])
@pytest.mark.parametrize("channels", [1, 2])
def test_equals_gemm_and_double_loop_with_planted_replays(rng, normalize, base, channels):
    L, zone = 10, 3
    train = [np.cumsum(rng.standard_normal((n, channels)), axis=0) + base for n in (60, 45, 25)]
    gen = np.cumsum(rng.standard_normal((45, channels)), axis=0) + base
    gen[5 : 5 + L] = train[1][30 : 30 + L]                      # an exact replay
    gen[30 : 30 + L] = 0.5 * (train[0][40 : 40 + L] - base) + 3 * base  # a rescaled copy
    q = _windows(gen, L)
    found = _both(q, train, L, normalize=normalize, exclusion_zone=zone)
    _naive_equal(found, q, train, L, normalize, zone)
    assert (found["d1"][5], found["series1"][5], found["offset1"][5]) == (0.0, 1, 30)
    if normalize:
        assert (found["series1"][30], found["offset1"][30]) == (0, 40) and found["d1"][30] < 1e-6


@pytest.mark.parametrize("normalize", [True, False])
def test_flat_plateaus_ties_go_to_the_lowest_offset(rng, normalize):
    L, zone = 8, 7
    s0 = rng.standard_normal(90) + 1000
    s0[20:50], s0[60:80] = 1005.0, 1005.5
    s1 = rng.standard_normal(60) + 1000
    s1[10:40] = 1005.0
    train = [s0[:, None], s1[:, None]]
    gen = rng.standard_normal(56) + 1000
    gen[10:30] = 1005.0           # flat windows: ties on three plateaus (raw); not evaluable (z)
    gen[40:52] = s0[44:56]        # half on a plateau, replayed
    q = _windows(gen[:, None], L)
    found = _both(q, train, L, normalize=normalize, exclusion_zone=zone)
    _naive_equal(found, q, train, L, normalize, zone)
    if normalize:
        assert not found["evaluable"][10:23].any()
    else:
        flat = slice(10, 23)  # windows wholly on the generated plateau
        assert (found["d1"][flat] == 0).all() and (found["offset1"][flat] == 20).all()
        assert (found["series2"][flat] == 0).all() and (found["offset2"][flat] == 28).all()


@pytest.mark.parametrize("zone", [0, 5, 15])
def test_exclusion_zones_and_a_single_training_series(rng, zone):
    L = 16
    train = [np.sin(np.linspace(0, 10, 150))[:, None] + 0.05 * rng.standard_normal((150, 1))]
    gen = np.r_[rng.standard_normal(5), train[0][60:90, 0], rng.standard_normal(5)][:, None]
    q = _windows(gen, L)
    for normalize in (True, False):
        found = _both(q, train, L, normalize=normalize, exclusion_zone=zone)
        _naive_equal(found, q, train, L, normalize, zone)
        assert (np.abs(found["offset2"] - found["offset1"]) > zone).all()


def test_memory_cap_refines_in_several_rounds(rng):
    """block_elements bounds the candidates held before refinement; a tiny budget forces several
    refinement rounds (flat data: every pair a candidate) and gives the same answer."""
    L = 6
    train = [np.repeat(rng.integers(0, 3, 16).astype(float), 5)[:, None] for _ in range(2)]
    gen = np.repeat(rng.integers(0, 3, 8).astype(float), 5)[:, None]
    q = _windows(gen, L)
    for normalize in (True, False):
        whole = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=2)
        small = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=2,
                                   engine="diagonal", block_elements=64)
        gemm = subsequence_search(q, train, L, normalize=normalize, exclusion_zone=2, engine="gemm")
        _same(small, gemm)
        _same(whole, gemm)
        _naive_equal(small, q, train, L, normalize, 2)


def test_runs_and_the_automatic_choice(rng):
    L = 8
    gen = np.cumsum(rng.standard_normal((200, 1)), axis=0)
    w = _windows(gen, L)
    q = np.concatenate([w[:MIN_RUN + 5], w[100:103], w[150::8]])  # one long run, then short ones
    runs = stride1_runs(q)
    assert runs[0] == (0, MIN_RUN + 5) and runs[1] == (MIN_RUN + 5, MIN_RUN + 8)
    assert all(b - a == 1 for a, b in runs[2:])
    train = [np.cumsum(rng.standard_normal((150, 1)), axis=0) for _ in range(2)]
    auto = subsequence_search(q, train, L, exclusion_zone=3)
    _same(auto, subsequence_search(q, train, L, exclusion_zone=3, engine="gemm"))
    _naive_equal(auto, q, train, L, True, 3)
    # a shifted copy that differs in one value is not a run
    q2 = w[:10].copy()
    q2[4, 2, 0] += 1.0
    assert (0, 10) not in stride1_runs(q2)
    with pytest.raises(ValueError, match="engine must be"):
        subsequence_search(q, train, L, engine="fast")


def test_probe_at_stride_1_uses_it_and_flags_replays(rng):
    from memaudit.probes.subsequence import SubsequenceProbe

    train = np.cumsum(rng.standard_normal((4, 400)), axis=1)
    fake = np.cumsum(rng.standard_normal((2, 250)), axis=1)
    fake[0, 60:92] = train[2, 200:232]
    fake[1, 100:132] = 2 * train[0, 10:42] + 50
    res = SubsequenceProbe(32).fit(train).score(fake)
    flagged = {(int(s), int(o)): m for s, o, m in zip(res.query_series[res.memorized],
                                                      res.query_offset[res.memorized],
                                                      res.match_id[res.memorized])}
    assert flagged[(0, 60)] == "2@200" and flagged[(1, 100)] == "0@10"
    q = np.stack([fake[g, o : o + 32] for g, o in zip(res.query_series, res.query_offset)])[:, :, None]
    gemm = subsequence_search(q, [t[:, None] for t in train], 32, exclusion_zone=31, engine="gemm")
    np.testing.assert_array_equal(res.match_offset, gemm["offset1"])
    np.testing.assert_allclose(res.d2, gemm["d2"], rtol=1e-12, atol=1e-12)


@st.composite
def series_problems(draw):
    """A generated series read at stride 1 (a planted replay, a flat stretch) against drawn
    training series: walks at a drawn baseline with plateaus and duplicated stretches."""
    q, train, L, zone = draw(problems())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    C, base = train[0].shape[1], float(np.median(train[0]))
    n = draw(st.integers(L, 3 * L + 10))
    gen = np.cumsum(rng.standard_normal((n, C)), axis=0) + base
    s = train[int(rng.integers(len(train)))]
    if s.shape[0] >= L and n >= L:
        a, o = int(rng.integers(n - L + 1)), int(rng.integers(s.shape[0] - L + 1))
        gen[a : a + L] = s[o : o + L]
    if draw(st.booleans()):
        a = int(rng.integers(n))
        gen[a : a + L // 2 + 1] = np.round(base) + 0.5
    return _windows(gen, L), train, L, zone


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_problems(), st.booleans())
def test_property_stride1_series_equal_gemm_and_double_loop(problem, normalize):
    q, train, L, zone = problem
    found = _both(q, train, L, normalize=normalize, exclusion_zone=zone)
    _naive_equal(found, q, train, L, normalize, zone)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.booleans())
def test_property_isolated_windows_equal_gemm(problem, normalize):
    """Independent query windows (runs of one) through the diagonal kernel: its edge paths."""
    q, train, L, zone = problem
    _both(q, train, L, normalize=normalize, exclusion_zone=zone)


@pytest.mark.parametrize("normalize", [True, False])
def test_long_diagonals_recompute_and_stay_exact(rng, normalize):
    """Diagonals longer than the recompute period (32 L steps): the recurrence runs for whole
    periods at +1e6 and the answers still equal the GEMM engine's (and, on a sample of queries,
    the double loop's)."""
    L = 4  # period 128 steps; diagonals of up to 300
    train = [np.cumsum(rng.standard_normal((n, 1)), axis=0) + 1e6 for n in (700, 500)]
    gen = np.cumsum(rng.standard_normal((300, 1)), axis=0) + 1e6
    gen[250:254] = train[0][600:604]
    q = _windows(gen, L)
    found = _both(q, train, L, normalize=normalize, exclusion_zone=2)
    assert (found["d1"][250], found["series1"][250], found["offset1"][250]) == (0.0, 0, 600)
    pick = np.r_[0, 131, 250, 296]
    _naive_equal({k: v[pick] for k, v in found.items()}, q[pick], train, L, normalize, 2)
