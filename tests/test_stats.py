import numpy as np
import pytest
from scipy import stats as st

from memaudit.stats import bootstrap_rate, rate, rate_difference, wilson_interval


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
