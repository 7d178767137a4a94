"""Set-against-set subsequence search: memaudit against stumpy.match and tslearn's DTW search.

    python bench/subsequence.py                 # 100 series x 10,000 points, 1,000 queries of 128
    python bench/subsequence.py --quick         # smoke test (seconds)
    python bench/subsequence.py --stride-cost 10000   # the probe at stride 1 vs stride L only
    python bench/subsequence.py --stride1 10000       # stride 1: diagonal vs GEMM engine vs stumpy

``--stride-cost N`` times ``SubsequenceProbe`` on the same training series with generated series
of N points in all (random walks holding 20 training stretches of L steps replayed at random
offsets), at stride L (non-overlapping windows, the old command default) and at stride 1 (every
window, the default now), and counts the replays each finds at the right series and offset.

Data: 100 training series of 10,000 points (1,000,000 points; random walks with a random sinusoid
added, so that shapes repeat only by chance), and 1,000 query windows of length 128: half are
training stretches at known positions (with small noise, and half of those rescaled by a random
gain and offset), half are fresh random walks.

Methods, on the same inputs in one process:

- memaudit: ``subsequence_search`` (z-normalised; the best match and the best match outside an
  exclusion zone of ceil(128 / 4) steps, i.e. stumpy's), over every window of every series;
- stumpy.match: z-normalised, one call per query over the training series joined by NaN separators
  (stumpy gives windows that contain a NaN an infinite distance, so no match straddles two series),
  ``max_matches=2`` (the same two matches); run on ``--stumpy-queries`` queries (default all) after
  one warm-up call that compiles its numba code;
- tslearn: ``dtw_subsequence_path`` (DTW, a different distance) per query and series, on
  ``--dtw-queries`` queries (default 10), timed per query and scaled to all queries.

Printed: time per method, the ratios, and how often the methods agree on the best match.

``--stride1 N`` compares the engines on the generated series of ``--stride-cost`` (N points, every
window at stride 1, z-normalised; ``--raw`` for raw distances): memaudit's diagonal engine
(``engine="diagonal"``, the default at stride 1), memaudit's GEMM engine (``engine="gemm"``) and
stumpy's AB-join ``stumpy.stump(generated, L, training joined by NaN separators,
ignore_trivial=False)`` (the nearest training window of every generated window: d1 only, no second
match outside an exclusion zone), run alternately for ``--rounds`` rounds in one process, one
thread each (numba and BLAS), with CPU time beside wall time and the load average. Run it under
``nice -n 10`` on a shared machine and read the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from memaudit.probes.subsequence import subsequence_search  # noqa: E402


def make_data(n_series, length, n_queries, L, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    train = [np.cumsum(rng.standard_normal(length)) + 3 * np.sin(2 * np.pi * t / rng.uniform(50, 500))
             for _ in range(n_series)]
    queries = np.empty((n_queries, L))
    truth = np.full((n_queries, 2), -1)
    for i in range(n_queries):
        if i % 2 == 0:
            s, o = rng.integers(n_series), rng.integers(length - L + 1)
            q = train[s][o : o + L] + 0.05 * rng.standard_normal(L)
            if i % 4 == 0:
                q = rng.uniform(0.5, 2) * q + rng.uniform(-10, 10)
            queries[i], truth[i] = q, (s, o)
        else:
            queries[i] = np.cumsum(rng.standard_normal(L))
    return train, queries, truth


def stride_cost(train, n_points, L, seed):
    from memaudit.probes.subsequence import SubsequenceProbe

    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    per = 2000
    fake = np.cumsum(rng.standard_normal((max(1, n_points // per), per)), axis=1)
    plants = []
    for k in range(20):
        g, p = k % fake.shape[0], int(rng.integers(per - L + 1))
        s, o = int(rng.integers(len(train))), int(rng.integers(len(train[0]) - L + 1))
        if any(g == g2 and abs(p - p2) < L for g2, p2, _, _ in plants):
            continue
        fake[g, p : p + L] = train[s][o : o + L]
        plants.append((g, p, s, o))
    print(f"training: {len(train)} series x {len(train[0]):,} points; generated: {fake.shape[0]} "
          f"series x {per:,} points, {len(plants)} replays of {L} steps at random offsets")
    probe = SubsequenceProbe(L, n_bootstrap=100, progress=False)
    probe.fit(train)
    times = {}
    for stride in (L, 1):
        probe.stride = stride
        t0, c0 = time.perf_counter(), time.process_time()
        res = probe.score(fake)
        times[stride] = (time.perf_counter() - t0, time.process_time() - c0)
        hit = {(int(g), int(p)): m for g, p, m in zip(res.query_series, res.query_offset,
                                                      res.match_id) if m}
        found = sum(hit.get((g, p)) == f"{s}@{o}" and
                    bool(res.memorized[(res.query_series == g) & (res.query_offset == p)][0])
                    for g, p, s, o in plants)
        print(f"stride {stride}: {res.d1.size:,} windows, {times[stride][0]:.2f} s wall, "
              f"{times[stride][1]:.2f} s CPU; replays flagged at the right series and offset: "
              f"{found}/{len(plants)}")
    print(f"cost of stride 1 / stride {L}: {times[1][0] / times[L][0]:.1f}x wall, "
          f"{times[1][1] / times[L][1]:.1f}x CPU")
    return 0


def stride1(train, n_points, L, seed, rounds, normalize):
    import numba
    import stumpy
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    per = 2000
    fake = np.cumsum(rng.standard_normal((max(1, n_points // per), per)), axis=1)
    for k in range(20):  # replays, as in --stride-cost
        g, p = k % fake.shape[0], int(rng.integers(per - L + 1))
        s, o = int(rng.integers(len(train))), int(rng.integers(len(train[0]) - L + 1))
        fake[g, p : p + L] = train[s][o : o + L]
    q = np.concatenate([np.lib.stride_tricks.sliding_window_view(f, L) for f in fake])[:, :, None]
    tr = [t[:, None] for t in train]
    zone = int(np.ceil(L / 4))
    joined = np.concatenate([np.concatenate([t, [np.nan]]) for t in train])
    starts = np.cumsum([0] + [len(t) + 1 for t in train])[:-1]
    n_pairs = q.shape[0] * sum(len(t) - L + 1 for t in train)
    mode = "z-normalised" if normalize else "raw"
    print(f"stride 1, {mode}: {q.shape[0]:,} generated windows ({fake.shape[0]} series x {per:,} "
          f"points) x {n_pairs // q.shape[0]:,} training windows = {n_pairs:.3g} pairs; window {L}, "
          f"zone {zone}; one thread; load average {os.getloadavg()}")
    # warm-ups: numba compilation (memaudit's kernels are cached on disk, stumpy's are not)
    subsequence_search(q[:L], tr[:1], L, normalize=normalize, engine="diagonal")
    stumpy.stump(fake[0][: 4 * L], L, joined[: 8 * L], ignore_trivial=False, normalize=normalize)

    def run_memaudit(engine):
        return subsequence_search(q, tr, L, normalize=normalize, exclusion_zone=zone, engine=engine)

    def run_stumpy():
        return np.concatenate([stumpy.stump(f, L, joined, ignore_trivial=False, normalize=normalize)
                               for f in fake])

    methods = {"memaudit diagonal": lambda: run_memaudit("diagonal"),
               "memaudit gemm": lambda: run_memaudit("gemm"), "stumpy.stump AB-join": run_stumpy}
    times = {k: [] for k in methods}
    out = {}
    for r in range(rounds):
        for name, fn in methods.items():
            la = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = fn()
            w, c = time.perf_counter() - t0, time.process_time() - c0
            times[name].append((w, c))
            print(f"  round {r + 1} {name}: {w:.2f} s wall, {c:.2f} s CPU "
                  f"({c / n_pairs * 1e9:.2f} ns CPU per pair), load {la:.1f}", flush=True)
    med = {k: (float(np.median([t[0] for t in v])), float(np.median([t[1] for t in v])))
           for k, v in times.items()}
    base = med["memaudit diagonal"]
    for k, (w, c) in med.items():
        print(f"{k}: median {w:.2f} s wall, {c:.2f} s CPU; ratio to the diagonal engine "
              f"{w / base[0]:.2f}x wall, {c / base[1]:.2f}x CPU")
    d, g, st = out["memaudit diagonal"], out["memaudit gemm"], out["stumpy.stump AB-join"]
    same = all(np.array_equal(d[k], g[k]) for k in ("series1", "offset1", "series2", "offset2"))
    close = np.allclose(d["d1"], g["d1"], rtol=1e-12, atol=1e-12) and \
        np.allclose(d["d2"], g["d2"], rtol=1e-12, atol=1e-12)
    pos = st[:, 1].astype(int)
    s_st = np.searchsorted(starts, pos, side="right") - 1
    agree = ((s_st == d["series1"]) & (pos - starts[s_st] == d["offset1"])) | \
        np.isclose(st[:, 0].astype(float), d["d1"], atol=1e-6)
    print(f"diagonal vs gemm: same matches (first and second) {same}, same distances {close}; "
          f"stumpy's nearest window agrees with memaudit's d1 on {agree.sum():,}/{agree.size:,}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=100)
    p.add_argument("--length", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--stumpy-queries", type=int, default=None, help="default: all queries")
    p.add_argument("--dtw-queries", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="10 series of 2,000 points, 40 queries")
    p.add_argument("--tmp", help="unused (the other bench scripts take it)")
    p.add_argument("--stride-cost", type=int, metavar="N",
                   help="only time the probe at stride 1 against stride L on N generated points")
    p.add_argument("--stride1", type=int, metavar="N",
                   help="only compare the engines and stumpy's AB-join at stride 1 on N generated points")
    p.add_argument("--rounds", type=int, default=2, help="--stride1: alternating rounds")
    p.add_argument("--raw", action="store_true", help="--stride1: raw distances")
    a = p.parse_args(argv)
    if a.quick:
        a.series, a.length, a.queries, a.dtw_queries = 10, 2000, 40, 2
    L = a.window
    zone = int(np.ceil(L / 4))
    train, queries, truth = make_data(a.series, a.length, a.queries, L, a.seed)
    n_points = a.series * a.length
    if a.stride_cost:
        return stride_cost(train, a.stride_cost, L, a.seed)
    if a.stride1:
        return stride1(train, a.stride1, L, a.seed, a.rounds, not a.raw)
    print(f"training: {a.series} series x {a.length:,} points = {n_points:,} points; "
          f"{a.queries:,} query windows of length {L}; exclusion zone {zone}")

    t0 = time.perf_counter()
    c0 = time.process_time()
    found = subsequence_search(queries[:, :, None], [s[:, None] for s in train], L,
                               normalize=True, exclusion_zone=zone)
    t_mem = time.perf_counter() - t0
    c_mem = time.process_time() - c0
    planted = truth[:, 0] >= 0
    hit = (found["series1"][planted] == truth[planted, 0]) & (found["offset1"][planted] == truth[planted, 1])
    print(f"memaudit subsequence_search: {t_mem:.2f} s wall, {c_mem:.2f} s CPU "
          f"({t_mem / a.queries * 1e3:.2f} ms per query); planted stretches found at the right "
          f"series and offset: {hit.sum()}/{planted.sum()}")

    import stumpy

    joined = np.concatenate([np.concatenate([s, [np.nan]]) for s in train])
    starts = np.cumsum([0] + [len(s) + 1 for s in train])[:-1]
    stumpy.match(queries[0], joined[: 10 * L], max_distance=np.inf, max_matches=2)  # numba compile
    nq = a.queries if a.stumpy_queries is None else min(a.stumpy_queries, a.queries)
    agree1 = agree2 = 0
    t0 = time.perf_counter()
    for i in range(nq):
        m = stumpy.match(queries[i], joined, max_distance=np.inf, max_matches=2)
        pos = int(m[0][1])
        s = int(np.searchsorted(starts, pos, side="right") - 1)
        agree1 += (s == found["series1"][i] and pos - starts[s] == found["offset1"][i]) or \
            bool(np.isclose(float(m[0][0]), found["d1"][i], atol=1e-6))
        agree2 += bool(np.isclose(float(m[1][0]), found["d2"][i], atol=1e-5))
    t_st = time.perf_counter() - t0
    t_st_all = t_st * a.queries / nq
    print(f"stumpy.match ({nq} queries): {t_st:.2f} s ({t_st / nq * 1e3:.1f} ms per query); "
          f"same best match as memaudit: {agree1}/{nq}, same second distance: {agree2}/{nq}")

    from tslearn.metrics import dtw_subsequence_path

    nd = min(a.dtw_queries, a.queries)
    dtw_hit = 0
    t0 = time.perf_counter()
    for i in range(nd):
        best = (np.inf, -1, -1)
        for s, series in enumerate(train):
            path, dist = dtw_subsequence_path(queries[i], series)
            if dist < best[0]:
                best = (dist, s, path[0][1])
        dtw_hit += truth[i, 0] >= 0 and best[1] == truth[i, 0] and abs(best[2] - truth[i, 1]) <= 2
    t_dtw = time.perf_counter() - t0
    t_dtw_all = t_dtw * a.queries / nd
    print(f"tslearn dtw_subsequence_path ({nd} queries x {a.series} series): {t_dtw:.2f} s "
          f"({t_dtw / nd:.2f} s per query); planted found: {dtw_hit}/{int((truth[:nd, 0] >= 0).sum())}")
    print(f"ratio stumpy.match / memaudit (all {a.queries} queries"
          f"{'' if nq == a.queries else ', stumpy scaled from ' + str(nq)}): {t_st_all / t_mem:.1f}x")
    print(f"ratio tslearn DTW / memaudit (scaled from {nd} queries): {t_dtw_all / t_mem:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
