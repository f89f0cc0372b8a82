"""How much of a turn the frames leave open: the floor under any model's heading error on a store.

``python -m worldvid.experiments.turn_sensitivity --data STORE [--shift-px 0.3 0.5] [--horizon 8] --out DIR``
replays every episode of an episode store of a task with an object heading (PushT) in the true simulator (from
``reset(seed)``, checked against the recorded first frame), and from a window every ``every`` steps re-runs the
recorded ``horizon`` actions with the pusher moved by +-shift pixels in x and in y. The spread of the object's
turn over those runs (the largest difference from the recorded turn) says how much the turn depends on where the
pusher sits within a pixel, which a frame of that size cannot pin down: an error a model reading such frames
cannot be expected to go below. Windows are split, as ``worldvid evaluate``'s heading split, by whether the object
turned by more than ``TURNED_RAD`` over them. Writes turn_sensitivity.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from worldvid.atomic import write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.evaluate import TURNED_RAD


def turn_sensitivity(store: EpisodeStore, shift_px: float, horizon: int = 8, every: int = 4,
                     progress: bool = True) -> dict[str, Any]:
    """Spread of the object's ``horizon``-step turn under +-``shift_px`` pixel moves of the pusher (JSON-friendly).

    Returns, for the "turned" and the "still" windows: ``windows``, ``turn_mean`` (the recorded |turn|, rad) and the
    spread's ``median``, ``mean`` and share above 0.05 and 0.1 rad; and ``frames_unchanged``: the share of moves
    that leave the window's starting frame as it was (a move that changes it is visible to a model).
    """
    import gymnasium as gym
    import mujoco

    from worldvid.envs.tee_geometry import wrap_angle

    if shift_px < 0 or horizon < 1 or every < 1:
        raise ValueError(f"need shift_px >= 0, horizon >= 1 and every >= 1, got {shift_px}, {horizon} and {every}")
    env = gym.make(store.spec.env_id, size=store.spec.frame_shape[0], render_mode="rgb_array",
                   **store.spec.env_kwargs).unwrapped
    if not hasattr(env, "block_pose"):
        raise ValueError(f"{store.spec.env_id} has no object heading to turn (worldvid/PushT-v0 has)")
    shift = shift_px / env.pixels_per_unit
    recorded, spread, unchanged = [], [], 0
    for episode in tqdm(store.episode_ids, desc="replay", unit="episode", disable=not progress):
        ep = store.read_episode(episode)
        env.reset(seed=int(ep.seed))
        if not np.array_equal(env.render(), ep.frames[0]):
            raise ValueError(f"episode {episode} of {store.root} does not replay from reset(seed={ep.seed})")
        states, yaws = [], []
        for action in ep.actions:
            states.append(env.get_sim_state())
            yaws.append(env.block_pose()[2])
            env.step(action)
        yaws.append(env.block_pose()[2])
        for t in range(0, len(ep.actions) - horizon + 1, every):
            turn = wrap_angle(yaws[t + horizon] - yaws[t])
            moved = []
            for dx, dy in ((shift, 0.0), (-shift, 0.0), (0.0, shift), (0.0, -shift)):
                env.set_sim_state(states[t])
                before = env.render()
                env.data.qpos[0] += dx
                env.data.qpos[1] += dy
                mujoco.mj_forward(env.model, env.data)
                unchanged += int(np.array_equal(before, env.render()))
                start = env.block_pose()[2]
                for action in ep.actions[t:t + horizon]:
                    env.step(action)
                moved.append(abs(wrap_angle(wrap_angle(env.block_pose()[2] - start) - turn)))
            recorded.append(abs(turn))
            spread.append(max(moved))
    env.close()
    recorded_a, spread_a = np.asarray(recorded), np.asarray(spread)
    report: dict[str, Any] = {"data": str(store.root), "shift_px": shift_px, "horizon": horizon, "every": every,
                              "turned_rad": TURNED_RAD, "frames_unchanged": unchanged / max(4 * len(spread), 1)}
    for kind, mask in (("turned", recorded_a > TURNED_RAD), ("still", recorded_a <= TURNED_RAD)):
        s = spread_a[mask]
        report[kind] = {"windows": int(mask.sum()), "turn_mean": float(recorded_a[mask].mean()) if mask.any() else None,
                        **({"median": float(np.median(s)), "mean": float(s.mean()), "over_0.05": float(np.mean(s > 0.05)),
                            "over_0.1": float(np.mean(s > 0.1))} if mask.any() else {})}
    return report


def sensitivity_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of ``turn_sensitivity`` results, one row per shift and kind of window."""
    lines = ["| pusher moved by | windows | recorded |turn| (rad) | spread median / mean (rad) | > 0.05 / > 0.1 rad | "
             "start frame unchanged |", "|---|---|---|---|---|---|"]
    for row in rows:
        for kind in ("turned", "still"):
            k = row[kind]
            if not k["windows"]:
                continue
            lines.append(f"| +-{row['shift_px']} px | {k['windows']} {kind} | {k['turn_mean']:.3f} | {k['median']:.3f} / "
                         f"{k['mean']:.3f} | {k['over_0.05']:.0%} / {k['over_0.1']:.0%} | {row['frames_unchanged']:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="episode store of a task with an object heading (PushT)")
    parser.add_argument("--shift-px", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    store = EpisodeStore(args.data)
    rows = [turn_sensitivity(store, shift, args.horizon, args.every) for shift in args.shift_px]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "turn_sensitivity.json", rows)
    table = sensitivity_table(rows)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
