"""The audit runner: load inputs, run the nearest-neighbour-ratio probe (and, on request, the
duplicates probe and the sample-only membership attack), apply the gate, write the report.

Only runners know about files; probes see arrays and ids. Every default of :class:`AuditConfig`
is read from the probe or the dataclass that owns it (:class:`memaudit.probes.NNRatioProbe`,
:class:`memaudit.stats.StatsConfig`, :class:`memaudit.gate.Gate`); the command line reads its
options and defaults from these fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .._progress import with_progress
from .._validation import check_positive_int, check_seed
from ..conventions import pixel_scale, require_images
from ..gate import Gate
from ..neighbors import BACKENDS, INDEXES, METRICS
from ..probes.duplicates import METHODS as DUPLICATE_METHODS
from ..probes.nn_ratio import NNRatioProbe
from ..report import Report
from ._common import (SETS, STATS, Run, check_out, declarations, defaults_of, gate_options,
                      load_inputs, option, option_errors, out_option, package_versions,
                      parsed_declarations, progress_option, resolved)
from ._common import check_cluster_options, cluster_options
from ._model import ModelSampling, model_field
from ._features import (checked_features, encode_sets, feature_options, feature_threshold,
                        label_threshold, load_encoder, space_text)
from ._common import csv_option, image_options

__all__ = ["AuditConfig", "AuditRun", "run_audit"]

_RESIZE, _MODE, _SKIP = image_options(group="inputs")

_NN = defaults_of(NNRatioProbe)
_FEATURES, _DEVICE, _FEATURE_CACHE = feature_options(group="features")
_FAIL_ABOVE, _GATE = gate_options(
    "the gated rate", "figure read by --fail-above: the memorized fraction (rate) or its excess "
    "over the held-out control (excess, needs --holdout)", group="output")
_CLUSTER, _SHARD_ROWS = cluster_options(group="search")


@dataclass
class AuditConfig(ModelSampling):
    """Everything an audit needs; the resolved config is written into the report.

    Every field's meaning and default is in its ``help`` (``memaudit audit -h`` prints them). The
    inputs are paths (``.npy``, ``.npz[:key]``, an image folder), arrays or
    :class:`memaudit.Dataset`; ``ranges`` / ``layouts`` declare an input's convention
    (:mod:`memaudit.conventions`), e.g. ``{"samples": "-1,1"}``. With ``out`` set, the runner
    writes ``out/report.json`` and ``out/report.html``.
    """

    train: object = option(None, "training items", kind="path", required=True, group="inputs",
                           metavar="PATH")
    samples: object = option(None, "generated samples (or --model)", kind="path",
                             group="inputs", metavar="PATH", default_text="none: give --model")
    holdout: object = option(None, "held-out real items never trained on: the control, "
                             "recommended", kind="path", group="inputs", metavar="PATH",
                             default_text="none: no control")
    resize: object = _RESIZE  # the image-folder options (runners._common.image_options)
    mode: str | None = _MODE
    skip_unreadable: bool = _SKIP
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
    cluster: object = _CLUSTER
    shard_rows: int | None = _SHARD_ROWS
    out: object = out_option("report", group="output")
    gallery: int = option(16, "closest pairs shown as images in the HTML report", group="output",
                          metavar="N")
    fail_above: float | None = _FAIL_ABOVE
    gate: str = _GATE
    notes: list = option(help="free text shown at the top of the report", factory=list, cli=False)
    progress: bool | None = progress_option(group="output")
    # a diffusers model sampled here instead of --samples (memaudit.adapters.diffusers)
    # (and, from ModelSampling: scheduler, n_samples, sampler, steps, batch_size, device)
    model: object = model_field("model", group="model")
    features: str = _FEATURES
    device: str = _DEVICE
    feature_cache: object = _FEATURE_CACHE
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


def _sharded(client, data) -> bool:
    from ..distributed import uses_shards

    return uses_shards(client, data)


def _sharded_probe(config: AuditConfig, probe, data, client, encoder=None):
    """The probe, inputs and cluster record of the sharded search (memaudit.distributed)."""
    from ..distributed import ShardedNNRatioProbe, shard_inputs

    if encoder is not None:
        raise ValueError(f"features (--features) {config.features}: feature spaces are encoded "
                         "in one process; run it without --cluster, on train given as one file "
                         "or folder")
    if config.membership:
        raise ValueError("membership (--membership) runs in one process on one training array; "
                         "run it without --cluster, on train given as one .npy file")
    data, record = shard_inputs(data, "train", client, config.shard_rows)
    probe = ShardedNNRatioProbe(client=client, shard_rows=config.shard_rows, **probe.get_params())
    return probe, data, record


def _check(config: AuditConfig) -> tuple[Gate, object]:
    """Everything that can be refused before any file is read: settings, declarations, the gate,
    the output folder. Returns the gate and the parsed duplicates threshold."""
    if config.train is None or (config.samples is None) == (config.model is None):
        raise ValueError("an audit needs train (--train) and either samples (--samples) or a "
                         "model to sample (--model)")
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
    ranges, layouts = parsed_declarations(config, SETS)
    if config.model is not None:
        from ._model import check_model_dir, check_sampling, sample_declarations

        with option_errors(config):
            check_sampling(config)
        sample_declarations(ranges, layouts, ())
        check_model_dir(config.model, config.scheduler)
    gate = Gate(config.fail_above, config.gate).check(has_control=config.holdout is not None)
    check_out(config)
    check_cluster_options(config)
    return gate, threshold


def _sample_model(config: AuditConfig):
    """Sample ``config.model`` after reading the real inputs (a bad input is refused before the
    sampling): the config with those Datasets, the samples and their declared convention, and
    the record of what made the samples."""
    from ..adapters.diffusers import load_model
    from ._common import _load
    from ._model import check_model_shape, generated_samples, sample_declarations

    real = {k: _load(getattr(config, k), k, config) for k in ("train", "holdout")}
    check_model_shape(config.model, config.scheduler, real["train"], "train")
    model = load_model(config.model, config.scheduler, device=config.device)
    ds, record = generated_samples(model, config, progress=config.progress)
    ranges, layouts = parsed_declarations(config, SETS)
    ranges, layouts = sample_declarations(ranges, layouts, ds.item_shape)
    return replace(config, samples=ds, ranges=ranges, layouts=layouts, **real), record


def _space(config, spec, encoder, train, features) -> str:
    """The headline's "compared in": the --features space (and what --duplicates compares)."""
    text = space_text(spec, encoder, train, config.metric, features.shape[1])
    if config.duplicates == "embedding" and encoder is None:
        text += ("; --duplicates embedding: cosine similarity on raw pixels (no encoder; "
                 "--features to embed)")
    return text


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
    spec = checked_features(config)
    encoder = load_encoder(config, spec)  # weights read and checked before any data
    from ..distributed import open_cluster

    with open_cluster(config.cluster) as client:
        return _run_audit(config, gate, dup_threshold, client, spec, encoder)


def _run_audit(config: AuditConfig, gate, dup_threshold, client, spec, encoder) -> AuditRun:
    t0 = time.perf_counter()
    generated = None
    if config.model is not None:
        config, generated = _sample_model(config)
    data, notes = load_inputs(config, SETS)
    probe, cluster = _probe(config), None
    if _sharded(client, data):  # a cluster or a sharded training set: the sharded search
        probe, data, cluster = _sharded_probe(config, probe, data, client, encoder)
    train, samples, holdout = data["train"], data["samples"], data["holdout"]
    if config.duplicates is not None:
        require_images(config.duplicates, train, "--duplicates")
    # what the probes compare: the pixels, or every set's features in the --features space
    x = {k: None if v is None else v.x for k, v in data.items()}
    if encoder is not None:
        x, feature_notes = encode_sets(encoder, data)
        notes = notes + feature_notes
    probe = probe.fit(x["train"], ids=train.ids)
    result = probe.score(
        x["samples"],
        ids=samples.ids,
        holdout=x["holdout"],
        holdout_ids=None if holdout is None else holdout.ids,
    )
    duplicates = None
    if config.duplicates is not None:
        from ..image_duplicates import find_copies, find_duplicates

        if cluster is not None:  # hash codes computed shard by shard, matched as one set
            from ..distributed import sharded_copies as find_copies
            from ..distributed import sharded_duplicates as find_duplicates
        # one quantization for every set: the training set's range and precision; embedding
        # compares the --features space (its own default threshold: SSCD 0.5), hashes the pixels
        embedded = encoder is not None and config.duplicates == "embedding"
        dx = x if embedded else {k: None if v is None else v.x for k, v in data.items()}
        opts = dict(item_shape=dx["train"].shape[1:] if embedded else train.item_shape,
                    threshold=feature_threshold(spec, config.duplicates, dup_threshold),
                    seed=config.seed, progress=config.progress,
                    **({} if embedded else pixel_scale(train)))
        duplicates = {
            "train": find_duplicates(dx["train"], config.duplicates, ids=train.ids, **opts),
            "samples_vs_train": find_copies(dx["samples"], dx["train"], config.duplicates,
                                            sample_ids=samples.ids, reference_ids=train.ids,
                                            **opts),
        }
        duplicates = {k: label_threshold(v, spec, config.duplicates, dup_threshold)
                      for k, v in duplicates.items()}
    membership = None
    if config.membership:
        from .membership import calibrated_distance_attack

        # in the --features space too: the same arrays the nn-ratio probe compared
        sets = [replace(ds, x=x[k], item_shape=x[k].shape[1:])
                for k, ds in (("train", train), ("holdout", holdout), ("samples", samples))]
        membership = calibrated_distance_attack(
            *sets, n_bootstrap=config.n_bootstrap, confidence=config.confidence,
            seed=config.seed, progress=config.progress, metric=config.metric,
            backend=config.backend)
    figure = "nn_ratio.rate" if config.gate == "rate" else "nn_ratio.excess_over_control"
    value = result.rate.value if config.gate == "rate" else (
        None if result.excess is None else result.excess.value)
    record = gate.apply(figure, value)
    notes = list(config.notes) + notes
    inputs = {"train": train.describe(), "samples": samples.describe(),
              "holdout": None if holdout is None else holdout.describe()}
    if generated is not None:
        inputs["samples"]["generated_by"] = generated
        notes.append(f"Samples drawn here from {config.model}: {generated['n_samples']} with the "
                     f"{generated['sampler']} sampler, {generated['steps']} steps, "
                     f"{generated['seeds']}; {generated['conversion']}.")
    report = Report(
        config=config.resolved() if cluster is None else {**config.resolved(), "cluster": cluster},
        versions=package_versions(),
        inputs=inputs,
        nn_ratio=result,
        duplicates=duplicates,
        membership=membership,
        gate=record,
        notes=notes,
        elapsed=time.perf_counter() - t0,
        datasets={"train": train, "samples": samples, "holdout": holdout},
        space=_space(config, spec, encoder, train, x["train"]),
    )
    run = AuditRun(config=config, gate=record, notes=report.notes, report=report)
    if config.out is not None:
        run.write(config.out)
    if config.csv is not None:
        run.write_csv(config.csv)
    return run
