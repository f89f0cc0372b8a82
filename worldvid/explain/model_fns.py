"""A world model as the functions the explanations call: a rollout and a next-frame predictor with explicit noise."""

from __future__ import annotations

from torch import Tensor

from worldvid.explain.attribution import NextFrameFn
from worldvid.explain.factorial import RolloutFn
from worldvid.model import WorldModel
from worldvid.model.sampling import SAMPLER_FUNCTIONS


def model_rollout(model: WorldModel) -> RolloutFn:
    """``model.rollout`` on float model-space inputs with the given noise: exactly what the model imagines (its
    precision, its snap to the uint8 grid). Inputs as ``RolloutFn``; returns float [B, T, C, H, W]."""

    def rollout(context: Tensor, past_actions: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
        return model.rollout(context, past_actions, actions, noise=noise)

    return rollout


def model_next_frame(model: WorldModel, differentiable: bool = False) -> NextFrameFn:
    """The model's next-frame prediction as ``NextFrameFn``. Not differentiable: ``model.predict_next`` (what the
    model imagines). Differentiable: the same sampler in float32 through autograd, without the uint8 snap (it has
    no gradient) and without autocast: what integrated gradients can follow."""
    if not differentiable:
        def predict(context: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
            return model.predict_next(context, actions, noise=noise)

        return predict
    sampler = SAMPLER_FUNCTIONS[model.config.sampler]

    def predict_with_grad(context: Tensor, actions: Tensor, noise: Tensor) -> Tensor:
        context, actions = context.to(model.device), actions.to(model.device)
        if model.config.objective == "regression":
            return model.frame_of(model.denoiser.regress(context, actions), context)
        sigmas = model.sigmas()
        x = noise.to(model.device, dtype=sigmas.dtype) * sigmas[0]
        return model.frame_of(sampler(model.denoiser, x, sigmas, context=context, actions=actions), context)

    return predict_with_grad
