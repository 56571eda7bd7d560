"""Lumina's flow-matching ODE sampler as Tar-Lumina2 runs it: Euler on a shifted time grid.

Linear path, velocity prediction, t = 0 is noise and t = 1 is data. The grid is ``linspace(0, 1, N)`` warped by
``t / (t + s - s t)`` (s = 6 in Tar), which spends most steps near the noise end; fixed-grid Euler (torchdiffeq's
``method="euler"``) then makes N - 1 model calls.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(num_points: int, shift: float | None = 6.0) -> torch.Tensor:
    """The N time points (fp32, ascending from 0 to 1). `shift` None or 0 leaves the grid uniform, as upstream."""
    if num_points < 2:
        raise ValueError(f"need at least 2 time points (1 model call), got {num_points}")
    if shift is not None and shift < 0:
        raise ValueError(f"time shift must be positive (or None / 0 for none), got {shift}")
    t = torch.linspace(0, 1, num_points, dtype=torch.float32)
    if shift:
        t = t / (t + shift - shift * t)  # same op order as upstream, so the fp32 grid matches bit for bit
    return t


def euler_sample(velocity: Velocity, x: torch.Tensor, grid: torch.Tensor,
                 callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
                 ) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) over `grid` with Euler steps; state and velocities in fp32.

    `velocity` gets x (B, ...) and t (B,); `callback(i, t_i, x_i, v_i)` sees every call (for inspection).
    """
    x = x.float()
    grid = grid.to(device=x.device, dtype=torch.float32)
    for i in range(len(grid) - 1):
        t0, t1 = grid[i], grid[i + 1]
        v = velocity(x, t0.expand(x.shape[0])).float()
        if callback is not None:
            callback(i, t0, x, v)
        x = x + (t1 - t0) * v
    return x
