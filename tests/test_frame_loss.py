"""How training scores a predicted frame (``worldvid.model.frame_loss.FrameLoss``): the regression objective's
distance (``TrainConfig.regression_loss``: 'mse' learns the mean of the next frames a context leaves possible, 'l1'
their per-pixel median) and the weight on moving pixels (``TrainConfig.moving_weight``); opt-in, refused where
they cannot apply, kept by a resumed run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import fast, tiny_config
from worldvid.model import WorldModel
from worldvid.model.frame_loss import FrameLoss
from worldvid.model.world_model import frames_to_model
from worldvid.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _regression_model(seed: int = 0) -> WorldModel:
    model = WorldModel(tiny_config().replace(objective="regression", context_noise_max=0.0))
    torch.manual_seed(seed)
    with torch.no_grad():  # weights whose prediction depends on the input (a new model's output layer is zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_the_l1_loss_is_the_mean_absolute_error_of_every_prediction_one_step_and_unrolled():
    model = _regression_model()
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 6, 16, 16, 3), generator=g, dtype=torch.uint8)
    actions = torch.randn(2, 5, 2, generator=g)
    context, target = frames_to_model(frames[:, :4]).float(), frames_to_model(frames[:, 4]).float()
    predicted = model.denoiser.regress(context, actions[:, :4])
    one_step = model.loss(frames[:, :4], actions[:, :4], frames[:, 4], frame_loss=FrameLoss("l1"))
    assert torch.allclose(one_step, F.l1_loss(predicted, target), atol=1e-6)
    assert torch.allclose(model.loss(frames[:, :4], actions[:, :4], frames[:, 4]), F.mse_loss(predicted, target),
                          atol=1e-6)  # the default is the mean squared error, as before
    second_context = torch.cat([context[:, 1:], predicted.clamp(-1, 1)[:, None]], 1)
    second = model.denoiser.regress(second_context, actions[:, 1:5])
    by_hand = (F.l1_loss(predicted, target) + F.l1_loss(second, frames_to_model(frames[:, 5]).float())) / 2
    unrolled = model.loss(frames[:, :4], actions[:, :4], frames[:, 4], None, frames[:, 5:], actions[:, 4:],
                          frame_loss=FrameLoss("l1"))
    assert torch.allclose(unrolled, by_hand, atol=1e-6)


@pytest.mark.parametrize(("regression_loss", "low", "high"), [("mse", 0.35, 0.65), ("l1", 0.85, 1.15)])
def test_l1_learns_the_likelier_of_two_outcomes_where_mse_learns_their_mean(regression_loss, low, high):
    """One context and action, followed by a white frame 3 times in 4 and a black one otherwise: the mean next
    frame is 0.5 in model space (grey), the per-pixel median 1.0 (white)."""
    model = _regression_model()
    context = torch.full((8, 4, 16, 16, 3), 128, dtype=torch.uint8)
    actions = torch.zeros(8, 4, 2)
    targets = torch.zeros(8, 16, 16, 3, dtype=torch.uint8)
    targets[:6] = 255
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(context, actions, targets, frame_loss=FrameLoss(regression_loss)).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.denoiser.regress(frames_to_model(context[:1]).float(), actions[:1])
    assert low < predicted.mean().item() < high


def test_a_regression_loss_is_refused_by_name_where_it_cannot_apply(store_dir, tmp_path):
    with pytest.raises(ValueError, match=r"regression_loss must be one of \['mse', 'l1'\], got 'huber'"):
        TrainConfig(regression_loss="huber")
    frames = torch.zeros(1, 5, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="regression_loss 'l1' needs a regression model .* 'diffusion'"):
        WorldModel(tiny_config()).loss(frames[:, :4], torch.zeros(1, 4, 2), frames[:, 4], frame_loss=FrameLoss("l1"))
    with pytest.raises(ValueError, match="regression_loss 'l1' needs a regression model"):
        train(store_dir, tmp_path / "run", fast(2, regression_loss="l1"), model_config=tiny_config(), progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_an_l1_run_records_its_loss_and_keeps_it_when_resumed(store_dir, tmp_path):
    config = tiny_config().replace(objective="regression")
    train(store_dir, tmp_path / "l1", fast(3, regression_loss="l1"), model_config=config, progress=False)
    assert json.loads((tmp_path / "l1" / "train_config.json").read_text())["train"]["regression_loss"] == "l1"
    summary = train(store_dir, tmp_path / "l1", fast(6), resume=True, progress=False)  # mse: the default, not asked
    assert summary["steps"] == 6
    assert json.loads((tmp_path / "l1" / "train_config.json").read_text())["train"]["regression_loss"] == "l1"
    train(store_dir, tmp_path / "mse", fast(3), model_config=config, progress=False)
    with pytest.raises(ValueError, match="cannot change regression_loss 'mse' -> 'l1' when resuming"):
        train(store_dir, tmp_path / "mse", fast(6, regression_loss="l1"), resume=True, progress=False)


def test_moving_pixels_are_those_a_channel_changes_by_more_than_8_grey_levels_counted_moving_weight_times():
    last = torch.zeros(1, 3, 4, 4)
    nxt = last.clone()
    nxt[0, 1, 0, 0] = 2 * 9 / 255  # 9 grey levels in one channel: moves
    nxt[0, :, 1, 1] = 2 * 7 / 255  # 7 in every channel: does not
    nxt[0, 2, 3, 3] = -1.0  # moves
    assert FrameLoss().pixel_weights(nxt, last) is None  # weight 1: the plain mean, as before
    weights = FrameLoss(moving_weight=5).pixel_weights(nxt, last)
    assert weights.shape == (1, 1, 4, 4)
    assert weights[0, 0, 0, 0] == 5 and weights[0, 0, 3, 3] == 5 and weights.sum() == 14 + 2 * 5
    predicted, target = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    predicted[0, :, 0, 0], predicted[0, :, 2, 2] = 1.0, 1.0  # the same error on a moving and a still pixel
    assert FrameLoss(moving_weight=5)(predicted, target, weights).item() == pytest.approx(3 * (5 + 1) / (3 * 24))
    assert FrameLoss("l1", 5)(2 * predicted, target, weights).item() == pytest.approx(2 * 3 * (5 + 1) / (3 * 24))
    assert FrameLoss(moving_weight=5)(predicted, target).item() == pytest.approx(6 / 48)  # no weights: the plain mean


@pytest.mark.parametrize("objective", ["regression", "diffusion"])
def test_a_model_loss_weights_the_pixels_that_move_from_the_real_frame_before_one_step_and_unrolled(objective):
    """Only the top rows change from frame to frame: with weight W the loss is the weighted mean of the plain
    per-pixel loss; unrolled, step 2's moving pixels are those that change from real frame 4, not the prediction."""
    model = _regression_model() if objective == "regression" else WorldModel(tiny_config())
    frames = torch.full((2, 6, 16, 16, 3), 100, dtype=torch.uint8)
    frames[:, 4, :4] = 200  # frame 4 differs from frame 3 in rows 0-3
    frames[:, 5, :4] = 200
    frames[:, 5, 8:10] = 30  # frame 5 from frame 4 in rows 8-9 only
    actions = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0))
    moving = torch.zeros(16, 16)
    moving[:4] = 1
    weighted = model.loss(frames[:, :4], actions[:, :4], frames[:, 4], torch.Generator().manual_seed(3),
                          frame_loss=FrameLoss(moving_weight=9))
    context, target = frames_to_model(frames[:, :4]).float(), frames_to_model(frames[:, 4]).float()
    if objective == "regression":
        predicted = model.denoiser.regress(context, actions[:, :4])
        per_pixel = (predicted - target).square().mean(1)  # [B, H, W]
        expected = (per_pixel * (1 + 8 * moving)).sum() / ((1 + 8 * moving).sum() * 2)
        assert torch.allclose(weighted, expected, rtol=1e-5)
        second = model.denoiser.regress(torch.cat([context[:, 1:], predicted.clamp(-1, 1)[:, None]], 1),
                                        actions[:, 1:5])
        moving_second = torch.zeros(16, 16)
        moving_second[8:10] = 1
        per_pixel_second = (second - frames_to_model(frames[:, 5]).float()).square().mean(1)
        expected_second = (per_pixel_second * (1 + 8 * moving_second)).sum() / ((1 + 8 * moving_second).sum() * 2)
        unrolled = model.loss(frames[:, :4], actions[:, :4], frames[:, 4], None, frames[:, 5:], actions[:, 4:],
                              frame_loss=FrameLoss(moving_weight=9))
        assert torch.allclose(unrolled, (expected + expected_second) / 2, rtol=1e-5)
    plain = model.loss(frames[:, :4], actions[:, :4], frames[:, 4], torch.Generator().manual_seed(3))
    assert torch.allclose(model.loss(frames[:, :4], actions[:, :4], frames[:, 4], torch.Generator().manual_seed(3),
                                     frame_loss=FrameLoss(moving_weight=1.0)), plain)
    assert not torch.allclose(weighted, plain)


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), float("inf"), True])
def test_a_moving_weight_that_is_not_a_positive_number_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"^moving_weight must be a positive number \(1: every pixel alike\), got"):
        TrainConfig(moving_weight=bad)


def test_a_moving_weight_run_records_it_keeps_it_when_resumed_and_refuses_a_change(store_dir, tmp_path):
    train(store_dir, tmp_path / "w", fast(3, moving_weight=4.0), model_config=tiny_config(), progress=False)
    assert json.loads((tmp_path / "w" / "train_config.json").read_text())["train"]["moving_weight"] == 4.0
    assert train(store_dir, tmp_path / "w", fast(6), resume=True, progress=False)["steps"] == 6
    assert json.loads((tmp_path / "w" / "train_config.json").read_text())["train"]["moving_weight"] == 4.0
    with pytest.raises(ValueError, match="cannot change moving_weight 4.0 -> 2.0 when resuming"):
        train(store_dir, tmp_path / "w", fast(9, moving_weight=2.0), resume=True, progress=False)
