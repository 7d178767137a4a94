import numpy as np
import pytest
from PIL import Image

from memaudit.sources import load_dataset


def _write_images(folder, arrays, fmt="PNG"):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, a in enumerate(arrays):
        name = f"img_{i:03d}.{fmt.lower()}"
        Image.fromarray(a).save(folder / name, format=fmt)
        names.append(name)
    return names


def test_npy_is_memory_mapped_with_positions_as_ids(tmp_path, rng):
    x = rng.normal(size=(20, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(tmp_path / "x.npy", "train")
    assert isinstance(ds.x, np.memmap) and ds.x.shape == (20, 16)
    assert ds.item_shape == (4, 4) and ds.kind == "npy"
    np.testing.assert_array_equal(ds.ids, np.arange(20))
    np.testing.assert_array_equal(np.asarray(ds.x), x.reshape(20, 16))


def test_npz_single_array_key_and_ids(tmp_path, rng):
    x = rng.normal(size=(6, 3))
    np.savez(tmp_path / "one.npz", data=x)
    np.testing.assert_array_equal(load_dataset(tmp_path / "one.npz").x, x)
    ids = np.array(["a", "b", "c", "d", "e", "f"])
    np.savez(tmp_path / "two.npz", train=x, other=x[:2], ids=ids)
    ds = load_dataset(f"{tmp_path / 'two.npz'}:train", "train")
    np.testing.assert_array_equal(ds.ids, ids)
    with pytest.raises(ValueError, match=r"holds arrays .*say which one as two.npz:KEY"):
        load_dataset(tmp_path / "two.npz")
    with pytest.raises(KeyError, match="no array 'nope'"):
        load_dataset(f"{tmp_path / 'two.npz'}:nope")


def test_arrays_and_tensors(rng):
    x = rng.normal(size=(5, 2, 3))
    ds = load_dataset(x, "samples", ids=list("vwxyz"))
    assert ds.x.shape == (5, 6) and ds.item_shape == (2, 3) and ds.ids[4] == "z"
    torch = pytest.importorskip("torch")
    ds = load_dataset(torch.from_numpy(x))
    np.testing.assert_array_equal(ds.x, x.reshape(5, 6))
    with pytest.raises(ValueError, match="expected 5 ids"):
        load_dataset(x, ids=[1, 2])


def test_grayscale_image_folder_png_and_jpeg(tmp_path, rng):
    imgs = [rng.integers(0, 256, size=(8, 6), dtype=np.uint8) for _ in range(3)]
    _write_images(tmp_path / "imgs", imgs[:2])
    Image.fromarray(imgs[2]).save(tmp_path / "imgs" / "sub_z.jpg", quality=95)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path / "imgs", "train")
    assert ds.kind == "images" and ds.item_shape == (8, 6) and len(ds) == 3
    assert ds.ids.tolist() == ["img_000.png", "img_001.png", "sub_z.jpg"]
    np.testing.assert_allclose(ds.x[0], imgs[0].ravel() / 255.0)  # PNG is lossless
    assert np.abs(ds.x[2] - imgs[2].ravel() / 255.0).mean() < 0.05  # JPEG is close
    assert ds.x.dtype == np.float32 and ds.x.min() >= 0 and ds.x.max() <= 1


def test_rgb_folder_resize_and_mode(tmp_path, rng):
    imgs = [rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8) for _ in range(2)]
    _write_images(tmp_path / "rgb", imgs)
    ds = load_dataset(tmp_path / "rgb")
    assert ds.item_shape == (10, 12, 3) and ds.x.shape == (2, 360)
    small = load_dataset(tmp_path / "rgb", resize=(5, 4), mode="L")
    assert small.item_shape == (5, 4)
    assert load_dataset(tmp_path / "rgb", resize=8).item_shape == (8, 8, 3)


def test_mixed_sizes_are_refused_unless_resized(tmp_path, rng):
    _write_images(tmp_path / "m", [np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)])
    with pytest.raises(ValueError, match="different sizes.*img_000.png is 8x8.*img_001.png is 8x9"):
        load_dataset(tmp_path / "m")
    assert load_dataset(tmp_path / "m", resize=8).x.shape == (2, 64)


def test_unreadable_files(tmp_path, rng):
    _write_images(tmp_path / "bad", [np.zeros((4, 4), np.uint8)])
    (tmp_path / "bad" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_dataset(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "missing.npy", "train")
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read .*junk.npy"):
        load_dataset(tmp_path / "junk.npy")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="expected a .npy or .npz file or a folder"):
        load_dataset(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="one image; give the folder"):
        load_dataset(tmp_path / "bad" / "img_000.png")


def test_nan_in_an_npz_is_refused(tmp_path):
    x = np.ones((4, 2))
    x[2, 1] = np.inf
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(ValueError, match="Inf.*first at item 2"):
        load_dataset(tmp_path / "x.npz", "samples")
