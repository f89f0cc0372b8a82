"""Diagnostics of goal-image costs a person can look at (issue "Goals from the image alone").

For named costs ``cost(frames uint8 [..., H, W, 3], goal uint8 [H, W, 3]) -> float32 [...]`` (lower is closer) on
one worldvid task, on fresh env seeds (from ``FRESH_SEED``, which no training data uses):
1. ``steps_to_go_correlation``: Spearman's rho between cost(frame_t, goal) and the steps a scripted expert still
   needs to succeed, pooled over episodes and averaged per episode (1: a perfect ranking);
2. ``descent_share``: the share of the expert's steps that lower the cost (what a greedy planner relies on);
3. ``state_distance_correlation``: rho between cost(frame_a, frame_b) and the goal object's true distance;
4. ``heat_map``: the goal object placed on a grid through the simulator (evaluation only), scored against one goal.
``diagnose_costs`` runs all four and writes OUT/diagnostics.json and OUT/heat_map.png.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from worldvid.atomic import write_bytes_atomic, write_json_atomic
from worldvid.costs import Cost
from worldvid.envs import TASKS
from worldvid.envs.factory import canonical_env_id, make_pixel_env
from worldvid.experiments.heat_map_placement import grid_extent, placed_state, placement

FRESH_SEED = 900_000
"""First env seed of the diagnostics; no collected training data uses seeds this large."""


# ---------------------------------------------------------------------------- rank correlation
def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..N of float [N], tied values sharing the average of their ranks: float64 [N]."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    first = np.r_[True, a[order][1:] != a[order][:-1]]  # start of each run of equal values
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], a.size]  # exclusive: the run covers ranks starts+1 .. ends
    ranks = np.empty(a.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(first) - 1]
    return ranks


def _spearman_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the average ranks of float [N] x and y (no scipy)."""
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of float [N] x and y (ties: average ranks); pairs with a non-finite value are
    left out. NaN when fewer than 2 pairs remain or either side is constant. scipy when installed, else numpy."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    x, y = x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)]
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    try:
        from scipy.stats import spearmanr
    except ImportError:
        return _spearman_numpy(x, y)
    return float(spearmanr(x, y)[0])


def _score(cost: Cost, frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """cost(frames uint8 [..., H, W, 3], goal uint8 [H, W, 3]) as float64 numpy [...]."""
    with torch.no_grad():
        return cost(frames, goal).detach().to("cpu", torch.float64).numpy()


def _task_env(env_id: str, size: int) -> Any:
    """A worldvid task made with ``render_mode="rgb_array"`` (heat maps render placed states)."""
    if canonical_env_id(env_id) not in TASKS:
        raise ValueError(f"cost diagnostics need a worldvid task ({sorted(TASKS)}), got {env_id!r}")
    return make_pixel_env(env_id, size, render_mode="rgb_array")


# ---------------------------------------------------------------------------- 1, 2: expert episodes
@dataclass(frozen=True)
class ExpertEpisode:
    """A scripted-expert episode. frames: uint8 [T + 1, H, W, 3], frame t after t steps, ending at the first success
    (frame ``success_step``; None if the expert did not succeed in time) or at the time limit. goal_frame: uint8
    [H, W, 3]."""

    frames: np.ndarray
    goal_frame: np.ndarray
    success_step: int | None
    seed: int


def record_expert_episodes(env_id: str, size: int = 32, episodes: int = 20, seed: int = FRESH_SEED,
                           progress: bool = True) -> list[ExpertEpisode]:
    """Run the task's ``scripted_action()`` from resets with seeds seed .. seed + episodes - 1, until success
    or the registered time limit."""
    env, out = _task_env(env_id, size), []
    try:
        for k in tqdm(range(episodes), desc=f"expert {canonical_env_id(env_id)}", unit="ep", disable=not progress):
            frame, info = env.reset(seed=seed + k)
            goal_frame = info["goal_frame"]
            frames, success_step, truncated = [frame], (0 if info["success"] else None), False
            while success_step is None and not truncated:
                frame, _, _, truncated, info = env.step(env.unwrapped.scripted_action())
                frames.append(frame)
                if info["success"]:
                    success_step = len(frames) - 1
            out.append(ExpertEpisode(np.stack(frames), goal_frame, success_step, seed + k))
    finally:
        env.close()
    return out


def episode_costs(cost: Cost, episodes: Sequence[ExpertEpisode]) -> list[np.ndarray]:
    """cost(frame_t, goal) of every frame of each expert episode that succeeded: float64 [success_step + 1] each."""
    return [_score(cost, e.frames[: e.success_step + 1], e.goal_frame) for e in episodes
            if e.success_step is not None and e.success_step > 0]


def steps_to_go_correlation(per_episode: Sequence[np.ndarray]) -> dict[str, float]:
    """Spearman rho between cost and steps-to-go (s - t for the frames t < s, s = first success).

    per_episode: float [s + 1] costs of frames 0 .. s of each episode (``episode_costs``). Returns ``pooled`` (rho
    over all episodes' frames together) and ``episode_mean`` (mean of the per-episode rhos that exist; NaN if none).
    """
    costs = [np.asarray(c, dtype=np.float64)[:-1] for c in per_episode]
    to_go = [np.arange(c.size, 0, -1, dtype=np.float64) for c in costs]
    rhos = np.array([spearman(c, g) for c, g in zip(costs, to_go)])
    defined = rhos[np.isfinite(rhos)]
    return {"pooled": spearman(np.concatenate(costs), np.concatenate(to_go)) if costs else float("nan"),
            "episode_mean": float(defined.mean()) if defined.size else float("nan")}


def descent_share(per_episode: Sequence[np.ndarray]) -> float:
    """Share of the expert's steps t -> t + 1 (up to the first success) whose cost is strictly lower at t + 1.

    per_episode: float [s + 1] costs of frames 0 .. s of each episode. A cost that ignores the state scores
    about 0.5 (random) or 0 (constant); NaN when there are no steps.
    """
    drops = [np.diff(np.asarray(c, dtype=np.float64)) < 0 for c in per_episode]
    steps = sum(d.size for d in drops)
    return float(sum(d.sum() for d in drops) / steps) if steps else float("nan")


# ---------------------------------------------------------------------------- 3: random state pairs
@dataclass(frozen=True)
class StatePairs:
    """Random pairs of states: frames_a, frames_b uint8 [P, H, W, 3]; distance float64 [P], world units between
    the goal object's positions in a and b."""

    frames_a: np.ndarray
    frames_b: np.ndarray
    distance: np.ndarray


def random_state_pairs(env_id: str, size: int = 32, pairs: int = 400, seed: int = FRESH_SEED,
                       max_random_actions: int = 5, progress: bool = True) -> StatePairs:
    """2 * ``pairs`` states, each a reset (seeds seed .. seed + 2 pairs - 1) followed by 0 .. max_random_actions
    uniform random actions (so the objects also move off their start distribution), paired in order."""
    env = _task_env(env_id, size)
    rng, low, high = np.random.default_rng(seed), env.action_space.low, env.action_space.high
    frames, positions = [], []
    try:
        for k in tqdm(range(2 * pairs), desc="random states", unit="state", disable=not progress):
            frame, _ = env.reset(seed=seed + k)
            for _ in range(int(rng.integers(0, max_random_actions + 1))):
                frame, *_ = env.step(rng.uniform(low, high).astype(np.float32))
            frames.append(frame)
            positions.append(env.unwrapped.object_positions()[env.unwrapped.goal_object])
    finally:
        env.close()
    frames_all, pos = np.stack(frames), np.stack(positions)
    return StatePairs(frames_all[0::2], frames_all[1::2], np.linalg.norm(pos[0::2] - pos[1::2], axis=-1))


def state_distance_correlation(cost: Cost, pairs: StatePairs) -> float:
    """Spearman rho between cost(frame_a, frame_b) and the true goal-object distance over ``pairs``."""
    scores = [float(_score(cost, a, b)) for a, b in zip(pairs.frames_a, pairs.frames_b)]
    return spearman(scores, pairs.distance)


# ---------------------------------------------------------------------------- 4: heat map
@dataclass(frozen=True)
class HeatMap:
    """Costs of the goal object placed on a grid, against one goal image.

    xs, ys: float64 [G], world coordinates of the grid columns and rows. goal: float64 [2], the goal object's
    goal position. goal_frame: uint8 [H, W, 3]. costs: name -> float64 [G, G] indexed [row (y), column (x)],
    NaN where the placement is impossible. path: the PNG written (None if none was).
    """

    xs: np.ndarray
    ys: np.ndarray
    goal: np.ndarray
    goal_frame: np.ndarray
    costs: dict[str, np.ndarray]
    path: Path | None = None


def heat_map(env_id: str, costs: dict[str, Cost], path: str | os.PathLike | None = None, size: int = 32,
             grid: int = 15, seed: int = FRESH_SEED, progress: bool = True) -> HeatMap:
    """Score every cost on grid x grid placements of the goal object against the goal image of reset(seed).

    Where each task's goal object goes: ``worldvid.experiments.heat_map_placement``. Velocities are zero. Writes the
    PNG (``plot_heat_map``) to ``path``.
    """
    env = _task_env(env_id, size)
    try:
        env.reset(seed=seed)
        task, cells, frames = env.unwrapped, [], []
        start, axis = task.get_sim_state(), np.linspace(-grid_extent(task), grid_extent(task), grid)
        for i, j in tqdm(np.ndindex(grid, grid), total=grid * grid, desc="heat map", unit="cell", disable=not progress):
            point = np.array([axis[j], axis[i]])
            qpos = placement(task, point)
            if qpos is None:
                continue
            task.set_sim_state(placed_state(task, start, qpos))
            placed = task.object_positions()[task.goal_object]
            if not np.allclose(placed, point, atol=1e-6):
                raise RuntimeError(f"placement of {task.goal_object} at {point} landed at {placed}")
            cells.append((i, j))
            frames.append(task.render())
        goal, goal_frame = task.goal.copy(), task.goal_frame.copy()
    finally:
        env.close()
    stacked, rows, cols = np.stack(frames), *np.array(cells).T
    maps = {name: np.full((grid, grid), np.nan) for name in costs}
    for name, cost in costs.items():
        maps[name][rows, cols] = _score(cost, stacked, goal_frame)
    heat = HeatMap(axis, axis.copy(), goal, goal_frame, maps)
    if path is None:
        return heat
    figure = plot_heat_map(heat, title=f"{canonical_env_id(env_id)}, seed {seed}: cost of {task.goal_object} position")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return replace(heat, path=write_bytes_atomic(path, buffer.getvalue()))


def plot_heat_map(heat: HeatMap, title: str = "") -> Any:
    """A matplotlib figure (no pyplot, Agg canvas): the goal image, then one panel per cost with gid "cost:NAME"
    (colour = cost, star = goal, white cross = the grid's lowest cost, grey = impossible placements)."""
    import matplotlib
    from matplotlib.figure import Figure

    n = len(heat.costs)
    figure = Figure(figsize=(2.6 + 3.4 * n, 3.2))
    axes = figure.subplots(1, n + 1, squeeze=False)
    axes[0, 0].imshow(heat.goal_frame, interpolation="nearest")
    axes[0, 0].set(title="goal image", xticks=[], yticks=[])
    half = (heat.xs[1] - heat.xs[0]) / 2 if heat.xs.size > 1 else 0.5
    extent = (heat.xs[0] - half, heat.xs[-1] + half, heat.ys[0] - half, heat.ys[-1] + half)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    for ax, (name, values) in zip(axes[0, 1:], heat.costs.items()):
        ax.set_gid(f"cost:{name}")
        image = ax.imshow(np.ma.masked_invalid(values), origin="lower", extent=extent, cmap=cmap,
                          interpolation="nearest")
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.plot(*heat.goal, marker="*", color="red", markersize=13, markeredgecolor="white")
        if np.isfinite(values).any():
            i, j = np.unravel_index(np.nanargmin(values), values.shape)
            ax.plot(heat.xs[j], heat.ys[i], marker="x", color="white", markersize=8)
        ax.set_title(name, fontsize=10)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def heat_map_summary(heat: HeatMap) -> dict[str, dict[str, float]]:
    """Per cost: ``argmin_distance`` (world distance from the grid's lowest cost to the goal) and
    ``distance_spearman`` (rho between cost and distance to the goal over the grid)."""
    distance, out = np.hypot(heat.xs[None, :] - heat.goal[0], heat.ys[:, None] - heat.goal[1]), {}
    for name, values in heat.costs.items():
        finite = np.isfinite(values)
        best = float(distance.flat[np.nanargmin(values)]) if finite.any() else float("nan")
        out[name] = {"argmin_distance": best, "distance_spearman": spearman(values[finite], distance[finite])}
    return out


# ---------------------------------------------------------------------------- 5: everything
def _json_ready(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists / floats and non-finite floats as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value.item() if isinstance(value, np.generic) else value


def format_table(report: dict[str, Any]) -> str:
    """One row per cost: steps-to-go rho (pooled / episode mean), descent share, state-distance rho, heat map."""
    expert = report["expert"]
    lines = [f"{report['env_id']} ({report['size']} px): {expert['succeeded']}/{expert['episodes']} expert episodes "
             f"succeeded, {report['pairs']} random state pairs, heat-map seed {report['seeds']['heat_map']}",
             f"{'cost':>10}  {'to-go rho pooled / ep':>21}  {'descent':>7}  {'state rho':>9}  {'heat rho':>8}  "
             f"{'heat argmin d':>13}"]
    for name, row in report["costs"].items():
        values = (row["steps_to_go_spearman_pooled"], row["steps_to_go_spearman_episode_mean"], row["descent_share"],
                  row["state_distance_spearman"], row["heat_map"]["distance_spearman"], row["heat_map"]["argmin_distance"])
        cells = [f"{v:{w}.3f}" if v is not None else f"{'nan':>{w}}" for v, w in zip(values, (10, 8, 7, 9, 8, 13))]
        lines.append(f"{name:>10}  {cells[0]} / {cells[1]}  " + "  ".join(cells[2:]))
    return "\n".join(lines)


def diagnose_costs(env_id: str, costs: dict[str, Cost], out: str | Path, size: int = 32, episodes: int = 20,
                   pairs: int = 400, seed: int = FRESH_SEED, *, grid: int = 15, progress: bool = True) -> dict:
    """Run the four diagnostics for every cost on ``env_id``; write OUT/diagnostics.json and OUT/heat_map.png,
    print the table, return the report (the JSON's content).

    Seeds: expert episodes seed .. seed + episodes - 1; random states the next 2 * pairs; the heat map's goal is
    that of the first expert episode (seed). Frames are uint8 [size, size, 3].
    """
    if not costs:
        raise ValueError("diagnose_costs needs at least one cost")
    (out := Path(out)).mkdir(parents=True, exist_ok=True)
    heat = heat_map(env_id, costs, out / "heat_map.png", size, grid, seed, progress)  # first: fails at once
    experts = record_expert_episodes(env_id, size, episodes, seed, progress)
    state_pairs = random_state_pairs(env_id, size, pairs, seed + episodes, progress=progress)
    heat_rows, rows = heat_map_summary(heat), {}
    for name, cost in costs.items():
        per_episode = episode_costs(cost, experts)
        to_go = steps_to_go_correlation(per_episode)
        rows[name] = {"steps_to_go_spearman_pooled": to_go["pooled"],
                      "steps_to_go_spearman_episode_mean": to_go["episode_mean"],
                      "descent_share": descent_share(per_episode),
                      "state_distance_spearman": state_distance_correlation(cost, state_pairs),
                      "heat_map": heat_rows[name]}
    succeeded = [e.success_step for e in experts if e.success_step]
    report = _json_ready({
        "env_id": canonical_env_id(env_id), "size": size, "pairs": pairs,
        "seeds": {"expert": [seed, seed + episodes - 1], "pairs": [seed + episodes, seed + episodes + 2 * pairs - 1],
                  "heat_map": seed},
        "expert": {"episodes": episodes, "succeeded": len(succeeded),
                   "mean_steps_to_success": float(np.mean(succeeded)) if succeeded else float("nan")},
        "costs": rows,
        "heat_map": {"path": str(heat.path), "xs": heat.xs, "ys": heat.ys, "goal": heat.goal, "costs": heat.costs},
    })
    write_json_atomic(out / "diagnostics.json", report)
    print(format_table(report))
    return report
