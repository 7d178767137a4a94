"""Membership-inference statistics on attack scores: closed forms, brute force, controls."""

import numpy as np
import pytest
from scipy.stats import norm

from hypothesis import given, settings
from hypothesis import strategies as st_h

from memaudit.probes.membership import MIN_PER_SIDE, _bootstrap_roc, membership_metrics, tpr_at_fpr
from memaudit.stats import _fp_limit, fpr_resolved, roc_auc
from naive import naive_auc, naive_tpr_at_fpr


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_auc_matches_the_gaussian_closed_form(rng, delta):
    # members ~ N(delta, 1), non-members ~ N(0, 1): AUC = Phi(delta / sqrt(2))
    res = membership_metrics(rng.normal(delta, 1, 3000), rng.normal(0, 1, 3000), n_bootstrap=300)
    want = norm.cdf(delta / np.sqrt(2))
    assert res.auc.low <= want <= res.auc.high
    assert res.auc.value == pytest.approx(want, abs=0.02)
    # TPR at 1% FPR: 1 - Phi(z_0.99 - delta), inside its interval
    want_tpr = 1 - norm.cdf(norm.ppf(0.99) - delta)
    iv = res.tpr[0.01]
    assert iv.low - 0.01 <= want_tpr <= iv.high + 0.01


def test_identical_distributions_give_auc_one_half(rng):
    res = membership_metrics(rng.normal(size=2000), rng.normal(size=2000), n_bootstrap=300)
    assert res.auc.low <= 0.5 <= res.auc.high
    assert res.tpr[0.01].value < 0.05


def test_tpr_at_fpr_matches_brute_force_with_ties(rng):
    for _ in range(5):
        m = rng.integers(0, 20, 60).astype(float)  # many ties
        n = rng.integers(0, 15, 80).astype(float)
        for f in (0.0, 0.01, 0.05, 0.2, 0.5):
            assert tpr_at_fpr(m, n, f) == pytest.approx(naive_tpr_at_fpr(m.tolist(), n.tolist(), f))


def test_seeded_and_reported(rng):
    m, n = rng.normal(1, 1, 500), rng.normal(0, 1, 500)
    a = membership_metrics(m, n, seed=3, n_bootstrap=200)
    b = membership_metrics(m, n, seed=3, n_bootstrap=200)
    assert a.to_dict() == b.to_dict()
    d = a.to_dict()
    assert d["baseline"] == {"auc": 0.5, "tpr_at_fpr": {"0.01": 0.01, "0.001": 0.001}}
    assert "seed 3" in d["method"]
    # 500 non-members cannot resolve 0.1%: marked, never a number
    want = {
        "value": None, "low": None, "high": None, "bootstrap_collapsed": False, "resolved": False,
        "min_resolvable_fpr": 1 / 500, "count": None, "n": 500, "false_positives_allowed": 0}
    # a TprAtFpr is a Rate: its dict holds the Rate's keys too (confidence, method, lead...)
    assert {k: d["tpr_at_fpr"]["0.001"][k] for k in want} == want
    assert d["tpr_at_fpr"]["0.01"]["resolved"] and d["tpr_at_fpr"]["0.01"]["value"] is not None
    assert ("TPR at 0.1% FPR: not resolved: 500 non-members resolve FPRs of 1/500 or more "
            "(random 0.1%)") in a.summary()
    assert "AUC" in a.summary() and "random 0.5" in a.summary()


@pytest.mark.parametrize(
    "members, nonmembers, match",
    [
        ([1.0, np.nan, 2.0], [0.0, 1.0], "member_scores contains 1 NaN"),
        ([1.0, 2.0], [0.0, np.inf], "nonmember_scores contains 1 NaN/Inf"),
        ([1.0], [0.0, 1.0], "at least 2"),
        ([], [0.0, 1.0], "at least 2"),
        ([[1.0, 2.0], [3.0, 4.0]], [0.0, 1.0], "1-D array"),
    ],
)
def test_bad_scores(members, nonmembers, match):
    with pytest.raises(ValueError, match=match):
        membership_metrics(members, nonmembers)


def test_plot(rng):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    ax = membership_metrics(rng.normal(1, 1, 200), rng.normal(0, 1, 200), n_bootstrap=50).plot()
    assert ax.get_xscale() == "log"


def test_the_issue_case_tied_scores_on_a_straight_roc_segment():
    # scikit-learn's default roc_curve keeps only the ends of this segment and reads 1% here
    m = np.r_[np.arange(100, 80, -1.0), np.full(80, -50.0)]
    n = np.r_[np.arange(100, 80, -1.0), np.arange(80.0) - 200]
    res = membership_metrics(m, n, fprs=(0.05, 0.01), n_bootstrap=200)
    assert res.tpr[0.05].value == pytest.approx(naive_tpr_at_fpr(m.tolist(), n.tolist(), 0.05))
    assert res.tpr[0.05].value == pytest.approx(0.05)
    assert res.tpr[0.01].value == pytest.approx(0.01)
    # the stored ROC keeps every point: one per distinct score, plus (0, 0)
    assert res.roc_fpr.size == np.unique(np.r_[m, n]).size + 1
    assert res.roc_fpr[0] == 0 and res.roc_tpr[-1] == 1


@settings(max_examples=60, deadline=None)
@given(st_h.lists(st_h.integers(0, 5), min_size=2, max_size=25),
       st_h.lists(st_h.integers(0, 5), min_size=2, max_size=120))
def test_metrics_equal_brute_force_and_mark_what_they_cannot_resolve(members, nonmembers):
    res = membership_metrics(np.array(members, float), np.array(nonmembers, float),
                             fprs=(0.01, 0.05, 0.2), n_bootstrap=20)
    assert res.auc.value == pytest.approx(naive_auc(members, nonmembers))
    for f, iv in res.tpr.items():
        if f * len(nonmembers) < 1:
            assert not iv.resolved and iv.value is None and iv.low is None
            assert iv.to_dict()["min_resolvable_fpr"] == pytest.approx(1 / len(nonmembers))
        else:
            assert iv.resolved
            assert iv.value == pytest.approx(naive_tpr_at_fpr(members, nonmembers, f))
            assert iv.low <= iv.value <= iv.high or iv.collapsed
            assert iv.score_interval[0] <= iv.value <= iv.score_interval[1]


def test_the_bootstrap_reads_each_resample_with_the_same_rule(rng):
    m = rng.integers(0, 8, 40).astype(float)  # ties on purpose
    n = rng.integers(0, 6, 150).astype(float)
    idx_m, idx_n = rng.integers(0, m.size, (30, m.size)), rng.integers(0, n.size, (30, n.size))
    fprs = (0.01, 0.05, 0.3)
    auc, tprs = _bootstrap_roc(m, n, idx_m, idx_n, [_fp_limit(f, n.size) for f in fprs])
    for b in range(30):
        mb, nb = m[idx_m[b]], n[idx_n[b]]
        assert auc[b] == pytest.approx(naive_auc(mb.tolist(), nb.tolist()))
        assert auc[b] == pytest.approx(roc_auc(mb, nb))
        for f, t in zip(fprs, tprs):
            assert t[b] == pytest.approx(naive_tpr_at_fpr(mb.tolist(), nb.tolist(), f))
            assert t[b] == pytest.approx(tpr_at_fpr(mb, nb, f))


def test_few_members_warn_and_the_auc_interval_does_not_collapse():
    res = membership_metrics([5, 6, 7, 8.0], [0, 1, 2, 3.0], n_bootstrap=200)
    assert res.auc.value == 1 and res.auc.collapsed  # every resample separates perfectly
    lo, hi = res.auc.score_interval
    assert hi == 1 and lo < 0.65
    d = res.to_dict()
    assert d["auc"]["bootstrap_collapsed"] and d["auc"]["lead"] == "score"
    assert any(x.startswith("warning: only 4 members and 4 non-members") for x in d["notes"])
    text = res.summary()
    assert "AUC 1.0000, 95% CI [0.5823, 1.0000] (score interval; bootstrap [1.0000, 1.0000], " \
           "collapsed to a point) (random 0.5)" in text
    assert f"fewer than {MIN_PER_SIDE} on a side" in text
    enough = membership_metrics(np.arange(MIN_PER_SIDE) + 0.5, np.arange(MIN_PER_SIDE),
                                n_bootstrap=50)
    assert not any(x.startswith("warning: only") for x in enough.notes)


def _auc_coverage(n_side, delta, reps=300):
    """Coverage of the bootstrap and of the score interval of the AUC (the docs' table)."""
    true = norm.cdf(delta / np.sqrt(2))
    rng = np.random.default_rng(1000 * n_side + int(10 * delta))
    boot = score = 0
    for r in range(reps):
        a = membership_metrics(rng.normal(delta, 1, n_side), rng.normal(0, 1, n_side),
                               n_bootstrap=400, seed=r, fprs=()).auc
        boot += a.low <= true <= a.high
        score += a.score_interval[0] <= true <= a.score_interval[1]
    return boot / reps, score / reps


@pytest.mark.slow
@pytest.mark.parametrize("n_side", [5, 10, 20, 30, 50, 100])
@pytest.mark.parametrize("delta", [0.0, 1.0, 2.5, 4.0])
def test_auc_coverage_table(n_side, delta):
    boot, score = _auc_coverage(n_side, delta)
    print(f"N {n_side} delta {delta}: bootstrap {boot:.3f} score {score:.3f}")
    assert score >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("n_nonmembers", [100, 200, 300, 500, 1000])
@pytest.mark.parametrize("delta", [1.0, 2.0, 3.0])
def test_tpr_coverage_by_false_positives_allowed(n_nonmembers, delta):
    # the docs' table: the bootstrap of the TPR at 1% FPR under-covers below 10 false positives
    true = 1 - norm.cdf(norm.ppf(0.99) - delta)
    rng = np.random.default_rng(n_nonmembers + int(delta))
    hits = 0
    for r in range(300):
        iv = membership_metrics(rng.normal(delta, 1, 1000), rng.normal(0, 1, n_nonmembers),
                                n_bootstrap=400, seed=r, fprs=(0.01,)).tpr[0.01]
        hits += iv.low <= true <= iv.high
    print(f"{int(n_nonmembers * 0.01)} false positives, delta {delta}: bootstrap {hits / 300:.3f}")
    if n_nonmembers >= 1000:
        assert hits / 300 >= 0.9
