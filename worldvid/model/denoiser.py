"""EDM preconditioning (Karras et al. 2022) around the action-conditioned UNet: ``loss()`` and ``forward()``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldvid.model.config import WorldModelConfig
from worldvid.model.frame_loss import FrameLoss
from worldvid.model.sampling import randn
from worldvid.model.unet import ActionUNet

@dataclass(frozen=True)
class Preconditioning:
    """EDM scalings for noise levels sigma, each float [B, 1, 1, 1] (c_noise: [B])."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def edm_preconditioning(sigma: Tensor, sigma_data: float) -> Preconditioning:
    """Karras et al. (2022), Table 1: D(x; s) = c_skip x + c_out F(c_in x; c_noise).

    c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4.
    sigma: float [B] (> 0).
    """
    s = sigma.to(torch.float32).reshape(-1)
    sd2 = sigma_data**2
    total = s**2 + sd2
    view = (-1, 1, 1, 1)
    return Preconditioning(
        c_skip=(sd2 / total).reshape(view),
        c_out=(s * sigma_data / total.sqrt()).reshape(view),
        c_in=total.rsqrt().reshape(view),
        c_noise=s.log() / 4,
    )


class Denoiser(nn.Module):
    """D(x; sigma | context, actions): the EDM-preconditioned next-frame denoiser (k-diffusion ``Denoiser`` style).

    Frames in model space are float in [-1, 1], [B, C, H, W]; contexts are [B, K, C, H, W] (oldest first,
    [B, K*C, H, W] also accepted); actions are float [B, K, A], actions[:, i] taken from context[:, i].
    """

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = ActionUNet(config)

    def preconditioning(self, sigma: Tensor) -> Preconditioning:
        """EDM scalings for noise levels sigma float [B], with this model's sigma_data."""
        return edm_preconditioning(sigma, self.config.sigma_data)

    def forward(self, x_noisy: Tensor, sigma: Tensor, context: Tensor, actions: Tensor,
                context_noise: Tensor | None = None) -> Tensor:
        """Denoised estimate of the next frame, float32 [B, C, H, W].

        x_noisy: float [B, C, H, W], next frame plus N(0, sigma^2) noise. sigma: float [B] (or a scalar).
        context_noise: float [B] or None (clean context), std of noise already added to the context.
        """
        sigma = torch.as_tensor(sigma, device=x_noisy.device, dtype=torch.float32).expand(x_noisy.shape[0])
        pc = self.preconditioning(sigma)
        out = self._inner(x_noisy * pc.c_in, pc.c_noise, context, actions, context_noise)
        return pc.c_skip * x_noisy.float() + pc.c_out * out.float()

    def loss(self, next_frame: Tensor, context: Tensor, actions: Tensor,
             generator: torch.Generator | None = None, frame_loss: FrameLoss = FrameLoss(),
             pixel_weights: Tensor | None = None) -> Tensor:
        """EDM training loss (scalar) for one batch, weighted so every noise level has a unit-variance target.

        ln(sigma) ~ N(p_mean, p_std^2), clamped to [sigma_min_train, sigma_max_train]. With lambda(s) =
        1/c_out^2, lambda ||D - x||^2 = ||F - (x - c_skip (x + n)) / c_out||^2, so the net regresses that
        target directly. The context gets N(0, s_c^2) noise, s_c ~ U(0, context_noise_max), and s_c is
        given to the net. A regression model's prediction is scored by ``frame_loss`` itself. With ``pixel_weights``
        (float [B, 1, H, W], ``FrameLoss.pixel_weights``) either loss is a weighted mean over pixels.
        next_frame: float [B, C, H, W] in [-1, 1]; context float [B, K, C, H, W]; actions float [B, K, A].
        """
        c = self.config
        b, device = next_frame.shape[0], next_frame.device
        next_frame = next_frame.float()
        frame_loss.check_objective(c.objective)
        if c.objective == "regression":  # the deterministic baseline: one prediction, no noise
            return frame_loss(self.training_regression(context, actions, generator), next_frame, pixel_weights)
        log_sigma = c.p_mean + c.p_std * randn((b,), generator, device)
        sigma = log_sigma.exp().clamp(c.sigma_min_train, c.sigma_max_train)
        pc = self.preconditioning(sigma)
        x_noisy = next_frame + _per_sample(sigma) * randn(next_frame.shape, generator, device)
        context, context_noise = self._noisy_context(context, generator)
        target = (next_frame - pc.c_skip * x_noisy) / pc.c_out
        out = self._inner(x_noisy * pc.c_in, pc.c_noise, context, actions, context_noise)
        return frame_loss(out.float(), target, pixel_weights)

    def regress(self, context: Tensor, actions: Tensor, context_noise: Tensor | None = None) -> Tensor:
        """The regression objective's prediction of the next frame, float32 [B, C, H, W]: D(0; sigma_max), the
        network given no noisy frame at all, so the context and actions alone decide it (one call, no noise).
        context: float [B, K, C, H, W]; actions: float [B, K, A]; context_noise: as ``forward``."""
        b = context.shape[0]
        shape = (b, self.config.channels, self.config.frame_size, self.config.frame_size)
        zeros = torch.zeros(shape, device=context.device, dtype=torch.float32)
        return self(zeros, torch.full((b,), self.config.sigma_max, device=context.device), context, actions,
                    context_noise)

    def training_regression(self, context: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``regress`` as training runs it, float32 [B, C, H, W]: on the context with training's augmentation
        (``context_noise_max``). context: float [B, K, C, H, W]; actions: float [B, K, A]."""
        context, context_noise = self._noisy_context(context, generator)
        return self.regress(context, actions, context_noise)

    def _noisy_context(self, context: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """Training's context augmentation: N(0, s^2) noise with s ~ U(0, context_noise_max) per sample, and s
        (float [B], None when disabled). context: float [B, K, C, H, W]."""
        c = self.config
        b, device = context.shape[0], context.device
        context = context.float()
        if c.context_noise_max <= 0:
            return context, None
        context_noise = c.context_noise_max * torch.rand(
            b, generator=generator, device=generator.device if generator is not None else device).to(device)
        return context + context_noise.reshape((b,) + (1,) * (context.ndim - 1)) * randn(
            context.shape, generator, device), context_noise

    def _inner(self, x_scaled: Tensor, c_noise: Tensor, context: Tensor, actions: Tensor,
               context_noise: Tensor | None) -> Tensor:
        b = x_scaled.shape[0]
        if context.ndim == 5:
            context = context.reshape(b, -1, *context.shape[-2:])
        # The context frames are scaled like the noisy input (unit-ish variance), as DIAMOND does.
        return self.inner(x_scaled, c_noise, context / self.config.sigma_data, actions, context_noise)



def _per_sample(sigma: Tensor) -> Tensor:
    """sigma float [B] -> [B, 1, 1, 1], to broadcast over frames."""
    return sigma.reshape(-1, 1, 1, 1)
