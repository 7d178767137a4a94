"""The paper's U-Net noise predictor eps(x_t, t) (Bonnaire et al. 2025, SM A.1; official Unet.py).

Levels with channel multipliers (1, 2, 4) of a base width W; ``n_res`` residual blocks per level on
the way down and ``n_res + 1`` on the way up (each consuming one skip connection); GroupNorm(8) +
SiLU; Dropout2d(0.1); 4-head self-attention after the residual blocks of the levels flagged in
``attention`` and in the first bottleneck block; a frozen sinusoidal table over the T timesteps of
dimension W followed by a W -> 4W -> 4W MLP. At W = 32 on 32x32 inputs this has 4.055M parameters
(the paper's ~4M; 32,000 of them in the frozen table), which only the multipliers (1, 2, 4) give.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNet", "sinusoidal_table"]


def sinusoidal_table(n_steps: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding of the integer timesteps 0..n_steps-1, shape (n_steps, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    angles = torch.arange(n_steps, dtype=torch.float32)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SelfAttention(nn.Module):
    """GroupNorm then 4-head self-attention over the H*W positions, added back (residual)."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x):
        b, c = x.shape[:2]
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, positions, C), 1-D or 2-D
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(x.shape)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time embedding per channel, GN-SiLU-dropout-conv, skip; optional attention."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, dropout: float, attention: bool,
                 dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = conv(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.dropout = nn.Dropout2d(dropout) if dims == 2 else nn.Dropout1d(dropout)
        self.conv2 = conv(c_out, c_out, 3, padding=1)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attn = SelfAttention(c_out) if attention else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, temb):
        h = self.conv1(self.act(self.norm1(x)))
        t = self.time(self.act(temb))
        h = h + t.reshape(t.shape + (1,) * (h.ndim - 2))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.attn(h + self.skip(x))


class UNet(nn.Module):
    """eps_theta(x_t, t) for images (B, C, H, W) and integer timesteps t (B,).

    Parameters
    ----------
    width : int
        Base width W (the paper: 8 to 64; 32 by default).
    mults : tuple of int
        Channel multipliers per level (the paper: (1, 2, 4)). H and W must be divisible by
        2 ** (len(mults) - 1).
    attention : tuple of bool
        Self-attention at each level (the paper: (False, True, True)).
    n_res : int
        Residual blocks per level on the way down (n_res + 1 on the way up).
    channels : int
        Image channels (1 for the paper's grayscale CelebA).
    dropout : float
    n_steps : int
        T, the size of the sinusoidal timestep table.
    dims : {2, 1}, default=2
        2 for images (B, C, H, W); 1 for sequences (B, C, L): the same network with 1-D
        convolutions, used by ``reference_models.ts_diffusion`` for time-series windows.
    """

    def __init__(self, width: int = 32, mults=(1, 2, 4), attention=(False, True, True),
                 n_res: int = 2, channels: int = 1, dropout: float = 0.1, n_steps: int = 1000,
                 dims: int = 2):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (sequences) or 2 (images), got {dims}")
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.dims = dims
        if len(attention) != len(mults):
            raise ValueError(f"attention needs one flag per level: {len(mults)} levels, "
                             f"got {len(attention)} flags")
        if width % 8:
            raise ValueError(f"width must be a multiple of 8 (GroupNorm with 8 groups), got {width}")
        t_dim = 4 * width
        self.levels = len(mults)
        self.time_table = nn.Embedding.from_pretrained(sinusoidal_table(n_steps, width), freeze=True)
        self.time_mlp = nn.Sequential(nn.Linear(width, t_dim), nn.GELU(), nn.Linear(t_dim, t_dim))
        self.first = conv(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [width]
        c = width
        for level, (m, att) in enumerate(zip(mults, attention)):
            for _ in range(n_res):
                self.down.append(ResBlock(c, width * m, t_dim, dropout, att, dims))
                c = width * m
                skips.append(c)
            if level < self.levels - 1:
                self.down.append(conv(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, t_dim, dropout, True, dims),
                                  ResBlock(c, c, t_dim, dropout, False, dims)])
        self.up = nn.ModuleList()
        for level in reversed(range(self.levels)):
            for _ in range(n_res + 1):
                self.up.append(ResBlock(c + skips.pop(), width * mults[level], t_dim, dropout,
                                        attention[level], dims))
                c = width * mults[level]
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             conv(c, c, 3, padding=1)))
        self.final = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), conv(c, channels, 3, padding=1))

    def forward(self, x, t):
        side = 2 ** (self.levels - 1)
        if x.ndim != self.dims + 2:
            raise ValueError(f"a {self.dims}-D U-Net takes inputs of {self.dims + 2} dimensions "
                             f"(batch, channels, {'H, W' if self.dims == 2 else 'length'}), got "
                             f"shape {tuple(x.shape)}")
        if any(s % side for s in x.shape[2:]):
            raise ValueError(f"{'image' if self.dims == 2 else 'sequence'} size "
                             f"{tuple(x.shape[2:])} must be divisible by {side} "
                             f"for a {self.levels}-level U-Net")
        temb = self.time_mlp(self.time_table(t))
        h = self.first(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.final(h)

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
