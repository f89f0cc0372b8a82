"""``worldvid demo``: the main job, end to end on an embedded default.

collect (Ray-parallel) -> train -> open-loop evaluation vs copy-last-frame -> plan with the world model,
the oracle and random on held-out goals -> videos -> one results table and the path of every artefact.
Each stage leaves its result on disk and, when it has finished, a completion marker OUT/stages/NAME.json
holding the settings it ran with; a rerun skips exactly the stages whose marker matches (never judged by the
files a killed stage may have left half-made) and resumes the others: collection shard by shard, training and
the goal distance from their last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worldvid.atomic import write_json_atomic
from worldvid.checkpoint import TRAINING_STATE

STAGES = "stages"
"""Subfolder of OUT holding one completion marker per finished stage."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults fit about 15 minutes on a 2-core CPU."""

    env_id: str = "worldvid/PointReach-v0"
    """Task to learn and plan in."""
    out: str = "runs/demo"
    """Folder for every artefact (data, run, evaluations, videos)."""
    size: int = 32
    """Frame size (the model's resolution)."""
    episodes: int = 200
    """Training trajectories to collect (mixed random/scripted policy)."""
    workers: int = 2
    """Ray workers for collection and planning evaluation."""
    steps: int = 3000
    """Training steps."""
    batch_size: int = 32
    """Training batch size."""
    plan_episodes: int = 10
    """Planning episodes per row (fresh seeds, never seen in training)."""
    planner: str = "cem"
    """Planner for the model and oracle rows."""
    costs: tuple[str, ...] = ("keypoint", "blur", "learned")
    """Goal-image costs to plan with (each gets a model row and an oracle row); 'learned' first learns a goal
    distance from the collected video (``worldvid train-cost``)."""
    cost_steps: int = 4000
    """Training steps of the learned goal distance (on the demo's 200 episodes: 1,500 steps planned 1 of 10
    oracle episodes to the goal, 4,000 steps 8 of 10)."""
    plan_max_steps: int | None = None
    """Cap on steps per planning episode (default: the task's time limit); for quick runs."""
    channels: tuple[int, ...] | None = None
    """UNet widths per level (default: WorldModelConfig's)."""
    videos: int = 2
    """Open-loop comparison videos to render."""
    seed: int = 0
    """Base seed of everything."""
    device: str | None = None
    """Where the world model trains, is evaluated, plans and renders, e.g. 'cpu', 'cuda' (None: CUDA when
    present, else CPU)."""


PLAN_SEED = 500_000
"""Planning episodes use seeds PLAN_SEED + i: goals the training data never showed."""


def _stage(name: str, done: bool) -> bool:
    print(f"\n== {name}" + (" (finished earlier, reused)" if done else ""), flush=True)
    return not done


def stage_finished(root: Path, stage: str, settings: dict[str, Any]) -> bool:
    """Whether ``stage`` finished in an earlier run with these ``settings`` (its marker exists and matches)."""
    try:
        return json.loads((root / STAGES / f"{stage}.json").read_text()) == settings
    except (OSError, ValueError):
        return False


def _set_aside_stale(root: Path, stage: str, folder: Path) -> None:
    """Rename the output ``folder`` of a stage that finished with other settings (e.g. a model trained for fewer
    steps) to FOLDER.stale-N, so that its rerun starts afresh and nothing is lost."""
    if not (root / STAGES / f"{stage}.json").exists() or not folder.exists():
        return
    n = 0
    while (aside := folder.with_name(f"{folder.name}.stale-{n}")).exists():
        n += 1
    folder.rename(aside)
    (root / STAGES / f"{stage}.json").unlink()
    print(f"   {folder} came from other settings; kept as {aside}", flush=True)


def mark_finished(root: Path, stage: str, settings: dict[str, Any]) -> None:
    """Write ``stage``'s completion marker (atomically, after everything it makes is on disk)."""
    (root / STAGES).mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / STAGES / f"{stage}.json", settings)


def run_demo(config: DemoConfig = DemoConfig()) -> dict[str, Any]:
    """Run (or finish) the pipeline; print the results table and artefact paths; return them as a dict."""
    from worldvid.experiments.plan_config import PlanEvalConfig
    from worldvid.experiments.plan_eval import evaluate_planner
    from worldvid.experiments.open_loop import run_open_loop_evaluation
    from worldvid.experiments.render import render_open_loop
    from worldvid.data.collect import collect
    from worldvid.data.store import EpisodeStore
    from worldvid.goal_distance import GoalDistanceTrainConfig, train_goal_distance
    from worldvid.device import resolve_device
    from worldvid.model import WorldModelConfig
    from worldvid.run_folder import RunFolder
    from worldvid.train import TrainConfig, train

    resolve_device(config.device)  # ValueError before any work
    start = time.perf_counter()
    root = Path(config.out)
    data, run = root / "data", RunFolder.new(root / "run")
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "demo_config.json", asdict(config))

    _stage(f"collect {config.episodes} episodes of {config.env_id}", False)  # collect resumes shard by shard
    collect(config.env_id, config.episodes, data, workers=config.workers, size=config.size, seed=config.seed)

    state = run.path / TRAINING_STATE
    train_settings = {"steps": config.steps, "batch_size": config.batch_size, "seed": config.seed,
                      "channels": list(config.channels or ())}
    if _stage(f"train {config.steps} steps", stage_finished(root, "train", train_settings)):
        model_config = None
        if config.channels and not state.exists():
            spec = EpisodeStore(data).spec
            model_config = WorldModelConfig(action_dim=spec.action_dim, frame_size=config.size, env_id=spec.env_id,
                                            block_channels=tuple(config.channels))
        train(data, run.path, TrainConfig(steps=config.steps, batch_size=config.batch_size, seed=config.seed),
              model_config=model_config, resume=state.exists(), device=config.device)
        mark_finished(root, "train", train_settings)

    eval_json = run.path / "eval.json"
    eval_settings = {"model": train_settings}
    if _stage("open-loop evaluation vs copy-last-frame", stage_finished(root, "evaluate", eval_settings)):
        run_open_loop_evaluation(run.path, rollout_steps=16, controllability_seeds=8, seed=config.seed, device=config.device)
        mark_finished(root, "evaluate", eval_settings)
    open_loop = json.loads(eval_json.read_text())

    cost_run = RunFolder.new(root / "cost")
    cost_settings = {"steps": config.cost_steps, "seed": config.seed}
    if "learned" in config.costs:
        cost_state = cost_run.path / TRAINING_STATE
        if _stage(f"learn a goal distance from the video, {config.cost_steps} steps",
                  stage_finished(root, "cost", cost_settings)):
            train_goal_distance(data, cost_run.path, GoalDistanceTrainConfig(steps=config.cost_steps, seed=config.seed),
                                resume=cost_state.exists(), device=config.device)
            mark_finished(root, "cost", cost_settings)
    learned = {"cost_model": str(cost_run.path)}

    rows = []
    plans = [(f"{config.planner}_{c}_model", dict(planner=config.planner, cost=c, model=str(run.path),
                                                  **(learned if c == "learned" else {}))) for c in config.costs]
    plans += [(f"{config.planner}_{c}_oracle", dict(planner=config.planner, cost=c, oracle=True,
                                                   **(learned if c == "learned" else {}))) for c in config.costs]
    plans.append(("random", dict(planner="random")))
    for name, kwargs in plans:
        folder = root / "plan" / name
        plan_settings = {"episodes": config.plan_episodes, "max_steps": config.plan_max_steps,
                         "model": train_settings, "cost": cost_settings if kwargs.get("cost") == "learned" else None}
        if _stage(f"plan: {name}", stage_finished(root, f"plan_{name}", plan_settings)):
            _set_aside_stale(root, f"plan_{name}", folder)
            plan_config = PlanEvalConfig(env_id=config.env_id, episodes=config.plan_episodes, workers=config.workers,
                                         seed=PLAN_SEED + config.seed, size=config.size,
                                         max_steps=config.plan_max_steps, device=config.device, **kwargs)
            evaluate_planner(plan_config, out=folder, video=kwargs["planner"] != "random", progress=False)
            mark_finished(root, f"plan_{name}", plan_settings)
        rows.append(json.loads((folder / "summary.json").read_text())["summary"])

    videos = root / "videos"
    video_settings = {"videos": config.videos, "model": train_settings}
    if _stage("render real-vs-imagined videos", stage_finished(root, "videos", video_settings)):
        render_open_loop(run.path, videos, episodes=config.videos, rollout_steps=24, seed=config.seed, device=config.device)
        mark_finished(root, "videos", video_settings)

    result = {
        "open_loop": open_loop, "planning": rows, "seconds": time.perf_counter() - start,
        "artefacts": {
            "data": str(data), "checkpoint": str(run.model_path), "training_metrics": str(run.metrics_csv),
            "open_loop_json": str(eval_json), "goal_distance": str(cost_run.model_path) if "learned" in config.costs else "-",
            "planning": str(root / "plan"), "videos": str(videos),
        },
    }
    write_json_atomic(root / "results.json", result)
    print("\n" + format_results(result))
    return result


def format_results(result: dict[str, Any]) -> str:
    """The one results table a person reads, then the artefact paths."""
    ol = result["open_loop"]
    model, copy = ol["model"], ol["copy_last_frame"]
    j = min(8, ol["horizon"]) - 1
    metric = "goal_object_error_px"
    lines = [
        f"worldvid demo: {ol['env_id']}",
        f"open loop, step {j + 1} ({ol['windows']} held-out windows): {ol['goal_object']} error "
        f"{model[metric][j]:.2f} px (copy-last-frame {copy[metric][j]:.2f} px, {copy[metric][j] / max(model[metric][j], 1e-6):.1f}x better); "
        f"PSNR {model['psnr'][j]:.1f} dB (copy {copy['psnr'][j]:.1f})",
    ]
    c = ol.get("controllability")
    if c is not None and "skipped" in c:  # e.g. an env that is not MuJoCo: its state cannot be restored
        lines.append(c["skipped"])
    elif c is not None:
        unit = c.get("unit", "px")
        lines.append(f"controllability: {'passed' if c['passed'] else 'FAILED'} (imagined-vs-real {c['matched']:.2f} "
                     f"{unit}, real A-vs-B {c['real_divergence']:.2f} {unit})")
    lines.append(f"\n{'planner/cost/imagination':28s} {'success':>8s} {'95% CI':>12s} {'final dist':>10s} {'s/decision':>10s}")
    for r in result["planning"]:
        low, high = r["success_ci95"]
        lines.append(f"{r['label']:28s} {r['success_rate']:8.0%} {f'[{low:.0%}, {high:.0%}]':>12s} "
                     f"{r['final_distance_mean']:10.3f} {r['seconds_per_decision']:10.3f}")
    lines.append(f"\nwall time {result['seconds'] / 60:.1f} min; artefacts:")
    lines += [f"  {k:18s} {v}" for k, v in result["artefacts"].items()]
    return "\n".join(lines)
