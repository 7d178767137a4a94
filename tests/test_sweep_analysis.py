"""The sweep's analysis: exponent intervals, not-resolved fits, checkpoint selection, width law."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from reference_models.fits import exponent_fit, fit_exponent, format_fit


def test_ols_interval_is_linregress_slope_plus_minus_t_stderr():
    rng = np.random.default_rng(3)
    x = np.repeat([64, 128, 256, 512], 2).astype(float)
    y = 120 * x**1.1 * np.exp(0.1 * rng.standard_normal(x.size))
    fit = exponent_fit(x, y)
    reg = stats.linregress(np.log(x), np.log(y))
    t = stats.t.ppf(0.975, x.size - 2)
    assert fit["resolved"] and fit["exponent"] == pytest.approx(reg.slope, rel=1e-12)
    assert fit["ols"]["ci"] == pytest.approx([reg.slope - t * reg.stderr, reg.slope + t * reg.stderr],
                                             rel=1e-12)
    assert fit["ols"]["dof"] == 6 and fit["exponent"] == pytest.approx(fit_exponent(x, y)[0])
    wider = exponent_fit(x, y, confidence=0.99)["ols"]["ci"]
    assert wider[0] < fit["ols"]["ci"][0] and wider[1] > fit["ols"]["ci"][1]


def test_ols_interval_closed_form():
    # exact power law: zero residuals, the interval is the point
    x = np.array([64.0, 128, 256, 512])
    f = exponent_fit(x, 30 * x**0.9)
    assert f["exponent"] == pytest.approx(0.9) and np.exp(f["intercept"]) == pytest.approx(30)
    assert f["ols"]["ci"] == pytest.approx([0.9, 0.9], abs=1e-9)
    # residuals d (+1, -1, -1, +1) on log2-spaced x are orthogonal to (1, log x): the slope stays a,
    # s^2 = 4 d^2 / 2, Sxx = 5 log(2)^2, so se = d sqrt(2/5) / log 2 and t(0.975, 2) = 4.302652729911275
    d = 0.05
    y = 30 * x**0.9 * np.exp(d * np.array([1, -1, -1, 1]))
    f = exponent_fit(x, y)
    se = d * np.sqrt(2 / 5) / np.log(2)
    assert f["exponent"] == pytest.approx(0.9) and f["ols"]["stderr"] == pytest.approx(se)
    assert f["ols"]["ci"] == pytest.approx([0.9 - 4.302652729911275 * se, 0.9 + 4.302652729911275 * se])
    two = exponent_fit([64, 128], [1, 2])
    assert two["exponent"] == pytest.approx(1.0) and two["ols"]["ci"] is None and "2 points" in \
        two["ols"]["reason"]


def test_the_published_gmm_sgd_points_give_the_issues_ols_interval():
    """README SGD table, tau_mem(1%) per run: bootstrap [1.07, 1.16], OLS residuals [1.02, 1.21]."""
    ns = [64, 64, 128, 128, 256, 256, 512, 512]
    tau = [7940, 8239, 17745, 21804, 40048, 41242, 80212, 87143]
    f = exponent_fit(ns, tau, groups=[0, 1] * 4)
    assert round(f["exponent"], 2) == 1.12
    assert [round(c, 2) for c in f["ols"]["ci"]] == [1.02, 1.21]
    assert f["seed_level"]["per_seed"] == pytest.approx(
        {"0": fit_exponent(ns[::2], tau[::2])[0], "1": fit_exponent(ns[1::2], tau[1::2])[0]})
    lo, hi = f["seed_level"]["ci"]
    assert lo <= f["exponent"] <= hi


def test_seed_level_interval():
    x = np.repeat([64, 128, 256], 2).astype(float)
    same = exponent_fit(x, 5 * x, groups=[0, 1] * 3)  # seeds agree: the seed interval is the point
    assert same["seed_level"]["ci"] == pytest.approx([1, 1]) and same["seed_level"]["per_seed_t_ci"] \
        == pytest.approx([1, 1])
    # the bootstrap over seeds only takes values within the range of the per-cell choices
    y = 5 * x * np.array([1, 2, 1, 2, 1, 2])
    sl = exponent_fit(x, y, groups=[0, 1] * 3, n_bootstrap=400)["seed_level"]
    lx = np.log(x)
    choices = [np.polyfit(lx[[a, b, c]], np.log(y[[a, b, c]]), 1)[0]
               for a in (0, 1) for b in (2, 3) for c in (4, 5)]
    assert min(choices) - 1e-9 <= sl["ci"][0] <= sl["ci"][1] <= max(choices) + 1e-9
    one = exponent_fit([64, 128, 256], [1, 2, 4], groups=[0, 0, 0])["seed_level"]
    assert one["ci"] is None and "one seed" in one["reason"]


def test_a_level_not_reached_in_some_runs_is_not_resolved_never_nan():
    f = exponent_fit([64, 128, 256, 512], [100, 200, np.nan, np.nan], groups=[0] * 4,
                     bootstrap=[1.0, np.nan])
    assert not f["resolved"] and f["exponent"] is None and f["ols"] is None
    assert f["reason"] == "not resolved: level reached in 2 of 4 runs"
    assert format_fit(f) == f["reason"]
    boot = np.r_[np.linspace(0.9, 1.1, 99), np.nan]  # 1 unresolved of 100 <= 2.5%: kept
    b = exponent_fit([64, 128, 256], [1, 2, 4], bootstrap=boot)["bootstrap"]
    assert b["n_unresolved"] == 1 and b["n"] == 100 and b["ci"] == pytest.approx(
        np.percentile(boot[:-1], [2.5, 97.5]))
    assert "1 of 100 replicates unresolved" in format_fit(exponent_fit([64, 128, 256], [1, 2, 4],
                                                                       bootstrap=boot))
    censored = exponent_fit([64, 128, 256], [1, 2, 4], bootstrap=np.r_[boot[:90], [np.nan] * 10])
    assert censored["bootstrap"]["ci"] is None and "10 of 100" in censored["bootstrap"]["reason"]
    with pytest.raises(ValueError, match="one entry per run"):
        exponent_fit([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        exponent_fit([0, 2], [1, 2])


def test_fits_cli_prints_both_intervals(capsys):
    from reference_models.fits import main

    assert main(["--x", "64", "64", "128", "128", "256", "256", "512", "512", "--y", "7940", "8239",
                 "17745", "21804", "40048", "41242", "80212", "87143", "--groups"] + ["0", "1"] * 4) == 0
    out = capsys.readouterr().out
    assert "x^1.12" in out and "OLS residuals [1.02, 1.21]" in out and "seeds only" in out


def _summary(tau_1pct, f_mem_last):
    """A sweep.json-like summary of 4 runs, as ``analyse`` writes it (null for never)."""
    from reference_models.ddpm.sweep import LEVELS

    ns = [64, 128, 256, 512]
    runs = [{"n": n, "seed": 0, "steps": [100, 1000, 10 * n], "f_mem": [0.0, 0.0, fl],
             "max_f_mem": fl, "tau_gen": 300.0, "tau_gen_source": "main run",
             "quality_name": "Fréchet distance"} for n, fl in zip(ns, f_mem_last)]
    fits = {}
    for lv in LEVELS:
        tau = [t if t is not None and (lv == 0.01 or fl >= lv) else None
               for t, fl in zip(tau_1pct, f_mem_last)]
        fit = exponent_fit(ns, [np.nan if t is None else t for t in tau], groups=[0] * 4)
        fits[f"{lv:g}"] = {"tau_mem": tau, "fit": fit, "exponent": fit["exponent"]}
    return {"runs": runs, "fits": fits, "tau_gen_ratio_max_min": 1.0, "tau_gen_scale": "linear"}


def test_table_says_not_resolved_and_never_with_the_peak():
    from reference_models.ddpm.sweep import table

    md = table(_summary([640, 1280, None, None], [0.5, 0.3, 0.004, 0.0]))
    assert "nan" not in md.lower()
    assert "never (max f_mem 0.4%)" in md and "never (max f_mem 0.0%)" in md
    assert "tau_mem(1%) not resolved: level reached in 2 of 4 runs" in md
    no_gen = _summary([640, 1280, None, None], [0.5, 0.3, 0.004, 0.0]) | {"tau_gen_ratio_max_min": None}
    assert "not resolved (no run has a tau_gen)" in table(no_gen) and "nan" not in table(no_gen).lower()
    ok = table(_summary([640, 1280, 2560, 5120], [0.5, 0.3, 0.2, 0.12]))
    assert "tau_mem(1%) ∝ n^1.00; 95% intervals: OLS residuals [1.00, 1.00]" in ok


@pytest.fixture(scope="module")
def width_sweeps(tmp_path_factory):
    """Two tiny analysed digits sweeps at n = 8, widths 8 and 16, seeds 0 and 1 (trained, tracked)."""
    from reference_models.ddpm.config import TrainConfig
    from reference_models.ddpm.sweep import analyse
    from reference_models.ddpm.track import track_run
    from reference_models.ddpm.train import train

    root = tmp_path_factory.mktemp("widths")
    dirs = []
    for w in (8, 16):
        d = root / f"w{w}"
        runs = []
        for seed in (0, 1):
            cfg = TrainConfig(n_train=8, n_holdout=16, steps=6, n_checkpoints=3, width=w, seed=seed)
            run = train(cfg, d / f"n8-s{seed}", log=lambda m: None)
            track_run(run, n_samples=12, steps=5)
            runs.append(run)
        analyse(d, runs, n_bootstrap=5)
        dirs.append(d)
    return dirs


def test_checkpoint_selection_matches_the_run_files(width_sweeps):
    from reference_models.ddpm.checkpoints import read_stats

    summary = json.loads((width_sweeps[0] / "sweep.json").read_text())
    assert len(summary["checkpoint_selection"]) == len(summary["runs"]) == 2
    for sel in summary["checkpoint_selection"]:
        run = width_sweeps[0] / sel["run"]
        tr = json.loads((run / "tracking.json").read_text())
        stats_ = {r["step"]: r for r in read_stats(run)}
        rows = {row["rule"]: row for row in sel["rows"]}
        # brute force: argmin of the held-out loss over the tracked steps, argmin of quality
        want_loss = min(tr["steps"], key=lambda s: stats_[s]["holdout_loss_eval"])
        want_q = tr["steps"][int(np.argmin(tr["quality"]))]
        assert rows["held-out loss"]["step"] == want_loss
        assert rows["held-out loss"]["holdout_loss"] == stats_[want_loss]["holdout_loss_eval"]
        assert rows["quality"]["step"] == want_q and rows["quality"]["quality"] == min(tr["quality"])
        assert rows["recommended"]["step"] == tr["recommended"] or (
            tr["recommended"] is None and "reason" in rows["recommended"])
        for row in sel["rows"]:
            if row["step"] is not None:
                i = tr["steps"].index(row["step"])
                assert row["f_mem"] == tr["f_mem"][i] and row["control_f_mem"] == tr["control_f_mem"][i]
        assert sel["eval_index"] == 40
    md = (width_sweeps[0] / "sweep.md").read_text()
    assert "## Checkpoint selection" in md and md.count("| lowest held-out loss |") == 2
    assert "nan" not in md.lower()


def test_width_law_analysis_on_tiny_sweeps(width_sweeps, tmp_path, capsys):
    from reference_models.ddpm.sweep import main as sweep_main
    from reference_models.ddpm.widths import main as widths_main

    assert sweep_main(["--analyse-width", *map(str, width_sweeps), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "widths.json").read_text())
    assert sorted({(r["W"], r["seed"]) for r in summary["runs"]}) == [(8, 0), (8, 1), (16, 0), (16, 1)]
    for r in summary["runs"]:  # the per-run values are the sweeps' own
        sw = json.loads((Path(r["sweep"]) / "sweep.json").read_text())
        i = [(q["n"], q["seed"]) for q in sw["runs"]].index((r["n"], r["seed"]))
        assert r["tau_gen"] == sw["runs"][i]["tau_gen"]
        assert r["tau_gen_log"] == sw["runs"][i]["tau_gen_log_checkpoint"]  # both rules, read
        assert r["tau_mem"]["0.01"] == sw["fits"]["0.01"]["tau_mem"][i]
    fit = summary["fits_against_W"]["8"]["tau_gen"]
    taus = [r["tau_gen"] for r in summary["runs"]]
    if all(t is not None for t in taus):
        want = exponent_fit([r["W"] for r in summary["runs"]], taus)
        assert fit["exponent"] == pytest.approx(want["exponent"])
    md = (tmp_path / "widths.md").read_text()
    assert md.count("\n| 8 | 8 |") == 2 and md.count("\n| 16 | 8 |") == 2 and "nan" not in md.lower()
    assert "tau_gen (log rule) |" in md and "final quality" in md and "tau_gen (log rule) ∝" in md
    for png in ("widths_quality.png", "widths_fmem.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert widths_main([str(width_sweeps[0]), "--out", str(tmp_path / "one")]) == 2
    assert "needs sweeps at >= 2 widths" in capsys.readouterr().err
    assert widths_main([str(width_sweeps[0]), str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "has no sweep.json" in capsys.readouterr().err
    assert widths_main([str(width_sweeps[0]), str(width_sweeps[0]), "--out", str(tmp_path / "y")]) == 2
    assert "both have width 8" in capsys.readouterr().err


def test_the_fit_range_keeps_every_run_in_the_table_and_fits_only_n_above_it():
    """Runs below fit_n_min (under the crossover) are listed with their tau_mem, not fitted; the
    in-range exponent equals the brute-force fit of the in-range runs' crossings."""
    from reference_models.ddpm.sweep import _fits, crossing_step, table

    steps = np.array([100.0, 200, 400, 800, 1600, 3200, 6400])
    records = []
    for n, seed, onset in [(16, 0, 150), (32, 0, 300), (64, 0, 700), (64, 1, 800), (128, 0, 1500),
                           (128, 1, 1700), (256, 0, 3300), (256, 1, 3000)]:
        frac = np.clip((steps - onset) / onset, 0, 1) * 0.5  # f_mem rises after its onset
        flags = np.arange(200)[None, :] < (frac * 200)[:, None]
        records.append({"n": n, "seed": seed, "steps": steps, "flags": flags})
    use = np.array([r["n"] >= 64 for r in records])
    fits = _fits(records, use, np.random.default_rng(0), 20, 0)
    f = fits["0.05"]
    assert f["fit_n"] == [64, 128, 256] and len(f["tau_mem"]) == len(records)
    taus = [crossing_step(r["steps"], r["flags"].mean(1), 0.05) for r in records]
    assert f["tau_mem"] == pytest.approx(taus)
    want = exponent_fit([r["n"] for r in records if r["n"] >= 64], [t for t, u in zip(taus, use) if u])
    assert f["exponent"] == pytest.approx(want["exponent"])
    every = _fits(records, np.ones(len(records), bool), np.random.default_rng(0), 20, 0)["0.05"]
    assert every["fit_n"] == [16, 32, 64, 128, 256] and every["exponent"] != pytest.approx(f["exponent"])
    summary = {"runs": [{"n": r["n"], "seed": r["seed"], "steps": r["steps"].tolist(),
                         "f_mem": r["flags"].mean(1).tolist(), "tau_gen": 500.0,
                         "tau_gen_source": "main run", "max_f_mem": 0.5} for r in records],
               "fits": fits, "fits_all_n": _fits(records, np.ones(len(records), bool),
                                                 np.random.default_rng(0), 20, 0),
               "fit_n_min": 64, "tau_gen_ratio_max_min": 1.0, "tau_gen_scale": "linear"}
    md = table(summary)
    assert "Fitted over n >= 64" in md and "(n = 64, 128, 256)" in md and "- over every n:" in md
    assert md.count("\n| 16 | 0 |") == 1  # the run below the range is still in the table


def test_a_run_that_ends_at_zero_f_mem_is_left_out_of_the_collapse():
    """f_mem / f_mem(last) is undefined when the last f_mem is 0 (it was drawn as a 2e9 spike)."""
    from reference_models.figures import collapse_norm

    assert collapse_norm([0.0, 0.002, 0.0]) is None and collapse_norm([]) is None
    assert collapse_norm([0.0, float("nan")]) is None
    np.testing.assert_allclose(collapse_norm([0.0, 0.1, 0.2]), [0.0, 0.5, 1.0])
