"""Subsequence matching: brute force, stumpy, planted stretches, constant windows, bad input."""

import numpy as np
import pytest

from memaudit.adapters.timeseries import as_series_list, windows
from memaudit.probes.subsequence import SubsequenceProbe, subsequence_search, window_distance
from naive import naive_subsequence


def _walks(rng, n, length, channels=1):
    return np.cumsum(rng.standard_normal((n, length, channels)), axis=1)


def _check_against_naive(found, want, tol=1e-6):
    for i, (d1, s1, o1, d2, s2, o2) in enumerate(want):
        assert found["d1"][i] == pytest.approx(d1, abs=tol, rel=1e-6)
        assert found["d2"][i] == pytest.approx(d2, abs=tol, rel=1e-6)
        # equal distances may sit at another position; the distance is what must agree
        if not np.isclose(d1, d2):
            assert (found["series1"][i], found["offset1"][i]) == (s1, o1)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("channels", [1, 2])
def test_search_equals_brute_force(rng, normalize, channels):
    train = list(_walks(rng, 3, 60, channels)) + [_walks(rng, 1, 25, channels)[0]]
    q = _walks(rng, 7, 16, channels)
    q[0] = train[1][20:36]  # planted exactly
    q[1] = train[2][5:21] * 3 + 10  # amplitude and offset change: a copy in shape only
    found = subsequence_search(q, train, 16, normalize=normalize)
    want = naive_subsequence(q, train, 16, normalize)
    _check_against_naive(found, want)
    assert (found["series1"][0], found["offset1"][0], found["d1"][0]) == (1, 20, 0.0)
    if normalize:
        assert (found["series1"][1], found["offset1"][1]) == (2, 5) and found["d1"][1] < 1e-6


def test_blocked_series_give_the_same_answer(rng):
    train = list(_walks(rng, 2, 400))
    q = _walks(rng, 9, 32)
    q[3] = train[1][150:182]
    whole = subsequence_search(q, train, 32)
    # blocks of 40 windows: every series is cut into several blocks and needs the second pass
    cut = subsequence_search(q, train, 32, block_elements=9 * 40)
    for k in whole:
        np.testing.assert_allclose(cut[k], whole[k], rtol=1e-9)
    _check_against_naive(cut, naive_subsequence(q, train, 32, True))


@pytest.mark.parametrize("zone", [0, 4, 31])
def test_exclusion_zone(rng, zone):
    train = [np.sin(np.linspace(0, 6, 200))[:, None] + 0.01 * rng.standard_normal((200, 1))]
    q = train[0][None, 60:92].copy()
    found = subsequence_search(q, train, 32, exclusion_zone=zone)
    assert found["offset1"][0] == 60 and abs(found["offset2"][0] - 60) > zone
    _check_against_naive(found, naive_subsequence(q, train, 32, True, zone))


def test_constant_windows_have_defined_distances(rng):
    series = rng.standard_normal(100)
    series[40:70] = 2.5  # a flat stretch
    train = [series[:, None]]
    q = np.stack([np.full((16, 1), -1.0), rng.standard_normal((16, 1))])
    found = subsequence_search(q, train, 16, exclusion_zone=2)
    assert np.isfinite(found["d1"]).all() and np.isfinite(found["d2"]).all()
    # constant against constant: 0; constant against non-constant: sqrt(L)
    assert found["d1"][0] == 0.0 and 40 <= found["offset1"][0] <= 54
    _check_against_naive(found, naive_subsequence(q, train, 16, True, zone=2))
    assert window_distance(q[:1], rng.standard_normal((1, 16, 1)))[0] == pytest.approx(4.0)


def test_matches_stumpy(rng):
    stumpy = pytest.importorskip("stumpy")
    t = np.cumsum(rng.standard_normal(3000))
    L = 50
    qs = [t[700:750] * 2 - 3, np.cumsum(rng.standard_normal(L)), t[2000:2050] + 0.05 * rng.standard_normal(L)]
    zone = int(np.ceil(L / 4))
    for normalize in (True, False):
        found = subsequence_search(np.stack(qs)[:, :, None], [t[:, None]], L, normalize=normalize,
                                   exclusion_zone=zone)
        for i, qq in enumerate(qs):
            ref = stumpy.match(qq, t, max_distance=np.inf, max_matches=2, normalize=normalize)
            assert found["d1"][i] == pytest.approx(float(ref[0][0]), abs=1e-5)
            assert found["offset1"][i] == int(ref[0][1])
            # stumpy's second match lies outside the same exclusion zone
            assert found["d2"][i] == pytest.approx(float(ref[1][0]), abs=1e-5)
    assert found["offset1"][0] != 700  # raw distance does not see the rescaled copy as exact


def test_probe_flags_planted_stretches_and_names_them(rng):
    train = list(_walks(rng, 6, 500))
    fake = _walks(rng, 5, 300)
    fake[1, 64:128] = train[4][210:274]                            # exact
    fake[3, 128:192] = train[0][30:94] + 0.02 * rng.standard_normal((64, 1))  # noisy
    fake[4, 0:64] = 0.5 * train[2][400:464] - 7                      # rescaled (shape copy)
    hold = _walks(rng, 5, 300)
    probe = SubsequenceProbe(64, stride=64).fit(train, ids=[f"t{i}" for i in range(6)])
    res = probe.score(fake, holdout=hold)
    flagged = {(int(s), int(o)): m for s, o, m in zip(res.query_series[res.memorized],
                                                      res.query_offset[res.memorized],
                                                      res.match_id[res.memorized])}
    assert flagged == {(1, 64): "t4@210", (3, 128): "t0@30", (4, 0): "t2@400"}
    assert res.series_rate.count == 3 and res.control.series_rate.count == 0
    raw = SubsequenceProbe(64, stride=64, normalize=False).fit(train).score(fake)
    assert not raw.memorized[(raw.query_series == 4) & (raw.query_offset == 0)][0]
    assert res.to_dict()["lowest_ratio_windows"][0]["ratio"] < 1 / 3


def test_windows_adapter(rng):
    w = windows([np.arange(10.0), np.arange(3.0), np.arange(7.0)], 4, stride=3, ids=["a", "b", "c"])
    assert w.series.tolist() == [0, 0, 0, 2, 2] and w.offset.tolist() == [0, 3, 6, 0, 3]
    assert w.skipped == (1,) and w.ids.tolist()[3] == "c@0"
    x = rng.standard_normal((2, 3, 20))  # (n, C, T)
    wn = windows(x, 5, layout="NCT")
    np.testing.assert_array_equal(wn.x[0].reshape(5, 3), x[0, :, :5].T)
    with pytest.raises(ValueError, match="NaN or Inf"):
        as_series_list([np.array([1.0, np.nan, 2.0])])
    with pytest.raises(ValueError, match="channels"):
        as_series_list([np.zeros((5, 2)), np.zeros((5, 3))])
    with pytest.raises(ValueError, match="shorter than the window"):
        windows(np.zeros((2, 5)), 10)
    with pytest.raises(ValueError, match="empty"):
        as_series_list([])


def test_bad_probe_input(rng):
    with pytest.raises(RuntimeError, match="fit"):
        SubsequenceProbe(8).score(rng.standard_normal((2, 30)))
    with pytest.raises(ValueError, match="undefined"):
        SubsequenceProbe(8).fit(rng.standard_normal((1, 12)))
    p = SubsequenceProbe(8).fit(rng.standard_normal((3, 40)))
    with pytest.raises(ValueError, match="channels"):
        p.score(rng.standard_normal((2, 30, 2)))
    with pytest.raises(ValueError, match="length"):
        SubsequenceProbe(0).fit(rng.standard_normal((3, 40)))


def test_dtw_option_equals_brute_force_over_all_stretches(rng):
    tslearn = pytest.importorskip("tslearn.metrics")
    from memaudit.probes.subsequence import dtw_subsequence_search

    train = [np.cumsum(rng.standard_normal((30, 1)), axis=0) for _ in range(2)]
    q = np.stack([train[1][8:16] + 0.01, np.cumsum(rng.standard_normal((8, 1)), axis=0)])
    found = dtw_subsequence_search(q, train, 8, exclusion_zone=3)
    for i in range(2):
        # subsequence DTW = min over every stretch [a, b] of the DTW to the query
        best = min((tslearn.dtw(q[i], s[a : b + 1]), si, a, b) for si, s in enumerate(train)
                   for a in range(30) for b in range(a, 30))
        assert found["d1"][i] == pytest.approx(best[0], rel=1e-9)
        assert found["series1"][i] == best[1]
    assert (found["series1"][0], found["offset1"][0]) == (1, 8)
    res = SubsequenceProbe(8, stride=8, normalize=False, metric="dtw").fit(train).score(q.reshape(2, 8))
    assert res.d1.shape == (2,)
    with pytest.raises(ValueError, match="normalize=False"):
        SubsequenceProbe(8, metric="dtw").fit(train)
