"""The default end-to-end audit against the minimal scikit-learn script that computes the same rates.

    python bench/audit.py                       # 60,000 x 1024 train, 6,000 samples, 6,000 holdout
    python bench/audit.py --repeats 3 --busy    # also with another process spinning on one core
    python bench/audit.py --quick               # a small smoke run (seconds)

Data (float32, seeded): a Gaussian training set, held-out items from the same distribution, and
generated samples of which 5% are training items plus small noise (copies the audit must flag).

Methods, each in its own subprocess (imports before the clock), alternating within each repeat:

- memaudit: ``memaudit.nn_ratio(samples, train, holdout=holdout)`` with its defaults: exact
  search, the d1/d2 ratio and the Carlini criterion (k = 50) for the samples and the held-out
  control, bootstrap intervals, the excess over control and the closer-to-train share;
- sklearn: the minimal script that computes the same rates without intervals:
  ``NearestNeighbors(n_neighbors=50, algorithm="brute")`` on the training set, queried with the
  samples and the holdout, d1/d2 < 1/3 and d1 / mean(d_1..d_50) < 1/2, and a 1-NN search of the
  samples in the holdout for the closer-to-train share.

Printed: wall and CPU time per run, the medians, the ratio sklearn / memaudit (wall and CPU), the
load average before and after, and whether both flag the same samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import BusyNeighbour, load_average

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


def make_data(folder: Path, n_train: int, n_samples: int, n_holdout: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n_train, d), dtype=np.float32)
    samples = rng.standard_normal((n_samples, d), dtype=np.float32)
    n_copy = n_samples // 20
    src = rng.choice(n_train, size=n_copy, replace=False)
    samples[:n_copy] = train[src] + 0.01 * rng.standard_normal((n_copy, d), dtype=np.float32)
    np.save(folder / "train.npy", train)
    np.save(folder / "samples.npy", samples)
    np.save(folder / "holdout.npy", rng.standard_normal((n_holdout, d), dtype=np.float32))


def worker(method: str, folder: Path) -> dict:
    train = np.load(folder / "train.npy")
    samples = np.load(folder / "samples.npy")
    holdout = np.load(folder / "holdout.npy")
    if method == "memaudit":
        import memaudit
    else:
        from sklearn.neighbors import NearestNeighbors
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "memaudit":
        res = memaudit.nn_ratio(samples, train, holdout=holdout, progress=False)
        flags = res.memorized
        rates = [res.rate.value, res.control.rate.value, res.carlini_rate.value,
                 res.closer_to_train.value]
    else:
        nn = NearestNeighbors(n_neighbors=50, algorithm="brute").fit(train)
        ds, _ = nn.kneighbors(samples)
        dh, _ = nn.kneighbors(holdout)
        flags = ds[:, 0] / ds[:, 1] < 1 / 3
        control = dh[:, 0] / dh[:, 1] < 1 / 3
        carlini = ds[:, 0] / ds.mean(axis=1) < 0.5
        d_hold, _ = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(holdout).kneighbors(samples)
        closer = ds[:, 0] < d_hold[:, 0]
        rates = [flags.mean(), control.mean(), carlini.mean(), closer.mean()]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(folder / f"flags-{method}.npy", np.asarray(flags))
    return {"method": method, "wall": wall, "cpu": cpu, "rates": [float(r) for r in rates]}


def run_worker(method: str, folder: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(HERE), "--worker", method, "--data", str(folder)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(folder: Path, repeats: int, busy: bool) -> None:
    methods = ("memaudit", "sklearn")
    print(f"\n== {'one core busy (a spinning process)' if busy else 'no added load'}; "
          f"load average {load_average()} ==", flush=True)
    with BusyNeighbour(busy):
        runs = {m: [] for m in methods}
        for rep in range(repeats):
            for m in methods:
                res = run_worker(m, folder)
                runs[m].append(res)
                print(f"  [{rep + 1}/{repeats}] {m:9s} {res['wall']:7.2f} s wall {res['cpu']:7.2f} s cpu  "
                      f"rates (f_mem, control, Carlini, closer) "
                      f"{', '.join(f'{r:.4f}' for r in res['rates'])}", flush=True)
    wall = {m: statistics.median(r["wall"] for r in runs[m]) for m in methods}
    cpu = {m: statistics.median(r["cpu"] for r in runs[m]) for m in methods}
    same = bool(np.array_equal(np.load(folder / "flags-memaudit.npy"),
                               np.load(folder / "flags-sklearn.npy")))
    print(f"  load average after: {load_average()}")
    print(f"  medians: memaudit {wall['memaudit']:.2f} s wall / {cpu['memaudit']:.2f} s cpu, "
          f"sklearn {wall['sklearn']:.2f} s / {cpu['sklearn']:.2f} s")
    print(f"  sklearn / memaudit: {wall['sklearn'] / wall['memaudit']:.2f}x wall, "
          f"{cpu['sklearn'] / cpu['memaudit']:.2f}x cpu   (goal >= 1.6x); same flagged samples: {same}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=60_000)
    p.add_argument("--n-samples", type=int, default=6_000)
    p.add_argument("--n-holdout", type=int, default=6_000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy", action="store_true", help="also run with one core kept busy")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.data))))
        return 0
    if a.quick:
        a.n_train, a.n_samples, a.n_holdout, a.d, a.repeats = 2000, 200, 200, 64, 1
    import sklearn

    import memaudit

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, memaudit {memaudit.__version__}, "
          f"scikit-learn {sklearn.__version__}, {os.cpu_count()} cpu(s); train {a.n_train:,} x {a.d}, "
          f"{a.n_samples:,} samples, {a.n_holdout:,} holdout")
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        folder = Path(tmp)
        make_data(folder, a.n_train, a.n_samples, a.n_holdout, a.d, a.seed)
        bench(folder, a.repeats, busy=False)
        if a.busy:
            bench(folder, a.repeats, busy=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
