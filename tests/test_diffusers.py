"""The diffusers adapter and the commands that use it, on tiny random UNet2DModels saved with
save_pretrained, through the same code paths a user takes (the CLI's main, exit codes,
report.json)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from memaudit.cli import EXIT_ERROR, EXIT_OK, main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = "3"  # sampler steps in every command here: a few seconds per test


def tiny_unet(channels: int = 1, seed: int = 0):
    """A randomly initialised UNet2DModel on 8x8 images (about 40k parameters)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels,
                       block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


def save_pipeline(path, channels: int = 1, seed: int = 0):
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=tiny_unet(channels, seed), scheduler=DDPMScheduler()).save_pretrained(path)
    return str(path)


def save_run(root, steps=(100, 200), ema_at: int | None = None, ema_of: int | None = None):
    """A diffusers training run folder: scheduler/ and checkpoint-N/unet for each N (weights from
    seed i for the i-th N); ``checkpoint-<ema_at>/unet_ema`` holds the weights of
    ``checkpoint-<ema_of>/unet``."""
    from diffusers import DDPMScheduler

    root = Path(root)
    DDPMScheduler().save_pretrained(root / "scheduler")
    for i, step in enumerate(steps):
        tiny_unet(seed=i).save_pretrained(root / f"checkpoint-{step}" / "unet")
    if ema_at is not None:
        tiny_unet(seed=list(steps).index(ema_of)).save_pretrained(
            root / f"checkpoint-{ema_at}" / "unet_ema")
    return str(root)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from diffusers import DDPMScheduler

    root = tmp_path_factory.mktemp("diffusers")
    f = {"pipe": save_pipeline(root / "pipe"), "rgb": save_pipeline(root / "rgb", 3, seed=5)}
    tiny_unet(seed=1).save_pretrained(root / "unet_only")
    f["unet"] = str(root / "unet_only")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(root / "sched")
    f["sched_file"] = str(root / "sched" / "scheduler_config.json")
    shutil.copytree(root / "unet_only", root / "bin_only")
    (root / "bin_only" / "diffusion_pytorch_model.safetensors").rename(
        root / "bin_only" / "diffusion_pytorch_model.bin")
    f["bin"] = str(root / "bin_only")
    f["run"] = save_run(root / "run", (200, 1000, 100), ema_at=200, ema_of=100)
    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("holdout", 40), ("members", 8), ("nonmembers", 8)):
        np.save(root / f"{name}.npy", rng.random((n, 8, 8)).astype(np.float32))
        f[name] = str(root / f"{name}.npy")
    f["root"] = root
    return f


def model_of(path, scheduler=None):
    from memaudit.adapters.diffusers import load_model

    return load_model(path, scheduler)


# ---------------------------------------------------------------------------------- the adapter
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_i_drawn_alone_equals_sample_i_of_a_batch(folders, sampler):
    from memaudit.adapters.diffusers import sample, sample_seeds

    model = model_of(folders["pipe"])
    batch = sample(model, 8, seed=3, steps=3, batch_size=3, sampler=sampler)
    alone = sample(model, seeds=sample_seeds(3, 8)[5:6], steps=3, sampler=sampler)
    np.testing.assert_allclose(alone[0], batch[5], atol=1e-5)
    other = sample(model, 8, seed=4, steps=3, sampler=sampler)
    assert np.abs(other - batch).max() > 0.05  # another seed, other samples
    # sample i's seed does not depend on n; seeds of two runs do not overlap by a shift
    assert list(sample_seeds(3, 8)[:4]) == list(sample_seeds(3, 4))
    assert not set(sample_seeds(0, 50)[1:]) & set(sample_seeds(1, 50))


def test_sample_is_the_ddpm_pipeline_output(folders):
    """With the saved scheduler, sample i equals diffusers' own DDPMPipeline from seed s_i."""
    from diffusers import DDPMPipeline

    from memaudit.adapters.diffusers import sample, sample_seeds

    seed = int(sample_seeds(0, 3)[2])
    pipe = DDPMPipeline.from_pretrained(folders["pipe"], use_safetensors=True)
    want = pipe(batch_size=1, generator=torch.Generator().manual_seed(seed),
                num_inference_steps=3, output_type="np").images  # (1, 8, 8, 1) in [0, 1]
    got = sample(folders["pipe"], 3, seed=0, steps=3, sampler="saved")
    assert got.shape == (3, 8, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got[2], want[0, ..., 0], atol=1e-5)
    rgb = sample(pipe.__class__.from_pretrained(folders["rgb"]), 2, steps=2)
    assert rgb.shape == (2, 8, 8, 3) and 0 <= rgb.min() and rgb.max() <= 1  # channels-last


def test_noise_predictor_is_the_unet_batched(folders):
    from memaudit.adapters.diffusers import noise_predictor

    model = model_of(folders["unet"], folders["sched_file"])
    x = np.random.default_rng(1).normal(size=(7, 1, 8, 8)).astype(np.float32)
    t = np.array([0, 5, 10, 50, 100, 500, 999])
    small = noise_predictor(model.unet, model.scheduler, batch_size=3)
    with torch.no_grad():
        want = model.unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    np.testing.assert_allclose(small(x, t), want, atol=1e-5)
    np.testing.assert_allclose(noise_predictor(model.unet, model.scheduler, batch_size=100)(x, t),
                               want, atol=1e-5)
    # alpha-bar of the scheduler that was saved (cosine here), not of a default one
    np.testing.assert_allclose(small.alphas_cumprod, model.scheduler.alphas_cumprod.numpy(),
                               rtol=1e-6)
    assert model.scheduler.config.beta_schedule == "squaredcos_cap_v2"


@pytest.mark.parametrize("ptype", ["sample", "v_prediction"])
def test_other_prediction_types_give_the_noise(ptype):
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps; an x0- or v-predicting model's output is turned back
    into eps exactly."""
    from memaudit.adapters.diffusers import _eps_from_output

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ab = torch.tensor([0.9, 0.5, 0.1, 0.01]).view(-1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    out = x0 if ptype == "sample" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
    torch.testing.assert_close(_eps_from_output(out, xt, ab, ptype), eps, atol=1e-5, rtol=1e-5)


def test_to_model_space_inverts_the_sample_conversion():
    from memaudit.adapters.diffusers import to_model_space
    from memaudit.conventions import harmonize
    from memaudit.sources import load_dataset

    class Cfg:
        sample_size, in_channels = 8, 3

    model_space = np.random.default_rng(2).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32)
    pixels = (model_space / 2 + 0.5).transpose(0, 2, 3, 1)  # what sample() returns
    ds = load_dataset(pixels, "members")
    for declared, x in (("0,1", pixels), ("0,255", pixels * 255)):
        d, _ = harmonize({"members": load_dataset(x, "members")}, ranges={"members": declared})
        got = to_model_space(d["members"].x, d["members"].item_shape, d["members"].convention, Cfg)
        np.testing.assert_allclose(got, model_space, atol=1e-4)
    with pytest.raises(ValueError, match="8x8 images with 3 channels but the model's U-Net takes "
                       "8x8 with 1"):
        Cfg.in_channels = 1
        d, _ = harmonize({"members": ds}, ranges={"members": "0,1"})
        to_model_space(d["members"].x, d["members"].item_shape, d["members"].convention, Cfg)


# ---------------------------------------------------------------------------------- audit --model
def test_audit_model_finds_planted_copies_and_samples_reproduce(folders, tmp_path, capsys):
    """Two training items are copies of samples 3 and 10 drawn alone from their seeds: the audit
    of 64 samples from the pipeline folder flags exactly those two, with the right training
    index, and each sample's d1 in report.json is that of the sample redrawn alone."""
    from memaudit.adapters.diffusers import sample, sample_seeds

    seeds = sample_seeds(0, 64)
    copies = sample(folders["pipe"], seeds=seeds[[3, 10]], steps=3)
    train = np.load(folders["train"])
    train[[7, 41]] = copies
    np.save(tmp_path / "train.npy", train)
    code = main(["audit", "--model", folders["pipe"], "--n-samples", "64", "--steps", STEPS,
                 "--train", str(tmp_path / "train.npy"), "--holdout", folders["holdout"],
                 "--out", str(tmp_path / "out"), "--no-progress", "--n-bootstrap", "50"])
    assert code == EXIT_OK, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ps = report["sections"]["nn_ratio"]["per_sample"]
    assert np.flatnonzero(ps["memorized"]).tolist() == [3, 10]
    assert [ps["nn_index"][3], ps["nn_index"][10]] == [7, 41]
    gen = report["inputs"]["samples"]["generated_by"]
    assert gen["model"]["source"] == folders["pipe"] and gen["sampler"] == "ddim"
    assert gen["steps"] == 3 and gen["n_samples"] == 64 and str(int(seeds[0])) in gen["seeds"]
    assert "x / 2 + 0.5" in gen["conversion"] and "channels-last" in gen["conversion"]
    assert any("Samples drawn here from" in n for n in report["notes"])
    assert report["space"].startswith("pixels in [0, 1]")
    for i in (0, 25, 63):
        x = sample(folders["pipe"], seeds=seeds[i : i + 1], steps=3).reshape(-1)
        d1 = np.sqrt(((train.reshape(len(train), -1) - x) ** 2).sum(1)).min()
        assert ps["d1"][i] == pytest.approx(d1, abs=1e-4)


def test_audit_unet_folder_with_scheduler_and_rgb_layouts(folders, tmp_path):
    """A UNet2DModel folder plus a scheduler file; an RGB pipeline audited against HWC and CHW
    training arrays gives the same distances (the samples follow the training set's layout)."""
    base = ["--n-samples", "8", "--steps", "2", "--no-progress", "--n-bootstrap", "20"]
    assert main(["audit", "--model", folders["unet"], "--scheduler", folders["sched_file"],
                 "--train", folders["train"], "--out", str(tmp_path / "u")] + base) == EXIT_OK
    rgb = np.random.default_rng(3).random((30, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "hwc.npy", rgb)
    np.save(tmp_path / "chw.npy", np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    d1 = {}
    for name in ("hwc", "chw"):
        assert main(["audit", "--model", folders["rgb"], "--train", str(tmp_path / f"{name}.npy"),
                     "--out", str(tmp_path / name)] + base) == EXIT_OK
        rep = json.loads((tmp_path / name / "report.json").read_text())
        d1[name] = rep["sections"]["nn_ratio"]["per_sample"]["d1"]
    np.testing.assert_allclose(d1["hwc"], d1["chw"], rtol=1e-5)


# ---------------------------------------------------------------------------------- membership
def test_membership_model_gives_the_three_attacks(folders, tmp_path, capsys):
    code = main(["membership", "--model", folders["pipe"], "--members", folders["members"],
                 "--nonmembers", folders["nonmembers"], "--timesteps", "10",
                 "--out", str(tmp_path), "--no-progress", "--n-bootstrap", "50"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    rep = json.loads((tmp_path / "membership.json").read_text())
    attacks = rep["sections"]["attacks"]
    assert set(attacks) == {"loss", "pia", "secmi"}
    aucs = {k: v["evaluation"]["auc"]["value"] for k, v in attacks.items()}
    assert all(0 <= a <= 1 for a in aucs.values())
    assert {v["setting"] for v in attacks.values()} == {10}
    # the gated section is the strongest attack
    assert rep["sections"]["membership"]["evaluation"]["auc"]["value"] == max(aucs.values())
    assert "loss attack" in out and "PIA" in out and "SecMI" in out
    assert rep["inputs"]["model"]["source"] == folders["pipe"]


def test_membership_model_scores_are_the_attacks_on_the_model(folders):
    """The runner's scores are memaudit's attack functions on the adapter's NoisePredictor, with
    the members put in [-1, 1] channels-first (2x - 1)."""
    from memaudit.adapters.diffusers import noise_predictor
    from memaudit.probes.diffusion_attacks import pia_attack
    from memaudit.runners import MembershipConfig, run_membership

    run = run_membership(MembershipConfig(model=folders["pipe"], members=folders["members"],
                                          nonmembers=folders["nonmembers"], timesteps="10",
                                          n_bootstrap=20, progress=False))
    pia = run.attacks["pia"]
    model = model_of(folders["pipe"])
    x = 2 * np.load(folders["members"])[:, None] - 1
    want = pia_attack(noise_predictor(model.unet, model.scheduler), x, (pia.setting,))
    ev = pia.evaluation
    idx = np.array([int(i) for i in pia.split.evaluation_members])
    np.testing.assert_allclose(ev.member_scores, want[pia.setting][idx], rtol=1e-5)


# ---------------------------------------------------------------------------------- track
def _track(folders, out, *extra):
    return main(["track", "--run", folders["run"], "--train", folders["train"], "--holdout",
                 folders["holdout"], "--n-samples", "16", "--steps", "2", "--out", str(out),
                 "--no-progress", "--n-bootstrap", "20", *extra])


def test_track_diffusers_run(folders, tmp_path, capsys):
    code = _track(folders, tmp_path)
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    rep = json.loads((tmp_path / "tracking.json").read_text())
    assert rep["schema"] == "memaudit.tracking"
    tr = rep["sections"]["tracking"]
    assert tr["unet"]["steps"] == [100, 200, 1000]  # by step number, not by name
    assert tr["unet_ema"]["steps"] == [200]  # reported separately
    assert [c["step"] for c in rep["sections"]["checkpoints"]] == [100, 200, 1000]
    # the same seeds at every checkpoint: the EMA weights at 200 are those of checkpoint-100
    assert tr["unet_ema"]["f_mem"] == [tr["unet"]["f_mem"][0]]
    assert tr["unet_ema"]["quality"][0] == pytest.approx(tr["unet"]["quality"][0], rel=1e-6)
    assert tr["unet"]["quality"][1] != pytest.approx(tr["unet"]["quality"][0], rel=1e-6)
    for key in ("tau_gen", "tau_mem", "recommended", "quality", "control_f_mem"):
        assert key in tr["unet"]
    assert tr["unet"]["recommended"] in (100, 200, 1000)
    assert rep["sections"]["attacks"] is None  # no members given
    assert rep["sections"]["generation"]["steps"] == 2
    html = (tmp_path / "tracking.html").read_text()
    assert "<svg" in html and "unet_ema" in html
    assert "sampled 16 at checkpoint-100/unet" in err


@pytest.mark.slow
def test_track_diffusers_run_with_attacks(folders, tmp_path):
    assert _track(folders, tmp_path, "--members", folders["members"], "--nonmembers",
                  folders["nonmembers"], "--timesteps", "10") == EXIT_OK
    rep = json.loads((tmp_path / "tracking.json").read_text())
    for variant, steps in (("unet", [100, 200, 1000]), ("unet_ema", [200])):
        rows = rep["sections"]["attacks"][variant]
        assert [r["step"] for r in rows] == steps
        assert all(0 <= r[k]["auc"]["value"] <= 1 and r[k]["timestep"] == 10
                   for r in rows for k in ("loss", "pia", "secmi"))
    ema, unet = rep["sections"]["attacks"]["unet_ema"][0], rep["sections"]["attacks"]["unet"][0]
    assert ema["loss"]["auc"]["value"] == unet["loss"]["auc"]["value"]  # same weights, same split
    assert "Membership attacks per checkpoint" in (tmp_path / "tracking.html").read_text()


def test_track_finds_runs_through_a_run_sampler(folders, tmp_path, monkeypatch):
    """A run without checkpoint-N/unet goes to the installed run samplers (entry points)."""
    from memaudit.runners import track

    train = np.load(folders["train"])
    seen = {}

    def sampler(run, *, n_samples, seed, steps, log=None):
        seen["args"] = (n_samples, seed, steps)
        if not (Path(run) / "mine.txt").exists():
            return None
        return {"samples_by_step": {50: np.random.default_rng(seed).random((n_samples, 8, 8)),
                                    10: train[:n_samples]}, "sampler": "test sampler"}

    monkeypatch.setattr(track, "run_samplers", lambda: [("other", lambda run, **k: None),
                                                        ("mine", sampler)])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.txt").write_text("")
    run = track.run_tracking(track.TrackConfig(run=str(tmp_path / "run"), train=folders["train"],
                                               holdout=folders["holdout"], n_samples=12, seed=4,
                                               n_bootstrap=20, progress=False,
                                               out=str(tmp_path / "o")))
    curve = run.curves["model"]
    assert curve.steps.tolist() == [10, 50] and seen["args"] == (12, 4, 50)
    assert curve.f_mem[0] == 1.0 and curve.f_mem[1] == 0.0  # step 10's samples are train copies
    assert run.generation["run_sampler"] == "mine"
    (tmp_path / "run" / "mine.txt").unlink()
    assert main(["track", "--run", str(tmp_path / "run"), "--train", folders["train"],
                 "--out", str(tmp_path / "p")]) == EXIT_ERROR


# ---------------------------------------------------------------------------------- refusals
def refusal_cases(f):
    out = ["--out", str(f["root"] / "never")]
    return {
        "hub id": (["audit", "--model", "google/ddpm-cifar10-32", "--train", f["train"]] + out,
                   "looks like a Hugging Face hub id"),
        "missing folder": (["audit", "--model", str(f["root"] / "nope"), "--train", f["train"]]
                           + out, "does not exist"),
        "bin only": (["membership", "--model", f["bin"], "--scheduler", f["sched_file"],
                      "--members", f["members"], "--nonmembers", f["nonmembers"]] + out,
                     "holds only .bin weights"),
        "no scheduler": (["audit", "--model", f["unet"], "--train", f["train"]] + out,
                         "has no scheduler"),
        "track hub id": (["track", "--run", "someone/run", "--train", f["train"]] + out,
                         "hub id"),
        "samples and model": (["audit", "--model", f["pipe"], "--samples", f["train"], "--train",
                               f["train"]] + out, "either samples (--samples) or a model"),
        "range of samples": (["audit", "--model", f["pipe"], "--train", f["train"], "--range",
                              "samples=-1,1"] + out, "does not apply with --model"),
        "shape": (["audit", "--model", f["rgb"], "--train", f["train"]] + out,
                  "makes 8x8 images with 3 channels"),
        "timesteps": (["membership", "--model", f["pipe"], "--members", f["members"],
                       "--nonmembers", f["nonmembers"], "--timesteps", "10,1000"] + out,
                      "must lie in [1, 999]"),
    }


@pytest.mark.parametrize("case", ["hub id", "missing folder", "bin only", "no scheduler",
                                  "track hub id", "samples and model", "range of samples",
                                  "shape", "timesteps"])
def test_refusals_are_one_line(folders, case, capsys):
    argv, expect = refusal_cases(folders)[case]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memaudit: error: ") and expect in err[0], err
    assert not (folders["root"] / "never").exists()


def test_hub_id_is_refused_before_diffusers_is_called(monkeypatch):
    """A hub id never reaches diffusers (which could download it)."""
    import memaudit.adapters.diffusers as ad

    monkeypatch.setattr(ad, "_require", lambda: pytest.fail("diffusers was imported"))
    with pytest.raises(ValueError, match="never downloads"):
        ad.load_model("google/ddpm-cifar10-32")


# ---------------------------------------------------------------------------------- docs
def _python_blocks(text: str) -> list:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_membership_docs_snippet_runs_on_a_real_unet(folders):
    """The wrapper snippet of docs/probes/membership.md (once failing on UNet2DModel with
    'UNet2DOutput' object has no attribute 'numpy') runs on a saved UNet2DModel pipeline."""
    text = (ROOT / "docs" / "probes" / "membership.md").read_text()
    block = next(b for b in _python_blocks(text) if "noise_predictor" in b)
    members = 2 * np.load(folders["members"])[:, None] - 1
    nonmembers = 2 * np.load(folders["nonmembers"])[:, None] - 1
    ns = {"model_dir": folders["pipe"], "members": members, "nonmembers": nonmembers}
    exec(compile(block, "docs/probes/membership.md", "exec"), ns)
    assert 0 <= ns["res"].evaluation.auc.value <= 1


def test_adapter_docs_python_runs(folders, tmp_path, monkeypatch):
    text = (ROOT / "docs" / "adapters" / "diffusers.md").read_text()
    blocks = _python_blocks(text)
    assert blocks
    monkeypatch.chdir(tmp_path)
    ns = {"model_dir": folders["pipe"], "train": folders["train"], "holdout": folders["holdout"]}
    for block in blocks:
        exec(compile(block, "docs/adapters/diffusers.md", "exec"), ns)


@pytest.mark.slow
def test_track_reference_models_run_through_its_run_sampler(tmp_path, monkeypatch):
    """A reference_models DDPM run, found through its memaudit.runs entry point (declared in
    pyproject.toml; patched in here, since the installed metadata may predate it): the curve is
    track_memorization on the run's own samples_at_checkpoints, mean added back."""
    from reference_models.ddpm.config import TrainConfig
    from reference_models.ddpm.run_sampler import sample_run
    from reference_models.ddpm.track import samples_at_checkpoints
    from reference_models.ddpm.train import prepare_data, train

    from memaudit.runners import track
    from memaudit.tracking import track_memorization

    cfg = TrainConfig(n_train=8, n_holdout=16, steps=6, n_checkpoints=3, width=8)
    train(cfg, tmp_path / "run", log=lambda m: None)
    x_tr, x_ho, mean, _, _ = prepare_data(cfg)
    np.save(tmp_path / "train.npy", x_tr.numpy()[:, 0] + mean)
    np.save(tmp_path / "holdout.npy", x_ho.numpy()[:, 0] + mean)
    monkeypatch.setattr(track, "run_samplers", lambda: [("ddpm", sample_run)])
    run = track.run_tracking(track.TrackConfig(
        run=str(tmp_path / "run"), train=str(tmp_path / "train.npy"),
        holdout=str(tmp_path / "holdout.npy"), n_samples=20, steps=5, n_bootstrap=30,
        progress=False, out=str(tmp_path / "out")))
    direct = samples_at_checkpoints(tmp_path / "run", 20, steps=5, seed=0)
    want = track_memorization({k: (v[:, 0] + mean).reshape(20, -1) for k, v in direct.items()},
                              (x_tr.numpy()[:, 0] + mean).reshape(8, -1),
                              (x_ho.numpy()[:, 0] + mean).reshape(16, -1), n_bootstrap=30)
    curve = run.curves["model"]
    assert curve.steps.tolist() == sorted(direct) and len(direct) >= 2
    np.testing.assert_allclose(curve.quality, want.quality, rtol=1e-6)
    np.testing.assert_array_equal(curve.f_mem, want.f_mem)
    assert run.generation["run_sampler"] == "ddpm" and "seed 0 + i" in run.generation["seeds"]
    assert run.generation["range"] == "0,1"
    rep = json.loads((tmp_path / "out" / "tracking.json").read_text())
    assert rep["sections"]["tracking"]["model"]["steps"] == curve.steps.tolist()
    text = (ROOT / "pyproject.toml").read_text()
    assert 'ddpm = "reference_models.ddpm.run_sampler:sample_run"' in text
