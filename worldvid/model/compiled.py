"""The world model's denoiser run through ``torch.compile``: the same weights, its inference call fused by inductor.

Measured on a 2-core AVX2 CPU (fp32, no native bf16), default 32x32 model, one thread: a rollout of 32 candidates
x 6 frames at 1 Euler step 1.02-1.05 s eager, 0.82-0.83 s compiled (1.24-1.27x): inductor fuses the GroupNorm,
SiLU and elementwise work around the convolutions, which take about 72% of an eager call. The first call of each
process pays the compile: about 100 s on those 2 cores, 14 s once inductor's on-disk cache holds the graph
(``TORCHINDUCTOR_CACHE_DIR``, by default under the temp dir; one graph per model config and batch size, a
second batch size compiles a dynamic-shape graph once). Training (``Denoiser.loss``) is not compiled.
"""

from __future__ import annotations

from torch import nn

from worldvid.model.world_model import WorldModel


def compile_denoiser(model: WorldModel, enabled: bool = True) -> WorldModel:
    """Run ``model``'s denoiser calls (sampling and regression predictions) compiled by ``torch.compile``
    (``enabled=False``: eager again). In place: parameters, ``state_dict`` and saved folders are unchanged.
    Returns ``model``."""
    denoiser: nn.Module = model.denoiser
    if enabled and not is_compiled(model):
        denoiser.compile(dynamic=None)
    elif not enabled:
        denoiser._compiled_call_impl = None  # what nn.Module.compile set: back to the eager __call__
    return model


def is_compiled(model: WorldModel) -> bool:
    """Whether ``model``'s denoiser calls run compiled (``compile_denoiser``)."""
    return getattr(model.denoiser, "_compiled_call_impl", None) is not None
