"""How well an object's pose is read back from frames by image moments, per frame size (which size a task needs).

``python -m worldvid.experiments.pose_readback --env worldvid/PushT-v0 --sizes 32 64 --poses 500 --out DIR``
renders the goal object at random poses (``sample_goal_position``; the other objects parked in a corner),
reads position and heading back with ``worldvid.keypoints.locate_pose`` and compares them with the true pose:
errors in world units and radians (median, 95th percentile, max), and the share of poses whose read-back
pose would itself pass the task's success test against the true one (for PushT: coverage >= 95%).
Writes readback.json and readback.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm


def measure_readback(env_id: str, size: int, poses: int = 500, seed: int = 0) -> dict[str, Any]:
    """Read-back errors of the goal object's pose at frame ``size`` over ``poses`` random poses (JSON-friendly)."""
    import gymnasium as gym

    from worldvid.envs.tee_geometry import coverage, wrap_angle
    from worldvid.keypoints import locate_pose

    env = gym.make(env_id, size=size, render_mode="rgb_array").unwrapped
    if not hasattr(env, "block_pose"):
        raise ValueError(f"{env_id} has no object pose with a heading to read back (worldvid/PushT-v0 has)")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    corner = env.arena_half - env.pusher_radius - 0.01
    position_errors, angle_errors, covered = [], [], []
    for _ in tqdm(range(poses), desc=f"readback {size} px", unit="pose"):
        pose = env.sample_goal_position(rng)
        env.set_state(np.array([corner, corner, *pose]), np.zeros(env.model.nv))
        position, yaw, visible = locate_pose(env.render(), env.object_colors[env.goal_object])
        if not bool(visible):
            raise RuntimeError(f"the {env.goal_object} is not visible at pose {pose}")
        read = np.array([*env.pixel_to_world(position.numpy()), float(yaw)])
        position_errors.append(float(np.linalg.norm(read[:2] - pose[:2])))
        angle_errors.append(float(abs(wrap_angle(read[2] - pose[2]))))
        covered.append(coverage(read, pose))
    env.close()

    def stats(values: Sequence[float]) -> dict[str, float]:
        v = np.asarray(values)
        return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}

    return {"env_id": env_id, "size": size, "poses": poses, "seed": seed, "position_error": stats(position_errors),
            "angle_error": stats(angle_errors), "coverage_of_true_pose": stats(covered),
            "share_readback_within_success": float(np.mean(np.asarray(covered) >= getattr(env, "success_coverage", 1.0)))}


def readback_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of ``measure_readback`` results."""
    lines = ["| size | position error median / p95 / max (units) | angle error median / p95 / max (rad) | "
             "read-back pose covers the true one >= success (share) |", "|---|---|---|---|"]
    for r in rows:
        p, a = r["position_error"], r["angle_error"]
        lines.append(f"| {r['size']} | {p['median']:.4f} / {p['p95']:.4f} / {p['max']:.4f} | "
                     f"{a['median']:.3f} / {a['p95']:.3f} / {a['max']:.3f} | {r['share_readback_within_success']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="worldvid/PushT-v0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--poses", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    rows = [measure_readback(args.env, size, args.poses, args.seed) for size in args.sizes]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "readback.json").write_text(json.dumps(rows, indent=1))
    table = readback_table(rows)
    (out / "readback.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
