"""The open_clip adapter, on a small model with random weights saved to a temporary file."""

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from memaudit.adapters.clip import ClipEncoder  # noqa: E402

MODEL = "ViT-S-32"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = open_clip.create_model(MODEL, pretrained=None)
    folder = tmp_path_factory.mktemp("w")
    pt = folder / "vit_s_32.pt"
    torch.save(net.state_dict(), pt)
    from safetensors.torch import save_file

    st = folder / "vit_s_32.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    return net.eval(), pt, st


def _images(n=4, seed=0):
    return np.random.default_rng(seed).random((n, 20, 20)).astype(np.float32)


def test_loads_local_weights_and_matches_the_model(weights, tmp_path):
    net, pt, st = weights
    imgs = _images()
    a = ClipEncoder(MODEL, pt, progress=False).encode(imgs)
    b = ClipEncoder(MODEL, st, progress=False).encode(imgs)
    assert a.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # both file formats give the same model
    enc = ClipEncoder(MODEL, pt, progress=False)
    with torch.no_grad():
        direct = net.encode_image(enc._prepare(imgs)).numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(a, direct, atol=1e-5)
    # a near-copy is closer than an unrelated image
    near = ClipEncoder(MODEL, pt, progress=False).encode(
        np.stack([imgs[0], np.clip(imgs[0] + 0.01, 0, 1), imgs[1]]))
    assert near[0] @ near[1] > near[0] @ near[2]


def test_cache_makes_reruns_instant_and_is_keyed_by_content(weights, tmp_path):
    _, pt, _ = weights
    enc = ClipEncoder(MODEL, pt, cache_dir=tmp_path / "cache", progress=False)
    first = enc.encode(_images())
    assert enc.last_cache_hits == 0
    again = enc.encode(_images())
    assert enc.last_cache_hits == 4
    np.testing.assert_array_equal(first, again)
    enc2 = ClipEncoder(MODEL, pt, cache_dir=tmp_path / "cache", progress=False)
    mixed = enc2.encode(np.concatenate([_images(), _images(2, seed=9)]))
    assert enc2.last_cache_hits == 4 and mixed.shape == (6, 384)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_refuses_to_download_and_reports_bad_files(weights, tmp_path):
    _, pt, _ = weights
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ClipEncoder(MODEL, "laion2b_s34b_b79k")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipEncoder(MODEL, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="does not match model 'RN50'"):
        ClipEncoder("RN50", pt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        ClipEncoder(MODEL, junk)
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipEncoder("ViT-Nonexistent", pt)
    with pytest.raises(ValueError, match="non-empty batch"):
        ClipEncoder(MODEL, pt, progress=False).encode(np.zeros((0, 8, 8)))
