"""The audit runner: load inputs, run the probes, assemble a report.

Only the runner knows about files; probes see arrays and ids. Defaults live once, in
:class:`AuditConfig`, and the command line reads them from there.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata

import numpy as np

from ._validation import check_positive_int, check_same_dim
from .conventions import describe_space, harmonize, pixel_scale, require_images
from .gate import GATES, Gate
from .probes.nn_ratio import DEFAULT_THRESHOLD, NNRatioProbe, NNRatioResult
from .report import Report
from .sources import Dataset, load_dataset

__all__ = ["AuditConfig", "run_audit", "package_versions", "GATES", "load_inputs"]


@dataclass
class AuditConfig:
    """Everything an audit needs; the resolved config is written into the report.

    Parameters
    ----------
    train, samples : str, path, array-like or Dataset
        Training items and generated samples (``.npy``, ``.npz[:key]``, an image folder, an array).
    holdout : optional
        Held-out real items never trained on: the control.
    threshold : float, default=1/3
        k in d1/d2 < k (Bonnaire et al. 2025, Eq. 6).
    metric, backend, index : str
        Neighbour search: "l2" or "cosine"; "faiss", "numpy" or "torch"; "exact", "ivf", "hnsw".
    carlini_alpha : float or None, default=0.5
        Carlini et al. 2023's relative criterion; None turns it off.
    carlini_n : int, default=50
    n_bootstrap : int, default=1000
    confidence : float, default=0.95
    seed : int, default=0
    resize : int or (int, int), optional
        Resize image folders.
    mode : {"L", "RGB"}, optional
        Read image folders as grayscale or colour.
    skip_unreadable : bool, default=False
        Image folders: skip undecodable files (listed in the report) instead of failing.
    ranges : dict of str -> str, optional
        Declared value ranges, e.g. ``{"samples": "-1,1"}`` (diffusers' convention) or
        ``{"samples": "0,255"}``: the input is converted to the training set's range. Without a
        declaration, an input whose range differs from the training set's is refused
        (:mod:`memaudit.conventions`).
    layouts : dict of str -> str, optional
        Declared layouts, ``{"samples": "CHW"}`` (PyTorch's channels-first): converted to the
        training set's layout.
    duplicates : {"exact", "phash", "dhash", "embedding", "tiled_l2"} or None
        Also run the duplicates probe with this method: duplicate groups inside the training set
        and samples that copy training items (a section of the report).
    duplicates_threshold : float, optional
        Its threshold (default: the method's, see ``memaudit.probes.duplicates.DEFAULTS``).
    membership : bool, default=False
        Also run the sample-only membership attack (distance from each training and held-out
        item to its nearest generated sample, GAN-Leaks style), threshold chosen on a calibration
        half of each side and figures reported on the other half (needs ``holdout``).
    gallery : int, default=16
        Closest generated/training pairs shown as images in the HTML report.
    fail_above : float, optional
        Gate: the audit fails when the gated rate is above this value.
    gate : {"rate", "excess"}, default="rate"
        Which figure the gate reads: the samples' memorized fraction, or its excess over the
        held-out control (needs ``holdout``).
    notes : list of str
        Free text shown at the top of the report (the demo uses it to say its samples are a
        stand-in).
    progress : bool or None
        Progress bars on stderr (None: when stderr is a terminal).
    """

    train: object = None
    samples: object = None
    holdout: object = None
    threshold: float = DEFAULT_THRESHOLD
    metric: str = "l2"
    backend: str = "faiss"
    index: str = "exact"
    carlini_alpha: float | None = 0.5
    carlini_n: int = 50
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    resize: object = None
    mode: str | None = None
    skip_unreadable: bool = False
    ranges: dict | None = None
    layouts: dict | None = None
    duplicates: str | None = None
    duplicates_threshold: float | None = None
    membership: bool = False
    gallery: int = 16
    fail_above: float | None = None
    gate: str = "rate"
    notes: list = field(default_factory=list)
    progress: bool | None = None

    def resolved(self) -> dict:
        """A JSON-safe copy; arrays are described by their shape, paths kept as given."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Dataset):
                v = v.source
            elif v is not None and not isinstance(v, (str, int, float, bool, list, tuple)):
                v = f"<{type(v).__name__} of shape {tuple(np.shape(v))}>"
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def package_versions() -> dict:
    """Versions of Python and of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("memaudit", "numpy", "scipy", "scikit-learn", "faiss-cpu", "Pillow", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _load(value, name, config) -> Dataset | None:
    if value is None:
        return None
    if isinstance(value, Dataset):
        return value
    return load_dataset(value, name, resize=config.resize, mode=config.mode,
                        skip_unreadable=config.skip_unreadable)


def load_inputs(config, names=("train", "samples", "holdout")):
    """Load the inputs a config names and bring them to one convention (or refuse, one line).

    Returns ``(datasets, notes)``: a dict name -> Dataset (None for inputs not given), every
    Dataset with its :class:`memaudit.conventions.Convention`, converted where the config declares
    a range or layout; and notes for the report.
    """
    loaded = {k: _load(getattr(config, k), k, config) for k in names}
    first = names[0]
    for k, ds in loaded.items():
        if ds is not None and k != first:
            check_same_dim(ds.x, loaded[first].x, k, first)
    return harmonize(loaded, ranges=config.ranges, layouts=config.layouts)


def _probe(config: AuditConfig) -> NNRatioProbe:
    return NNRatioProbe(threshold=config.threshold, metric=config.metric, backend=config.backend,
                        index=config.index, carlini_alpha=config.carlini_alpha,
                        carlini_n=config.carlini_n, n_bootstrap=config.n_bootstrap,
                        confidence=config.confidence, seed=config.seed, progress=config.progress)


def _check(config: AuditConfig) -> Gate:
    """Everything that can be refused before any file is read: settings, the gate."""
    if config.train is None or config.samples is None:
        raise ValueError("an audit needs both train and samples")
    if config.membership and config.holdout is None:
        raise ValueError("the membership attack needs held-out data (holdout): the "
                         "non-members it must tell apart from the training items")
    _probe(config).check_params()
    check_positive_int(config.gallery, "gallery", minimum=0)
    if config.duplicates is not None:
        from .probes.duplicates import METHODS

        if config.duplicates not in METHODS:
            raise ValueError(f"duplicates must be one of {METHODS}, got {config.duplicates!r}")
    return Gate(config.fail_above, config.gate).check(has_control=config.holdout is not None)


def run_audit(config: AuditConfig) -> Report:
    """Run the nearest-neighbour-ratio audit described by ``config``.

    Returns
    -------
    Report
        Call ``report.write(out_dir)`` for report.json and report.html.
    """
    gate = _check(config)
    t0 = time.perf_counter()
    data, notes = load_inputs(config)
    train, samples, holdout = data["train"], data["samples"], data["holdout"]
    if config.duplicates is not None:
        require_images(config.duplicates, train, "--duplicates")
    probe = _probe(config).fit(train.x, ids=train.ids)
    result: NNRatioResult = probe.score(
        samples.x,
        ids=samples.ids,
        holdout=None if holdout is None else holdout.x,
        holdout_ids=None if holdout is None else holdout.ids,
    )
    duplicates = None
    if config.duplicates is not None:
        from .image_duplicates import find_copies, find_duplicates

        # one quantization for every set: the training set's range and precision
        opts = dict(item_shape=train.item_shape, threshold=config.duplicates_threshold,
                    seed=config.seed, progress=config.progress, **pixel_scale(train))
        duplicates = {
            "train": find_duplicates(train.x, config.duplicates, ids=train.ids, **opts),
            "samples_vs_train": find_copies(samples.x, train.x, config.duplicates,
                                            sample_ids=samples.ids, reference_ids=train.ids,
                                            **opts),
        }
    membership = None
    if config.membership:
        from .probes.calibration import calibrated_attack, calibration_split
        from .probes.sample_attacks import distance_attack

        # each side searched on its own: a memory-mapped training set is streamed, never
        # concatenated into memory
        opts = dict(metric=config.metric, backend=config.backend, progress=config.progress)
        member_scores = distance_attack(train.x, samples.x, **opts)
        nonmember_scores = distance_attack(holdout.x, samples.x, **opts)
        split = calibration_split(train.x.shape[0], holdout.x.shape[0], seed=config.seed,
                                  member_ids=train.ids, nonmember_ids=holdout.ids)
        membership = calibrated_attack(member_scores, nonmember_scores, split,
                                       n_bootstrap=config.n_bootstrap,
                                       confidence=config.confidence, seed=config.seed)
    figure = "nn_ratio.rate" if config.gate == "rate" else "nn_ratio.excess_over_control"
    value = result.rate.value if config.gate == "rate" else (
        None if result.excess is None else result.excess.value)
    return Report(
        config=config.resolved(),
        versions=package_versions(),
        inputs={
            "train": train.describe(),
            "samples": samples.describe(),
            "holdout": None if holdout is None else holdout.describe(),
        },
        nn_ratio=result,
        duplicates=duplicates,
        membership=membership,
        gate=gate.apply(figure, value),
        notes=list(config.notes) + notes,
        elapsed=time.perf_counter() - t0,
        datasets={"train": train, "samples": samples, "holdout": holdout},
        space=describe_space(train.convention, config.metric),
    )


def config_defaults() -> dict:
    """Default values of every AuditConfig field (the CLI reads its defaults from here)."""
    return asdict(AuditConfig())
