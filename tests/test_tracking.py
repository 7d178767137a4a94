"""Memorization over training, on synthetic sample sets with known onsets."""

import numpy as np
import pytest

from memaudit.tracking import (energy_distance, estimate_tau_gen, estimate_tau_mem,
                               frechet_distance, tau_gen_threshold, track_memorization)


def test_frechet_distance_closed_form(rng):
    # two Gaussians with known means and covariances: ||mu||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))
    a = rng.normal(0, 1, size=(200_000, 2))
    b = rng.normal(0, 2, size=(200_000, 2)) + np.array([3.0, 0.0])
    want = 9 + 2 * (1 + 4 - 2 * 2)
    assert frechet_distance(a, b) == pytest.approx(want, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_rules_on_known_curves():
    steps = [10, 20, 40, 80, 160]
    assert estimate_tau_mem(steps, [0, 0, 0, 0.01, 0.1], [0, 0, 0.004, 0.03, 0.2]) == 80
    assert estimate_tau_mem(steps, [0] * 5, [0, 0, 0.004, 0.03, 0.2], "level", 0.01) == 80
    assert estimate_tau_mem(steps, [0] * 5, [0] * 5) is None
    # threshold on a log scale: 1.0 * (10 / 1.0) ** 0.05 = 1.122
    assert estimate_tau_gen(steps, [10, 3, 1.12, 1.0, 1.2]) == 40
    assert estimate_tau_gen(steps, [10, 3, 1.13, 1.0, 1.2]) == 80
    # an astronomically bad start does not pull tau_gen early
    assert estimate_tau_gen(steps, [1e6, 6e4, 5e3, 3.1e3, 3e3]) == 80


def test_tau_gen_linear_scale_ignores_a_noisy_floor_near_zero():
    # a distance whose floor is near zero and scatters by 2x between checkpoints (the energy
    # distance of a converged model): on a log scale 5% of the improvement is inside the scatter
    steps = [10, 20, 40, 80, 160, 320]
    q = [20.0, 4.0, 0.9, 0.4, 0.5, 0.2]
    assert tau_gen_threshold(q, 0.05, "log") == pytest.approx(0.2 * 100**0.05)
    assert estimate_tau_gen(steps, q) == 320  # the one noise dip below 0.25
    assert tau_gen_threshold(q, 0.05, "linear") == pytest.approx(0.2 + 0.05 * 19.8)
    assert estimate_tau_gen(steps, q, scale="linear") == 40  # the end of the fast descent
    with pytest.raises(ValueError, match="'log' or 'linear'"):
        estimate_tau_gen(steps, q, scale="sqrt")
    with pytest.raises(ValueError, match="tolerance"):
        estimate_tau_gen(steps, q, tolerance=1.5)


def _synthetic_run(rng, n_train=400, n=400, d=16):
    """Samples whose quality converges by step 400 and which start copying at step 1,600."""
    train = rng.normal(size=(n_train, d))
    holdout = rng.normal(size=(600, d))
    copy_share = {100: 0, 200: 0, 400: 0, 800: 0, 1600: 0.05, 3200: 0.3}
    shift = {100: 3.0, 200: 1.0, 400: 0.0, 800: 0.0, 1600: 0.0, 3200: 0.0}
    samples = {}
    for step, share in copy_share.items():
        s = rng.normal(size=(n, d)) + shift[step]
        k = int(share * n)
        s[:k] = train[rng.choice(n_train, k, replace=False)] + rng.normal(0, 0.01, (k, d))
        samples[step] = s
    return samples, train, holdout


def test_known_onsets_are_found(rng):
    samples, train, holdout = _synthetic_run(rng)
    curve = track_memorization(samples, train, holdout, seed=1)
    assert curve.steps.tolist() == [100, 200, 400, 800, 1600, 3200]
    np.testing.assert_allclose(curve.f_mem, [0, 0, 0, 0, 0.05, 0.3])
    assert curve.tau_mem == 1600
    assert curve.tau_gen == 400
    assert curve.recommended in (400, 800)  # best quality before copying starts
    assert curve.control.tolist() == [0.0] * 6
    d = curve.to_dict()
    assert d["tau_mem"] == 1600 and "excess" in d["rules"]["tau_mem"]
    assert "tau_mem = 1600" in curve.summary()


def test_without_holdout_and_with_a_feature_extractor(rng):
    samples, train, holdout = _synthetic_run(rng)
    curve = track_memorization(samples, train, seed=1)
    assert curve.tau_mem == 1600 and curve.quality is None and curve.tau_gen is None
    feats = track_memorization(samples, train, holdout, features=lambda x: x[:, :4], seed=1)
    assert feats.tau_gen == 400 and "user features" in feats.rules["quality"]


def test_no_memorization_means_no_tau_mem(rng):
    train = rng.normal(size=(200, 8))
    samples = {s: rng.normal(size=(300, 8)) for s in (1, 10, 100)}
    curve = track_memorization(samples, train, rng.normal(size=(300, 8)))
    assert curve.tau_mem is None and curve.recommended is not None
    # said in words wherever it is shown (summary, report section, runner notes), never "None"
    assert "tau_mem = not reached at any checkpoint" in curve.window_text()
    assert "None" not in curve.summary()


def test_without_quality_tau_gen_is_said_to_be_unresolved(rng):
    samples, train, _ = _synthetic_run(rng)
    curve = track_memorization(samples, train, seed=1)
    assert curve.window_text().startswith("tau_gen = not resolved") and "tau_mem = 1600" in \
        curve.window_text()


def test_bad_input(rng):
    with pytest.raises(ValueError, match="samples_by_step is empty"):
        track_memorization({}, rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="samples at step 3 has 3 features"):
        track_memorization({3: rng.normal(size=(4, 3))}, rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="tau_mem_rule"):
        track_memorization({1: rng.normal(size=(4, 2))}, rng.normal(size=(5, 2)), tau_mem_rule="x")


def test_energy_distance_against_scipy_and_closed_properties(rng):
    from scipy.stats import energy_distance as scipy_energy

    a, b = rng.normal(size=300), rng.normal(0.5, 1.5, size=200)
    assert energy_distance(a[:, None], b[:, None]) == pytest.approx(scipy_energy(a, b), rel=1e-9)
    x = rng.normal(size=(100, 3))
    assert energy_distance(x, x) == pytest.approx(0, abs=1e-7)
    # samples collapsed onto the two modes of the mixture are far from fresh mixture draws
    mu = np.ones(4)
    signs = rng.choice([-1.0, 1.0], size=(2000, 1))
    fresh = signs * mu + rng.normal(size=(2000, 4))
    good = rng.choice([-1.0, 1.0], size=(2000, 1)) * mu + rng.normal(size=(2000, 4))
    collapsed = rng.choice([-1.0, 1.0], size=(2000, 1)) * mu + 0.01 * rng.normal(size=(2000, 4))
    assert energy_distance(collapsed, fresh) > 5 * energy_distance(good, fresh)
    with pytest.raises(ValueError, match="features per item"):
        energy_distance(x, rng.normal(size=(10, 2)))


def test_quality_choice_is_recorded(rng):
    train = rng.normal(size=(50, 4))
    hold = rng.normal(size=(80, 4))
    samples = {10: rng.normal(size=(60, 4)) * 3, 20: rng.normal(size=(60, 4))}
    curve = track_memorization(samples, train, hold, quality="energy", n_bootstrap=50)
    assert curve.quality_name.startswith("energy distance")
    assert curve.quality[1] < curve.quality[0]
    assert curve.quality[0] == pytest.approx(energy_distance(samples[10], hold))
    with pytest.raises(ValueError, match="quality must be"):
        track_memorization(samples, train, hold, quality="fid")
