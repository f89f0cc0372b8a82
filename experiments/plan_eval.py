"""Evaluation of goal-image planners over many episodes (``worldvid plan``): ``evaluate_planner``.

Episode i runs from seed S + i, in this process or spread over Ray workers (``plan_workers``); the results do
not depend on the number of workers. To run on an existing Ray cluster set ``RAY_ADDRESS`` (or pass
``worldvid plan --address``). Writes ``summary.json`` and one ``episodes/episode_XXXX.npz`` (actions, frames, goal,
best imagined futures) per episode into the out dir; ``record`` also writes the executed episodes as an episode
store, the training data of DAgger-style rounds (``worldvid train --data COLLECTED RECORDED --init RUN``).
The config and its checks live in ``plan_config``, the summary row and tables in ``plan_table``.

Resuming. The out folder holds one writer at a time (``worldvid.locks``). ``plan_config.json``, written before the
first episode, is the configuration the folder belongs to. Each finished episode leaves its npz (and video), then
``episodes/episode_XXXX.json`` (seed, success, distance, the task's final figures): that file marks it finished. A
rerun into the same folder with the same configuration (``workers``, ``episode_timeout_s`` and
``max_episode_retries`` may differ: they do not change results) keeps the finished episodes and runs only the
rest; another configuration is refused, naming the fields that differ. A kill at any point leaves a folder that a
rerun completes. ``summary.json`` is written last, after the ``record`` store, once every episode is done; it
equals an uninterrupted run's except for the wall-clock figures: ``wall_seconds`` and ``episodes_per_second`` (of
the episodes this invocation ran; a rerun that runs none keeps the saved ones), and ``seconds_per_decision``
(overall and per episode; measured when each episode ran, like each npz's ``latency_s``). The ``record`` store is
(re)written from all episodes, kept and new, in index order, so its seeds are contiguous from the spec's seed
after any number of reruns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldvid.agents.mpc import EpisodeResult
from worldvid.atomic import save_npz_atomic, write_json_atomic
from worldvid.experiments.plan_config import PlanEvalConfig, seeds_starting_at_goal, validate
from worldvid.experiments.plan_table import aggregate
from worldvid.experiments.plan_workers import FaultInjection, run_episodes

CONFIG_FILE = "plan_config.json"
"""The configuration an out folder belongs to (``asdict(PlanEvalConfig)``), written before the first episode."""

EXECUTION_ONLY = ("workers", "episode_timeout_s", "max_episode_retries")
"""Config fields that do not change results: a rerun may change them and still keep the finished episodes."""


@dataclass
class PlanEvalReport:
    """What ``evaluate_planner`` returns: the summary row and every episode (ordered by index)."""

    summary: dict[str, Any]
    results: list[EpisodeResult]
    out: Path | None
    kept: int = 0
    """Finished episodes of an earlier run into the same folder that this one kept."""


def evaluate_planner(config: PlanEvalConfig, out: str | os.PathLike | None = None, video: bool = False,
                     progress: bool = True, record: str | os.PathLike | None = None,
                     _faults: FaultInjection | None = None) -> PlanEvalReport:
    """Run ``config.episodes`` MPC episodes and summarise them; see the module docstring.

    out: folder for summary.json and episodes/episode_XXXX.npz (nothing is written if None); a rerun into it
        resumes (module docstring).
    video: also write videos/episode_XXXX.mp4 (real | imagined | error | goal side by side).
    record: also write the executed episodes as an episode store (training data, e.g. for DAgger-style
        fine-tuning on the states the planner visits); its spec is checked before any episode runs.
    _faults: test hook (``plan_workers.FaultInjection``).
    An episode that fails for good raises ``worldvid.parallel.WorkerError`` naming it; the finished ones are kept.
    """
    if video and importlib.util.find_spec("worldvid.video") is None:
        raise NotImplementedError("--video needs worldvid.video (side_by_side, write_video), which is missing")
    if video and out is None:
        raise ValueError("video needs an out folder")
    size, model = validate(config)
    if record is not None and config.stop_on_success:  # found before any episode runs, not after all of them
        at_goal = seeds_starting_at_goal(config, size)
        if at_goal:
            raise ValueError(f"cannot record into {record}: the episodes of seeds {at_goal} start at their goal and "
                             f"would end before any action (a store holds every seed, each with steps); record "
                             f"with --no-early-stop")
    folder = Path(out) if out is not None else None
    with contextlib.ExitStack() as held:
        store = _record_store(config, size, record) if record is not None else None
        if store is not None:
            held.enter_context(store)  # the store's write lock, released (store.close) when done
        held.enter_context(_lock(folder))
        results = _resume(folder, config) if folder is not None else {}
        kept = len(results)
        if progress and kept:
            print(f"[{config.label()}] kept {kept} finished episode(s) in {folder}", flush=True)
        if video and folder is not None:
            for index, result in results.items():  # e.g. kept from a run without --video
                if not _video_path(folder, index).is_file():
                    _write_episode_video(_video_path(folder, index), result)

        def on_result(index: int, result: EpisodeResult) -> None:
            results[index] = result
            if folder is not None:
                _save_episode(folder, index, result, video)
            if progress:
                print(f"[{config.label()}] episode {index} seed {result.seed}: success={result.success} "
                      f"distance={result.final_distance:.3f} steps={result.steps} "
                      f"s/decision={result.seconds_per_decision:.3f}", flush=True)

        start = time.perf_counter()
        indices = list(range(config.episodes))
        todo = [i for i in indices if i not in results]
        run_episodes(config, size, model, todo, on_result, _faults)
        seconds = time.perf_counter() - start
        ordered = [results[i] for i in indices]
        summary = aggregate(ordered, seconds, config)
        summary["episodes_per_second"] = len(todo) / max(seconds, 1e-9)  # of the episodes run now
        summary["frame_size"] = size
        if not todo and folder is not None:  # nothing ran: keep the timing of the run that did the work
            summary.update(_saved_timing(folder / "summary.json"))
        if store is not None:  # episodes without steps were refused before any ran (and to_episode refuses them)
            store.write_episodes([r.to_episode(store.spec.env_id, store.spec.policy) for r in ordered])
            summary["recorded_store"] = str(store.root)
        if folder is not None:
            saved = {"summary": summary, "config": asdict(config),
                     "episodes": [dict(index=i, **r.summary()) for i, r in zip(indices, ordered)]}
            write_json_atomic(folder / "summary.json", saved, indent=2)
    return PlanEvalReport(summary, ordered, folder, kept)


def _lock(folder: Path | None) -> contextlib.AbstractContextManager:
    """The out folder's write lock (one ``worldvid plan`` per folder); nothing without a folder."""
    if folder is None:
        return contextlib.nullcontext()
    from worldvid.locks import folder_lock

    return folder_lock(folder, "worldvid plan")


def _saved_timing(path: Path) -> dict[str, float]:
    """``wall_seconds`` and ``episodes_per_second`` of the summary saved at ``path`` (empty when unreadable)."""
    try:
        saved = json.loads(path.read_text())["summary"]
        return {key: float(saved[key]) for key in ("wall_seconds", "episodes_per_second")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (``asdict`` of a PlanEvalConfig, or its JSON) flattened to dotted names, as JSON would hold it,
    without the fields that do not change results."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        else:
            flat[prefix[:-1]] = value

    walk("", json.loads(json.dumps(config)))
    return {k: v for k, v in flat.items() if k not in EXECUTION_ONLY}


def _resume(folder: Path, config: PlanEvalConfig) -> dict[int, EpisodeResult]:
    """Check that ``folder`` is new or holds an evaluation of ``config`` (ValueError naming what differs), record
    the config there, and return the episodes already finished in it by index."""
    saved_path = folder / CONFIG_FILE
    saved: dict[str, Any] | None = None
    source = saved_path if saved_path.is_file() else folder / "summary.json"
    if source.is_file():
        try:
            data = json.loads(source.read_text())
            saved = data if source == saved_path else data["config"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{source} is unreadable ({err}); use another --out folder") from None
    if saved is not None:
        there, asked = _comparable(saved), _comparable(asdict(config))
        different = sorted(k for k in there.keys() | asked.keys() if there.get(k) != asked.get(k))
        if different:
            shown = "; ".join(f"{k}: {there.get(k)!r} there, {asked.get(k)!r} asked" for k in different[:4])
            raise ValueError(f"{folder} holds a plan evaluation of another configuration ({shown}); use another "
                             f"--out folder, or the same settings to resume it")
    if not saved_path.is_file():
        write_json_atomic(saved_path, asdict(config), indent=2)
    (folder / "episodes").mkdir(parents=True, exist_ok=True)
    finished = {}
    for index in range(config.episodes):
        result = _load_episode(folder, index, config.seed + index)
        if result is not None:
            finished[index] = result
    return finished


def _episode_path(folder: Path, index: int, suffix: str) -> Path:
    return folder / "episodes" / f"episode_{index:04d}{suffix}"


def _video_path(folder: Path, index: int) -> Path:
    return folder / "videos" / f"episode_{index:04d}.mp4"


def _save_episode(folder: Path, index: int, result: EpisodeResult, video: bool) -> None:
    """Write episode ``index``'s npz (and video), then its JSON, which marks it finished (all atomic)."""
    save_npz_atomic(_episode_path(folder, index, ".npz"), **result.arrays())
    if video:
        _write_episode_video(_video_path(folder, index), result)
    write_json_atomic(_episode_path(folder, index, ".json"), {
        "index": index, "seed": result.seed, "success": bool(result.success),
        "first_success_step": result.first_success_step, "final_distance": float(result.final_distance),
        "final_info": result.final_info})


def _load_episode(folder: Path, index: int, seed: int) -> EpisodeResult | None:
    """Finished episode ``index`` as saved by ``_save_episode``, or None when it is not finished. A finished mark
    whose files are unreadable or do not hold episode ``index`` (seed ``seed``) is removed: the episode is redone."""
    mark, arrays_path = _episode_path(folder, index, ".json"), _episode_path(folder, index, ".npz")
    if not mark.is_file():
        return None
    try:
        meta = json.loads(mark.read_text())
        with np.load(arrays_path) as data:  # no pickles: allow_pickle stays False
            arrays = {name: data[name] for name in data.files}
        if meta["seed"] != seed or meta["index"] != index:
            raise ValueError(f"it holds seed {meta['seed']}, not {seed}")
        return EpisodeResult(
            seed=int(meta["seed"]), success=bool(meta["success"]), first_success_step=meta["first_success_step"],
            final_distance=float(meta["final_distance"]), final_info=meta["final_info"],
            actions=arrays["actions"], frames=arrays["frames"], goal_frame=arrays["goal_frame"],
            decision_steps=arrays["decision_steps"], latency_s=arrays["latency_s"], model_calls=arrays["model_calls"],
            imagined=arrays.get("imagined"), rewards=arrays.get("rewards"), terminated=arrays.get("terminated"),
            truncated=arrays.get("truncated"), step_success=arrays.get("step_success"))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        print(f"episode {index} (seed {seed}) in {folder} is unreadable ({type(err).__name__}: {err}); redoing it",
              flush=True)
        mark.unlink(missing_ok=True)
        return None


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
