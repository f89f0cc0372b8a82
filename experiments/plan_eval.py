"""Evaluation of goal-image planners over many episodes (``worldvid plan``): ``evaluate_planner``.

Episode i runs from seed S + i, in this process or spread over Ray workers (``plan_workers``); the results do
not depend on the number of workers. To run on an existing Ray cluster set ``RAY_ADDRESS`` (or pass
``worldvid plan --address``). Writes ``summary.json`` and one ``episodes/episode_XXXX.npz`` (actions, frames, goal,
best imagined futures) per episode into the out dir; ``record`` also writes the executed episodes as an episode
store, the training data of DAgger-style rounds (``worldvid train --data COLLECTED RECORDED --init RUN``).
The config and its checks live in ``plan_config``, the summary row and tables in ``plan_table``.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldvid.agents.mpc import EpisodeResult
from worldvid.atomic import save_npz_atomic, write_json_atomic
from worldvid.experiments.plan_config import PlanEvalConfig, validate
from worldvid.experiments.plan_table import aggregate
from worldvid.experiments.plan_workers import run_episodes


@dataclass
class PlanEvalReport:
    """What ``evaluate_planner`` returns: the summary row and every episode (ordered by index)."""

    summary: dict[str, Any]
    results: list[EpisodeResult]
    out: Path | None


def evaluate_planner(config: PlanEvalConfig, out: str | os.PathLike | None = None, video: bool = False,
                     progress: bool = True, record: str | os.PathLike | None = None,
                     _crash_once_marker: str | None = None) -> PlanEvalReport:
    """Run ``config.episodes`` MPC episodes and summarise them; see the module docstring.

    out: folder for summary.json and episodes/episode_XXXX.npz (nothing is written if None).
    video: also write videos/episode_XXXX.mp4 (real | imagined | error | goal side by side).
    record: also write the executed episodes as an episode store (training data, e.g. for DAgger-style
        fine-tuning on the states the planner visits); its spec is checked before any episode runs.
    """
    if video and importlib.util.find_spec("worldvid.video") is None:
        raise NotImplementedError("--video needs worldvid.video (side_by_side, write_video), which is missing")
    if video and out is None:
        raise ValueError("video needs an out folder")
    size, model = validate(config)
    store = _record_store(config, size, record) if record is not None else None
    folder = Path(out) if out is not None else None
    if folder is not None:
        (folder / "episodes").mkdir(parents=True, exist_ok=True)
    results: dict[int, EpisodeResult] = {}

    def on_result(index: int, result: EpisodeResult) -> None:
        results[index] = result
        if folder is not None:
            save_npz_atomic(folder / "episodes" / f"episode_{index:04d}.npz", **result.arrays())
            if video:
                _write_episode_video(folder / "videos" / f"episode_{index:04d}.mp4", result)
        if progress:
            print(f"[{config.label()}] episode {index} seed {result.seed}: success={result.success} "
                  f"distance={result.final_distance:.3f} steps={result.steps} "
                  f"s/decision={result.seconds_per_decision:.3f}", flush=True)

    start = time.perf_counter()
    indices = list(range(config.episodes))
    run_episodes(config, size, model, indices, on_result, _crash_once_marker)
    ordered = [results[i] for i in indices]
    summary = aggregate(ordered, time.perf_counter() - start, config)
    summary["frame_size"] = size
    unrecordable = [r.seed for r in ordered if r.steps == 0] if store is not None else []
    if store is not None and not unrecordable:
        store.write_episodes([r.to_episode(store.spec.env_id, store.spec.policy) for r in ordered])
        summary["recorded_store"] = str(store.root)
    if folder is not None:
        record = {"summary": summary, "config": asdict(config),
                  "episodes": [dict(index=i, **r.summary()) for i, r in zip(indices, ordered)]}
        write_json_atomic(folder / "summary.json", record, indent=2)
    if unrecordable:  # the results above are kept; a store's seeds must be contiguous, so none is written
        raise ValueError(f"nothing recorded into {store.root}: the episodes of seeds {unrecordable} executed no action "
                         f"(they started at their goal); record with --no-early-stop")
    return PlanEvalReport(summary, ordered, folder)


def _record_store(config: PlanEvalConfig, size: int, root: str | os.PathLike):
    """The episode store the evaluation's episodes will be written to (made now, so a folder holding other
    data fails before any work: ``StoreMismatchError``)."""
    from worldvid.data.collect import store_spec
    from worldvid.data.store import EpisodeStore

    spec = store_spec(config.env_id, size, policy=f"plan:{config.label()}", seed=config.seed)
    return EpisodeStore.create(root, spec)


def _write_episode_video(path: Path, result: EpisodeResult) -> None:
    """real frame | goal | the planner's best imagined future, one video frame per decision (+ the last frame)."""
    from worldvid.experiments.render import planning_video

    real = np.concatenate([result.frames[result.decision_steps], result.frames[-1:]])
    futures = list(result.imagined) if result.imagined is not None else [None] * len(result.decision_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    planning_video(real, result.goal_frame, futures, path, meta=result.summary())
