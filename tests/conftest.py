"""Shared fixtures: tiny synthetic episodes, a tiny real PointReach store with the tiny training settings that
go with it (``from conftest import TINY, fast, tiny_config``), and one local Ray instance for the whole session."""

from __future__ import annotations

import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from worldvid.data.episode import Episode
from worldvid.model import WorldModelConfig
from worldvid.optim import read_metrics
from worldvid.train import TrainConfig

TINY = dict(block_channels=(8, 16), time_embed_dim=32, action_embed_dim=32, num_steps=1)
"""A world model small enough to train in seconds on the store below."""


def tiny_config() -> WorldModelConfig:
    """The TINY world model for the 16 px PointReach store (``store_dir``)."""
    return WorldModelConfig(action_dim=2, frame_size=16, env_id="worldvid/PointReach-v0", **TINY)


def fast(steps: int, **kw) -> TrainConfig:
    """A training config of ``steps`` steps for the tiny store (checkpoints every 3 steps); ``kw`` overrides."""
    return TrainConfig(**{"steps": steps, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 3, "log_every": 1,
                          "held_out_fraction": 0.2, **kw})


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
def store_dir(tmp_path_factory):
    """6 PointReach episodes at 16 px in shards of 3 (read only: tests that damage a store copy it first)."""
    from worldvid.data.collect import collect

    out = tmp_path_factory.mktemp("data") / "point16"
    collect("worldvid/PointReach-v0", 6, out, size=16, episodes_per_shard=3, progress=False)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    planning runs many small tensor ops; on a busy 2-core machine a second intra-op thread makes them ~10x
    slower (as an evaluation worker does, the tests use one thread). The previous count is restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance (2 CPUs, no dashboard) shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def guard():
    """Fail (instead of hanging the suite) when a test runs past 300 s (the slowest guarded test, a kill and resume of
    a 2-worker training run, takes 93 s alone and passed 150 s beside the other test process on a loaded host)."""
    def expire(*_):
        raise TimeoutError("the test ran past its guard: something hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def wait_for_metric_rows(metrics: Path, rows: int, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until ``metrics`` (a run's metrics.jsonl) holds ``rows`` rows, while ``process`` (the training) still
    runs: the moment to kill it mid-run. Fails when it ends first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a row being appended reads as a torn last line
            if len(read_metrics(metrics)) >= rows:
                return
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
