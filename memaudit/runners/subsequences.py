"""The subsequences runner: training and generated time series (and a held-out control) -> the
subsequence probe on every window -> the gate on the share of generated series with a memorized
window (or its excess over control) -> subsequences.json and subsequences.html.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..adapters.timeseries import as_series_list
from .._progress import with_progress
from .._validation import check_positive_int, check_seed
from ..gate import Gate
from ..probes.subsequence import SubsequenceProbe, SubsequenceResult
from ..sources import load_series
from ._common import (SETS, STATS, Run, check_out, defaults_of, gate_options, option,
                      option_errors, out_option, package_versions, progress_option, resolved)
from ._common import check_cluster_options, cluster_options, csv_option

__all__ = ["SubsequencesConfig", "SubsequencesRun", "run_subsequences"]

_SS = defaults_of(SubsequenceProbe)
_CLUSTER, _SHARD_ROWS = cluster_options()
_FAIL_ABOVE, _GATE = gate_options(
    "the gated rate", "rate: share of generated series with a memorized window; excess: its "
    "excess over the held-out control (needs --holdout)")


@dataclass
class SubsequencesConfig:
    """Do generated time series replay stretches of training series?

    Inputs are paths (.npy, .npz[:key] with an optional ``ids`` array, .csv with one series per
    row) or arrays of shape (n_series, length) or (n_series, length, channels) (``layout``); the
    training series may also be a folder of ``.npy`` shards or a zarr array of equal-length
    series, searched shard by shard (``cluster``: on a Dask cluster, the same results). The
    probe's settings and their defaults are :class:`memaudit.probes.subsequence.SubsequenceProbe`'s
    (``window`` is its ``length``; ``normalize`` False compares raw values); ``memaudit
    subsequences -h`` prints them all.
    """

    train: object = option(None, "training series", kind="path", required=True, metavar="PATH")
    samples: object = option(None, "generated series", kind="path", required=True, metavar="PATH")
    holdout: object = option(None, "held-out real series (the control)", kind="path",
                             metavar="PATH", default_text="none: no control")
    out: object = out_option("subsequences")
    window: int | None = option(None, "window length in steps", kind="int", required=True,
                                metavar="L")
    stride: int = option(_SS["stride"], "steps between compared windows of a generated series; "
                         "1 compares every window, so a replayed stretch of L steps or more is "
                         "compared whole at any offset; with S > 1 only replays of L + S - 1 "
                         "steps or more are sure to be compared, at about 1/S of the cost",
                         metavar="S", default_text=f"{_SS['stride']}: every window")
    normalize: bool = option(_SS["normalize"], "z-normalised distance (shape only; a generated "
                             "window constant in every channel then has no shape and is counted "
                             "as not evaluable, never flagged); --raw compares raw values "
                             "(Euclidean distance)", kind="off", flag="--raw",
                             default_text="z-normalised")
    exclusion_zone: int | None = option(_SS["exclusion_zone"], "the second match may not start "
                                        "within Z steps of the first in the same series",
                                        kind="int", metavar="Z", default_text="L - 1: no overlap")
    threshold: float = option(_SS["threshold"], "memorized when d1/d2 < K, K in (0, 1); a window "
                              "at distance 0 of two training stretches (d1 = d2 = 0) is a copy",
                              metavar="K")
    max_distance: float | None = option(_SS["max_distance"], "also count windows with d1 <= D "
                                        "(D >= 0) as matches", kind="number", metavar="D",
                                        default_text="none")
    layout: str = option(_SS["layout"], "3-D arrays: (series, time, channels) or (series, "
                         "channels, time)", choices=("NTC", "NCT"))
    n_bootstrap: int = option(STATS.n_bootstrap, "bootstrap resamples of the intervals",
                              metavar="B")
    confidence: float = option(STATS.confidence, "interval level")
    seed: int = option(STATS.seed, "seed of the bootstrap")
    fail_above: float | None = _FAIL_ABOVE
    gate: str = _GATE
    progress: bool | None = progress_option()
    csv: object = csv_option("one row per generated window: d1, d2, ratio, matched stretch, flags")
    cluster: object = _CLUSTER
    shard_rows: int | None = _SHARD_ROWS


@dataclass
class SubsequencesRun(Run):
    """What :func:`run_subsequences` returns: the probe's result and the series it was run on."""

    result: SubsequenceResult = None
    probe: SubsequenceProbe = None
    series: dict = None  # name -> (list of (length, channels) arrays, ids, description)
    elapsed: float = 0.0
    cluster: dict | None = None  # where the search ran (workers, threads, shards), if sharded

    def to_frame(self):
        """One row per generated window (:meth:`SubsequenceResult.to_frame`)."""
        return self.result.to_frame()

    def resolved_config(self) -> dict:
        """The config with the probe's resolved settings (the exclusion zone's L - 1, ...)."""
        p = self.probe
        extra = {} if self.cluster is None else {"cluster": self.cluster}
        return resolved(self.config, window=p.length, stride=p.stride, exclusion_zone=p.zone_,
                        threshold=p.threshold, max_distance=p.max_distance,
                        n_bootstrap=p.n_bootstrap, seed=p.seed, **extra)

    def write(self, out_dir) -> dict:
        """Write subsequences.json and subsequences.html into ``out_dir``; returns their paths."""
        from ..report import write_subsequence_report

        samples, sample_ids, _ = self.series["samples"]
        self.paths = write_subsequence_report(
            out_dir, self.result, samples, self.series["train"][0], train_ids=self.probe.train_ids_,
            sample_ids=sample_ids if sample_ids is not None else list(range(len(samples))),
            inputs={k: v[2] for k, v in self.series.items()}, config=self.resolved_config(),
            versions=package_versions(), elapsed=self.elapsed, gate=self.gate)
        return self.paths

    def summary(self) -> str:
        return "\n".join([self.result.summary()] + self._tail())

    def to_summary(self) -> dict:
        res = self.result
        return {"window_rate": res.window_rate.to_dict(), "series_rate": res.series_rate.to_dict(),
                "excess": None if res.excess is None else res.excess.to_dict(),
                "report": self._report_paths(), "gate": self.gate, "gate_failed": not self.passed}


def _probe(config: SubsequencesConfig) -> SubsequenceProbe:
    return SubsequenceProbe(config.window, stride=config.stride, normalize=config.normalize,
                            exclusion_zone=config.exclusion_zone, threshold=config.threshold,
                            max_distance=config.max_distance, n_bootstrap=config.n_bootstrap,
                            confidence=config.confidence, seed=config.seed, layout=config.layout,
                            progress=config.progress)


def _check(config: SubsequencesConfig) -> tuple[Gate, SubsequenceProbe]:
    """Every setting is checked before any file is read."""
    gate = Gate(config.fail_above, config.gate).check(has_control=config.holdout is not None,
                                                      command="subsequences")
    if config.train is None or config.samples is None or config.window is None:
        raise ValueError("subsequences needs train (--train), samples (--samples) and a window "
                         "length (--window)")
    probe = _probe(config)
    with option_errors(config, {"length": "window"}):
        check_positive_int(config.window, "window")
        check_seed(config.seed, "seed (--seed)")
        probe._check_params()
    check_cluster_options(config)
    check_out(config)
    return gate, probe


def _load(source, name, layout):
    data, ids, desc = load_series(source, name)
    series = as_series_list(data, name, layout)
    lengths = [s.shape[0] for s in series]
    desc.update(n_series=len(series), channels=series[0].shape[1],
                lengths=[int(min(lengths)), int(max(lengths))])
    return series, ids, desc


def _is_store(source) -> bool:
    from ..shards import is_sharded_source

    return isinstance(source, (str, os.PathLike)) and is_sharded_source(source, "train")


def _load_sharded_train(source, layout, shard_rows):
    """The training series as shards (memaudit.distributed.ShardedSeries): a folder of .npy
    shards or a zarr array as it is stored, a .npy file as row ranges of its memory map (each
    worker reads its rows), anything else read here and cut into groups of series."""
    from ..distributed import ShardedSeries
    from ..shards import ShardedSet, load_sharded

    ids = None
    if _is_store(source):
        sset, kind = load_sharded(source, "train", shard_rows=shard_rows)
        series, desc = ShardedSeries(sset, "train", layout), {"source": str(source), "format": kind}
    elif isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".npy"):
        sset = ShardedSet.from_npy(source, "train", shard_rows)
        series, desc = ShardedSeries(sset, "train", layout), {"source": str(source), "format": "npy"}
    else:
        data, ids, desc = load_series(source, "train")
        series = ShardedSeries(data, "train", layout, shard_rows)
    desc.update(n_series=len(series), channels=int(series.channels),
                lengths=[int(series.lengths.min()), int(series.lengths.max())],
                n_shards=len(series.parts))
    return series, ids, desc


@with_progress
def run_subsequences(config: SubsequencesConfig) -> SubsequencesRun:
    """Match every window of the generated series against every training window (see the module).

    Returns
    -------
    SubsequencesRun
        ``.result`` (a :class:`memaudit.probes.subsequence.SubsequenceResult`), ``.gate``,
        ``.passed``; ``.paths`` when ``config.out`` is set (else ``.write(out_dir)``).
    """
    gate, probe = _check(config)
    from ..distributed import open_cluster

    with open_cluster(config.cluster) as client:
        return _run_subsequences(config, gate, probe, client)


def _run_subsequences(config, gate, probe, client) -> SubsequencesRun:
    t0 = time.perf_counter()
    sharded = client is not None or _is_store(config.train)
    series = {name: _load(getattr(config, name), name, config.layout)
              for name in SETS if getattr(config, name) is not None
              and not (sharded and name == "train")}
    cluster = None
    if sharded:  # a cluster or a sharded store: the training series searched shard by shard
        from ..distributed import ShardedSubsequenceProbe, cluster_record

        series["train"] = _load_sharded_train(config.train, config.layout, config.shard_rows)
        probe = ShardedSubsequenceProbe(client=client, shard_rows=config.shard_rows,
                                        **probe.get_params())
        cluster = cluster_record(client, {"train": series["train"][0]})
    train, train_ids, _ = series["train"]
    samples, sample_ids, _ = series["samples"]
    probe.fit(train, ids=train_ids)
    res = probe.score(samples, ids=sample_ids,
                      holdout=series["holdout"][0] if "holdout" in series else None)
    if config.gate == "rate":
        record = gate.apply("subsequences.series_rate", res.series_rate.value)
    else:
        record = gate.apply("subsequences.excess_over_control",
                            None if res.excess is None else res.excess.value)
    run = SubsequencesRun(config=config, gate=record, result=res, probe=probe, series=series,
                          elapsed=time.perf_counter() - t0, cluster=cluster)
    if config.out is not None:
        run.write(config.out)
    if config.csv is not None:
        run.write_csv(config.csv)
    return run
