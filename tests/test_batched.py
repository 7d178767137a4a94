"""The GPU path of the sweep (reference_models.ddpm.batched), at tiny size on CPU."""

import json
import warnings

import numpy as np
import pytest
import torch

from reference_models.ddpm.checkpoints import load_checkpoint, load_model, read_stats
from reference_models.ddpm.config import TrainConfig
from reference_models.ddpm.train import checkpoint_steps, train

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


def _tiny(**kw):
    base = dict(n_train=16, n_holdout=16, width=8, steps=12, n_checkpoints=3, batch_size=8)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run, key="loss"):
    return np.array([r[key] for r in read_stats(run)])


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.01), ("adam", 1e-3)])
def test_one_batched_model_retraces_the_training_loop(tmp_path, optimizer, lr):
    """K = 1: the same batches, timesteps, noise and (K = 1 only) dropout masks as ``train``; the
    vmapped kernels reduce in another order, so the losses agree to float rounding, not bitwise."""
    from reference_models.ddpm.batched import train_batched

    cfg = _tiny(optimizer=optimizer, lr=lr, dropout=0.1)
    a = train(cfg, tmp_path / "loop", log=lambda m: None)
    b = train_batched([(cfg, tmp_path / "vmap")], log=lambda m: None)[0]
    assert [r["step"] for r in read_stats(b)] == checkpoint_steps(12, 3)
    np.testing.assert_allclose(_losses(b), _losses(a), rtol=1e-5)
    np.testing.assert_allclose(_losses(b, "holdout_loss_eval"), _losses(a, "holdout_loss_eval"), rtol=1e-4)
    # step 1 (same weights, batch, noise): equal to float32 rounding (the order of a reduction
    # inside the vmapped kernels can differ by CPU)
    np.testing.assert_allclose(_losses(b)[0], _losses(a)[0], rtol=1e-6)
    wa = load_checkpoint(a / "checkpoints" / "step_00000012.safetensors")
    wb = load_checkpoint(b / "checkpoints" / "step_00000012.safetensors")
    assert wb["config"].to_json() == cfg.to_json() and set(wb["tensors"]) == set(wa["tensors"])
    if optimizer == "sgd":  # Adam's m / sqrt(v) amplifies rounding where the gradient is ~0
        for k in wa["model"]:
            np.testing.assert_allclose(wb["model"][k], wa["model"][k], atol=1e-5)
    assert json.loads(wb["meta"]["optim_param_groups"]) == json.loads(wa["meta"]["optim_param_groups"])
    assert (b / "config.json").read_text() == (a / "config.json").read_text()
    np.testing.assert_array_equal(np.load(b / "split.npz")["train_indices"],
                                  np.load(a / "split.npz")["train_indices"])


def test_k_models_train_together_each_as_it_would_alone(tmp_path):
    """Three runs (n, seed, steps and batch all different; the n = 4 batch is padded) trained
    together: each one's losses follow its own single run (dropout off, so that every random draw
    is the run's own), and each checkpoint loads and samples."""
    from reference_models.ddpm.batched import train_batched
    from reference_models.ddpm.diffusion import Schedule, ddim_sample
    from reference_models.ddpm.track import track_run

    cfgs = [_tiny(n_train=16, seed=0, steps=12, dropout=0.0), _tiny(n_train=4, seed=1, steps=8, dropout=0.0),
            _tiny(n_train=32, seed=2, steps=15, dropout=0.0)]
    runs = train_batched([(c, tmp_path / f"b{i}") for i, c in enumerate(cfgs)], log=lambda m: None)
    for i, (c, run) in enumerate(zip(cfgs, runs)):
        alone = train(c, tmp_path / f"a{i}", log=lambda m: None)
        assert [r["step"] for r in read_stats(run)] == checkpoint_steps(c.steps, 3)
        np.testing.assert_allclose(_losses(run), _losses(alone), rtol=1e-5)
        model, ck = load_model(run / "checkpoints" / f"step_{c.steps:08d}.safetensors")
        assert ck["step"] == c.steps and ck["config"].n_train == c.n_train
        x = ddim_sample(model, c.sample_shape, [0, 1, 2], Schedule.linear(), steps=4)
        assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    curve = track_run(runs[0], n_samples=10, steps=4)  # the tracker reads batched runs unchanged
    assert curve.steps.tolist() == checkpoint_steps(12, 3)


@pytest.mark.slow
def test_batched_runs_resume(tmp_path):
    """Killed after step 6 and rerun: the same weights as an uninterrupted batched run; and the
    ordinary loop resumes a batched run's checkpoint (same config and state layout)."""
    from reference_models.ddpm.batched import train_batched

    cfgs = [_tiny(seed=0, dropout=0.0, optimizer="sgd", lr=0.01),
            _tiny(seed=1, n_train=8, dropout=0.0, optimizer="sgd", lr=0.01)]
    whole = train_batched([(c, tmp_path / f"w{i}") for i, c in enumerate(cfgs)], log=lambda m: None)
    part = [(c, tmp_path / f"p{i}") for i, c in enumerate(cfgs)]
    train_batched(part, log=lambda m: None, stop_after=6)
    assert max(r["step"] for r in read_stats(part[0][1])) < 12
    train_batched(part, log=lambda m: None)
    for (_, p), w in zip(part, whole):
        a = load_checkpoint(p / "checkpoints" / "step_00000012.safetensors")["model"]
        b = load_checkpoint(w / "checkpoints" / "step_00000012.safetensors")["model"]
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # the training loop continues a batched run: its checkpoint restores into train()'s state
    longer = tmp_path / "p0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(cfgs[0], longer, log=lambda m: None)  # already at its last step: nothing to do
    assert [r["step"] for r in read_stats(longer)] == checkpoint_steps(12, 3)


def test_batched_refuses_runs_that_cannot_share_a_stack(tmp_path):
    from reference_models.ddpm.batched import train_batched

    with pytest.raises(ValueError, match="must share 'width'"):
        train_batched([(_tiny(width=8), tmp_path / "a"), (_tiny(width=16, seed=1), tmp_path / "b")])
    with pytest.raises(ValueError, match="share a folder"):
        train_batched([(_tiny(), tmp_path / "a"), (_tiny(seed=1), tmp_path / "a")])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            train_batched([(_tiny(device="cuda"), tmp_path / "c")])


@pytest.mark.slow
def test_batched_cli_trains_samples_tracks_and_analyses_a_tiny_design(tmp_path, monkeypatch):
    """The GPU script's two calls on CPU: --train-only (one n), then --no-train (sample into the
    tracker's cache, track without sampling again, analyse into sweep.json / sweep.md)."""
    from reference_models.ddpm import track
    from reference_models.ddpm.batched import main

    out = tmp_path / "sw"
    common = ["--setting", "digits", "--out", str(out), "--seeds", "0", "1", "--steps-per-n", "1",
              "--n-checkpoints", "3", "--first-checkpoint", "2", "--n-samples", "10", "--ddim-steps",
              "4", "--width", "8", "--n-bootstrap", "5"]
    for n in ("8", "16"):
        assert main(common + ["--n", n, "--train-only"]) == 0
    cache = {}
    for run in ("n8-s0", "n16-s1"):
        assert json.loads((out / run / "config.json").read_text())["device"] == "cpu"
        assert not (out / run / "samples.npz").exists()
    want = track.samples_at_checkpoints(out / "n8-s0", 10, steps=4)

    def no_sampling(*a, **k):
        raise AssertionError("track_run sampled again instead of reading the batched samples")

    monkeypatch.setattr(track, "samples_at_checkpoints", no_sampling)
    assert main(common + ["--n", "8", "16", "--no-train"]) == 0
    with np.load(out / "n8-s0" / "samples.npz") as z:
        cache = {int(k[5:]): z[k] for k in z.files if k.startswith("step_")}
    assert sorted(cache) == sorted(want) == checkpoint_steps(8, 3, 2)
    for s in want:
        np.testing.assert_array_equal(cache[s], want[s])
    summary = json.loads((out / "sweep.json").read_text())
    assert [(r["n"], r["seed"]) for r in summary["runs"]] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    assert len(summary["checkpoint_selection"]) == 4 and "## Checkpoint selection" in \
        (out / "sweep.md").read_text()
