"""The deterministic baseline (``WorldModelConfig(objective="regression")``): the same network predicting the next
frame in one call, trained by mean squared error; opt-in, so existing configs load as diffusion models."""

from __future__ import annotations

import pytest
import torch

from conftest import fast, tiny_config
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.optim import read_metrics
from worldvid.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_objective_is_opt_in_and_checked():
    saved = tiny_config().to_dict()
    saved.pop("objective")  # a config.json written before the field existed
    assert WorldModelConfig.from_dict(saved).objective == "diffusion"
    with pytest.raises(ValueError, match="objective must be one of \\('diffusion', 'regression'\\), got 'gan'"):
        tiny_config().replace(objective="gan")


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, 4, 3, 16, 16, generator=g) * 2 - 1, torch.randn(3, 4, 2, generator=g),
            torch.randn(3, 5, 2, generator=g))


def test_a_regression_model_is_deterministic_and_makes_one_network_call_per_frame():
    model = WorldModel(tiny_config().replace(objective="regression", num_steps=3))
    calls = []
    model.denoiser.inner.register_forward_hook(lambda *_: calls.append(1))
    context, past, actions = _inputs()
    a = model.rollout(context, past, actions, generator=torch.Generator().manual_seed(1))
    b = model.rollout(context, past, actions, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.shape == (3, 5, 3, 16, 16)
    assert len(calls) == 2 * 5  # one call per imagined frame, whatever num_steps says
    diffusion = WorldModel(tiny_config())
    with torch.no_grad():
        for p in diffusion.parameters():
            p.add_(0.1)
    c = diffusion.rollout(context, past, actions, generator=torch.Generator().manual_seed(1))
    d = diffusion.rollout(context, past, actions, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)  # the diffusion model's samples depend on the noise


def test_a_regression_model_learns_the_tiny_task(store_dir, tmp_path):
    config = tiny_config().replace(objective="regression")
    train(store_dir, tmp_path / "run", fast(40, lr=3e-3), model_config=config, progress=False)
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3
    assert WorldModel.from_pretrained(tmp_path / "run" / "model").config.objective == "regression"
