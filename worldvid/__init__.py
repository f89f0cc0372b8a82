"""worldvid: a text-free, action-conditioned video diffusion world model for Gymnasium/MuJoCo tasks.

Importing the package registers every worldvid environment, so ``gym.make("worldvid/PointReach-v0")``
works after ``import worldvid``, and nothing heavier than Gymnasium: the names below load on first use.

    from worldvid import WorldModel, EpisodeStore, RunFolder, train, make_planner
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import worldvid.envs  # noqa: F401  (registers the environments)
from worldvid.version import __version__

_EXPORTS: dict[str, str] = {
    # the world model and its data
    "WorldModel": "worldvid.model", "WorldModelConfig": "worldvid.model",
    "Episode": "worldvid.data.episode", "EpisodeStore": "worldvid.data.store", "StoreSpec": "worldvid.data.store",
    "FrameWindowDataset": "worldvid.data.dataset", "collect": "worldvid.data.collect",
    # training and its run folders
    "TrainConfig": "worldvid.train", "train": "worldvid.train", "RunFolder": "worldvid.run_folder",
    "resolve_device": "worldvid.device",
    # tasks, goal costs, planners
    "TASKS": "worldvid.envs", "make_pixel_env": "worldvid.envs.factory",
    "COSTS": "worldvid.costs", "make_cost": "worldvid.costs",
    "GoalDistance": "worldvid.goal_distance", "train_goal_distance": "worldvid.goal_distance",
    "PlannerConfig": "worldvid.agents", "make_planner": "worldvid.agents", "History": "worldvid.agents",
    "run_episode": "worldvid.agents",
}
"""Public name -> the module that defines it (imported when the name is first used)."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldvid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from worldvid.agents import History, PlannerConfig, make_planner, run_episode
    from worldvid.costs import COSTS, make_cost
    from worldvid.data.collect import collect
    from worldvid.data.dataset import FrameWindowDataset
    from worldvid.data.episode import Episode
    from worldvid.data.store import EpisodeStore, StoreSpec
    from worldvid.device import resolve_device
    from worldvid.envs import TASKS
    from worldvid.goal_distance import GoalDistance, train_goal_distance
    from worldvid.envs.factory import make_pixel_env
    from worldvid.model import WorldModel, WorldModelConfig
    from worldvid.run_folder import RunFolder
    from worldvid.train import TrainConfig, train
