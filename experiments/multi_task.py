"""One model across tasks against one model per task, task by task (issue 17's multi-task bar).

``python -m worldvid.experiments.multi_task --multi RUN --single RUN [RUN ...] --out DIR [--plan-episodes 30]
[--workers 2] [--reuse-plan TASK=FOLDER ...]``

For each single-task run, on its task's store inside the multi-task run (the episodes the multi-task run held out
there, which are the single-task run's too: the same split of the same store), it measures:

- open loop: the goal object's position error (px) and the moving-part error after 8 imagined steps, for the
  single-task model, the multi-task model and copy-last-frame, with the same sampling seed
  (``experiments.open_loop.open_loop_at``), and multi / single;
- planning: CEM with the keypoint cost (``PlanEvalConfig``'s defaults) on ``--plan-episodes`` episodes from seed 0
  for each model (``experiments.plan_eval.evaluate_planner``); ``--reuse-plan`` takes a finished folder of the
  single-task row instead (the same config, checked) when it was measured earlier on the same code.

Writes DIR/multi_task.json and DIR/table.md; the planning folders are DIR/plan/<task>_<single|multi>.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worldvid.atomic import write_bytes_atomic, write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.run_folder import RunFolder

from worldvid.experiments.open_loop import ERRORS, open_loop_at
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.experiments.plan_table import summary_rows

HORIZON = 8


def task_store(multi: RunFolder, env_id: str) -> str:
    """The multi-task run's store of ``env_id``; ValueError when it did not train on that task."""
    for trained in multi.stores():
        if EpisodeStore(trained["data"]).spec.env_id == env_id:
            return trained["data"]
    raise ValueError(f"{multi.path} did not train on {env_id}")


def _plan(env_id: str, model: str, episodes: int, workers: int, out: Path) -> dict[str, Any]:
    config = PlanEvalConfig(env_id=env_id, model=model, episodes=episodes, workers=workers)
    started = time.perf_counter()
    evaluate_planner(config, out=out)
    row = summary_rows([out])[0]
    return row | {"folder": str(out), "wall_s": round(time.perf_counter() - started, 1)}


def _reused(folder: str, env_id: str, episodes: int) -> dict[str, Any]:
    """The summary row of a finished planning folder, checked to be this comparison's row (task, CEM with the
    keypoint cost on imagined video, the default budget, seeds 0..episodes-1)."""
    row = summary_rows([folder])[0]
    wanted = {"env_id": env_id, "label": "cem/keypoint/model", "budget": "32x6x2", "seeds": f"0-{episodes - 1}"}
    if any(row.get(k) != v for k, v in wanted.items()):
        raise ValueError(f"{folder} is not a {wanted} row: {({k: row.get(k) for k in wanted})}")
    return row | {"folder": folder, "reused": True}


def compare(multi: str, singles: Sequence[str], out: str | Path, plan_episodes: int = 30, workers: int = 2,
            reuse: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure every task (module docstring); returns the report written to OUT/multi_task.json."""
    out, reuse, multi = Path(out), dict(reuse or {}), str(multi)
    multi_run = RunFolder.of(multi)
    tasks: dict[str, Any] = {}
    for single in map(str, singles):
        single_run = RunFolder.of(single)
        env_id = single_run.load_model().config.env_id
        data = task_store(multi_run, env_id)
        episodes = multi_run.held_out_episodes(EpisodeStore(data))
        single_held = single_run.held_out_episodes(EpisodeStore(single_run.data()))
        if single_held != episodes:
            raise ValueError(f"{single} held out episodes {single_held[:3]}..., {multi} {episodes[:3]}...: "
                             "not the same split")
        name = env_id.split("/")[-1].split("-v")[0]
        row: dict[str, Any] = {"env_id": env_id, "data": data, "single": single, "held_out_episodes": len(episodes)}
        for which, run in (("single", single), ("multi", multi)):
            row[f"open_loop_{which}"] = open_loop_at(run, HORIZON, data=data, episodes=episodes)
        if plan_episodes:
            for which, run in (("single", single), ("multi", multi)):
                if which == "single" and name in reuse:
                    row[f"plan_{which}"] = _reused(reuse[name], env_id, plan_episodes)
                else:
                    row[f"plan_{which}"] = _plan(env_id, run, plan_episodes, workers, out / "plan" / f"{name}_{which}")
        tasks[name] = row
    report = {"multi": multi, "horizon": HORIZON, "tasks": tasks}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "multi_task.json", report)
    write_bytes_atomic(out / "table.md", table(report).encode())
    return report


def table(report: dict[str, Any]) -> str:
    """The markdown table: one row per task and model."""
    h = report["horizon"]
    lines = [f"| task | model | object err px @{h} (copy) | ratio | multi/single | moving-part err @{h} (copy) | "
             "plan success | 95% CI | s/decision |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["tasks"].items():
        for which in ("single", "multi"):
            loop, base = row[f"open_loop_{which}"], row["open_loop_single"]
            obj, moving = loop.get(ERRORS[0], {}), loop.get(ERRORS[1], {})
            rel = obj["model"] / base[ERRORS[0]]["model"] if obj and base.get(ERRORS[0]) else float("nan")
            plan = row.get(f"plan_{which}", {})
            lines.append(
                f"| {name} | {which}: {row[which] if which == 'single' else report['multi']} | "
                f"{obj.get('model', float('nan')):.2f} ({obj.get('copy_last_frame', float('nan')):.2f}) | "
                f"{obj.get('ratio', float('nan')):.1f}x | {rel:.2f} | "
                f"{moving.get('model', float('nan')):.4f} ({moving.get('copy_last_frame', float('nan')):.4f}) | "
                f"{_success(plan)} | {_interval(plan)} |")
    return "\n".join(lines) + "\n"


def _success(plan: dict[str, Any]) -> str:
    if "success_rate" not in plan:
        return "-"
    return f"{round(plan['success_rate'] * plan['episodes'])}/{plan['episodes']}" + (" (earlier)" if plan.get("reused") else "")


def _interval(plan: dict[str, Any]) -> str:
    """'[low, high] | s/decision' of a planning row, '- | -' without one."""
    if "success_ci95" not in plan:
        return "- | -"
    low, high = plan["success_ci95"]
    return f"[{low:.0%}, {high:.0%}] | {plan['seconds_per_decision']:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multi", required=True, help="the multi-task run")
    parser.add_argument("--single", nargs="+", required=True, help="one single-task run per task")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plan-episodes", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse-plan", nargs="*", default=[], metavar="TASK=FOLDER",
                        help="a finished single-task planning folder per task name (e.g. Push=DIR)")
    args = parser.parse_args(argv)
    reuse = dict(item.split("=", 1) for item in args.reuse_plan)
    report = compare(args.multi, args.single, args.out, args.plan_episodes, args.workers, reuse)
    print(table(report))
    print(json.dumps({name: {k: v for k, v in row.items() if k.startswith("plan")} for name, row in
                      report["tasks"].items()}, indent=1, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
