"""Stateless EDM samplers (Karras et al. 2022) with one signature: ``sample_x(model, x, sigmas, **cond) -> x``.

``model(x, sigma, **cond)`` returns the denoised estimate D(x; sigma) for x float [B, ...] and sigma float
[B]. Samplers hold no state between calls; randomness lives only in the initial noise the caller draws
(use ``randn`` with a ``torch.Generator`` for reproducible samples).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

DenoiseFn = Callable[..., Tensor]


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | str | None = None) -> Tensor:
    """Noise levels of Karras et al. (2022), eq. 5: n levels from sigma_max down to sigma_min, then 0. float32 [n+1]."""
    if n < 1:
        raise ValueError(f"need at least 1 sampling step, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


def sample_euler(model: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], **cond: Any) -> Tensor:
    """Euler method for the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, Alg. 1 first order)."""
    levels = _levels(sigmas)
    for s, s_next in zip(levels[:-1], levels[1:]):
        d = (x - model(x, _full(x, s), **cond)) / s
        x = x + d * (s_next - s)
    return x


def sample_heun(model: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], **cond: Any) -> Tensor:
    """Heun's 2nd-order method for the probability-flow ODE (Karras et al. 2022, Alg. 1; Euler on the step to 0)."""
    levels = _levels(sigmas)
    for s, s_next in zip(levels[:-1], levels[1:]):
        d = (x - model(x, _full(x, s), **cond)) / s
        x_euler = x + d * (s_next - s)
        if s_next == 0:
            x = x_euler
        else:
            d_next = (x_euler - model(x_euler, _full(x, s_next), **cond)) / s_next
            x = x + (d + d_next) / 2 * (s_next - s)
    return x


SAMPLER_FUNCTIONS: dict[str, Callable[..., Tensor]] = {"euler": sample_euler, "heun": sample_heun}


def randn(shape: Sequence[int], generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn from ``generator`` even if it lives on another device."""
    if generator is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    noise = torch.randn(*shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def _levels(sigmas: Tensor | Sequence[float]) -> list[float]:
    # One host copy up front: branching on the levels must not sync the device at every step.
    if isinstance(sigmas, Tensor):
        if sigmas.ndim != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        sigmas = sigmas.detach().cpu().tolist()
    levels = [float(s) for s in sigmas]
    if len(levels) < 2:
        raise ValueError(f"sigmas must hold at least 2 noise levels, got {levels}")
    if any(not s > 0 for s in levels[:-1]) or not levels[-1] >= 0:
        raise ValueError(f"sigmas must be > 0 (the last may be 0), got {levels}")
    return levels


def _full(x: Tensor, sigma: float) -> Tensor:
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.float32)
