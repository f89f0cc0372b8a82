"""Stable-Baselines3 integration (optional extra: ``pip install worldvid[sb3]``): a features extractor for the
small frames of worldvid's tasks and of Dream-v0, and any Gymnasium ``VectorEnv`` (Dream-v0's batched one above
all: one model for every sub-env) as an SB3 ``VecEnv``.

SB3's ``CnnPolicy`` uses NatureCNN, whose 8x8 stride-4 first layer leaves nothing of a 32x32 frame
("Kernel size can't be greater than actual input size"). ``SmallFrameCNN`` takes frames from 16 px up; given a
goal-conditioned ``Dict`` observation ("observation" and "desired_goal" frames) it stacks the frames as channels,
so the first convolution already compares the scene with its goal::

    from stable_baselines3 import PPO
    from worldvid.sb3 import small_frame_policy_kwargs
    env = gym.make("worldvid/PointReach-v0", size=32, goal_conditioned=True)
    PPO("MultiInputPolicy", env, policy_kwargs=small_frame_policy_kwargs()).learn(10_000)

    venv = sb3_vec_env(gym.make_vec("worldvid/Dream-v0", num_envs=16, vectorization_mode="vector_entry_point",
                                    model="runs/demo/model", autoreset_mode="SameStep", goal_conditioned=True))
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from torch import Tensor, nn

try:  # this module is the SB3 integration: importing it is asking for SB3
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError:
    raise ImportError("worldvid.sb3 needs stable-baselines3: pip install worldvid[sb3]") from None


def _image_keys(space: gym.Space) -> list[str] | None:
    """The keys of a Dict space's image entries, in order (None for a Box)."""
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        return None
    if isinstance(space, spaces.Dict):
        keys = [k for k, s in space.spaces.items() if isinstance(s, spaces.Box) and len(s.shape) == 3]
        if keys:
            return keys
    raise ValueError(f"SmallFrameCNN takes an image Box or a Dict of image Boxes, got {space}")


class SmallFrameCNN(BaseFeaturesExtractor):
    """Features of small frames for SB3 policies: three 3x3 stride-2 convolutions (32, 64, 64 channels) and a
    linear layer to ``features_dim``.

    observation_space: what SB3 hands the policy after its own pre-processing: a channel-first image Box
    [C, H, W] (H, W >= 16), or a Dict of such Boxes of one H x W, stacked along C in key order. SB3 divides
    uint8 frames by 255 before ``forward``; ``forward`` takes float [B, C, H, W] (or the dict) -> [B, features_dim].
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 256) -> None:
        keys = _image_keys(observation_space)
        boxes = [observation_space] if keys is None else [observation_space.spaces[k] for k in keys]
        sizes = {tuple(b.shape[1:]) for b in boxes}
        if len(sizes) != 1:
            raise ValueError(f"the image entries of the observation must share one H x W, got {sorted(sizes)}")
        height, width = sizes.pop()
        if min(height, width) < 16:
            raise ValueError(f"SmallFrameCNN needs channel-first frames [C, H, W] of at least 16x16, got "
                             f"{[b.shape for b in boxes]}")
        super().__init__(observation_space, features_dim)
        self.keys = keys
        channels = sum(int(b.shape[0]) for b in boxes)
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

    def forward(self, observations: Tensor | dict[str, Tensor]) -> Tensor:
        x = observations if self.keys is None else torch.cat([observations[k] for k in self.keys], dim=1)
        return self.linear(self.cnn(x))


def small_frame_policy_kwargs(features_dim: int = 256, **extra: Any) -> dict[str, Any]:
    """``policy_kwargs`` for SB3's CnnPolicy / MultiInputPolicy with ``SmallFrameCNN`` as features extractor."""
    return {"features_extractor_class": SmallFrameCNN, "features_extractor_kwargs": {"features_dim": features_dim},
            **extra}


def _unbatch_info(infos: dict[str, Any], index: int) -> dict[str, Any]:
    """Sub-env ``index``'s info from a Gymnasium vector env's batched infos (an entry "k" is present where the
    mask "_k" is True)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not bool(mask[index]):
            continue
        out[key] = _unbatch_info(value, index) if isinstance(value, dict) else value[index]
    return out


class GymnasiumVecEnv(VecEnv):
    """A Gymnasium ``VectorEnv`` with same-step autoreset as an SB3 ``VecEnv`` (``sb3_vec_env``)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) != AutoresetMode.SAME_STEP:
            raise ValueError("sb3_vec_env needs a vector env made with autoreset_mode=SameStep (SB3 resets in the "
                             f"step that ends an episode), got {AutoresetMode(mode).value}")
        self.env = env
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self) -> Any:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        observations, infos = self.env.reset(seed=seeds)
        self.reset_infos = [_unbatch_info(infos, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> Any:
        observations, rewards, terminated, truncated, infos = self.env.step(self._actions)
        dones = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        out = []
        for i in range(self.num_envs):
            info = _unbatch_info(infos, i)
            if dones[i]:  # SB3 reads the ended episode's last observation and info here
                final_obs, final_info = info.pop("final_obs"), info.pop("final_info", {})
                info = {**info, **final_info, "terminal_observation": final_obs,
                        "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            out.append(info)
        return observations, np.asarray(rewards, np.float32), dones, out

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render()
        return list(frames) if frames is not None else [None] * self.num_envs


def sb3_vec_env(env: gym.vector.VectorEnv) -> GymnasiumVecEnv:
    """A Gymnasium ``VectorEnv`` made with ``autoreset_mode=SameStep`` as an SB3 ``VecEnv``: every sub-env stepped
    in one call of ``env`` (Dream-v0: one batched model call for all). SB3's conventions: rewards float32 [N],
    dones = terminated | truncated, and an ended episode's info carries ``terminal_observation`` and
    ``TimeLimit.truncated`` (and its ``is_success`` where the env reports one). ValueError for another mode."""
    return GymnasiumVecEnv(env)
