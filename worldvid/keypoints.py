"""Find task objects in frames (real or imagined) by their flat colour: batched, vectorised, device-preserving.

worldvid's tasks render each task-relevant object in one exact colour (``env.unwrapped.object_colors``),
so an object's position in a frame is the centroid of the pixels near that colour. Imagined frames blur
and shift colours a little; the soft weighting below gives such pixels partial weight instead of none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def color_weights(
    frames: ArrayLike,
    colors: ArrayLike | Sequence[Sequence[float]],
    tolerance: float = 60.0,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Per-pixel match weight of each colour: float32 [..., N, H, W] in [0, 1] (torch, on ``frames``' device).

    Args:
        frames: [..., H, W, 3] uint8 (0-255) or float (in ``value_range``), numpy or torch.
        colors: [N, 3] RGB on the 0-255 scale (e.g. ``list(env.unwrapped.object_colors.values())``).
        tolerance: RGB distance (0-255 scale) at which a pixel's weight reaches 0; the weight is
            ``max(0, 1 - (distance / tolerance)^2)``, so exact matches weigh 1.
        value_range: (low, high) that maps to 0-255 for float frames; default (0, 255) for integer frames
            and (0, 1) for float frames (pass (-1, 1) for frames in the diffusion model's range).
    """
    x = torch.as_tensor(frames)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames must have shape [..., H, W, 3], got {tuple(x.shape)}")
    if value_range is None:
        value_range = (0.0, 255.0) if not torch.is_floating_point(x) else (0.0, 1.0)
    low, high = value_range
    if high <= low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = (x.to(dtype) - low) * (255.0 / (high - low))
    palette = torch.as_tensor(np.asarray(colors, dtype=np.float64) if not isinstance(colors, torch.Tensor) else colors)
    palette = palette.to(device=x.device, dtype=dtype)
    if palette.ndim != 2 or palette.shape[-1] != 3:
        raise ValueError(f"colors must have shape [N, 3], got {tuple(palette.shape)}")
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, without materialising [..., H, W, N, 3]
    squared = (x * x).sum(-1).unsqueeze(-3) - 2.0 * torch.einsum("...hwc,nc->...nhw", x, palette)
    squared = squared + (palette * palette).sum(-1)[:, None, None]
    return (1.0 - squared.clamp_min(0.0) / tolerance**2).clamp_min(0.0)


def locate_objects(
    frames: ArrayLike,
    colors: ArrayLike | Sequence[Sequence[float]],
    tolerance: float = 60.0,
    min_mass: float = 1.0,
    value_range: tuple[float, float] | None = None,
    fill: float = float("nan"),
) -> tuple[ArrayLike, ArrayLike]:
    """Colour-matched centroid of each object in each frame.

    Args:
        frames: [..., H, W, 3] uint8 (0-255) or float (in ``value_range``; see ``color_weights``),
            numpy or torch; any leading batch shape, e.g. [B, T, H, W, 3] imagined rollouts.
        colors: [N, 3] the objects' RGB on the 0-255 scale.
        tolerance: RGB distance (0-255 scale) beyond which a pixel does not count (soft weight within).
        min_mass: the summed pixel weight an object needs to count as visible (about its pixel count).
        value_range: see ``color_weights``.
        fill: position reported for objects that are not visible (NaN by default, so misuse is loud).

    Returns:
        positions: float32 [..., N, 2] (row, col) in pixels, pixel (i, j)'s centre being (i, j) (the
            convention of ``env.unwrapped.object_pixel_positions()``); ``fill`` where not visible.
        visible: bool [..., N], whether the matched mass reaches ``min_mass``.
        Both are numpy if ``frames`` is numpy, else torch tensors on ``frames``' device.
    """
    is_numpy = not isinstance(frames, torch.Tensor)
    weights = color_weights(frames, colors, tolerance, value_range)  # [..., N, H, W]
    height, width = weights.shape[-2:]
    rows = torch.arange(height, device=weights.device, dtype=weights.dtype)
    cols = torch.arange(width, device=weights.device, dtype=weights.dtype)
    mass = weights.sum((-2, -1))
    row = torch.einsum("...hw,h->...", weights, rows) / mass.clamp_min(1e-12)
    col = torch.einsum("...hw,w->...", weights, cols) / mass.clamp_min(1e-12)
    visible = mass >= min_mass
    positions = torch.stack([row, col], -1).to(torch.float32)
    positions = torch.where(visible.unsqueeze(-1), positions, torch.full_like(positions, fill))
    if is_numpy:
        return positions.numpy(), visible.numpy()
    return positions, visible


def locate_pose(
    frames: ArrayLike,
    color: Sequence[float],
    tolerance: float = 60.0,
    min_mass: float = 1.0,
    value_range: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Position and heading of one object of colour ``color`` from image moments, for an object whose mass is
    spread unevenly along its long axis (a T: bar at one end, stem tip at the other).

    The heading is the principal axis of largest second moment (the T's stem), pointing away from the long
    tail of the mass (the third moment along the axis is made negative: toward the bar). Angles are in the
    frame x = column, y = -row (a top-down camera's world axes), counter-clockwise, 0 when the axis points
    up the image, so a T drawn upright reads 0 and one turned by yaw reads yaw.

    Returns torch tensors on ``frames``' device: position float32 [..., 2] (row, col), yaw float32 [...] in
    [-pi, pi), visible bool [...] (matched mass >= ``min_mass``); invisible objects read (0, 0) and 0.
    """
    x = torch.as_tensor(frames)
    weights = color_weights(x, [color], tolerance, value_range)[..., 0, :, :]  # [..., H, W]
    height, width = weights.shape[-2:]
    rows = torch.arange(height, device=weights.device, dtype=weights.dtype)[:, None].expand(height, width)
    cols = torch.arange(width, device=weights.device, dtype=weights.dtype)[None, :].expand(height, width)
    mass = weights.sum((-2, -1))
    visible = mass >= min_mass
    safe = mass.clamp_min(1e-12)
    row = (weights * rows).sum((-2, -1)) / safe
    col = (weights * cols).sum((-2, -1)) / safe
    dx = cols - col[..., None, None]  # x right
    dy = -(rows - row[..., None, None])  # y up
    mxx, myy, mxy = ((weights * a * b).sum((-2, -1)) / safe for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    axis = 0.5 * torch.atan2(2.0 * mxy, mxx - myy)  # direction of the largest second moment, angle from x
    ux, uy = torch.cos(axis), torch.sin(axis)
    along = dx * ux[..., None, None] + dy * uy[..., None, None]
    skew = (weights * along**3).sum((-2, -1))
    flip = skew > 0  # point the axis away from the long tail
    ux, uy = torch.where(flip, -ux, ux), torch.where(flip, -uy, uy)
    yaw = torch.atan2(-ux, uy)  # the axis is the object's +y: (-sin yaw, cos yaw)
    position = torch.stack([row, col], -1).to(torch.float32)
    position = torch.where(visible.unsqueeze(-1), position, torch.zeros_like(position))
    return position, torch.where(visible, yaw, torch.zeros_like(yaw)).to(torch.float32), visible


def task_objects(env_id: str) -> tuple[list[tuple[float, float, float]], list[str], str | None]:
    """(colours, names, goal object) a task's env class declares (``object_colors``), read without making the env."""
    from worldvid.envs.factory import env_class

    creator = env_class(env_id)
    colors = dict(getattr(creator, "object_colors", {}) or {})
    return [tuple(map(float, c)) for c in colors.values()], list(colors), getattr(creator, "goal_object", None)


def task_has_heading(env_id: str) -> bool:
    """Whether a task's goal includes its goal object's heading (``goal_object_heading``), read without making the env."""
    from worldvid.envs.factory import env_class

    return bool(getattr(env_class(env_id), "goal_object_heading", False))
