"""The reference DDPM: U-Net shapes and sizes, the loss, samplers, exact resume, data loading."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from reference_models.data.images import load_celeba_folder, load_digits, split  # noqa: E402
from reference_models.ddpm.checkpoints import load_checkpoint  # noqa: E402
from reference_models.ddpm.config import TrainConfig, build_model  # noqa: E402
from reference_models.ddpm.diffusion import (Schedule, ddim_sample, ddpm_sample,  # noqa: E402
                                             denoising_loss, ou_time)
from reference_models.ddpm.train import checkpoint_steps, prepare_data, train  # noqa: E402
from reference_models.ddpm.unet import UNet  # noqa: E402


@pytest.mark.parametrize("width, count", [(8, 263_089), (16, 1_026_657), (32, 4_055_233),
                                          (48, 9_085_729), (64, 16_118_145)])
def test_parameter_counts_match_the_paper(width, count):
    # the paper's ~4M at W = 32 (PAPER-NOTES: 0.263/1.027/4.055/9.086/16.12 M with (1, 2, 4))
    assert UNet(width).n_parameters() == count
    assert UNet(width).n_parameters(trainable_only=True) == count - 1000 * width  # frozen table


@pytest.mark.parametrize("size, mults, attention", [(32, (1, 2, 4), (False, True, True)),
                                                    (16, (1, 2, 4), (False, True, True)),
                                                    (8, (1, 2), (False, True)), (8, (1,), (False,))])
def test_unet_shapes(size, mults, attention):
    m = UNet(8, mults, attention)
    x = torch.randn(3, 1, size, size)
    assert m(x, torch.tensor([1, 500, 999])).shape == x.shape


def test_unet_bad_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(8)(torch.randn(1, 1, 10, 10), torch.tensor([1]))
    with pytest.raises(ValueError, match="multiple of 8"):
        UNet(12)
    with pytest.raises(ValueError, match="one flag per level"):
        UNet(8, (1, 2), (True,))


def test_schedule_and_ou_time():
    s = Schedule.linear()
    assert s.n_steps == 1000 and float(s.betas[0]) == pytest.approx(1e-4)
    assert float(s.betas[-1]) == pytest.approx(2e-2)
    # PAPER-NOTES: t = 0.01 is DDPM index ~40, t = 0.1 ~136, t = 1 ~442; t(999) = 5.06
    assert ou_time(s, 40) == pytest.approx(0.01, rel=0.1)
    assert ou_time(s, 136) == pytest.approx(0.1, rel=0.03)
    assert ou_time(s, 442) == pytest.approx(1.0, rel=0.01)
    assert ou_time(s, 999) == pytest.approx(5.06, rel=0.01)


def test_samplers_are_deterministic_per_seed():
    torch.manual_seed(0)
    m = UNet(8, (1, 2), (False, True), dropout=0.0)
    sched = Schedule.linear()
    a = ddim_sample(m, (1, 8, 8), [3, 4, 5], sched, steps=10)
    b = ddim_sample(m, (1, 8, 8), [5, 9], sched, steps=10, batch_size=1)
    torch.testing.assert_close(a, ddim_sample(m, (1, 8, 8), [3, 4, 5], sched, steps=10),
                               rtol=0, atol=0)  # same call, same bits
    # sample 5 is the same in any batch (up to the float rounding of other batch shapes)
    torch.testing.assert_close(a[2], b[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0], a[1])
    short = Schedule.linear(50)
    m50 = UNet(8, (1, 2), (False, True), dropout=0.0, n_steps=50)
    c = ddpm_sample(m50, (1, 8, 8), [1, 2], short)
    d = ddpm_sample(m50, (1, 8, 8), [2], short)
    torch.testing.assert_close(c[1], d[0], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(c).all()


def test_loss_falls_on_a_handful_of_images(tmp_path):
    cfg = TrainConfig(n_train=8, n_holdout=8, steps=120, n_checkpoints=3, lr=2e-3, width=8)
    train(cfg, tmp_path / "run", log=lambda m: None)
    stats = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == checkpoint_steps(120, 3)
    assert stats[-1]["train_loss_eval"] < 0.75 * stats[0]["train_loss_eval"]
    assert stats[-1]["loss"] < 0.5 * stats[0]["loss"]


@pytest.mark.parametrize("optimizer,draws", [("sgd", 1), ("adam", 1), ("adam", 3)])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, optimizer, draws):
    cfg = TrainConfig(n_train=16, n_holdout=8, steps=40, n_checkpoints=5, batch_size=8, width=8,
                      optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3, noise_draws=draws)
    assert 16 in checkpoint_steps(40, 5)
    train(cfg, tmp_path / "straight", log=lambda m: None)
    train(cfg, tmp_path / "killed", stop_after=20, log=lambda m: None)  # dies after step 20
    assert load_checkpoint(sorted((tmp_path / "killed" / "checkpoints").glob("*"))[-1])["step"] == 16
    train(cfg, tmp_path / "killed", log=lambda m: None)  # rerun: resumes from step 16
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000040.safetensors")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "step_00000040.safetensors")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    sa = (tmp_path / "straight" / "stats.jsonl").read_text().splitlines()
    sb = (tmp_path / "killed" / "stats.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in sa]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in sb]


def test_an_extended_run_ends_where_a_straight_run_does(tmp_path):
    from reference_models.ddpm.track import track_run

    short = TrainConfig(n_train=16, n_holdout=8, steps=30, n_checkpoints=3, batch_size=8, width=8)
    long = TrainConfig(n_train=16, n_holdout=8, steps=60, n_checkpoints=5, batch_size=8, width=8)
    train(long, tmp_path / "straight", log=lambda m: None)
    run = train(short, tmp_path / "ext", log=lambda m: None)
    track_run(run, n_samples=6, steps=3)
    cached = dict(np.load(run / "samples.npz"))
    with pytest.raises(ValueError, match="only its length differs: extend it with --extend"):
        train(long, run, log=lambda m: None)
    with pytest.raises(ValueError, match="another config; use a new folder"):
        train(TrainConfig(n_train=16, n_holdout=8, steps=60, batch_size=8, width=8, lr=2e-3), run,
              extend=True, log=lambda m: None)
    shorter = TrainConfig(n_train=16, n_holdout=8, steps=20, n_checkpoints=3, batch_size=8, width=8)
    with pytest.raises(ValueError, match="another config"):
        train(shorter, run, extend=True, log=lambda m: None)
    train(long, run, extend=True, log=lambda m: None)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000060.safetensors")
    b = load_checkpoint(run / "checkpoints" / "step_00000060.safetensors")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    steps = [json.loads(x)["step"] for x in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == checkpoint_steps(30, 3) + [s for s in checkpoint_steps(60, 5) if s > 30]
    assert json.loads((run / "config.json").read_text())["steps"] == 60
    ext = [json.loads(x) for x in (run / "extensions.jsonl").read_text().splitlines()]
    assert ext == [{"at_step": 30, "from_steps": 30, "to_steps": 60, "from_n_checkpoints": 3,
                    "to_n_checkpoints": 5}]
    train(long, run, extend=True, log=lambda m: None)  # already there: nothing to do, nothing added
    assert len((run / "extensions.jsonl").read_text().splitlines()) == 1
    sampled = []
    curve = track_run(run, n_samples=6, steps=3, log=sampled.append)
    assert curve.steps.tolist() == steps
    assert len(sampled) == len(steps) - 3  # only the new checkpoints were sampled
    again = np.load(run / "samples.npz")
    for k, v in cached.items():
        if k.startswith("step_"):
            np.testing.assert_array_equal(again[k], v)


def test_checkpoints_are_safetensors_with_the_config(tmp_path):
    cfg = TrainConfig(n_train=8, n_holdout=8, steps=3, n_checkpoints=2, width=8)
    train(cfg, tmp_path / "r", log=lambda m: None)
    path = sorted((tmp_path / "r" / "checkpoints").glob("*.safetensors"))[-1]
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # plain JSON header: no pickle anywhere
    assert TrainConfig.from_json(header["__metadata__"]["config"]) == cfg
    ck = load_checkpoint(path)
    m = build_model(cfg)
    m.load_state_dict(ck["model"])
    assert ck["step"] == 3 and (tmp_path / "r" / "config.json").exists()
    with pytest.raises(ValueError, match="another config"):
        train(TrainConfig(n_train=8, n_holdout=8, steps=3, n_checkpoints=2, width=16),
              tmp_path / "r", log=lambda m: None)


def test_denoising_loss_is_reproducible():
    torch.manual_seed(0)
    m = UNet(8, (1, 2), (False, True))
    x = torch.randn(6, 1, 8, 8)
    s = Schedule.linear()
    assert denoising_loss(m, x, s, 40, seed=1) == denoising_loss(m, x, s, 40, seed=1)
    assert m.training  # restored after evaluation


def test_celeba_loader_on_generated_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "celeba"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 60), (64, 48), (32, 32)]):
        img = np.zeros((h, w, 3), np.uint8)
        img[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = 255  # a white centre square
        img[:2] = rng.integers(0, 255, (2, w, 3))  # edge noise, cropped away for tall images
        Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=95)
    data = load_celeba_folder(folder, size=16)
    assert data.images.shape == (3, 1, 16, 16) and data.indices.tolist() == [0, 1, 2]
    assert data.images.min() >= 0 and data.images.max() <= 1
    for im in data.images[:, 0]:
        assert im[8, 8] > 0.8 and im[-1, -1] < 0.2  # centre kept, bottom corner dark
    # the tall 40x60 image is resized to 16x24 and centre-cropped: its noisy top rows are cut
    assert data.images[0, 0, 0].max() < 0.2 and data.images[1, 0, 0].max() > 0.2
    with pytest.raises(FileNotFoundError):
        load_celeba_folder(tmp_path / "missing")


def test_split_keeps_original_indices():
    d = load_digits()
    tr, ho = split(d, 50, 20, seed=1)
    assert len(set(tr.indices) & set(ho.indices)) == 0
    np.testing.assert_array_equal(tr.images, d.images[tr.indices])
    with pytest.raises(ValueError, match="asked for"):
        split(d, 2000, 10)


def test_track_a_run_over_its_checkpoints(tmp_path):
    from reference_models.ddpm.track import track_run

    cfg = TrainConfig(n_train=8, n_holdout=16, steps=6, n_checkpoints=3, width=8)
    train(cfg, tmp_path / "r", log=lambda m: None)
    curve = track_run(tmp_path / "r", n_samples=12, steps=5)
    assert curve.steps.tolist() == checkpoint_steps(6, 3)
    assert curve.n_samples.tolist() == [12] * len(curve.steps)
    assert curve.quality is not None and set(curve.losses) == set(curve.steps.tolist())
    saved = json.loads((tmp_path / "r" / "tracking.json").read_text())
    assert saved["steps"] == curve.steps.tolist() and "tau_mem" in saved["rules"]


@pytest.mark.parametrize("d, width", [(8, 128), (16, 64)])
def test_residual_mlp_parameter_count_matches_the_paper(d, width):
    from reference_models.ddpm.mlp import ResidualMLP

    m = ResidualMLP(d, width)
    assert sum(p.numel() for p in m.parameters()) == 6 * width**2 + width * (2 * d + 13) + d
    assert m(torch.zeros(5, d), torch.tensor([0, 1, 500, 998, 999])).shape == (5, d)
    with pytest.raises(ValueError, match="batch, dim"):
        m(torch.zeros(5, 1, d), torch.zeros(5, dtype=torch.long))


def test_gmm_setting_trains_samples_and_tracks(tmp_path):
    from reference_models.data.images import gmm_sample
    from reference_models.ddpm.track import track_run

    cfg = TrainConfig.gmm(n_train=16, n_holdout=64, steps=300, n_checkpoints=3, width=32,
                          lr=3e-3, first_checkpoint=10)
    assert checkpoint_steps(300, 3, 10) == [10, 55, 300]
    train(cfg, tmp_path / "g", log=lambda m: None)
    ck = load_checkpoint(tmp_path / "g" / "checkpoints" / "step_00000300.safetensors")
    assert ck["config"].data == "gmm" and ck["config"].sample_shape == (8,)
    np.testing.assert_array_equal(np.load(tmp_path / "g" / "split.npz")["train_indices"], np.arange(16))
    stats = [json.loads(x) for x in (tmp_path / "g" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["loss"] < stats[0]["loss"]
    curve = track_run(tmp_path / "g", n_samples=40, sampler="ddpm", quality="energy")
    assert curve.steps.tolist() == [10, 55, 300] and curve.quality_name.startswith("energy")
    assert curve.quality[-1] < curve.quality[0]  # samples move from noise towards the mixture
    np.testing.assert_array_equal(gmm_sample(16, seed=0), gmm_sample(16, seed=0))
    again = track_run(tmp_path / "g", n_samples=40, sampler="ddpm", quality="energy")  # cached
    np.testing.assert_array_equal(again.f_mem, curve.f_mem)
    with pytest.raises(ValueError, match="model='mlp'"):
        build_model(TrainConfig(data="gmm", model="unet"))


def test_sweep_read_off_rules():
    from reference_models.ddpm.sweep import crossing_step
    from reference_models.fits import fit_exponent

    steps = np.array([100, 200, 400, 800])
    f = np.array([0.0, 0.0, 0.02, 0.5])
    # log-linear interpolation between 200 (0%) and 400 (2%): 1% is reached at sqrt(200 * 400)
    assert crossing_step(steps, f, 0.01) == pytest.approx(np.sqrt(200 * 400))
    assert crossing_step(steps, f, 0.02) == pytest.approx(400)
    assert np.isnan(crossing_step(steps, f, 0.9))
    ns = np.array([64, 128, 256, 512])
    slope, icpt = fit_exponent(ns, 30 * ns**0.9)
    assert slope == pytest.approx(0.9) and np.exp(icpt) == pytest.approx(30)
    assert np.isnan(fit_exponent(ns, [np.nan, np.nan, np.nan, 5.0])[0])
    # a run that never crossed is left out of the fit, not propagated as NaN
    slope, _ = fit_exponent(ns, [30 * 64**0.9, 30 * 128**0.9, np.nan, 30 * 512**0.9])
    assert slope == pytest.approx(0.9)


def test_the_study_figures_are_written_whole_and_closed(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    from reference_models.figures import pyplot, save_png

    assert pyplot() is plt and plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    save_png(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number) and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_membership_over_training_on_a_tiny_run(tmp_path):
    from reference_models.ddpm.membership import membership_over_training, noise_predictor

    cfg = TrainConfig.gmm(n_train=12, n_holdout=12, steps=40, n_checkpoints=2, width=16, lr=3e-3)
    train(cfg, tmp_path / "g", log=lambda m: None)
    ck = tmp_path / "g" / "checkpoints" / "step_00000040.safetensors"
    m = noise_predictor(ck)
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(ck)["model"])
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.full((5,), 17)).numpy()
    np.testing.assert_allclose(m(x, 17), want, rtol=1e-6)
    out = membership_over_training(tmp_path / "g", n_bootstrap=20)
    assert [r["step"] for r in out["rows"]] == [1, 40]
    assert set(out["rows"][0]) == {"step", "loss", "pia", "secmi"}
    assert out["split"]["calibration"]["members"] and (tmp_path / "g" / "membership.json").exists()


@pytest.mark.slow
def test_tiny_model_trained_far_past_memorization_reproduces_its_images(tmp_path):
    """n = 8 digits, trained long: nearly every sample is a copy; untrained: f_mem 0.

    W = 16, Adam 3e-3, full batch with m = 8 noise draws per image (``noise_draws``; George et al.
    2025 show that more draws per item memorize sooner), 4,000 steps. Measured (one thread): f_mem
    0.95 of 100 DDIM-50 samples at step 4,000 (0.40 at 1,000, 0.81 at 2,297). With one draw per image
    the same budget reaches about 0.6 (W = 32, lr 2e-3) and needs ~12,000 steps and the ancestral
    sampler for 0.96.
    """
    from memaudit.probes.nn_ratio import NNRatioProbe
    from reference_models.ddpm.track import samples_at_checkpoints

    cfg = TrainConfig(n_train=8, n_holdout=64, width=16, mults=(1, 2), attention=(False, True),
                      dropout=0.0, lr=3e-3, noise_draws=8, steps=4000, n_checkpoints=2,
                      first_checkpoint=1)
    train(cfg, tmp_path / "r", log=lambda m: None)
    x_tr = prepare_data(cfg)[0].reshape(8, -1).numpy()
    probe = NNRatioProbe(carlini_alpha=None).fit(x_tr)
    samples = samples_at_checkpoints(tmp_path / "r", 100, steps=50)
    untrained, trained = (probe.score(samples[s].reshape(100, -1)).rate.value for s in (1, 4000))
    assert untrained == 0.0
    assert trained > 0.85


def test_sweep_end_to_end_on_tiny_runs(tmp_path):
    """Two tiny GMM runs through train -> track -> analyse: the table, the JSON and the tau_gen rule."""
    import json

    from memaudit.tracking import level_crossing
    from reference_models.ddpm.sweep import main as sweep_main

    out = tmp_path / "sw"
    assert sweep_main(["--out", str(out), "--n", "8", "16", "--min-steps", "30", "--steps-per-n", "1",
                       "--n-checkpoints", "3", "--first-checkpoint", "10", "--early-steps", "12",
                       "--early-checkpoints", "3", "--n-samples", "30", "--n-bootstrap", "10"]) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert [(r["n"], r["seed"]) for r in summary["runs"]] == [(8, 0), (16, 0)]
    assert summary["tau_gen_scale"] == "linear" and "linear" in summary["rules"]["tau_gen"]
    for r in summary["runs"]:
        assert r["tau_gen_source"] == "early + main run" and r["early_steps"][0] == 1
        q = dict(zip(r["early_steps"], r["early_quality"])) | dict(zip(r["steps"], r["quality"]))
        s = np.array(sorted(q), float)
        v = np.array([q[k] for k in sorted(q)])
        thr = v.min() + 0.05 * (v[0] - v.min())
        assert r["tau_gen"] == pytest.approx(level_crossing(s, -v, -thr))
        assert s[0] <= r["tau_gen"] <= s[-1] and "tau_gen_log_checkpoint" in r
    md = (out / "sweep.md").read_text()
    runs_table = md.split("\n\n")[0]  # the per-run table (the checkpoint selection has 3 rows a run)
    assert runs_table.count("\n| 8 | 0 |") == 1 and "tau_gen (linear rule, interpolated)" in md
    assert "## Checkpoint selection" in md and len(summary["checkpoint_selection"]) == 2
    # refit only: same numbers, log rule on request
    assert sweep_main(["--out", str(out), "--analyse-only", "--n-bootstrap", "10",
                       "--tau-gen-scale", "log"]) == 0
    again = json.loads((out / "sweep.json").read_text())
    assert again["tau_gen_scale"] == "log"
    assert again["fits"]["0.01"]["tau_mem"] == pytest.approx(summary["fits"]["0.01"]["tau_mem"],
                                                             nan_ok=True)


def test_tracked_runs_of_a_sweep_folder(tmp_path):
    from reference_models.ddpm.sweep import tracked_runs

    for name, tracked in [("n64-s0", True), ("n8-s1", True), ("n8-s0", True), ("n8-s0-early", True),
                          ("n16-s0", False), ("n128-s0", True)]:
        (tmp_path / name).mkdir()
        if tracked:
            (tmp_path / name / "tracking.json").write_text("{}")
    # by n as a number (8 < 64 < 128, not as text), then by name; early and untracked runs left out
    assert [r.name for r in tracked_runs(tmp_path)] == ["n8-s0", "n8-s1", "n64-s0", "n128-s0"]


def test_mlp_on_digits_trains_and_samples_flat_vectors(tmp_path):
    """The residual MLP on images: flat (S * S,) items in training and in sampling (the U-Net's
    (1, S, S) shape would not enter it), resumable like any run."""
    from reference_models.ddpm.track import samples_at_checkpoints

    cfg = TrainConfig(data="digits", model="mlp", width=32, n_train=16, n_holdout=32, steps=4,
                      n_checkpoints=2, batch_size=8, dropout=0.0)
    assert cfg.sample_shape == (64,)
    x_tr, x_ho, _, _, _ = prepare_data(cfg)
    assert tuple(x_tr.shape) == (16, 64) and tuple(x_ho.shape) == (32, 64)
    train(cfg, tmp_path / "run", log=lambda m: None)
    got = samples_at_checkpoints(tmp_path / "run", 5, steps=3)
    assert got and all(v.shape == (5, 64) and np.isfinite(v).all() for v in got.values())
    ts = TrainConfig(data="ts-sines", model="mlp", seq_len=32)
    assert ts.sample_shape == (32,)
    from reference_models.ddpm.objectives import sample_shape
    with pytest.raises(ValueError, match="MLP generates its training length"):
        sample_shape(ts, 64)
