"""The inner network: a diffusers ``UNet2DModel`` conditioned on context frames, actions and noise level."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from worldvid.model.config import WorldModelConfig

# c_noise = ln(sigma)/4 lies in about [-1.6, 0.8] for the noise levels used (2e-3 .. 20). diffusers'
# positional projection multiplies its input by frequencies 1 .. 1e-4 (DDPM, tuned for timesteps in
# [0, 1000]); fed raw, only its first few frequencies would vary. This affine map sends c_noise in
# [-2, 2] (sigma in [3.4e-4, 2981]) onto [0, 1000], so every frequency band carries information.
TIMESTEP_SCALE = 250.0
TIMESTEP_SHIFT = 2.0


def c_noise_to_timestep(c_noise: Tensor) -> Tensor:
    """Map EDM's c_noise = ln(sigma)/4 to the [0, 1000] range of diffusers' positional timestep embedding."""
    return TIMESTEP_SCALE * (c_noise + TIMESTEP_SHIFT)


class ActionUNet(nn.Module):
    """UNet2DModel over [noisy next frame | K context frames] stacked on channels, conditioned DIAMOND-style.

    The noise level enters as the UNet's timestep. The last K actions (flattened) and the context-noise
    level go through an MLP to the time-embedding width and are added to the noise embedding (diffusers'
    ``class_embed_type="identity"``); the sum drives a scale/shift of every residual block
    (``resnet_time_scale_shift="scale_shift"``, i.e. adaptive GroupNorm).
    """

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        levels = len(c.block_channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if c.attention:
            down[-1] = "AttnDownBlock2D"
            up[0] = "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=c.frame_size,
            in_channels=c.channels * (c.context + 1),
            out_channels=c.channels,
            time_embedding_type="positional",
            time_embedding_dim=c.time_embed_dim,
            flip_sin_to_cos=True,
            freq_shift=0,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            block_out_channels=tuple(c.block_channels),
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_groups,
            attention_head_dim=None,  # one head as wide as the block
            add_attention=c.attention,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )
        self.action_embedding = nn.Sequential(
            nn.Linear(c.context * c.action_dim + 1, c.action_embed_dim),
            nn.SiLU(),
            nn.Linear(c.action_embed_dim, c.time_embed_dim),
        )
        # Start as D(x) = c_skip * x: the skip path alone is the best guess before any training (EDM/ADM).
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)

    def forward(
        self,
        x_noisy: Tensor,
        c_noise: Tensor,
        context: Tensor,
        actions: Tensor,
        context_noise: Tensor | None = None,
    ) -> Tensor:
        """Predict the (preconditioned) network output F.

        x_noisy: float [B, C, H, W], the scaled noisy next frame (c_in * x).
        c_noise: float [B], ln(sigma)/4.
        context: float [B, C*K, H, W], context frames (oldest first) stacked on channels.
        actions: float [B, K, A], the action taken from each context frame.
        context_noise: float [B] or None (0), std of the noise added to the context during training.
        Returns float [B, C, H, W].
        """
        b = x_noisy.shape[0]
        if context_noise is None:
            context_noise = torch.zeros(b, device=x_noisy.device, dtype=torch.float32)
        level = context_noise.to(torch.float32)
        if self.config.context_noise_max > 0:
            level = level / self.config.context_noise_max  # in [0, 1] during training, 0 at inference
        cond = torch.cat([actions.reshape(b, -1).to(torch.float32), level.reshape(b, 1)], dim=1)
        action_emb = self.action_embedding(cond)
        sample = torch.cat([x_noisy, context], dim=1)
        timestep = c_noise_to_timestep(c_noise.reshape(b).to(torch.float32))
        return self.unet(sample, timestep, class_labels=action_emb, return_dict=False)[0]
