"""What a run of the reference DDPM is: its config, and the model that a config builds.

``TrainConfig`` is written to config.json and into the metadata of every checkpoint;
``build_model`` turns a config into its (untrained, seeded) network. Both sit below ``checkpoints``
and ``train`` so that a checkpoint can be read back into a model without the training loop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

from .mlp import ResidualMLP
from .unet import UNet

__all__ = ["TrainConfig", "build_model"]


@dataclass
class TrainConfig:
    """Everything a run depends on (written to config.json and into every checkpoint)."""

    data: str = "digits"  # digits | mnist | celeba | gmm (SM B) | ts-<family> (time-series windows)
    data_dir: str | None = None  # CelebA folder
    image_size: int = 8
    gmm_dim: int = 8  # d of the Gaussian mixture
    model: str = "unet"  # unet (images; 1-D for ts-* data) | mlp (the SM B residual MLP, vectors)
    objective: str = "ddpm"  # ddpm (epsilon prediction) | flow (conditional flow matching, rectified flow)
    seq_len: int = 64  # time-series window length
    n_train: int = 64
    n_holdout: int = 256
    width: int = 16
    mults: tuple = (1, 2)
    attention: tuple = (False, True)
    n_res: int = 2
    dropout: float = 0.1
    n_steps_diffusion: int = 1000
    optimizer: str = "adam"  # sgd (momentum, the paper's default) | adam
    lr: float = 1e-3
    momentum: float = 0.95
    batch_size: int = 128  # the batch is min(n_train, batch_size)
    noise_draws: int = 1  # m: each batch item enters the loss m times with fresh (t, noise)
    steps: int = 2000
    n_checkpoints: int = 20
    first_checkpoint: int = 1  # the log-spaced checkpoint grid runs from here to ``steps``
    eval_index: int = 40
    eval_draws: int = 5
    seed: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @classmethod
    def gmm(cls, **overrides) -> "TrainConfig":
        """The paper's Gaussian-mixture setting (SM B): d = 8, residual MLP W = 128, full batch, Adam 6e-4."""
        base = dict(data="gmm", model="mlp", gmm_dim=8, width=128, optimizer="adam", lr=6e-4,
                    batch_size=1 << 30, dropout=0.0, n_holdout=2000)
        base.update(overrides)
        return cls(**base)

    @property
    def sample_shape(self) -> tuple:
        """The shape of one item: (d,) for the mixture, (1, S, S) for images, (1, L) for series;
        flat, (S * S,) or (L,), for the MLP (which ``prepare_data`` feeds flat vectors)."""
        if self.data == "gmm":
            return (self.gmm_dim,)
        if self.model == "mlp":
            return (self.seq_len if self.data.startswith("ts-") else self.image_size**2,)
        if self.data.startswith("ts-"):
            return (1, self.seq_len)
        return (1, self.image_size, self.image_size)

    @classmethod
    def paper(cls, **overrides) -> "TrainConfig":
        """The paper's CelebA configuration (SM A.1): W = 32, 32x32, SGD 0.01 momentum 0.95, B = 512."""
        base = dict(data="celeba", image_size=32, width=32, mults=(1, 2, 4),
                    attention=(False, True, True), optimizer="sgd", lr=0.01, momentum=0.95,
                    batch_size=512, steps=2_000_000, n_checkpoints=40, n_holdout=2048)
        base.update(overrides)
        return cls(**base)

    def to_json(self) -> str:
        d = asdict(self)
        d["mults"], d["attention"] = list(self.mults), list(self.attention)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        d["mults"], d["attention"] = tuple(d["mults"]), tuple(d["attention"])
        return cls(**d)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The untrained network of ``cfg``: the U-Net (2-D for images, 1-D for ``ts-*`` windows) or the
    SM B residual MLP. The initial weights depend on ``cfg.seed`` only (the global torch seed is set).
    """
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    if cfg.model == "mlp":
        dim = {"gmm": cfg.gmm_dim}.get(cfg.data, cfg.seq_len if cfg.data.startswith("ts-")
                                       else cfg.image_size**2)
        return ResidualMLP(dim, cfg.width, 3, cfg.n_steps_diffusion)
    if cfg.model != "unet":
        raise ValueError(f"model must be 'unet' or 'mlp', got {cfg.model!r}")
    if cfg.data == "gmm":
        raise ValueError("the Gaussian mixture is vector data: use model='mlp'")
    dims = 1 if cfg.data.startswith("ts-") else 2
    return UNet(cfg.width, cfg.mults, cfg.attention, cfg.n_res, 1, cfg.dropout, cfg.n_steps_diffusion,
                dims=dims)
