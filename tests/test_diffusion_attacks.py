"""Diffusion membership attacks on closed-form denoisers: one that memorizes its training set
exactly (the empirical optimal denoiser) and one that knows the true data law (no memorization)."""

import numpy as np
import pytest
from scipy.special import softmax

from memaudit.probes.calibration import calibrated_attack, calibration_split
from memaudit.probes.diffusion_attacks import NoisePredictor, loss_attack, pia_attack, secmi_attack
from memaudit.probes.membership import membership_metrics

T = 1000
AB = np.cumprod(1 - np.linspace(1e-4, 2e-2, T))


def empirical_denoiser(train):
    """eps* of the empirical training distribution: a model that has memorized ``train``."""
    def eps(x, t):
        ab = AB[t][:, None]
        d2 = ((x[:, None, :] - np.sqrt(ab)[:, :, None] * train[None]) ** 2).sum(-1)
        w = softmax(-d2 / (2 * (1 - ab)), axis=1)
        x0 = w @ train
        return ((x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)).astype(np.float32)
    return NoisePredictor(eps, AB)


def gaussian_denoiser():
    """eps* of the true law N(0, I): E[x0 | x_t] = sqrt(ab) x_t, so eps = sqrt(1 - ab) x_t."""
    return NoisePredictor(lambda x, t: (np.sqrt(1 - AB[t])[:, None] * x).astype(np.float32), AB)


@pytest.fixture
def sets(rng):
    return rng.standard_normal((60, 6)), rng.standard_normal((60, 6))


# SecMI's t-error is also small for non-members that lie near a training point (the empirical
# denoiser pulls them onto it), so it separates less sharply in this 6-dimensional toy
@pytest.mark.parametrize("attack, kw, min_auc", [(loss_attack, {"timesteps": (20, 100)}, 0.95),
                                                 (pia_attack, {"timesteps": (20, 100)}, 0.95),
                                                 (secmi_attack, {"timesteps": (100,), "interval": 10}, 0.8)])
def test_memorizing_model_is_caught_and_a_generalizing_one_is_not(sets, attack, kw, min_auc):
    members, nonmembers = sets
    mem = empirical_denoiser(members)
    for t, s_m in attack(mem, members, **kw).items():
        s_n = attack(mem, nonmembers, **kw)[t]
        assert membership_metrics(s_m, s_n, n_bootstrap=200).auc.value > min_auc
    gen = gaussian_denoiser()
    t0 = kw["timesteps"][-1]
    res = membership_metrics(attack(gen, members, **kw)[t0], attack(gen, nonmembers, **kw)[t0],
                             n_bootstrap=300)
    assert res.auc.low <= 0.5 <= res.auc.high


def test_loss_of_the_gaussian_denoiser_has_its_closed_form(rng):
    # error = ab eps - sqrt(ab (1 - ab)) x0, so E|error|^2 per dimension = ab_t
    x = rng.standard_normal((4000, 5))
    scores = loss_attack(gaussian_denoiser(), x, (50, 400), n_draws=2)
    for t, s in scores.items():
        assert -s.mean() == pytest.approx(AB[t], rel=0.03)


def test_scores_do_not_depend_on_the_batch(sets):
    members, _ = sets
    mem = empirical_denoiser(members)
    a = loss_attack(mem, members, (500,), seed=3)[500]
    b = loss_attack(NoisePredictor(mem.eps, AB, batch_size=7), members, (500,), seed=3)[500]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, loss_attack(mem, members, (500,), seed=4)[500], rtol=1e-3, atol=0)


def test_timestep_chosen_on_calibration(sets):
    members, nonmembers = sets
    mem = empirical_denoiser(members)
    sm, sn = loss_attack(mem, members, (5, 300, 900)), loss_attack(mem, nonmembers, (5, 300, 900))
    res = calibrated_attack(sm, sn, calibration_split(60, 60, seed=0), n_bootstrap=200)
    assert res.setting in (5, 300) and res.evaluation.auc.value > 0.9


def test_bad_input(sets):
    members, _ = sets
    gen = gaussian_denoiser()
    with pytest.raises(ValueError, match="timesteps"):
        loss_attack(gen, members, (0,))
    with pytest.raises(ValueError, match="multiples"):
        secmi_attack(gen, members, (105,), interval=10)
    with pytest.raises(ValueError, match="NaN"):
        pia_attack(gen, np.full((3, 6), np.nan))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        NoisePredictor(lambda x, t: x, np.array([1.5, 0.5]))
