"""Frame metrics: PSNR, SSIM, the colour-free moving-part error, and a task-grounded object-position error."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 or float [..., H, W, 3] in [0, 255] -> float64 tensor [..., H, W, 3] in [0, 1]."""
    t = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    return t.to(torch.float64) / 255.0


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, max_db: float = 60.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per frame.

    Args:
        a, b: frames uint8 [..., H, W, 3] (values 0..255).
        max_db: value reported for identical frames (PSNR is infinite there).
    Returns:
        float64 [...]
    """
    mse = ((_as_float(a) - _as_float(b)) ** 2).flatten(-3).mean(-1)
    return torch.clamp(10 * torch.log10(1.0 / mse.clamp_min(1e-12)), max=max_db).numpy()


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, window: int = 7) -> np.ndarray:
    """Structural similarity (Wang et al. 2004, Gaussian window, channels averaged) per frame.

    Args:
        a, b: frames uint8 [..., H, W, 3].
        window: Gaussian window size (7 suits 32x32 frames; it is clipped to the frame size).
    Returns:
        float64 [...] in [-1, 1]; 1 for identical frames.
    """
    x, y = _as_float(a), _as_float(b)
    lead = x.shape[:-3]
    h, w = x.shape[-3:-1]
    size = min(window, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    kernel = _gaussian_window(size)
    # [N*3, 1, H, W]: each colour channel filtered on its own
    x = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = y.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(-1, 3, *ssim_map.shape[-2:]).mean(dim=(1, 2, 3)).reshape(lead).numpy()


MOVING_THRESHOLD = 8
"""A pixel belongs to the moving part when some channel of it differs by more than this (of 255) from the
last context frame in any real frame of the window."""


def moving_mask(last_context: np.ndarray, real: np.ndarray, steps: np.ndarray | None = None,
                threshold: int = MOVING_THRESHOLD) -> np.ndarray:
    """The moving part of each window: the pixels where any real frame differs from the last context frame.

    Args:
        last_context: uint8 [N, H, W, 3], the last frame the model saw.
        real: uint8 [N, T, H, W, 3], the real frames of the window.
        steps: int [N], how many of the T real frames each window has (None: all T); later ones are ignored.
        threshold: a pixel moves when |real - last_context| > threshold in any channel (0..255 levels).
    Returns:
        bool [N, H, W].
    """
    change = np.abs(np.asarray(real, np.int16) - np.asarray(last_context, np.int16)[:, None]).max(-1) > threshold
    if steps is not None:
        change &= (np.arange(change.shape[1])[None, :] < np.asarray(steps)[:, None])[..., None, None]
    return change.any(1)


def moving_part_error(frames: np.ndarray, real: np.ndarray, mask: np.ndarray,
                      steps: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute error per step over the moving part, pooled over the windows that reach the step.

    Task-agnostic: no colours, no objects; static pixels, which dominate PSNR where little moves, do not count.
    Copy-last-frame is scored with ``frames`` = the last context frame repeated, on the same mask.

    Args:
        frames: uint8 [N, T, H, W, 3], imagined (or copied) frames.
        real: uint8 [N, T, H, W, 3].
        mask: bool [N, H, W] (``moving_mask``).
        steps: int [N], the real frames each window has (None: all T).
    Returns:
        float64 [T], in [0, 1] (1 = 255 levels); NaN at a step where no window reaches or nothing moves.
    """
    err = np.abs(np.asarray(frames, np.float64) - np.asarray(real, np.float64)).mean(-1) / 255.0  # [N, T, H, W]
    n, t = err.shape[:2]
    reach = np.ones((n, t), bool) if steps is None else np.arange(t)[None, :] < np.asarray(steps)[:, None]
    weight = reach[..., None, None] & np.asarray(mask, bool)[:, None]  # [N, T, H, W]
    count = weight.sum((0, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (err * weight).sum((0, 2, 3)) / count, np.nan)


def object_position_error(
    imagined: np.ndarray | torch.Tensor,
    real: np.ndarray | torch.Tensor,
    colors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance in pixels between each task object located in imagined and in real frames.

    Objects are found by colour (``worldvid.keypoints.locate_objects``, the task's ``object_colors``).
    An object the real frame shows but the imagined frame lost counts as the frame's diagonal (the worst
    possible error), so a model cannot score well by erasing objects.

    Args:
        imagined, real: uint8 [..., H, W, 3].
        colors: [N, 3] RGB of the objects.
    Returns:
        (error float64 [..., N] in pixels, valid bool [..., N]: the object is visible in the real frame).
    """
    from worldvid.keypoints import locate_objects

    real_pos, real_vis = locate_objects(real, colors)
    imag_pos, imag_vis = locate_objects(imagined, colors)
    real_pos, imag_pos = np.asarray(real_pos, np.float64), np.asarray(imag_pos, np.float64)
    real_vis, imag_vis = np.asarray(real_vis) > 0, np.asarray(imag_vis) > 0
    h, w = np.asarray(real).shape[-3:-1]
    err = np.linalg.norm(imag_pos - real_pos, axis=-1)
    err = np.where(imag_vis, err, float(np.hypot(h, w)))
    return err, real_vis


def heading_error(
    imagined: np.ndarray | torch.Tensor,
    real: np.ndarray | torch.Tensor,
    color: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """|wrapped difference| in radians between one object's heading read from imagined and from real frames.

    The heading comes from image moments (``worldvid.keypoints.locate_pose``: for an object whose shape shows
    it, like PushT's T). An object the imagined frame lost counts as pi (the worst possible error).

    Args:
        imagined, real: uint8 [..., H, W, 3].
        color: RGB of the object.
    Returns:
        (error float64 [...] in radians, valid bool [...]: the object is visible in the real frame).
    """
    from worldvid.envs.tee_geometry import wrap_angle
    from worldvid.keypoints import locate_pose

    _, real_yaw, real_vis = locate_pose(real, color)
    _, imag_yaw, imag_vis = locate_pose(imagined, color)
    err = np.abs(wrap_angle(np.asarray(imag_yaw, np.float64) - np.asarray(real_yaw, np.float64)))
    return np.where(np.asarray(imag_vis), err, np.pi), np.asarray(real_vis)
