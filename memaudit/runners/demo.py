"""The bundled demo: train a tiny DDPM on scikit-learn's digits and audit it, or audit a labelled
stand-in (real 8x8 images shipped in the wheel).

:func:`run_demo` trains the model found through the ``memaudit.demos`` entry point
(``reference_models/ddpm/demo.py``; memaudit never imports reference_models by name), follows
f_mem and sample quality over training and audits the last checkpoint. Without torch, or with
``stand_in=True``, it audits a stand-in instead: held-out digits the audit must not flag, plus
perturbed copies of training digits planted at known positions that it must flag with the right
training id. The report says so, and the demo prints how many planted copies were recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_savez
from .._validation import check_positive_int, check_seed
from ..gate import Gate
from ._common import STATS, Run, check_out, gate_options, option
from .audit import AuditConfig, AuditRun, run_audit

__all__ = ["make_demo_data", "DemoData", "planted_recovery", "DemoConfig", "DemoRun", "run_demo",
           "demo_model", "fmem_dips"]

STAND_IN_NOTE = (
    "Demo stand-in: the 'generated' samples are not from a generative model. They are {n_fresh} "
    "real digits held out from training (which should not be flagged) and {n_copies} copies of "
    "training digits ({n_exact} exact, {n_noisy} with Gaussian pixel noise of sigma {noise:g}, "
    "{n_dim} with contrast scaled by {contrast:g}) planted at known positions (which should be "
    "flagged, each with its source training digit). Data: scikit-learn's bundled 8x8 digits, "
    "pixels scaled to [0, 1]."
)


@dataclass(frozen=True)
class DemoData:
    """The demo's sets, with the truth about the planted copies."""

    train: np.ndarray  # (n, 8, 8) float32 in [0, 1]
    train_ids: np.ndarray
    samples: np.ndarray
    sample_ids: np.ndarray
    holdout: np.ndarray
    holdout_ids: np.ndarray
    planted_positions: np.ndarray  # positions in samples
    planted_sources: np.ndarray  # positions in train
    note: str

    def save(self, folder) -> dict:
        """Write train.npz, samples.npz and holdout.npz (each with an ``ids`` array), atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, x, ids in (
            ("train", self.train, self.train_ids),
            ("samples", self.samples, self.sample_ids),
            ("holdout", self.holdout, self.holdout_ids),
        ):
            paths[name] = folder / f"{name}.npz"
            atomic_savez(paths[name], x=x, ids=ids)
        return paths


def make_demo_data(
    n_train: int = 1000,
    n_holdout: int = 300,
    n_fresh: int = 250,
    n_exact: int = 20,
    n_noisy: int = 20,
    n_dim: int = 10,
    noise: float = 0.02,
    contrast: float = 0.95,
    seed: int = 0,
) -> DemoData:
    """Split the 1,797 digits into train / holdout / fresh and plant copies among the fresh ones.

    Ids are the digits' indices in ``sklearn.datasets.load_digits()`` ("digit-123"); planted
    samples are named after their source ("copy-exact-of-digit-123").
    """
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    n_copies = n_exact + n_noisy + n_dim
    if n_train + n_holdout + n_fresh > images.shape[0]:
        raise ValueError(f"the digits set has {images.shape[0]} images; asked for more")
    if n_copies > n_train:
        raise ValueError("more planted copies than training digits")
    rng = np.random.default_rng(seed)
    order = rng.permutation(images.shape[0])
    tr, ho, fr = np.split(order[: n_train + n_holdout + n_fresh], [n_train, n_train + n_holdout])
    sources = rng.choice(n_train, size=n_copies, replace=False)
    copies, copy_ids = [], []
    for j, s in enumerate(sources):
        img = images[tr[s]]
        if j < n_exact:
            kind, out = "exact", img.copy()
        elif j < n_exact + n_noisy:
            kind, out = "noisy", np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
        else:
            kind, out = "contrast", img * contrast
        copies.append(out.astype(np.float32))
        copy_ids.append(f"copy-{kind}-of-digit-{tr[s]}")
    fresh = images[fr]
    samples = np.concatenate([fresh, np.stack(copies)])
    sample_ids = np.array([f"heldout-digit-{i}" for i in fr] + copy_ids)
    perm = rng.permutation(samples.shape[0])
    samples, sample_ids = samples[perm], sample_ids[perm]
    inverse = np.argsort(perm)
    planted_positions = inverse[n_fresh:]
    note = STAND_IN_NOTE.format(n_fresh=n_fresh, n_copies=n_copies, n_exact=n_exact,
                                n_noisy=n_noisy, noise=noise, n_dim=n_dim, contrast=contrast)
    return DemoData(
        train=images[tr],
        train_ids=np.array([f"digit-{i}" for i in tr]),
        samples=samples,
        sample_ids=sample_ids,
        holdout=images[ho],
        holdout_ids=np.array([f"digit-{i}" for i in ho]),
        planted_positions=planted_positions,
        planted_sources=sources,
        note=note,
    )


def planted_recovery(data: DemoData, result) -> dict:
    """How many planted copies were flagged with the right source, and false flags elsewhere."""
    flagged = result.memorized
    pos = data.planted_positions
    right_source = result.nn_index[pos] == data.planted_sources
    others = np.setdiff1d(np.arange(flagged.size), pos)
    return {
        "planted": int(pos.size),
        "planted_flagged_with_right_source": int((flagged[pos] & right_source).sum()),
        "fresh": int(others.size),
        "fresh_flagged": int(flagged[others].sum()),
    }


# the audit every demo runs: the duplicates section (exact copies) and the membership attack on
# top of the nearest-neighbour ratio; every other setting is AuditConfig's default
DEMO_AUDIT = dict(duplicates="exact", membership=True, progress=False)


@dataclass
class DemoConfig:
    """``memaudit demo``: every field's default is in its ``help`` (``memaudit demo -h``)."""

    out: object = option("memaudit-demo", "output folder: the inputs go to DIR/data, the model's "
                         "run to DIR/model, the report to DIR", kind="path", metavar="DIR")
    seed: int = option(STATS.seed, "seed of the split, the training and the samples (stand-in: "
                       "the copies)")
    fail_above: float | None = gate_options("the memorized fraction of the audited samples, as "
                                            "for audit,")
    steps: int = option(3000, "training steps of the demo model")
    samples_per_checkpoint: int = option(200, "DDIM samples drawn at each checkpoint of the demo "
                                         "model", metavar="N")
    n_train: int = option(8, "training digits of the demo model (8 is below the crossover "
                          "size, near 64 digits for this U-Net: the model copies before its "
                          "quality converges, and the report says there is no safe window)",
                          metavar="N")
    stand_in: bool = option(False, "skip the model: audit held-out digits plus planted copies "
                            "(seconds)")


@dataclass
class DemoRun(Run):
    """What :func:`run_demo` returns: the audit, and what the demo adds to its text."""

    audit: AuditRun = None
    recovery: dict | None = None  # stand-in: planted copies found (planted_recovery)
    curve: object = None  # model: the TrainingCurve over checkpoints
    lines: list = None  # printed after the audit's summary

    def summary(self) -> str:
        return "\n".join([self.audit.summary()] + list(self.lines or ()))

    def to_summary(self) -> dict:
        return self.audit.to_summary()


def demo_model():
    """The demo's model, found through the ``memaudit.demos`` entry point (None if unavailable)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="memaudit.demos"):
        if ep.name == "ddpm":
            try:
                return ep.load()
            except ImportError:  # reference_models installed without torch
                return None
    return None


def _by_hand(paths: dict, out) -> str:
    return (f"memaudit audit --train {paths['train']} --samples {paths['samples']} --holdout "
            f"{paths['holdout']} --duplicates exact --membership --out {out}")


def _finish(config, audit: AuditRun, **extra) -> DemoRun:
    audit.write(config.out)
    return DemoRun(config=config, gate=audit.gate, paths=audit.paths, notes=audit.notes,
                   audit=audit, **extra)


def fmem_dips(steps, f_mem, low, high) -> list[dict]:
    """Every fall of f_mem from one checkpoint to the next, and whether sampling noise explains it.

    A fall is within sampling noise when the two checkpoints' intervals overlap (the later upper
    bound reaches the earlier lower bound); otherwise the model's samples really changed between
    them (the demo draws the same initial noises at every checkpoint).
    """
    out = []
    for i in range(len(steps) - 1):
        if f_mem[i + 1] < f_mem[i]:
            out.append({"from": int(steps[i]), "to": int(steps[i + 1]), "f_mem_from": float(f_mem[i]),
                        "f_mem_to": float(f_mem[i + 1]), "noise": bool(high[i + 1] >= low[i])})
    return out


def _dip_note(curve, n_samples: int) -> str | None:
    low, high, how = curve._shown_interval()
    dips = fmem_dips(curve.steps, curve.f_mem, low, high)
    if not dips:
        return None
    def one(d):
        return f"step {d['from']} -> {d['to']} ({100 * d['f_mem_from']:.1f}% -> {100 * d['f_mem_to']:.1f}%)"
    noise = [one(d) for d in dips if d["noise"]]
    real = [one(d) for d in dips if not d["noise"]]
    parts = []
    if noise:
        parts.append(f"f_mem falls between checkpoints at {', '.join(noise)}; the two 95% "
                     f"intervals ({how}, {n_samples} samples per checkpoint) overlap, so each fall "
                     "is within sampling noise.")
    if real:
        parts.append(f"f_mem falls between checkpoints at {', '.join(real)} by more than sampling "
                     "noise (the 95% intervals do not overlap): the samples themselves changed "
                     "(the same initial noises are drawn at every checkpoint).")
    return " ".join(parts)


def _window_note(curve, n_train: int) -> str:
    tg, tm, rec = curve.tau_gen, curve.tau_mem, curve.recommended
    if tm is None:
        return ("Memorization did not start in this run (no checkpoint's f_mem is significantly "
                "above the held-out control): train longer (--steps) to reach tau_mem.")
    if tg is not None and tg < tm:
        where = ("none" if rec is None else "inside the window" if tg < rec < tm else
                 "at tau_gen, where the window starts" if rec == tg else f"at step {rec}")
        return (f"Safe window: sample quality converged at tau_gen = {tg}, before memorization "
                f"started at tau_mem = {tm}; the recommended checkpoint ({rec}) is {where}. "
                "Bonnaire et al. 2025 find that such a window opens for training sets above a "
                f"critical size n_gm, and widens in proportion to n; here n = {n_train}.")
    return ("No safe window in this run: memorization starts (tau_mem) before sample quality has "
            "converged (tau_gen). Bonnaire et al. 2025 find a window tau_gen < tau_mem only for "
            f"training sets above a critical size n_gm; n = {n_train} was not above it for this "
            "model and optimizer (with Adam 1e-3 the crossover of this U-Net is near 64 digits), "
            "so the recommended checkpoint trades quality for privacy.")


def _run_model(config: DemoConfig, generate, log) -> DemoRun:
    from ..tracking import track_memorization

    out = Path(config.out)
    log(f"demo: training a small U-Net DDPM on {config.n_train} of scikit-learn's digits for "
        f"{config.steps} steps, then drawing {config.samples_per_checkpoint} samples at every "
        "checkpoint (about 4 minutes on 2 cores)")
    gen = generate(out / "model", seed=config.seed, steps=config.steps, n_train=config.n_train,
                   n_samples=config.samples_per_checkpoint, log=lambda m: log(f"  {m}"))
    flat = {s: np.asarray(v).reshape(len(v), -1) for s, v in gen["samples_by_step"].items()}
    curve = track_memorization(flat, gen["train"].reshape(len(gen["train"]), -1),
                               gen["holdout"].reshape(len(gen["holdout"]), -1),
                               losses=gen["losses"], seed=config.seed)
    last = max(gen["samples_by_step"])
    samples = gen["samples_by_step"][last]
    paths = {k: out / "data" / f"{k}.npz" for k in ("train", "samples", "holdout")}
    paths["train"].parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(paths["train"], x=gen["train"], ids=gen["train_ids"])
    atomic_savez(paths["holdout"], x=gen["holdout"], ids=gen["holdout_ids"])
    atomic_savez(paths["samples"], x=samples,
                 ids=np.array([f"sample-{i}-step-{last}" for i in range(len(samples))]))
    notes = [gen["note"], f"{curve.window_text()} (best quality before tau_mem).",
             _window_note(curve, config.n_train)]
    dips = _dip_note(curve, config.samples_per_checkpoint)
    if dips:
        notes.append(dips)
    # the demo's digits and samples are pixel values in [0, 1]
    audit = run_audit(AuditConfig(**{k: str(v) for k, v in paths.items()}, seed=config.seed,
                                  fail_above=config.fail_above, notes=notes,
                                  ranges={k: "0,1" for k in paths}, **DEMO_AUDIT))
    audit.report.tracking = curve
    lines = ["memorization over training (f_mem with 95% CI, Fréchet distance to held-out "
             "digits):", curve.summary()] + notes[2:]
    lines.append(f"the audit of the last checkpoint by hand: {_by_hand(paths, out)}")
    return _finish(config, audit, curve=curve, lines=lines)


def _run_stand_in(config: DemoConfig, log) -> DemoRun:
    out = Path(config.out)
    data = make_demo_data(seed=config.seed)
    paths = data.save(out / "data")
    log(f"demo: scikit-learn digits, {len(data.train)} training, {len(data.holdout)} held-out, "
        f"{len(data.samples)} stand-in samples ({data.planted_positions.size} planted copies); "
        f"inputs written to {out / 'data'}")
    audit = run_audit(AuditConfig(**{k: str(v) for k, v in paths.items()}, seed=config.seed,
                                  fail_above=config.fail_above, notes=[data.note], **DEMO_AUDIT))
    rec = planted_recovery(data, audit.report.nn_ratio)
    found = f"{rec['planted_flagged_with_right_source']}"
    audit.report.notes.append(f"Planted copies flagged with the right training id: {found} of "
                              f"{rec['planted']}; held-out digits flagged: {rec['fresh_flagged']} "
                              f"of {rec['fresh']}.")
    lines = [f"planted copies flagged with the right training id: {found}/{rec['planted']}; "
             f"held-out digits flagged: {rec['fresh_flagged']}/{rec['fresh']}",
             f"the same audit by hand: {_by_hand(paths, out)}"]
    return _finish(config, audit, recovery=rec, lines=lines)


def run_demo(config: DemoConfig = None, log=None) -> DemoRun:
    """Run the demo (see the module); ``log(text)`` receives progress lines (default: silent).

    Returns
    -------
    DemoRun
        ``.audit`` (the :class:`~memaudit.runners.audit.AuditRun` of the last checkpoint or of the
        stand-in), ``.curve`` (model) or ``.recovery`` (stand-in), ``.passed``, ``.paths``.
    """
    config = DemoConfig() if config is None else config
    log = log or (lambda text: None)
    Gate(config.fail_above).check(has_control=True, command="demo")  # before any training
    check_seed(config.seed, "seed (--seed)")
    check_positive_int(config.steps, "steps (--steps)")
    check_positive_int(config.samples_per_checkpoint,
                       "samples per checkpoint (--samples-per-checkpoint)", 2)
    check_positive_int(config.n_train, "training digits (--n-train)", 2)
    check_out(config)
    if not config.stand_in:
        generate = demo_model()
        if generate is not None:
            return _run_model(config, generate, log)
        log("demo: reference_models or torch is not installed; running the labelled stand-in "
            "instead (pip install 'memaudit[torch]' for the trained model)")
    return _run_stand_in(config, log)
