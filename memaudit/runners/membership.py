"""The membership runner: attack scores (given, or computed by a sample-only attack on data) ->
a calibration split -> the calibrated attack's figures on the evaluation half -> the gate on
the evaluation AUC -> membership.json and membership.html.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._progress import with_progress
from .._validation import check_fraction, check_positive_int, check_seed
from ..gate import Gate
from ..probes.calibration import CalibratedAttack, calibration_split
from ..probes.sample_attacks import density_ratio_attack, distance_attack
from ._common import (STATS, Run, check_out, declarations, defaults_of, gate_options,
                      load_inputs, option, option_errors, out_option, package_versions,
                      parsed_declarations, progress_option, resolved)
from ._model import calibrate as _calibrate, model_field
from ._common import csv_option

__all__ = ["MembershipConfig", "MembershipRun", "run_membership", "calibrated_distance_attack",
           "load_scores"]

SETS = ("members", "nonmembers", "samples", "reference")
ATTACKS = ("distance", "density")
_SPLIT = defaults_of(calibration_split)
_DENSITY = defaults_of(density_ratio_attack)


@dataclass
class MembershipConfig:
    """A membership-inference evaluation: give attack scores, or data for a sample-only attack.

    Scores (``member_scores`` / ``nonmember_scores``) are paths (.npy, .npz with one array per
    attack setting, .csv with one score per line), arrays, or dicts of setting -> array; higher
    means "member". Data (``members``, ``nonmembers``, ``samples``, and ``reference`` for the
    density attack) are what :func:`memaudit.load_dataset` reads. Every field's default is in its
    ``help`` (``memaudit membership -h``).
    """

    member_scores: object = option(None, "attack scores of members (.npy/.npz/.csv)",
                                   kind="path", metavar="PATH", default_text="none")
    nonmember_scores: object = option(None, "attack scores of non-members", kind="path",
                                      metavar="PATH", default_text="none")
    members: object = option(None, "training items (sample-only attacks)", kind="path",
                             metavar="PATH", default_text="none")
    nonmembers: object = option(None, "held-out items from the same law", kind="path",
                                metavar="PATH", default_text="none")
    samples: object = option(None, "generated samples", kind="path", metavar="PATH",
                             default_text="none")
    attack: str = option("distance", "sample-only attack: distance to the nearest sample "
                         "(GAN-Leaks) or KDE density ratio (DOMIAS style, needs --reference)",
                         choices=ATTACKS)
    reference: object = option(None, "density attack: real data used neither in training nor as "
                               "candidates", kind="path", metavar="PATH", default_text="none")
    pca: int | None = option(_DENSITY["n_components"], "density attack: project onto K "
                             "components", kind="int", metavar="K",
                             default_text="none: no projection")
    calibration_fraction: float = option(_SPLIT["fraction"], "share of each side used for "
                                         "calibration", metavar="F")
    n_bootstrap: int = option(STATS.n_bootstrap, "bootstrap resamples for intervals", metavar="B")
    confidence: float = option(STATS.confidence, "interval level")
    seed: int = option(STATS.seed, "seed of the split and the bootstraps")
    ranges: object = declarations("range", SETS)
    layouts: object = declarations("layout", SETS)
    fail_above: float | None = gate_options("the evaluation AUC", metavar="AUC")
    out: object = out_option("membership")
    progress: bool | None = progress_option()
    # model-based attacks (loss, PIA, SecMI) on a diffusers model (memaudit.adapters.diffusers)
    model: object = model_field("model")
    scheduler: object = model_field("scheduler")
    timesteps: object = model_field("timesteps")
    batch_size: int = model_field("batch_size")
    device: str = model_field("device")
    csv: object = csv_option("one row per evaluation item: id, member, score")


@dataclass
class MembershipRun(Run):
    """What :func:`run_membership` returns: the calibrated attack and what it was run on."""

    result: CalibratedAttack = None
    attack: str = ""
    inputs: dict = None
    elapsed: float = 0.0
    attacks: dict | None = None  # --model: name -> CalibratedAttack (loss, pia, secmi)

    def _others(self) -> dict | None:
        from ._model import ATTACKS

        return None if self.attacks is None else {
            name: (res, ATTACKS[name][1]) for name, res in self.attacks.items()}

    def to_frame(self):
        """One row per evaluation item (:meth:`CalibratedAttack.to_frame`)."""
        return self.result.to_frame()

    def write(self, out_dir) -> dict:
        """Write membership.json and membership.html into ``out_dir``; returns their paths."""
        from ..report import write_membership_report

        self.paths = write_membership_report(
            out_dir, self.result, config=resolved(self.config), versions=package_versions(),
            inputs=self.inputs, attack=self.attack, elapsed=self.elapsed, gate=self.gate,
            attacks=self._others(), notes=self.notes)
        return self.paths

    def summary(self) -> str:
        head = [f"attack: {self.attack}", self.result.summary()]
        if self.attacks is not None:
            from ._model import attack_table

            head = [f"model attacks (evaluation half; the strongest, {self.attack}, is gated):",
                    *attack_table(self.attacks), self.result.summary()]
        return "\n".join(head + self._tail())

    def to_summary(self) -> dict:
        extra = {} if self.attacks is None else {"attacks": {
            k: v.to_dict(per_sample=False)["evaluation"]["auc"] for k, v in self.attacks.items()}}
        return {"attack": self.attack, **extra,
                **{k: v for k, v in self.result.to_dict().items() if k != "split"},
                "report": self._report_paths(), "gate": self.gate, "gate_failed": not self.passed}


def load_scores(source, name):
    """Scores from .npy (one setting), .npz (one array per setting) or .csv (one column); an array
    or a dict of setting -> array is returned as it is."""
    if not isinstance(source, (str, Path)):
        return source
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"{name}: {p} does not exist")
    if p.suffix not in (".npz", ".npy", ".csv", ".txt"):
        raise ValueError(f"{name}: {p} is not a .npy, .npz or .csv file of scores")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        scores = np.loadtxt(p, delimiter=",", ndmin=1)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{name}: could not read {p} as {p.suffix} scores ({first})") from None
    if scores.ndim != 1:
        raise ValueError(f"{name}: {p.name} holds a table of shape {scores.shape}; give one score "
                         "per line")
    return scores


def calibrated_distance_attack(members, nonmembers, samples, *, fraction=_SPLIT["fraction"],
                               n_bootstrap=STATS.n_bootstrap, confidence=STATS.confidence,
                               seed=STATS.seed, progress=None, **search) -> CalibratedAttack:
    """The sample-only distance attack (GAN-Leaks: minus the distance to the nearest generated
    sample) on two Datasets, calibrated on one half of each side and reported on the other.

    Each side is searched on its own: a memory-mapped member set is streamed, never concatenated
    into memory. ``search`` goes to :func:`memaudit.probes.sample_attacks.distance_attack`.
    """
    ms = distance_attack(members.x, samples.x, progress=progress, **search)
    ns = distance_attack(nonmembers.x, samples.x, progress=progress, **search)
    return _calibrate(ms, ns, members.ids, nonmembers.ids, fraction=fraction,
                      n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)


def _check(config: MembershipConfig) -> Gate:
    """Everything refused before any file is read."""
    gate = Gate(config.fail_above).check(has_control=True, command="membership")
    given = config.member_scores is not None or config.nonmember_scores is not None
    if config.model is not None:
        from ._model import check_model_dir, check_timesteps, n_train_timesteps

        if given or config.samples is not None:
            raise ValueError("--model runs the model attacks on --members and --nonmembers; "
                             "leave out --samples and --member-scores")
        if config.members is None or config.nonmembers is None:
            raise ValueError("--model needs --members (training items) and --nonmembers "
                             "(held-out items from the same law)")
        _, sched_file, _ = check_model_dir(config.model, config.scheduler)
        check_timesteps(config.timesteps, n_train_timesteps(sched_file))
        with option_errors(config):
            check_positive_int(config.batch_size, "batch_size")
        parsed_declarations(config, SETS)
    elif given and (config.member_scores is None or config.nonmember_scores is None):
        raise ValueError("give both --member-scores and --nonmember-scores")
    elif not given:
        if config.members is None or config.nonmembers is None or config.samples is None:
            raise ValueError("give --members, --nonmembers and --samples (a sample-only attack), "
                             "--members and --nonmembers with --model (the model attacks), or "
                             "--member-scores and --nonmember-scores")
        if config.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {config.attack!r}")
        if config.attack == "density" and config.reference is None:
            raise ValueError("--attack density needs --reference: real data that was not used "
                             "in training and is not among the members or non-members")
        parsed_declarations(config, SETS)
    with option_errors(config, {"fraction": "calibration_fraction", "n_components": "pca"}):
        check_fraction(config.calibration_fraction, "fraction", low_open=True)
        if config.pca is not None:
            check_positive_int(config.pca, "n_components")
        check_positive_int(config.n_bootstrap, "n_bootstrap")
        check_fraction(config.confidence, "confidence")
        check_seed(config.seed, "seed (--seed)")
    check_out(config)
    return gate


def _model_run(config: MembershipConfig, stats: dict):
    """Loss, PIA and SecMI on ``config.model``: the strongest by evaluation AUC (the gated one),
    all three, and the inputs' descriptions."""
    from ..adapters.diffusers import load_model
    from ._model import ATTACKS, model_attacks, parse_timesteps

    loaded, _ = load_inputs(config, SETS)
    mem, non = loaded["members"], loaded["nonmembers"]
    model = load_model(config.model, config.scheduler, device=config.device)
    attacks = model_attacks(model, mem, non, timesteps=parse_timesteps(config.timesteps),
                            batch_size=config.batch_size, device=config.device, **stats)
    best = max(attacks, key=lambda k: attacks[k].evaluation.auc.value)
    inputs = {k: v.describe() for k, v in loaded.items() if v is not None}
    inputs["model"] = model.describe()
    return ATTACKS[best][1], attacks[best], attacks, inputs


@with_progress
def run_membership(config: MembershipConfig) -> MembershipRun:
    """Evaluate a membership-inference attack with a calibration split (see the module).

    Returns
    -------
    MembershipRun
        ``.result`` (a :class:`memaudit.probes.calibration.CalibratedAttack`), ``.attack``,
        ``.gate``, ``.passed``; ``.paths`` when ``config.out`` is set (else ``.write(out_dir)``).
    """
    gate = _check(config)
    t0 = time.perf_counter()
    stats = dict(fraction=config.calibration_fraction, n_bootstrap=config.n_bootstrap,
                 confidence=config.confidence, seed=config.seed)
    attacks = None
    if config.model is not None:
        attack, result, attacks, inputs = _model_run(config, stats)
    elif config.member_scores is not None:
        ms = load_scores(config.member_scores, "member scores")
        ns = load_scores(config.nonmember_scores, "non-member scores")
        settings = "settings: " + ", ".join(map(str, ms)) if isinstance(ms, dict) else "one setting"
        attack = f"scores given ({settings})"
        inputs = {k: str(v) if isinstance(v, (str, Path)) else "array"
                  for k, v in (("member_scores", config.member_scores),
                               ("nonmember_scores", config.nonmember_scores))}
        result = _calibrate(ms, ns, None, None, **stats)
    else:
        loaded, _ = load_inputs(config, SETS)
        mem, non, gen, ref = (loaded[k] for k in SETS)
        inputs = {k: v.describe() for k, v in loaded.items() if v is not None}
        if config.attack == "distance":
            attack = "distance to the nearest generated sample (GAN-Leaks)"
            result = calibrated_distance_attack(mem, non, gen, progress=config.progress, **stats)
        else:
            attack = "KDE density ratio p_gen / p_ref (DOMIAS style)"
            both = np.concatenate([np.asarray(mem.x), np.asarray(non.x)])
            scores = density_ratio_attack(both, gen.x, ref.x, n_components=config.pca,
                                          seed=config.seed)
            n_m = mem.x.shape[0]
            result = _calibrate(scores[:n_m], scores[n_m:], mem.ids, non.ids, **stats)
    record = gate.apply("membership.evaluation.auc", result.evaluation.auc.value)
    run = MembershipRun(config=config, gate=record, result=result, attack=attack, inputs=inputs,
                        elapsed=time.perf_counter() - t0, attacks=attacks)
    if config.out is not None:
        run.write(config.out)
    if config.csv is not None:
        run.write_csv(config.csv)
    return run
