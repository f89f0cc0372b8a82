"""DAgger-style data aggregation for the world model (``worldvid dagger``): plan with the current model, record
what the planner did in the true env, fine-tune on it, repeat.

A model trained on play data is wrong where the planner goes and the play data seldom went (Push: the planner
pushes on a face of the block, which then moves straight along that axis, while the play-trained model imagined it
sliding toward the goal). Round r (r = 0 .. rounds-1), starting from model M_0 = ``model``:

1. the planner imagining with M_r runs ``episodes`` episodes from seeds ``seed + r * episodes`` and records them
   (``worldvid plan --record``): the states the planner visits, with what really happened there;
2. (once) the oracle planner runs ``oracle_episodes`` episodes from ``oracle_seed`` and records them: precise,
   goal-directed contact the play data lacks;
3. M_r is fine-tuned (``worldvid train --init``) on the collected data, every round's planner data so far and the
   oracle data, with batch shares ``data_share`` / ``planner_share`` (split evenly over the rounds' stores) /
   ``oracle_share``: M_{r+1} = OUT/round_r/run.

A step whose output is complete is skipped and an interrupted fine-tuning resumes from its checkpoint, so running
the same command again continues where it stopped. Keep the seeds away from the evaluation's (default 0..29).
Writes OUT/dagger.json: per round, the planner's success on its recording seeds and the fine-tuned run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worldvid.agents import PlannerConfig
from worldvid.agents.planner_config import require_positive_ints
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.atomic import write_json_atomic
from worldvid.checkpoint import TRAINING_STATE, load_training_state
from worldvid.data.store import EpisodeStore, StoreError
from worldvid.device import resolve_device
from worldvid.run_folder import RunFolder
from worldvid.train import TrainConfig, train


@dataclass(frozen=True)
class DaggerConfig:
    """One aggregation loop: task, starting model and data, rounds, episodes, fine-tuning and planner budget."""

    env_id: str
    """Gymnasium id of the task."""
    model: str
    """Run folder (or model folder) of the starting model M_0."""
    data: str
    """The episode store M_0 was trained on (kept in every fine-tuning mix)."""
    out: str
    """Folder for the recorded stores, the fine-tuned runs and dagger.json."""
    rounds: int = 1
    episodes: int = 30
    """Planner episodes recorded per round."""
    oracle_episodes: int = 40
    """Oracle-planner episodes recorded once (0: none)."""
    seed: int = 1000
    oracle_seed: int = 2000
    steps: int = 3000
    """Fine-tuning steps per round."""
    lr: float = 3e-4
    """Peak learning rate of the fine-tuning."""
    data_share: float = 0.5
    planner_share: float = 0.3
    oracle_share: float = 0.2
    workers: int = 2
    """Ray workers of the recording runs (1: in this process)."""
    cost: str = "keypoint"
    """Goal-image cost the recording planners use (``worldvid.costs.COSTS``)."""
    cost_model: str | None = None
    """Run folder of a learned goal distance, for cost 'learned'."""
    device: str | None = None
    """Where the planners' world model runs and the fine-tuning trains, e.g. 'cpu', 'cuda' (None: CUDA when
    present, else CPU)."""
    max_steps: int | None = None
    """Cap on steps per recorded episode (default: the task's time limit); for quick checks."""
    goal_steps: int = 0
    """Goals of the recording runs: the frame the task's expert reaches this many steps after the start (PushT's
    25-step goal set); 0: the task's own goals (``PlanEvalConfig.goal_steps``)."""
    execute: int = 1
    """Planned env steps executed per decision by the recording planners (``PlanEvalConfig.execute``)."""
    stop_on_success: bool = True
    """End a recorded episode at the goal; off, every episode runs to its step cap, so episodes that start at
    their goal are recorded too (with it on, ``plan --record`` refuses them before any work)."""
    planner_config: PlannerConfig = field(default_factory=PlannerConfig)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    """Other ``TrainConfig`` fields of the fine-tuning (e.g. batch_size)."""

    def __post_init__(self) -> None:
        require_positive_ints(self, ("rounds", "episodes", "steps", "workers"))
        require_positive_ints(self, ("max_steps",), optional=True)
        if self.oracle_episodes < 0 or min(self.data_share, self.planner_share, self.oracle_share) < 0:
            raise ValueError("oracle_episodes and the batch shares must be non-negative")


def run_dagger(config: DaggerConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or continue) the loop of the module docstring; returns one row per round (also in OUT/dagger.json)."""
    out = Path(config.out)
    size = EpisodeStore(config.data).spec.frame_shape[0]
    RunFolder.of(config.model)  # FileNotFoundError before any work
    resolve_device(config.device)  # ValueError before any work
    base = PlanEvalConfig(env_id=config.env_id, planner="cem", cost=config.cost, cost_model=config.cost_model,
                          episodes=config.episodes,
                          workers=config.workers, size=size, max_steps=config.max_steps,
                          goal_steps=config.goal_steps, execute=config.execute,
                          stop_on_success=config.stop_on_success,
                          planner_config=config.planner_config, device=config.device)
    oracle_store = None
    if config.oracle_episodes:
        oracle = replace(base, oracle=True, episodes=config.oracle_episodes, seed=config.oracle_seed)
        oracle_store = out / "oracle_data"
        _record(oracle, out / "oracle_plan", oracle_store, progress)
    rows, model, planner_stores = [], config.model, []
    for r in range(config.rounds):
        folder = out / f"round_{r}"
        planning = replace(base, model=str(model), seed=config.seed + r * config.episodes)
        summary = _record(planning, folder / "plan", folder / "planner_data", progress)
        planner_stores.append(folder / "planner_data")
        stores = [Path(config.data), *planner_stores] + ([oracle_store] if oracle_store else [])
        shares = [config.data_share] + [config.planner_share / len(planner_stores)] * len(planner_stores)
        shares += [config.oracle_share] if oracle_store else []
        run = folder / "run"
        _fine_tune(config, stores, shares, model, run, progress)
        rows.append({"round": r, "model": str(model), "seeds": f"{planning.seed}-{planning.seed + config.episodes - 1}",
                     "success_rate": summary["success_rate"], "recorded": str(folder / "planner_data"),
                     "fine_tuned": str(run)})
        model = run
    write_json_atomic(out / "dagger.json", {"config": asdict(config), "rounds": rows})
    return rows


def _record(config: PlanEvalConfig, plan_out: Path, store: Path, progress: bool) -> dict[str, Any]:
    """Run and record ``config``'s episodes unless a complete recording exists; returns its summary row."""
    summary_file = plan_out / "summary.json"
    try:
        if summary_file.is_file() and len(EpisodeStore(store)) == config.episodes:
            return json.loads(summary_file.read_text())["summary"]
    except StoreError:
        pass  # no store yet, or an unfinished one: record (again)
    return evaluate_planner(config, out=plan_out, record=store, progress=progress).summary


def _fine_tune(config: DaggerConfig, stores: list[Path], shares: list[float], start: str | Path, run: Path,
               progress: bool) -> None:
    """Fine-tune ``start`` on ``stores`` into ``run``; resumes an interrupted run, skips a finished one."""
    train_config = TrainConfig(steps=config.steps, lr=config.lr, data_weights=tuple(shares), **config.train_overrides)
    if (run / TRAINING_STATE).is_file():
        if load_training_state(run, restore_rng=False)["step"] >= config.steps:
            return
        train(stores, run, train_config, resume=True, progress=progress, device=config.device)
    else:
        train(stores, run, train_config, init_from=start, progress=progress, device=config.device)


# ---------------------------------------------------------------------------- command line
