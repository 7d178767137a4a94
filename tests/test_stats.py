import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_h
from scipy import stats as st
from sklearn.metrics import roc_auc_score, roc_curve

from memaudit.stats import (auc_score_interval, bootstrap_rate, cluster_rate, fpr_resolved,
                            mover_interval, newcombe_interval, rate, rate_difference, roc_auc,
                            roc_points, tpr_at_fpr, wilson_interval)
from naive import naive_auc, naive_tpr_at_fpr


def test_wilson_closed_form():
    lo, hi = wilson_interval(0, 1000)
    z = st.norm.ppf(0.975)
    assert lo == 0 and hi == pytest.approx(z**2 / (1000 + z**2))
    lo, hi = wilson_interval(50, 100)
    half = z * np.sqrt(0.25 / 100 + z**2 / 4e4) / (1 + z**2 / 100)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))


def test_bootstrap_interval_matches_the_normal_approximation():
    # p = 0.3, n = 2000: the bootstrap percentile interval is close to p +- 1.96 sqrt(p(1-p)/n)
    lo, hi = bootstrap_rate(600, 2000, n_bootstrap=20000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 2000)
    assert lo == pytest.approx(0.3 - half, abs=0.003)
    assert hi == pytest.approx(0.3 + half, abs=0.003)


def test_binomial_bootstrap_equals_resampling_the_flags_in_distribution():
    flags = np.zeros(400, bool)
    flags[:60] = True
    rng = np.random.default_rng(0)
    resampled = [flags[rng.integers(0, 400, 400)].mean() for _ in range(4000)]
    lo, hi = bootstrap_rate(60, 400, n_bootstrap=4000, seed=0)
    assert lo == pytest.approx(np.percentile(resampled, 2.5), abs=0.006)
    assert hi == pytest.approx(np.percentile(resampled, 97.5), abs=0.006)


def test_rate_object_and_coverage():
    r = rate([True, False, False, True], seed=3)
    assert r.value == 0.5 and r.count == 2 and r.n == 4 and r.low <= 0.5 <= r.high
    assert "seed 3" in r.method and r.wilson[0] < 0.5 < r.wilson[1]
    # coverage: intervals from repeated Bernoulli(0.1) experiments hold 0.1 about 95% of the time
    rng = np.random.default_rng(9)
    hits = 0
    for i in range(400):
        x = rng.random(500) < 0.1
        q = rate(x, n_bootstrap=400, seed=i)
        hits += q.low <= 0.1 <= q.high
    assert 0.90 <= hits / 400 <= 0.99


def test_difference():
    a = rate(np.arange(100) < 30, seed=0)
    b = rate(np.arange(100) < 10, seed=0)
    d = rate_difference(a, b, seed=0)
    assert d.value == pytest.approx(0.2) and d.low < 0.2 < d.high and d.count is None


def test_empty_and_bad_settings():
    with pytest.raises(ValueError, match="zero items"):
        rate([])
    with pytest.raises(ValueError, match="confidence must lie in"):
        rate([True], confidence=1.0)
    with pytest.raises(ValueError, match="n_bootstrap must be at least 1"):
        rate([True], n_bootstrap=0)


# Newcombe 1998, Stat Med 17:873, Table II, method 10 (hybrid score interval, no continuity
# correction): the published limits of examples (a)-(h), to four decimals.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize("counts, published", NEWCOMBE_TABLE_II)
def test_newcombe_hybrid_score_interval_matches_the_published_examples(counts, published):
    a, n_a, b, n_b = counts
    lo, hi = newcombe_interval(a, n_a, b, n_b)
    assert (round(lo, 4), round(hi, 4)) == published
    # and its closed form from the two Wilson intervals
    (l1, u1), (l2, u2) = wilson_interval(a, n_a), wilson_interval(b, n_b)
    p1, p2 = a / n_a, b / n_b
    assert lo == pytest.approx(p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    assert hi == pytest.approx(p1 - p2 + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    # rate_difference carries it beside the bootstrap
    d = rate_difference(rate(np.arange(n_a) < a), rate(np.arange(n_b) < b), seed=0)
    assert d.score_interval == pytest.approx((lo, hi)) and d.score_method == "Newcombe hybrid score"


def test_every_headline_interval_is_informative_at_zero_and_n():
    zero, full = rate(np.zeros(50, bool)), rate(np.ones(50, bool))
    assert (zero.low, zero.high) == (0, 0) and (full.low, full.high) == (1, 1)  # the bootstrap
    assert str(zero) == "0.00% (0/50), 95% CI [0.00%, 7.13%] (Wilson; bootstrap [0.00%, 0.00%])"
    assert str(full) == ("100.00% (50/50), 95% CI [92.87%, 100.00%] (Wilson; bootstrap "
                         "[100.00%, 100.00%])")
    diff = rate_difference(zero, zero, seed=0)
    assert (diff.low, diff.high) == (0, 0)
    assert str(diff) == ("0.00%, 95% CI [-7.13%, 7.13%] (Newcombe hybrid score; bootstrap "
                         "[0.00%, 0.00%])")
    clustered = cluster_rate(np.zeros(50, bool), np.repeat(np.arange(5), 10))
    lo, hi = clustered.score_interval
    assert (clustered.low, clustered.high) == (0, 0) and lo == 0 and hi == pytest.approx(
        wilson_interval(0, 5)[1])  # five clusters of ten: five effective draws
    assert "Wilson on 5 effective clusters" in str(clustered)


def test_html_rate_is_the_text_rate():
    from memaudit.report import fmt_rate

    r = rate(np.zeros(50, bool))
    assert fmt_rate(r.to_dict()) == ("0.00% (0/50) <small>95% CI [0.00%, 7.13%] (Wilson; "
                                      "bootstrap [0.00%, 0.00%])</small>")
    d = r.to_dict()
    assert d["score_interval"] == list(d["wilson"]) and d["score_method"] == "Wilson"


def test_cluster_wilson_is_honest_when_a_cluster_is_flagged_whole():
    # 40 series of 25 windows; a series is memorized whole with probability 0.1, so the windows of
    # one series are perfectly correlated: Wilson on the 1,000 windows would be far too narrow,
    # Wilson on the effective number of clusters covers
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(40), 25)
    cover_eff = cover_naive = 0
    for i in range(400):
        flags = np.repeat(rng.random(40) < 0.1, 25)
        r = cluster_rate(flags, clusters, n_bootstrap=10, seed=i)
        cover_eff += r.score_interval[0] <= 0.1 <= r.score_interval[1]
        lo, hi = wilson_interval(int(flags.sum()), flags.size)
        cover_naive += lo <= 0.1 <= hi
    assert cover_eff / 400 >= 0.92 and cover_naive / 400 < 0.6
    # unequal clusters: Kish's (sum s)^2 / sum s^2
    r = cluster_rate(np.zeros(6, bool), [0, 0, 0, 1, 1, 2])  # 36 / (9 + 4 + 1)
    assert r.score_method == "Wilson on 2.571 effective clusters"


def test_mover_of_a_sum_and_of_a_difference():
    (l1, u1), (l2, u2) = wilson_interval(30, 40), wilson_interval(5, 60)
    lo, hi = mover_interval((0.75, 5 / 60), ((l1, u1), (l2, u2)), (0.5, 0.5))
    mid = 0.5 * (0.75 + 5 / 60)
    assert lo == pytest.approx(mid - 0.5 * np.hypot(0.75 - l1, 5 / 60 - l2))
    assert hi == pytest.approx(mid + 0.5 * np.hypot(u1 - 0.75, u2 - 5 / 60))
    assert mover_interval((0.75, 5 / 60), ((l1, u1), (l2, u2)), (1, -1)) == pytest.approx(
        newcombe_interval(30, 40, 5, 60))


def test_seed_sequences_name_their_stream():
    child = np.random.SeedSequence(7).spawn(2)[1]
    r = rate(np.arange(30) < 4, seed=child)
    assert "seed 7, stream (1,)" in r.method
    assert r == rate(np.arange(30) < 4, seed=np.random.SeedSequence(7).spawn(2)[1])


# ----------------------------------------------------------------------------- ROC
def test_tpr_at_fpr_reads_every_roc_point_where_scikit_learn_thins_them():
    # 20 score levels each shared by one member and one non-member: a straight ROC segment whose
    # inner points scikit-learn's default roc_curve drops (drop_intermediate=True)
    m = np.r_[np.arange(100, 80, -1.0), np.full(80, -50.0)]
    n = np.r_[np.arange(100, 80, -1.0), np.arange(80.0) - 200]
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    f, t, _ = roc_curve(y, np.r_[m, n])
    thinned = t[f <= 0.05 + 1e-12].max()
    assert thinned == pytest.approx(0.01)  # what the thinned curve under-states
    assert tpr_at_fpr(m, n, 0.05) == pytest.approx(0.05)
    assert naive_tpr_at_fpr(m.tolist(), n.tolist(), 0.05) == pytest.approx(0.05)
    fpr, tpr, thr = roc_points(m, n)
    f_all, t_all, thr_all = roc_curve(y, np.r_[m, n], drop_intermediate=False)
    np.testing.assert_allclose(fpr, f_all)
    np.testing.assert_allclose(tpr, t_all)
    assert thr[0] == np.inf and thr.size == np.unique(np.r_[m, n]).size + 1


@settings(max_examples=150, deadline=None)
@given(st_h.lists(st_h.integers(0, 6), min_size=1, max_size=30),
       st_h.lists(st_h.integers(0, 6), min_size=1, max_size=40),
       st_h.sampled_from([0.0, 0.01, 0.05, 0.1, 0.25, 1 / 3, 0.5, 0.99]))
def test_tpr_at_fpr_and_auc_equal_brute_force_on_tied_scores(members, nonmembers, fpr):
    m, n = np.array(members, float), np.array(nonmembers, float)
    assert tpr_at_fpr(m, n, fpr) == pytest.approx(naive_tpr_at_fpr(members, nonmembers, fpr))
    assert roc_auc(m, n) == pytest.approx(naive_auc(members, nonmembers))
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert roc_auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]))


def test_resolution_rule():
    assert fpr_resolved(0.01, 100) and not fpr_resolved(0.01, 99)
    assert fpr_resolved(0.001, 1000) and not fpr_resolved(0.001, 999)
    assert fpr_resolved(0.3, 10) and not fpr_resolved(0.0, 10 ** 9)


def test_auc_score_interval():
    lo, hi = auc_score_interval(1.0, 4, 4)
    assert hi == 1.0 and 0.5 < lo < 0.65  # does not collapse at AUC 1
    assert auc_score_interval(0.0, 4, 4) == pytest.approx((1 - hi, 1 - lo))
    # the bounds solve (theta - A)^2 = z^2 V_HM(theta) (Hanley & McNeil 1982, Eq. 2)
    z = st.norm.ppf(0.975)
    for a, m, n in ((0.7, 30, 80), (0.95, 200, 50), (0.5, 10, 10)):
        for t in auc_score_interval(a, m, n):
            q1, q2 = t / (2 - t), 2 * t * t / (1 + t)
            var = (t * (1 - t) + (m - 1) * (q1 - t * t) + (n - 1) * (q2 - t * t)) / (m * n)
            assert (t - a) ** 2 == pytest.approx(z * z * var, rel=1e-6)
        # swapping the sides mirrors it
        lo, hi = auc_score_interval(a, m, n)
        assert auc_score_interval(1 - a, n, m) == pytest.approx((1 - hi, 1 - lo))


def test_auc_score_interval_covers_where_the_bootstrap_cannot():
    # 10 members ~ N(4, 1) vs 10 non-members ~ N(0, 1): AUC = Phi(4 / sqrt 2) = 0.9977; most draws
    # separate perfectly, where the bootstrap is the point [1, 1]
    truth = st.norm.cdf(4 / np.sqrt(2))
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        a = roc_auc(rng.normal(4, 1, 10), rng.normal(0, 1, 10))
        lo, hi = auc_score_interval(a, 10, 10)
        covered += lo <= truth <= hi
    assert covered / 400 >= 0.93
