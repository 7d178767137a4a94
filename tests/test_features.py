"""``--features``: CLIP, DINOv2, SSCD and Inception from local random-weight files, on CPU.

Every extractor goes through the command line as a user's run would (``memaudit audit`` and
``memaudit duplicates`` with ``--features``): planted copies are found at their positions with
similarity 1, the headline names the space and the weights' SHA-256 (computed here with hashlib),
and a second run reads every feature from the cache without one call to the network (counted by
wrapping the encoder's forward). Preprocessing is checked against torchvision transforms composed
by hand from each extractor's published recipe, and the networks against the libraries' own models
loaded with the same file. Refusals are one line.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
open_clip = pytest.importorskip("open_clip")

from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from memaudit.adapters import features as F  # noqa: E402
from memaudit.adapters._encoder import FeatureCache  # noqa: E402
from memaudit.adapters.clip import ClipEncoder  # noqa: E402
from memaudit.cli import main  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, as torchvision documents
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8,
                            "head_width": 32},
             "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2,
                          "layers": 1}}
COPIES = {4: 3, 5: 7}  # sample position -> the training item it copies


class TinySSCD(torch.nn.Module):
    """The published SSCD interface at toy size: (n, 3, H, W) images -> (n, 512) unit vectors."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(16, 16, 3, padding=1))
        self.fc = torch.nn.Linear(32, 512)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))  # a residual block, as in the ResNet-50 trunk
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return torch.nn.functional.normalize(self.fc(pooled), dim=1)


def _images(rng, n, size=32):
    """Images with large-scale structure (a coloured 4x4 pattern), so that random networks
    tell them apart; uint8 (n, size, size, 3)."""
    low = rng.random((n, 4, 4, 3)) * rng.random((n, 1, 1, 3))
    return np.rint(np.kron(low, np.ones((1, size // 4, size // 4, 1))) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    train = _images(rng, 12)
    samples = np.concatenate([_images(rng, 4), train[list(COPIES.values())]])
    out = {"root": root}
    for name, x in (("train", train), ("samples", samples), ("holdout", _images(rng, 6))):
        np.save(root / f"{name}.npy", x)
        out[name] = str(root / f"{name}.npy")
    return out


@pytest.fixture(scope="module")
def weights(files):
    """Random-weight files for every extractor, as their published formats hold them."""
    from safetensors.torch import save_file

    root = files["root"]
    torch.manual_seed(0)
    dino = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=1,
                             num_classes=0)
    with torch.no_grad():
        for name, p in dino.named_parameters():
            if ".ls" in name:
                p.fill_(1.0)  # layer scale at 1: the block acts (the release's are trained)
    state = {k: v.contiguous() for k, v in dino.state_dict().items()}
    save_file(state, str(root / "dinov2.safetensors"))
    # the release's .pth holds a mask_token (unused at inference), which timm's filter drops
    torch.save({**state, "mask_token": torch.zeros(1, 384)}, root / "dinov2_vits14_tiny.pth")
    torch.jit.save(torch.jit.script(TinySSCD().eval()), str(root / "sscd_tiny.torchscript.pt"))
    inc = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(inc.state_dict(), root / "inception_v3_tiny.pth")
    return {"dinov2": root / "dinov2.safetensors", "dinov2_pth": root / "dinov2_vits14_tiny.pth",
            "sscd": root / "sscd_tiny.torchscript.pt", "inception": root / "inception_v3_tiny.pth"}


@pytest.fixture
def tiny_clip(monkeypatch, files):
    """A tiny open_clip model registered in open_clip's own table, and its random weights."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "memaudit-tiny", TINY_CLIP)
    path = files["root"] / "clip_tiny.pt"
    if not path.exists():
        torch.manual_seed(1)
        torch.save(open_clip.create_model("memaudit-tiny", pretrained=None,
                                          pretrained_text=False).state_dict(), path)
    return path


def _spec(kind, weights, tiny_clip=None):
    return f"clip:memaudit-tiny={tiny_clip}" if kind == "clip" else f"{kind}:{weights[kind]}"


def _count_forward(monkeypatch, kind):
    """Count the images the encoder class of ``kind`` runs through its network."""
    cls = {"clip": ClipEncoder, "dinov2": F.DinoV2Encoder, "sscd": F.SSCDEncoder,
           "inception": F.InceptionEncoder}[kind]
    seen = []
    original = cls._forward

    def counted(self, batch):
        seen.append(int(batch.shape[0]))
        return original(self, batch)

    monkeypatch.setattr(cls, "_forward", counted)
    return seen


def _audit(files, spec, out, cache, *extra):
    argv = ["audit", "--train", files["train"], "--samples", files["samples"], "--holdout",
            files["holdout"], "--features", spec, "--feature-cache", str(cache), "--out", str(out),
            "--n-bootstrap", "20", "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def _check_planted(report, n_dims):
    ps = report["sections"]["nn_ratio"]["per_sample"]
    flagged = {i for i, m in enumerate(ps["memorized"]) if m}
    assert set(COPIES) <= flagged
    for i, j in COPIES.items():
        assert ps["nn_index"][i] == j and ps["d1"][i] <= 1e-6 and ps["ratio"][i] <= 1e-3
    # the other samples are not copies: their nearest training item is well away
    assert min(ps["d1"][i] for i in range(len(ps["d1"])) if i not in COPIES) > 1e-4
    pairs = report["sections"]["duplicates"]["samples_vs_train"]["pairs"]
    found = {(p["query"], p["reference"]): p["similarity"] for p in pairs}
    for i, j in COPIES.items():
        assert found[(i, j)] == pytest.approx(1.0, abs=1e-5)
    assert {q for q, _ in found} == set(COPIES)  # threshold 0.9999: only the planted copies
    assert f"{n_dims}-d, unit norm" in report["space"]


@pytest.mark.parametrize("kind", ["clip", "dinov2", "sscd"])
def test_each_extractor_finds_planted_copies_and_the_second_run_encodes_nothing(
        kind, files, weights, tiny_clip, tmp_path, monkeypatch):
    spec = _spec(kind, weights, tiny_clip)
    calls = _count_forward(monkeypatch, kind)
    cache = tmp_path / "cache"
    first = _audit(files, spec, tmp_path / "a", cache, "--duplicates", "embedding",
                   "--duplicates-threshold", "0.9999")
    n_dims = {"clip": 32, "dinov2": 384, "sscd": 512}[kind]
    _check_planted(first, n_dims)
    # 12 + 6 + 6 images, of which 2 samples are copies of training images: encoded once
    assert sum(calls) == 22
    assert "features: 22 image(s) encoded, 2 read from the feature cache" in first["notes"][-1]
    path = tiny_clip if kind == "clip" else weights[kind]
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert f"from {Path(path).name} (sha256 {sha[:12]})" in first["space"]
    assert first["space"].startswith(F.SPACES[kind].title)
    calls.clear()
    second = _audit(files, spec, tmp_path / "b", cache, "--duplicates", "embedding",
                    "--duplicates-threshold", "0.9999")
    assert calls == []  # not one image through the network
    assert "features: 0 image(s) encoded, 24 read from the feature cache" in second["notes"][-1]
    a, b = (r["sections"]["nn_ratio"]["per_sample"] for r in (first, second))
    assert a == b
    # the cache is keyed by the weights' SHA-256: its folder's meta.json says so
    metas = [json.loads(p.read_text()) for p in cache.glob(f"{kind}/*/meta.json")]
    assert [m["weights_sha256"] for m in metas] == [sha]


def test_an_image_folder_reaches_the_encoder_as_the_same_8_bit_pixels(files, weights, tmp_path):
    # the .npy run fills the cache; the same images as PNG files (read as floats in [0, 1]) and as
    # channels-first floats (declared) are found there: not one image encoded again
    spec = f"sscd:{weights['sscd']}"
    cache = tmp_path / "cache"
    _audit(files, spec, tmp_path / "a", cache)
    folder = tmp_path / "train_png"
    folder.mkdir()
    for i, im in enumerate(np.load(files["train"])):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    chw = tmp_path / "samples_chw.npy"
    np.save(chw, np.moveaxis(np.load(files["samples"]), -1, 1).astype(np.float32) / 255)
    argv = ["audit", "--train", str(folder), "--samples", str(chw), "--layout", "samples=CHW",
            "--range", "samples=0,1", "--features", spec, "--feature-cache", str(cache), "--out",
            str(tmp_path / "b"), "--n-bootstrap", "20", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "features: 0 image(s) encoded, 18 read from the feature cache" in report["notes"][-1]
    ps = report["sections"]["nn_ratio"]["per_sample"]
    assert [ps["nn_index"][i] for i in COPIES] == list(COPIES.values())


def test_sscd_space_uses_somepallis_threshold_and_duplicates_compare_in_it(files, weights,
                                                                            tmp_path, capsys):
    spec = f"sscd:{weights['sscd']}"
    out = tmp_path / "dup"
    code = main(["duplicates", "--train", files["train"], "--samples", files["samples"],
                 "--holdout", files["holdout"], "--method", "embedding", "--features", spec,
                 "--feature-cache", str(tmp_path / "c"), "--out", str(out), "--n-bootstrap", "20",
                 "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert text.startswith("compared in: SSCD copy-detection descriptors")
    assert "cosine similarity" in text and "threshold 0.5: sscd space" in text
    report = json.loads((out / "duplicates.json").read_text())
    assert report["space"].startswith("SSCD")
    res = report["sections"]["duplicates"]["samples_vs_train"]
    assert res["threshold"] == 0.5 and "Somepalli et al. 2023" in res["threshold_source"]
    # the planted copies match their training items with similarity 1
    found = {(p["query"], p["reference"]): p["similarity"] for p in res["pairs"]}
    assert all(found[(i, j)] == pytest.approx(1.0, abs=1e-5) for i, j in COPIES.items())
    # what the descriptors' similarity is, recomputed outside memaudit from the TorchScript file
    net = torch.jit.load(str(weights["sscd"]))
    pre = T.Compose([T.Resize(288), T.ToTensor(), T.Normalize(MEAN, STD)])
    s, t = np.load(files["samples"]), np.load(files["train"])
    with torch.no_grad():
        e = net(torch.stack([pre(Image.fromarray(im)) for im in np.concatenate([s, t])]))
    sim = (e[: len(s)] @ e[len(s):].T).numpy()
    want = {(i, j) for i, j in zip(*np.nonzero(sim >= 0.5 - 1e-6))}
    have = set(found)
    assert want == have or (len(want ^ have) <= 2 and all(
        abs(sim[i, j] - 0.5) < 1e-4 for i, j in want ^ have))


def test_embedding_on_pixels_says_so_in_the_headline(files, tmp_path, capsys):
    assert main(["duplicates", "--train", files["train"], "--samples", files["samples"],
                 "--method", "embedding", "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(
        "compared in: cosine similarity on raw pixels (no encoder; --features to embed)")
    report = _audit_pixels(files, tmp_path / "a")
    assert "--duplicates embedding: cosine similarity on raw pixels" in report["space"]
    assert report["space"].startswith("pixels in [0, 255]")


def _audit_pixels(files, out):
    assert main(["audit", "--train", files["train"], "--samples", files["samples"], "--out",
                 str(out), "--duplicates", "embedding", "--n-bootstrap", "20",
                 "--no-progress"]) == 0
    return json.loads((out / "report.json").read_text())


def _by_hand(net, pre, images, torch_forward=None):
    with torch.no_grad():
        x = torch.stack([pre(Image.fromarray(im).convert("RGB")) for im in images])
        out = net(x) if torch_forward is None else torch_forward(x)
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


def _odd_images():
    rng = np.random.default_rng(5)  # non-square, one grayscale: resize and crop both matter
    return [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
            rng.integers(0, 256, (26, 52), dtype=np.uint8)]


def test_dinov2_preprocessing_and_network_match_timm_and_the_published_recipe(weights):
    enc = F.build_encoder(f"dinov2:{weights['dinov2_pth']}")
    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=1, num_classes=0,
                            dynamic_img_size=True).eval()
    from safetensors.torch import load_file

    ref.load_state_dict(load_file(str(weights["dinov2"])))
    # facebookresearch/dinov2 make_classification_eval_transform, composed by hand
    pre = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                     T.ToTensor(), T.Normalize(MEAN, STD)])
    for im in _odd_images():
        np.testing.assert_allclose(enc.encode(im[None]), _by_hand(ref, pre, [im]), atol=1e-5)
    assert enc.model_name == "vit_small_patch14_dinov2-depth1"
    # the .safetensors and the .pth (with the release's mask_token) give the same network
    other = F.build_encoder(f"dinov2:{weights['dinov2']}")
    im = _odd_images()[0][None]
    np.testing.assert_array_equal(other.encode(im), enc.encode(im))


def test_sscd_preprocessing_matches_the_published_small_288(weights):
    enc = F.build_encoder(f"sscd:{weights['sscd']}")
    net = torch.jit.load(str(weights["sscd"]))
    pre = T.Compose([T.Resize(288), T.ToTensor(), T.Normalize(MEAN, STD)])
    for im in _odd_images():
        np.testing.assert_allclose(enc.encode(im[None]), _by_hand(net, pre, [im]), atol=1e-6)


def test_inception_pool3_matches_torchvision_with_its_published_transform(weights):
    enc = F.build_encoder(f"inception:{weights['inception']}")
    ref = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                          transform_input=True)
    ref.load_state_dict(torch.load(weights["inception"], weights_only=True))
    ref.eval()
    pool3 = {}
    ref.avgpool.register_forward_hook(lambda m, i, o: pool3.update(x=o.flatten(1)))
    # torchvision Inception_V3_Weights.IMAGENET1K_V1.transforms(): resize 342, crop 299
    pre = T.Compose([T.Resize(342), T.CenterCrop(299), T.ToTensor(), T.Normalize(MEAN, STD)])
    ims = _odd_images()[:1]
    got = enc.encode(np.stack(ims))
    want = _by_hand(ref, pre, ims, lambda x: (ref(x), pool3["x"])[1])
    assert got.shape == (1, 2048)
    np.testing.assert_allclose(got, want, atol=1e-5)
    tv = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.transforms()
    published = (tv.resize_size, tv.crop_size, tuple(tv.mean), tuple(tv.std))
    assert published == ([342], [299], MEAN, STD)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clip", "dinov2", "sscd", "inception"])
def test_first_and_cached_runs_timed(kind, files, weights, tiny_clip, tmp_path, monkeypatch):
    """The closing measurement: wall time of a first and a cached audit (inception's only path
    through the command line; ``pytest -m slow -s -k timed tests/test_features.py``)."""
    spec = _spec(kind, weights, tiny_clip)
    calls = _count_forward(monkeypatch, kind)
    t0 = time.perf_counter()
    first = _audit(files, spec, tmp_path / "a", tmp_path / "c", "--duplicates", "embedding",
                   "--duplicates-threshold", "0.9999")
    t1 = time.perf_counter()
    _check_planted(first, {"clip": 32, "dinov2": 384, "sscd": 512, "inception": 2048}[kind])
    assert sum(calls) == 22
    calls.clear()
    second = _audit(files, spec, tmp_path / "b", tmp_path / "c", "--duplicates", "embedding",
                    "--duplicates-threshold", "0.9999")
    t2 = time.perf_counter()
    assert calls == [] and second["sections"]["nn_ratio"] == first["sections"]["nn_ratio"]
    print(f"\n{kind}: first audit {t1 - t0:.2f} s (22 images encoded), cached audit "
          f"{t2 - t1:.2f} s (0 encoded)")


def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_recomputed(weights, tmp_path):
    enc = F.build_encoder(f"sscd:{weights['sscd']}", cache_dir=tmp_path)
    ims = np.stack(_odd_images()[:1] * 1)
    first = enc.encode(ims)
    folder = FeatureCache(tmp_path, enc.cache_parts).folder
    (shard,) = folder.glob("*.npz")
    shard.write_bytes(b"not an npz")
    again = F.build_encoder(f"sscd:{weights['sscd']}", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.encode(ims), first)
    assert again.n_encoded == 1 and again.last_cache_hits == 0
    assert len(again.cache_warnings) == 1 and "is unreadable" in again.cache_warnings[0]
    assert "ignored and removed" in again.cache_warnings[0]
    third = F.build_encoder(f"sscd:{weights['sscd']}", cache_dir=tmp_path)
    third.encode(ims)
    assert third.n_encoded == 0 and third.cache_warnings == []  # the recomputed entry is read


def test_the_cache_key_changes_with_the_weights_and_the_preprocessing(weights, tmp_path):
    a = F.build_encoder(f"sscd:{weights['sscd']}", cache_dir=tmp_path)
    copy = tmp_path / "sscd_copy.torchscript.pt"
    copy.write_bytes(Path(weights["sscd"]).read_bytes())
    b = F.build_encoder(f"sscd:{copy}", cache_dir=tmp_path)
    assert a.weights_sha256 == b.weights_sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    parts = dict(a.cache_parts)
    keys = {FeatureCache(tmp_path, parts).key}
    for field, value in (("weights_sha256", "0" * 64), ("preprocess", "other"),
                         ("model", "other"), ("extractor", "dinov2")):
        keys.add(FeatureCache(tmp_path, {**parts, field: value}).key)
    assert len(keys) == 5


def _error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("memaudit: error: "), err
    return err[0]


@pytest.mark.parametrize("spec, message", [
    ("dinov2:{missing}", "features (--features) dinov2: weights file"),
    ("clip:ViT-B-32=openai", "'openai' is not a local file and looks like a hub name"),
    ("dinov2:facebook/dinov2-small", "looks like a hub name or pretrained tag"),
    ("sscd:https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt",
     "is a URL or hub name"),
    ("resnet:{sscd}", "unknown extractor 'resnet'"),
    ("dinov2:{inception}", "does not match DINOv2: it holds no 'cls_token'"),
    ("inception:{dinov2}", "does not match torchvision inception_v3"),
    ("sscd:{dinov2_pth}", "is not a TorchScript module"),
    ("clip:ViT-B-32", "clip needs MODEL=WEIGHTS"),
    ("clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K={sscd}", "is a hub model"),
    ("clip:NoSuchModel={sscd}", "unknown open_clip model 'NoSuchModel'"),
])
def test_refusals_are_one_line(spec, message, files, weights, tmp_path, capsys):
    spec = spec.format(missing=tmp_path / "nope.pt", **{k: str(v) for k, v in weights.items()})
    line = _error(["audit", "--train", files["train"], "--samples", files["samples"], "--out",
                   str(tmp_path / "o"), "--features", spec, "--feature-cache", str(tmp_path)],
                  capsys)
    assert message in line
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_refused(files, weights, tmp_path, capsys):
    line = _error(["duplicates", "--train", files["train"], "--method", "embedding", "--features",
                   f"sscd:{weights['sscd']}", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert "device (--device) cuda: torch finds no CUDA device" in line and "--device cpu" in line


def test_features_need_images_and_the_embedding_method(files, weights, tmp_path, capsys):
    feats = tmp_path / "feats.npy"
    np.save(feats, np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32))
    line = _error(["audit", "--train", str(feats), "--samples", str(feats), "--out",
                   str(tmp_path / "o"), "--features", f"sscd:{weights['sscd']}",
                   "--feature-cache", "off"], capsys)
    assert "encodes images, but train are features" in line
    line = _error(["duplicates", "--train", files["train"], "--features",
                   f"sscd:{weights['sscd']}", "--out", str(tmp_path / "o")], capsys)
    assert "add --method embedding" in line
