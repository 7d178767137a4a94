"""Peak memory of an audit of an image folder, at two folder sizes: it must not grow with the folder.

    nice -n 10 python bench/image_folder_rss.py --sizes 5000 50000 --side 16 --root /tmp/rss

Generates folders of N random RGB PNGs of SIDE x SIDE pixels (once; a folder already complete is
reused), with a bounded pool of processes, and a fixed set of 200 generated samples (.npy, float32
in [0, 1], 20 of them copies of training images). Each audit runs in a fresh process
(``memaudit.runners.run_audit``, no progress bars, 200 bootstrap resamples) and reports its peak
resident memory (VmHWM), wall and CPU time, beside the load average of the machine. With
``--compare PATH`` the same audits also run with the memaudit found at PATH (e.g. a checkout that
reads folders whole into memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_SAMPLES, N_COPIES = 200, 20

_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {bench!r})
from _util import peak_rss
t0 = time.perf_counter(); c0 = os.times()
from memaudit.runners import AuditConfig, run_audit
run = run_audit(AuditConfig(train={train!r}, samples={samples!r}, out={out!r}, progress=False,
                            n_bootstrap=200))
c1 = os.times()
r = run.report.nn_ratio
print(json.dumps({{"peak_rss": peak_rss(), "wall": time.perf_counter() - t0,
                  "cpu": (c1.user - c0.user) + (c1.system - c0.system),
                  "n_memorized": int(r.memorized.sum()), "n_train": len(run.report.datasets["train"])}}))
"""


def _write_chunk(args):
    folder, start, stop, side, seed = args
    from PIL import Image

    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            folder / f"{i // 1000:03d}" / f"img_{i:06d}.png", compress_level=1)
    return stop - start


def make_folder(root: Path, n: int, side: int, workers: int, seed: int = 0) -> Path:
    folder = root / f"train_{n}_{side}"
    done = folder / ".complete"
    if done.exists():
        return folder
    for k in range(0, (n + 999) // 1000):
        (folder / f"{k:03d}").mkdir(parents=True, exist_ok=True)
    chunks = [(folder, s, min(n, s + 1000), side, seed) for s in range(0, n, 1000)]
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        written = sum(pool.imap_unordered(_write_chunk, chunks))
    done.write_text(str(written))
    print(f"generated {written} PNGs in {folder} in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def make_samples(root: Path, folder: Path, side: int, seed: int = 1) -> Path:
    """200 samples: 180 random images and 20 copies of the folder's first images (as [0, 1])."""
    from PIL import Image

    path = root / f"samples_{side}.npy"
    rng = np.random.default_rng(seed)
    x = rng.random((N_SAMPLES, side, side, 3)).astype(np.float32)
    files = sorted(folder.rglob("*.png"))[:N_COPIES]
    for i, f in enumerate(files):
        x[i] = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0
    np.save(path, x)
    return path


def audit(folder: Path, samples: Path, out: Path, package: Path) -> dict:
    code = _CHILD.format(bench=str(HERE), train=str(folder), samples=str(samples), out=str(out))
    env = dict(os.environ, PYTHONPATH=str(package), OMP_NUM_THREADS="1")
    load = os.getloadavg()[0]
    # run outside any checkout: ``python -c`` puts the working folder first on sys.path
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=out.parent)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    got["load_before"] = load
    got["load_after"] = os.getloadavg()[0]
    return got


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--side", type=int, default=16)
    p.add_argument("--root", type=Path, default=Path("/tmp/memaudit-rss"))
    p.add_argument("--workers", type=int, default=2, help="processes generating the PNGs")
    p.add_argument("--compare", type=Path, default=None,
                   help="also audit with the memaudit package found under this folder")
    p.add_argument("--compare-sizes", type=int, nargs="+", default=None,
                   help="the sizes audited with --compare (default: --sizes)")
    args = p.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    folders = {n: make_folder(args.root, n, args.side, args.workers) for n in args.sizes}
    samples = make_samples(args.root, folders[min(args.sizes)], args.side)
    packages = [("this", ROOT)] + ([("compare", args.compare)] if args.compare else [])
    print(f"{'memaudit':>8} {'images':>7} {'peak RSS':>9} {'wall s':>7} {'CPU s':>6} "
          f"{'load':>9} {'found':>5}")
    for label, package in packages:
        for n in (args.compare_sizes or args.sizes) if label == "compare" else args.sizes:
            r = audit(folders[n], samples, args.root / f"out_{label}_{n}", package)
            print(f"{label:>8} {r['n_train']:>7} {r['peak_rss'] / 2**20:>7.0f} MB {r['wall']:>7.1f} "
                  f"{r['cpu']:>6.1f} {r['load_before']:>4.1f}-{r['load_after']:<4.1f} "
                  f"{r['n_memorized']:>3}/{N_COPIES}", flush=True)


if __name__ == "__main__":
    main()
