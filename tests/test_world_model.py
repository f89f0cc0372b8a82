"""WorldModel: shapes, the time convention, learning a toy dynamics, checkpoints, input validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from worldvid.model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    WorldModel,
    WorldModelConfig,
    frames_to_model,
    model_to_frames,
)

S, K, A = 16, 2, 2


def tiny_config(**changes) -> WorldModelConfig:
    base = dict(action_dim=A, frame_size=S, context=K, block_channels=(8, 16), time_embed_dim=32,
                action_embed_dim=16, num_steps=1)
    base.update(changes)
    return WorldModelConfig(**base)


def tiny_model(seed: int = 0, **changes) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(tiny_config(**changes)).eval()
    # conv_out starts at zero (D = c_skip x); give it weights so outputs depend on every input.
    torch.nn.init.normal_(model.denoiser.inner.unet.conv_out.weight, std=0.1)
    return model


def inputs(batch: int = 3, steps: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, K, S, S, 3), generator=g, dtype=torch.uint8)
    past = torch.randn(batch, K, A, generator=g)
    future = torch.randn(batch, steps, A, generator=g)
    return frames, past, future


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return tiny_model()


# ---------------------------------------------------------------------------- config
def test_config_round_trip_and_validation():
    config = tiny_config(env_id="worldvid/PointReach-v0", sampler="heun")
    data = json.loads(json.dumps(config.to_dict()))
    assert data["block_channels"] == [8, 16]
    again = WorldModelConfig.from_dict(data)
    assert again == config and again.block_channels == (8, 16)
    assert WorldModelConfig.from_dict({**data, "_class_name": "WorldModel"}) == config
    with pytest.raises(ValueError, match="unknown"):
        WorldModelConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="frame_size"):
        tiny_config(frame_size=18, block_channels=(8, 16, 32))
    with pytest.raises(ValueError, match="action_dim"):
        tiny_config(action_dim=0)
    with pytest.raises(ValueError, match="norm_groups"):
        tiny_config(block_channels=(12, 16))
    with pytest.raises(ValueError, match="sampler"):
        tiny_config(sampler="ddim")
    with pytest.raises(ValueError, match="sigma_min"):
        tiny_config(sigma_min=10.0)
    with pytest.raises(ValueError, match="context"):
        tiny_config(context=True)
    with pytest.raises(Exception):
        config.frame_size = 8  # frozen


def test_default_config_builds_a_small_net():
    model = WorldModel(WorldModelConfig(action_dim=3))
    n = sum(p.numel() for p in model.parameters())
    assert 1e5 < n < 2e6


# ---------------------------------------------------------------------------- shapes and conventions
def test_predict_next_and_rollout_shapes_and_dtypes(model):
    frames, past, future = inputs(batch=3, steps=4)
    nxt = model.predict_next(frames, past, generator=gen())
    assert nxt.shape == (3, S, S, 3) and nxt.dtype == torch.uint8
    video = model.rollout(frames, past, future, generator=gen())
    assert video.shape == (3, 4, S, S, 3) and video.dtype == torch.uint8
    # Float frames in model space come back in model space, on the uint8 grid.
    video_f = model.rollout(frames_to_model(frames), past, future, generator=gen())
    assert video_f.shape == (3, 4, 3, S, S) and video_f.dtype == torch.float32
    assert torch.equal(model_to_frames(video_f), video)
    # numpy input works too.
    out = model.predict_next(frames.numpy(), past.numpy(), generator=gen())
    assert torch.equal(out, nxt)


def test_rollout_first_frame_is_predict_next_with_the_window_convention(model):
    frames, past, future = inputs(batch=2, steps=3)
    video = model.rollout(frames, past, future, generator=gen(5))
    window_actions = torch.cat([past[:, 1:], future[:, :1]], dim=1)  # a[t-K+1 .. t]
    assert torch.equal(video[:, 0], model.predict_next(frames, window_actions, generator=gen(5)))
    # Only the last K-1 past actions enter the model: the oldest one may be anything, but it must be there
    # (past_actions means a[t-K..t-1] everywhere).
    with pytest.raises(ValueError, match="past_actions must be float"):
        model.rollout(frames, past[:, 1:], future, generator=gen(5))
    assert torch.equal(model.rollout(frames, past.clone().index_fill_(1, torch.tensor([0]), 9.0), future,
                                     generator=gen(5)), video)
    # The second frame is predicted from (f[t], imagined f[t+1]) and actions (a[t], a[t+1]).
    window = torch.stack([frames[:, -1], video[:, 0]], dim=1)
    g = gen(5)
    model.predict_next(frames, window_actions, generator=g)  # consume the first draw
    assert torch.equal(video[:, 1], model.predict_next(window, future[:, :2], generator=g))


def test_generator_reproducibility_and_broadcast_over_candidates(model):
    frames, past, future = inputs(batch=1, steps=2)
    a = model.rollout(frames, past, future, generator=gen(1))
    assert torch.equal(a, model.rollout(frames, past, future, generator=gen(1)))
    assert not torch.equal(a, model.rollout(frames, past, future, generator=gen(2)))
    candidates = torch.randn(5, 2, A, generator=gen(3))
    video = model.rollout(frames, past, candidates, generator=gen(1))
    assert video.shape == (5, 2, S, S, 3)
    assert not torch.equal(video[0], video[1])


def test_heun_sampler_and_step_override():
    model = tiny_model(sampler="heun", num_steps=2)
    frames, past, future = inputs(batch=2, steps=2)
    assert model.rollout(frames, past, future, generator=gen(), num_steps=3).shape == (2, 2, S, S, 3)
    assert model.sigmas().shape == (3,) and model.sigmas(4).shape == (5,)


@pytest.mark.parametrize("autocast", [False, True])
def test_autocast_option_runs_and_stays_close_to_fp32(model, autocast):
    frames, past, _ = inputs(batch=2)
    reference = WorldModel(model.config, autocast=False)
    reference.load_state_dict(model.state_dict())
    other = WorldModel(model.config, autocast=autocast, channels_last=True)
    other.load_state_dict(model.state_dict())
    a = reference.predict_next(frames_to_model(frames), past, generator=gen())
    b = other.predict_next(frames_to_model(frames), past, generator=gen())
    assert (a - b).abs().max().item() < 0.1


def test_autocast_dtype_follows_the_setting_and_the_cpu(model):
    """``autocast_dtype`` is what the network really runs in: bf16 when asked, fp32 when refused, and by default
    bf16 only where the CPU has it natively; the context keeps fp32 even inside a caller's bf16 autocast."""
    from worldvid.device import native_bf16

    assert WorldModel(model.config, autocast=True).autocast_dtype() == torch.bfloat16
    off = WorldModel(model.config, autocast=False)
    assert off.autocast_dtype() is None
    assert WorldModel(model.config).autocast_dtype() == (torch.bfloat16 if native_bf16("cpu") else None)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16), off.autocast_context():
        assert (x @ x.T).dtype == torch.float32


# ---------------------------------------------------------------------------- learning
def dot_batch(n: int, g: torch.Generator):
    """A white dot on black; action a in {-1, +1} moves it a pixel left/right. K=2 frames, 1-D actions."""
    row = torch.randint(0, S, (n,), generator=g)
    col = torch.randint(1, S - 1, (n,), generator=g)
    act = torch.randint(0, 2, (n, 2), generator=g).float() * 2 - 1  # a[t-1], a[t]

    def image(cols):
        x = torch.full((n, 3, S, S), -1.0)
        x[torch.arange(n), :, row, cols] = 1.0
        return x

    context = torch.stack([image(col - act[:, 0].long()), image(col)], dim=1)
    return context, act[..., None], image(col + act[:, 1].long()), row, col


def train_dot_model(steps: int, **config: Any) -> WorldModel:
    """A tiny model (1-D actions, K=2, ``config`` overriding) trained ``steps`` steps on ``dot_batch``, in eval mode."""
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**{"action_dim": 1, "frame_size": S, "context": 2, "block_channels": (8, 16),
                                           "time_embed_dim": 32, "action_embed_dim": 32, "num_steps": 1, **config}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = gen(0)
    for _ in range(steps):
        context, actions, target, _, _ = dot_batch(32, g)
        with model.autocast_context():
            loss = model.loss(context, actions, target, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tiny_model_learns_to_move_a_dot():
    model = train_dot_model(400)

    context, actions, _, row, col = dot_batch(200, gen(1))
    hits = []
    for sign in (-1.0, 1.0):  # the same contexts under both actions: ignoring actions cannot pass
        acts = actions.clone()
        acts[:, 1] = sign
        out = model.predict_next(context, acts, generator=gen(2))
        position = out.sum(1).flatten(1).argmax(1)
        hits.append(position == row * S + col + int(sign))
    left, right = hits
    assert left.float().mean() >= 0.9 and right.float().mean() >= 0.9
    assert (left & right).float().mean() >= 0.85


# ---------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "ckpt"
    assert model.save_pretrained(path) == path
    assert sorted(p.name for p in path.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]  # + the model card
    loaded = WorldModel.from_pretrained(path, frame_size=S, action_dim=A, context=K)
    assert loaded.config == model.config and not loaded.training
    frames, past, future = inputs()
    assert torch.equal(loaded.rollout(frames, past, future, generator=gen(4)),
                       model.rollout(frames, past, future, generator=gen(4)))
    assert json.loads((path / CONFIG_NAME).read_text())["_worldvid_class"] == "WorldModel"  # not diffusers' key


def test_save_replaces_atomically_and_keeps_other_files(tmp_path):
    path = tmp_path / "ckpt"
    tiny_model(seed=0).save_pretrained(path)
    (path / "notes.txt").write_text("keep me")
    second = tiny_model(seed=1)
    second.save_pretrained(path)
    assert (path / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left behind
    loaded = WorldModel.from_pretrained(path)
    for key, value in second.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize("field, value", [("frame_size", 32), ("action_dim", 3), ("context", 4)])
def test_load_rejects_mismatched_use(model, tmp_path, field, value):
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=field):
        WorldModel.from_pretrained(tmp_path / "ckpt", **{field: value})
    with pytest.raises(ValueError, match=field):
        model.check_compatible(**{field: value})


def test_env_id_check(tmp_path):
    tiny_model(env_id="worldvid/PointReach-v0").save_pretrained(tmp_path / "ckpt")
    WorldModel.from_pretrained(tmp_path / "ckpt", env_id="worldvid:worldvid/PointReach-v0")
    with pytest.raises(ValueError, match="env_id"):
        WorldModel.from_pretrained(tmp_path / "ckpt", env_id="worldvid/Pusher-v0")
    with pytest.raises(ValueError, match="sampler"):
        WorldModel.from_pretrained(tmp_path / "ckpt", expect={"sampler": "heun"})


def test_missing_or_corrupt_files_raise_clear_errors(model, tmp_path):
    path = tmp_path / "ckpt"
    with pytest.raises(FileNotFoundError, match="ckpt"):
        WorldModel.from_pretrained(path)
    model.save_pretrained(path)
    weights = path / WEIGHTS_NAME
    blob = weights.read_bytes()

    weights.unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        WorldModel.from_pretrained(path)
    weights.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        WorldModel.from_pretrained(path)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        WorldModel.from_pretrained(path)
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # a weight byte, past the header
    weights.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        WorldModel.from_pretrained(path)

    weights.write_bytes(blob)
    (path / CONFIG_NAME).write_text("{ not json")
    with pytest.raises(ValueError, match=CONFIG_NAME):
        WorldModel.from_pretrained(path)
    (path / CONFIG_NAME).write_text(json.dumps({**model.config.to_dict(), "block_channels": [16, 32]}))
    with pytest.raises(ValueError, match=WEIGHTS_NAME):  # weights of another architecture
        WorldModel.from_pretrained(path)


# ---------------------------------------------------------------------------- validation
def test_bad_inputs_raise(model):
    frames, past, future = inputs(batch=2)
    with pytest.raises(ValueError, match="action_dim"):
        model.predict_next(frames, past[..., :1])
    with pytest.raises(ValueError, match="context_actions"):
        model.predict_next(frames, past[:, :1])
    nan = past.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.predict_next(frames, nan)
    with pytest.raises(ValueError, match="NaN"):
        model.rollout(frames, past, future.clone().fill_(float("inf")))
    with pytest.raises(TypeError, match="float"):
        model.predict_next(frames, past.long())
    with pytest.raises(ValueError, match="frame_size"):
        model.predict_next(torch.zeros(2, K, 8, 8, 3, dtype=torch.uint8), past)
    with pytest.raises(ValueError, match="K=2"):
        model.predict_next(frames[:, :1], past)
    with pytest.raises(ValueError, match="channels"):
        model.predict_next(frames[..., :1], past)
    with pytest.raises(TypeError, match="uint8"):
        model.predict_next(frames.to(torch.int32), past)
    with pytest.raises(ValueError, match="NaN"):
        model.predict_next(frames_to_model(frames).fill_(float("nan")), past)
    with pytest.raises(ValueError, match="batch"):
        model.rollout(frames, past, torch.zeros(3, 2, A))
    with pytest.raises(ValueError, match="T=0"):
        model.rollout(frames, past, torch.zeros(2, 0, A))
    with pytest.raises(ValueError, match="num_steps"):
        model.predict_next(frames, past, num_steps=0)
