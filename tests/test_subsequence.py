"""Subsequence matching: brute force, stumpy, planted stretches, constant windows, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memaudit.adapters.timeseries import as_series_list, windows
from memaudit.probes.subsequence import SubsequenceProbe, subsequence_search, window_distance
from naive import best_two_from_profiles, naive_subsequence


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
    # a constant query window has no shape under z-normalisation: not searched, not evaluable
    assert found["evaluable"].tolist() == [False, True]
    assert np.isnan(found["d1"][0]) and found["series1"][0] == -1
    assert np.isfinite(found["d1"][1]) and np.isfinite(found["d2"][1])
    _check_against_naive({k: v[1:] for k, v in found.items()},
                         naive_subsequence(q[1:], train, 16, True, zone=2))
    # a constant channel is compared as zeros: sqrt(L) from a non-constant one
    assert window_distance(q[:1], rng.standard_normal((1, 16, 1)))[0] == pytest.approx(4.0)
    # the raw distance judges the flat window: the nearest stretch of the plateau, the lowest
    raw = subsequence_search(q[:1] + 3.5, train, 16, normalize=False, exclusion_zone=2)
    assert (raw["d1"][0], raw["series1"][0], raw["offset1"][0]) == (0.0, 0, 40)
    assert (raw["d2"][0], raw["offset2"][0]) == (0.0, 43)


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


# ---- exactness: offsets, plateaus, ties (issue 12, item 2) ----------------------------------------

def _replays(rng, train, L, n_exact, n_noisy, n_fresh, base):
    q, truth = [], []
    for k in range(n_exact + n_noisy):
        s = int(rng.integers(len(train)))
        o = int(rng.integers(train[s].shape[0] - L + 1))
        w = train[s][o : o + L].copy()
        if k >= n_exact:
            w += 1e-3 * rng.standard_normal(w.shape)
        q.append(w)
        truth.append((s, o))
    for _ in range(n_fresh):
        q.append(np.cumsum(rng.standard_normal((L, train[0].shape[1])), axis=0) + base)
        truth.append(None)
    return np.stack(q), truth


def _assert_exact(found, want, rtol=1e-9, atol=1e-9):
    """Distances equal; the matched stretch equal (the lowest on exact ties) unless two candidates
    lie within rounding of each other."""
    for i, (d1, s1, o1, d2, s2, o2) in enumerate(want):
        assert found["d1"][i] == pytest.approx(d1, rel=rtol, abs=atol)
        assert found["d2"][i] == pytest.approx(d2, rel=rtol, abs=atol)
        if d1 == d2 or not np.isclose(d1, d2, rtol=rtol, atol=atol):
            assert (found["series1"][i], found["offset1"][i]) == (s1, o1)


@pytest.mark.parametrize("base", [0.0, 1e3, 1e6])
def test_raw_search_equals_stumpy_mass_with_a_baseline(rng, base):
    stumpy = pytest.importorskip("stumpy")
    L, zone = 32, 8
    train = [np.cumsum(rng.standard_normal((n, 1)), axis=0) + base for n in (400, 300, 250)]
    q, truth = _replays(rng, train, L, 6, 3, 3, base)
    found = subsequence_search(q, train, L, normalize=False, exclusion_zone=zone)
    for i, qq in enumerate(q):
        # stumpy's raw distance profile (scipy cdist: float64 differences) of every series
        profiles = [stumpy.mass(qq[:, 0], t[:, 0], normalize=False) for t in train]
        want = best_two_from_profiles(profiles, zone)
        _assert_exact({k: v[i : i + 1] for k, v in found.items()}, [want])
        if i < 6:  # exact replays: distance 0 at the planted stretch
            assert (found["d1"][i], found["series1"][i], found["offset1"][i]) == (0.0, *truth[i])
    _assert_exact(found, naive_subsequence(q, train, L, False, zone))


def test_raw_search_on_flat_plateaus_ties_go_to_the_lowest_offset(rng):
    stumpy = pytest.importorskip("stumpy")
    L, zone = 16, 15
    s0 = rng.standard_normal(300)
    s0[40:100], s0[200:230] = 5.0, 5.5
    s1 = rng.standard_normal(250)
    s1[10:50], s1[120:180] = 5.0, 5.5
    train = [s0[:, None] + 1000, s1[:, None] + 1000]
    q = np.stack([np.full((L, 1), 1005.0),       # ties at 0 on both plateaus at 5.0
                  np.full((L, 1), 1005.25),      # ties at 0.25 sqrt(L) = 1 on all four plateaus
                  np.full((L, 1), 1005.5),
                  train[0][90:106], train[1][175:191]])  # windows half on a plateau, replayed
    found = subsequence_search(q, train, L, normalize=False, exclusion_zone=zone)
    want = [best_two_from_profiles([stumpy.mass(qq[:, 0], t[:, 0], normalize=False) for t in train],
                                   zone) for qq in q]
    _assert_exact(found, want, rtol=0, atol=0)
    assert found["offset2"].tolist() == [w[5] for w in want]
    # the tie rule: the lowest (series, offset) among equal distances
    assert [(found["series1"][i], found["offset1"][i], found["d1"][i]) for i in range(3)] == \
        [(0, 40, 0.0), (0, 40, 1.0), (0, 200, 0.0)]
    assert (found["series2"][0], found["offset2"][0], found["d2"][0]) == (0, 56, 0.0)
    assert (found["series2"][2], found["offset2"][2], found["d2"][2]) == (1, 120, 0.0)
    _assert_exact(found, naive_subsequence(q, train, L, False, zone), rtol=0, atol=0)


@pytest.mark.parametrize("base", [1e3, 1e6])
def test_znormalised_search_is_exact_at_large_offsets(rng, base):
    L, zone = 24, 6
    train = [np.cumsum(rng.standard_normal((n, 2)), axis=0) + base for n in (200, 150)]
    q, truth = _replays(rng, train, L, 4, 2, 2, base)
    q[1] = 0.25 * q[1] + 3 * base  # a rescaled copy: the same shape
    found = subsequence_search(q, train, L, normalize=True, exclusion_zone=zone)
    _assert_exact(found, naive_subsequence(q, train, L, True, zone), atol=1e-7)
    for i in range(4):
        assert (found["d1"][i], found["series1"][i], found["offset1"][i]) == (0.0, *truth[i])
    if base == 1e3:  # stumpy's rolling moments are close enough here (not at 1e6); its distances
        stumpy = pytest.importorskip("stumpy")  # near 0 carry their rounding (~3e-4 for q[1])
        one = [t[:, :1] for t in train]
        f1 = subsequence_search(q[:, :, :1], one, L, exclusion_zone=zone)
        for i, qq in enumerate(q[:, :, 0]):
            want = best_two_from_profiles([stumpy.mass(qq, t[:, 0]) for t in one], zone)
            _assert_exact({k: v[i : i + 1] for k, v in f1.items()}, [want], atol=1e-3)


def test_old_float32_selection_cases(rng):
    """The issue's cases: exact replays in walks at +1000 / 1e6 are found; a flat generated stretch
    near (not at) two training plateaus is not flagged."""
    L = 64
    for base in (1e3, 1e6):
        train = [np.cumsum(rng.standard_normal(2000)) * 0.01 + base for _ in range(5)]
        plant = [(int(rng.integers(5)), int(rng.integers(2000 - L))) for _ in range(20)]
        q = np.stack([train[s][o : o + L] for s, o in plant])[:, :, None]
        f = subsequence_search(q, [t[:, None] for t in train], L, normalize=False)
        assert list(zip(f["series1"], f["offset1"])) == plant and (f["d1"] == 0).all()
    s0, s1 = rng.standard_normal(300) + 1000, rng.standard_normal(300) + 1000
    s0[100:200], s1[50:150] = 1000.0, 1000.001
    fake = rng.standard_normal((1, 200)) + 1000
    fake[0, 60:140] = 1000.0005
    res = SubsequenceProbe(32, normalize=False).fit([s0, s1]).score(fake)
    flat = (res.query_offset >= 60) & (res.query_offset <= 108)
    # nearest: the plateau at 1000.0 or at 1000.001, both 0.0005 sqrt(32) away: ratio ~ 1
    np.testing.assert_allclose(res.d1[flat], 0.0005 * np.sqrt(32), rtol=1e-6)
    assert not res.memorized[flat].any() and (res.ratio[flat] > 0.99).all()


# ---- one tie rule (issue 12, item 4) and constant windows -------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_a_copy_of_a_stretch_that_occurs_twice_is_a_copy(rng, normalize):
    from memaudit import nn_ratio

    train = np.cumsum(rng.standard_normal((3, 300)), axis=1)
    train[2, 150:214] = train[0, 20:84]  # the stretch occurs twice in training
    fake = np.cumsum(rng.standard_normal((2, 200)), axis=1)
    fake[0, 50:114] = train[0, 20:84]
    fake[1, 10:74] = (3 * train[0, 20:84] + 1e4) if normalize else train[0, 20:84]
    res = SubsequenceProbe(64, normalize=normalize).fit(train).score(fake)
    for s, o in ((0, 50), (1, 10)):
        i = np.flatnonzero((res.query_series == s) & (res.query_offset == o))[0]
        assert (res.d1[i], res.d2[i], res.ratio[i], res.memorized[i]) == (0.0, 0.0, 0.0, True)
        assert res.match_id[i] == "0@20" and (res.second_series[i], res.second_offset[i]) == (2, 150)
    # the image probe applies the same rule to the same windows
    w_train = windows(train, 64).x
    img = nn_ratio(fake[:1, 50:114], w_train, carlini_alpha=None)
    assert img.ratio[0] == 0.0 and img.memorized[0]


def test_constant_windows_are_not_evaluable_under_znormalisation(rng):
    train = np.cumsum(rng.standard_normal((3, 300)), axis=1)
    train[0, 100:200] = 4.0  # a long plateau: a flat window matches it twice at distance 0
    fake = np.cumsum(rng.standard_normal((3, 120)), axis=1)
    fake[0, 30:90] = 4.0     # 60 flat steps: 29 flat windows of 32
    fake[1, :] = -2.0        # a flat series
    res = SubsequenceProbe(32, n_bootstrap=50).fit(train).score(fake)
    flat = ~res.evaluable
    assert flat.sum() == 29 + 89 and res.n_not_evaluable == 118
    assert np.isnan(res.ratio[flat]).all() and not res.memorized[flat].any()
    assert res.window_rate.n == res.d1.size - 118  # left out of the denominators
    assert res.not_evaluable == (1,) and res.series_rate.n == 2
    d = res.to_dict()
    assert d["n_windows_not_evaluable"] == 118 and d["series_not_evaluable"] == [1]
    assert "not evaluable" in d["rules"]["constant_windows"] and "ratio 0" in d["rules"]["ties"]
    assert "not evaluable" in res.summary()
    # the raw distance judges them: at the plateau's level, a copy (d1 = d2 = 0)
    raw = SubsequenceProbe(32, normalize=False, n_bootstrap=50).fit(train).score(fake)
    on = (raw.query_series == 0) & (raw.query_offset >= 30) & (raw.query_offset <= 58)
    assert raw.evaluable.all() and raw.memorized[on].all() and (raw.d1[on] == 0).all()
    assert set(raw.match_id[on]) == {"0@100"}
    with pytest.raises(ValueError, match="constant.*--raw"):
        SubsequenceProbe(32).fit(train).score(np.full((2, 50), 3.0))


# ---- the default stride, and bad input (issue 12, item 5) --------------------------------------

def test_probe_parameters_are_checked(rng):
    train = rng.standard_normal((3, 40))
    for kw, exc, msg in [({"stride": 0}, ValueError, "stride"), ({"stride": 2.5}, TypeError, "stride"),
                         ({"exclusion_zone": -1}, ValueError, "exclusion_zone"),
                         ({"exclusion_zone": 1.5}, TypeError, "exclusion_zone"),
                         ({"threshold": 1.0}, ValueError, "threshold"),
                         ({"max_distance": float("nan")}, ValueError, "max_distance"),
                         ({"max_distance": -1.0}, ValueError, "max_distance"),
                         ({"n_bootstrap": 0}, ValueError, "n_bootstrap")]:
        with pytest.raises(exc, match=msg):
            SubsequenceProbe(8, **kw).fit(train)
    with pytest.raises(TypeError, match="complex"):
        SubsequenceProbe(8).fit(train + 1j)
    with pytest.raises(ValueError, match="magnitude"):
        SubsequenceProbe(8).fit(train * 1e200)
    p = SubsequenceProbe(8).fit(train)
    with pytest.raises(TypeError, match=r"samples\[1\] holds complex"):
        p.score([rng.standard_normal(20), rng.standard_normal(20) + 0j])
    # one training series: every first match must leave a second outside the zone
    with pytest.raises(ValueError, match="undefined"):
        SubsequenceProbe(8, exclusion_zone=5).fit(rng.standard_normal((1, 18)))  # 11 windows
    SubsequenceProbe(8, exclusion_zone=5).fit(rng.standard_normal((1, 19)))      # 12 windows


_TRAIN = np.cumsum(np.random.default_rng(7).standard_normal((4, 300)), axis=1)
_FAKE = np.cumsum(np.random.default_rng(8).standard_normal((3, 200)), axis=1)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 300 - 32), st.integers(0, 200 - 32)),
                min_size=3, max_size=3))
def test_default_command_finds_replays_at_any_offset(plants):
    """Three 32-step replays at drawn offsets, found by the default command (stride 1) with the
    right training series and offset."""
    import json
    import tempfile
    from pathlib import Path

    from memaudit.cli import EXIT_OK, main

    fake = _FAKE.copy()
    for g, (s, o, p) in enumerate(plants):
        fake[g, p : p + 32] = _TRAIN[s, o : o + 32]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "train.npy", _TRAIN)
        np.save(Path(tmp) / "fake.npy", fake)
        assert main(["subsequences", "--train", f"{tmp}/train.npy", "--samples", f"{tmp}/fake.npy",
                     "--window", "32", "--out", f"{tmp}/out", "--no-progress", "--json",
                     "--n-bootstrap", "20"]) == EXIT_OK
        report = json.loads((Path(tmp) / "out" / "subsequences.json").read_text())
    assert report["config"]["stride"] == 1
    flagged = {w["query_id"]: w["match"] for w in report["sections"]["subsequences"]["lowest_ratio_windows"]
               if w["memorized"] and w["d1"] == 0}
    assert flagged == {f"{g}@{p}": f"{s}@{o}" for g, (s, o, p) in enumerate(plants)}


def test_help_states_the_default_stride():
    from memaudit.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["subsequences"]
    text = " ".join(sub.format_help().split())
    assert "default 1: every window" in text and "L + S - 1" in text


@pytest.fixture(scope="module")
def series_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    np.save(d / "train.npy", np.cumsum(rng.standard_normal((4, 300)), axis=1))
    np.save(d / "fake.npy", np.cumsum(rng.standard_normal((3, 200)), axis=1))
    np.save(d / "complex.npy", np.cumsum(rng.standard_normal((3, 200)), axis=1) + 1j)
    bad = np.cumsum(rng.standard_normal((3, 200)), axis=1)
    bad[2, 9] = np.nan
    np.save(d / "nan.npy", bad)
    bad = np.cumsum(rng.standard_normal((4, 300)), axis=1)
    bad[1, 3] = np.inf
    np.save(d / "inf.npy", bad)
    np.save(d / "huge.npy", np.cumsum(rng.standard_normal((3, 200)), axis=1) * 1e160)
    return d


_BAD = [
    (["--stride", "0"], "stride (--stride) must be at least 1, got 0"),
    (["--stride", "-2"], "stride (--stride) must be at least 1"),
    (["--window", "0"], "window (--window) must be at least 1"),
    (["--window", "-4"], "window (--window) must be at least 1"),
    (["--exclusion-zone", "-1"], "exclusion_zone (--exclusion-zone) must be at least 0"),
    (["--threshold", "0"], "threshold (--threshold) must lie in (0, 1)"),
    (["--threshold", "1"], "threshold (--threshold) must lie in (0, 1)"),
    (["--threshold", "1.5"], "threshold (--threshold) must lie in (0, 1)"),
    (["--threshold", "-0.2"], "threshold (--threshold) must lie in (0, 1)"),
    (["--max-distance", "-1"], "max_distance (--max-distance) must be a finite number >= 0"),
    (["--max-distance", "nan"], "max_distance (--max-distance) must be a finite number >= 0"),
    (["--max-distance", "inf"], "max_distance (--max-distance) must be a finite number >= 0"),
    (["--n-bootstrap", "0"], "n_bootstrap (--n-bootstrap) must be at least 1"),
    (["--seed", "-1"], "seed (--seed) must be a non-negative integer"),
]
# values that are not numbers at all are usage errors (exit 2), as for every command
_USAGE = [
    (["--stride", "2.5"], "argument --stride: invalid int value: '2.5'"),
    (["--stride", "abc"], "argument --stride: invalid int value"),
    (["--window", "8.5"], "argument --window: invalid int value"),
    (["--exclusion-zone", "1.5"], "argument --exclusion-zone: invalid int value"),
    (["--threshold", "nan"], "argument --threshold: not a number or fraction"),
    (["--threshold", "abc"], "argument --threshold: not a number or fraction"),
    (["--max-distance", "x"], "argument --max-distance: not a number"),
    (["--n-bootstrap", "2.5"], "argument --n-bootstrap: invalid int value"),
]


def _bad_option_argv(series_files, extra):
    args = {"--train": str(series_files / "missing.npy"), "--samples": str(series_files / "fake.npy"),
            "--window": "32", "--out": str(series_files / "out-bad")}
    args.update(dict(zip(extra[::2], extra[1::2])))
    return ["subsequences", *[x for kv in args.items() for x in kv]]


@pytest.mark.parametrize("extra, message", _BAD, ids=[" ".join(a) for a, _ in _BAD])
def test_bad_options_are_refused_before_any_file_is_read(series_files, capsys, extra, message):
    from memaudit.cli import EXIT_ERROR, main

    assert main(_bad_option_argv(series_files, extra)) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("memaudit: error: ") and message in err
    assert not (series_files / "out-bad").exists()


@pytest.mark.parametrize("extra, message", _USAGE, ids=[" ".join(a) for a, _ in _USAGE])
def test_options_that_are_not_numbers_are_usage_errors(series_files, capsys, extra, message):
    from memaudit.cli import EXIT_USAGE, main

    with pytest.raises(SystemExit) as exc:
        main(_bad_option_argv(series_files, extra))
    assert exc.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (series_files / "out-bad").exists()


_BAD_DATA = [
    ({"--train": "complex.npy"}, "train holds complex values"),
    ({"--samples": "complex.npy"}, "samples holds complex values"),
    ({"--samples": "nan.npy"}, "samples[2] has a NaN or Inf value at step 9"),
    ({"--train": "inf.npy"}, "train[1] has a NaN or Inf value at step 3"),
    ({"--holdout": "nan.npy"}, "holdout[2] has a NaN or Inf value at step 9"),
    ({"--window": "301"}, "every training series is shorter than the window length 301"),
    ({"--window": "250"}, "every series in samples is shorter than the window length 250"),
    ({"--samples": "huge.npy"}, "magnitude"),
]


@pytest.mark.parametrize("change, message", _BAD_DATA, ids=[m[:30] for _, m in _BAD_DATA])
def test_bad_series_are_refused_in_one_line(series_files, capsys, change, message):
    from memaudit.cli import EXIT_ERROR, main

    args = {"--train": "train.npy", "--samples": "fake.npy", "--window": "32"}
    args.update(change)
    argv = ["subsequences", "--out", str(series_files / "out-data"), "--no-progress"]
    for k, v in args.items():
        argv += [k, v if k == "--window" else str(series_files / v)]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
