"""Track memorization over the checkpoints of a diffusers training run and pick one to keep.

    python examples/track_diffusers_run.py --run output_dir/ --train train/ --holdout test/ \
        --n-samples 500 --out track-diffusers

``--run`` is the ``output_dir`` of a diffusers training script (``train_unconditional.py`` and the
like): ``checkpoint-N/unet`` folders (``unet_ema`` too when the run keeps an EMA copy) and the
run's ``scheduler/``. Every checkpoint is sampled with the same seeds; f_mem (with the held-out
control), the Fréchet distance to held-out items, tau_gen, tau_mem and the recommended checkpoint
go into tracking.json / tracking.html, through the same runner as ``memaudit track``. The script
prints the curves and the folder of the recommended checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memaudit.runners import TrackConfig, run_tracking


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a diffusers training run folder")
    p.add_argument("--train", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--members", default=None, help="with --nonmembers: attack AUC per checkpoint")
    p.add_argument("--nonmembers", default=None)
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="track-diffusers")
    a = p.parse_args(argv)

    run = run_tracking(TrackConfig(run=a.run, train=a.train, holdout=a.holdout,
                                   members=a.members, nonmembers=a.nonmembers,
                                   n_samples=a.n_samples, steps=a.steps, seed=a.seed, out=a.out),
                       log=lambda m: print(m, file=sys.stderr))
    print(run.summary())
    for variant, curve in run.curves.items():
        if curve.recommended is None:
            print(f"{variant}: no checkpoint before tau_mem to recommend")
        else:
            folder = Path(a.run) / f"checkpoint-{curve.recommended}" / variant
            print(f"{variant}: keep {folder} (best quality before tau_mem = {curve.tau_mem})")
    return run


if __name__ == "__main__":
    main()
