"""Search generated time series for replayed training stretches, with the training series in shards
on a Dask cluster, and check that the answer is the one-process answer.

    python examples/subsequences_on_a_cluster.py --out subseq-cluster

Builds a toy setting with a known answer: training series (random walks, two channels) written as a
folder of ``.npy`` shards, generated series among which a few replay stretches of training series
(some rescaled: the same shape under z-normalisation), and held-out series as the control. It runs
the subsequence probe through the runner on a ``LocalCluster`` of ``--workers`` processes
(``cluster="local:N"``; a running scheduler's address works the same), then in this process on the
whole array, prints which generated windows replay which training stretch and whether the two runs
agree, and writes the report (subsequences.json, subsequences.html). Needs ``memaudit[dask]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from memaudit.runners import SubsequencesConfig, run_subsequences


def make_data(folder: Path, *, n_train: int, length: int, window: int, n_shards: int, seed: int):
    """Training series in ``n_shards`` .npy files, generated and held-out series in .npy files;
    returns the planted replays: (generated series, offset, training series, offset)."""
    rng = np.random.default_rng(seed)
    train = np.cumsum(rng.normal(size=(n_train, length, 2)), axis=1)
    samples = np.cumsum(rng.normal(size=(12, length, 2)), axis=1)
    holdout = np.cumsum(rng.normal(size=(12, length, 2)), axis=1)
    planted = []
    for k, g in enumerate((1, 4, 7, 10)):
        t = int(rng.integers(n_train))
        o_t = int(rng.integers(length - window))
        o_g = int(rng.integers(length - window))
        scale = 1.0 if k % 2 == 0 else 2.5  # a rescaled replay: the same shape
        samples[g, o_g : o_g + window] = train[t, o_t : o_t + window] * scale + 3.0 * k
        planted.append((g, o_g, t, o_t))
    shards = folder / "train-shards"
    shards.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(train, n_shards)):
        np.save(shards / f"part-{i:03d}.npy", part)
    np.save(folder / "train.npy", train)
    np.save(folder / "samples.npy", samples)
    np.save(folder / "holdout.npy", holdout)
    return planted


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--window", type=int, default=48)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="subseq-cluster")
    a = p.parse_args(argv)
    out = Path(a.out)
    planted = make_data(out / "data", n_train=a.n_train, length=a.length, window=a.window,
                        n_shards=a.shards, seed=a.seed)
    common = dict(samples=str(out / "data" / "samples.npy"),
                  holdout=str(out / "data" / "holdout.npy"), window=a.window, progress=False)
    run = run_subsequences(SubsequencesConfig(train=str(out / "data" / "train-shards"),
                                              cluster=f"local:{a.workers}", out=str(out), **common))
    one = run_subsequences(SubsequencesConfig(train=str(out / "data" / "train.npy"), **common))
    res = run.result
    print(res.summary())
    rec = run.resolved_config()["cluster"]
    print(f"searched on {rec['workers']} workers, {rec['shards']['train']['n_shards']} shards")
    for g, o_g, t, o_t in planted:
        at = np.flatnonzero((res.query_series == g) & (res.query_offset == o_g))[0]
        print(f"generated {g}@{o_g} replays training {t}@{o_t}: matched {res.match_id[at]}, "
              f"d1/d2 {res.ratio[at]:.3g}, memorized {bool(res.memorized[at])}")
    same = (np.array_equal(res.d1, one.result.d1, equal_nan=True)
            and np.array_equal(res.match_id, one.result.match_id)
            and np.array_equal(res.d2, one.result.d2, equal_nan=True))
    print(f"the same as the one-process search, bit for bit: {same}")
    print(f"report: {run.paths['html']}")
    return run, one, planted


if __name__ == "__main__":
    main()
