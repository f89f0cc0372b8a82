"""A goal-reaching distance learned from video: d(frame, goal) ~ how many steps separate two frames.

An encoder phi maps a frame to a vector; d compares phi(x) with phi(g), by an MLP of the pair (``head='pair'``,
the default: it can weigh where one object is relative to another) or as ||phi(x) - phi(g)||_2 (``'metric'``).
The encoder reads pixels standardised by its training frames' per-pixel mean and spread (the static
background reads as 0) and sees coordinates as well as colours (CoordConv), so where things are is easy to
read. Training: ``worldvid.goal_distance.train``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worldvid.envs.factory import canonical_env_id
from worldvid.model.folder import class_name_of, read_folder
from worldvid.model.pretrained import load_state_checked, save_folder

KIND = "goal-distance"


@dataclass(frozen=True)
class GoalDistanceConfig:
    """Architecture of the learned goal distance, saved with its weights."""

    frame_size: int = 32
    """Frames are square, frame_size x frame_size RGB (the world model's resolution)."""
    env_id: str | None = None
    """The task whose video it learned from (a cost is refused on another task)."""
    widths: tuple[int, ...] = (16, 32, 32)
    """Conv widths; the first two convolutions halve the resolution."""
    hidden: int = 256
    """Width of the MLP head."""
    embed_dim: int = 64
    """Size of phi(frame)."""
    standardize: bool = True
    """Standardise every pixel by the training frames' per-pixel mean and spread (saved with the weights): the
    static background becomes 0 and what moves stands out (without it, training sat on a plateau for
    thousands of steps, and on the 2,300 Reacher episodes never left it)."""
    head: str = "pair"
    """How d compares two embeddings: 'metric' = ||phi(x) - phi(g)||_2 (symmetric, triangle inequality);
    'pair' = an MLP of (phi(x), phi(g)) (can weigh where one object is relative to another, e.g. a pusher
    behind a block)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.frame_size < 8 or self.frame_size % 4:
            raise ValueError(f"frame_size must be a multiple of 4 and >= 8, got {self.frame_size}")
        if len(self.widths) != 3 or min(self.widths) < 1 or self.hidden < 1 or self.embed_dim < 1:
            raise ValueError(f"widths must be 3 positive ints and hidden, embed_dim positive, got {self}")
        if self.head not in ("metric", "pair"):
            raise ValueError(f"head must be 'metric' or 'pair', got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GoalDistanceConfig":
        names = {f.name for f in fields(cls)}
        # distances saved before ``standardize`` existed read raw pixels
        return cls(**{"standardize": False, **{k: v for k, v in data.items() if k in names}})


class GoalDistance(nn.Module):
    """phi: uint8 frames [..., H, W, 3] -> float32 [..., embed_dim]; ``distance(frames, goal)`` in steps."""

    def __init__(self, config: GoalDistanceConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.convs = nn.Sequential(
            nn.Conv2d(5, w[0], 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w[0], w[1], 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w[1], w[2], 3, padding=1), nn.SiLU(),
        )
        side = config.frame_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(w[2] * side * side, config.hidden), nn.SiLU(),
                                  nn.Linear(config.hidden, config.embed_dim))
        self.pair = None if config.head == "metric" else nn.Sequential(
            nn.Linear(2 * config.embed_dim, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden), nn.SiLU(),
            nn.Linear(config.hidden, 1), nn.Softplus())
        if config.standardize:
            shape = (3, config.frame_size, config.frame_size)
            self.register_buffer("pixel_mean", torch.zeros(shape))
            self.register_buffer("pixel_scale", torch.ones(shape))
        axis = torch.linspace(-1.0, 1.0, config.frame_size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(axis, axis, indexing="ij")), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def _as_input(self, frames: Tensor | np.ndarray) -> tuple[Tensor, tuple[int, ...]]:
        x = torch.as_tensor(frames, device=self.device)
        s = self.config.frame_size
        if x.ndim < 3 or tuple(x.shape[-3:]) != (s, s, 3):
            raise ValueError(f"the goal distance was learned on {s}x{s} RGB frames [..., {s}, {s}, 3], "
                             f"got shape {tuple(x.shape)}")
        lead = tuple(x.shape[:-3])
        x = x.reshape(-1, s, s, 3).permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        if self.config.standardize:
            x = (x - self.pixel_mean) / self.pixel_scale
        return torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1), lead

    @torch.no_grad()
    def fit_pixel_statistics(self, frames: Tensor, min_scale: float = 0.1) -> None:
        """Set the per-pixel mean and spread (std, at least ``min_scale``) from uint8 frames [N, H, W, 3]
        (in the [-1, 1] units the network reads)."""
        if not self.config.standardize:
            raise ValueError("this goal distance reads raw pixels (standardize=False)")
        x = torch.as_tensor(frames).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        self.pixel_mean.copy_(x.mean(0))
        self.pixel_scale.copy_(x.std(0).clamp(min=min_scale))

    def embed(self, frames: Tensor | np.ndarray) -> Tensor:
        """phi(frames): uint8 [..., H, W, 3] (or float in [-1, 1]) -> float32 [..., embed_dim]."""
        x, lead = self._as_input(frames)
        return self.head(self.convs(x)).reshape(*lead, self.config.embed_dim)

    def compare(self, embedded: Tensor, goal: Tensor) -> Tensor:
        """d from embeddings: embedded float [..., E] and goal float [E] (or any shape broadcasting with it)
        -> float32 [...] >= 0."""
        if self.pair is None:
            return (embedded - goal).pow(2).sum(-1).add(1e-12).sqrt()
        embedded, goal = torch.broadcast_tensors(embedded, goal)
        return self.pair(torch.cat([embedded, goal], dim=-1)).squeeze(-1)

    def distance(self, frames: Tensor | np.ndarray, goal: Tensor | np.ndarray) -> Tensor:
        """d(frames, goal) float32 [...] >= 0, for frames [..., H, W, 3] and one goal [H, W, 3] (or goals
        [..., H, W, 3] of the frames' batch shape)."""
        return self.compare(self.embed(frames), self.embed(goal))

    def check_task(self, env_id: str | None) -> None:
        """ValueError when this distance was learned on another task than ``env_id``."""
        have = self.config.env_id
        if env_id is not None and have is not None and canonical_env_id(have) != canonical_env_id(env_id):
            raise ValueError(f"the goal distance was learned on {have}, not on {env_id}")

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors + a model card README.md into folder ``path`` atomically."""
        return save_folder(self, path, kind="goal distance")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: torch.device | str | None = None, *,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False, token: str | bool | None = None) -> "GoalDistance":
        """Load a folder written by ``save_pretrained`` (or a cost run folder holding it in model/), or Hub repo
        "owner/name" at ``revision`` (``worldvid.model.hub.resolve_folder``), in eval mode. Weights stay float32: the
        network reads float32 pixels."""
        from worldvid.model.card import remember_provenance
        from worldvid.model.hub import resolve_folder

        path = resolve_folder(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                              token=token, kind="goal distance")
        data, state = read_folder(path, kind=KIND)
        if class_name_of(data) != cls.__name__:
            raise ValueError(f"{path} holds a {class_name_of(data)!r}, not a learned goal distance")
        model = cls(GoalDistanceConfig.from_dict(data))
        load_state_checked(model, state, path, kind=KIND)
        remember_provenance(model, path)
        return model.to(device if device is not None else "cpu").eval()

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str | None = None) -> Any:
        """Upload this distance (config, weights, card) to Hub repo ``repo_id`` as one commit; returns the
        CommitInfo (``worldvid.model.hub.push_to_hub``; offline it raises ConnectionError before writing anything)."""
        from worldvid.model.hub import push_to_hub

        return push_to_hub(self, repo_id, revision=revision, private=private, token=token,
                           commit_message=commit_message)
