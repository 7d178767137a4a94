"""The bundled demo: a full audit on scikit-learn's digits (real 8x8 images shipped in the wheel).

``memaudit demo --stand-in`` (and ``memaudit demo`` without torch) uses this labelled stand-in
instead of a trained model (see ``reference_models/ddpm/demo.py``); the "generated" set is:
held-out digits the audit must not flag, plus perturbed copies of training digits planted at known
positions that it must flag with the right training id. The report says so, and the demo prints how many planted
copies were recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import atomic_savez

__all__ = ["make_demo_data", "DemoData"]

STAND_IN_NOTE = (
    "Demo stand-in: the 'generated' samples are not from a generative model. They are {n_fresh} "
    "real digits held out from training (which should not be flagged) and {n_copies} copies of "
    "training digits ({n_exact} exact, {n_noisy} with Gaussian pixel noise of sigma {noise:g}, "
    "{n_dim} with contrast scaled by {contrast:g}) planted at known positions (which should be "
    "flagged, each with its source training digit). Data: scikit-learn's bundled 8x8 digits, "
    "pixels scaled to [0, 1]."
)


@dataclass(frozen=True)
class DemoData:
    """The demo's sets, with the truth about the planted copies."""

    train: np.ndarray  # (n, 8, 8) float32 in [0, 1]
    train_ids: np.ndarray
    samples: np.ndarray
    sample_ids: np.ndarray
    holdout: np.ndarray
    holdout_ids: np.ndarray
    planted_positions: np.ndarray  # positions in samples
    planted_sources: np.ndarray  # positions in train
    note: str

    def save(self, folder) -> dict:
        """Write train.npz, samples.npz and holdout.npz (each with an ``ids`` array), atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, x, ids in (
            ("train", self.train, self.train_ids),
            ("samples", self.samples, self.sample_ids),
            ("holdout", self.holdout, self.holdout_ids),
        ):
            paths[name] = folder / f"{name}.npz"
            atomic_savez(paths[name], x=x, ids=ids)
        return paths


def make_demo_data(
    n_train: int = 1000,
    n_holdout: int = 300,
    n_fresh: int = 250,
    n_exact: int = 20,
    n_noisy: int = 20,
    n_dim: int = 10,
    noise: float = 0.02,
    contrast: float = 0.95,
    seed: int = 0,
) -> DemoData:
    """Split the 1,797 digits into train / holdout / fresh and plant copies among the fresh ones.

    Ids are the digits' indices in ``sklearn.datasets.load_digits()`` ("digit-123"); planted
    samples are named after their source ("copy-exact-of-digit-123").
    """
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    n_copies = n_exact + n_noisy + n_dim
    if n_train + n_holdout + n_fresh > images.shape[0]:
        raise ValueError(f"the digits set has {images.shape[0]} images; asked for more")
    if n_copies > n_train:
        raise ValueError("more planted copies than training digits")
    rng = np.random.default_rng(seed)
    order = rng.permutation(images.shape[0])
    tr, ho, fr = np.split(order[: n_train + n_holdout + n_fresh], [n_train, n_train + n_holdout])
    sources = rng.choice(n_train, size=n_copies, replace=False)
    copies, copy_ids = [], []
    for j, s in enumerate(sources):
        img = images[tr[s]]
        if j < n_exact:
            kind, out = "exact", img.copy()
        elif j < n_exact + n_noisy:
            kind, out = "noisy", np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
        else:
            kind, out = "contrast", img * contrast
        copies.append(out.astype(np.float32))
        copy_ids.append(f"copy-{kind}-of-digit-{tr[s]}")
    fresh = images[fr]
    samples = np.concatenate([fresh, np.stack(copies)])
    sample_ids = np.array([f"heldout-digit-{i}" for i in fr] + copy_ids)
    perm = rng.permutation(samples.shape[0])
    samples, sample_ids = samples[perm], sample_ids[perm]
    inverse = np.argsort(perm)
    planted_positions = inverse[n_fresh:]
    note = STAND_IN_NOTE.format(n_fresh=n_fresh, n_copies=n_copies, n_exact=n_exact,
                                n_noisy=n_noisy, noise=noise, n_dim=n_dim, contrast=contrast)
    return DemoData(
        train=images[tr],
        train_ids=np.array([f"digit-{i}" for i in tr]),
        samples=samples,
        sample_ids=sample_ids,
        holdout=images[ho],
        holdout_ids=np.array([f"digit-{i}" for i in ho]),
        planted_positions=planted_positions,
        planted_sources=sources,
        note=note,
    )


def planted_recovery(data: DemoData, result) -> dict:
    """How many planted copies were flagged with the right source, and false flags elsewhere."""
    flagged = result.memorized
    pos = data.planted_positions
    right_source = result.nn_index[pos] == data.planted_sources
    others = np.setdiff1d(np.arange(flagged.size), pos)
    return {
        "planted": int(pos.size),
        "planted_flagged_with_right_source": int((flagged[pos] & right_source).sum()),
        "fresh": int(others.size),
        "fresh_flagged": int(flagged[others].sum()),
    }
