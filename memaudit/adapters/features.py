"""Feature spaces for the command line: ``--features pixels | clip:MODEL=WEIGHTS | dinov2:WEIGHTS |
sscd:WEIGHTS | inception:WEIGHTS``, each from a local weights file (nothing is downloaded).

One registry (:data:`SPACES`) and one code path per step:

    parse_features("sscd:/models/sscd_disc_mixup.torchscript.pt")  -> FeatureSpec (file checked)
    build_encoder(spec, device="cpu", cache_dir=...)  -> an ImageEncoder (weights loaded,
                                                         mismatches refused)
    encode_dataset(encoder, dataset)                  -> (n, d) float32, unit norm

Every encoder runs the same loop (:class:`memaudit.adapters._encoder.ImageEncoder`): 8-bit PIL
images, its own published preprocessing, batches, L2 normalisation, and the disk cache keyed by
extractor, model, weights SHA-256, preprocessing and image content. docs/adapters/features.md says
where each published weights file comes from, its preprocessing and the copy criterion that goes
with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._encoder import ImageEncoder, local_weights, read_state_dict

__all__ = ["SPACES", "FeatureSpec", "Space", "parse_features", "build_encoder", "check_device",
           "encode_dataset", "DinoV2Encoder", "SSCDEncoder", "InceptionEncoder",
           "IMAGENET_MEAN", "IMAGENET_STD"]

# torchvision's / timm's ImageNet statistics (timm.data.IMAGENET_DEFAULT_MEAN / _STD)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Space:
    """One feature space of the registry: how it is named, preprocessed and judged.

    ``duplicates_threshold`` is the cosine similarity at or above which ``--duplicates embedding``
    calls two items copies in this space when no threshold is given (None: the probe's 0.95).
    """

    name: str
    title: str
    spec: str  # the --features syntax
    preprocess: str  # the published preprocessing and its source
    criterion: str  # the copy criterion that goes with the space, and its paper
    duplicates_threshold: float | None = None


SPACES = {
    "pixels": Space(
        "pixels", "pixels", "pixels",
        "none: the pixels as loaded, in their declared range and layout",
        "d1/d2 < 1/3 on L2 pixel distances (Bonnaire et al. 2025, Eq. 6; the ratio test of "
        "Carlini et al. 2023, 'Extracting training data from diffusion models'); "
        "--duplicates embedding here is the cosine on raw pixels (no encoder)"),
    "clip": Space(
        "clip", "CLIP image embeddings (open_clip)", "clip:MODEL=WEIGHTS or clip:MODEL@TAG=WEIGHTS",
        "open_clip's evaluation transform for the model and pretrained tag (resize of the short "
        "side, centre crop, the tag's mean/std; open_clip.image_transform)",
        "d1/d2 < 1/3 on the unit-norm embeddings (the ratio test on embeddings); --duplicates "
        "embedding: cosine >= 0.95 unless --duplicates-threshold"),
    "dinov2": Space(
        "dinov2", "DINOv2 CLS embeddings (timm vit_*_patch14_dinov2)", "dinov2:WEIGHTS",
        "resize 256 (bicubic), centre crop 224, ImageNet mean/std (facebookresearch/dinov2, "
        "dinov2/data/transforms.py make_classification_eval_transform)",
        "d1/d2 < 1/3 on the unit-norm CLS embeddings (DINOv2 is dgm-eval's default space: "
        "Stein et al. 2023, 'Exposing flaws of generative model evaluation metrics'); "
        "--duplicates embedding: cosine >= 0.95 unless --duplicates-threshold"),
    "sscd": Space(
        "sscd", "SSCD copy-detection descriptors (TorchScript)", "sscd:WEIGHTS",
        "resize of the short side to 288, ImageNet mean/std (facebookresearch/sscd-copy-detection "
        "README, 'small_288')",
        "SSCD cosine similarity > 0.5 = replication (Somepalli et al. 2023, CVPR, 'Diffusion Art "
        "or Digital Forgery?'): --duplicates embedding defaults to 0.5 in this space; d1/d2 < 1/3 "
        "on the unit-norm descriptors for the ratio", duplicates_threshold=0.5),
    "inception": Space(
        "inception", "Inception-v3 pool3 features (torchvision)", "inception:WEIGHTS",
        "resize 342 (bilinear), centre crop 299, ImageNet mean/std, transform_input=True "
        "(torchvision Inception_V3_Weights.IMAGENET1K_V1.transforms())",
        "d1/d2 < 1/3 on the unit-norm 2048-d pool3 features (the space of FID, Heusel et al. "
        "2017); --duplicates embedding: cosine >= 0.95 unless --duplicates-threshold"),
}


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed ``--features`` value: the extractor, its local weights file, the CLIP model."""

    extractor: str
    weights: Path | None = None
    model: str | None = None
    tag: str | None = None

    @property
    def space(self) -> Space:
        return SPACES[self.extractor]

    def to_dict(self) -> dict:
        return {"extractor": self.extractor, "weights": None if self.weights is None
                else str(self.weights), "model": self.model, "tag": self.tag}


def _usage() -> str:
    return ", ".join(s.spec for s in SPACES.values())


def parse_features(text, option: str = "features") -> FeatureSpec:
    """Parse a ``--features`` value and check its weights file; one-line errors name the fix.

    Refused: an unknown extractor, a missing file, a URL, a hub name or pretrained tag in place of
    a file (``clip:ViT-B-32=openai``, ``dinov2:facebook/dinov2-small``).
    """
    if isinstance(text, FeatureSpec):
        return text
    text = "pixels" if text is None else str(text).strip()
    name, sep, rest = text.partition(":")
    name = name.strip().lower()
    if name not in SPACES:
        raise ValueError(f"{option} {text!r}: unknown extractor {name!r}; use one of "
                         f"{_usage()}")
    if name == "pixels":
        if sep:
            raise ValueError(f"{option} 'pixels' takes no weights, got {text!r}")
        return FeatureSpec("pixels")
    what = f"{option} {name}"
    model = tag = None
    if name == "clip":
        model, eq, rest = rest.partition("=")
        model = model.strip()
        if not eq or not model:
            raise ValueError(f"{what} needs MODEL=WEIGHTS (an open_clip model name and a local "
                             f"file), e.g. clip:ViT-B-32=/models/vit_b_32.safetensors; "
                             f"got {text!r}")
        model, at, tag = model.partition("@")
        tag = tag or None
        if model.startswith(("hf-hub:", "hf_hub:")) or "/" in model:
            raise ValueError(f"{what}: {model!r} is a hub model; memaudit never downloads: give "
                             f"an open_clip model name built in (open_clip.list_models(), e.g. "
                             f"ViT-B-32) and a local weights file")
    elif "=" in rest and not Path(rest).expanduser().exists():
        raise ValueError(f"{what} takes a weights file only ({name}:WEIGHTS), got {text!r}")
    if not rest.strip():
        raise ValueError(f"{what} needs a local weights file: {SPACES[name].spec}")
    path = local_weights(rest.strip(), what)
    return FeatureSpec(name, path, model, tag)


def check_device(device: str, option: str = "device") -> str:
    """``device``, refused in one line when it is not cpu/cuda or CUDA is not available."""
    if device not in DEVICES:
        raise ValueError(f"{option} must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        try:
            import torch
        except ImportError:
            raise ImportError(f"{option} cuda needs torch: pip install 'memaudit[torch]'") from None
        if not torch.cuda.is_available():
            raise ValueError(f"{option} cuda: torch finds no CUDA device "
                             f"(torch.cuda.is_available() is False); use --device cpu")
    return device


def _torch():
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise ImportError("feature extractors need torch and torchvision: pip install "
                          "'memaudit[features]'") from exc
    return torch


class _ToRGB:
    """PIL image -> mode RGB (grayscale replicated), as open_clip's ``_convert_to_rgb``."""

    def __call__(self, image):
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _transform(steps):
    from torchvision import transforms as T

    return T.Compose([_ToRGB(), *steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _load_strict(net, state: dict, path: Path, what: str, fix: str) -> None:
    """``net.load_state_dict(state, strict=True)``, a mismatch refused in one line."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        if len(detail) > 240:
            detail = detail[:240] + "..."
        raise ValueError(f"weights file {path} does not match {what}: {detail}; {fix}") from None


class _Encoder(ImageEncoder):
    """Common construction of the three encoders that read a file into a torch module."""

    def _setup(self, spec: FeatureSpec, net, preprocess, preprocess_key: str, model_name: str,
               *, device, batch_size, cache_dir, progress, torch):
        self.spec = spec
        self.model_name = model_name
        self.weights = spec.weights
        self.net = net.to(device).eval()
        self.preprocess = preprocess
        self.preprocess_key = f"{preprocess_key}\n{preprocess!r}"
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = progress
        self._ready(torch)

    def _forward(self, batch):
        return self.net(batch)


_DINOV2_SIZES = {384: "small", 768: "base", 1024: "large", 1536: "giant"}
_DINOV2_FIX = ("dinov2 takes a DINOv2 backbone state dict: "
               "dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth of facebookresearch/dinov2, or timm's "
               "vit_*_patch14_dinov2 weights")


class DinoV2Encoder(_Encoder):
    """DINOv2 CLS-token embeddings: timm's ``vit_*_patch14_dinov2`` loading a local state dict.

    The architecture is read from the file: the width gives small / base / large / giant, the
    number of blocks the depth (so a tiny random file loads through the same path), a
    ``register_tokens`` / ``reg_token`` entry the ``_reg4`` variant. The model is built with
    ``pretrained=False`` and ``dynamic_img_size=True`` (the 37 x 37 position grid of the released
    518-pixel weights is resampled by timm for 224-pixel inputs); the file's keys are mapped by
    timm's own ``checkpoint_filter_fn`` (it drops ``mask_token``) and loaded strictly. The feature
    is the final-norm CLS token (``x_norm_clstoken`` of facebookresearch/dinov2).
    """

    extractor = "dinov2"

    def __init__(self, spec: FeatureSpec, *, device="cpu", batch_size=64, cache_dir=None,
                 progress=None):
        torch = _torch()
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn
        from torchvision import transforms as T

        state = read_state_dict(spec.weights, torch)
        for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
            if key not in state:
                raise ValueError(f"weights file {spec.weights} does not match DINOv2: it holds no "
                                 f"{key!r}; {_DINOV2_FIX}")
        width = int(state["cls_token"].shape[-1])
        patch = tuple(state["patch_embed.proj.weight"].shape[-2:])
        if width not in _DINOV2_SIZES or patch != (14, 14):
            raise ValueError(f"weights file {spec.weights} does not match DINOv2: width {width}, "
                             f"patch {patch} (DINOv2 is 384/768/1024/1536 wide, patch 14); "
                             f"{_DINOV2_FIX}")
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        if not blocks:
            raise ValueError(f"weights file {spec.weights} does not match DINOv2: no blocks.N "
                             f"entries; {_DINOV2_FIX}")
        reg = "reg_token" in state or "register_tokens" in state
        arch = f"vit_{_DINOV2_SIZES[width]}_patch14_{'reg4_' if reg else ''}dinov2"
        depth = max(blocks) + 1
        net = timm.create_model(arch, pretrained=False, depth=depth, num_classes=0,
                                dynamic_img_size=True)
        state = checkpoint_filter_fn(state, net)
        _load_strict(net, state, spec.weights, f"timm {arch} (depth {depth})", _DINOV2_FIX)
        # facebookresearch/dinov2, dinov2/data/transforms.py: make_classification_eval_transform
        pre = _transform([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                          T.CenterCrop(224)])
        self._setup(spec, net, pre, "dinov2-eval-v1", f"{arch}-depth{depth}", device=device,
                    batch_size=batch_size, cache_dir=cache_dir, progress=progress, torch=torch)


_SSCD_FIX = ("sscd takes the published TorchScript file (sscd_disc_mixup.torchscript.pt and "
             "siblings from facebookresearch/sscd-copy-detection), not a state dict")


class SSCDEncoder(_Encoder):
    """SSCD copy-detection descriptors from the published TorchScript file.

    The file is read with ``torch.jit.load`` (TorchScript: its code runs in the TorchScript
    interpreter, not as Python pickles; load only files whose SHA-256 you checked). Preprocessing
    is the repository's ``small_288``: resize of the short side to 288, ImageNet mean/std.
    Descriptors are L2-normalised (the published models normalise already; doing it again is a
    no-op), so cosine similarity is their dot product.
    """

    extractor = "sscd"

    def __init__(self, spec: FeatureSpec, *, device="cpu", batch_size=64, cache_dir=None,
                 progress=None):
        torch = _torch()
        from torchvision import transforms as T

        try:
            with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; the file is one
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(spec.weights), map_location="cpu")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = first.split(". ")[0]
            raise ValueError(f"weights file {spec.weights} is not a TorchScript module "
                             f"(torch.jit.load: {first[:160]}); {_SSCD_FIX}") from None
        # facebookresearch/sscd-copy-detection README: small_288
        pre = _transform([T.Resize(288)])
        self._setup(spec, net, pre, "sscd-small288-v1", f"sscd-{spec.weights.name}",
                    device=device, batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                    torch=torch)


_INCEPTION_FIX = ("inception takes torchvision's Inception-v3 state dict "
                  "(inception_v3_google-0cc3c7bd.pth, Inception_V3_Weights.IMAGENET1K_V1)")


class InceptionEncoder(_Encoder):
    """torchvision's Inception-v3 pool3 features (2048-d, before dropout and fc).

    Built with ``weights=None`` (``init_weights=False``, ``transform_input=True`` as torchvision
    sets for its ImageNet weights) and the local state dict loaded strictly; the auxiliary
    classifier is built when the file holds it. Preprocessing is torchvision's
    ``Inception_V3_Weights.IMAGENET1K_V1.transforms()``: resize 342 (bilinear), centre crop 299,
    ImageNet mean/std. (FID's TF-ported network, pt_inception-2015-12-05, is another file and
    another architecture variant: it is refused as a mismatch.)
    """

    extractor = "inception"

    def __init__(self, spec: FeatureSpec, *, device="cpu", batch_size=64, cache_dir=None,
                 progress=None):
        torch = _torch()
        from torchvision import models
        from torchvision import transforms as T

        state = read_state_dict(spec.weights, torch)
        aux = any(k.startswith("AuxLogits.") for k in state)
        net = models.inception_v3(weights=None, aux_logits=aux, init_weights=False,
                                  transform_input=True)
        _load_strict(net, state, spec.weights, "torchvision inception_v3", _INCEPTION_FIX)
        net.fc = torch.nn.Identity()  # pool3: avgpool -> flatten -> (dropout, eval: identity)
        pre = _transform([T.Resize(342, interpolation=T.InterpolationMode.BILINEAR),
                          T.CenterCrop(299)])
        self._setup(spec, net, pre, "inception-imagenet1k-v1", "inception_v3", device=device,
                    batch_size=batch_size, cache_dir=cache_dir, progress=progress, torch=torch)

    def _forward(self, batch):
        out = self.net(batch)
        return out.logits if hasattr(out, "logits") else out


def _clip(spec: FeatureSpec, **kw):
    from .clip import ClipEncoder

    return ClipEncoder(spec.model, spec.weights, tag=spec.tag, **kw)


_BUILDERS = {"clip": _clip, "dinov2": DinoV2Encoder, "sscd": SSCDEncoder,
             "inception": InceptionEncoder}


def build_encoder(spec, *, device: str = "cpu", cache_dir=None, batch_size: int = 64,
                  progress=None) -> ImageEncoder | None:
    """The encoder of a ``--features`` value, weights loaded (None for pixels).

    Parameters
    ----------
    spec : str or FeatureSpec
    device : {"cpu", "cuda"}
    cache_dir : path or None
        Root of the feature cache (None: no cache).

    Returns
    -------
    ImageEncoder or None
    """
    spec = parse_features(spec)
    if spec.extractor == "pixels":
        return None
    check_device(device)
    return _BUILDERS[spec.extractor](spec, device=device, cache_dir=cache_dir,
                                     batch_size=batch_size, progress=progress)


def _images(ds, name: str, chunk: int):
    """The images of a harmonized Dataset, ``chunk`` at a time, as floats in [0, 1]."""
    conv = ds.convention
    if conv is None or conv.kind != "pixels" or conv.image_shape is None:
        what = "features" if conv is None or conv.kind != "pixels" else "pixels of unknown shape"
        raise ValueError(f"features (--features) encodes images, but {name} are {what}; give "
                         f"images (a folder or an image-shaped array) or --features pixels")
    if conv.value_range is None:
        raise ValueError(f"features (--features): the pixel range of {name} is unknown; declare "
                         f"it with --range {name}=LO,HI")
    lo, hi = (float(v) for v in conv.value_range)
    h, w, c = conv.image_shape
    shape = (c, h, w) if conv.layout == "CHW" else (h, w, c)
    for s in range(0, len(ds), chunk):
        x = np.asarray(ds.x[s : s + chunk]).reshape((-1,) + shape)
        if conv.layout == "CHW":
            x = np.moveaxis(x, 1, -1)
        if x.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
            yield x  # 8-bit pixels already: as they are
        else:
            yield np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def encode_dataset(encoder: ImageEncoder, ds, name: str = "data", chunk: int = 256) -> np.ndarray:
    """Features of every image of a harmonized :class:`memaudit.Dataset`, read ``chunk`` at a time
    (256 images of 256 x 256 x 3 hold 200 MB as float32).

    The pixels are mapped from the set's declared range to [0, 1] and rounded to 8 bits (as a PNG
    holds them) before the encoder's own preprocessing.
    """
    return encoder.encode_chunks(_images(ds, name, chunk), total=len(ds))
