"""Calibration discipline: disjoint splits, thresholds and settings chosen away from the evaluation."""

import numpy as np
import pytest
from scipy.stats import norm

from memaudit.probes.calibration import (SplitManifest, balanced_accuracy, best_threshold,
                                         calibrated_attack, calibration_split)


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
