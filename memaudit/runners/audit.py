"""The audit runner: load inputs, run the nearest-neighbour-ratio probe (and, on request, the
duplicates probe and the sample-only membership attack), apply the gate, write the report.

Only runners know about files; probes see arrays and ids. Every default of :class:`AuditConfig`
is read from the probe or the dataclass that owns it (:class:`memaudit.probes.NNRatioProbe`,
:class:`memaudit.stats.StatsConfig`, :class:`memaudit.gate.Gate`); the command line reads its
options and defaults from these fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .._progress import with_progress
from .._validation import check_positive_int, check_seed
from ..conventions import describe_space, pixel_scale, require_images
from ..gate import Gate
from ..neighbors import BACKENDS, INDEXES, METRICS
from ..probes.duplicates import METHODS as DUPLICATE_METHODS
from ..probes.nn_ratio import NNRatioProbe
from ..report import Report
from ._common import (SETS, STATS, Run, check_out, declarations, defaults_of, gate_options,
                      load_inputs, option, option_errors, out_option, package_versions,
                      parsed_declarations, progress_option, resolved)
from ._common import csv_option

__all__ = ["AuditConfig", "AuditRun", "run_audit"]

_NN = defaults_of(NNRatioProbe)
_FAIL_ABOVE, _GATE = gate_options(
    "the gated rate", "figure read by --fail-above: the memorized fraction (rate) or its excess "
    "over the held-out control (excess, needs --holdout)", group="output")


@dataclass
class AuditConfig:
    """Everything an audit needs; the resolved config is written into the report.

    Every field's meaning and default is in its ``help`` (``memaudit audit -h`` prints them). The
    inputs are paths (``.npy``, ``.npz[:key]``, an image folder), arrays or
    :class:`memaudit.Dataset`; ``ranges`` / ``layouts`` declare an input's convention
    (:mod:`memaudit.conventions`), e.g. ``{"samples": "-1,1"}``. With ``out`` set, the runner
    writes ``out/report.json`` and ``out/report.html``.
    """

    train: object = option(None, "training items", kind="path", required=True, group="inputs",
                           metavar="PATH")
    samples: object = option(None, "generated samples", kind="path", required=True,
                             group="inputs", metavar="PATH")
    holdout: object = option(None, "held-out real items never trained on: the control, "
                             "recommended", kind="path", group="inputs", metavar="PATH",
                             default_text="none: no control")
    resize: object = option(None, "image folders: resize every image (e.g. 32 or 32x32)",
                            kind="size", group="inputs", metavar="HxW",
                            default_text="none: images keep their size")
    mode: str | None = option(None, "image folders: read as grayscale (L) or colour (RGB)",
                              choices=("L", "RGB"), group="inputs",
                              default_text="L when every image is grayscale, else RGB")
    skip_unreadable: bool = option(False, "image folders: skip files that cannot be decoded "
                                   "(listed in the report) instead of failing", group="inputs")
    ranges: object = declarations("range", SETS, group="inputs")
    layouts: object = declarations("layout", SETS, group="inputs")
    threshold: float = option(_NN["threshold"], "flag d1/d2 < K, K in (0, 1) as '1/3' or a "
                              "decimal; Bonnaire et al. 2025, Eq. 6", group="probe", metavar="K")
    metric: str = option(_NN["metric"], "distance (plain L2 on pixels, as in the paper)",
                         choices=METRICS, group="probe")
    carlini_alpha: float | None = option(_NN["carlini_alpha"], "Carlini et al. 2023 relative "
                                         "criterion: d1 over the mean distance to the N nearest "
                                         "below ALPHA; 'off' to skip", kind="optional_fraction",
                                         group="probe", metavar="ALPHA")
    carlini_n: int = option(_NN["carlini_n"], "nearest training items averaged by that criterion",
                            group="probe", metavar="N")
    duplicates: str | None = option(None, "also report duplicate groups in the training set and "
                                    "samples that copy training items, with this method",
                                    choices=DUPLICATE_METHODS, group="probe",
                                    default_text="none: not run")
    duplicates_threshold: object = option(None, "threshold of --duplicates: an integer Hamming "
                                          "distance 0..64 (phash, dhash), a number in (0, 1] "
                                          "(embedding, tiled_l2); exact takes none",
                                          kind="text", group="probe", metavar="T",
                                          default_text="the method's, see memaudit duplicates -h")
    membership: bool = option(False, "also run the sample-only membership attack (distance to the "
                              "nearest generated sample) on training vs held-out items; needs "
                              "--holdout", group="probe")
    n_bootstrap: int = option(STATS.n_bootstrap, "bootstrap resamples for intervals",
                              group="statistics", metavar="B")
    confidence: float = option(STATS.confidence, "interval level", group="statistics")
    seed: int = option(STATS.seed, "seed of every random choice", group="statistics")
    backend: str = option(_NN["backend"], "exact search backend", choices=BACKENDS,
                          group="search")
    index: str = option(_NN["index"], "exact search, or an approximate FAISS index whose measured "
                        "recall is reported", choices=INDEXES, group="search")
    out: object = out_option("report", group="output")
    gallery: int = option(16, "closest pairs shown as images in the HTML report", group="output",
                          metavar="N")
    fail_above: float | None = _FAIL_ABOVE
    gate: str = _GATE
    notes: list = option(help="free text shown at the top of the report", factory=list, cli=False)
    progress: bool | None = progress_option(group="output")
    csv: object = csv_option("one row per sample: id, d1, d2, ratio, nearest training id, flags",
                             group="output")

    def resolved(self) -> dict:
        """A JSON-safe copy; arrays are described by their shape, paths kept as given."""
        return resolved(self)


@dataclass
class AuditRun(Run):
    """What :func:`run_audit` returns: the :class:`memaudit.report.Report` and where it went."""

    report: Report = None

    def write(self, out_dir) -> dict:
        """Write report.json and report.html into ``out_dir``; returns their paths."""
        self.paths = self.report.write(out_dir)
        return self.paths

    def summary(self) -> str:
        """The text the command prints: the space, every figure, the gate, the files."""
        r = self.report
        lines = [f"compared in: {r.space}"] if r.space else []
        lines.append(r.nn_ratio.summary())
        for key, res in (r.duplicates or {}).items():
            lines.append(f"duplicates ({key.replace('_', ' ')}): {res.summary()}")
        if r.membership is not None:
            lines.append("membership (distance to nearest sample, evaluation half):\n  "
                         + r.membership.evaluation.summary().replace("\n", "\n  "))
        return "\n".join(lines + self._tail())

    def to_frame(self):
        """One row per generated sample (:meth:`NNRatioResult.to_frame`)."""
        return self.report.nn_ratio.to_frame()

    def to_summary(self) -> dict:
        """The headline figures as a dict (``memaudit audit --json``)."""
        d = self.report.to_dict()
        nr = d["sections"]["nn_ratio"]
        return {
            "rate": nr["rate"],
            "control_rate": None if nr["control"] is None else nr["control"]["rate"],
            "excess_over_control": nr["excess_over_control"],
            "closer_to_train_than_holdout": nr["closer_to_train_than_holdout"],
            "carlini_rate": None if nr["carlini"] is None else nr["carlini"]["rate"],
            "n_samples": nr["n_samples"],
            "n_memorized": nr["n_memorized"],
            "space": d["space"],
            "gate": d["gate"],
            "report_json": self._report_paths().get("json"),
            "report_html": self._report_paths().get("html"),
        }


def _probe(config: AuditConfig) -> NNRatioProbe:
    return NNRatioProbe(threshold=config.threshold, metric=config.metric, backend=config.backend,
                        index=config.index, carlini_alpha=config.carlini_alpha,
                        carlini_n=config.carlini_n, n_bootstrap=config.n_bootstrap,
                        confidence=config.confidence, seed=config.seed, progress=config.progress)


def _duplicates_threshold(config: AuditConfig):
    """The --duplicates threshold, parsed and checked for its method (None: the method's)."""
    from ..probes.duplicates import parse_threshold

    t = config.duplicates_threshold
    if t is None:
        return None
    if config.duplicates is None:
        raise ValueError("duplicates_threshold (--duplicates-threshold) applies to duplicates "
                         "(--duplicates METHOD); give the method")
    try:
        value = parse_threshold(config.duplicates, t if isinstance(t, str) else format(t, "g"))
    except ValueError as exc:
        raise ValueError(str(exc).replace("--threshold", "--duplicates-threshold")) from None
    return value if isinstance(t, str) else t


def _check(config: AuditConfig) -> tuple[Gate, object]:
    """Everything that can be refused before any file is read: settings, declarations, the gate,
    the output folder. Returns the gate and the parsed duplicates threshold."""
    if config.train is None or config.samples is None:
        raise ValueError("an audit needs both train (--train) and samples (--samples)")
    if config.membership and config.holdout is None:
        raise ValueError("the membership attack needs held-out data (holdout): the "
                         "non-members it must tell apart from the training items")
    with option_errors(config):
        check_seed(config.seed, "seed (--seed)")
        _probe(config).check_params()
        check_positive_int(config.gallery, "gallery", minimum=0)
        if config.duplicates is not None and config.duplicates not in DUPLICATE_METHODS:
            raise ValueError(f"duplicates must be one of {DUPLICATE_METHODS}, got "
                             f"{config.duplicates!r}")
    threshold = _duplicates_threshold(config)
    parsed_declarations(config, SETS)
    gate = Gate(config.fail_above, config.gate).check(has_control=config.holdout is not None)
    check_out(config)
    return gate, threshold


@with_progress
def run_audit(config: AuditConfig) -> AuditRun:
    """Run the nearest-neighbour-ratio audit described by ``config``.

    Returns
    -------
    AuditRun
        ``.report`` (the :class:`memaudit.report.Report`), ``.gate``, ``.passed``; ``.paths`` when
        ``config.out`` is set (else call ``.write(out_dir)``).

    Examples
    --------
    >>> config = AuditConfig(train="train.npy", samples="gen.npy", out="audit")
    >>> run = run_audit(config)  # doctest: +SKIP
    >>> run.passed, run.paths["html"]  # doctest: +SKIP
    """
    gate, dup_threshold = _check(config)
    t0 = time.perf_counter()
    data, notes = load_inputs(config, SETS)
    train, samples, holdout = data["train"], data["samples"], data["holdout"]
    if config.duplicates is not None:
        require_images(config.duplicates, train, "--duplicates")
    probe = _probe(config).fit(train.x, ids=train.ids)
    result = probe.score(
        samples.x,
        ids=samples.ids,
        holdout=None if holdout is None else holdout.x,
        holdout_ids=None if holdout is None else holdout.ids,
    )
    duplicates = None
    if config.duplicates is not None:
        from ..image_duplicates import find_copies, find_duplicates

        # one quantization for every set: the training set's range and precision
        opts = dict(item_shape=train.item_shape, threshold=dup_threshold, seed=config.seed,
                    progress=config.progress, **pixel_scale(train))
        duplicates = {
            "train": find_duplicates(train.x, config.duplicates, ids=train.ids, **opts),
            "samples_vs_train": find_copies(samples.x, train.x, config.duplicates,
                                            sample_ids=samples.ids, reference_ids=train.ids,
                                            **opts),
        }
    membership = None
    if config.membership:
        from .membership import calibrated_distance_attack

        membership = calibrated_distance_attack(
            train, holdout, samples, n_bootstrap=config.n_bootstrap, confidence=config.confidence,
            seed=config.seed, progress=config.progress, metric=config.metric,
            backend=config.backend)
    figure = "nn_ratio.rate" if config.gate == "rate" else "nn_ratio.excess_over_control"
    value = result.rate.value if config.gate == "rate" else (
        None if result.excess is None else result.excess.value)
    record = gate.apply(figure, value)
    notes = list(config.notes) + notes
    report = Report(
        config=config.resolved(),
        versions=package_versions(),
        inputs={"train": train.describe(), "samples": samples.describe(),
                "holdout": None if holdout is None else holdout.describe()},
        nn_ratio=result,
        duplicates=duplicates,
        membership=membership,
        gate=record,
        notes=notes,
        elapsed=time.perf_counter() - t0,
        datasets={"train": train, "samples": samples, "holdout": holdout},
        space=describe_space(train.convention, config.metric),
    )
    run = AuditRun(config=config, gate=record, notes=report.notes, report=report)
    if config.out is not None:
        run.write(config.out)
    if config.csv is not None:
        run.write_csv(config.csv)
    return run
