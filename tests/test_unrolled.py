"""Unrolled training (``TrainConfig.unroll``): windows with R targets, the loss of R steps each fed the predictions
before it, and a run that trains with it; opt-in, so unroll=1 is the one-step loss of before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fast, make_episode, tiny_config
from worldvid.data.dataset import FrameWindowDataset
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.model import WorldModel
from worldvid.model.world_model import frames_to_model
from worldvid.optim import read_metrics
from worldvid.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def rising(tmp_path) -> EpisodeStore:
    """Two episodes of 7 steps whose frame t is filled with 10*t + seed and whose action t is (t, -t)."""
    spec = StoreSpec(env_id="test/Fake-v0", frame_shape=(8, 8, 3), action_dim=2, policy="test", seed=0,
                     episodes_per_shard=2)
    store = EpisodeStore.create(tmp_path / "rising", spec)
    store.write_shard(0, [make_episode(seed=0), make_episode(seed=1)])
    return store


def test_unrolled_windows_hold_the_next_r_frames_and_the_actions_that_lead_there(rising):
    one, three = FrameWindowDataset(rising, context=2), FrameWindowDataset(rising, context=2, unroll=3)
    assert len(one) == 2 * 7 and len(three) == 2 * (7 - 2)  # t + R <= T
    assert set(one[0]) == {"context", "context_actions", "target"}
    window = three[len(three) - 1]  # episode 1, t = 4
    assert three.locate(len(three) - 1) == (1, 4)
    assert window["context"][:, 0, 0, 0].tolist() == [31, 41]
    assert window["context_actions"][:, 0].tolist() == [3, 4]
    assert window["target"][0, 0, 0].item() == 51
    assert window["future_frames"].shape == (2, 8, 8, 3) and window["future_frames"][:, 0, 0, 0].tolist() == [61, 71]
    assert window["future_actions"].tolist() == [[5, -5], [6, -6]]
    for name in ("context", "context_actions", "target"):  # the one-step part is the one-step window's
        assert torch.equal(window[name], one[len(one) - 3][name])
    with pytest.raises(ValueError, match="no episode of .* is longer than unroll=8 steps"):
        FrameWindowDataset(rising, context=2, unroll=8)
    with pytest.raises(ValueError, match="unroll must be >= 1"):
        FrameWindowDataset(rising, unroll=0)


def _batch(seed: int = 0, steps: int = 3):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (2, 4 + steps, 16, 16, 3), generator=g, dtype=torch.uint8)
    actions = torch.randn(2, 4 + steps - 1, 2, generator=g)
    return frames[:, :4], actions[:, :4], frames[:, 4], frames[:, 5:], actions[:, 4:]


@pytest.mark.parametrize("predict", ["frame", "change"])
def test_each_unrolled_step_is_fed_the_predictions_before_it_and_passes_gradient_through_them(predict):
    model = WorldModel(tiny_config().replace(objective="regression", context_noise_max=0.0, predict=predict))
    torch.manual_seed(0)
    with torch.no_grad():  # weights whose prediction depends on the context (a new model's output layer is zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    context, actions, target, future_frames, future_actions = _batch()
    targets = torch.cat([frames_to_model(target)[:, None], frames_to_model(future_frames)], 1)

    def by_hand(detach: bool) -> torch.Tensor:  # the window slides over the model's own (clamped) frames
        ctx, act, losses = frames_to_model(context).float(), actions.clone(), []
        for j in range(3):
            generated = model.denoiser.regress(ctx, act)
            losses.append(F.mse_loss(generated, model.generated_of(targets[:, j], ctx)))
            if j < 2:
                fed = model.frame_of(generated, ctx).clamp(-1, 1)
                ctx = torch.cat([ctx[:, 1:], (fed.detach() if detach else fed)[:, None]], 1)
                act = torch.cat([act[:, 1:], future_actions[:, j:j + 1]], 1)
        return torch.stack(losses).mean()

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    loss = model.loss(context, actions, target, None, future_frames, future_actions)
    assert torch.allclose(loss, by_hand(False), atol=1e-6)
    assert not torch.allclose(loss, model.loss(context, actions, target))  # not the one-step loss
    teacher = torch.stack([model.loss(torch.cat([context, target[:, None], future_frames], 1)[:, j:j + 4],
                                      torch.cat([actions, future_actions], 1)[:, j:j + 4],
                                      targets[:, j].clone()) for j in range(3)]).mean()
    assert not torch.allclose(loss, teacher)  # nor the one-step loss on the real frames
    unrolled = gradient(loss)  # the gradient flows back through the frames fed forward
    assert torch.allclose(unrolled, gradient(by_hand(False)), atol=1e-5)
    assert not torch.allclose(unrolled, gradient(by_hand(True)), atol=1e-5)


def test_unrolling_is_refused_where_it_cannot_run():
    context, actions, target, future_frames, future_actions = _batch()
    with pytest.raises(ValueError, match="unrolled training needs objective='regression'"):
        WorldModel(tiny_config()).loss(context, actions, target, None, future_frames, future_actions)
    model = WorldModel(tiny_config().replace(objective="regression"))
    with pytest.raises(ValueError, match="future_frames holds 2 frames but 1 are needed"):
        model.loss(context, actions, target, None, future_frames, future_actions[:, :1])
    with pytest.raises(TypeError, match="future_actions must be a torch.Tensor or numpy array, got NoneType"):
        model.loss(context, actions, target, None, future_frames)
    with pytest.raises(ValueError, match="unroll must be >= 1"):
        TrainConfig(unroll=0)


def test_a_diffusion_run_asked_to_unroll_is_refused_before_any_write(store_dir, tmp_path):
    with pytest.raises(ValueError, match="unroll=3 needs a regression model"):
        train(store_dir, tmp_path / "run", fast(2, unroll=3), model_config=tiny_config(), progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_an_unrolled_run_learns_the_tiny_task_and_records_its_unroll(store_dir, tmp_path):
    config = tiny_config().replace(objective="regression")
    summary = train(store_dir, tmp_path / "run", fast(40, lr=3e-3, unroll=3), model_config=config, progress=False)
    losses = [row["loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert np.isfinite(losses).all() and sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["train"]["unroll"] == 3
    held_out = set(saved["held_out_episodes"])
    trained = [e for e in EpisodeStore(store_dir).episode_ids if e not in held_out]
    unrolled = FrameWindowDataset(store_dir, context=config.context, episodes=trained, unroll=3)
    assert summary["windows"] == len(unrolled) < len(FrameWindowDataset(store_dir, episodes=trained))
