"""A training run folder: where its files are, what it trained on, and loading its model.

A run folder RUN (``worldvid train --out RUN``) holds::

    train_config.json     the TrainConfig of the run and, per episode store, its folder and held-out episodes
    model/                the EMA weights as a WorldModel checkpoint (config.json + model.safetensors + README.md,
                          its model card)
    training_state.pt     everything ``--resume`` needs (``worldvid.checkpoint``)
    metrics.jsonl/.csv    one row per logging interval
    tensorboard/          the tracker's event files (``--logger`` auto/tensorboard; ``worldvid.tracking``)
    wandb_run.json        the W&B run id a resumed run continues (``--logger wandb``)

Every command that takes ``--model RUN`` also accepts a bare model folder (one holding config.json);
``RunFolder.of`` tells them apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from worldvid.atomic import remove_dead_temporaries, write_json_atomic
from worldvid.checkpoint import TRAINING_STATE, CheckpointError
from worldvid.locks import folder_lock
from worldvid.model.folder import CONFIG_NAME as MODEL_CONFIG
from worldvid.model.folder import folder_to_read, recover_folder, remove_stale_leftovers
from worldvid.run_files import METRICS_CSV, METRICS_JSONL, MODEL_DIR, TRAIN_CONFIG

if TYPE_CHECKING:
    import torch

    from worldvid.data.store import EpisodeStore
    from worldvid.model import WorldModel

Config = TypeVar("Config")


@dataclass(frozen=True)
class RunFolder:
    """A path that is a training run folder, or a bare model folder (``is_run`` False)."""

    path: Path
    model_path: Path
    """The folder holding the model's config.json + weights (RUN/model, or ``path`` itself)."""

    @classmethod
    def of(cls, path: str | os.PathLike) -> "RunFolder":
        """The run (or model folder) at ``path``; FileNotFoundError when neither holds a world model.

        A run whose model/ a kill left between the two renames of a save still counts (its model is read where
        the save left it, ``worldvid.model.folder.folder_to_read``)."""
        path = Path(path)
        for candidate in (path / MODEL_DIR, path):
            if folder_to_read(candidate) is not None:
                return cls(path, candidate)
        raise FileNotFoundError(f"no world model at {path} "
                                f"(expected {path / MODEL_DIR / MODEL_CONFIG} or {path / MODEL_CONFIG})")

    @classmethod
    def new(cls, path: str | os.PathLike) -> "RunFolder":
        """A run folder that training is about to fill (it need not exist yet)."""
        path = Path(path)
        return cls(path, path / MODEL_DIR)

    @property
    def is_run(self) -> bool:
        """True when ``path`` is a training run (it has a model/ folder), False for a bare model folder."""
        return self.model_path != self.path

    @property
    def train_config_path(self) -> Path:
        return self.path / TRAIN_CONFIG

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / METRICS_JSONL

    # ------------------------------------------------------------------ what it trained on
    def saved_config(self) -> dict[str, Any] | None:
        """The parsed train_config.json, or None for a model folder or a run without one."""
        if not self.is_run or not self.train_config_path.is_file():
            return None
        return json.loads(self.train_config_path.read_text())

    def write_config(self, record: Mapping[str, Any]) -> Path:
        """Write train_config.json atomically."""
        return write_json_atomic(self.train_config_path, dict(record), indent=1)

    def begin_training(self, resume: bool) -> dict[str, Any] | None:
        """Check that training may start here: without ``resume`` a folder holding a run is refused (never
        overwritten); with it the saved train_config.json must exist and is returned. CheckpointError otherwise."""
        if not resume:
            if (self.path / TRAINING_STATE).exists():
                raise CheckpointError(f"{self.path} already holds a training run; pass --resume to continue it "
                                      "or choose another --out")
            return None
        saved = self.saved_config()
        if saved is None:
            raise CheckpointError(f"{self.path} holds no training run to resume (no {self.train_config_path.name})")
        return saved

    def snapshot(self) -> tuple[tuple[int, int, int] | None, ...]:
        """The identity (inode, size, mtime) of train_config.json and training_state.pt (None: missing).

        Taken before a command reads the run to validate it, and compared under the run's lock
        (``writing``): an atomic write always changes the inode, so any write in between is seen."""
        identities = []
        for file in (self.train_config_path, self.path / TRAINING_STATE):
            try:
                stat = file.stat()
                identities.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
            except FileNotFoundError:
                identities.append(None)
        return tuple(identities)

    @contextmanager
    def writing(self, purpose: str, checked: tuple[tuple[int, int, int] | None, ...]) -> Iterator[None]:
        """Hold the run folder's one-writer lock (``worldvid.locks.folder_lock``, FolderLockedError naming the
        holder) for the ``with`` block; the lock file is the first thing written into the folder.

        ``checked``: the ``snapshot()`` taken before the caller validated the run read-only; CheckpointError
        when another process changed the run since. Then what killed writers left (a model folder between its
        two renames, temporary files and folders) is put back or removed."""
        with folder_lock(self.path, purpose):
            if self.snapshot() != checked:
                raise CheckpointError(f"{self.path} changed while this command was starting (another process "
                                      "wrote to it); rerun the command")
            self.remove_leftovers()
            yield

    def remove_leftovers(self) -> list[Path]:
        """Put back a model folder a kill left between its two renames, then remove the temporary files and
        folders of writers that no longer run; returns what was removed."""
        recover_folder(self.model_path)
        return remove_stale_leftovers(self.model_path) + remove_dead_temporaries(self.path)

    def check_same_data(self, records: list[dict[str, Any]]) -> None:
        """A resumed run must read what it started on: ValueError when the stores (``records``: [{"data":
        folder, "held_out_episodes": [...]}, ...]) differ from the run's, or a store changed since (other held-out
        episodes)."""
        saved = self.stores()
        if [r["data"] for r in records] != [r["data"] for r in saved]:
            raise ValueError(f"cannot resume {self.path} on other data: it trained on {[r['data'] for r in saved]}, "
                             f"--data gives {[r['data'] for r in records]}")
        for now, then in zip(records, saved):
            if list(now["held_out_episodes"]) != list(then["held_out_episodes"]):
                raise ValueError(f"cannot resume {self.path}: the store {now['data']} has changed since the run "
                                 f"started (held-out episodes {then['held_out_episodes']} then, "
                                 f"{now['held_out_episodes']} now)")

    def stores(self) -> list[dict[str, Any]]:
        """[{"data": store folder, "held_out_episodes": [...]}, ...] the run trained on (first = main store);
        empty for a model folder. Runs written before several stores existed list one."""
        saved = self.saved_config()
        if saved is None:
            return []
        return list(saved.get("stores", [{"data": saved["data"], "held_out_episodes": saved["held_out_episodes"]}]))

    def data(self) -> str | None:
        """The folder of the (first) episode store the run trained on; None for a model folder."""
        stores = self.stores()
        return stores[0]["data"] if stores else None

    def held_out_episodes(self, store: "EpisodeStore") -> list[int]:
        """The run's held-out episodes of ``store`` when the run trained on it (any of its stores); else every
        episode of the store."""
        for trained in self.stores():
            if Path(trained["data"]).resolve() == store.root.resolve():
                return list(trained["held_out_episodes"])
        return store.episode_ids

    # ------------------------------------------------------------------ its model
    def load_model(self, expect: Mapping[str, Any] | None = None, device: "torch.device | str | None" = None,
                   **kwargs: Any) -> "WorldModel":
        """The run's WorldModel on ``device``; ``expect`` (config fields, e.g. frame_size, env_id) must match
        or ValueError names the field (``WorldModel.check_compatible``). ``kwargs`` go to ``from_pretrained``."""
        from worldvid.model import WorldModel

        wanted = {key: value for key, value in (expect or {}).items() if value is not None}  # None: unchecked
        return WorldModel.from_pretrained(self.model_path, expect=wanted, device=device, **kwargs)

    def load_model_for(self, store: "EpisodeStore", device: "torch.device | str | None" = None) -> "WorldModel":
        """The run's model, checked to fit ``store``'s frames, actions and env (ValueError naming the field)."""
        spec = store.spec
        return self.load_model({"frame_size": spec.frame_shape[0], "action_dim": spec.action_dim,
                                "env_id": spec.env_id}, device=device)


def resume_config(cls: type[Config], saved: Mapping[str, Any], requested: Config, changeable: Collection[str],
                  run: str | os.PathLike) -> Config:
    """The ``cls`` config a resumed run continues with: the saved one, with each field of ``requested`` that
    differs both from the saved value and from ``cls``'s default (which marks a field the caller left alone)
    applied when it is in ``changeable``.

    A field asked to change but not changeable raises ValueError naming it with the old and new value; a saved
    config this version cannot read raises CheckpointError.
    """
    try:
        old = cls(**saved)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{Path(run) / TRAIN_CONFIG} holds a training configuration this version cannot "
                              f"read: {err}") from None
    default = cls()
    changes = {f.name: getattr(requested, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if getattr(requested, f.name) not in (getattr(old, f.name), getattr(default, f.name))}
    refused = [name for name in changes if name not in changeable]
    if refused:
        asked = ", ".join(f"{name} {getattr(old, name)!r} -> {changes[name]!r}" for name in refused)
        raise ValueError(f"cannot change {asked} when resuming {run} (a resumed run may change only "
                         f"{', '.join(changeable)}); start a new run with --out elsewhere")
    return dataclasses.replace(old, **changes)  # type: ignore[type-var]
