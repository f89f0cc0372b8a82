"""Training the learned goal distance from episode stores alone (``worldvid train-cost``).

What it reads: each episode's frames and their order. Nothing else (no actions, rewards, flags, goal frames,
policy names, seeds, simulator states or colours), so a store whose other fields are scrambled trains the
same weights.

The default objective ('temporal') fits d(f[t], f[t+k]) to the k steps between a frame and a later frame of
its episode, at a low expectile, and lifts d of random pairs (frames of different samples) toward
``max_distance`` with a small one-sided weight: within-episode steps say how near what the data connected
is, the lift says that what it never connected is far. The alternative ('qrl', quasimetric learning, Wang
et al. 2023, with a metric embedding) makes random pairs as far apart as possible while every recorded step
stays within 1, by a Lagrange multiplier learned by dual ascent. Batches and noise are drawn from generators
seeded by (seed, step), so a resumed run is bit-identical to an uninterrupted one. A run folder has the
layout of ``worldvid.run_folder`` (train_config.json, model/, training_state.pt, metrics.csv/jsonl).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from worldvid.checkpoint import TRAINING_STATE, load_states, load_training_state, save_training_state
from worldvid.data.dataset import split_episodes
from worldvid.data.store import EpisodeStore
from worldvid.device import resolve_device
from worldvid.goal_distance.model import GoalDistance, GoalDistanceConfig
from worldvid.optim import MetricsLog, lr_schedule, update_ema
from worldvid.run_folder import RunFolder, resume_config
from worldvid.tracking import Tracker, check_logger, open_tracker, resolve_logger


@dataclass(frozen=True)
class GoalDistanceTrainConfig:
    """Optimisation settings of a learned goal distance (saved in the run's train_config.json)."""

    steps: int = 6000
    """Optimizer steps in total."""
    batch_size: int = 128
    """Recorded steps (and as many random pairs) per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (after warm-up, cosine-decayed to lr_final_fraction of it)."""
    lr_final_fraction: float = 0.05
    """The learning rate at the last step, as a fraction of lr."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    objective: str = "temporal"
    """'qrl': push random pairs apart while every recorded step stays within 1 (shortest paths, for the
    'metric' head); 'temporal': regress the steps between a frame and a later frame of its episode, at a
    low expectile (the quicker ways there count most; for the 'pair' head)."""
    error_scale: str = "steps"
    """'temporal': where d's error from the steps k is measured: 'steps' = (d - k) / 10; 'log' = log(1 + d) -
    log(1 + k) (one step off near the goal weighs as much as ten far from it; on Push it blurred the long
    range and planned worse: 3 of 19 episodes against 13 of 30)."""
    expectile: float = 0.3
    """'temporal': the expectile of the steps-between targets that d fits (0.5: their mean)."""
    gap_power: float = 1.0
    """'temporal': gaps k = floor(u^gap_power (T - t + 1)), u uniform: above 1, short gaps are drawn more often."""
    max_distance: float = 100.0
    """Random pairs are pushed apart up to about this many steps (beyond it the push fades)."""
    far_weight: float = 0.01
    """'temporal': weight of the push that lifts d of random pairs (a frame and another sample's later frame)
    toward max_distance, one-sided (0: off). The steps between frames of one episode bound d only where the
    data went: without the push, states no episode leaves (a block pushed against a wall) read as near any
    goal (Push oracle 77% without it, 97% with 0.01). Too strong a push flattens d where the data connects
    everything (PointReach oracle 87% with 0.05, 100% with 0.01)."""
    step_slack: float = 0.05
    """Mean squared excess of one recorded step over distance 1 the multiplier tolerates."""
    ema_decay: float = 0.995
    """EMA decay of the weights that are saved and used as the cost."""
    checkpoint_every: int = 500
    """Steps between atomic checkpoints (and one at the end)."""
    log_every: int = 100
    """Steps between metric rows."""
    seed: int = 0
    """Seeds initial weights and every batch."""
    held_out_fraction: float = 0.1
    """Share of each store's episodes (the last ones) never trained on, for diagnostics."""
    logger: str = "auto"
    """Experiment tracker beside the metrics files: 'tensorboard', 'wandb', 'none' or 'auto' (TensorBoard when
    a writer is installed, else none); as in the world model's TrainConfig."""

    def __post_init__(self) -> None:
        check_logger(self.logger)
        for name in ("steps", "batch_size", "warmup_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.error_scale not in ("log", "steps"):
            raise ValueError(f"error_scale must be 'log' or 'steps', got {self.error_scale!r}")
        if self.objective not in ("qrl", "temporal") or not 0 < self.expectile < 1:
            raise ValueError(f"objective must be 'qrl' or 'temporal' and expectile in (0, 1), got {self.objective!r}, "
                             f"{self.expectile}")
        if self.far_weight < 0:
            raise ValueError(f"far_weight must be >= 0, got {self.far_weight}")
        if not self.max_distance > 1 or not self.step_slack > 0 or not 0 < self.held_out_fraction < 1:
            raise ValueError("max_distance must exceed 1, step_slack be positive, held_out_fraction in (0, 1)")


RESUME_CHANGEABLE = ("steps", "log_every", "checkpoint_every", "logger")
"""GoalDistanceTrainConfig fields a resumed run may change; any other would make it another run."""


class FramePairs:
    """The frames of several stores' training episodes in memory, and seeded batches of pairs from them.

    frames: uint8 [N, H, W, 3], episodes back to back; ``starts``: int64 [M] index of every frame that has
    a successor in its episode (the first frame of a recorded step).
    """

    def __init__(self, stores: Sequence[EpisodeStore], episodes: Sequence[Sequence[int]], progress: bool = True) -> None:
        chunks, starts, ends, offset = [], [], [], 0
        total = sum(len(e) for e in episodes)
        with tqdm(total=total, desc="read frames", unit="ep", disable=not progress) as bar:
            for store, ids in zip(stores, episodes):
                for episode in ids:
                    frames = store.read_frames(episode, 0, store.episode_length(episode) + 1)
                    chunks.append(frames)
                    starts.append(np.arange(offset, offset + len(frames) - 1))
                    ends.append(np.full(len(frames), offset + len(frames) - 1))
                    offset += len(frames)
                    bar.update(1)
        if not chunks or offset < 2:
            raise ValueError("no recorded steps to learn a distance from")
        self.frames = torch.from_numpy(np.concatenate(chunks))
        self.starts = torch.from_numpy(np.concatenate(starts))
        self.ends = torch.from_numpy(np.concatenate(ends))
        """int64 [N]: the index of the last frame of each frame's episode."""

    def batch(self, size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f[t], f[t+1], a random frame), each uint8 [size, H, W, 3], drawn with a generator seeded by (seed, step)."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        t = self.starts[torch.randint(len(self.starts), (size,), generator=g)]
        other = torch.randint(len(self.frames), (size,), generator=g)
        return self.frames[t], self.frames[t + 1], self.frames[other]

    def later(self, size: int, seed: int, step: int, power: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f[t] uint8 [size, H, W, 3], f[t+k] of the same episode, k float32 [size]), k = floor(u^power (T - t + 1))
        with u uniform (power > 1 favours short gaps), drawn with a generator seeded by (seed, step)."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        t = torch.randint(len(self.frames), (size,), generator=g)
        room = self.ends[t] - t + 1
        k = (torch.rand(size, generator=g).pow(power) * room).long().clamp(max=room - 1)
        return self.frames[t], self.frames[t + k], k.float()


class _Multiplier(torch.nn.Module):
    """The Lagrange multiplier of the one-step constraint, kept positive (softplus)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = torch.nn.Parameter(torch.tensor(math.log(math.expm1(10.0))))

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw)


def temporal_objective(model: GoalDistance, batch: Sequence[torch.Tensor],
                       config: GoalDistanceTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, metrics): d(f[t], f[t+k]) fits k (capped at max_distance) at the ``expectile``, errors measured on
    the config's ``error_scale``."""
    now, later, k = (torch.as_tensor(b, device=model.device) for b in batch)
    e_now, e_later = model.embed(torch.cat([now, later])).chunk(2)
    d = model.compare(e_now, e_later)
    target = k.clamp(max=config.max_distance)
    error = torch.log1p(d) - torch.log1p(target) if config.error_scale == "log" else (d - target) / 10.0
    weight = torch.where(error > 0, 1.0 - config.expectile, config.expectile)
    loss = (weight * error.pow(2)).mean()
    metrics = {"loss": float(loss.detach()), "abs_error": float((d - target).abs().mean().detach()),
               "distance": float(d.mean().detach())}
    if config.far_weight > 0:  # random pairs: each frame with the next sample's later frame
        far = model.compare(e_now, e_later.roll(1, dims=0))
        lift = F.relu(config.max_distance - far).div(10.0).pow(2).mean()
        loss = loss + config.far_weight * lift
        metrics["random_pair_distance"] = float(far.mean().detach())
    return loss, metrics


def qrl_objective(model: GoalDistance, multiplier: _Multiplier, batch: Sequence[torch.Tensor],
              config: GoalDistanceTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to minimise, metrics): push random pairs apart, keep each recorded step within distance 1.

    The multiplier's own gradient is the constraint's excess (dual ascent): it grows while steps are too long.
    """
    now, after, other = (torch.as_tensor(b, device=model.device) for b in batch)
    embedded = model.embed(torch.cat([now, after, other]))
    e_now, e_after, e_other = embedded.chunk(3)
    local = (e_now - e_after).pow(2).sum(-1).add(1e-12).sqrt()
    spread = (e_now - e_other).pow(2).sum(-1).add(1e-12).sqrt()
    excess = F.relu(local - 1.0).pow(2).mean()
    push = F.softplus(config.max_distance - spread).mean()
    lam = multiplier()
    loss = push + lam.detach() * excess - lam * (excess.detach() - config.step_slack)
    return loss, {name: float(value.detach()) for name, value in (
        ("push", push), ("step_excess", excess), ("multiplier", lam), ("step_distance", local.mean()),
        ("pair_distance", spread.mean()))}


def train_goal_distance(
    data_dir: str | os.PathLike | Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    train_config: GoalDistanceTrainConfig = GoalDistanceTrainConfig(),
    model_config: GoalDistanceConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Learn d(frame, goal) from the episode store(s) at ``data_dir`` into ``run_dir``; returns a summary.

    Several stores must hold one task at one frame size; each store's last episodes are held out (listed
    in train_config.json). The model config defaults to ``GoalDistanceConfig`` sized for the data. With
    ``resume`` the run continues from its checkpoint (``train_config.steps`` may raise the total); without
    it, a folder that already holds a run is refused.
    """
    device = resolve_device(device)
    run = RunFolder.new(run_dir)
    stores = [EpisodeStore(d) for d in ([data_dir] if isinstance(data_dir, (str, os.PathLike)) else data_dir)]
    spec = stores[0].spec
    for store in stores[1:]:
        if (store.spec.env_id, tuple(store.spec.frame_shape)) != (spec.env_id, tuple(spec.frame_shape)):
            raise ValueError(f"{store.root} holds {store.spec.env_id} frames {list(store.spec.frame_shape)}, "
                             f"{stores[0].root} {spec.env_id} {list(spec.frame_shape)}: one distance per task and size")
    checked = run.snapshot()  # nothing is written before everything below was checked
    saved = run.begin_training(resume)
    if saved is not None:
        train_config = resume_config(GoalDistanceTrainConfig, saved["train"], train_config, RESUME_CHANGEABLE, run.path)
        run_model = GoalDistance.from_pretrained(run.model_path).config
        if model_config is not None and model_config != run_model:
            raise ValueError(f"cannot change the distance model's configuration when resuming {run.path}")
        model_config = run_model
    model_config = model_config or GoalDistanceConfig(frame_size=spec.frame_shape[0], env_id=spec.env_id)
    if (model_config.frame_size, model_config.frame_size, 3) != tuple(spec.frame_shape):
        raise ValueError(f"the data holds {list(spec.frame_shape)} frames, the distance is configured for "
                         f"{model_config.frame_size}x{model_config.frame_size}")
    splits = [split_episodes(store, train_config.held_out_fraction) for store in stores]
    records = [{"data": str(Path(s.root).resolve()), "held_out_episodes": h} for s, (_, h) in zip(stores, splits)]
    if saved is not None:
        run.check_same_data(records)
    pairs = FramePairs(stores, [train for train, _ in splits], progress=progress)  # reads every frame: checks the data
    logger = resolve_logger(train_config.logger)  # a missing tracker package fails here, before any write

    torch.manual_seed(train_config.seed)
    model, multiplier = GoalDistance(model_config).to(device), _Multiplier().to(device)
    if model_config.standardize and not resume:  # from up to 20,000 evenly spaced training frames
        model.fit_pixel_statistics(pairs.frames[torch.linspace(0, len(pairs.frames) - 1, 20_000).long().unique()])
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW([{"params": model.parameters(), "weight_decay": train_config.weight_decay},
                                   {"params": multiplier.parameters(), "weight_decay": 0.0}], lr=train_config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(train_config))
    step = 0
    if resume:
        state = load_training_state(run.path, keys=("model", "ema", "multiplier", "optimizer", "scheduler"))
        load_states(state, {"model": model, "ema": ema, "multiplier": multiplier, "optimizer": optimizer,
                            "scheduler": scheduler}, run.path)
        step = state["step"]
    with run.writing("train-cost", checked):
        record = {"train": asdict(train_config), "model": model_config.to_dict(), "kind": "goal_distance",
                  "data": records[0]["data"], "held_out_episodes": splits[0][1], "stores": records}
        run.write_config(record)
        tracker = open_tracker(logger, run.path, step, record)
        return _train_loop(run, train_config, model, ema, multiplier, optimizer, scheduler, pairs, step, progress,
                           tracker)


def _train_loop(run: RunFolder, train_config: GoalDistanceTrainConfig, model: GoalDistance, ema: GoalDistance,
                multiplier: _Multiplier, optimizer: torch.optim.Optimizer, scheduler: Any, pairs: FramePairs,
                step: int, progress: bool, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train from ``step`` to ``train_config.steps``, logging and checkpointing into ``run`` (whose lock the
    caller holds), the metric rows also sent to ``tracker``; returns ``train_goal_distance``'s summary."""
    log = MetricsLog(run, step, tracker)

    def checkpoint() -> None:  # the model first: a training state always has a model folder to resume with
        ema.save_pretrained(run.model_path)
        save_training_state(run.path, {"model": model.state_dict(), "ema": ema.state_dict(),
                                       "multiplier": multiplier.state_dict(), "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "step": step})

    if not (run.path / TRAINING_STATE).exists():
        checkpoint()
    started, window, rows = time.perf_counter(), time.perf_counter(), []
    bar = tqdm(total=train_config.steps, initial=step, desc="train-cost", unit="step", disable=not progress)
    model.train()
    while step < train_config.steps:
        if train_config.objective == "qrl":
            loss, metrics = qrl_objective(model, multiplier, pairs.batch(train_config.batch_size, train_config.seed, step),
                                      train_config)
        else:
            loss, metrics = temporal_objective(
                model, pairs.later(train_config.batch_size, train_config.seed, step, train_config.gap_power), train_config)
        if not torch.isfinite(loss):
            raise RuntimeError(f"the goal-distance loss became {float(loss)} at step {step}; "
                               f"the last good checkpoint in {run.path} is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        update_ema(ema, model, min(train_config.ema_decay, (1 + step) / (10 + step)))
        rows.append(metrics)
        bar.update(1)
        if step % train_config.log_every == 0 or step == train_config.steps:
            row = {"step": step, **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]},
                   "lr": scheduler.get_last_lr()[0], "steps_per_s": len(rows) / (time.perf_counter() - window)}
            log.add(row)
            bar.set_postfix({k: f"{v:.2f}" for k, v in list(metrics.items())[:3]})
            rows, window = [], time.perf_counter()
        if step % train_config.checkpoint_every == 0 or step == train_config.steps:
            checkpoint()
    bar.close()
    log.close()
    return {"run": str(run.path), "steps": step, "seconds": time.perf_counter() - started,
            "parameters": sum(p.numel() for p in model.parameters()), "frames": len(pairs.frames),
            "recorded_steps": len(pairs.starts),
            **({f"final_{k}": v for k, v in log.rows[-1].items() if k != "step"} if log.rows else {})}
