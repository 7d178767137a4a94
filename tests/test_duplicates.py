import io

import numpy as np
import pytest
from PIL import Image

from memaudit.hashing import _resize, content_hashes, dhash, phash
from memaudit.probes.duplicates import find_copies, find_duplicates
from naive import naive_dhash_bits, naive_hamming_pairs, naive_phash_bits, naive_tiled_l2


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


def test_phash_and_dhash_agree_with_brute_force(rng):
    imgs = _smooth_images(rng, 6, size=20)
    got_p = np.unpackbits(phash(imgs), axis=1)
    got_d = np.unpackbits(dhash(imgs), axis=1)
    small32 = _resize(imgs, (32, 32))
    small98 = _resize(imgs, (8, 9))
    for k in range(6):
        assert got_p[k].tolist() == naive_phash_bits(small32[k])
        assert got_d[k].tolist() == naive_dhash_bits(small98[k])


@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_binary_index_search_equals_brute_force_hamming(rng, method):
    imgs = _smooth_images(rng, 80, size=16)
    imgs[50:60] = np.clip(imgs[:10] + rng.normal(0, 0.05, imgs[:10].shape), 0, 1)
    codes = phash(imgs) if method == "phash" else dhash(imgs)
    bits = np.unpackbits(codes, axis=1).tolist()
    for tol in (0, 6, 12):
        res = find_duplicates(imgs, method, threshold=tol)
        want = naive_hamming_pairs(bits, tol)
        got = sorted(zip(res.pairs[:, 0].tolist(), res.pairs[:, 1].tolist(), res.scores.tolist()))
        assert got == sorted((i, j, float(d)) for i, j, d in want)
    # across two sets too
    res = find_copies(imgs[50:60], imgs[:50], method, threshold=8)
    want = naive_hamming_pairs(bits[50:60], 8, other=bits[:50])
    got = sorted(zip(res.pairs[:, 0].tolist(), res.pairs[:, 1].tolist(), res.scores.tolist()))
    assert got == sorted((i, j, float(d)) for i, j, d in want)


def test_planted_groups_in_images(rng):
    imgs, truth = _planted(rng)
    exact = find_duplicates(imgs, "exact")
    assert [g["members"].tolist() for g in exact.groups] == [[3, 40, 44]]
    ph = find_duplicates(imgs, "phash")
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
    res = find_duplicates(ds.x, "exact", ids=ds.ids, item_shape=ds.item_shape)
    assert res.to_dict()["groups"] == [{"members": ["a.png", "b.png", "c.bmp"], "size": 3}]
    h = content_hashes(ds.x, ds.item_shape)
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
