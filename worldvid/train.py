"""Training the world model: AdamW with warm-up, gradient clipping, EMA, atomic resumable checkpoints.

What a run folder holds is ``worldvid.run_folder``; the metric rows also go to the tracker ``TrainConfig.logger``
names (``worldvid.tracking``: TensorBoard or W&B), with a picture of real vs imagined held-out frames at checkpoints.

Batches are drawn from a generator seeded by (seed, step), and the diffusion noise likewise, so a run
resumed from step s draws exactly what the uninterrupted run drew after s: resumed weights are
bit-identical to an uninterrupted run's.

Nothing is written before everything was checked: the configs, the device, every shard of every store (one
frame each, and one window of each store), the checkpoint of a resumed run and the data loader. Then the run
folder's lock is taken (a second writer is refused) and the first file is written.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from worldvid.checkpoint import load_states, load_training_state, rng_states, save_training_state
from worldvid.data.dataset import FrameWindowDataset, split_episodes
from worldvid.data.store import EpisodeStore
from worldvid.device import native_bf16, resolve_device
from worldvid.evaluate import Windows
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.optim import MetricsLog, lr_schedule, update_ema
from worldvid.ranks import Ranks, RankShare, check_workers
from worldvid.run_folder import RunFolder, resume_config
from worldvid.tracking import open_tracker, preview_image, preview_windows, resolve_logger
from worldvid.train_config import RESUME_CHANGEABLE, TrainConfig, TrainingDivergedError
from worldvid.train_stores import check_readable, open_stores, task_config


class _StepBatches(torch.utils.data.Sampler):
    """Batch indices for steps start..steps-1, batch s drawn by a generator seeded with (seed, s).

    sizes: windows of each concatenated dataset. weights: the share of each batch drawn from each (None:
    uniform over all windows).
    """

    def __init__(self, sizes: list[int], batch_size: int, seed: int, start: int, steps: int,
                 weights: tuple[float, ...] | None = None) -> None:
        self.sizes, self.b, self.seed, self.start, self.steps = torch.tensor(sizes), batch_size, seed, start, steps
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.offsets = self.sizes.cumsum(0) - self.sizes

    def __iter__(self) -> Iterator[list[int]]:
        n = int(self.sizes.sum())
        for step in range(self.start, self.steps):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            if self.weights is None:
                yield torch.randint(n, (self.b,), generator=g).tolist()
                continue
            part = torch.multinomial(self.weights, self.b, replacement=True, generator=g)
            within = (torch.rand(self.b, generator=g, dtype=torch.float64) * self.sizes[part]).long()
            yield (self.offsets[part] + within).tolist()

    def __len__(self) -> int:
        return self.steps - self.start


def _resolve_configs(
    stores: list[EpisodeStore], run: RunFolder, model_config: WorldModelConfig | None, train_config: TrainConfig,
    saved: dict[str, Any] | None, init_model: WorldModel | None = None,
) -> tuple[WorldModelConfig, TrainConfig]:
    if saved is not None:  # resuming: the saved configs, with the overrides a resumed run may take
        train_config = resume_config(TrainConfig, saved["train"], train_config, RESUME_CHANGEABLE, run.path)
        run_model = run.load_model().config
        if model_config is not None and model_config != run_model:
            changed = [k for k, v in model_config.to_dict().items() if run_model.to_dict().get(k) != v]
            raise ValueError(f"cannot change the model ({', '.join(changed)}) when resuming {run.path}")
        model_config = run_model
    elif init_model is not None:
        if model_config is not None:
            raise ValueError("a run initialised from another model takes that model's configuration; drop the model config")
        model_config = init_model.config
    data_config = task_config(stores)
    if model_config is None:
        model_config = data_config
    if data_config.multi_task and not model_config.multi_task:  # a multi-task model may train on any of its tasks
        raise ValueError(f"the data holds {', '.join(data_config.tasks)} but the model is for {model_config.env_id}")
    for store in stores:
        spec = store.spec
        if (model_config.frame_size, model_config.frame_size, 3) != tuple(spec.frame_shape):
            raise ValueError(
                f"the data at {store.root} has frames {list(spec.frame_shape)} but the model is configured for "
                f"{model_config.frame_size}x{model_config.frame_size}; collect with --size {model_config.frame_size}"
            )
        if not model_config.accepts_task(spec.env_id):
            raise ValueError(f"the model is for {model_config.env_id or ', '.join(model_config.tasks)}, the data at "
                             f"{store.root} is from {spec.env_id}")
        if not model_config.accepts_actions(spec.action_dim):
            raise ValueError(f"the data has actions of size {spec.action_dim}, the model {model_config.action_dim}")
    return model_config, train_config


@dataclass
class RunPlan:
    """A validated training run: what every training process needs to start it (picklable; paths as given)."""

    run: RunFolder
    checked: tuple[tuple[int, int, int] | None, ...]  # the folder's snapshot() before it was validated
    train_config: TrainConfig
    model_config: WorldModelConfig
    data_dirs: list[str]
    train_episodes: list[list[int]]  # per store
    record: dict[str, Any]  # train_config.json
    logger: str
    resume: bool
    init_from: str | None

    def windows(self, store: EpisodeStore, episodes: list[int]) -> FrameWindowDataset:
        """The training windows of ``episodes`` of ``store``, as this run's model and unroll read them."""
        return FrameWindowDataset(store, context=self.model_config.context, episodes=episodes,
                                  action_dim=self.model_config.action_dim, unroll=self.train_config.unroll)

    def summary(self, windows: int) -> dict[str, Any]:
        """The data part of ``train``'s summary."""
        held_out = sum(len(s["held_out_episodes"]) for s in self.record["stores"])
        return {"train_episodes": sum(map(len, self.train_episodes)), "held_out_episodes": held_out, "windows": windows}


def prepare_run(
    data_dirs: list[str | os.PathLike], run_dir: str | os.PathLike, train_config: TrainConfig,
    model_config: WorldModelConfig | None, resume: bool, init_from: str | os.PathLike | None, workers: int = 1,
) -> tuple[RunPlan, list[FrameWindowDataset], WorldModel | None]:
    """Check everything a run needs before its first write (``train``'s docstring): returns the plan, the opened
    training windows of each store (one window of each read) and the model to start from (``init_from``)."""
    stores = open_stores(data_dirs)
    check_readable(stores)
    run = RunFolder.new(run_dir)
    checked = run.snapshot()
    saved = run.begin_training(resume)
    check_workers(saved, workers, run_dir)
    if saved is not None and init_from is not None and str(Path(init_from).resolve()) != saved.get("init_from"):
        raise ValueError(f"cannot change --init when resuming {run_dir} (it started from {saved.get('init_from')})")
    init_model = RunFolder.of(init_from).load_model() if init_from is not None and not resume else None
    model_config, train_config = _resolve_configs(stores, run, model_config, train_config, saved, init_model)
    if train_config.data_weights is not None and len(train_config.data_weights) != len(stores):
        raise ValueError(f"got {len(train_config.data_weights)} data weights for {len(stores)} episode stores")
    if train_config.batch_size % workers:
        raise ValueError(f"batch_size {train_config.batch_size} does not divide among {workers} workers; "
                         f"use a multiple of {workers}")
    splits = [split_episodes(store, train_config.held_out_fraction) for store in stores]
    stores_record = [{"data": str(Path(d).resolve()), "held_out_episodes": h} for d, (_, h) in zip(data_dirs, splits)]
    if saved is not None:
        run.check_same_data(stores_record)
    train_config.frame_loss().check_objective(model_config.objective)
    if train_config.unroll > 1 and model_config.objective != "regression":
        raise ValueError(f"unroll={train_config.unroll} needs a regression model (objective 'regression'), this one "
                         f"is {model_config.objective!r}")
    logger = resolve_logger(train_config.logger)  # a missing tracker package fails here, before any write
    init = None if init_from is None else str(Path(init_from).resolve())
    record = {"train": asdict(train_config), "data": stores_record[0]["data"], "held_out_episodes": splits[0][1],
              "stores": stores_record, "init_from": init, "workers": workers}
    plan = RunPlan(run, checked, train_config, model_config, [str(d) for d in data_dirs], [t for t, _ in splits],
                   record, logger, resume, init)
    parts = [plan.windows(store, train_eps) for store, (train_eps, _) in zip(stores, splits)]
    for part in parts:
        part[len(part) - 1]  # one window of each store reads as training will
    return plan, parts, init_model


def train(
    data_dir: str | os.PathLike | Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    train_config: TrainConfig = TrainConfig(),
    model_config: WorldModelConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train a world model on the episode store(s) at ``data_dir`` into ``run_dir``; returns a summary dict.

    data_dir: one store folder or several at one frame size (e.g. the collected data plus the episodes a
        planner drove, ``worldvid plan --record``), mixed by ``train_config.data_weights``. Stores of several
        tasks train one multi-task model (``WorldModelConfig.tasks``). Each store's last episodes are held out;
        train_config.json lists them per store.
    init_from: start from the weights (and configuration) of another run's model, with a fresh optimizer and
        schedule: fine-tuning.
    With ``resume`` the run continues from RUN/training_state.pt on the same data; ``train_config`` fields that
    differ from the saved ones and from TrainConfig's defaults are overrides: those in ``RESUME_CHANGEABLE`` are
    applied, any other is refused by name (ValueError). Without ``resume``, a run folder that already holds a
    checkpoint is refused rather than overwritten. Everything is validated before the first byte is written,
    under the run folder's lock (FolderLockedError when another process trains there).
    The model config defaults to ``WorldModelConfig`` sized for the data (frame size, action size, env).
    device: where to train (None: CUDA when present, else CPU; ``worldvid.device.resolve_device``).
    This is the in-process path (one worker); ``worldvid.train_distributed`` shares each batch among Ray workers.
    """
    device = resolve_device(device)  # a bad device fails before any work
    data_dirs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    plan, parts, init_model = prepare_run(data_dirs, run_dir, train_config, model_config, resume, init_from)
    preview = None if plan.logger == "none" else preview_windows(
        parts[0].store, plan.record["held_out_episodes"], plan.model_config.context)
    state = build_state(plan, device, init_model)
    loader = make_loader(plan, parts, state["step"])
    with plan.run.writing("train", plan.checked):
        return train_loop(plan, state, loader, device, progress, preview) | plan.summary(sum(map(len, parts)))


def build_state(plan: RunPlan, device: torch.device, init_model: WorldModel | None = None,
                ranks: Ranks | None = None) -> dict[str, Any]:
    """The model (seeded by the run's seed, or ``init_model``'s weights), its EMA, the optimizer, the schedule and
    the step, all restored from the checkpoint when resuming (with this rank's RNG states, ``ranks``)."""
    ranks = ranks or Ranks()
    torch.manual_seed(plan.train_config.seed)
    model = WorldModel(plan.model_config).to(device)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.train_config.lr, weight_decay=plan.train_config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(plan.train_config))
    state = {"model": model, "ema": ema, "optimizer": optimizer, "scheduler": scheduler, "step": 0}
    if plan.resume:
        saved = load_training_state(plan.run.path, restore_rng=ranks.world == 1,  # restores this process's RNGs
                                    keys=("model", "ema", "optimizer", "scheduler"))
        load_states(saved, {k: state[k] for k in ("model", "ema", "optimizer", "scheduler")}, plan.run.path)
        if ranks.world > 1:
            ranks.restore_rng(saved, plan.run.path)
        state["step"] = saved["step"]
    return state


def make_loader(plan: RunPlan, parts: list[FrameWindowDataset], step: int,
                ranks: Ranks | None = None) -> torch.utils.data.DataLoader:
    """The loader of batches ``step``..steps-1 (this rank's share of each, ``ranks``); closes the stores' handles
    (the loader's workers open their own)."""
    ranks = ranks or Ranks()
    for part in parts:
        part.store.close()
    c = plan.train_config
    sampler: torch.utils.data.Sampler = _StepBatches([len(p) for p in parts], c.batch_size, c.seed, step, c.steps,
                                                     c.data_weights)
    if ranks.world > 1:
        sampler = RankShare(sampler, ranks.rank, ranks.world)
    return torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(parts), batch_sampler=sampler,
                                       num_workers=c.num_workers)


def train_loop(plan: RunPlan, state: dict[str, Any], loader: torch.utils.data.DataLoader, device: torch.device,
                progress: bool, preview: Windows | None = None, ranks: Ranks | None = None) -> dict[str, Any] | None:
    """Write train_config.json and train from ``state["step"]`` to the last step, logging and checkpointing into
    the run; called holding the run's lock. Rank 0 alone writes (``ranks``: the processes that share each batch;
    None: this one alone) and returns the first part of ``train``'s summary; other ranks return None.

    preview: the held-out windows whose real and imagined frames the tracker is shown at each checkpoint."""
    ranks = ranks or Ranks()
    run, train_config, lead = plan.run, plan.train_config, ranks.rank == 0
    model, ema, optimizer, scheduler, step = (state[k] for k in ("model", "ema", "optimizer", "scheduler", "step"))
    log = None
    if lead:
        run.write_config(plan.record)
        log = MetricsLog(run, step, open_tracker(plan.logger, run.path, step,
                                                 {**plan.record, "model": model.config.to_dict()}))

    def checkpoint() -> None:  # the model first: a training state always has a model folder to resume with
        rngs = ranks.gather(rng_states()) if ranks.world > 1 else None  # every rank takes part
        if lead:
            ema.save_pretrained(run.model_path)
            save_training_state(run.path, {
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, **({"rank_rng": rngs} if rngs else {}),
            })

    if not plan.resume:  # (not a file check: every rank must take the same decision, as each checkpoint is collective)
        checkpoint()  # a resumable starting point exists from the first moment
    use_bf16 = native_bf16(device) if train_config.autocast is None else train_config.autocast
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    bar = tqdm(total=train_config.steps, initial=step, desc="train", unit="step", disable=not (progress and lead))
    window_loss, window_start, started = [], time.perf_counter(), time.perf_counter()
    frame_loss = train_config.frame_loss()
    model.train()
    for batch in loader:
        g = torch.Generator(device="cpu").manual_seed(ranks.noise_seed(train_config.seed, step))
        with autocast:
            loss = ranks.loss(model, batch, g, frame_loss)
        value = ranks.mean(loss.detach())  # the global batch's loss
        if not torch.isfinite(value):
            bar.close()
            raise TrainingDivergedError(
                f"loss became {value.item()} at step {step}; the last good checkpoint in {run.path} is kept "
                "(lower --lr or check the data)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the ranks here
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        update_ema(ema, model, min(train_config.ema_decay, (1 + step) / (10 + step)))
        window_loss.append(value.item())
        bar.update(1)
        if log is not None and (step % train_config.log_every == 0 or step == train_config.steps):
            elapsed = time.perf_counter() - window_start
            log.add({
                "step": step, "loss": sum(window_loss) / len(window_loss), "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm), "samples_per_s": len(window_loss) * train_config.batch_size / elapsed,
            })
            bar.set_postfix(loss=f"{log.rows[-1]['loss']:.4f}")
            window_loss, window_start = [], time.perf_counter()
        if step % train_config.checkpoint_every == 0 or step == train_config.steps:
            checkpoint()
            if preview is not None and log is not None:
                log.tracker.image("imagined", preview_image(ema, preview, step), step)
    bar.close()
    if log is None:
        return None
    log.close()
    return {
        "run": str(run.path), "steps": step, "seconds": time.perf_counter() - started,
        "final_loss": log.rows[-1]["loss"] if log.rows else None, "parameters": sum(p.numel() for p in model.parameters()),
    }
