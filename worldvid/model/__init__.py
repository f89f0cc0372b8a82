"""The world model: an EDM-preconditioned, action-conditioned UNet that imagines the next frame.

``WorldModelConfig`` (config.py) -> ``ActionUNet`` (unet.py) inside ``Denoiser`` (denoiser.py), sampled
by the stateless samplers of sampling.py, composed by ``WorldModel`` (world_model.py).
"""

from worldvid.model.config import WorldModelConfig
from worldvid.model.denoiser import Denoiser, Preconditioning, edm_preconditioning
from worldvid.model.sampling import karras_sigmas, randn, sample_euler, sample_heun
from worldvid.model.unet import ActionUNet, c_noise_to_timestep
from worldvid.model.world_model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    WorldModel,
    frames_to_model,
    model_to_frames,
    quantize,
)

__all__ = [
    "ActionUNet",
    "CONFIG_NAME",
    "Denoiser",
    "Preconditioning",
    "WEIGHTS_NAME",
    "WorldModel",
    "WorldModelConfig",
    "c_noise_to_timestep",
    "edm_preconditioning",
    "frames_to_model",
    "karras_sigmas",
    "model_to_frames",
    "quantize",
    "randn",
    "sample_euler",
    "sample_heun",
]
