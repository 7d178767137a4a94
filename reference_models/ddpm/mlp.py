"""The paper's residual-MLP noise predictor for vector data (Bonnaire et al. 2025, SM B, Fig. 8).

Linear(d -> W), three residual blocks, Linear(W -> d). Each block adds a sinusoidal encoding of the
timestep to its input, then Linear -> GELU -> Linear, a skip from the block input and LayerNorm
(official ``TinyModels.SimpleTimeModel``). Parameter count p = 6 W^2 + W (2d + 13) + d, which is
102,024 for the paper's d = 8, W = 128.
"""

from __future__ import annotations

from torch import nn

from .unet import sinusoidal_table

__all__ = ["ResidualMLP"]


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, h, temb):
        x = h + temb
        return self.norm(h + self.fc2(nn.functional.gelu(self.fc1(x))))


class ResidualMLP(nn.Module):
    """eps(x_t, t) for x of shape (B, d) and integer timesteps t of shape (B,).

    Parameters
    ----------
    dim : int
        Data dimension d.
    width : int, default=128
        Hidden width W.
    n_blocks : int, default=3
    n_steps : int, default=1000
        T, the size of the frozen sinusoidal timestep table (dimension W).
    """

    def __init__(self, dim: int, width: int = 128, n_blocks: int = 3, n_steps: int = 1000):
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(n_blocks))
        self.out = nn.Linear(width, dim)
        self.register_buffer("time_table", sinusoidal_table(n_steps, width), persistent=False)

    def forward(self, x, t):
        if x.ndim != 2:
            raise ValueError(f"ResidualMLP expects (batch, dim) inputs, got shape {tuple(x.shape)}")
        temb = self.time_table[t]
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)
