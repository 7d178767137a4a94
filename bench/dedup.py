"""Near-duplicate search at a million items: memaudit against a dense similarity matrix.

    python bench/dedup.py                    # 1,000,000 x 512 embeddings with planted groups
    python bench/dedup.py --n 100000         # smaller
    python bench/dedup.py --quick            # smoke test (seconds)

Data: unit vectors in d = 512 (random directions, so unrelated items have cosine ~ N(0, 1/512)),
with planted near-duplicate groups of 2 to 5 members made from one base vector plus small noise
(cosine >= ~0.97 inside a group). The truth is every pair inside a planted group.

Methods, each in its own subprocess (peak resident memory, VmHWM, is its own):

- memaudit: ``find_duplicates(x, "embedding", threshold, index="ivf")``, which also measures its own
  recall against exact search on a sample;
- dense: the imagededup approach, a full n x n cosine-similarity matrix (scikit-learn's
  ``cosine_similarity``) thresholded, run at the largest n whose matrix fits in --dense-gib,
  beside memaudit (exact and IVF) on the same subset.

Printed: wall and CPU time, peak memory, recall and precision against the planted pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import peak_rss

HERE = Path(__file__).resolve()


def make_data(folder: Path, n: int, d: int, n_groups: int, noise: float, seed: int):
    """Write x.npy (n, d) float32 unit vectors and truth.npy (pairs inside planted groups)."""
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    chunk = 100_000
    for s in range(0, n, chunk):
        b = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        x[s : s + chunk] = b / np.linalg.norm(b, axis=1, keepdims=True)
    sizes = rng.integers(2, 6, n_groups)
    members = rng.choice(n, size=int(sizes.sum()), replace=False)
    pairs = []
    start = 0
    for size in sizes:
        group = np.sort(members[start : start + size])
        start += size
        base = np.asarray(x[group[0]])
        for m in group[1:]:
            v = base + noise * rng.standard_normal(d).astype(np.float32)
            x[m] = v / np.linalg.norm(v)
        for a in range(size):
            for b in range(a + 1, size):
                pairs.append((group[a], group[b]))
    x.flush()
    del x
    np.save(folder / "truth.npy", np.array(pairs, dtype=np.int64))


def score(found: np.ndarray, truth: np.ndarray, n_sub: int | None = None) -> dict:
    if n_sub is not None:
        truth = truth[(truth < n_sub).all(axis=1)]
    t = {tuple(p) for p in truth.tolist()}
    f = {tuple(p) for p in found.tolist()}
    hit = len(t & f)
    return {"planted_pairs": len(t), "found_pairs": len(f), "recall": hit / max(1, len(t)),
            "precision": hit / max(1, len(f))}


def worker(method: str, data: Path, n_sub: int | None, threshold: float, nlist, nprobe) -> dict:
    x = np.load(data / "x.npy", mmap_mode="r")
    x = np.ascontiguousarray(x[:n_sub] if n_sub else x)
    truth = np.load(data / "truth.npy")
    if method.startswith("memaudit"):
        from memaudit.probes.duplicates import find_duplicates
    else:
        from sklearn.metrics.pairwise import cosine_similarity
    t0, c0 = time.perf_counter(), time.process_time()
    extra = {}
    if method == "memaudit-ivf":
        res = find_duplicates(x, "embedding", threshold=threshold, index="ivf", nlist=nlist or None,
                              nprobe=nprobe, recall_sample=1000, progress=False)
        found = res.pairs
        extra = {"self_reported_recall": res.recall, "groups": len(res.groups)}
    elif method == "memaudit-exact":
        res = find_duplicates(x, "embedding", threshold=threshold, progress=False)
        found = res.pairs
        extra = {"groups": len(res.groups)}
    elif method == "dense":
        sim = cosine_similarity(x)  # the imagededup approach: the full n x n matrix
        i, j = np.nonzero(sim >= threshold)
        keep = i < j
        found = np.stack([i[keep], j[keep]], axis=1)
        del sim
    else:
        raise ValueError(method)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"method": method, "n": int(x.shape[0]), "wall": wall, "cpu": cpu,
            "peak_rss": peak_rss(), **score(found, truth, n_sub if n_sub else None), **extra}


def run(method, data, n_sub, a) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", method, "--data", str(data),
           "--threshold", str(a.threshold), "--nlist", str(a.nlist), "--nprobe", str(a.nprobe)]
    if n_sub:
        cmd += ["--n-sub", str(n_sub)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        why = f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0 else ""
        raise RuntimeError(f"{method} failed {why}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def show(r: dict) -> None:
    extra = ""
    if r.get("self_reported_recall") is not None:
        extra = f", self-reported recall {r['self_reported_recall']:.4f} (1,000-query sample)"
    print(f"  {r['method']:15s} n = {r['n']:>9,}: {r['wall']:7.1f} s wall {r['cpu']:7.1f} s cpu, "
          f"peak RSS {r['peak_rss'] / 2**30:5.2f} GiB; recall {r['recall']:.4f} of "
          f"{r['planted_pairs']:,} planted pairs, precision {r['precision']:.4f}{extra}", flush=True)


def _size(b: float) -> str:
    return f"{b / 2**40:.1f} TiB" if b >= 2**40 else f"{b / 2**30:.1f} GiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--groups", type=int, default=5000, help="planted near-duplicate groups")
    p.add_argument("--noise", type=float, default=0.01, help="per-coordinate noise inside a group")
    p.add_argument("--threshold", type=float, default=0.9, help="cosine similarity at least")
    p.add_argument("--nlist", type=int, default=0, help="cells (0: sqrt(n), the default)")
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--dense-gib", type=float, default=4.0,
                   help="memory for the dense baseline's n x n float32 matrix")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tmp", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--n-sub", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.data), a.n_sub, a.threshold, a.nlist, a.nprobe)))
        return 0
    if a.quick:
        a.n, a.groups, a.dense_gib = 20_000, 300, 0.5
    import faiss

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, faiss {faiss.__version__}, "
          f"{os.cpu_count()} cpu(s)")
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_data(tmp, a.n, a.d, a.groups, a.noise, a.seed)
        print(f"data: {a.n:,} x {a.d} float32 unit vectors ({a.n * a.d * 4 / 2**30:.2f} GiB), "
              f"{a.groups:,} planted groups of 2-5, noise {a.noise}; written in "
              f"{time.perf_counter() - t0:.0f} s. Threshold: cosine >= {a.threshold}.", flush=True)
        print(f"\n== memaudit at full size (IVF cells: nlist {a.nlist or 'sqrt(n)'}, nprobe {a.nprobe}) ==")
        show(run("memaudit-ivf", tmp, None, a))
        n_dense = min(a.n, int(np.sqrt(a.dense_gib * 2**30 / 4)))
        print(f"\n== dense n x n matrix (imagededup's approach) at the largest n within "
              f"{a.dense_gib:g} GiB: n = {n_dense:,} ({n_dense**2 * 4 / 2**30:.1f} GiB matrix); "
              f"at n = {a.n:,} it would need {_size(a.n**2 * 4)} ==")
        dense = run("dense", tmp, n_dense, a)
        show(dense)
        ex = run("memaudit-exact", tmp, n_dense, a)
        show(ex)
        iv = run("memaudit-ivf", tmp, n_dense, a)
        show(iv)
        print(f"  dense / memaudit exact time: {dense['wall'] / ex['wall']:.1f}x; "
              f"dense / memaudit IVF: {dense['wall'] / iv['wall']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
