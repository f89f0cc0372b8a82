"""The denoiser compiled by torch.compile: same weights, same imagined frames; ``plan --compile`` compiles it."""

from __future__ import annotations

from dataclasses import replace

import torch

from conftest import tiny_config
from worldvid.model import WorldModel
from worldvid.model.compiled import compile_denoiser, eager_calls, is_compiled


def test_compiling_keeps_the_weights_and_can_be_undone(tmp_path):
    model = WorldModel(tiny_config()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not is_compiled(model)
    assert compile_denoiser(model) is model and is_compiled(model)  # lazy: nothing compiles before the first call
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    model.save_pretrained(tmp_path / "model")  # a compiled model saves the plain folder
    assert not is_compiled(WorldModel.from_pretrained(tmp_path / "model"))
    impl = model.denoiser._compiled_call_impl
    with eager_calls(model):  # eager for a while, the compiled copy kept for afterwards
        assert not is_compiled(model)
    assert is_compiled(model) and model.denoiser._compiled_call_impl is impl
    compile_denoiser(model, enabled=False)
    assert not is_compiled(model)


def test_the_plan_runner_compiles_only_when_asked(tmp_path):
    from worldvid.experiments.plan_config import PlanEvalConfig, validate
    from worldvid.experiments.plan_table import config_columns
    from worldvid.experiments.plan_workers import EpisodeRunner

    WorldModel(tiny_config()).save_pretrained(tmp_path / "model")
    for compile_flag in (False, True):
        run = PlanEvalConfig(env_id="worldvid/PointReach-v0", model=str(tmp_path / "model"), compile=compile_flag,
                             device="cpu")
        runner = EpisodeRunner(run, *validate(run))
        try:
            assert is_compiled(runner.model) == compile_flag
        finally:
            runner.close()
    columns = config_columns(run)
    assert columns["model_name"] == f"{tmp_path.name}/model (compiled)"
    assert config_columns(replace(run, compile=False))["model_name"] == f"{tmp_path.name}/model"


def test_compiled_imagination_equals_the_eager_one(one_torch_thread):
    """Inductor on this device (CPU here, CUDA where present): the rollout of a tiny model, 2 Euler steps per frame,
    is the eager one up to one grey level (fused kernels round differently)."""
    torch.manual_seed(0)
    model = WorldModel(tiny_config()).eval()
    k = model.config.context
    context = torch.randint(0, 256, (4, k, 16, 16, 3), dtype=torch.uint8)
    past, actions = torch.zeros(4, k, 2), torch.rand(4, 3, 2) * 2 - 1
    eager = model.rollout(context, past, actions, generator=torch.Generator().manual_seed(1), num_steps=2)
    compile_denoiser(model)
    compiled = model.rollout(context, past, actions, generator=torch.Generator().manual_seed(1), num_steps=2)
    assert compiled.shape == eager.shape == (4, 3, 16, 16, 3)
    assert (compiled.int() - eager.int()).abs().max() <= 1


def test_the_compiled_copy_follows_the_weights_and_training_stays_eager(one_torch_thread):
    """Weights loaded after compiling reach the compiled calls; a call with grad on runs the eager denoiser (its
    output has a gradient back to the model's own parameters)."""
    torch.manual_seed(0)
    model, other = WorldModel(tiny_config()).eval(), WorldModel(tiny_config()).eval()
    c = model.config
    x = torch.randn(4, c.channels, c.frame_size, c.frame_size)  # the shapes of the rollout above: one compiled graph
    context = torch.randn(4, c.context, c.channels, c.frame_size, c.frame_size)
    actions, sigma = torch.zeros(4, c.context, c.action_dim), torch.ones(4)
    with torch.no_grad():  # fresh models share a zero output layer: make the other one differ
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def denoised(m: WorldModel) -> torch.Tensor:
        with torch.no_grad(), m.autocast_context():
            return m.denoiser(x, sigma, context, actions)

    before = denoised(model)
    compile_denoiser(model)
    assert (denoised(model) - before).abs().max().item() < 0.02
    expected = denoised(other)
    assert (expected - before).abs().max().item() > 0.1  # the two models differ
    model.load_state_dict(other.state_dict())
    assert (denoised(model) - expected).abs().max().item() < 0.02
    with model.autocast_context():
        out = model.denoiser(x, sigma, context, actions)
    out.float().square().mean().backward()
    assert out.requires_grad and all(p.grad is not None for p in model.denoiser.parameters() if p.requires_grad)
