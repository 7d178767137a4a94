"""The open_clip adapter, on small models with random weights saved to temporary files.

The reference for every embedding is open_clip's own pipeline: ``create_model_and_transforms``
loading the same file, its evaluation transform applied to a PIL image, ``encode_image``.
"""

import copy
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from memaudit.adapters import clip as clip_adapter  # noqa: E402
from memaudit.adapters.clip import ClipEncoder  # noqa: E402

MODEL = "ViT-S-32"
ROOT = Path(__file__).resolve().parents[1]


def _save(net, folder, name):
    from safetensors.torch import save_file

    state = net.state_dict()
    pt = folder / f"{name}.pt"
    torch.save(state, pt)
    st = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    return pt, st


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = open_clip.create_model(MODEL, pretrained=None, pretrained_text=False)
    return _save(net, tmp_path_factory.mktemp("w"), "vit_s_32")


@pytest.fixture(scope="module")
def enc(weights):
    return ClipEncoder(MODEL, weights[0], progress=False)


def _rgb(n=3, h=30, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _gray(n=2, h=20, w=36, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _open_clip_reference(model, weights, images, **transform_kwargs):
    """open_clip's own pipeline: its loader, its eval transform on PIL images, encode_image."""
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=str(weights), pretrained_text=False, **transform_kwargs)
    net.eval()
    with torch.no_grad():
        emb = net.encode_image(torch.stack([preprocess(Image.fromarray(im)) for im in images]))
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def test_embeddings_equal_open_clips_own_pipeline(weights, enc):
    pt, st = weights
    rgb, gray = _rgb(), _gray()  # both non-square: the centre crop matters
    ref = _open_clip_reference(MODEL, pt, list(rgb) + list(gray))  # gray as PIL mode "L"
    got = np.concatenate([enc.encode(rgb), enc.encode(gray)])
    assert got.shape == (5, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a near-copy is closer than an unrelated image
    noisy = np.clip(rgb[0].astype(int) + np.random.default_rng(2).integers(-3, 4, rgb[0].shape),
                    0, 255).astype(np.uint8)
    e = enc.encode(np.stack([rgb[0], noisy, rgb[1]]))
    np.testing.assert_allclose(e[[0, 2]], ref[[0, 1]], atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]
    # both file formats hold the same state
    a, b = ClipEncoder._read_state(pt, torch), ClipEncoder._read_state(st, torch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_accepted_convention_reaches_open_clip_as_the_same_8_bit_image(enc):
    rgb, gray = _rgb(), _gray()
    as_pil = clip_adapter._to_uint8
    for same in (rgb / 255.0, (rgb / 255.0).astype(np.float32), (rgb / 255.0).astype(np.float16),
                 rgb.astype(np.uint16) * 257, np.moveaxis(rgb, -1, 1)):
        np.testing.assert_array_equal(np.stack(as_pil(same)), rgb)
    for same in (gray[..., None], gray[:, None], gray / 255.0):
        np.testing.assert_array_equal(np.stack(as_pil(same)), gray)
    # floats round to the nearest 8-bit level, as diffusers' numpy_to_pil; 16 bits as x / 257
    np.testing.assert_array_equal(as_pil(np.array([[[0.0, 0.4 / 255], [0.6 / 255, 1.0]]]))[0],
                                  [[0, 0], [1, 255]])
    u16 = np.arange(0, 65536, dtype=np.uint16).reshape(1, 256, 256)
    np.testing.assert_array_equal(as_pil(u16)[0], np.rint(u16[0] / 257.0).astype(np.uint8))
    # a float batch goes through the model like its uint8 twin (the old adapter clamped uint8)
    np.testing.assert_allclose(enc.encode(rgb[:1] / 255.0), enc.encode(rgb[:1]), atol=1e-6)


def test_the_pretrained_tags_preprocessing_is_used(weights, monkeypatch):
    # ViT-S-32 has no pretrained tag; give it one that preprocesses as SigLIP and PE-Core do
    # (squash, bilinear, mean = std = 0.5), in open_clip's own registry
    pt, _ = weights
    tag = {"url": "", "hf_hub": "", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
           "interpolation": "bilinear", "resize_mode": "squash"}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, MODEL, {"squashed": tag})
    enc = ClipEncoder(MODEL, pt, progress=False)  # the only tag's settings, as no tag is given
    keys = ("mean", "std", "interpolation", "resize_mode")
    assert {k: enc.preprocess_cfg[k] for k in keys} == {k: tag[k] for k in keys}
    cfg = open_clip.get_model_config(MODEL)
    assert (clip_adapter._preprocess_overrides(open_clip, MODEL, "squashed", cfg)
            == clip_adapter._preprocess_overrides(open_clip, MODEL, None, cfg))
    image = _rgb(1, 40, 24)
    ref = _open_clip_reference(MODEL, pt, image, image_mean=tag["mean"], image_std=tag["std"],
                               image_interpolation=tag["interpolation"],
                               image_resize_mode=tag["resize_mode"])
    np.testing.assert_allclose(enc.encode(image), ref, atol=1e-5)
    # the test can tell the two pipelines apart
    untagged = open_clip.image_transform(224, is_train=False)(Image.fromarray(image[0]))
    assert (untagged - enc.preprocess(Image.fromarray(image[0]))).abs().max() > 0.1
    # the registry's real tags, read without building: PE-Core-T's only tag squashes too
    pe = clip_adapter._preprocess_overrides(open_clip, "PE-Core-T-16-384", None, {})
    assert pe["resize_mode"] == "squash" and pe["interpolation"] == "bilinear"


def test_tags_that_disagree_must_be_named():
    # ViT-L-14: "openai" and ten others use OpenAI's mean/std, "laion2b_s32b_b82k" uses 0.5
    with pytest.raises(ValueError,
                       match="differently by pretrained tag.*laion2b_s32b_b82k.*pass tag="):
        ClipEncoder("ViT-L-14", None)
    cfg = open_clip.get_model_config("ViT-L-14")
    chosen = clip_adapter._preprocess_overrides(open_clip, "ViT-L-14", "laion2b_s32b_b82k", cfg)
    assert tuple(chosen["mean"]) == (0.5, 0.5, 0.5)
    with pytest.raises(FileNotFoundError):  # the tag settles preprocessing; the file comes next
        ClipEncoder("ViT-L-14", "missing.pt", tag="laion2b_s32b_b82k")
    with pytest.raises(ValueError, match="not an open_clip pretrained tag of 'ViT-S-32'"):
        ClipEncoder(MODEL, None, tag="openai")
    with pytest.raises(ValueError, match="quick_gelu=True.*use the model 'ViT-B-32-quickgelu'"):
        ClipEncoder("ViT-B-32", None, tag="openai")
    siglip = clip_adapter._preprocess_overrides(
        open_clip, "ViT-B-16-SigLIP", None, open_clip.get_model_config("ViT-B-16-SigLIP"))
    assert siglip["resize_mode"] == "squash" and tuple(siglip["mean"]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("images, error, message", [
    (_rgb() / 127.5 - 1, ValueError, r"observed range \[-1, 1\].*\(images \+ 1\) / 2"),
    (_rgb().astype(np.float32), ValueError, r"observed range \[0, 255\].*images / 255"),
    (np.full((2, 8, 8), 1.02), ValueError, r"observed range \[1.02, 1.02\].*clip or rescale"),
    (np.full((2, 8, 8), 300.0), ValueError, r"observed range \[300, 300\].*rescale"),
    (np.where(np.eye(8, dtype=bool), np.nan, 0.5)[None], ValueError, "8 NaN or Inf"),
    (np.full((1, 8, 8, 3), np.inf), ValueError, "NaN or Inf"),
    (_rgb().astype(np.int64), TypeError, r"dtype int64 \(values \d+\.\.\d+\).*uint8"),
    (np.zeros((2, 8, 8), bool), TypeError, "dtype bool"),
    (np.full((2, 8, 8), 200, np.uint16), ValueError, "reach only 200.*astype"),
    (np.zeros((2, 8, 8, 4), np.uint8), ValueError, "alpha channel"),
    (np.zeros((2, 1, 8, 8), np.uint8)[:, :, :1], ValueError, r"shape \(1, 1, 8\) are not"),
    (np.zeros((0, 8, 8), np.uint8), ValueError, "non-empty batch"),
    (np.zeros((4, 64), np.uint8), ValueError, "non-empty batch"),
    ([np.zeros((8, 8)), np.zeros((9, 9))], ValueError, "equally shaped"),
])
def test_pixel_ranges_outside_the_accepted_ones_are_refused(enc, images, error, message):
    with pytest.raises(error, match=message) as info:
        enc.encode(images)
    assert "\n" not in str(info.value)


def test_cache_is_keyed_by_content_and_by_the_preprocessing(enc, tmp_path):
    enc = copy.copy(enc)  # the cache lives on disk: every encode reads it afresh
    enc.cache_dir = tmp_path
    rgb = _rgb()
    first = enc.encode(rgb)
    assert enc.last_cache_hits == 0
    np.testing.assert_array_equal(enc.encode(rgb), first)
    assert enc.last_cache_hits == 3
    enc.encode(rgb / 255.0)  # the same 8-bit pixels: the same entries
    assert enc.last_cache_hits == 3
    mixed = enc.encode(np.concatenate([rgb, _rgb(2, seed=9)]))
    assert enc.last_cache_hits == 3 and mixed.shape == (5, 384)
    np.testing.assert_array_equal(mixed[:3], first)
    # one folder, keyed by the model, the weights' SHA-256 and the preprocessing
    from memaudit.adapters._encoder import FeatureCache

    folder = tmp_path / "clip" / FeatureCache(tmp_path, enc.cache_parts).key
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256(Path(enc.weights).read_bytes()).hexdigest()
    assert meta["model"] == MODEL and meta["preprocess"] == enc.preprocess_key
    assert "Resize(size=224" in enc.preprocess_key and "CenterCrop" in enc.preprocess_key
    # another preprocessing (e.g. the old hand-written resize) never reads these entries, and a
    # shard under this key that says it was written for another is dropped with a warning
    other = copy.copy(enc)
    other.preprocess_key = "pil-uint8-v1\nhand-written resize"
    np.testing.assert_allclose(other.encode(rgb), first, atol=1e-6)
    assert other.last_cache_hits == 0
    keys = [clip_adapter.content_key(im) for im in clip_adapter._to_uint8(rgb)]
    np.savez(folder / "forged.npz", keys=np.array(keys), features=np.zeros((3, 384)),
             cache_key=np.array("another key"))
    again = enc.encode(rgb)
    assert enc.last_cache_hits == 3 and not (folder / "forged.npz").exists()
    assert any("forged.npz is unreadable" in w for w in enc.cache_warnings)
    np.testing.assert_allclose(again, first, atol=1e-6)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_network_guard_bites(no_network):
    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as s, pytest.raises(AssertionError, match="network access"):
        s.connect(("127.0.0.1", 9))


def test_whole_life_cycle_offline(weights, tmp_path, no_network, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # huggingface_hub was imported (by open_clip) while the switch was off
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []
    create_model = open_clip.create_model

    @functools.wraps(create_model)  # keeps the signature, which the adapter reads
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return create_model(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", spy)
    pt, _ = weights
    enc = ClipEncoder(MODEL, pt, cache_dir=tmp_path, progress=False)  # build + load weights
    # built with every pretrained and download switch off (the text tower's included)
    assert len(calls) == 1 and calls[0]["pretrained"] is None and calls[0]["cache_dir"] is None
    assert calls[0]["pretrained_text"] is False and calls[0]["pretrained_image"] is False
    assert calls[0]["load_weights"] is False
    first = enc.encode(_rgb())  # encode + write the cache
    np.testing.assert_array_equal(enc.encode(_rgb()), first)  # read the cache
    assert enc.last_cache_hits == 3
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and huggingface_hub.is_offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    # a hub call now stops inside huggingface_hub, before any socket (with the switch off, the
    # guard's AssertionError comes through instead)
    with pytest.raises(LocalEntryNotFoundError) as info:
        huggingface_hub.hf_hub_download("openai/clip-vit-base-patch32", "config.json",
                                        cache_dir=tmp_path / "hf")
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(e, OfflineModeIsEnabled) for e in chain)
    # a model whose text tower is a Hugging Face model is refused in one line, before any build
    with pytest.raises(ValueError, match="'roberta-ViT-B-32' needs its text tower's config "
                                         r"\('roberta-base'\) from the Hugging Face hub; "
                                         "memaudit never downloads") as info:
        ClipEncoder("roberta-ViT-B-32", pt)
    assert "\n" not in str(info.value)


def test_offline_is_set_before_open_clip_imports_huggingface_hub(tmp_path):
    # a stand-in open_clip that imports huggingface_hub as the real one does (open_clip.pretrained),
    # and a stand-in torch, so that the fresh interpreter stays light
    (tmp_path / "open_clip").mkdir()
    (tmp_path / "open_clip" / "__init__.py").write_text(
        "import os\nSEEN = os.environ.get('HF_HUB_OFFLINE')\nimport huggingface_hub\n")
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    code = ("import sys\n"
            "from memaudit.adapters import clip\n"
            "assert 'huggingface_hub' not in sys.modules and 'open_clip' not in sys.modules\n"
            "open_clip, _ = clip._require()\n"
            "import huggingface_hub.constants as c\n"
            "print(open_clip.SEEN, c.HF_HUB_OFFLINE)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"]


def test_refuses_to_download_and_reports_bad_files(weights, tmp_path):
    pt, _ = weights
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ClipEncoder(MODEL, "laion2b_s34b_b79k")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipEncoder(MODEL, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="weights: give the path"):
        ClipEncoder(MODEL, None)
    partial = tmp_path / "partial.pt"
    torch.save({"visual.proj": torch.zeros(768, 384)}, partial)
    with pytest.raises(ValueError, match="does not match model 'ViT-S-32'"):
        ClipEncoder(MODEL, partial)
    for name in ("junk.pt", "junk.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="cannot read weights file") as info:
            ClipEncoder(MODEL, tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipEncoder("ViT-Nonexistent", pt)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ClipEncoder(MODEL, pt, batch_size=0)
