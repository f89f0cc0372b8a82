"""Which pixels of which context frame, and which action entries, drive a predicted frame; and how faithful that is.

The quantity explained is the next frame's predicted change, as a score S(x) = <f(x) - f(x0), d> / |d|^2 with
d = f(x) - f(x0) and x0 the factorial baseline (``worldvid.explain.factorial``: a static copy of the last frame,
and baseline actions), so S(x) = 1 and S(x0) = 0. The last context frame equals its baseline and gets no
attribution: it is the scene being explained; the features are the pixels of the K-1 earlier frames (channels
together) and the K x A entries of the context actions.

- ``integrated_gradients``: (x - x0) times the mean gradient of S along the straight path from x0 to x (midpoint
  rule), through the sampler in float32 without the uint8 snap (which has no gradient); the attributions sum to
  about S(x) - S(x0) = 1.
- ``occlusion``: S(x) - S(x with one patch, or one action entry, set to its baseline), spread evenly over the
  patch's pixels.
- ``deletion_curve``: S after setting the top-q share of the features (by an attribution, or in a random order)
  to their baseline, for q from 0 to 1. A faithful attribution drops S faster than a random order: the area
  under its curve is smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

NextFrameFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(context float [B, K, C, H, W] in [-1, 1], context_actions float [B, K, A], noise float [B, C, H, W])
-> the predicted next frame float [B, C, H, W]; the noise fixes every random draw."""


@dataclass
class Inputs:
    """One batch of next-frame predictions to explain, with its baseline and noise.

    context, context0: float [B, K, C, H, W]; actions, actions0: float [B, K, A] (the context actions, the last
    one taken now); noise: float [B, C, H, W].
    """

    context: Tensor
    actions: Tensor
    noise: Tensor
    context0: Tensor
    actions0: Tensor

    @property
    def size(self) -> int:
        """B, the number of predictions."""
        return self.context.shape[0]

    def blend(self, frame_keep: Tensor, action_keep: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs mixed with their baseline: frame_keep float [R, B?, K, H, W] or [B, K, H, W] in [0, 1] (1 keeps
        the input), action_keep float [B, K, A] likewise. Returns (context, actions) of the broadcast shape."""
        keep = frame_keep.unsqueeze(-3)  # over channels
        return self.context0 + keep * (self.context - self.context0), self.actions0 + action_keep * (self.actions - self.actions0)


@dataclass
class Attribution:
    """Per prediction: frames float [B, K, H, W] (per pixel, channels summed; the last frame is 0) and actions
    float [B, K, A]; ``method`` names how they were found."""

    frames: Tensor
    actions: Tensor
    method: str

    def features(self) -> Tensor:
        """The attributions as one vector per prediction: float [B, (K-1)*H*W + K*A] (the last frame left out)."""
        return torch.cat([self.frames[:, :-1].flatten(1), self.actions.flatten(1)], dim=1)

    def totals(self) -> dict[str, np.ndarray]:
        """Per prediction: the attribution summed per context frame float64 [B, K] and per action entry [B, K, A]."""
        return {"frames": self.frames.sum((-1, -2)).double().cpu().numpy(), "actions": self.actions.double().cpu().numpy()}


def _direction(f: NextFrameFn, x: Inputs) -> tuple[Tensor, Tensor]:
    """(f(x0) float [B, C, H, W], d / |d|^2 float [B, C, H, W]) with d = f(x) - f(x0); zero where d is 0."""
    with torch.no_grad():
        both = f(torch.cat([x.context, x.context0]), torch.cat([x.actions, x.actions0]), torch.cat([x.noise, x.noise]))
    y, y0 = both.float().chunk(2)
    d = y - y0
    squared = (d * d).flatten(1).sum(1).view(-1, 1, 1, 1)
    return y0, torch.where(squared > 0, d / squared.clamp_min(1e-30), torch.zeros_like(d))


def _score(pred: Tensor, y0: Tensor, direction: Tensor) -> Tensor:
    """S = <pred - f(x0), direction> per row: float [R]."""
    return ((pred.float() - y0) * direction).flatten(1).sum(1)


def _rows(f: NextFrameFn, context: Tensor, actions: Tensor, noise: Tensor, batch: int, grad: bool = False) -> Tensor:
    """f over rows in chunks of ``batch``."""
    outs = []
    for s in range(0, context.shape[0], batch):
        sl = slice(s, s + batch)
        with torch.set_grad_enabled(grad):
            outs.append(f(context[sl], actions[sl], noise[sl]))
    return torch.cat(outs)


def integrated_gradients(f: NextFrameFn, x: Inputs, steps: int = 16, batch: int = 128) -> Attribution:
    """Integrated gradients of S with ``steps`` midpoint points per prediction; ``f`` must be differentiable."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y0, direction = _direction(f, x)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    grad_frames = torch.zeros_like(x.context)
    grad_actions = torch.zeros_like(x.actions)
    rows_per_chunk = max(1, batch // steps)
    for s in range(0, x.size, rows_per_chunk):
        sl = slice(s, s + rows_per_chunk)
        n = x.context[sl].shape[0]
        a = alphas.view(-1, 1, 1, 1, 1, 1)
        ctx = (x.context0[sl] + a * (x.context[sl] - x.context0[sl])).reshape(-1, *x.context.shape[1:])
        act = (x.actions0[sl] + a.view(-1, 1, 1, 1) * (x.actions[sl] - x.actions0[sl])).reshape(-1, *x.actions.shape[1:])
        ctx.requires_grad_(True)
        act.requires_grad_(True)
        with torch.enable_grad():
            pred = f(ctx, act, x.noise[sl].repeat(steps, 1, 1, 1))
            score = _score(pred, y0[sl].repeat(steps, 1, 1, 1), direction[sl].repeat(steps, 1, 1, 1)).sum()
            g_ctx, g_act = torch.autograd.grad(score, (ctx, act))
        grad_frames[sl] = g_ctx.view(steps, n, *x.context.shape[1:]).mean(0)
        grad_actions[sl] = g_act.view(steps, n, *x.actions.shape[1:]).mean(0)
    frames = ((x.context - x.context0) * grad_frames).sum(2)
    return Attribution(frames.detach(), ((x.actions - x.actions0) * grad_actions).detach(), "integrated_gradients")


def occlusion(f: NextFrameFn, x: Inputs, patch: int = 4, batch: int = 256) -> Attribution:
    """Occlusion: the drop of S when one ``patch`` x ``patch`` square of one earlier context frame, or one action
    entry, is set to its baseline; a patch's drop is shared evenly by its pixels."""
    b, k, _, h, w = x.context.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must be a positive divisor of the frame size {h}x{w}, got {patch}")
    y0, direction = _direction(f, x)
    a = x.actions.shape[-1]
    masks_f, masks_a = [], []
    for frame in range(k - 1):
        for i in range(0, h, patch):
            for j in range(0, w, patch):
                m = torch.ones(k, h, w)
                m[frame, i:i + patch, j:j + patch] = 0
                masks_f.append(m)
                masks_a.append(torch.ones(k, a))
    for frame in range(k):
        for entry in range(a):
            m = torch.ones(k, a)
            m[frame, entry] = 0
            masks_f.append(torch.ones(k, h, w))
            masks_a.append(m)
    keep_f, keep_a = torch.stack(masks_f).to(x.context), torch.stack(masks_a).to(x.actions)  # [G, K, H, W], [G, K, A]
    groups = keep_f.shape[0]
    ctx, act = x.blend(keep_f[:, None], keep_a[:, None])  # [G, B, K, C, H, W], [G, B, K, A]
    with torch.no_grad():
        pred = _rows(f, ctx.reshape(-1, *ctx.shape[2:]), act.reshape(-1, *act.shape[2:]),
                     x.noise.repeat(groups, 1, 1, 1), batch)
        drop = 1.0 - _score(pred, y0.repeat(groups, 1, 1, 1), direction.repeat(groups, 1, 1, 1)).view(groups, b)
    frames = torch.zeros(b, k, h, w)
    actions = torch.zeros(b, k, a)
    removed_f, removed_a = 1 - keep_f, 1 - keep_a
    frames += torch.einsum("gb,gkhw->bkhw", drop.cpu(), removed_f.cpu()) / (patch * patch)
    actions += torch.einsum("gb,gka->bka", drop.cpu(), removed_a.cpu())
    return Attribution(frames.to(x.context), actions.to(x.actions), "occlusion")


def _keep_masks(order: Tensor, counts: list[int], k: int, h: int, w: int, a: int) -> tuple[Tensor, Tensor]:
    """Keep masks for deleting the first counts[q] features of ``order`` (long [B, N], features ranked first to
    last): frame masks float [Q, B, K, H, W], action masks float [Q, B, K, A]."""
    b, n = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(b, n))
    keep = torch.stack([(rank >= c).float() for c in counts])  # [Q, B, N]
    pixels = (k - 1) * h * w
    frames = torch.ones(len(counts), b, k, h, w)
    frames[:, :, :-1] = keep[..., :pixels].reshape(len(counts), b, k - 1, h, w)
    return frames, keep[..., pixels:].reshape(len(counts), b, k, a)


def deletion_curve(f: NextFrameFn, x: Inputs, order: Tensor, fractions: np.ndarray, batch: int = 256) -> np.ndarray:
    """S after deleting (setting to baseline) the first ``fractions`` share of the features in ``order`` (long
    [B, (K-1)*H*W + K*A], most important first), for each prediction: float64 [B, Q]."""
    b, k, _, h, w = x.context.shape
    a = x.actions.shape[-1]
    n = (k - 1) * h * w + k * a
    if tuple(order.shape) != (b, n):
        raise ValueError(f"order must be long [B, N] = [{b}, {n}], got {list(order.shape)}")
    y0, direction = _direction(f, x)
    counts = [int(round(q * n)) for q in fractions]
    keep_f, keep_a = _keep_masks(order.cpu(), counts, k, h, w, a)
    ctx, act = x.blend(keep_f.to(x.context), keep_a.to(x.actions))
    q = len(counts)
    with torch.no_grad():
        pred = _rows(f, ctx.reshape(-1, *ctx.shape[2:]), act.reshape(-1, *act.shape[2:]), x.noise.repeat(q, 1, 1, 1), batch)
        scores = _score(pred, y0.repeat(q, 1, 1, 1), direction.repeat(q, 1, 1, 1)).view(q, b)
    return scores.T.double().cpu().numpy()


def attribution_order(attribution: Attribution) -> Tensor:
    """Features ranked by attribution, largest first: long [B, N]."""
    return torch.argsort(attribution.features().cpu(), dim=1, descending=True, stable=True)


def random_order(b: int, n: int, seed: int) -> Tensor:
    """A random ranking of N features per prediction (seeded): long [B, N]."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(b)])


def curve_area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under deletion curves float [B, Q] over ``fractions`` (trapezoids): float64 [B]."""
    return np.trapezoid(curves, fractions, axis=-1)
