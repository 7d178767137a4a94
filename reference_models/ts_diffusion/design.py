"""The time-series study, pre-registered: the grid, the recipe, the samples and the read-off rules,
fixed in code before any of its runs (issue "Time-series diffusion and flow models").

    python -m reference_models.ts_diffusion.design            # the commands of the whole design
    python -m reference_models.ts_diffusion.design --device cuda

The three questions: (1) do diffusion and flow time-series generators show a separate tau_gen and
tau_mem, with tau_mem growing with n; (2) which probe flags copying first and most reliably
(whole-window f_mem, the subsequence probe on generated series longer than the training windows,
loss-based membership, the share of generated windows closer to a training window than to any
held-out one); (3) can checkpoint selection use an explicit memorization probe instead of the
validation loss or a quality score.

Everything the training runs depend on is in ``reference_models.ddpm.sweep.SETTING_DEFAULTS["ts"]``
and ``TS_SEQ_LEN`` (so that ``--setting ts-<family>`` alone is the design's recipe); this module
adds the grid and the rules, and writes the commands. The extension rule is sequential and fixed
here: every run trains to 150 n steps; when some run of a sweep has not reached f_mem 1% at its
last checkpoint, the whole sweep (every n, so that all runs keep one recipe) is extended
(``--extend``, bit-identical to straight runs) to 300 n steps, then once more to 600 n; a run still
below 1% is reported as "not reached" (and its exponent as not resolved).
"""

from __future__ import annotations

import argparse
import sys

from ..ddpm.sweep import SETTING_DEFAULTS, TS_SEQ_LEN

__all__ = ["DESIGN", "RULES", "commands", "main"]

DESIGN = {
    # AR(2): the Gaussian setting closest to the theory; PigCVP: the real record (split by pig)
    "families": ("ts-ar", "ts-pig"),
    "other_families": ("ts-sines", "ts-regimes", "ts-gunpoint"),  # GunPoint: n <= 128 (200 series)
    "objectives": ("ddpm", "flow"),
    "n": (64, 128, 256, 512),
    "n_gpu": (64, 128, 256, 512, 1024),
    "seeds": (0, 1),
    "seeds_gpu": (0, 1, 2),
    "optimizers": {"adam": {"lr": 1e-3}, "sgd": {"lr": 0.01, "momentum": 0.95, "family": "ts-ar"}},
    "steps_per_n": (150, 300, 600),  # the sequential extension rule (module docstring)
    "n_holdout": 500,
    "long_factor": 4,  # the subsequence probe: generated series 4 windows long
    "membership_members": "all n training windows against n held-out windows (n >= 64: the AUC's "
                          "interval is resolved), calibration half / evaluation half",
    "recipe": {k: v for k, v in SETTING_DEFAULTS["ts"].items() if k not in ("seq_len",)},
    "seq_len": dict(TS_SEQ_LEN),
}

RULES = {
    "tau_mem": "first step where whole-window f_mem (d1/d2 < 1/3 against the training windows) "
               "reaches 1% (and 5%), log-linear interpolation between checkpoints",
    "tau_gen": "first step where the Fréchet distance to held-out windows has made all but 5% of "
               "its total improvement (the sweep's linear rule)",
    "exponent": "least squares of log tau_mem on log n over n >= 64; bootstrap over samples and "
                "seeds, OLS-residual and seed-level intervals; not resolved when a run never "
                "reaches the level",
    "subsequence_onset": "first checkpoint where the rate of generated sub-windows (length L/2, "
                         "stride 1, z-normalised) with d1/d2 < 1/3 exceeds its held-out control's "
                         "upper 95% bound, on series long_factor windows long",
    "membership_onset": "first checkpoint whose loss-attack AUC lower 95% bound exceeds 0.5",
    "closer_to_train": "share of generated windows nearer a training window than any held-out "
                       "one, against the 50% expected when n = n_holdout",
    "selection": "per run: the checkpoint of the lowest held-out loss, of the best Fréchet distance, "
                 "and memaudit's recommended one; f_mem, control, AUC and quality at each",
}


def commands(device: str = "cpu", out: str = "runs/ts") -> list[str]:
    """The sweep commands of the design, in the order to run them (each resumes; ``--extend`` lines
    apply the extension rule to runs that did not reach 1%)."""
    gpu = device.startswith("cuda")
    ns = " ".join(map(str, DESIGN["n_gpu" if gpu else "n"]))
    seeds = " ".join(map(str, DESIGN["seeds_gpu" if gpu else "seeds"]))
    tool = (f"python -m reference_models.ddpm.batched --device {device}" if gpu
            else "python -m reference_models.ddpm.sweep --jobs 2")
    lines = []
    for family in DESIGN["families"]:
        for objective in DESIGN["objectives"]:
            folder = f"{out}/{family[3:]}-{objective}"
            lines.append(f"{tool} --setting {family} --objective {objective} --n {ns} --seeds {seeds} "
                         f"--out {folder}")
            for spn in DESIGN["steps_per_n"][1:]:
                lines.append(f"{tool} --setting {family} --objective {objective} --n {ns} "
                             f"--seeds {seeds} --out {folder} --steps-per-n {spn} --extend"
                             "   # only if some run has f_mem < 1% at its last checkpoint")
    sgd = DESIGN["optimizers"]["sgd"]
    lines.append(f"{tool} --setting {sgd['family']} --objective ddpm --optimizer sgd --lr {sgd['lr']} "
                 f"--n {ns} --seeds {seeds} --out {out}/{sgd['family'][3:]}-ddpm-sgd")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_models.ts_diffusion.design",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (the sweep, 2 jobs) or cuda (the batched path)")
    p.add_argument("--out", default="runs/ts")
    a = p.parse_args(argv)
    print("# the time-series study (reference_models/ts_diffusion/design.py), fixed before its runs")
    for key, rule in RULES.items():
        print(f"# {key}: {rule}")
    print("\n".join(commands(a.device, a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
