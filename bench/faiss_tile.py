"""FAISS's database tile (``faiss.cvar.distance_compute_blas_database_bs``) on a quiet and a busy
machine: the measurement behind issue 18's item 1 (thread and tile settings chosen by measurement).

``faiss.knn`` (memaudit's default exact backend) computes distances tile by tile: 1,024 reference
rows at a time by default. This script times the same exact top-2 search with the default tile and
with 16,384 rows, alternately in one process (median of ``--reps``), once on a quiet machine and
once with another process spinning on one core, and prints wall time, CPU time, the load average
and the ratio default / 16384 (above 1: the larger tile is faster). Both tiles must give identical
neighbours.

    python bench/faiss_tile.py            # d = 64, 256, 1024, 3072
    python bench/faiss_tile.py --quick    # a small setting (seconds)
    python bench/faiss_tile.py --blas     # FAISS's SIMD scan against its GEMM, by query count

``--blas`` is the measurement behind ``memaudit.neighbors.FAISS_BLAS_ROWS``: FAISS takes its
one-query-at-a-time SIMD scan instead of the GEMM below ``distance_compute_blas_threshold``
(rows x d < 128,000 in FAISS 1.15, rows < 20 before); this times both paths (threshold forced to
the largest int and to 0) for 2 to 400 queries, median of ``--reps``, and checks that they find
the same neighbours.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _util import BusyNeighbour


def _time(faiss, q, r, tile, k=2):
    faiss.cvar.distance_compute_blas_database_bs = tile
    w, c = time.perf_counter(), time.process_time()
    d, i = faiss.knn(q, r, k)
    return time.perf_counter() - w, time.process_time() - c, i


def measure(faiss, q, r, tiles, reps):
    """Median (wall, cpu) per tile, timed alternately; the neighbours of each tile."""
    times = {t: [] for t in tiles}
    found = {}
    for _ in range(reps):
        for t in tiles:
            wall, cpu, i = _time(faiss, q, r, t)
            times[t].append((wall, cpu))
            found[t] = i
    return {t: tuple(np.median(np.array(v), axis=0)) for t, v in times.items()}, found


def blas_crossover(faiss, reps, quick):
    """Median wall time of FAISS's scan and of its GEMM for a growing number of queries."""
    rng = np.random.default_rng(0)
    dims = (64, 256) if quick else (64, 256, 1024, 3072)
    counts = (4, 16, 64) if quick else (2, 6, 8, 11, 16, 64, 256, 400)
    users = faiss.cvar.distance_compute_blas_threshold
    print(f"faiss {faiss.__version__}, {os.cpu_count()} cores, omp threads "
          f"{faiss.omp_get_max_threads()}, default blas threshold {users}; load average "
          f"{os.getloadavg()[0]:.2f}")
    try:
        for d in dims:
            r = rng.random(((1 << 23 if quick else 1 << 27) // (4 * d), d), dtype=np.float32)
            for nq in counts:
                q = rng.random((nq, d), dtype=np.float32)
                times, found = {}, {}
                for path, thr in (("scan", 2**31 - 1), ("gemm", 0)):
                    faiss.cvar.distance_compute_blas_threshold = thr
                    ws = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        found[path] = faiss.knn(q, r, 10)[1]
                        ws.append(time.perf_counter() - t0)
                    times[path] = float(np.median(ws))
                # the two paths round differently: near-ties may swap, so report, do not fail
                agree = float((found["scan"] == found["gemm"]).mean())
                print(f"d={d:5d} n={len(r):7d} queries={nq:4d}: scan {times['scan'] * 1e3:8.1f} ms"
                      f"  gemm {times['gemm'] * 1e3:8.1f} ms  scan / gemm "
                      f"{times['scan'] / times['gemm']:.2f}  same neighbours {agree:.3f}",
                      flush=True)
    finally:
        faiss.cvar.distance_compute_blas_threshold = users
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small setting that runs in seconds")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions (default 3)")
    p.add_argument("--blas", action="store_true", help="time FAISS's SIMD scan against its GEMM "
                   "by query count (the measurement behind FAISS_BLAS_ROWS) and exit")
    p.add_argument("--tmp", help="unused (the bench test passes it to every script)")
    args = p.parse_args(argv)
    import faiss

    if args.blas:
        blas_crossover(faiss, args.reps, args.quick)
        return
    default = faiss.cvar.distance_compute_blas_database_bs
    tiles = (default, 16384)
    cases = ([(64, 20_000), (256, 20_000)] if args.quick else
             [(64, 500_000), (256, 200_000), (1024, 50_000), (3072, 20_000)])
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {os.cpu_count()} cores, omp threads "
          f"{faiss.omp_get_max_threads()}, default database tile {default} rows")
    try:
        for d, n in cases:
            r = rng.random((n, d), dtype=np.float32)
            q = rng.random((1000, d), dtype=np.float32)
            for busy in (False, True):
                with BusyNeighbour(busy):
                    if busy:
                        time.sleep(0.5)
                    med, found = measure(faiss, q, r, tiles, args.reps)
                    load = os.getloadavg()[0]
                same = all(np.array_equal(found[tiles[0]], found[t]) for t in tiles)
                (w0, c0), (w1, c1) = med[tiles[0]], med[tiles[1]]
                print(f"d={d:5d} n={n:7d} {'busy ' if busy else 'quiet'}: tile {tiles[0]}: wall "
                      f"{w0:.3f} s cpu {c0:.3f} s | tile {tiles[1]}: wall {w1:.3f} s cpu {c1:.3f} s "
                      f"| ratio default / {tiles[1]}: wall {w0 / w1:.2f} cpu {c0 / c1:.2f} | load "
                      f"{load:.2f}")
                if not same:
                    raise SystemExit("the two tiles gave different neighbours")
        print(f"tile {tiles[1]} agrees with memaudit's default tile: identical neighbours in "
              "every case")
    finally:
        faiss.cvar.distance_compute_blas_database_bs = default


if __name__ == "__main__":
    main()
