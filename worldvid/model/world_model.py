"""``WorldModel``: config + EDM denoiser + sampler; imagines the next frames of an episode given actions.

Time convention (the same as ``worldvid.data.FrameWindowDataset``): action a[t] is the one taken FROM
frame f[t], so f[t+1] follows from (f[t], a[t]). The model predicts f[t+1] from the window of frames
f[t-K+1..t] and the paired actions a[t-K+1..t]. Before an episode's start the first frame is repeated and
the actions are zero.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from worldvid.device import native_bf16
from worldvid.model.batches import as_tensor, broadcast_batch, check_batch
from worldvid.model.config import WorldModelConfig
from worldvid.model.denoiser import Denoiser
from worldvid.model.folder import CONFIG_NAME, WEIGHTS_NAME
from worldvid.model.frame_loss import FrameLoss
from worldvid.model.pretrained import load_folder, save_folder
from worldvid.model.sampling import SAMPLER_FUNCTIONS, karras_sigmas, randn
from worldvid.model.unrolled import unrolled_loss

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "WorldModel", "frames_to_model", "model_to_frames", "quantize"]


# Measured for the default config (32x32, K=4, 657k parameters) at batch 64 on a 2-core AVX512-BF16 CPU,
# torch 2.13: bf16 autocast made 1-step Euler prediction 1.6x faster (67 vs 108 ms), 3 steps 1.9x
# (192 vs 360 ms) and a training step 1.5x (204 vs 311 ms); channels_last was no faster in fp32 and
# slower under bf16 (89 vs 67 ms). At batch 1 bf16 costs ~10% (22 vs 20 ms for 3 steps): overhead-bound.
# CPUs without native bf16 are much slower under it, so "auto" checks for it (``worldvid.device.native_bf16``).
CPU_AUTOCAST_DEFAULT = True
CHANNELS_LAST_DEFAULT = False


def frames_to_model(frames: Tensor) -> Tensor:
    """uint8 [..., H, W, C] -> float32 [..., C, H, W] in [-1, 1], contiguous (as the frames the model imagines: one
    memory layout, so a compiled denoiser is not traced again for the first imagined frame)."""
    return (frames.to(torch.float32) / 127.5 - 1.0).movedim(-1, -3).contiguous()


def model_to_frames(x: Tensor) -> Tensor:
    """float [..., C, H, W] in [-1, 1] (clamped) -> uint8 [..., H, W, C]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def quantize(x: Tensor) -> Tensor:
    """Snap float model-space frames to the uint8 grid (clamped to [-1, 1]); same shape, float32."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0


class WorldModel(nn.Module):
    """An action-conditioned video diffusion world model: predicts frames by few-step EDM sampling.

    ``autocast``: run the network under bf16 autocast (fp16 on CUDA without bf16). None picks the
    default for the parameters' device: on for CUDA; on CPU ``CPU_AUTOCAST_DEFAULT`` if the CPU has
    native bf16, else off. ``channels_last``: keep conv weights in NHWC layout. Neither changes the weights.
    """

    def __init__(self, config: WorldModelConfig, *, autocast: bool | None = None,
                 channels_last: bool = CHANNELS_LAST_DEFAULT) -> None:
        super().__init__()
        if not isinstance(config, WorldModelConfig):
            raise TypeError(f"config must be a WorldModelConfig, got {type(config).__name__}")
        self.config = config
        self.denoiser = Denoiser(config)
        self.autocast = autocast
        self._channels_last = False
        self.channels_last = channels_last

    # ------------------------------------------------------------------ runtime options
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def channels_last(self) -> bool:
        """Whether conv weights are stored channels_last (NHWC); settable."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        self._channels_last = bool(value)
        self.to(memory_format=torch.channels_last if value else torch.contiguous_format)

    def autocast_dtype(self) -> torch.dtype | None:
        """The reduced precision the network runs in on this model's device (see class doc), None for float32."""
        device, enabled = self.device, self.autocast
        if device.type == "cuda":
            return None if enabled is False else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if device.type == "cpu":
            if enabled is None:
                enabled = CPU_AUTOCAST_DEFAULT and native_bf16(device)
            return torch.bfloat16 if enabled else None
        return None

    def autocast_context(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context the network runs under on this model's device (``autocast_dtype``)."""
        device_type, dtype = self.device.type, self.autocast_dtype()
        if device_type not in ("cpu", "cuda"):
            return contextlib.nullcontext()
        # disabled (not a nullcontext) when off: fp32 even inside a caller's autocast
        return torch.autocast(device_type=device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def sigmas(self, num_steps: int | None = None) -> Tensor:
        """The sampling noise levels, float32 [num_steps + 1] ending in 0 (config.num_steps by default)."""
        c = self.config
        n = c.num_steps if num_steps is None else num_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        return karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho, device=self.device)

    # ------------------------------------------------------------------ training
    def loss(self, context_frames: Tensor | np.ndarray, context_actions: Tensor | np.ndarray,
             target: Tensor | np.ndarray, generator: torch.Generator | None = None,
             future_frames: Tensor | np.ndarray | None = None, future_actions: Tensor | np.ndarray | None = None,
             frame_loss: FrameLoss = FrameLoss()) -> Tensor:
        """Training loss (scalar float32) for a batch of windows, as ``FrameWindowDataset`` yields them.

        context_frames: uint8 [B, K, H, W, C] (or float [B, K, C, H, W] in [-1, 1]), frames t-K+1..t.
        context_actions: float [B, K, A], actions t-K+1..t. target: uint8 [B, H, W, C] (or float [B, C, H, W]),
        frame t+1. Unrolled R steps (a regression model, ``worldvid.model.unrolled``): future_frames [B, R-1, ...]
        = f[t+2..t+R] and future_actions float [B, R-1, A] = a[t+1..t+R-1]. Every prediction is scored by
        ``frame_loss`` (``worldvid.model.frame_loss``: its distance and its weight on moving pixels). Run under
        ``autocast_context()``.
        """
        context, _ = self._frames(context_frames, "context_frames", window=True)
        actions = self._actions(context_actions, "context_actions", self.config.context)
        target_x, _ = self._frames(target, "target", window=False)
        named = [("context_frames", context), ("context_actions", actions), ("target", target_x)]
        if future_frames is not None:
            future = self._actions(future_actions, "future_actions", None)
            futures, _ = self._frames(future_frames, "future_frames", window=True, count=future.shape[1])
            named += [("future_frames", futures), ("future_actions", future)]
        check_batch(*named)
        if future_frames is None:
            return self.denoiser.loss(self.generated_of(target_x, context), context, actions, generator, frame_loss,
                                      frame_loss.pixel_weights(target_x, context[:, -1]))
        return unrolled_loss(self, context, actions, torch.cat([target_x[:, None], futures], dim=1), future, generator,
                             frame_loss)

    def generated_of(self, next_frame: Tensor, context: Tensor) -> Tensor:
        """What the network generates for ``next_frame`` (float [B, C, H, W] in model space) after ``context``
        (float [B, K, C, H, W]): the frame itself, or with ``predict='change'`` its change from the last
        context frame, halved into [-1, 1]."""
        return (next_frame - context[:, -1]) / 2 if self.config.predict == "change" else next_frame

    def frame_of(self, generated: Tensor, context: Tensor) -> Tensor:
        """Inverse of ``generated_of``: the next frame, float [B, C, H, W] in [-1, 1], from what the network
        generated after ``context`` (float [B, K, C, H, W])."""
        if self.config.predict != "change":
            return generated
        return (context[:, -1].float() + 2 * generated.float()).clamp(-1, 1)

    # ------------------------------------------------------------------ imagination
    @torch.inference_mode()
    def predict_next(self, context_frames: Tensor | np.ndarray, context_actions: Tensor | np.ndarray,
                     generator: torch.Generator | None = None, num_steps: int | None = None,
                     noise: Tensor | None = None) -> Tensor:
        """Sample frame t+1 from frames t-K+1..t and the actions taken from them.

        context_frames: uint8 [B, K, H, W, C], oldest first; or float [B, K, C, H, W] in [-1, 1].
        context_actions: float [B, K, A]; context_actions[:, i] is the action taken from
            context_frames[:, i], so the last one is the action taken now (a[t]).
        generator: draws the initial noise (reproducible samples). num_steps: overrides config.num_steps.
        noise: standard-normal float [B, C, H, W] to start from instead of drawing it (lets a caller give
            every row its own generator, so a row's sample does not depend on the batch around it).
        Returns uint8 [B, H, W, C] for uint8 input, float32 [B, C, H, W] in [-1, 1] (on the uint8 grid)
        for float input. A batch of 1 in one argument is broadcast to the other's batch.
        """
        context, as_uint8 = self._frames(context_frames, "context_frames", window=True)
        actions = self._actions(context_actions, "context_actions", self.config.context)
        context, actions = broadcast_batch(("context_frames", context), ("context_actions", actions))
        x = self._sample(context, actions, generator, self.sigmas(num_steps), noise)
        return model_to_frames(x) if as_uint8 else x

    @torch.inference_mode()
    def rollout(self, context_frames: Tensor | np.ndarray, past_actions: Tensor | np.ndarray,
                actions: Tensor | np.ndarray, generator: torch.Generator | None = None,
                num_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """Imagine T frames f[t+1..t+T] autoregressively, one per action of ``actions``, batched over B.

        context_frames: uint8 [B, K, H, W, C] = f[t-K+1..t] (or float [B, K, C, H, W] in [-1, 1]).
        past_actions: float [B, K, A] = a[t-K..t-1], the action that led into each context frame
            (``worldvid.windows``); a[t-K] falls out of the window, so only the last K-1 enter the model.
        actions: float [B, T, A] = a[t..t+T-1], the actions to imagine; actions[:, j] is taken from
            frame f[t+j] and yields output frame j (f[t+j+1]).
        So output j is predicted from frames f[t+j-K+1..t+j] and context actions a[t+j-K+1..t+j] (real
        context where available, imagined frames after), exactly the ``predict_next`` window:
        ``rollout(f, past, a)[:, 0] == predict_next(f, cat(past[:, 1:], a[:, :1]))`` for one generator state.
        Imagined frames are clamped and snapped to the uint8 grid before they re-enter the context.
        noise: standard-normal float [B, T, C, H, W], each frame's starting noise, instead of drawing it from
            ``generator`` (one [B, C, H, W] draw per frame, in order): lets several callers with their own generators
            share one batched rollout (``worldvid.agents.lockstep``) and get the frames they would get alone.
        Returns uint8 [B, T, H, W, C] for uint8 input, float32 [B, T, C, H, W] for float input.
        A batch of 1 in any argument is broadcast (one context, many candidate action sequences).
        """
        k = self.config.context
        context, as_uint8 = self._frames(context_frames, "context_frames", window=True)
        past = self._actions(past_actions, "past_actions", k)
        future = self._actions(actions, "actions", None)
        if future.shape[1] < 1:
            raise ValueError("actions must hold at least one step, got T=0")
        context, past, future = broadcast_batch(
            ("context_frames", context), ("past_actions", past), ("actions", future))
        c = self.config
        shape = (future.shape[0], future.shape[1], c.channels, c.frame_size, c.frame_size)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(f"noise must be float [B, T, C, H, W] = {list(shape)}, got {list(noise.shape)}")
        stream = torch.cat([past[:, 1:], future], dim=1)  # a[t-K+1 .. t+T-1]
        sigmas = self.sigmas(num_steps)
        frames = list(context.unbind(1))
        outputs = []
        for j in range(future.shape[1]):
            window = torch.stack(frames[-k:], dim=1)
            x = self._sample(window, stream[:, j:j + k], generator, sigmas, None if noise is None else noise[:, j])
            frames.append(x)
            outputs.append(x)
        out = torch.stack(outputs, dim=1)
        return model_to_frames(out) if as_uint8 else out

    def _sample(self, context: Tensor, actions: Tensor, generator: torch.Generator | None,
                sigmas: Tensor, noise: Tensor | None = None) -> Tensor:
        c = self.config
        shape = (context.shape[0], c.channels, c.frame_size, c.frame_size)
        if noise is None:
            noise = randn(shape, generator, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be float [B, C, H, W] = {list(shape)}, got {list(noise.shape)}")
        if c.objective == "regression":  # deterministic: one call, the noise unused
            with self.autocast_context():
                return quantize(self.frame_of(self.denoiser.regress(context, actions), context))
        x = noise.to(self.device, torch.float32) * sigmas[0]
        sampler = SAMPLER_FUNCTIONS[c.sampler]
        with self.autocast_context():
            x = sampler(self.denoiser, x, sigmas, context=context, actions=actions)
        return quantize(self.frame_of(x, context))

    # ------------------------------------------------------------------ input validation
    def _frames(self, frames: Tensor | np.ndarray, name: str, window: bool,
                count: int | None = None) -> tuple[Tensor, bool]:
        """Validate frames (a window: K of them, or ``count``) and bring them to float32 model space on the
        model's device."""
        c = self.config
        frames = as_tensor(frames, name)
        lead = "[B, K, " if window else "[B, "
        lead_dims = 2 if window else 1
        if frames.dtype == torch.uint8:
            expected = f"uint8 {lead}H, W, C]"
            spatial = tuple(frames.shape[lead_dims:lead_dims + 2])
            chan = frames.shape[-1] if frames.ndim == lead_dims + 3 else None
        elif frames.dtype.is_floating_point:
            expected = f"float {lead}C, H, W] in [-1, 1]"
            spatial = tuple(frames.shape[-2:])
            chan = frames.shape[lead_dims] if frames.ndim == lead_dims + 3 else None
        else:
            raise TypeError(f"{name} must be uint8 {lead}H, W, C] or float {lead}C, H, W], got dtype {frames.dtype}")
        if frames.ndim != lead_dims + 3:
            raise ValueError(f"{name} must be {expected}, got shape {tuple(frames.shape)}")
        if window and frames.shape[1] != (c.context if count is None else count):
            want = f"the model's context is K={c.context}" if count is None else f"{count} are needed"
            raise ValueError(
                f"{name} holds {frames.shape[1]} frames but {want}: "
                f"expected {expected}, got shape {tuple(frames.shape)}")
        if spatial != (c.frame_size, c.frame_size):
            raise ValueError(
                f"{name} frame size {spatial[0]}x{spatial[1]} does not match the model's frame_size="
                f"{c.frame_size}: expected {expected}, got shape {tuple(frames.shape)}")
        if chan != c.channels:
            raise ValueError(
                f"{name} has {chan} channels, the model has {c.channels}: expected {expected}, "
                f"got shape {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            return frames_to_model(frames.to(self.device)), True
        frames = frames.to(device=self.device, dtype=torch.float32)
        if not torch.isfinite(frames).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return frames, False

    def _actions(self, actions: Tensor | np.ndarray, name: str, steps: int | None) -> Tensor:
        """Validate actions float [B, steps, A] (any T when steps is None; a multi-task model zero-pads shorter
        actions to A) and move them to the model's
        device as float32."""
        a = self.config.action_dim
        actions = as_tensor(actions, name)
        if not actions.dtype.is_floating_point:
            raise TypeError(f"{name} must be a float tensor [B, T, A={a}], got dtype {actions.dtype}")
        if self.config.multi_task and actions.ndim == 3 and 0 < actions.shape[2] < a:
            actions = nn.functional.pad(actions, (0, a - actions.shape[2]))  # zero-padded, as in training
        if actions.ndim != 3 or actions.shape[2] != a or (steps is not None and actions.shape[1] != steps):
            want = "T" if steps is None else str(steps)
            raise ValueError(
                f"{name} must be float [B, {want}, A] with action_dim A={a}, got shape {tuple(actions.shape)}")
        actions = actions.to(device=self.device, dtype=torch.float32)
        if not torch.isfinite(actions).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return actions

    # ------------------------------------------------------------------ checkpoints
    def check_compatible(self, *, frame_size: int | None = None, action_dim: int | None = None,
                         context: int | None = None, env_id: str | None = None,
                         expect: Mapping[str, Any] | None = None) -> None:
        """Raise ValueError naming the field if this model's config differs from what it is used with.

        None means "don't check". env_id is compared without a 'module:' prefix and only when both the
        config and the argument name one (older checkpoints may not record it). A multi-task model accepts any
        of its ``tasks`` and any action size up to its action_dim (shorter actions are zero-padded).
        """
        wanted: dict[str, Any] = dict(expect or {})
        for key, value in (("frame_size", frame_size), ("action_dim", action_dim), ("context", context),
                           ("env_id", env_id)):
            if value is not None:
                wanted[key] = value
        fields = self.config.to_dict()
        for key, value in wanted.items():
            if key not in fields:
                raise ValueError(f"cannot check unknown WorldModelConfig field {key!r}")
            have = fields[key]
            if key == "env_id":
                if self.config.accepts_task(value):
                    continue
                if self.config.multi_task:
                    raise ValueError(f"world model mismatch: it was trained on {', '.join(self.config.tasks)}, "
                                     f"not on {value}")
            elif key == "action_dim" and isinstance(value, int) and self.config.accepts_actions(value):
                continue
            elif _jsonable(value) == have:
                continue
            raise ValueError(
                f"world model mismatch: it was built with {key}={have!r} but is used with {key}={value!r}"
                + (f" (env {self.config.env_id})" if self.config.env_id and key != "env_id" else ""))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + a model card ``README.md`` into folder ``path``,
        atomically; returns the path.

        See ``worldvid.model.pretrained.save_folder``: an existing checkpoint is never left half-overwritten.
        """
        return save_folder(self, path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        token: str | bool | None = None, expect: Mapping[str, Any] | None = None,
                        frame_size: int | None = None, action_dim: int | None = None,
                        context: int | None = None, env_id: str | None = None,
                        device: torch.device | str | None = None, autocast: bool | None = None,
                        channels_last: bool = CHANNELS_LAST_DEFAULT, dtype: torch.dtype | str | None = None,
                        torch_dtype: torch.dtype | str | None = None) -> "WorldModel":
        """Load a folder written by ``save_pretrained`` (or a run folder's model/), or Hub repo "owner/name" at
        ``revision`` (``worldvid.model.hub.resolve_folder``: through huggingface_hub's cache, ``cache_dir``; only the
        cache when HF_HUB_OFFLINE or ``local_files_only``), onto ``device`` (CPU by default), in eval mode.

        frame_size / action_dim / context / env_id / expect (any config fields): what the model will be
        used with; a mismatch raises ValueError naming the field (see ``check_compatible``). ``dtype`` (or
        ``torch_dtype``): float32 (default) or bfloat16 weights (run under bf16 autocast). A missing file raises
        FileNotFoundError and a corrupt one ValueError, each naming the file.
        """
        from worldvid.model.card import remember_provenance
        from worldvid.model.hub import resolve_folder
        from worldvid.model.pretrained import weights_dtype

        folder = resolve_folder(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                token=token, kind="world model")
        model = load_folder(cls, folder, autocast=autocast, dtype=weights_dtype(dtype, torch_dtype), device=device,
                            expect=expect, frame_size=frame_size, action_dim=action_dim, context=context,
                            env_id=env_id)
        model.channels_last = channels_last
        remember_provenance(model, folder)
        return model.eval()

    def push_to_hub(self, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, commit_message: str | None = None) -> Any:
        """Upload this model (config, weights, card) to Hub repo ``repo_id`` as one commit; returns the CommitInfo
        (``worldvid.model.hub.push_to_hub``; offline it raises ConnectionError before writing anything)."""
        from worldvid.model.hub import push_to_hub

        return push_to_hub(self, repo_id, revision=revision, private=private, token=token,
                           commit_message=commit_message)


# ---------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

