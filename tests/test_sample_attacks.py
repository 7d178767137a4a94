"""Sample-only membership attacks: copies are caught, fresh samples are not; the KDE is exact."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from memaudit.probes.membership import membership_metrics
from memaudit.probes.sample_attacks import (density_ratio_attack, distance_attack,
                                            kde_log_density)


def test_kde_equals_brute_force(rng):
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(50, 3))
    h = 0.4
    want = [np.log(np.mean([multivariate_normal(yy, h * h * np.eye(3)).pdf(xx) for yy in y])) for xx in x]
    np.testing.assert_allclose(kde_log_density(x, y, h, block=3), want, rtol=1e-10)


def test_distance_attack_finds_copied_members(rng):
    members, nonmembers = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
    copies = members[:100] + 0.05 * rng.normal(size=(100, 10))
    fresh = rng.normal(size=(300, 10))
    leaky = distance_attack(np.r_[members, nonmembers], np.r_[copies, fresh])
    res = membership_metrics(leaky[:200], leaky[200:], n_bootstrap=200)
    assert res.auc.value > 0.7 and res.tpr[0.01].value > 0.4  # half the members were copied
    honest = distance_attack(np.r_[members, nonmembers], rng.normal(size=(400, 10)))
    res0 = membership_metrics(honest[:200], honest[200:], n_bootstrap=300)
    assert res0.auc.low <= 0.5 <= res0.auc.high
    assert np.all(leaky[:100] > -0.5)  # a copy sits within its noise of the member
    with pytest.raises(ValueError, match="k=5"):
        distance_attack(members, copies[:4], k=5)


def test_density_ratio_attack(rng):
    members, nonmembers, reference = (rng.normal(size=(150, 4)) for _ in range(3))
    over = np.r_[members + 0.1 * rng.normal(size=(150, 4)), rng.normal(size=(150, 4))]
    s = density_ratio_attack(np.r_[members, nonmembers], over, reference)
    # Scott's bandwidth (~0.5 here) smooths copies made with noise 0.1: a clear but partial signal
    assert membership_metrics(s[:150], s[150:], n_bootstrap=200).auc.low > 0.6
    s0 = density_ratio_attack(np.r_[members, nonmembers], rng.normal(size=(300, 4)), reference)
    res0 = membership_metrics(s0[:150], s0[150:], n_bootstrap=300)
    assert res0.auc.low <= 0.5 <= res0.auc.high
    s_pca = density_ratio_attack(np.r_[members, nonmembers], over, reference, n_components=2)
    assert s_pca.shape == (300,)
    with pytest.raises(ValueError, match="bandwidths"):
        density_ratio_attack(members, over, reference, bandwidth=0.0)
    with pytest.raises(ValueError, match="features per item"):
        density_ratio_attack(members, over[:, :3], reference)
