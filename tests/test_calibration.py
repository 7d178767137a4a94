"""Calibration discipline: disjoint splits, thresholds and settings chosen away from the evaluation."""

import numpy as np
import pytest
from scipy.stats import norm

from memaudit.probes.calibration import (SplitManifest, balanced_accuracy, best_threshold,
                                         calibrated_attack, calibration_split)
from memaudit.probes.membership import membership_metrics
from memaudit.stats import wilson_interval


def test_split_is_stratified_disjoint_and_seeded():
    s = calibration_split(100, 60, fraction=0.3, seed=4, member_ids=[f"m{i}" for i in range(100)])
    assert len(s.calibration_members) == 30 and len(s.evaluation_members) == 70
    assert len(s.calibration_nonmembers) == 18 and len(s.evaluation_nonmembers) == 42
    assert not set(s.calibration_members) & set(s.evaluation_members)
    assert not set(s.calibration_nonmembers) & set(s.evaluation_nonmembers)
    assert sorted(np.r_[s.calibration_members, s.evaluation_members].tolist()) == list(range(100))
    again = calibration_split(100, 60, fraction=0.3, seed=4)
    np.testing.assert_array_equal(again.evaluation_nonmembers, s.evaluation_nonmembers)
    d = s.to_dict()
    assert d["seed"] == 4 and d["calibration"]["members"][0].startswith("m")
    with pytest.raises(ValueError, match="overlap"):
        SplitManifest(np.array([0, 1]), np.array([0, 1]), np.array([1, 2]), np.array([2, 3]),
                      np.arange(3), np.arange(4), 0.5, None)
    with pytest.raises(ValueError, match="at least 2"):
        calibration_split(3, 40, fraction=0.5)


def test_best_threshold_is_the_brute_force_maximum(rng):
    m, n = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 55).round(1)  # ties on purpose
    thr, bal = best_threshold(m, n)
    grid = np.r_[np.unique(np.r_[m, n]), np.inf]
    brute = [balanced_accuracy(m, n, t) for t in grid]
    assert bal == pytest.approx(max(brute)) and balanced_accuracy(m, n, thr) == pytest.approx(bal)
    assert thr == grid[int(np.argmax(brute))]


def test_picks_the_informative_setting_and_reports_on_evaluation(rng):
    n = 400
    members = {t: rng.normal(0, 1, n) for t in range(5)}
    nonmembers = {t: rng.normal(0, 1, n) for t in range(5)}
    members[3] = rng.normal(1.0, 1, n)  # only setting 3 carries a signal (Delta = 1)
    split = calibration_split(n, n, seed=0)
    res = calibrated_attack(members, nonmembers, split, n_bootstrap=300)
    assert res.setting == 3 and not res.optimistic
    want = norm.cdf(1 / np.sqrt(2))
    assert res.evaluation.auc.low <= want <= res.evaluation.auc.high
    # the Bayes rule for two unit Gaussians one apart: threshold 0.5, balanced accuracy Phi(0.5)
    assert res.balanced_accuracy.low <= norm.cdf(0.5) <= res.balanced_accuracy.high
    assert abs(res.threshold - 0.5) < 0.35
    assert res.evaluation.n_members == len(split.evaluation_members)


def test_choosing_on_the_evaluation_split_is_refused_or_flagged(rng):
    n = 30  # small sets and many useless settings: the best of them looks good by chance
    members = {t: rng.normal(0, 1, n) for t in range(60)}
    nonmembers = {t: rng.normal(0, 1, n) for t in range(60)}
    split = calibration_split(n, n, seed=1)
    with pytest.raises(ValueError, match="optimistic"):
        calibrated_attack(members, nonmembers, split, select_on="evaluation")
    honest = calibrated_attack(members, nonmembers, split, n_bootstrap=300)
    flagged = calibrated_attack(members, nonmembers, split, select_on="evaluation",
                                allow_optimistic=True, n_bootstrap=300)
    assert flagged.optimistic and "OPTIMISTIC" in flagged.summary()
    assert honest.evaluation.auc.low <= 0.5 <= honest.evaluation.auc.high
    assert flagged.evaluation.auc.value > 0.7  # the max of 60 noisy AUCs on 15 vs 15 items
    assert flagged.evaluation.auc.value > honest.evaluation.auc.value + 0.15


def test_bad_scores(rng):
    split = calibration_split(10, 10)
    with pytest.raises(ValueError, match="has 9 scores"):
        calibrated_attack(rng.normal(size=9), rng.normal(size=10), split)
    with pytest.raises(ValueError, match="NaN"):
        calibrated_attack(np.r_[rng.normal(size=9), np.nan], rng.normal(size=10), split)
    with pytest.raises(ValueError, match="same settings"):
        calibrated_attack({1: rng.normal(size=10)}, {2: rng.normal(size=10)}, split)


def test_balanced_accuracy_interval_stays_informative_at_one():
    # a perfect attack: every bootstrap resample gives 1, the MOVER-Wilson interval does not
    split = calibration_split(40, 40, seed=0)
    res = calibrated_attack(np.arange(40.0) + 100, np.arange(40.0), split, n_bootstrap=200)
    ba = res.balanced_accuracy
    assert ba.value == 1 and ba.collapsed
    m, n = len(split.evaluation_members), len(split.evaluation_nonmembers)
    lo_m, lo_n = wilson_interval(m, m)[0], wilson_interval(n, n)[0]
    assert ba.score_interval == pytest.approx((1 - 0.5 * np.hypot(1 - lo_m, 1 - lo_n), 1.0))
    assert "balanced accuracy at the calibrated threshold 1.0000, 95% CI [0.8861, 1.0000] " \
           "(Wilson, MOVER; bootstrap [1.0000, 1.0000], collapsed to a point)" in res.summary()


def test_balanced_accuracy_bootstrap_and_mover_agree_in_the_middle(rng):
    n = 600
    split = calibration_split(n, n, seed=2)
    res = calibrated_attack(rng.normal(1, 1, n), rng.normal(0, 1, n), split, n_bootstrap=2000)
    ba = res.balanced_accuracy
    assert ba.low == pytest.approx(ba.score_interval[0], abs=0.01)
    assert ba.high == pytest.approx(ba.score_interval[1], abs=0.01)


def test_streams_come_from_a_seed_sequence(rng):
    n = 120
    m, nm = rng.normal(1, 1, n), rng.normal(0, 1, n)
    split = calibration_split(n, n, seed=5)
    res = calibrated_attack(m, nm, split, n_bootstrap=100, seed=5)
    first, second = np.random.SeedSequence(5).spawn(2)
    alone = membership_metrics(m[split.evaluation_members], nm[split.evaluation_nonmembers],
                               n_bootstrap=100, seed=first)
    assert res.evaluation.to_dict() == alone.to_dict()
    assert "seed 5, stream (0,)" in res.evaluation.method
    again = calibrated_attack(m, nm, split, n_bootstrap=100, seed=5)
    assert again.balanced_accuracy == res.balanced_accuracy
    other = calibrated_attack(m, nm, split, n_bootstrap=100, seed=6)
    assert other.balanced_accuracy.low != res.balanced_accuracy.low or \
        other.balanced_accuracy.high != res.balanced_accuracy.high


def test_html_marks_what_cannot_be_trusted():
    from memaudit.report import membership_html

    split = calibration_split(12, 12, seed=0)
    res = calibrated_attack(np.arange(12.0) + 100, np.arange(12.0), split, n_bootstrap=50)
    page = membership_html(res)
    assert "<b>not resolved</b>: 6 non-members resolve FPRs of 1/6 or more" in page
    assert '<p class="note">warning: only 6 members and 6 non-members' in page
    assert "collapsed to a point" in page and "score interval" in page
