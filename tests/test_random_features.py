"""The random-features theory: constants, closed form vs gradient descent, spectrum edges."""

import numpy as np
import pytest

from reference_models.random_features import (ClosedForm, empirical_rho1, gaussian_equivalent,
                                              gd_on_matrices, loss_terms, rf_constants,
                                              sampled_matrices, simulate_sampled, theory_density)


def _sig3(x):
    return float(f"{x:.3g}")


@pytest.mark.parametrize(
    "t, delta, b, v2, s2",
    [(0.1, 0.1813, 0.2579, 0.01384, 0.01357), (0.01, 0.0198, 0.0852, 0.02554, 0.00187)],
)
def test_constants_match_the_reference_values(t, delta, b, v2, s2):
    c = rf_constants(t)
    for got, want in ((c.delta, delta), (c.b, b), (c.v2, v2), (c.s2, s2)):
        assert _sig3(got) == _sig3(want)
    assert _sig3(c.sigma_sq) == 0.394  # E[tanh(u)^2] = 0.3943
    assert _sig3(c.mu1) == 0.606 and _sig3(c.a) == 0.606  # a_t = mu_1 when sigma_x = 1


def test_constants_against_monte_carlo_and_identities():
    c = rf_constants(0.3, sigma_x=1.7)
    rng = np.random.default_rng(0)
    u, v, w = rng.standard_normal((3, 2_000_000))
    e, sd = np.exp(-0.3) * 1.7, np.sqrt(c.delta)
    s1, s2 = np.tanh(e * u + sd * v), np.tanh(e * u + sd * w)
    assert c.a == pytest.approx(np.mean(s1 * u) / e, abs=3e-3)
    assert c.b == pytest.approx(np.mean(s1 * v), abs=3e-3)
    assert c.v2 == pytest.approx(np.mean(s1 * s2) - c.a**2 * e**2, abs=3e-3)
    # Stein's lemma: b_t = sqrt(Delta) E[sigma'(Gamma u)] = sqrt(Delta) mu_1 / Gamma
    assert c.b == pytest.approx(sd * c.mu1 / np.sqrt(c.gamma2), rel=1e-7)
    assert c.gamma2 == pytest.approx(e**2 + c.delta)


def test_predicted_tau_mem_matches_the_notes():
    c = rf_constants(0.1)
    got = [c.tau_mem(64, pn) for pn in (4, 8, 16, 32)]
    np.testing.assert_allclose(got, [2556, 5899, 12878, 22138], rtol=1e-3)


def test_closed_form_equals_gradient_descent_on_the_same_matrices():
    m = gaussian_equivalent(12, 4, 2, 0.1, seed=1)
    taus = [0.5, 5, 50, 500, 3000]
    closed = ClosedForm(m).curves(taus)
    gd = gd_on_matrices(m, taus, dtau=0.005)
    for key in ("train", "test", "gen", "score"):
        np.testing.assert_allclose(gd[key], closed[key], atol=2e-4, rtol=1e-4)
    # and the closed-form readout gives the same losses as the spectral formulas
    B = ClosedForm(m).readout(50.0)
    for key, v in loss_terms(B, m).items():
        assert v == pytest.approx(closed[key][2], rel=1e-9, abs=1e-12)


def test_memorization_shows_in_the_curves():
    m = gaussian_equivalent(16, 16, 2, 0.1, seed=0)
    cf = ClosedForm(m)
    taus = np.logspace(-1, 6, 60)
    cur = cf.curves(taus)
    assert abs(cur["gen"][0]) < 1e-3  # train and test agree early
    assert cur["gen"][-1] > 0.5  # and split late: the model memorizes
    assert np.all(np.diff(cur["train"]) <= 1e-12)  # gradient flow never raises the train loss
    # E_score has an interior minimum (generalization before memorization)
    j = int(np.argmin(cur["score"]))
    assert 0 < j < len(taus) - 1 and cur["score"][j] < cur["score"][-1]


def test_sampled_matrices_approach_the_gaussian_equivalent():
    # real tanh features (V, U averaged over noise draws) against their Gaussian equivalents on the
    # same W and data: V ~ kappa1 sqrt(Delta) W / sqrt(d) holds up to Monte Carlo noise
    gep = gaussian_equivalent(80, 2, 1, 0.1, seed=3)
    smp = sampled_matrices(80, 2, 1, 0.1, seed=3, noise_draws=200)
    slope = np.sum(smp.V * gep.V) / np.sum(gep.V * gep.V)
    assert slope == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(smp.V.ravel(), gep.V.ravel())[0, 1] > 0.95
    assert np.trace(smp.U) / smp.p == pytest.approx(np.trace(gep.U) / gep.p, rel=0.03)


def test_sampled_features_dynamics_track_the_closed_form():
    taus = [10.0, 100.0, 1000.0]
    sim = simulate_sampled(40, 4, 2, 0.1, taus, dtau=1.0, seed=0, eval_draws=10, n_score=4000)
    closed = ClosedForm(gaussian_equivalent(40, 4, 2, 0.1, seed=0)).curves(taus)
    np.testing.assert_allclose(sim["train"], closed["train"], atol=0.05)
    np.testing.assert_allclose(sim["test"], closed["test"], atol=0.1)  # finite-d equivalence
    assert sim["gen"][-1] > sim["gen"][0] + 0.05  # the split between train and test opens up


def test_spectrum_edges_at_d100():
    # Fig. 4 setting: psi_p = 64, psi_n = 8, t = 0.01, one draw at d = 100 (p = 6400)
    c = rf_constants(0.01)
    m = gaussian_equivalent(100, 64, 8, 0.01, seed=0)
    ev = np.linalg.eigvalsh(m.U)
    lo, hi = empirical_rho1(ev, c, 100)
    # Theorem 3.2's asymptotic edges (psi_p, psi_n >> 1): within a few percent at psi_n = 8
    pred_lo, pred_hi = c.rho1_edges(64, 8)
    assert lo == pytest.approx(pred_lo, rel=0.06)
    assert hi == pytest.approx(pred_hi, rel=0.06)
    # Theorem 3.1's density, exact at any psi in high dimension: its support edges are closer still
    grid = np.linspace(0.8 * lo, 1.2 * hi, 800)
    support = grid[theory_density(grid, c, 64, 8) > 1e-3]
    assert lo == pytest.approx(support[0], rel=0.02)
    assert hi == pytest.approx(support[-1], rel=0.02)
    # the delta peak at s_t^2 holds p - n - d eigenvalues
    assert np.sum(np.isclose(ev, c.s2, rtol=1e-6)) == 6400 - 800 - 100


def test_theory_density_has_the_rho1_support_and_mass():
    c = rf_constants(0.01)
    pred_lo, pred_hi = c.rho1_edges(64, 8)
    grid = np.linspace(0.5 * pred_lo, 1.3 * pred_hi, 400)
    dens = theory_density(grid, c, 64, 8)
    assert np.isfinite(dens).all()
    support = grid[dens > 1e-2]
    assert support[0] == pytest.approx(pred_lo, rel=0.1)  # finite psi shifts the edges a little
    assert support[-1] == pytest.approx(pred_hi, rel=0.1)
    mass = np.sum(dens) * (grid[1] - grid[0])
    # rho_1 holds n - d eigenvalues (d more sit just above the s_t^2 peak): (psi_n - 1) / psi_p
    assert mass == pytest.approx((8 - 1) / 64, rel=0.02)


def test_bad_arguments():
    with pytest.raises(ValueError, match="t must be positive"):
        rf_constants(0)
    with pytest.raises(ValueError, match="must be positive"):
        gaussian_equivalent(0, 4, 2, 0.1)


def test_study_quick(tmp_path):
    pytest.importorskip("matplotlib")
    from reference_models.random_features.study import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("spectrum.png", "losses.png", "escore.png", "sampled.png", "heatmap.png",
                 "onset.png", "table.md", "results.json"):
        assert (tmp_path / name).exists(), name
    import json

    grid = json.loads((tmp_path / "results.json").read_text())["grid"]
    assert grid["psi_p"] == [4, 8] and grid["psi_n"] == [1, 2, 4]
    assert "psi_p = 8: 10%" in (tmp_path / "table.md").read_text()


def test_grid_cells_equal_the_closed_form_and_rise_in_order():
    from reference_models.random_features.study import grid_part

    taus = np.logspace(-1, 7, 161)
    g = grid_part(8, [8, 16], [1, 2, 4], 0.1, taus, [1e3, 1e4], [0, 1], fit_range=(1, 4))
    # one cell by hand: mean over the two draws of the closed form at tau = 1e3 and infinity
    cfs = [ClosedForm(gaussian_equivalent(8, 16, 2, 0.1, seed=s)) for s in (0, 1)]
    assert g["gen_at"][0, 1, 1] == pytest.approx(np.mean([c.curves([1e3])["gen"][0] for c in cfs]))
    assert g["gen_inf"][1, 1] == pytest.approx(np.mean([c.curves([np.inf])["gen"][0] for c in cfs]))
    assert np.all(g["gen_inf"] > 0)
    assert np.all(np.diff(g["rise"], axis=0) > 0)  # 10% before 50% before 90% in every cell
    # tau_mem grows with n and the fitted exponents are reported for each psi_p
    assert np.all(np.diff(g["tau_mem_predicted"], axis=1) > 0)
    assert set(g["exponents"]) == {"8", "16"} and g["exponents"]["8"]["psi_n"] == [1, 2, 4]


def test_mode_masks_split_the_curves():
    m = gaussian_equivalent(12, 8, 2, 0.1, seed=2)
    cf = ClosedForm(m)
    taus = [1.0, 100.0, 1e5]
    full = cf.curves(taus)
    same = cf.curves(taus, mask=np.ones(m.p, bool))
    none = cf.curves(taus, mask=np.zeros(m.p, bool))
    for k in full:
        np.testing.assert_allclose(same[k], full[k])
    np.testing.assert_allclose(none["train"], 1.0)  # nothing trained: B = 0
    np.testing.assert_allclose(none["gen"], 0.0, atol=1e-12)


def test_spectrum_has_d_low_modes_below_rho1_and_d_in_rho2():
    # n + d eigenvalues above the s_t^2 peak: d just above it, n - d in rho_1, d in rho_2
    m = gaussian_equivalent(20, 64, 4, 0.1, seed=0)
    ev = np.linalg.eigvalsh(m.U)
    above = ev[ev > m.c.s2 * (1 + 1e-6)]
    lo, hi = m.c.rho1_edges(64, 4)
    assert above.size == m.n + m.d
    assert np.sum(above < 0.9 * lo) == m.d
    assert np.sum((above >= 0.9 * lo) & (above <= 1.1 * hi)) == m.n - m.d
    assert np.sum(above > 10 * hi) == m.d
