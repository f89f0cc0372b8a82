"""``worldvid evaluate``: open-loop scores of a trained model on held-out episodes, as a table and JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from worldvid.atomic import write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.device import resolve_device
from worldvid.evaluate import controllability, evaluate_open_loop
from worldvid.run_folder import RunFolder

ERRORS = ("goal_object_error_px", "moving_part_error")
"""The open-loop errors ``open_loop_at`` compares with copy-last-frame."""
REPORT_STEPS = (1, 2, 4, 8, 16, 25, 50)
"""Imagined steps shown in the terminal table when the rollout is that long (all steps go to the JSON)."""


def skipped_steps(report: dict[str, Any]) -> list[str]:
    """One note per step of ``REPORT_STEPS`` within the rollout that no held-out window reaches."""
    return [f"step {step}: skipped, no held-out episode is long enough to reach it"
            for step in REPORT_STEPS if step <= report["horizon"] and report["model"]["psnr"][step - 1] is None]


def format_report(report: dict[str, Any]) -> str:
    """The terminal table: per reported step, model beside copy-last-frame (PSNR, SSIM, the moving-part error,
    the goal object's position error and, for a task whose goal includes a heading, its heading error); then
    one note per reported step no window reaches, and the controllability line (or its skip)."""
    model, copy = report["model"], report["copy_last_frame"]
    # (score key, column title, width, decimals): the errors shown with their copy-last-frame ratio, when scored
    errors = [column for column in (("moving_part_error", "moving err", 10, 4),
                                    ("goal_object_error_px", f"{report['goal_object']} err px", 16, 2),
                                    ("goal_object_heading_error_rad", "heading err rad", 15, 3)) if column[0] in model]
    head = f"{'step':>4}  {'PSNR model':>10} {'copy':>6}  {'SSIM model':>10} {'copy':>6}"
    head += "".join(f"  {title:>{width}} {'copy':>6} {'ratio':>6}" for _, title, width, _ in errors)
    lines = [f"{report['env_id']}: {report['windows']} windows from {len(report['episodes'])} held-out episodes", head]
    for step in (s for s in REPORT_STEPS if s <= report["horizon"]):
        j = step - 1
        if model["psnr"][j] is None:
            continue
        line = f"{step:4d}  {model['psnr'][j]:10.2f} {copy['psnr'][j]:6.2f}  {model['ssim'][j]:10.3f} {copy['ssim'][j]:6.3f}"
        for key, _, width, decimals in errors:
            if model[key][j] is None or copy[key][j] is None:  # nothing moved in any window reaching the step
                line += f"  {'-':>{width}} {'-':>6} {'-':>6}"
                continue
            ratio = copy[key][j] / max(model[key][j], 1e-6)
            line += f"  {model[key][j]:{width}.{decimals}f} {copy[key][j]:6.{decimals}f} {ratio:5.1f}x"
        lines.append(line)
    lines += skipped_steps(report)
    lines += heading_split_lines(report)
    lines += ratio_interval_lines(report)
    c = report.get("controllability")
    if c is not None and "skipped" in c:
        lines.append(c["skipped"])
    elif c is not None:
        f = ".2f" if c.get("unit", "px") == "px" else ".4f"
        lines.append(
            f"controllability ({c['seeds']} seeds, {c['horizon']} steps, {c.get('unit', 'px')}): imagined-vs-real {c['matched']:{f}}, "
            f"real A-vs-B {c['real_divergence']:{f}}, imagined A-vs-B {c['imagined_divergence']:{f}} -> "
            f"{'PASSED' if c['passed'] else 'FAILED'}"
        )
    return "\n".join(lines)


def heading_split_lines(report: dict[str, Any], steps: tuple[int, ...] = (8, 16)) -> list[str]:
    """One line per step of ``steps`` within the rollout: the heading error where the real goal object turned and
    where it stood still (``worldvid.evaluate.heading_split``), model / copy-last-frame; none without a split."""
    split, lines = report.get("heading_split"), []
    for step in (s for s in steps if split is not None and s <= report["horizon"]):
        j, parts = step - 1, []
        for kind, verb in (("turned", "turned"), ("still", "stood still")):
            model, copy = split[f"model_{kind}"][j], split[f"copy_{kind}"][j]
            if model is not None:
                parts.append(f"{verb} in {split[kind][j]} windows: {model:.3f} / {copy:.3f} rad "
                             f"({copy / max(model, 1e-6):.1f}x)")
        if parts:
            lines.append(f"step {step} heading, model / copy-last (the {report['goal_object']} turned: copy-last "
                         f"> {split['turned_rad']} rad): " + "; ".join(parts))
    return lines


def ratio_interval_lines(report: dict[str, Any]) -> list[str]:
    """One line per step of ``report["ratio_intervals"]`` (``worldvid.evaluate.ratio_intervals``): the goal
    object's position and heading ratios to copy-last-frame with their bootstrap intervals over episodes."""
    intervals, lines = report.get("ratio_intervals"), []
    if not intervals:
        return lines
    names = {"goal_object_error_px": "position", "goal_object_heading_error_rad": "heading"}
    for step in sorted({int(s) for key in names for s in intervals.get(key, {})}):
        parts = []
        for key, name in names.items():
            low_high = intervals.get(key, {}).get(str(step))
            if low_high is None:
                continue
            model, copy = report["model"][key][step - 1], report["copy_last_frame"][key][step - 1]
            if model is not None and copy is not None:
                parts.append(f"{name} {copy / max(model, 1e-6):.1f}x [{low_high[0]:.1f}, {low_high[1]:.1f}]")
        if parts:
            lines.append(f"step {step} {report['goal_object']} ratio to copy-last, {intervals['level']:.0%} interval "
                         f"over episodes ({intervals['resamples']} bootstrap resamples): " + "; ".join(parts))
    return lines


def run_open_loop_evaluation(
    model: str | os.PathLike,
    data: str | os.PathLike | None = None,
    rollout_steps: int = 16,
    out: str | os.PathLike | None = None,
    controllability_seeds: int = 16,
    max_episodes: int = 30,
    seed: int = 0,
    print_table: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run (or model folder) on held-out episodes; print the table and write the JSON report,
    OUT/eval.json (``out``: a folder, the run folder by default).

    device: where the model runs (None: CUDA when present, else CPU).
    """
    device = resolve_device(device)
    run = RunFolder.of(model)
    if data is None:
        data = run.data()
        if data is None:
            raise ValueError(f"{model} is not a training run folder; pass --data")
        trained = [s["data"] for s in run.stores()]
        if len({EpisodeStore(d).spec.env_id for d in trained}) > 1:
            raise ValueError(f"{model} is a multi-task model: pass --data with the store of the task to evaluate "
                             f"(it trained on {', '.join(trained)})")
    store = EpisodeStore(data)
    world_model = run.load_model_for(store, device=device)
    episodes = run.held_out_episodes(store)[:max_episodes]
    report = evaluate_open_loop(world_model, store, episodes, horizon=rollout_steps, seed=seed)
    if controllability_seeds > 0:
        seeds = range(1_000_000, 1_000_000 + controllability_seeds)  # never seen in training (those use small seeds)
        report["controllability"] = controllability(world_model, store.spec.env_id, seeds, horizon=min(8, rollout_steps),
                                                    env_kwargs=store.spec.env_kwargs, seed=seed)
    report["notes"] = skipped_steps(report)
    out = (Path(out) if out else run.path) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    report["json"] = str(out)
    if print_table:
        print(format_report(report))
        print(f"report: {out}")
    return report


def open_loop_at(run: str | os.PathLike, horizon: int = 8, seed: int = 0, data: str | os.PathLike | None = None,
                 episodes: list[int] | None = None) -> dict[str, Any]:
    """The model's and copy-last-frame's errors (``ERRORS``) at imagined step ``horizon`` and copy / model (the
    ratio; > 1: the model is better), on ``episodes`` of store ``data`` (default: the run's first store and its
    held-out episodes there)."""
    folder = RunFolder.of(run)
    store = EpisodeStore(data if data is not None else folder.data())
    episodes = folder.held_out_episodes(store) if episodes is None else episodes
    report = evaluate_open_loop(folder.load_model_for(store), store, episodes, horizon=horizon, seed=seed)
    scores: dict[str, Any] = {"windows": report["windows"], "horizon": horizon, "episodes": len(episodes)}
    for key in ERRORS:
        model, copy = report["model"].get(key), report["copy_last_frame"].get(key)
        if model is None or model[horizon - 1] is None or copy[horizon - 1] is None:
            continue
        scores[key] = {"model": model[horizon - 1], "copy_last_frame": copy[horizon - 1],
                       "ratio": copy[horizon - 1] / max(model[horizon - 1], 1e-9)}
    return scores
