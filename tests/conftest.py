"""Shared fixtures: tiny synthetic episodes, and one local Ray instance for the whole session."""

from __future__ import annotations

import numpy as np
import pytest

from worldvid.data.episode import Episode


def make_episode(steps: int = 7, size: int = 8, action_dim: int = 2, seed: int = 0, env_id: str = "test/Fake-v0") -> Episode:
    """An episode whose frame t is filled with value 10*t + seed, and action t equals (t, -t)."""
    frames = np.stack([np.full((size, size, 3), 10 * t + seed, np.uint8) for t in range(steps + 1)])
    actions = np.stack([np.full(action_dim, t, np.float32) * np.array([1, -1] * (action_dim // 2) + [1] * (action_dim % 2), np.float32) for t in range(steps)])
    return Episode(
        frames=frames,
        actions=actions,
        rewards=-np.arange(steps, dtype=np.float32),
        terminated=np.zeros(steps, bool),
        truncated=np.eye(1, steps, steps - 1, dtype=bool)[0],
        goal_frame=np.full((size, size, 3), 255, np.uint8),
        env_id=env_id,
        seed=seed,
        policy="test",
        success=np.arange(steps) >= steps - 2,
    )


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance (2 CPUs, no dashboard) shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
