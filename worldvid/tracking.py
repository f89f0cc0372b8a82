"""Experiment trackers of the training loops: TensorBoard event files, Weights & Biases, or none.

The metrics files of a run (``worldvid.optim.MetricsLog``: metrics.jsonl/.csv, atomic and fsynced) are its
record; a tracker is a view of the same rows, plus a picture at checkpoints (``preview_image``: context | real
| imagined | error for a few held-out windows). ``TrainConfig.logger`` chooses it:

- ``"tensorboard"``: event files in RUN/tensorboard, through ``torch.utils.tensorboard`` when the
  ``tensorboard`` package is installed, else ``tensorboardX`` (which ray[tune] installs); a resumed run purges
  the events after its checkpoint, as the metrics files do.
- ``"wandb"``: a W&B run (``pip install wandb``, imported only here), whose id is kept in RUN/wandb_run.json so
  a resumed run continues it. W&B's own settings apply (``WANDB_MODE=offline``, ``WANDB_PROJECT``; files go to
  ``WANDB_DIR``, else to the run folder). Every value is logged against the training step ("step").
- ``"auto"`` (the default): TensorBoard when either writer is installed, else none, said in one printed line.
- ``"none"``: no tracker.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch

from worldvid.atomic import write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.evaluate import Windows, cut_windows, imagine
from worldvid.video import error_panel, side_by_side, upscale

LOGGERS = ("auto", "tensorboard", "wandb", "none")
"""Values of the ``logger`` field of the training configs."""
TENSORBOARD_DIR = "tensorboard"
"""RUN/tensorboard: the event files."""
WANDB_RUN_FILE = "wandb_run.json"
"""RUN/wandb_run.json: the id of the run's W&B run, so that a resumed run continues it."""


class TrackerUnavailableError(RuntimeError):
    """The tracker asked for needs a package that is not installed."""


class Tracker(Protocol):
    """Where a training loop sends its metric rows and pictures, besides the metrics files."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log each value of ``values`` (name -> number) at training step ``step``."""

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log ``image``, uint8 [H, W, 3], under ``tag`` at training step ``step``."""

    def close(self) -> None:
        """Flush and release the tracker."""


def check_logger(name: str) -> None:
    """ValueError (one line) when ``name`` is not one of ``LOGGERS``."""
    if name not in LOGGERS:
        raise ValueError(f"logger must be one of {', '.join(LOGGERS)}; got {name!r}")


def _summary_writer_class() -> type | None:
    """torch's SummaryWriter when the ``tensorboard`` package is installed, else tensorboardX's, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        return SummaryWriter
    except ImportError:
        pass
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def resolve_logger(name: str) -> str:
    """The tracker ``name`` stands for in this environment: "tensorboard", "wandb" or "none".

    Called before a run writes anything: a tracker whose package is missing raises TrackerUnavailableError
    (one line, with the install command); "auto" without a TensorBoard writer prints one line and is "none".
    """
    check_logger(name)
    if name in ("auto", "tensorboard") and _summary_writer_class() is None:
        if name == "tensorboard":
            raise TrackerUnavailableError("logger 'tensorboard' needs the tensorboard or tensorboardX package: "
                                          "pip install tensorboard")
        print("worldvid: neither tensorboard nor tensorboardX is installed; training logs to the metrics files "
              "only (pip install tensorboard, or choose --logger wandb)")
        return "none"
    if name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise TrackerUnavailableError("logger 'wandb' needs the wandb package: pip install wandb "
                                          "(or choose --logger tensorboard)") from None
    return "tensorboard" if name == "auto" else name


class NoTracker:
    """Logs nothing."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        pass

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """TensorBoard event files in ``folder``, written by torch.utils.tensorboard or tensorboardX.

    purge_step: events at this step and later, left by a run that was killed after its last checkpoint, are
    hidden (the resumed run logs them again). Each call is flushed, so a killed run loses no event.
    """

    def __init__(self, folder: str | os.PathLike, purge_step: int | None = None) -> None:
        writer_class = _summary_writer_class()
        if writer_class is None:
            raise TrackerUnavailableError("TensorBoard logging needs the tensorboard or tensorboardX package: "
                                          "pip install tensorboard")
        self.writer = writer_class(str(folder), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run named after the run folder, its id kept in RUN/wandb_run.json (a resumed run
    continues it); ``config`` (the run's saved configuration) becomes the W&B config. Values are logged with
    their training step as the x axis, so the rows a resumed run logs again sit at their own steps."""

    def __init__(self, run_path: str | os.PathLike, config: Mapping[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise TrackerUnavailableError("logger 'wandb' needs the wandb package: pip install wandb") from None
        run_path = Path(run_path)
        id_file = run_path / WANDB_RUN_FILE
        if id_file.is_file():
            run_id = json.loads(id_file.read_text())["id"]
        else:
            run_id = secrets.token_hex(4)  # W&B's own id form: 8 characters of [0-9a-z]
            write_json_atomic(id_file, {"id": run_id})
        self.wandb = wandb
        self.run = wandb.init(
            id=run_id, resume="allow", name=run_path.resolve().name, config=dict(config or {}),
            project=None if os.environ.get("WANDB_PROJECT") else "worldvid",
            dir=None if os.environ.get("WANDB_DIR") else str(run_path),
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({"step": step, **values})

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.run.log({"step": step, tag: self.wandb.Image(image)})

    def close(self) -> None:
        self.run.finish()


def open_tracker(name: str, run_path: str | os.PathLike, resume_step: int = 0,
                 config: Mapping[str, Any] | None = None) -> Tracker:
    """The tracker ``name`` (a value of ``LOGGERS``, resolved by ``resolve_logger``) of the run folder
    ``run_path``, which continues after ``resume_step`` (0: a new run); ``config`` is sent to W&B."""
    name = resolve_logger(name) if name == "auto" else name
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardTracker(Path(run_path) / TENSORBOARD_DIR, purge_step=resume_step + 1)
    if name == "wandb":
        return WandbTracker(run_path, config)
    return NoTracker()


def preview_windows(store: EpisodeStore, episodes: Sequence[int], context: int, count: int = 4,
                    horizon: int = 4) -> Windows | None:
    """Up to ``count`` open-loop windows of ``horizon`` steps from ``episodes`` (the held-out ones): the
    windows a checkpoint's picture shows. Starts are spread inside the episodes (not at their first or last
    step); at most ``count`` episodes are read. None when no episode has ``horizon`` steps."""
    long = [e for e in episodes if store.episode_length(e) >= horizon][:count]
    if not long:
        return None
    per = math.ceil(count / len(long))
    windows = cut_windows(store, long, context, horizon, starts_per_episode=per + 2)
    inner = np.array([i for i in range(len(long) * (per + 2)) if 0 < i % (per + 2) <= per])[:count]
    return Windows(*(getattr(windows, name)[inner] for name in ("context", "past_actions", "actions", "real")))


def _tile(frames: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> [1, N*H*factor, T*W*factor, 3]: one row per window, one column per step."""
    frames = upscale(frames, factor)
    n, t, h, w, c = frames.shape
    return frames.transpose(0, 2, 1, 3, 4).reshape(1, n * h, t * w, c)


def preview_image(model: torch.nn.Module, windows: Windows, step: int, seed: int = 0) -> np.ndarray:
    """Context | real next frames | imagined frames | error map of ``model`` (a WorldModel) on ``windows``, one
    row per window, labelled, the training ``step`` below: uint8 [H, W, 3].

    Imagined with one Euler step and a generator seeded by ``seed`` (the same noise at every checkpoint, so the
    pictures differ by the model alone; the global RNG is untouched). Frames are upscaled to about 64 px."""
    was_training = model.training
    model.eval()
    try:
        imagined = imagine(model, windows, seed=seed, num_steps=1)
    finally:
        model.train(was_training)
    factor = max(1, 64 // windows.real.shape[2])
    panels = [_tile(windows.context, factor), _tile(windows.real, factor), _tile(imagined, factor),
              _tile(error_panel(imagined, windows.real), factor)]
    return side_by_side(panels, ["context", "real", "imagined", "error"], steps=[step])[0]
