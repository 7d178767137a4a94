"""The duplicates runner: duplicate groups inside a training set and, with samples, the samples
that copy training items (beside a held-out control when one is given) -> the gate on the copy
rate -> duplicates.json and duplicates.html.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .._progress import with_progress
from .._validation import check_fraction, check_positive_int, check_seed
from ..conventions import pixel_scale, require_images
from ..gate import Gate
from ..image_duplicates import find_copies, find_copies_with_control, find_duplicates
from ..probes.duplicates import DEFAULTS, METHODS, CopyRateResult, parse_threshold
from ._common import (SETS, STATS, Run, check_out, declarations, defaults_of, gate_options,
                      load_inputs, option, option_errors, out_option, package_versions,
                      parsed_declarations, progress_option, resolved)
from ._common import check_cluster_options, cluster_options
from ..distributed import (shard_inputs, sharded_copies, sharded_copies_with_control,
                           sharded_duplicates, uses_shards)
from ._features import (checked_features, encode_sets, feature_options, feature_threshold,
                        label_threshold, load_encoder, space_text)
from ._common import csv_option, image_options

__all__ = ["DuplicatesConfig", "DuplicatesRun", "run_duplicates"]

_FAIL_ABOVE, _GATE = gate_options(
    "the gated copy rate (needs --samples)", "figure read by --fail-above: the share of samples "
    "that match a training item (rate) or its excess over the held-out control (excess, needs "
    "--holdout)")
# phash, not the array function's "embedding": this runner reads image files and folders, where a
# perceptual hash needs no encoder and still matches resized or re-encoded copies (imagededup's
# choice too); find_duplicates defaults to "embedding" because its input is usually a feature
# array, on which hashes are refused.
DEFAULT_METHOD = "phash"
_FIND = defaults_of(find_duplicates)
_FEATURES, _DEVICE, _FEATURE_CACHE = feature_options()
_CLUSTER, _SHARD_ROWS = cluster_options()
_RESIZE, _MODE, _SKIP = image_options()


def _threshold_defaults() -> str:
    return ", ".join(f"{m} {'none' if DEFAULTS[m][0] is None else DEFAULTS[m][0]}" for m in METHODS)


@dataclass
class DuplicatesConfig:
    """Duplicates inside a training set and copies of it among generated samples.

    ``method`` defaults to phash, not :func:`memaudit.probes.duplicates.find_duplicates`'s
    embedding: this runner reads image files and folders, where a perceptual hash needs no encoder
    and still matches resized or re-encoded copies; the array function's inputs are usually
    feature vectors, on which hashes are refused. Every field's default is in its ``help``
    (``memaudit duplicates -h``).
    """

    train: object = option(None, "training items", kind="path", required=True, metavar="PATH")
    samples: object = option(None, "generated samples to match against train", kind="path",
                             metavar="PATH", default_text="none: train only")
    holdout: object = option(None, "held-out real items never trained on: the control of the "
                             "samples' copy rate (needs --samples)", kind="path", metavar="PATH",
                             default_text="none: no control")
    method: str = option(DEFAULT_METHOD, "what counts as a duplicate (phash for image files: no "
                         "encoder needed)", choices=METHODS)
    threshold: object = option(None, "phash/dhash: Hamming distance at most T, an integer from 0 "
                               "to 64; embedding: cosine similarity at least T, in (0, 1]; "
                               "tiled_l2: tiled l2 distance at most T, in (0, 1]; exact: none",
                               kind="text", metavar="T",
                               default_text=f"the method's: {_threshold_defaults()}")
    index: str = option(_FIND["index"], "embedding: exact range search, or IVF with measured "
                        "recall", choices=("exact", "ivf"))
    resize: object = _RESIZE  # the image-folder options (runners._common.image_options)
    mode: str | None = _MODE
    skip_unreadable: bool = _SKIP
    ranges: object = declarations("range", SETS)
    layouts: object = declarations("layout", SETS)
    n_bootstrap: int = option(STATS.n_bootstrap, "bootstrap resamples of the copy rates' "
                              "intervals", metavar="B")
    confidence: float = option(STATS.confidence, "interval level")
    seed: int = option(STATS.seed, "seed (IVF training, recall sample, intervals of the copy "
                       "rates)")
    fail_above: float | None = _FAIL_ABOVE
    gate: str = _GATE
    cluster: object = _CLUSTER
    shard_rows: int | None = _SHARD_ROWS
    out: object = out_option("duplicates")
    progress: bool | None = progress_option()
    features: str = _FEATURES
    device: str = _DEVICE
    feature_cache: object = _FEATURE_CACHE
    csv: object = csv_option("one row per item of each result: its group, or its best match")


@dataclass
class DuplicatesRun(Run):
    """What :func:`run_duplicates` returns.

    ``results`` maps "train" (groups inside the training set), "samples_vs_train" and
    "holdout_vs_train" to :class:`memaudit.probes.duplicates.DuplicateResult`; ``control`` is the
    :class:`~memaudit.probes.duplicates.CopyRateResult` when a holdout was given.
    """

    results: dict = None
    control: CopyRateResult | None = None
    datasets: dict = None
    elapsed: float = 0.0
    space: str | None = None  # what was compared: the --features space, or the pixels
    cluster: dict | None = None  # where the search ran (workers, threads, shards), if sharded

    def warnings(self) -> list:
        """Every note of the loading step (conventions, scales), for stderr."""
        return list(self.notes)

    def write(self, out_dir) -> dict:
        """Write duplicates.json and duplicates.html into ``out_dir``; returns their paths."""
        from ..report import write_duplicates_report

        config = resolved(self.config, threshold=self.results["train"].threshold)
        if self.cluster is not None:
            config["cluster"] = self.cluster
        self.paths = write_duplicates_report(out_dir, self.results, self.datasets, config,
                                             package_versions(), self.elapsed,
                                             control=self.control, gate=self.gate,
                                             space=self.space)
        return self.paths

    def summary(self) -> str:
        lines = [f"compared in: {self.space}"] if self.space else []
        lines += [f"{key}: {res.summary()}" for key, res in self.results.items()]
        if self.control is not None:
            lines.append(f"copy rate vs held-out control: {self.control.summary()}")
        for name, ds in self.datasets.items():
            if ds is not None and ds.skipped:
                lines.append(f"{name}: skipped {len(ds.skipped)} unreadable file(s), listed in "
                             "the report")
        return "\n".join(lines + self._tail())

    def to_frame(self):
        """Every result's per-item rows (:meth:`DuplicateResult.to_frame`), with a ``result``
        column ("train", "samples_vs_train", "holdout_vs_train")."""
        import pandas as pd

        return pd.concat([res.to_frame().assign(result=key) for key, res in self.results.items()],
                         ignore_index=True)

    def to_summary(self) -> dict:
        listed = ("groups", "pairs", "matches")  # long lists: in the report, not the summary
        out = {k: {kk: vv for kk, vv in v.to_dict().items() if kk not in listed}
               for k, v in self.results.items()}
        if self.control is not None:
            out["copy_rate"] = self.control.to_dict()
        return {**out, "space": self.space, "gate": self.gate, "report": self._report_paths()}


def _check(config: DuplicatesConfig):
    """Everything refused before any file is read; returns the gate and the parsed threshold."""
    if config.train is None:
        raise ValueError("duplicates needs a training set (train, --train)")
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config.method!r}")
    t = config.threshold
    # text (the command line) is parsed; a number is checked the same way and kept as given
    number = t is not None and not isinstance(t, str)
    threshold = parse_threshold(config.method, format(t, "g") if number else t)
    threshold = t if number else threshold
    if config.holdout is not None and config.samples is None:
        raise ValueError("--holdout is the control of the samples' copy rate: give --samples too")
    gate = Gate(config.fail_above, config.gate).check(has_control=config.holdout is not None,
                                                      command="duplicates")
    if gate.active and config.samples is None:
        raise ValueError("duplicates: the gate (--fail-above) reads the samples' copy rate: give "
                         "--samples")
    with option_errors(config):
        check_seed(config.seed, "seed (--seed)")
        check_positive_int(config.n_bootstrap, "n_bootstrap")
        check_fraction(config.confidence, "confidence")
    parsed_declarations(config, SETS)
    check_out(config)
    check_cluster_options(config)
    return gate, threshold


def _gated(config, results, control):
    """The gated figure's name and value: the samples' copy rate, or its excess over control."""
    if config.gate == "excess":
        return "duplicates.excess_over_control", control.excess.value
    if control is not None:
        return "duplicates.copy_rate", control.rate.value
    res = results.get("samples_vs_train")
    return "duplicates.copy_rate", None if res is None else res.n_duplicated / res.n_items


def _space(config, spec, encoder, train, features) -> str:
    """What was compared: the --features space for embedding, else the method on the pixels."""
    if encoder is not None:
        return space_text(spec, encoder, train, "cosine", features.shape[1]).replace(
            "cosine distance", "cosine similarity")
    images = space_text(spec, None, train, "l2").rsplit(", ", 1)[0]
    if config.method == "embedding":
        return (f"cosine similarity on raw pixels (no encoder; --features to embed); "
                f"images: {images}")
    return f"{config.method} on {images}"


@with_progress
def run_duplicates(config: DuplicatesConfig) -> DuplicatesRun:
    """Find duplicates and copies as ``config`` says (see the module).

    Returns
    -------
    DuplicatesRun
        ``.results``, ``.control``, ``.gate``, ``.passed``; ``.paths`` when ``config.out`` is set
        (else ``.write(out_dir)``).
    """
    gate, threshold = _check(config)
    spec = checked_features(config)
    if spec.extractor != "pixels" and config.method != "embedding":
        raise ValueError(f"features (--features) {spec.extractor} is compared by --method "
                         f"embedding; {config.method} compares pixels: add --method embedding "
                         f"(or drop --features)")
    encoder = load_encoder(config, spec)  # weights read and checked before any data
    from ..distributed import open_cluster

    with open_cluster(config.cluster) as client:
        return _run_duplicates(config, gate, threshold, client, spec, encoder)


def _run_duplicates(config: DuplicatesConfig, gate, threshold, client, spec,
                    encoder) -> DuplicatesRun:
    t0 = time.perf_counter()
    # one convention for every set (refused or converted as in audit); the probe quantizes with
    # the training set's range and precision
    loaded, notes = load_inputs(config, SETS)
    finders, cluster = (find_duplicates, find_copies, find_copies_with_control), None
    if uses_shards(client, loaded):  # a cluster or a sharded training set (memaudit.distributed)
        if encoder is not None:
            raise ValueError(f"features (--features) {config.features}: feature spaces are "
                             "encoded in one process; run it without --cluster, on train given "
                             "as one file or folder")
        loaded, cluster = shard_inputs(loaded, "train", client, config.shard_rows)
        finders = (sharded_duplicates, sharded_copies, sharded_copies_with_control)
    find_dup, find_cp, find_control = finders
    train, samples, holdout = (loaded[k] for k in SETS)
    require_images(config.method, train)
    x = {k: None if v is None else v.x for k, v in loaded.items()}
    if encoder is not None:  # embedding in the --features space, its own default threshold
        x, feature_notes = encode_sets(encoder, loaded)
        notes = notes + feature_notes
    common = dict(threshold=feature_threshold(spec, config.method, threshold), index=config.index,
                  seed=config.seed, progress=config.progress,
                  item_shape=train.item_shape if encoder is None else x["train"].shape[1:],
                  **(pixel_scale(train) if encoder is None else {}))
    results = {"train": find_dup(x["train"], config.method, ids=train.ids, **common)}
    control = None
    if holdout is not None:
        control = find_control(x["samples"], x["train"], x["holdout"], config.method,
                                           sample_ids=samples.ids, reference_ids=train.ids,
                                           holdout_ids=holdout.ids, n_bootstrap=config.n_bootstrap,
                                           confidence=config.confidence, **common)
        results["samples_vs_train"] = control.samples
        results["holdout_vs_train"] = control.control
    elif samples is not None:
        results["samples_vs_train"] = find_cp(x["samples"], x["train"], config.method,
                                                  sample_ids=samples.ids, reference_ids=train.ids,
                                                  **common)
    results = {k: label_threshold(v, spec, config.method, threshold) for k, v in results.items()}
    if control is not None:
        control = label_threshold(control, spec, config.method, threshold)
    record = gate.apply(*_gated(config, results, control))
    run = DuplicatesRun(config=config, gate=record, notes=notes, results=results, control=control,
                        datasets={"train": train, "samples": samples, "holdout": holdout},
                        elapsed=time.perf_counter() - t0, cluster=cluster,
                        space=_space(config, spec, encoder, train, x["train"]))
    if config.out is not None:
        run.write(config.out)
    if config.csv is not None:
        run.write_csv(config.csv)
    return run
