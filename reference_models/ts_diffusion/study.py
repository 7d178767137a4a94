"""The time-series study: do tau_gen and tau_mem separate for a time-series diffusion or flow model,
how does tau_mem scale with n, and which probe flags copying first?

    python -m reference_models.ts_diffusion.design      # the pre-registered sweeps (commands)
    python -m reference_models.ts_diffusion.study --sweep runs/ts/ar-ddpm --figures docs/figures/timeseries

After a sweep (training, samples and whole-window f_mem at every checkpoint), this adds the other
probes of the design (``reference_models.ts_diffusion.design.RULES``) at every checkpoint:

- subsequence matching on generated series ``--long-factor`` windows long (the 1-D U-Net is
  convolutional; ``--n-long`` series per checkpoint, seeds apart from the whole-window samples,
  cached in long_samples.npz): every sub-window of ``--sub-length`` steps (default half a window,
  every ``--sub-stride`` = 1 step) against every sub-window of the training windows, d1/d2 < 1/3,
  z-normalised and raw (``memaudit.probes.subsequence``), with the held-out windows through the same
  probe as the control; a replay of part of a training window inside a longer series is what it
  sees and whole-window f_mem does not;
- membership inference: the loss attack's AUC, every training window a member, as many held-out
  windows as non-members (timestep and threshold chosen on a calibration half,
  ``reference_models.ddpm.membership``);
- closer to train: the share of generated windows nearer a training window than any held-out one
  (``NNRatioProbe``'s DCR view), 50% without memorization for equal sizes.

Onsets, stated before the runs: f_mem and the sub-window rate, the step where they first reach 1%
(log-linear interpolation, as for tau_mem in the sweep); the sub-window rate also where it first
exceeds its control's upper 95% bound; the membership attack, the first checkpoint whose AUC
interval lies above 0.5. Writes study.json, study.md and plots. ``--long-factor 1 --sub-length 16
--sub-stride 8 --max-nonmembers 256`` is the pilot's protocol (docs/timeseries.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from memaudit.io import atomic_write_bytes, atomic_write_text
from memaudit.probes.nn_ratio import NNRatioProbe
from memaudit.probes.subsequence import SubsequenceProbe

from ..ddpm.checkpoints import run_config
from ..ddpm.membership import membership_over_training
from ..ddpm.sweep import checkpoint_selection, crossing_step, tracked_runs
from ..ddpm.train import prepare_data
from ..figures import pyplot, save_png

__all__ = ["study_run", "selection_table", "main"]


def long_series(run: Path, n_long: int, factor: int, *, steps: int = 50, log=None) -> dict:
    """Generated series ``factor`` windows long at every checkpoint (seeds 1,000,000 + i, apart from
    the whole-window samples), cached in long_samples.npz; {step: array (n_long, length)}."""
    from ..ddpm.checkpoints import checkpoint_config, checkpoint_step, load_model, readable_checkpoints
    from ..ddpm.objectives import default_sampler, generate
    from memaudit.io import atomic_savez

    files = readable_checkpoints(run, required=True)
    cfg = checkpoint_config(files[-1])
    length = factor * cfg.seq_len
    key = f"{default_sampler(cfg.objective)}-{steps}-{n_long}-{length}"
    cache = run / "long_samples.npz"
    out = {}
    if cache.exists():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                out = {int(k[5:]): z[k] for k in z.files if k.startswith("step_")}
    missing = [f for f in files if checkpoint_step(f) not in out]
    for path in missing:
        model, ck = load_model(path)
        x = generate(ck["config"], model, range(1_000_000, 1_000_000 + n_long), steps=steps,
                     batch_size=100, length=length)
        out[ck["step"]] = x.numpy()[:, 0, :]
        if log:
            log(f"generated {n_long} series of {length} at step {ck['step']}")
    if missing:
        atomic_savez(cache, key=np.array(key), **{f"step_{k}": v for k, v in sorted(out.items())})
    return out


def study_run(run: Path, sub_length: int | None = None, sub_stride: int = 1,
              max_nonmembers: int | None = None, long_factor: int = 4, n_long: int = 200,
              log=None) -> dict:
    """The probes of the design (``reference_models.ts_diffusion.design.RULES``) at every checkpoint.

    ``long_factor`` > 1: the subsequence probe (sub-windows of ``sub_length``, default half a
    window, every ``sub_stride`` steps) runs on ``n_long`` generated series ``long_factor`` windows
    long, so a replay of part of a training window inside a longer series is seen; 1: on the
    whole-window samples (the pilot). Its control is the held-out windows through the same probe.
    Membership: the loss attack with every training window as a member against ``max_nonmembers``
    held-out windows (default: as many as members).
    """
    cfg = run_config(run)
    x_tr, x_ho, mean, _, _ = prepare_data(cfg)
    train = x_tr.numpy()[:, 0, :]  # (n, L): each training window is a series for the probe
    hold = x_ho.numpy()[:, 0, :]
    sub_length = sub_length or cfg.seq_len // 2
    max_nonmembers = max_nonmembers or len(train)
    tracking = json.loads((run / "tracking.json").read_text())
    steps = tracking["steps"]
    with np.load(run / "samples.npz") as z:
        windows = {int(k[5:]): z[k][:, 0, :] for k in z.files if k.startswith("step_")}
    generated = windows if long_factor == 1 else long_series(run, n_long, long_factor, log=log)
    probes = {"z": SubsequenceProbe(sub_length, stride=sub_stride, n_bootstrap=200, progress=False),
              "raw": SubsequenceProbe(sub_length, stride=sub_stride, normalize=False, n_bootstrap=200,
                                      progress=False)}
    for p in probes.values():
        p.fit(train)
    sub = {name: {} for name in probes}
    control = {}
    closer = {}
    nn = NNRatioProbe(n_bootstrap=200, progress=False).fit(train.reshape(len(train), -1))
    for step in steps:
        for name, p in probes.items():
            res = p.score(generated[step], holdout=hold[:max(len(train), 256)])
            sub[name][step] = res.window_rate.to_dict()
            control[name] = res.control.window_rate.to_dict()  # the same at every checkpoint
        c = nn.score(windows[step].reshape(len(windows[step]), -1),
                     holdout=hold[:len(train)].reshape(min(len(hold), len(train)), -1)).closer_to_train
        closer[step] = None if c is None else c.to_dict()
    mia = membership_over_training(run, max_nonmembers=max_nonmembers, n_bootstrap=300, log=log)
    f_mem = tracking["f_mem"]
    sub_rate = [sub["z"][s]["value"] for s in steps]
    loss_auc = [r["loss"]["auc"] for r in mia["rows"]]
    first_auc = next((r["step"] for r, a in zip(mia["rows"], loss_auc) if a["low"] > 0.5), None)

    def above_control(name):
        return next((s for s in steps if sub[name][s]["value"] > control[name]["high"]), None)

    selection = checkpoint_selection(run, tracking)
    at = {int(s): i for i, s in enumerate(steps)}
    for row in selection["rows"]:  # what each rule's checkpoint yields on the other probes too
        if row.get("step") is None:
            continue
        i = at[row["step"]]
        row.update(loss_auc=loss_auc[i], sub_rate=sub["z"][steps[i]],
                   closer_to_train=closer[steps[i]])

    return {
        "run": run.name, "n": cfg.n_train, "objective": cfg.objective, "steps": steps,
        "f_mem": f_mem, "sub_rate": sub_rate, "sub_rate_raw": [sub["raw"][s]["value"] for s in steps],
        "sub_control": control["z"], "sub_control_raw": control["raw"],
        "sub_length": sub_length, "sub_stride": sub_stride, "long_factor": long_factor,
        "n_long": n_long if long_factor > 1 else len(next(iter(windows.values()))),
        "closer_to_train": [None if closer[s] is None else closer[s]["value"] for s in steps],
        "quality": tracking["quality"],
        "loss_auc": [a["value"] for a in loss_auc], "loss_auc_low": [a["low"] for a in loss_auc],
        "pia_auc": [r["pia"]["auc"]["value"] for r in mia["rows"]],
        "n_members": mia["n_members"], "n_nonmembers": mia["n_nonmembers"],
        "onset_f_mem": crossing_step(steps, f_mem, 0.01),
        "onset_subsequence": crossing_step(steps, sub_rate, 0.01),
        "onset_subsequence_over_control": above_control("z"),
        "onset_subsequence_raw_over_control": above_control("raw"),
        "onset_membership": first_auc,
        "tau_gen": tracking["tau_gen"],
        "seed": cfg.seed, "selection": selection,
    }


def selection_table(rows) -> str:
    """Checkpoint selection on time series (markdown): per run, the checkpoint that the lowest
    held-out loss, the best quality and memaudit's recommended rule pick, and what each yields on
    every probe: f_mem and its held-out control, the sub-window rate, the loss attack's AUC with
    its interval, closer-to-train and the quality."""
    def pct(v):
        return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"

    def rate(r):
        return "-" if not r else pct(r.get("value"))

    out = ["| n | seed | objective | rule | step | f_mem | held-out control | sub-window rate | "
           "loss AUC [95% CI] | closer to train | Fréchet distance |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"held-out loss": "lowest held-out loss", "quality": "best quality",
             "recommended": "memaudit's recommended"}
    for r in rows:
        for row in (r.get("selection") or {}).get("rows", []):
            head = f"| {r['n']} | {r.get('seed', '-')} | {r.get('objective', 'ddpm')} | {names[row['rule']]}"
            if row.get("step") is None:
                out.append(f"{head} | - | {row.get('reason', '')} | | | | | |")
                continue
            auc = row.get("loss_auc") or {}
            q = row.get("quality")
            out.append(f"{head} | {row['step']:,} | {pct(row.get('f_mem'))} | "
                       f"{pct(row.get('control_f_mem'))} | {rate(row.get('sub_rate'))} | "
                       f"{auc.get('value', float('nan')):.3f} [{auc.get('low', float('nan')):.3f}, "
                       f"{auc.get('high', float('nan')):.3f}] | {rate(row.get('closer_to_train'))} | "
                       f"{'-' if q is None else f'{q:.4g}'} |")
    return "\n".join(out) + "\n"


def _table(rows) -> str:
    def f(v):
        return "never" if v is None or not np.isfinite(v) else f"{v:,.0f}"

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    out = ["| n | objective | tau_gen | f_mem onset (1%) | sub-window onset (1%) | sub-window onset "
           "(over control) | raw sub-window onset (over control) | loss-attack onset (AUC > 0.5) | "
           "final f_mem | final sub-window rate (control) | final closer-to-train | final loss AUC "
           "(members / non-members) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ctrl = r.get("sub_control") or {}
        closer = (r.get("closer_to_train") or [None])[-1]
        out.append(f"| {r['n']} | {r.get('objective', 'ddpm')} | {f(r['tau_gen'])} | "
                   f"{f(r['onset_f_mem'])} | {f(r['onset_subsequence'])} | "
                   f"{f(r.get('onset_subsequence_over_control'))} | "
                   f"{f(r.get('onset_subsequence_raw_over_control'))} | {f(r['onset_membership'])} | "
                   f"{100 * r['f_mem'][-1]:.1f}% | {100 * r['sub_rate'][-1]:.1f}% "
                   f"({pct(ctrl.get('value'))}) | {pct(closer)} | {r['loss_auc'][-1]:.3f} "
                   f"({r.get('n_members', '-')} / {r.get('n_nonmembers', '-')}) |")
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
    p.add_argument("--sub-length", type=int, help="sub-window length (default: half a window)")
    p.add_argument("--sub-stride", type=int, default=1)
    p.add_argument("--long-factor", type=int, default=4,
                   help="generated series this many windows long for the subsequence probe (1: the "
                   "whole-window samples, as in the pilot)")
    p.add_argument("--n-long", type=int, default=200, help="long generated series per checkpoint")
    p.add_argument("--max-nonmembers", type=int,
                   help="held-out windows for the membership attack (default: as many as members)")
    a = p.parse_args(argv)
    sweep = Path(a.sweep)
    runs = tracked_runs(sweep)
    if not runs:
        raise SystemExit(f"{sweep} has no tracked runs; run reference_models.ddpm.sweep first")
    rows = [study_run(r, a.sub_length, a.sub_stride, a.max_nonmembers, a.long_factor, a.n_long,
                      log=lambda m, r=r: print(f"[{r.name}] {m}", file=sys.stderr, flush=True))
            for r in runs]
    atomic_write_text(sweep / "study.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(sweep / "study.md", _table(rows) + "\n## Checkpoint selection\n\n"
                      + selection_table(rows))
    try:
        _plot(rows, sweep / "study.png")
        if a.figures:
            for name in ("study.png", "sweep.png"):
                if (sweep / name).exists():
                    atomic_write_bytes(Path(a.figures) / name, (sweep / name).read_bytes())
    except ImportError:
        pass
    print(_table(rows))
    print(selection_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
