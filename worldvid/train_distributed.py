"""Data-parallel training on Ray Train: ``train_distributed`` runs ``worldvid.train``'s loop in N processes that
share every batch (``TorchTrainer``, DDP: gloo on CPU, NCCL on GPU).

It is the same run as ``train``, shared: batch s is drawn as the in-process run draws it (seeded by (seed, s)) and
rank r takes its windows r, r + N, ...; rank r's diffusion noise is seeded by (seed, s, r); DDP averages the
gradients, so each update is the in-process update up to the noise draw. The driver validates everything as
``train`` does before anything is written; then rank 0 alone writes the run folder, holding its lock:
train_config.json (with the worker count), metrics (the loss averaged over the ranks: the global batch's),
the EMA model, and atomic checkpoints that hold every rank's RNG states, so a run killed at any moment and resumed
on the same number of workers ends bit-identical to the uninterrupted one. A run resumes on its own worker count
only.

Ray Train moves each worker into a folder of its own, so every path is made absolute. On a cluster of several
machines, the episode stores and the run folder must be on storage every node sees, and worldvid installed on
each node. Ray and Ray Train are imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from worldvid.checkpoint import CheckpointError, set_rng_states
from worldvid.data.store import EpisodeStore
from worldvid.locks import folder_lock, pid_alive
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.model.frame_loss import FrameLoss
from worldvid.optim import read_metrics
from worldvid.parallel import explain, gpus_per_worker, init_ray, reworded
from worldvid.ranks import Ranks, loss_arguments
from worldvid.run_folder import RunFolder
from worldvid.tracking import preview_windows
from worldvid.train import RunPlan, TrainConfig, build_state, make_loader, prepare_run, train_loop


@dataclass(frozen=True)
class DistributedConfig:
    """How one training run is spread over processes (``worldvid train --workers N``)."""

    workers: int = 1
    """Data-parallel training processes (Ray Train DDP workers), each computing its share of every batch; the batch
    size must divide by it. 1 without --address: the plain in-process path."""
    address: str | None = None
    """Ray cluster to train on, e.g. 'auto' from one of its nodes (default: RAY_ADDRESS if set, else Ray started
    locally; given, the run goes through Ray Train even with one worker)."""
    threads_per_worker: int = 1
    """torch threads (and Ray CPUs) of each worker training on CPU."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ValueError(f"workers and threads_per_worker must be >= 1, got {self.workers} and "
                             f"{self.threads_per_worker}")

    @property
    def in_process(self) -> bool:
        """True for the plain in-process path (``worldvid.train.train``): one worker and no cluster address."""
        return self.workers == 1 and self.address is None


class _Loss(torch.nn.Module):
    """A world model whose forward is its training loss, so that DDP sees every step go through its forward."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *arguments: Any) -> torch.Tensor:
        """``WorldModel.loss(*arguments)`` (``worldvid.ranks.loss_arguments``)."""
        return self.model.loss(*arguments)


class DDPRanks(Ranks):
    """The ranks of a torch.distributed process group (set up by Ray Train): the loss through DDP, which averages
    the gradients in ``backward``; the loss averaged over the ranks; RNG states gathered on rank 0."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.ddp: torch.nn.Module | None = None

    def wrap(self, model: WorldModel, device: torch.device) -> None:
        """Wrap ``model`` (on ``device``) in DDP; its parameters are broadcast from rank 0."""
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            _Loss(model), device_ids=[device.index] if device.type == "cuda" else None)

    def loss(self, model: WorldModel, batch: dict[str, torch.Tensor], generator: torch.Generator,
             frame_loss: FrameLoss = FrameLoss()) -> torch.Tensor:
        assert self.ddp is not None, "wrap() the model first"
        return self.ddp(*loss_arguments(batch, generator, frame_loss))

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        total = value.detach().clone()
        torch.distributed.all_reduce(total)  # gloo has no AVG
        return total / self.world

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] | None = [None] * self.world if self.rank == 0 else None
        torch.distributed.gather_object(value, values, dst=0)
        return values or []

    def restore_rng(self, state: dict[str, Any], run_dir: str | os.PathLike) -> None:
        states = state.get("rank_rng")
        if not isinstance(states, list) or len(states) != self.world:
            held = len(states) if isinstance(states, list) else 1
            raise CheckpointError(f"checkpoint {Path(run_dir) / 'training_state.pt'} holds the RNG states of {held} "
                                  f"workers, not {self.world}")
        set_rng_states(states[self.rank])


def _use_gpu(device: str | torch.device | None, workers: int) -> bool:
    """Whether the workers train on GPUs (one each, as NCCL needs): with ``device`` None when the Ray cluster has a
    GPU for every worker; 'cpu' never; 'cuda' always (ValueError when the cluster has too few). Ray must run."""
    if device is None:
        return gpus_per_worker(workers) >= 1.0
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = str(device)
    if kind == "cpu":
        return False
    if kind != "cuda":
        raise ValueError(f"device {str(device)!r}: Ray Train workers train on 'cpu' or 'cuda'")
    if gpus_per_worker(workers) < 1.0:
        raise ValueError(f"device {str(device)!r} asked for but the Ray cluster has fewer than {workers} GPUs "
                         "(one per worker)")
    return True


def _ray_train_storage() -> Path:
    """The folder of Ray Train's own files (a marker per run; the run writes nothing there): TMP/worldvid-ray-train,
    whose entries of processes no longer running (a killed driver's) are removed first."""
    storage = Path(tempfile.gettempdir()) / "worldvid-ray-train"
    storage.mkdir(exist_ok=True)
    for entry in storage.iterdir():
        pid = entry.name.split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    return storage


def _follow(metrics: Path, steps: int, workers: int, stop: threading.Event, every_s: float = 1.0) -> None:
    """A progress bar of the run whose rank 0 appends rows to ``metrics`` (its step and loss), until ``stop``."""
    bar = tqdm(total=steps, desc=f"train ({workers} workers)", unit="step")
    while not stop.wait(every_s):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a row being appended reads as a torn last line
            try:
                rows = read_metrics(metrics)
            except (OSError, ValueError):  # rewritten at the start of a resumed run: read it next time
                continue
        if rows:
            bar.n = rows[-1]["step"]
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}")
    bar.close()


def _collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is a rank's collective failing because another rank stopped (not the cause)."""
    dist_error = getattr(torch.distributed, "DistError", None)
    text = str(error).lower()
    return (dist_error is not None and isinstance(error, dist_error)) or "gloo" in text or "nccl" in text


def _one_line(error: BaseException, workers: int) -> BaseException:
    """The failure of a ``TorchTrainer.fit`` (``ray.train.TrainingFailedError``) as one line naming the worker
    and the cause, also an instance of the cause's type (``worldvid.parallel.reworded``)."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = min(failures.items(), key=lambda item: (_collective_failure(item[1]), item[0]))
        cause, why, _ = explain(cause)
        return reworded(cause, f"training worker {rank} of {workers} failed: {why}", rank)
    cause, why, _ = explain(getattr(error, "controller_failure", error))
    return reworded(cause, f"the Ray Train run failed: {why}")


def _worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One Ray Train worker: builds the run's state on its device and trains its share of every batch; rank 0
    writes the run folder under its lock and returns the loop's summary."""
    import ray.train
    import ray.train.torch

    plan: RunPlan = config["plan"]
    os.environ.update(config["environment"])  # a cluster's workers do not inherit the driver's environment
    context = ray.train.get_context()
    ranks = DDPRanks(context.get_world_rank(), context.get_world_size())
    if config["use_gpu"]:
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(config["threads"])
    parts = [plan.windows(EpisodeStore(data), episodes) for data, episodes in zip(plan.data_dirs, plan.train_episodes)]
    init_model = RunFolder.of(plan.init_from).load_model() if plan.init_from is not None and not plan.resume else None
    state = build_state(plan, device, init_model, ranks)
    ranks.wrap(state["model"], device)
    preview = None
    if ranks.rank == 0 and plan.logger != "none":
        preview = preview_windows(parts[0].store, plan.record["held_out_episodes"], plan.model_config.context)
    loader = make_loader(plan, parts, state["step"], ranks)
    if ranks.rank != 0:
        return train_loop(plan, state, loader, device, False, preview, ranks)
    with plan.run.writing("train", plan.checked):
        return train_loop(plan, state, loader, device, False, preview, ranks)


def train_distributed(
    data_dir: str | os.PathLike | Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    train_config: TrainConfig = TrainConfig(),
    model_config: WorldModelConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    init_from: str | os.PathLike | None = None,
    distributed: DistributedConfig = DistributedConfig(workers=2),
    progress: bool = True,
) -> dict[str, Any]:
    """Train as ``worldvid.train.train`` does, with each batch shared by ``distributed.workers`` Ray Train workers
    (DDP); returns ``train``'s summary plus "workers" and "wall_seconds" (start-up of Ray and the workers included;
    "seconds" is the training loop's own, as in-process).

    Ray is joined or started through ``worldvid.parallel.init_ray(distributed.address)`` (started locally with at
    least workers x threads_per_worker CPUs). device: None trains on GPUs when the cluster has one per worker,
    else on CPU with ``threads_per_worker`` torch threads per worker; 'cpu' or 'cuda' forces either.
    ValueError, before anything is written, for a batch size that does not divide among the workers or a resume
    on another worker count; a worker's failure ends in one line naming the worker and the cause
    (``worldvid.parallel.WorkerError``, also an instance of the cause's type). progress: a progress bar on
    stderr that follows the rows rank 0 appends to RUN/metrics.jsonl (so it moves every log_every steps).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    started = time.perf_counter()
    workers, threads = distributed.workers, distributed.threads_per_worker
    data_dirs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    data_dirs = [Path(d).resolve() for d in data_dirs]  # each worker runs in a folder of its own
    init = None if init_from is None else Path(init_from).resolve()
    plan, parts, _ = prepare_run(data_dirs, Path(run_dir).resolve(), train_config, model_config, resume, init,
                                 workers=workers)
    windows = sum(map(len, parts))
    for part in parts:
        part.store.close()
    with folder_lock(plan.run.path, "train (starting Ray workers)"):
        pass  # another writer is refused now, not after the workers started; rank 0 holds the lock while training
    init_ray(distributed.address, num_cpus=max(os.cpu_count() or 1, workers * threads))
    use_gpu = _use_gpu(device, workers)
    storage, name = _ray_train_storage(), f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    trainer = TorchTrainer(
        _worker, train_loop_config={"plan": plan, "threads": threads, "use_gpu": use_gpu, "environment": {
            key: value for key, value in os.environ.items() if key.startswith("WANDB_")}},  # the tracker's settings
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": threads, **({"GPU": 1} if use_gpu else {})}),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    stop, follower = threading.Event(), None
    if progress:
        where = "one GPU each" if use_gpu else f"{threads} CPU thread{'s' * (threads > 1)} each"
        print(f"training on {workers} Ray worker{'s' * (workers > 1)} ({where}); rows in {plan.run.metrics_jsonl}",
              file=sys.stderr, flush=True)
        follower = threading.Thread(target=_follow, daemon=True,
                                    args=(plan.run.metrics_jsonl, plan.train_config.steps, workers, stop))
        follower.start()
    interrupt = signal.getsignal(signal.SIGINT)  # fit() installs its own handler (abort the run) and leaves it
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise _one_line(err, workers) from err
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5.0)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, interrupt)
        shutil.rmtree(storage / name, ignore_errors=True)
    return {**result.return_value, "workers": workers, "wall_seconds": time.perf_counter() - started,
            **plan.summary(windows)}
