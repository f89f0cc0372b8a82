"""``WorldModelConfig``: everything needed to rebuild a world model, saved with its checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from worldvid.envs.factory import canonical_env_id

SAMPLERS = ("euler", "heun")
OBJECTIVES = ("diffusion", "regression")
PREDICTS = ("frame", "change")
OMITTED_AT_DEFAULT = {"tasks": (), "predict": "frame"}
"""Fields added after checkpoints were first shared: left out of ``to_dict`` at their default, so a model that
does not use them writes the config.json earlier versions read."""


@dataclass(frozen=True, kw_only=True)
class WorldModelConfig:
    """Architecture, EDM constants and sampling defaults of an action-conditioned frame denoiser.

    Frozen, validated on construction, and JSON round-trippable (``to_dict`` / ``from_dict``), so a
    checkpoint's ``config.json`` rebuilds exactly the network its weights belong to.
    """

    action_dim: int
    """Size A of one (continuous) action vector."""
    frame_size: int = 32
    """Frames are square, frame_size x frame_size pixels."""
    channels: int = 3
    """Colour channels per frame (RGB)."""
    context: int = 4
    """K: context frames (and actions) the next frame is predicted from."""

    block_channels: tuple[int, ...] = (16, 32, 64)
    """UNet width per resolution level; every level but the last halves the resolution."""
    layers_per_block: int = 1
    """Residual blocks per down level (the up path has one more, as in diffusers' UNet2DModel)."""
    attention: bool = False
    """Self-attention at the lowest resolution and in the middle block (slow on CPU, off by default)."""
    norm_groups: int = 8
    """GroupNorm groups; must divide every entry of block_channels."""
    time_embed_dim: int = 64
    """Width of the conditioning embedding (noise level + actions) that drives every residual block."""
    action_embed_dim: int = 64
    """Hidden width of the MLP that embeds the K flattened actions."""

    sigma_data: float = 0.5
    """EDM: standard deviation of the data (frames in [-1, 1])."""
    p_mean: float = -0.4
    """EDM training: ln(sigma) ~ N(p_mean, p_std^2) (DIAMOND's values)."""
    p_std: float = 1.2
    """EDM training: see p_mean."""
    sigma_min_train: float = 2e-3
    """Training noise levels are clamped to [sigma_min_train, sigma_max_train]."""
    sigma_max_train: float = 20.0
    """See sigma_min_train."""
    context_noise_max: float = 0.1
    """Training adds N(0, s^2) noise to the context frames, s ~ U(0, context_noise_max), and tells the net s.

    Makes the model robust to its own imperfect frames in long autoregressive rollouts; 0 disables it."""

    sigma_min: float = 2e-3
    """Sampling: smallest non-zero noise level of the Karras schedule."""
    sigma_max: float = 5.0
    """Sampling: noise level the sampler starts from."""
    rho: float = 7.0
    """Sampling: Karras schedule curvature."""
    num_steps: int = 3
    """Sampling: denoising steps per generated frame (1-4 suffice for near-deterministic dynamics)."""
    sampler: str = "euler"
    """Sampling: 'euler' (1 net call per step) or 'heun' (2 per step, except the last)."""
    objective: str = "diffusion"
    """'diffusion' (EDM: each frame sampled from noise in num_steps denoising steps), or 'regression': the
    deterministic baseline, the same network predicting the next frame in one call from the context and actions
    alone (no noisy input), trained by mean squared error; the sampling fields are then unused."""

    predict: str = "frame"
    """What the network generates: 'frame', the next frame itself; or 'change', its change from the last context
    frame, (f[t+1] - f[t]) / 2 in model space, added back to f[t] after sampling. With 'change' a static pixel is a
    zero to predict rather than a pixel to redraw: for scenes where a few pixels move among many static ones. Its
    spread is far below a frame's, so pair it with a smaller sigma_data (e.g. 0.1)."""

    env_id: str | None = None
    """Optional metadata: the Gymnasium id of the environment the model was trained on."""
    tasks: tuple[str, ...] = ()
    """A multi-task model: the Gymnasium ids of the tasks it was trained on (then env_id is None). It learns which
    task a window shows from its frames alone (no task id); a task whose actions are shorter than action_dim gets
    them zero-padded. Empty for a single-task model."""

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; normalise so equality and hashing survive the round trip.
        if isinstance(self.block_channels, list):
            object.__setattr__(self, "block_channels", tuple(self.block_channels))
        if isinstance(self.tasks, list):
            object.__setattr__(self, "tasks", tuple(self.tasks))
        for name in ("action_dim", "frame_size", "channels", "context", "layers_per_block", "norm_groups",
                     "time_embed_dim", "action_embed_dim", "num_steps"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.block_channels, tuple) or not self.block_channels:
            raise ValueError(f"block_channels must be a non-empty tuple of ints, got {self.block_channels!r}")
        for width in self.block_channels:
            _check_positive_int("block_channels entry", width)
            if width % self.norm_groups:
                raise ValueError(
                    f"every block_channels entry must be divisible by norm_groups={self.norm_groups}, "
                    f"got {self.block_channels}")
        levels = len(self.block_channels)
        if self.frame_size % 2 ** (levels - 1):
            raise ValueError(
                f"frame_size={self.frame_size} must be divisible by 2**(len(block_channels)-1)="
                f"{2 ** (levels - 1)} (the UNet halves the resolution {levels - 1} times)")
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be a bool, got {self.attention!r}")
        for name in ("sigma_data", "p_std", "sigma_min_train", "sigma_max_train", "sigma_min", "sigma_max", "rho"):
            _check_positive_float(name, getattr(self, name))
        _check_finite_float("p_mean", self.p_mean)
        _check_finite_float("context_noise_max", self.context_noise_max)
        if self.context_noise_max < 0:
            raise ValueError(f"context_noise_max must be >= 0, got {self.context_noise_max}")
        if self.sigma_min_train >= self.sigma_max_train:
            raise ValueError(
                f"sigma_min_train={self.sigma_min_train} must be < sigma_max_train={self.sigma_max_train}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min={self.sigma_min} must be < sigma_max={self.sigma_max}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.predict not in PREDICTS:
            raise ValueError(f"predict must be one of {PREDICTS}, got {self.predict!r}")
        if self.env_id is not None and (not isinstance(self.env_id, str) or not self.env_id):
            raise ValueError(f"env_id must be a non-empty string or None, got {self.env_id!r}")
        if not isinstance(self.tasks, tuple) or not all(isinstance(t, str) and t for t in self.tasks):
            raise ValueError(f"tasks must be a tuple of Gymnasium ids, got {self.tasks!r}")
        if len(self.tasks) == 1 or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"a multi-task model names two or more different tasks, got {list(self.tasks)}")
        if self.tasks and self.env_id is not None:
            raise ValueError(f"a multi-task model ({', '.join(self.tasks)}) has no single env_id, got {self.env_id!r}")

    @property
    def multi_task(self) -> bool:
        """True for a model trained on several tasks (``tasks``)."""
        return bool(self.tasks)

    def accepts_task(self, env_id: str | None) -> bool:
        """Whether frames of task ``env_id`` fit this model: one of a multi-task model's ``tasks``, a single-task
        model's ``env_id``, or unknown on either side (older checkpoints may not record it). Ids are compared
        without a 'module:' prefix."""
        if self.multi_task:
            return env_id is None or canonical_env_id(env_id) in map(canonical_env_id, self.tasks)
        return env_id is None or self.env_id is None or canonical_env_id(self.env_id) == canonical_env_id(env_id)

    def accepts_actions(self, action_dim: int) -> bool:
        """Whether actions of size ``action_dim`` fit: the model's ``action_dim``; a multi-task model takes any size up
        to it too (shorter actions are zero-padded)."""
        return action_dim == self.action_dim or (self.multi_task and 0 < action_dim < self.action_dim)

    def replace(self, **changes: Any) -> "WorldModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists), but ``OMITTED_AT_DEFAULT``'s at their default."""
        out = dataclasses.asdict(self)
        out["block_channels"] = list(self.block_channels)
        out["tasks"] = list(self.tasks)
        for name, default in OMITTED_AT_DEFAULT.items():  # config.json stays as before (earlier versions read it)
            if getattr(self, name) == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorldModelConfig":
        """Inverse of ``to_dict``. Keys starting with '_' (format metadata) are ignored; unknown keys raise."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown WorldModelConfig field(s): {', '.join(unknown)}")
        return cls(**values)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_finite_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_positive_float(name: str, value: Any) -> None:
    _check_finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
