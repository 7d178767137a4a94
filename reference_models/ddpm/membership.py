"""Membership inference over training: can an attacker tell training items from held-out ones, and
from when on?

    python -m reference_models.ddpm.membership --run runs/gmm-sweep/n64-s0

For every checkpoint of a run (``reference_models.ddpm.train``), the loss, PIA and SecMI-stat
attacks (``memaudit.probes.diffusion_attacks``) score the run's own training items (members) and
held-out items (non-members). Each attack chooses its timestep and threshold on a calibration split
(half of each side, seeded) and is evaluated on the other half
(``memaudit.probes.calibration.calibrated_attack``). Writes membership.json (AUC, TPR at 1% FPR
and balanced accuracy with intervals per checkpoint and attack, the split manifest) and
membership.png (AUC over training beside f_mem from tracking.json when it exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from memaudit.io import atomic_write_text
from memaudit.probes.calibration import calibrated_attack, calibration_split
from memaudit.probes.diffusion_attacks import NoisePredictor, loss_attack, pia_attack, secmi_attack

from ..figures import pyplot, save_png
from .checkpoints import checkpoint_config, checkpoint_step, load_model, readable_checkpoints
from .objectives import attack_schedule, noise_model
from .train import prepare_data

__all__ = ["noise_predictor", "membership_over_training"]

TIMESTEPS = (10, 40, 100, 200, 400)


def noise_predictor(checkpoint, batch_size: int = 512) -> NoisePredictor:
    """The memaudit attack protocol for a reference-DDPM checkpoint (eval mode, no gradients).

    A flow-matching checkpoint is an epsilon-predictor on its equivalent variance-preserving schedule
    (``reference_models.ddpm.flow.FlowAsNoise``), so the same attacks apply; their timesteps are
    then levels of the flow's grid.
    """
    model, ck = load_model(checkpoint)
    cfg = ck["config"]
    model = noise_model(cfg, model).eval()

    @torch.no_grad()
    def eps(x, t):
        return model(torch.from_numpy(np.array(x, np.float32)), torch.from_numpy(np.array(t))).numpy()

    return NoisePredictor(eps, attack_schedule(cfg).alphas_cumprod.numpy(), batch_size)


def membership_over_training(run, *, max_nonmembers: int | None = None, every: int = 1,
                             n_bootstrap: int = 500, seed: int = 0, log=None) -> dict:
    run = Path(run)
    files = readable_checkpoints(run, every=every, required=True)
    cfg = checkpoint_config(files[-1])
    x_tr, x_ho, _, tr_idx, ho_idx = prepare_data(cfg)
    members, nonmembers = x_tr.numpy(), x_ho.numpy()
    if max_nonmembers is not None:
        nonmembers, ho_idx = nonmembers[:max_nonmembers], ho_idx[:max_nonmembers]
    split = calibration_split(len(members), len(nonmembers), seed=seed,
                              member_ids=[str(i) for i in tr_idx],
                              nonmember_ids=[str(i) for i in ho_idx])
    attacks = {
        "loss": lambda m, x: loss_attack(m, x, TIMESTEPS, seed=seed),
        "pia": lambda m, x: pia_attack(m, x, TIMESTEPS),
        "secmi": lambda m, x: secmi_attack(m, x, (50, 100, 200), interval=10),
    }
    rows = []
    for path in files:
        model = noise_predictor(path)
        step = checkpoint_step(path)
        row = {"step": step}
        for name, attack in attacks.items():
            res = calibrated_attack(attack(model, members), attack(model, nonmembers), split,
                                    n_bootstrap=n_bootstrap, seed=seed)
            ev = res.evaluation
            row[name] = {"timestep": res.setting, "auc": ev.auc.to_dict(),
                         "tpr_at_1pct_fpr": ev.tpr[0.01].to_dict(),
                         "balanced_accuracy": res.balanced_accuracy.to_dict()}
        rows.append(row)
        if log:
            log(f"step {step:>8d}  " + "  ".join(f"{k} AUC {row[k]['auc']['value']:.3f}"
                                                for k in attacks))
    tracking = run / "tracking.json"
    f_mem = None
    if tracking.exists():
        tr = json.loads(tracking.read_text())
        f_mem = dict(zip(tr["steps"], tr["f_mem"]))
    out = {"run": str(run), "n_members": len(members), "n_nonmembers": len(nonmembers),
           "timesteps": list(TIMESTEPS), "rows": rows, "f_mem": f_mem,
           "split": split.to_dict(), "seed": seed, "n_bootstrap": n_bootstrap,
           "rule": "timestep and threshold chosen on the calibration half, figures on the "
                   "evaluation half"}
    atomic_write_text(run / "membership.json", json.dumps(out, indent=1) + "\n")
    try:
        plot(out, run / "membership.png")
    except ImportError:
        pass
    return out


def plot(out: dict, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    steps = [r["step"] for r in out["rows"]]
    for name, color in (("loss", "C0"), ("pia", "C1"), ("secmi", "C2")):
        auc = np.array([[r[name]["auc"][k] for k in ("value", "low", "high")] for r in out["rows"]])
        ax.plot(steps, auc[:, 0], "o-", color=color, ms=3, label=f"{name} AUC")
        ax.fill_between(steps, auc[:, 1], auc[:, 2], color=color, alpha=0.15)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    if out["f_mem"]:
        st = sorted(int(s) for s in out["f_mem"])
        ax.plot(st, [out["f_mem"][str(s)] if str(s) in out["f_mem"] else out["f_mem"][s] for s in st],
                "k--", label="f_mem (d1/d2 < 1/3)")
    ax.set(xscale="log", xlabel="training step", ylabel="AUC / f_mem", ylim=(0, 1.02),
           title=f"{Path(out['run']).name}: {out['n_members']} members, {out['n_nonmembers']} "
                 "non-members; AUC on the evaluation half")
    ax.legend(fontsize=7)
    save_png(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_models.ddpm.membership",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--max-nonmembers", type=int)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--n-bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    membership_over_training(a.run, max_nonmembers=a.max_nonmembers, every=a.every,
                             n_bootstrap=a.n_bootstrap, seed=a.seed,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
