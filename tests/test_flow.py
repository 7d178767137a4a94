"""Flow matching (rectified flow) beside the DDPM: the path, the loss, the ODE sampler, the flow as a
noise predictor, and a flow run trained, resumed, sampled, tracked and attacked as a DDPM run is."""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from reference_models.ddpm.checkpoints import load_checkpoint, read_stats  # noqa: E402
from reference_models.ddpm.config import TrainConfig  # noqa: E402
from reference_models.ddpm.diffusion import Schedule  # noqa: E402
from reference_models.ddpm.flow import (FlowAsNoise, flow_levels, flow_path, flow_sample,  # noqa: E402
                                        flow_schedule, flow_training_loss, matched_level)
from reference_models.ddpm.objectives import check_sampler, eval_loss  # noqa: E402
from reference_models.ddpm.train import train  # noqa: E402

T = 1000


class GaussianVelocity(torch.nn.Module):
    """The exact velocity field E[eps - x0 | x_s = x] for x0 ~ N(mu, sigma^2) per coordinate."""

    def __init__(self, mu, sigma):
        super().__init__()
        self.mu, self.sigma = mu, sigma

    def forward(self, x, k):
        s = flow_levels(T)[k].float().reshape(-1, *([1] * (x.ndim - 1)))
        var = (1 - s) ** 2 * self.sigma**2 + s**2
        centred = x - (1 - s) * self.mu
        e_x0 = self.mu + (1 - s) * self.sigma**2 / var * centred
        e_eps = s / var * centred
        return e_eps - e_x0


class PointVelocity(torch.nn.Module):
    """The exact velocity field when the data set is the single item ``c``: (x - c) / s."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, k):
        s = flow_levels(T)[k].float().reshape(-1, *([1] * (x.ndim - 1)))
        return (x - self.c) / s


def test_the_path_ends_at_data_and_noise():
    x0, eps = torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    xs, v = flow_path(x0, torch.tensor([0, T - 1, 500]), eps, T)
    torch.testing.assert_close(xs[0], x0[0])
    torch.testing.assert_close(xs[1], eps[1])
    torch.testing.assert_close(v, eps - x0)
    s = 500 / (T - 1)
    torch.testing.assert_close(xs[2], (1 - s) * x0[2] + s * eps[2])


def test_the_exact_field_of_one_item_has_zero_loss_and_a_wrong_one_does_not():
    c = torch.randn(1, 8, 8)
    x0 = c.expand(16, 1, 8, 8).clone()
    g = torch.Generator().manual_seed(0)
    assert float(flow_training_loss(PointVelocity(c), x0, T, g)) < 1e-8
    wrong = PointVelocity(c + 0.1)
    assert float(flow_training_loss(wrong, x0, T, torch.Generator().manual_seed(0))) > 1e-4
    cfg = TrainConfig(objective="flow", image_size=8)
    assert eval_loss(cfg, PointVelocity(c), x0, draws=2, seed=0) < 1e-8


def test_the_ode_sampler_carries_noise_to_the_gaussian_data_law():
    """With the exact field of N(mu, sigma^2) the ODE is the marginal-preserving flow: Euler with
    200 steps lands on the data law (mean and std within sampling error of 4,000 samples)."""
    mu, sigma = 1.5, 0.4
    x = flow_sample(GaussianVelocity(mu, sigma), (1, 1), list(range(4000)), T, steps=200,
                    batch_size=1000).numpy().ravel()
    assert abs(x.mean() - mu) < 4 * sigma / np.sqrt(4000) + 0.01
    assert abs(x.std() - sigma) < 0.02


def test_ode_samples_are_one_per_seed_whatever_the_batch():
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c = torch.nn.Conv1d(1, 1, 3, padding=1)

        def forward(self, x, k):
            return self.c(x)

    model = Conv()
    a = flow_sample(model, (1, 16), [3, 4, 5], T, steps=7)
    b = flow_sample(model, (1, 16), [5, 9], T, steps=7, batch_size=1)
    torch.testing.assert_close(a[2], b[0])  # the same to float rounding (batched kernels)
    assert not torch.allclose(a[0], a[1])
    assert model.training  # restored after sampling in eval mode
    with pytest.raises(ValueError, match="1 to 999 steps"):
        flow_sample(model, (1, 16), [0], T, steps=0)


def test_the_flow_is_an_exact_noise_predictor_on_its_schedule():
    """x on the variance-preserving scale of flow_schedule, the true velocity in: FlowAsNoise returns
    the true noise, at every level (closed form x_s + (1 - s) v = eps)."""
    x0, eps = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    k = torch.tensor([1, 7, 126, 400, 800, 990])
    _, v = flow_path(x0, k, eps, T)
    ab = flow_schedule(T).alphas_cumprod[k].float().reshape(-1, 1, 1, 1)

    class Oracle(torch.nn.Module):
        def forward(self, x, kk):
            return v

    got = FlowAsNoise(Oracle(), T)(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, k)
    torch.testing.assert_close(got, eps, atol=1e-4, rtol=0)
    sched = flow_schedule(T)
    assert float(sched.alphas_cumprod[0]) == 1.0 and float(sched.alphas_cumprod[-1]) == 0.0
    assert bool((sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1]).all())
    torch.testing.assert_close(torch.cumprod(1 - sched.betas, 0), sched.alphas_cumprod)


def test_the_logged_flow_level_has_the_ddpm_noise_to_signal_ratio():
    lin = Schedule.linear(T)
    for index in (10, 40, 200):
        k = matched_level(lin, index, T)
        ab = float(lin.alphas_cumprod[index])
        s = k / (T - 1)
        assert abs(s / (1 - s) - np.sqrt((1 - ab) / ab)) < 2e-3 * (1 + np.sqrt((1 - ab) / ab))
    assert matched_level(lin, 40, T) == 126


def test_samplers_must_fit_the_objective():
    assert check_sampler("flow", None) == "ode" and check_sampler("ddpm", None) == "ddim"
    with pytest.raises(ValueError, match="flow run samples with ode"):
        check_sampler("flow", "ddim")
    with pytest.raises(ValueError, match="for flow-matching runs"):
        check_sampler("ddpm", "ode")
    with pytest.raises(ValueError, match="objective must be"):
        train(TrainConfig(objective="score"), "unused-folder", log=lambda m: None)


def _flow_cfg(**kw):
    base = dict(objective="flow", n_train=16, n_holdout=8, steps=40, n_checkpoints=5, batch_size=8,
                width=8, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_a_killed_flow_run_resumes_to_the_same_weights(tmp_path):
    cfg = _flow_cfg()
    train(cfg, tmp_path / "straight", log=lambda m: None)
    train(cfg, tmp_path / "killed", stop_after=20, log=lambda m: None)
    train(cfg, tmp_path / "killed", log=lambda m: None)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000040.safetensors")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "step_00000040.safetensors")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    stats = read_stats(tmp_path / "straight")
    assert {r["eval_index"] for r in stats} == {126}
    assert b["config"].objective == "flow"


def test_the_objectives_share_the_draws_but_not_the_loss(tmp_path):
    """Same seed: the same batches, levels and noise; different targets, so different weights."""
    ddpm = train(_flow_cfg(objective="ddpm", steps=6, n_checkpoints=2), tmp_path / "d", log=lambda m: None)
    flow = train(_flow_cfg(steps=6, n_checkpoints=2), tmp_path / "f", log=lambda m: None)
    np.testing.assert_array_equal(np.load(ddpm / "split.npz")["train_indices"],
                                  np.load(flow / "split.npz")["train_indices"])
    a = load_checkpoint(ddpm / "checkpoints" / "step_00000006.safetensors")["model"]
    b = load_checkpoint(flow / "checkpoints" / "step_00000006.safetensors")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_a_flow_run_is_tracked_and_attacked_like_a_ddpm_run(tmp_path):
    from reference_models.ddpm.membership import membership_over_training, noise_predictor
    from reference_models.ddpm.track import samples_at_checkpoints, track_run
    from reference_models.ts_diffusion import sample_fn

    cfg = _flow_cfg(data="ts-sines", seq_len=16, steps=8, n_checkpoints=2, n_holdout=16)
    run = train(cfg, tmp_path / "ts", log=lambda m: None)
    with pytest.raises(ValueError, match="flow run samples with ode"):
        samples_at_checkpoints(run, 4, sampler="ddim")
    curve = track_run(run, n_samples=10, steps=5)
    saved = json.loads((run / "tracking.json").read_text())
    assert saved["sampler"] == "ode" and saved["objective"] == "flow" and saved["ode_steps"] == 5
    assert curve.steps.tolist() == [1, 8]
    with np.load(run / "samples.npz") as z:
        assert str(z["key"]).startswith("ode-5-10-")
        last = z["step_8"]
    ck = run / "checkpoints" / "step_00000008.safetensors"
    windows = sample_fn(ck, steps=5)(range(10))  # (n, length, channels), data units
    mean = load_checkpoint(ck)["data_mean"]
    np.testing.assert_allclose(windows[..., 0], last[:, 0] + mean, rtol=1e-5, atol=1e-5)
    m = noise_predictor(ck)
    assert m.alphas_cumprod[0] == 1.0 and len(m.alphas_cumprod) == T - 1  # s = 1 has no signal
    out = membership_over_training(run, n_bootstrap=10)
    assert [r["step"] for r in out["rows"]] == [1, 8]
    assert all(0 <= r["loss"]["auc"]["value"] <= 1 for r in out["rows"])


def test_the_batched_path_trains_a_flow_run_as_train_does(tmp_path):
    from reference_models.ddpm.batched import train_batched

    cfg = _flow_cfg(steps=12, n_checkpoints=3, dropout=0.0)
    a = train(cfg, tmp_path / "loop", log=lambda m: None)
    b = train_batched([(cfg, tmp_path / "vmap")], log=lambda m: None)[0]
    la = [r["loss"] for r in read_stats(a)]
    lb = [r["loss"] for r in read_stats(b)]
    # step 1 (same weights, batch and noise) to float32 rounding: the vmapped kernels may reduce
    # in another order on some CPUs (measured: 1.4039055 against 1.4039054)
    np.testing.assert_allclose(lb[0], la[0], rtol=1e-6)
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    with pytest.raises(ValueError, match="must share 'objective'"):
        train_batched([(cfg, tmp_path / "x"), (_flow_cfg(objective="ddpm", seed=1), tmp_path / "y")],
                      log=lambda m: None)


def test_the_sweep_refuses_a_ddpm_sampler_for_a_flow_sweep(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reference_models.ddpm.sweep", "--setting", "ts-sines",
                        "--objective", "flow", "--sampler", "ddim", "--out", str(tmp_path / "s")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "flow run samples with ode, not 'ddim'" in r.stderr.strip().splitlines()[-1]


def test_the_track_command_refuses_a_ddpm_sampler_for_a_flow_run_in_one_line(tmp_path):
    run = train(_flow_cfg(steps=2, n_checkpoints=1), tmp_path / "f", log=lambda m: None)
    r = subprocess.run([sys.executable, "-m", "reference_models.ddpm.track", "--run", str(run),
                        "--sampler", "ddim", "--n-samples", "4"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "flow run samples with ode, not 'ddim'" in r.stderr.strip().splitlines()[-1]

