"""In-process exact search vs the same search on a Dask LocalCluster of 1, 2 and 4 workers.

One reference (an ``.npy`` file, memory-mapped, cut into row-range shards) and one query set; the
in-process run is ``memaudit.knn`` on the whole file, each cluster run is
``memaudit.distributed.sharded_knn`` on a ``LocalCluster(n, threads_per_worker=1)`` over the
loopback (one cluster per worker count, started before its runs). With ``--repeats R`` the
in-process and cluster runs alternate R times and the medians (wall and CPU) and their ratios are
printed at the end; ``--busy`` keeps another process spinning on one core. Every cluster result is
checked equal (bit for bit) to the in-process one. Printed per run: wall time of the search (the
cluster's start-up apart), CPU time (this process, plus the workers' own, read on each worker), the
load average before and after, the overhead (wall over the in-process wall) and the per-shard rate
(query-by-reference rows per second of one worker's CPU) that docs/scale.md's cluster model uses.

    python bench/distributed.py --n 2000000 --d 256 --queries 1000 --k 10 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# run as `python bench/distributed.py`, this folder comes first on sys.path and this file would
# shadow the `distributed` package: take the folder off
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _bench_util():
    """bench/_util.py, loaded by its path (this folder is off sys.path, see above; the workers'
    processes re-import this file without it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_util", _HERE / "_util.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_reference(path: Path, n: int, d: int, seed: int) -> None:
    """Gaussian rows written in 64 MiB pieces (never held whole)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    step = max(1, (64 << 20) // (4 * d))
    for a in range(0, n, step):
        out[a : a + step] = rng.standard_normal((min(step, n - a), d), dtype=np.float32)
    out.flush()
    del out


def _cpu_of_workers(client) -> float:
    return float(sum(client.run(time.process_time).values()))


def merge_rate(n_queries: int = 2000, n_shards: int = 64, k: int = 50) -> float:
    """Candidates per CPU-second of the client's merge (memaudit.distributed.merge_topk), folding
    the k-lists of ``n_shards`` shards one at a time into a running top-k, as search() does."""
    from memaudit.distributed import merge_topk

    rng = np.random.default_rng(2)
    parts = [(np.sort(rng.random((n_queries, k)), axis=1),
              rng.integers(0, 2**40, size=(n_queries, k))) for _ in range(n_shards)]
    c0 = time.process_time()
    bd, bi = np.full((n_queries, 0), np.inf), np.full((n_queries, 0), -1, dtype=np.int64)
    for d_s, i_s in parts:
        bd, bi = merge_topk(np.concatenate([bd, d_s], axis=1), np.concatenate([bi, i_s], axis=1),
                            k)
    return n_queries * n_shards * k / (time.process_time() - c0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="reference rows")
    ap.add_argument("--d", type=int, default=256, help="features")
    ap.add_argument("--queries", type=int, default=1000, help="query rows")
    ap.add_argument("--k", type=int, default=10, help="neighbours per query")
    ap.add_argument("--shard-rows", type=int, default=None,
                    help="rows per shard (default: n / 8)")
    ap.add_argument("--batch-rows", type=int, default=None,
                    help="queries per batch (default: all in one batch)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=1,
                    help="in-process and cluster runs alternate this many times per worker "
                    "count; medians are printed at the end")
    ap.add_argument("--busy", action="store_true",
                    help="another process spins on one core throughout")
    ap.add_argument("--dir", default=None, help="folder for the reference file (default: a "
                    "temporary folder, removed after)")
    ap.add_argument("--merge", action="store_true", help="only time the client's merge "
                    "(2000 queries, 64 shards, k=50) and exit")
    args = ap.parse_args(argv)
    if args.merge:
        print(f"merge: {merge_rate():.3g} candidates per CPU-second (2000 queries, 64 shards, "
              "k=50)")
        return

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    util = _bench_util()
    BusyNeighbour, load_average = util.BusyNeighbour, util.load_average
    import distributed

    from memaudit import knn
    from memaudit.distributed import sharded_knn
    from memaudit.shards import ShardedSet

    tmp = None if args.dir else tempfile.TemporaryDirectory()
    folder = Path(args.dir or tmp.name)
    path = folder / f"reference_{args.n}x{args.d}.npy"
    if not path.exists():
        _write_reference(path, args.n, args.d, seed=0)
    ref = np.load(path, mmap_mode="r")
    q = np.random.default_rng(1).standard_normal((args.queries, args.d), dtype=np.float32)
    shard_rows = args.shard_rows or -(-args.n // 8)
    batch = args.batch_rows or args.queries
    sharded = ShardedSet.from_npy(path, "reference", shard_rows)
    work = args.n * args.queries  # query-by-reference pairs scored
    print(f"reference {args.n} x {args.d} float32 ({ref.nbytes / 2**30:.2f} GiB, memory-mapped), "
          f"{args.queries} queries, k={args.k}, {len(sharded.shards)} shards of {shard_rows} rows, "
          f"batches of {batch} queries, {os.cpu_count()} cores")

    def in_process():
        t0, c0 = time.perf_counter(), time.process_time()
        got = knn(q, ref, k=args.k, progress=False)
        return got, time.perf_counter() - t0, time.process_time() - c0

    def row(name, wall, cpu, base_wall, start, load_a):
        print(f"{name:<16}{wall:9.2f}{cpu:9.2f}{wall / base_wall:10.2f}"
              f"{work / cpu:14.3g}{start:9.2f}  {load_a:.2f} -> {os.getloadavg()[0]:.2f}",
              flush=True)

    print(f"{args.repeats} repeat(s), in-process and cluster runs alternating; load average "
          f"{load_average()}")
    print(f"{'run':<16}{'wall s':>9}{'cpu s':>9}{'overhead':>10}{'pairs/cpu-s':>14}"
          f"{'start s':>9}  load before -> after")
    summary = []
    with BusyNeighbour(args.busy):
        for n_workers in args.workers:
            s0 = time.perf_counter()
            cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
            client = distributed.Client(cluster)
            client.wait_for_workers(n_workers, timeout=120)
            client.run(__import__, "memaudit.distributed")  # imports (faiss, numpy): start-up
            start = time.perf_counter() - s0
            runs = {"in process": [], "cluster": []}
            try:
                for _ in range(args.repeats):
                    load_a = os.getloadavg()[0]
                    want, base_wall, base_cpu = in_process()
                    runs["in process"].append((base_wall, base_cpu))
                    row("in process", base_wall, base_cpu, base_wall, 0.0, load_a)
                    load_a = os.getloadavg()[0]
                    w0, t0, c0 = _cpu_of_workers(client), time.perf_counter(), time.process_time()
                    got = sharded_knn(q, sharded, k=args.k, client=client, batch_rows=batch)
                    wall = time.perf_counter() - t0
                    cpu = time.process_time() - c0 + _cpu_of_workers(client) - w0
                    same = (np.array_equal(got.indices, want.indices)
                            and np.array_equal(got.distances, want.distances))
                    if not same:
                        raise SystemExit(f"{n_workers} workers: the result differs from the "
                                         "in-process search")
                    runs["cluster"].append((wall, cpu))
                    row(f"cluster {n_workers}", wall, cpu, base_wall, start, load_a)
            finally:
                client.close()
                cluster.close()
            med = {key: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                   for key, v in runs.items()}
            summary.append((n_workers, med))
    print(f"\nmedians over {args.repeats} repeat(s){' (busy neighbour)' if args.busy else ''}; "
          f"load average at the end {load_average()}")
    for n_workers, med in summary:
        (bw, bc), (cw, cc) = med["in process"], med["cluster"]
        print(f"  {n_workers} worker(s): in process {bw:.2f} s wall / {bc:.2f} s CPU, cluster "
              f"{cw:.2f} s / {cc:.2f} s: {cw / bw:.2f}x wall, {cc / bc:.2f}x CPU")
    print("every cluster result equals the in-process one (indices and float64 distances)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
