"""The time-series study: do tau_gen and tau_mem separate for a time-series DDPM, how does tau_mem
scale with n, and which probe flags copying first?

    python -m reference_models.ddpm.sweep --setting ts-sines --out runs/ts-sweep --n 16 32 64 128 \\
        --sampler ddim --n-samples 500 --lr 2e-3 --steps-per-n 250 --min-steps 6000
    python -m reference_models.ts_diffusion.study --sweep runs/ts-sweep --figures docs/figures/timeseries

After the sweep (training, DDIM samples and f_mem at every checkpoint), this adds two more probes per
checkpoint and compares their onsets:

- subsequence matching: every sub-window of ``--sub-length`` steps (every ``--sub-stride``) of each
  generated window against every sub-window of the training windows, z-normalised, d1/d2 < 1/3
  (``memaudit.probes.subsequence``); the rate of memorized sub-windows;
- membership inference: the loss attack's AUC (members = the training windows, non-members =
  held-out windows; timestep and threshold chosen on a calibration half,
  ``reference_models.ddpm.membership``).

Onset of each probe, stated before the runs: f_mem and the sub-window rate, the step where they
first reach 1% (log-linear interpolation, as for tau_mem in the sweep); the membership attack, the
first checkpoint whose AUC interval lies above 0.5. Writes study.json, study.md and plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from memaudit.io import atomic_write_bytes, atomic_write_text
from memaudit.probes.subsequence import SubsequenceProbe

from ..ddpm.checkpoints import run_config
from ..ddpm.membership import membership_over_training
from ..ddpm.sweep import crossing_step, tracked_runs
from ..ddpm.train import prepare_data
from ..figures import pyplot, save_png

__all__ = ["study_run", "main"]


def study_run(run: Path, sub_length: int = 16, sub_stride: int = 8, max_nonmembers: int = 256,
              log=None) -> dict:
    cfg = run_config(run)
    x_tr, x_ho, mean, _, _ = prepare_data(cfg)
    train = x_tr.numpy()[:, 0, :]  # (n, L): each training window is a series for the probe
    hold = x_ho.numpy()[:, 0, :]
    probe = SubsequenceProbe(sub_length, stride=sub_stride, n_bootstrap=200, progress=False).fit(train)
    control = probe.score(hold[:max_nonmembers]).window_rate
    tracking = json.loads((run / "tracking.json").read_text())
    sub = {}
    with np.load(run / "samples.npz") as z:
        for k in sorted((k for k in z.files if k.startswith("step_")), key=lambda k: int(k[5:])):
            res = probe.score(z[k][:, 0, :])
            sub[int(k[5:])] = res.window_rate.to_dict()
    mia = membership_over_training(run, max_nonmembers=max_nonmembers, n_bootstrap=300, log=log)
    steps = tracking["steps"]
    f_mem = tracking["f_mem"]
    sub_rate = [sub[s]["value"] for s in steps]
    loss_auc = [r["loss"]["auc"] for r in mia["rows"]]
    first_auc = next((r["step"] for r, a in zip(mia["rows"], loss_auc) if a["low"] > 0.5), None)
    return {
        "run": run.name, "n": cfg.n_train, "steps": steps, "f_mem": f_mem, "sub_rate": sub_rate,
        "sub_control": control.to_dict(), "quality": tracking["quality"],
        "loss_auc": [a["value"] for a in loss_auc], "loss_auc_low": [a["low"] for a in loss_auc],
        "pia_auc": [r["pia"]["auc"]["value"] for r in mia["rows"]],
        "onset_f_mem": crossing_step(steps, f_mem, 0.01),
        "onset_subsequence": crossing_step(steps, sub_rate, 0.01),
        "onset_membership": first_auc,
        "tau_gen": tracking["tau_gen"],
    }


def _table(rows) -> str:
    def f(v):
        return "never" if v is None or not np.isfinite(v) else f"{v:,.0f}"

    out = ["| n | tau_gen | f_mem onset (1%) | sub-window onset (1%) | loss-attack onset (AUC > 0.5) | "
           "final f_mem | final sub-window rate | final loss AUC |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['n']} | {f(r['tau_gen'])} | {f(r['onset_f_mem'])} | "
                   f"{f(r['onset_subsequence'])} | {f(r['onset_membership'])} | "
                   f"{100 * r['f_mem'][-1]:.1f}% | {100 * r['sub_rate'][-1]:.1f}% | "
                   f"{r['loss_auc'][-1]:.3f} |")
    return "\n".join(out) + "\n"


def _plot(rows, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for i, r in enumerate(rows):
        c = plt.cm.viridis(i / max(1, len(rows) - 1))
        ax[0].plot(r["steps"], r["f_mem"], "-", color=c, label=f"n = {r['n']}: f_mem")
        ax[0].plot(r["steps"], r["sub_rate"], ":", color=c)
        ax[1].plot(r["steps"], r["loss_auc"], "-", color=c, label=f"n = {r['n']}")
        ax[2].plot(r["steps"], r["quality"], "-", color=c, label=f"n = {r['n']}")
    ax[0].set(xscale="log", xlabel="training step", ylabel="f_mem (solid), sub-window rate (dotted)")
    ax[1].axhline(0.5, color="k", lw=0.8, ls=":")
    ax[1].set(xscale="log", xlabel="training step", ylabel="loss-attack AUC (evaluation half)")
    ax[2].set(xscale="log", yscale="log", xlabel="training step",
              ylabel="Fréchet distance to held-out windows")
    for a in ax:
        a.legend(fontsize=7)
    save_png(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_models.ts_diffusion.study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", required=True, help="a folder written by reference_models.ddpm.sweep")
    p.add_argument("--figures", help="also copy the plots here (e.g. docs/figures/timeseries)")
    p.add_argument("--sub-length", type=int, default=16)
    p.add_argument("--sub-stride", type=int, default=8)
    a = p.parse_args(argv)
    sweep = Path(a.sweep)
    runs = tracked_runs(sweep)
    if not runs:
        raise SystemExit(f"{sweep} has no tracked runs; run reference_models.ddpm.sweep first")
    rows = [study_run(r, a.sub_length, a.sub_stride,
                      log=lambda m, r=r: print(f"[{r.name}] {m}", file=sys.stderr, flush=True))
            for r in runs]
    atomic_write_text(sweep / "study.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(sweep / "study.md", _table(rows))
    try:
        _plot(rows, sweep / "study.png")
        if a.figures:
            for name in ("study.png", "sweep.png"):
                if (sweep / name).exists():
                    atomic_write_bytes(Path(a.figures) / name, (sweep / name).read_bytes())
    except ImportError:
        pass
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
