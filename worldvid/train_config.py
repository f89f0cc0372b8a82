"""``TrainConfig``: the optimisation settings of one world-model training run (saved as train_config.json), and
which of them a resumed run may change."""

from __future__ import annotations

import math
from dataclasses import dataclass

from worldvid.model.frame_loss import FrameLoss
from worldvid.tracking import check_logger


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run (saved as train_config.json)."""

    steps: int = 4000
    """Optimizer steps in total."""
    batch_size: int = 32
    """Windows per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (reached after warm-up, then cosine-decayed to lr_final_fraction of it)."""
    lr_final_fraction: float = 0.1
    """The learning rate at the last step, as a fraction of lr."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    ema_decay: float = 0.999
    """EMA decay of the weights used for sampling (ramped up as min(decay, (1+s)/(10+s)))."""
    checkpoint_every: int = 500
    """Steps between atomic checkpoints (and one at the end)."""
    log_every: int = 50
    """Steps between metric rows."""
    seed: int = 0
    """Seeds batches, noise and initial weights."""
    held_out_fraction: float = 0.1
    """Share of episodes (the last ones) never trained on, for evaluation."""
    num_workers: int = 0
    """DataLoader worker processes (0: read in the training process)."""
    autocast: bool | None = None
    """bf16 autocast: None = where the device computes bf16 natively (``worldvid.device.native_bf16``: CUDA with
    bf16, CPUs with AVX512-BF16 or AMX, where it made these small UNets' training 1.4-2x faster); elsewhere fp32
    (bf16 emulated on a 2-core AVX2 CPU made a training step 10x slower)."""
    data_weights: tuple[float, ...] | None = None
    """With several episode stores: the share of each batch drawn from each (normalised); None: every window
    equally likely, whatever store it is in."""
    unroll: int = 1
    """Steps imagined per window in the loss (a regression model only): each fed the predictions before it, the
    gradient flowing through them (``worldvid.model.unrolled``), so the model learns to imagine from its own
    frames. 1: the one-step loss. A step costs about R one-step ones."""
    regression_loss: str = "mse"
    """How a regression model's predictions are scored (``worldvid.model.frame_loss.REGRESSION_LOSSES``): 'mse' (the
    mean of the possible next frames) or 'l1' (their per-pixel median). Diffusion models train by EDM's loss."""
    moving_weight: float = 1.0
    """Weight of the pixels that move (change from the last context frame to the real next frame by more than 8
    grey levels) in either objective's loss, every other pixel counting once: more than 1 spends more of the loss
    on the pusher and the object than on the static background. 1: every pixel alike."""
    logger: str = "auto"
    """Experiment tracker beside the metrics files: 'tensorboard' (RUN/tensorboard, through tensorboard or
    tensorboardX), 'wandb' (pip install wandb; WANDB_MODE, WANDB_PROJECT apply), 'none', or 'auto' (TensorBoard
    when a writer is installed, else none). Scalars every log_every steps, real vs imagined frames at checkpoints."""

    def __post_init__(self) -> None:
        check_logger(self.logger)
        self.frame_loss()
        if self.data_weights is not None:
            weights = tuple(float(w) for w in self.data_weights)
            if not weights or any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) <= 0:
                raise ValueError(f"data_weights must be non-negative with a positive sum, got {list(weights)}")
            object.__setattr__(self, "data_weights", weights)
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.warmup_steps < 0:
            raise ValueError(f"num_workers and warmup_steps must be >= 0, got {self.num_workers} and {self.warmup_steps}")
        if not (self.lr > 0 and 0 <= self.ema_decay < 1 and 0 < self.held_out_fraction < 1):
            raise ValueError("need lr > 0, 0 <= ema_decay < 1 and 0 < held_out_fraction < 1")
        if not (0 <= self.lr_final_fraction <= 1 and self.weight_decay >= 0 and self.grad_clip > 0):
            raise ValueError("need 0 <= lr_final_fraction <= 1, weight_decay >= 0 and grad_clip > 0")

    def frame_loss(self) -> FrameLoss:
        """How training scores each prediction: ``regression_loss``, each moving pixel ``moving_weight`` times."""
        return FrameLoss(self.regression_loss, self.moving_weight)


RESUME_CHANGEABLE = ("steps", "log_every", "checkpoint_every", "num_workers", "autocast", "logger")
"""TrainConfig fields a resumed run may change: when it stops, how often it logs and saves, how it reads data,
its precision, its tracker. Everything else (schedule, seed, batches, data mix) would make it another run."""
