"""Membership-inference statistics on attack scores: closed forms, brute force, controls."""

import numpy as np
import pytest
from scipy.stats import norm

from memaudit.probes.membership import membership_metrics, tpr_at_fpr
from naive import naive_tpr_at_fpr


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
    assert any("cannot resolve an FPR of 0.1%" in x for x in d["notes"])  # 500 < 1000 non-members
    assert "AUC" in a.summary()


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
