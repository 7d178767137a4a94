"""The n-sweep: does memorization start at tau_mem proportional to n, after an n-independent tau_gen?

    python -m reference_models.ddpm.sweep --out runs/gmm-sweep --n 64 128 256 512 --seeds 0 1

For every training-set size n and seed: train (``reference_models.ddpm.train``; a rerun resumes),
sample at every checkpoint and track memorization (``reference_models.ddpm.track``), then fit across
runs. The default setting is the paper's Gaussian mixture (SM B: d = 8, residual MLP W = 128, full
batch, Adam 6e-4, ancestral DDPM sampling, quality = energy distance to fresh P0 draws); ``--setting
digits`` trains the small U-Net on 8x8 digits instead, ``--setting ts-sines`` (or ts-ar, ts-regimes,
ts-pig) the 1-D U-Net (W = 32) on time-series windows of 32 steps (quality: Fréchet distance).

Read-off rules, fixed before the runs (Bonnaire et al. give no numeric threshold):

- tau_mem(level): the step where f_mem first reaches ``level`` (primary 1%, also 5% and 10%),
  interpolated linearly in log(step) between the two checkpoints around the crossing.
- exponent: least-squares slope of log tau_mem against log n over all runs, with three 95%
  intervals (``reference_models.fits.exponent_fit``): a bootstrap that resamples the generated
  samples of each run (the same resampled seeds at every checkpoint) and, with several seeds, the
  seeds within each n; the OLS residual interval (t on the slope's standard error over the per-run
  points); and a seed-level interval (slope per seed, bootstrap over seeds only). When some run
  never reaches the level the exponent is not resolved (null, with the reason "level reached in k
  of m runs"), never a fit of the runs that did.
- checkpoint selection: per run, the checkpoint of the lowest held-out loss (stats.jsonl), of the
  best quality and memaudit's recommended one, with the f_mem, control and quality each yields.
- tau_gen: the first step where quality has made all but 5% of its total improvement (from the
  first checkpoint to the best one), q <= q_best + 0.05 (q_first - q_best), interpolated like
  tau_mem; on the quality curve of the main run joined with an *early* run of the same
  configuration and seed (``--early-steps``: checkpoints from step 1, where the model is still far
  from the data), because quality can reach its floor before the main grid starts; training is
  deterministic, so the early run retraces the first steps of the main run exactly. The plain
  (linear) improvement, not the log-improvement the tracker uses by default, because the energy
  distance's floor is near zero and scatters by a factor 2-3 between checkpoints (measured on the
  Adam sweep): 5% of a log-improvement is inside that scatter and picks a noise dip.
  ``--tau-gen-scale log`` restores the log rule; the other rule's value is always reported beside.
- collapse: f_mem / f_mem(last checkpoint) against step / n.

Writes sweep.json (every curve and fit), sweep.md (the table, the exponents, the checkpoint
selection) and sweep.png (f_mem vs step, the collapse, quality vs step, tau_mem vs n).
``--analyse-width DIR...`` reads analysed sweeps of one width each (``reference_models.ddpm.widths``).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from memaudit.io import atomic_write_text
from memaudit.results import jsonable
from memaudit.probes.nn_ratio import NNRatioProbe
from memaudit.tracking import estimate_tau_gen, level_crossing, tau_gen_threshold

from ..figures import collapse_norm, legends, pyplot, save_png
from ..fits import exponent_fit, fit_exponent, format_fit

__all__ = ["crossing_step", "tracked_runs", "run_sweep", "analyse", "checkpoint_selection",
           "table", "selection_table"]

LEVELS = (0.01, 0.05, 0.10)
TAU_GEN_TOLERANCE = 0.05


crossing_step = level_crossing  # tau_mem(level): first step where f_mem reaches the level


def tracked_runs(out) -> list[Path]:
    """The main runs of a sweep folder that have a tracking.json (``n{n}-s{seed}``, early runs left
    out), ordered by n, then by name."""
    runs = (r for r in Path(out).glob("n*-s*")
            if not r.name.endswith("-early") and (r / "tracking.json").exists())
    return sorted(runs, key=lambda r: (int(r.name.split("-")[0][1:]), str(r)))


# Per-setting defaults (every option left unset on the command line takes its setting's value), so
# that the README's command for a setting is the one that was run. gmm: the paper's SM B recipe
# (the Adam sweep in the README); digits: the image sweep of the U-Net on 8x8 digits, fixed before
# its runs (W = 16, mults (1, 2), dropout 0.1, Adam 1e-3, a fixed batch of 16 whatever n, 20
# log-spaced checkpoints from step 100 to 150 n steps, 500 DDIM-50 samples per checkpoint; the
# pilot's onset was at ~69 n steps, so 150 n reaches about twice tau_mem(1%)).
SETTING_DEFAULTS = {
    "gmm": dict(lr=6e-4, steps_per_n=100.0, min_steps=20_000, n_checkpoints=30, first_checkpoint=100,
                early_steps=1000, early_checkpoints=15, n_samples=1000, sampler="ddpm",
                ddim_steps=100, width=128, batch_size=1 << 30, dropout=0.0, seq_len=None,
                fit_n_min=0),
    "digits": dict(lr=1e-3, steps_per_n=150.0, min_steps=0, n_checkpoints=20, first_checkpoint=100,
                   early_steps=0, early_checkpoints=15, n_samples=500, sampler="ddim", ddim_steps=50,
                   width=16, batch_size=16, dropout=0.1, seq_len=None, fit_n_min=64),
    # the time-series study (reference_models.ts_diffusion.design), fixed before its runs: the 1-D
    # U-Net W = 32, dropout 0.1, Adam 1e-3, a fixed batch of 32, 20 checkpoints from step 100 to
    # 150 n steps (extended to 300 n, then 600 n, where f_mem has not reached 1%: --extend),
    # 1,000 DDIM-100 (or ODE-100) samples, windows of TS_SEQ_LEN; fit over n >= 64
    "ts": dict(lr=1e-3, steps_per_n=150.0, min_steps=0, n_checkpoints=20, first_checkpoint=100,
               early_steps=0, early_checkpoints=15, n_samples=1000, sampler="ddim",
               ddim_steps=100, width=32, batch_size=32, dropout=0.1, seq_len=None, fit_n_min=64),
}
# window length per time-series family: a power of two (the U-Net halves it per level); PigCVP 256
# samples (about 1.7 heartbeats at 250 Hz), GunPoint resampled from 150 to 128
TS_SEQ_LEN = {"ts-sines": 64, "ts-ar": 64, "ts-regimes": 64, "ts-pig": 256, "ts-gunpoint": 128}


def setting_defaults(setting: str) -> dict:
    """The defaults of ``setting`` (gmm, digits or ts-*; a ts family's window length included)."""
    d = dict(SETTING_DEFAULTS["ts" if setting.startswith("ts-") else setting])
    if setting.startswith("ts-"):
        d["seq_len"] = TS_SEQ_LEN[setting]
    return d


def _config(setting: str, n: int, seed: int, a, early: bool = False):
    from .config import TrainConfig

    steps = int(max(a.min_steps, a.steps_per_n * n))
    common = dict(n_train=n, seed=seed, steps=steps, n_checkpoints=a.n_checkpoints,
                  first_checkpoint=min(a.first_checkpoint, steps), optimizer=a.optimizer, lr=a.lr,
                  width=a.width, batch_size=a.batch_size, objective=getattr(a, "objective", "ddpm"))
    if early:
        common.update(steps=a.early_steps, n_checkpoints=a.early_checkpoints, first_checkpoint=1)
    if setting == "gmm":
        return TrainConfig.gmm(**common)
    if setting.startswith("ts-"):  # time-series windows with the 1-D U-Net (reference_models.ts_diffusion)
        return TrainConfig(data=setting, seq_len=a.seq_len, mults=(1, 2), attention=(False, True),
                           dropout=a.dropout, n_holdout=500, **common)
    return TrainConfig(data="digits", image_size=8, mults=(1, 2), attention=(False, True),
                       dropout=a.dropout, n_holdout=500, **common)


def _one_run(job):
    """Train and track one (n, seed) run; returns its folder. Runs in a worker process."""
    import torch

    from .track import track_run
    from .train import train

    setting, n, seed, out, a, early = job
    torch.set_num_threads(a.threads)
    cfg = _config(setting, n, seed, a, early)
    run = Path(out) / f"n{n}-s{seed}{'-early' if early else ''}"

    def log(m):
        print(f"[n={n} seed={seed}] {m}", file=sys.stderr, flush=True)

    train(cfg, run, extend=getattr(a, "extend", False), log=log)
    track_run(run, a.n_samples, steps=a.ddim_steps, sampler=a.sampler,
              quality="energy" if setting == "gmm" else "frechet", log=log)
    return str(run)


def _flags(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the (n_checkpoints, n_samples) memorized flags of one run, from its samples."""
    from .checkpoints import run_config
    from .train import prepare_data

    cfg = run_config(run)
    x_train = prepare_data(cfg)[0].reshape(cfg.n_train, -1).numpy()
    probe = NNRatioProbe(carlini_alpha=None, n_bootstrap=1).fit(x_train)
    with np.load(run / "samples.npz") as z:
        steps = sorted(int(k[5:]) for k in z.files if k.startswith("step_"))
        flags = np.stack([probe.score(z[f"step_{s}"].reshape(z[f"step_{s}"].shape[0], -1)).memorized
                          for s in steps])
    return np.array(steps), flags


def _fits(records, use, rng, n_bootstrap: int, seed: int) -> dict:
    """tau_mem at each level for every run, and the exponent fitted over the runs ``use`` marks."""
    ns_all = np.array([r["n"] for r in records])
    fits = {}
    for level in LEVELS:
        taus_all = np.array([crossing_step(r["steps"], r["flags"].mean(1), level) for r in records])
        sub = [records[i] for i in np.flatnonzero(use)]
        ns, taus = ns_all[use], taus_all[use]
        seeds = np.array([r["seed"] for r in sub])
        boot = None
        if np.all(np.isfinite(taus)) and np.unique(ns).size >= 2:  # resolved: bootstrap it
            boot = []
            for _ in range(n_bootstrap):
                chosen = []
                for n in np.unique(ns):  # resample seeds within each n, then samples within each run
                    idx = np.flatnonzero(ns == n)
                    chosen.extend(rng.choice(idx, size=idx.size, replace=True))
                bt = []
                for i in chosen:
                    fl = sub[i]["flags"]
                    pick = rng.integers(0, fl.shape[1], fl.shape[1])
                    bt.append(crossing_step(sub[i]["steps"], fl[:, pick].mean(1), level))
                # a replicate where some run never reaches the level is unresolved, not refitted
                # without that run (which would bias it towards the runs that did)
                boot.append(fit_exponent(ns[chosen], bt)[0] if np.all(np.isfinite(bt)) else np.nan)
        fit = exponent_fit(ns, taus, groups=seeds, bootstrap=boot, seed=seed,
                           n_bootstrap=n_bootstrap)
        fits[f"{level:g}"] = {"level": level, "tau_mem": taus_all.tolist(), "exponent": fit["exponent"],
                              "exponent_ci95": fit["bootstrap"]["ci"] if fit["bootstrap"] else None,
                              "intercept": fit["intercept"], "resolved": fit["resolved"],
                              "reason": fit["reason"], "ols_ci95": (fit["ols"] or {}).get("ci"),
                              "seed_ci95": (fit["seed_level"] or {}).get("ci"),
                              "text": format_fit(fit), "fit": fit,
                              "fit_n": sorted({int(n) for n in ns}),
                              "tau_over_n": (taus_all / ns_all).tolist()}
    return fits


def analyse(out, runs, *, n_bootstrap: int = 1000, seed: int = 0, tau_gen_scale: str = "linear",
            fit_n_min: int | None = None) -> dict:
    """Fit tau_mem vs n across ``runs`` (folders n{n}-s{seed}); write sweep.json/.md/.png.

    ``fit_n_min``: fit the exponent over the runs with n >= fit_n_min only (above the crossover
    n_gm, where tau_mem > tau_gen and the law tau_mem ∝ n is expected); every run is still in the
    tables, and the fit over all n is reported beside (``fits_all_n``).

    ``tau_gen_scale``: "linear" (default) reads tau_gen where quality has made 95% of its plain
    improvement, "log" 95% of its log-improvement (the tracker's default); the other one is reported
    beside it (at the checkpoint, uninterpolated) in sweep.json and sweep.md.
    """
    out = Path(out)
    records = []
    for run in map(Path, runs):
        tr = json.loads((run / "tracking.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        steps, flags = _flags(run)
        records.append({"run": run.name, "n": cfg["n_train"], "seed": cfg["seed"], "steps": steps,
                        "flags": flags, "tracking": tr, "config": cfg})
    ns = np.array([r["n"] for r in records])
    rng = np.random.default_rng(seed)
    in_range = ns >= (fit_n_min or 0)
    fits = _fits(records, in_range, rng, n_bootstrap, seed)
    fits_all = _fits(records, np.ones(len(records), bool), rng, n_bootstrap, seed) \
        if fit_n_min and not in_range.all() else None
    for r in records:  # tau_gen on the early run's quality joined with the main run's
        q = dict(zip(r["tracking"]["steps"], r["tracking"]["quality"]))
        early = run_dir(out, r) / "tracking.json"
        r["tau_gen_source"] = "main run"
        if early.exists():
            te = json.loads(early.read_text())
            q = dict(zip(te["steps"], te["quality"])) | q
            r["early_steps"], r["early_quality"] = te["steps"], te["quality"]
            r["tau_gen_source"] = "early + main run"
        steps_all = np.array(sorted(q), float)
        q_all = np.array([q[s] for s in sorted(q)], float)
        thr = tau_gen_threshold(q_all, TAU_GEN_TOLERANCE, tau_gen_scale)
        r["tau_gen"] = level_crossing(steps_all, -q_all, -thr) if thr is not None else float("nan")
        other = "log" if tau_gen_scale == "linear" else "linear"
        r["tau_gen_other"] = estimate_tau_gen(steps_all, q_all, TAU_GEN_TOLERANCE, other)
    tau_gen = np.array([r["tau_gen"] for r in records], float)
    tau_gen_other = np.array([r["tau_gen_other"] or np.nan for r in records], float)
    summary = {
        "runs": [{"run": r["run"], "n": r["n"], "seed": r["seed"], "steps": r["steps"].tolist(),
                  "f_mem": r["flags"].mean(1).tolist(), "quality": r["tracking"]["quality"],
                  "quality_name": r["tracking"]["quality_name"], "tau_gen": r["tau_gen"],
                  f"tau_gen_{'log' if tau_gen_scale == 'linear' else 'linear'}_checkpoint":
                      r["tau_gen_other"],
                  "tau_gen_source": r["tau_gen_source"], "early_steps": r.get("early_steps"),
                  "early_quality": r.get("early_quality"),
                  "tau_mem_tracker": r["tracking"]["tau_mem"],
                  "recommended": r["tracking"]["recommended"],
                  "losses": r["tracking"]["losses"], "config": r["config"],
                  "max_f_mem": float(r["flags"].mean(1).max())} for r in records],
        "fits": fits,
        "fit_n_min": fit_n_min,
        "fits_all_n": fits_all,
        "checkpoint_selection": [checkpoint_selection(run, r["tracking"])
                                 for run, r in zip(map(Path, runs), records)],
        "tau_gen_ratio_max_min": _max_over_min(tau_gen),
        "tau_gen_scale": tau_gen_scale,
        "tau_gen_other_scale_ratio_max_min": _max_over_min(tau_gen_other),
        "rules": {"tau_mem": "first step where f_mem >= level, log-linear interpolation",
                  "exponent": "least squares of log tau_mem on log n over every run; 95% "
                              "intervals: bootstrap over samples and seeds, OLS residuals (t on "
                              "the slope's standard error), bootstrap over seeds only; not "
                              "resolved (null) when some run never reaches the level",
                  "checkpoint_selection": "per run: lowest held-out loss at eval_index "
                                          "(stats.jsonl), best quality, the tracker's recommended "
                                          "checkpoint (best quality before its tau_mem)",
                  "tau_gen": f"first step where quality reaches all but {100 * TAU_GEN_TOLERANCE:g}% of "
                             f"its total {'log-' if tau_gen_scale == 'log' else ''}improvement "
                             "(early + main run), log-linear interpolation",
                  "collapse": "f_mem / f_mem(last checkpoint) against step / n"},
        "n_bootstrap": n_bootstrap, "seed": seed,
    }
    summary = jsonable(summary)  # NaN -> null: strict JSON, and the tables read the same thing
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "sweep.md", table(summary))
    try:
        plot(summary, out / "sweep.png")
    except ImportError:
        pass
    return summary


def _max_over_min(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(v.max() / v.min()) if v.size else float("nan")


def _num(x) -> float:
    """A number of sweep.json as a float (null, a level never reached, is NaN)."""
    return float("nan") if x is None else float(x)


def _fmt(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:,.0f}"


def run_dir(out, record) -> Path:
    return Path(out) / f"n{record['n']}-s{record['seed']}-early"


SELECTION_RULES = (("held-out loss", "lowest held-out loss"), ("quality", "best quality"),
                   ("recommended", "memaudit's recommended"))


def checkpoint_selection(run, tracking: dict) -> dict:
    """The checkpoints that three rules choose in one run, and what each yields.

    (a) the lowest held-out denoising loss at the fixed index ``eval_index`` (``holdout_loss_eval``
    of stats.jsonl, the paper's test loss at t = 0.01), (b) the best quality (lowest distance to
    held-out data in tracking.json), (c) the tracker's ``recommended`` checkpoint (best quality
    before its tau_mem). Only tracked checkpoints are candidates. For each: the step, f_mem, the
    held-out control rate, the quality and the held-out loss there; ``step`` None (with a
    ``reason``) when the rule chooses nothing.
    """
    from .checkpoints import read_stats

    steps = [int(s) for s in tracking["steps"]]
    at = {s: i for i, s in enumerate(steps)}
    stats = {rec["step"]: rec for rec in read_stats(run) if rec["step"] in at}
    holdout = {s: rec["holdout_loss_eval"] for s, rec in stats.items()
               if rec.get("holdout_loss_eval") is not None}
    quality = tracking.get("quality")
    control = tracking.get("control_f_mem")
    chosen = {"held-out loss": min(holdout, key=holdout.get) if holdout else None,
              "quality": (steps[int(np.nanargmin(np.array(quality, float)))]
                          if quality and np.isfinite(np.array(quality, float)).any() else None),
              "recommended": tracking.get("recommended")}
    why = {"held-out loss": "no held-out loss in stats.jsonl at the tracked checkpoints",
           "quality": "no quality in tracking.json",
           "recommended": "none: f_mem is above zero from the first checkpoint (tau_mem there)"
                          if tracking.get("tau_mem") is not None else "no quality in tracking.json"}
    rows = []
    for key, _ in SELECTION_RULES:
        step = chosen[key]
        row = {"rule": key, "step": None if step is None else int(step)}
        if step is None or int(step) not in at:
            row["reason"] = why[key] if step is None else f"step {step} is not a tracked checkpoint"
            row["step"] = None
        else:
            i = at[int(step)]
            row.update(f_mem=tracking["f_mem"][i],
                       control_f_mem=None if control is None else control[i],
                       quality=None if not quality else quality[i],
                       holdout_loss=holdout.get(int(step)))
        rows.append(row)
    eval_index = next((rec.get("eval_index") for rec in stats.values()), None)
    return {"run": Path(run).name, "eval_index": eval_index, "tau_mem_tracker": tracking.get("tau_mem"),
            "rows": rows}


def _pct(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _g(x) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.4g}"


def selection_table(summary: dict) -> str:
    """The checkpoint-selection table (markdown): per run, the checkpoint each rule picks and its
    f_mem, held-out control rate, quality and held-out loss."""
    sel = summary.get("checkpoint_selection") or []
    if not sel:
        return ""
    idx = sel[0].get("eval_index")
    qname = (summary["runs"][0].get("quality_name") or "quality") if summary["runs"] else "quality"
    lines = [f"| n | seed | rule | step | f_mem | held-out control | {qname} | held-out loss"
             f"{f' @ index {idx}' if idx is not None else ''} |", "|---|---|---|---|---|---|---|---|"]
    names = dict(SELECTION_RULES)
    for r, s in zip(summary["runs"], sel):
        for row in s["rows"]:
            if row["step"] is None:
                lines.append(f"| {r['n']} | {r['seed']} | {names[row['rule']]} | - | "
                             f"{row['reason']} | | | |")
                continue
            lines.append(f"| {r['n']} | {r['seed']} | {names[row['rule']]} | {row['step']:,} | "
                         f"{_pct(_num(row['f_mem']))} | {_pct(_num(row['control_f_mem']))} | "
                         f"{_g(_num(row['quality']))} | {_g(_num(row['holdout_loss']))} |")
    return "\n".join(lines) + "\n"


def _ratio(x) -> str:
    return f"{_num(x):.2f}" if np.isfinite(_num(x)) else "not resolved (no run has a tau_gen)"


def _tau_cell(t: float, max_f_mem) -> str:
    if np.isfinite(t):
        return f"{t:,.0f}"
    return "never" if max_f_mem is None else f"never (max f_mem {100 * max_f_mem:.1f}%)"


def table(summary: dict) -> str:
    """The reproduction table (markdown): per run tau_gen, tau_mem at each level, final f_mem; the
    fitted exponents with their intervals (or why not resolved); the checkpoint selection."""
    lines = ["| n | seed | steps | tau_gen | " + " | ".join(f"tau_mem({100 * lv:g}%)" for lv in LEVELS)
             + " | tau_mem(1%)/n | final f_mem |", "|" + "---|" * (6 + len(LEVELS))]
    for i, r in enumerate(summary["runs"]):
        taus = [_num(summary["fits"][f"{lv:g}"]["tau_mem"][i]) for lv in LEVELS]
        peak = r.get("max_f_mem")
        if peak is None and r.get("f_mem"):
            peak = float(np.nanmax(np.array(r["f_mem"], float)))
        cells = [_tau_cell(t, peak) for t in taus]
        t1 = f"{taus[0] / r['n']:.1f}" if np.isfinite(taus[0]) else "-"
        lines.append(f"| {r['n']} | {r['seed']} | {r['steps'][-1]:,} | {_fmt(_num(r['tau_gen']))} | "
                     + " | ".join(cells) + f" | {t1} | {100 * r['f_mem'][-1]:.1f}% |")
    lines.append("")
    n_min = summary.get("fit_n_min")
    if n_min and summary.get("fits_all_n"):
        lines.append(f"Fitted over n >= {n_min} (above the crossover, fixed before the runs); the fit "
                     "over every n is listed after it.")
        lines.append("")
    for lv in LEVELS:
        f = summary["fits"][f"{lv:g}"]
        if "fit" in f:
            lines.append(f"- tau_mem({100 * lv:g}%) {format_fit(f['fit'])}"
                         + (f" (n = {', '.join(map(str, f['fit_n']))})" if f.get("fit_n") else ""))
        elif f.get("exponent") is not None and np.isfinite(_num(f["exponent"])):  # older sweep.json
            ci = f.get("exponent_ci95") or [None, None]
            lines.append(f"- tau_mem({100 * lv:g}%) ∝ n^{f['exponent']:.2f}, 95% interval "
                         f"[{_num(ci[0]):.2f}, {_num(ci[1]):.2f}]")
        else:
            lines.append(f"- tau_mem({100 * lv:g}%): not resolved")
    for lv in LEVELS if summary.get("fits_all_n") else ():
        f = summary["fits_all_n"][f"{lv:g}"]
        lines.append(f"- over every n: tau_mem({100 * lv:g}%) {format_fit(f['fit'])}")
    scale = summary.get("tau_gen_scale", "log")
    other = "log" if scale == "linear" else "linear"
    lines.append(f"- tau_gen ({scale} rule, interpolated): largest / smallest across runs = "
                 f"{_ratio(summary['tau_gen_ratio_max_min'])} "
                 f"(read on: {', '.join(sorted({r['tau_gen_source'] for r in summary['runs']}))})")
    if "tau_gen_other_scale_ratio_max_min" in summary:
        lines.append(f"- tau_gen with the {other} rule, at checkpoints: "
                     + ", ".join(_fmt(_num(r.get(f"tau_gen_{other}_checkpoint"))) for r in summary["runs"])
                     + f"; largest / smallest = {_ratio(summary['tau_gen_other_scale_ratio_max_min'])}")
    sel = selection_table(summary)
    if sel:
        lines += ["", "## Checkpoint selection", "",
                  "The checkpoint each rule picks in each run (among the tracked checkpoints) and "
                  "what it yields: (a) the lowest held-out denoising loss, (b) the best quality, "
                  "(c) memaudit's recommended checkpoint (best quality before the tracker's "
                  "tau_mem).", "", sel.rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    ns = sorted({r["n"] for r in summary["runs"]})
    colors = {n: plt.cm.viridis(i / max(1, len(ns) - 1)) for i, n in enumerate(ns)}
    skipped = []
    for r in summary["runs"]:
        st, f = np.array(r["steps"]), np.array([_num(v) for v in r["f_mem"]], float)
        lab = f"n = {r['n']}" if r["seed"] == min(q["seed"] for q in summary["runs"]) else None
        ax[0].plot(st, f, "-", color=colors[r["n"]], label=lab)
        norm = collapse_norm(f)
        if norm is not None:
            ax[1].plot(st / r["n"], norm, "-", color=colors[r["n"]], label=lab)
        else:
            skipped.append(f"n = {r['n']}, seed {r['seed']}")
        if r.get("early_quality"):
            ax[2].plot(r["early_steps"], r["early_quality"], "-", color=colors[r["n"]], label=lab)
            ax[2].plot(st, r["quality"], ":", color=colors[r["n"]])
        elif r["quality"]:
            ax[2].plot(st, r["quality"], "-", color=colors[r["n"]], label=lab)
    ax[0].set(xscale="log", xlabel="training step", ylabel="f_mem (d1/d2 < 1/3)")
    ax[1].set(xscale="log", xlabel="step / n", ylabel="f_mem / f_mem(last)",
              title="collapse" + (f"\n(not drawn, final f_mem 0: {'; '.join(skipped)})" if skipped else ""))
    ax[1].title.set_fontsize(8 if skipped else 10)
    ax[2].set(xscale="log", yscale="log", xlabel="training step",
              ylabel=summary["runs"][0]["quality_name"] or "quality")
    fit = summary["fits"]["0.01"]
    nn = np.array([r["n"] for r in summary["runs"]], float)
    taus = np.array([_num(t) for t in fit["tau_mem"]], float)
    ax[3].loglog(nn, taus, "o", label="tau_mem (f_mem = 1%)")
    open_ = ~np.isfinite(taus)
    if open_.any():  # not reached: the run's last step is a lower bound on its tau_mem
        last = np.array([r["steps"][-1] for r in summary["runs"]], float)
        ax[3].loglog(nn[open_], last[open_], "^", mfc="none", color="C0",
                     label="not reached by this step (a lower bound)")
    grid = np.array([min(ns), max(ns)], float)
    if fit.get("exponent") is not None and fit.get("intercept") is not None:
        f = fit.get("fit") or {}
        ci = (f.get("ols") or {}).get("ci")
        boot = fit.get("exponent_ci95")
        lab = f"fit: n^{fit['exponent']:.2f}" + (f" boot [{boot[0]:.2f}, {boot[1]:.2f}]" if boot else "") \
            + (f" OLS [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        ax[3].loglog(grid, np.exp(fit["intercept"]) * grid ** fit["exponent"], "-", label=lab)
    else:
        ax[3].set_title(fit.get("reason") or "not resolved", fontsize=8)
    tg = np.array([np.nan if r["tau_gen"] is None else r["tau_gen"] for r in summary["runs"]], float)
    ax[3].loglog(nn, tg, "s", label="tau_gen")
    ax[3].set(xlabel="n", ylabel="step")
    legends(ax, fontsize=7)
    save_png(fig, path)


def run_sweep(a) -> dict:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(a.setting, n, s, str(out), a, False) for n in sorted(a.n, reverse=True) for s in a.seeds]
    if a.early_steps:
        jobs += [(a.setting, n, s, str(out), a, True) for n in sorted(a.n, reverse=True)
                 for s in a.seeds]
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            runs = list(pool.map(_one_run, jobs))
    else:
        runs = [_one_run(j) for j in jobs]
    runs = sorted((r for r in runs if not r.endswith("-early")),
                  key=lambda p: (int(Path(p).name.split("-")[0][1:]), p))
    return analyse(out, runs, n_bootstrap=a.n_bootstrap, seed=a.seeds[0], tau_gen_scale=a.tau_gen_scale,
                   fit_n_min=a.fit_n_min)


def sweep_parser(prog: str = "python -m reference_models.ddpm.sweep", description: str | None = None):
    """The sweep's argument parser (also the batched GPU path's, which adds its own options)."""
    p = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="sweep folder (one run folder per n and seed)")
    p.add_argument("--setting", choices=["gmm", "digits", "ts-sines", "ts-ar", "ts-regimes", "ts-pig", "ts-gunpoint"],
                   default="gmm", help="gmm: SM B mixture + residual MLP; digits: 8x8 digits + small "
                   "U-Net; ts-*: time-series windows of 32 steps + 1-D U-Net (W = 32)")
    p.add_argument("--n", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, help="learning rate (gmm 6e-4, digits 1e-3, ts-* 6e-4)")
    p.add_argument("--width", type=int, help="base width W (gmm 128, digits 16, ts-* 32)")
    p.add_argument("--batch-size", type=int,
                   help="batch min(n, B), the same for every n (gmm: full batch; digits 16; ts-* 128)")
    p.add_argument("--dropout", type=float, help="(gmm 0, digits 0.1, ts-* 0.1)")
    p.add_argument("--seq-len", type=int,
                   help="ts-*: window length (sines, ar, regimes 64; pig 256; gunpoint 128)")
    p.add_argument("--steps-per-n", type=float,
                   help="training steps = max(min-steps, steps-per-n * n) (gmm 100, digits 150)")
    p.add_argument("--min-steps", type=int, help="(gmm 20,000, digits 0)")
    p.add_argument("--n-checkpoints", type=int, help="log-spaced checkpoints (gmm 30, digits 20)")
    p.add_argument("--first-checkpoint", type=int, help="first step of the grid (100)")
    p.add_argument("--early-steps", type=int,
                   help="also train an early run to this step with checkpoints from step 1, for "
                   "tau_gen (0: none; gmm 1000, digits 0)")
    p.add_argument("--early-checkpoints", type=int, help="(15)")
    p.add_argument("--n-samples", type=int, help="samples per checkpoint (gmm 1000, digits 500)")
    p.add_argument("--objective", choices=["ddpm", "flow"], default="ddpm",
                   help="ddpm: epsilon prediction; flow: conditional flow matching (rectified flow) "
                   "through the same network, sampled with the Euler ODE")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "ode"],
                   help="(gmm ddpm, digits ddim; ode for --objective flow, the only one it takes)")
    p.add_argument("--ddim-steps", type=int, help="DDIM or ODE steps (gmm 100, digits 50)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--extend", action="store_true",
                   help="continue existing runs to the steps of a larger --steps-per-n (or "
                   "--min-steps) and --n-checkpoints, from their last checkpoints")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--analyse-only", action="store_true", help="refit existing runs, train nothing")
    p.add_argument("--analyse-width", nargs="+", metavar="SWEEP_DIR",
                   help="the width law: analysed sweep folders at fixed n, one per --width; writes "
                   "widths.md/.json and the figures into --out (reference_models.ddpm.widths)")
    p.add_argument("--fit-n-min", type=int,
                   help="fit the exponent over n >= this only (above the crossover; every run stays "
                   "in the tables and the all-n fit is listed beside; digits 64, others: all n)")
    p.add_argument("--tau-gen-scale", choices=["linear", "log"], default="linear",
                   help="tau_gen where quality made 95%% of its plain (linear) or log improvement")
    return p


def apply_setting_defaults(a) -> None:
    """Every option left unset takes its setting's value (``SETTING_DEFAULTS``); a flow-matching
    sweep samples with the ODE (a DDPM sampler given with ``--objective flow`` is refused)."""
    from .objectives import check_sampler

    objective = getattr(a, "objective", "ddpm")
    if objective == "flow":
        a.sampler = check_sampler("flow", a.sampler)
    for key, value in setting_defaults(a.setting).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    check_sampler(objective, a.sampler)


def main(argv=None) -> int:
    p = sweep_parser()
    a = p.parse_args(argv)
    if a.analyse_width:
        from .widths import main as widths_main

        return widths_main([*a.analyse_width, "--out", a.out])
    try:
        apply_setting_defaults(a)
    except ValueError as exc:
        p.error(str(exc))
    if a.analyse_only:
        runs = [str(r) for r in tracked_runs(a.out)]
        summary = analyse(a.out, runs, n_bootstrap=a.n_bootstrap, seed=a.seeds[0],
                          tau_gen_scale=a.tau_gen_scale, fit_n_min=a.fit_n_min)
    else:
        summary = run_sweep(a)
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
