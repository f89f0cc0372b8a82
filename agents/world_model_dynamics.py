"""Imagination by the world model (``WorldModelDynamics``), alone or for several searches in one batch.

Each dynamics draws its candidates' sampling noise from its own generator, in the order ``WorldModel.rollout``
would draw it; so a request answered inside a batch of other episodes' requests (``imagine_together``) gets the
frames it would get alone, up to the rounding of batched arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from worldvid.agents.base import History, Imagine
from worldvid.model.sampling import randn


class WorldModelDynamics:
    """Imagination by ``WorldModel.rollout``: every candidate of a call in one batch, one generator.

    ``num_steps`` overrides the model's denoising steps. The frames stay on the model's device.
    """

    def __init__(self, model, num_steps: int | None = None, seed: int = 0) -> None:
        self.model = model
        self.num_steps = num_steps
        self.calls = 0
        self.generator = torch.Generator(device=model.device)
        self.reset(seed)

    @property
    def context(self) -> int:
        """K, the context frames the model needs."""
        return int(self.model.config.context)

    def reset(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))
        self.calls = 0

    def inputs(self, history: History, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The rollout inputs of one call, on the model's device, counted as a call: context frames uint8
        [1, K, h, w, 3], past actions float32 [1, K, A], actions float32 [N, T, A] and their noise float32
        [N, T, C, h, w] (drawn now, one [N, C, h, w] draw per frame, as ``WorldModel.rollout`` draws it)."""
        device, c = self.model.device, self.model.config
        actions = torch.as_tensor(actions, dtype=torch.float32).to(device)
        if actions.ndim != 3:
            raise ValueError(f"actions must be float32 [N, T, A], got shape {tuple(actions.shape)}")
        count, steps = actions.shape[:2]
        noise = torch.stack([randn((count, c.channels, c.frame_size, c.frame_size), self.generator, device)
                             for _ in range(steps)], dim=1)
        self.calls += 1
        frames = torch.from_numpy(history.frames)[None].to(device)
        past = torch.from_numpy(history.actions)[None].to(device)
        return frames, past, actions, noise

    def imagine(self, history: History, actions: Tensor) -> Tensor:
        """actions float32 [N, H, A] -> uint8 [N, H, h, w, 3] on the model's device (one rollout call)."""
        frames, past, actions, noise = self.inputs(history, actions)
        return self.model.rollout(frames, past, actions, num_steps=self.num_steps, noise=noise)

    def batch_key(self) -> tuple[int, int | None]:
        """Requests whose dynamics share this key can be answered by one rollout (``imagine_together``)."""
        return id(self.model), self.num_steps


def imagine_together(requests: Sequence[Imagine]) -> list[Tensor]:
    """Answer several ``Imagine`` requests of ``WorldModelDynamics`` with one batched rollout.

    All requests must share a ``batch_key`` and their actions' length T; request r has N_r candidates and its own
    history. Returns one uint8 [N_r, T, h, w, 3] per request, in order; each request's dynamics draws its noise and
    counts its call as when imagining alone.
    """
    if not requests:
        return []
    first = requests[0].dynamics
    keys = {request.dynamics.batch_key() for request in requests}  # type: ignore[attr-defined]
    if len(keys) > 1:
        raise ValueError(f"requests batched together must share one model and num_steps, got {len(keys)} kinds")
    parts = [request.dynamics.inputs(request.history, request.actions)  # type: ignore[attr-defined]
             for request in requests]
    if len({tuple(actions.shape[1:]) for _, _, actions, _ in parts}) > 1:
        raise ValueError("requests batched together must imagine the same number of steps T")
    counts = [actions.shape[0] for _, _, actions, _ in parts]
    if len(parts) == 1:
        frames, past, actions, noise = parts[0]
    else:
        frames = torch.cat([f.expand(n, *f.shape[1:]) for (f, _, _, _), n in zip(parts, counts)])
        past = torch.cat([p.expand(n, *p.shape[1:]) for (_, p, _, _), n in zip(parts, counts)])
        actions = torch.cat([a for _, _, a, _ in parts])
        noise = torch.cat([z for _, _, _, z in parts])
    out = first.model.rollout(frames, past, actions, num_steps=first.num_steps, noise=noise)  # type: ignore[attr-defined]
    return list(out.split(counts))
