"""The Ray helper: which cluster ``init_ray`` joins, and the bounded queue (slots, deadline, retries)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import worldvid.device
from worldvid.parallel import bounded_queue, gpus_per_worker, init_ray, worker_device


@pytest.fixture
def fake_ray(monkeypatch):
    """``ray.init`` recording its keyword arguments, with Ray reported as not running; no cluster starts."""
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


@pytest.mark.parametrize("gpus, workers, share", [(0, 2, 0.0), (1, 1, 1.0), (1, 2, 0.5), (1, 3, 0.3333), (4, 2, 1.0)])
def test_each_worker_asks_for_an_equal_gpu_share_that_always_fits(monkeypatch, gpus, workers, share):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, **({"GPU": float(gpus)} if gpus else {})})
    assert gpus_per_worker(workers) == share and workers * share <= max(gpus, 0)


def test_workers_of_a_cuda_model_ask_for_a_gpu_share_and_run_on_the_gpu_assigned(monkeypatch):
    import ray
    import torch

    assert worker_device("cpu", 2) == (0.0, "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        worker_device("gpu", 2)
    monkeypatch.setattr(worldvid.device, "resolve_device", lambda device: torch.device("cuda"))  # as on a GPU machine
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    assert worker_device(None, 2) == worker_device("cuda:1", 2) == (0.5, "cuda")  # Ray picks the GPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    assert worker_device(None, 2) == (0.0, None)  # unset: the workers' CPUs
    with pytest.raises(ValueError, match="'cuda' asked for but the Ray cluster has no GPU share for 2 workers"):
        worker_device("cuda", 2)


def test_init_ray_starts_locally_without_an_address(fake_ray):
    init_ray(num_cpus=3)
    assert fake_ray == [dict(num_cpus=3, include_dashboard=False, log_to_driver=False)]


def test_init_ray_respects_ray_address_and_an_explicit_address_wins(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    init_ray(num_cpus=3)  # a cluster's CPUs are its own: num_cpus is not passed
    init_ray("ray://head:10001", num_cpus=3)
    assert fake_ray == [dict(address="10.0.0.1:6379", include_dashboard=False, log_to_driver=False),
                        dict(address="ray://head:10001", include_dashboard=False, log_to_driver=False)]


def test_init_ray_does_nothing_when_ray_is_running(fake_ray, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    init_ray("auto", num_cpus=3)
    assert fake_ray == []


def test_importing_the_helper_does_not_import_ray():
    code = "import sys, worldvid.parallel; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_bounded_queue_keeps_at_most_slots_in_flight(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def square(x: int) -> int:
        time.sleep(0.05)
        return x * x

    slot_of: dict[int, int] = {}  # key -> the slot running it
    most = 0
    results: dict[int, int] = {}

    def submit(slot: int, key: int):
        nonlocal most
        assert slot not in slot_of.values()  # a slot holds one call at a time
        slot_of[key] = slot
        most = max(most, len(slot_of))
        return square.remote(key)

    def on_result(key: int, value: int) -> None:
        results[key] = value
        del slot_of[key]

    bounded_queue(range(7), submit, on_result, slots=3, timeout_s=30, what="square")
    assert results == {k: k * k for k in range(7)}
    assert most == 3


def test_bounded_queue_timeout_names_the_wait(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def sleeper() -> None:
        time.sleep(60)

    refs = []
    with pytest.raises(TimeoutError, match=r"sleeper 0 did not finish within 1 s \(1 attempt\); is the Ray cluster short"):
        bounded_queue([0], lambda slot, key: refs.append(sleeper.remote()) or refs[-1], lambda k, v: None,
                      slots=1, timeout_s=1, what="sleeper")
    ray.cancel(refs[0], force=True)


def test_bounded_queue_retries_on_the_named_errors_then_gives_up(ray_session, tmp_path):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def flaky(key: int, marker: str) -> int:
        import os

        if key == 1 and not os.path.exists(marker):  # fails once
            open(marker, "w").close()
            raise ValueError("flaky")
        if key == 2:
            raise ValueError("always")
        return key

    retried: list[int] = []
    results: dict[int, int] = {}
    marker = str(tmp_path / "failed")
    bounded_queue([0, 1], lambda slot, key: flaky.remote(key, marker), results.__setitem__, slots=2, timeout_s=30,
                  what="item", retry_on=(ValueError,), max_retries=1, on_retry=retried.append)
    assert results == {0: 0, 1: 1} and len(retried) == 1
    with pytest.raises(RuntimeError, match="item 2 failed 2 times"):
        bounded_queue([2], lambda slot, key: flaky.remote(key, marker), results.__setitem__, slots=1, timeout_s=30,
                      what="item", retry_on=(ValueError,), max_retries=1)
    with pytest.raises(ValueError, match="always"):  # errors not named propagate at once
        bounded_queue([2], lambda slot, key: flaky.remote(key, marker), results.__setitem__, slots=1, timeout_s=30,
                      what="item")
