"""The Ray helper: starting or joining Ray, each worker's GPU share, and a bounded queue of remote work with
deadlines and retries.

Every parallel path (collection, plan evaluation, sweeps, bench) starts Ray through ``init_ray``, so one rule
decides where work runs: an explicit address, else the ``RAY_ADDRESS`` environment variable, else a local
instance. Ray is imported inside the functions; importing this module does not import it.
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import Any, Callable, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray, unless it is already initialized (then nothing happens).

    address: a cluster to connect to (e.g. 'auto', 'ray://head:10001'); default: the ``RAY_ADDRESS`` environment
        variable. With neither, Ray starts locally with ``num_cpus`` CPUs (None: all of this machine's); when
        connecting to a cluster ``num_cpus`` is not used, as the cluster's resources are fixed.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def gpus_per_worker(workers: int) -> float:
    """The GPUs each of ``workers`` concurrent Ray workers asks for: an equal share of the cluster's GPUs, at most
    one each, rounded down to Ray's resolution of 1e-4 so that ``workers`` shares always fit; 0.0 when the cluster
    has no GPU. Ray hides every GPU from a worker that asks for none, so a worker that runs a model on CUDA must
    ask for its share (and then sees only the GPU Ray assigned it, as 'cuda'). Ray must be running."""
    import ray

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    return min(1.0, math.floor(gpus / workers * 1e4) / 1e4)


def worker_device(device: str | None, workers: int) -> tuple[float, str | None]:
    """(GPUs each of ``workers`` concurrent Ray workers asks for, the device they run their model on) for a model
    meant for ``device`` (None: CUDA when present here, else CPU). Not CUDA: (0.0, ``device``). CUDA: an equal
    share of the cluster's GPUs (``gpus_per_worker``) and 'cuda', the GPU Ray assigns each worker, whatever
    index ``device`` named; a cluster without GPUs gives (0.0, None), the workers' CPUs, for an unset device and
    ValueError for an asked one. ValueError for a device ``resolve_device`` refuses. Ray must be running."""
    from worldvid.device import resolve_device  # here: it imports torch, which importing this module does not

    if resolve_device(device).type != "cuda":
        return 0.0, device
    gpus = gpus_per_worker(workers)
    if gpus == 0.0:
        if device is None:
            return 0.0, None
        raise ValueError(f"device {device!r} asked for but the Ray cluster has no GPU share for {workers} workers")
    return gpus, "cuda"


def bounded_queue(
    keys: Iterable[K],
    submit: Callable[[int, K], Any],
    on_result: Callable[[K, Any], None],
    *,
    slots: int,
    timeout_s: float,
    what: str,
    hint: str = "is the Ray cluster short of CPUs?",
    retry_on: tuple[type[BaseException], ...] = (),
    max_retries: int = 0,
    on_retry: Callable[[int], None] | None = None,
) -> None:
    """Run one remote call per key, at most ``slots`` in flight, handing each result to ``on_result(key, value)``.

    keys: the work, submitted in this order (hashable ids, e.g. shard or episode indices).
    submit(slot, key): starts the work of ``key`` on slot ``slot`` (0 .. slots-1, free while it runs) and returns
        its ``ray.ObjectRef``; the slot lets a caller keep one actor per slot.
    on_result: called in completion order, in this process; results must not depend on the order.
    timeout_s: longest wait for any one call to finish (and for its result); TimeoutError
        "no {what} finished within {timeout_s} s; {hint}" when nothing finishes in time.
    retry_on: errors of ``ray.get`` after which the key is resubmitted first, after ``on_retry(slot)`` (e.g. replace
        the slot's dead actor); after ``max_retries`` resubmissions RuntimeError "{what} {key} failed {n} times".
        Other errors propagate.
    """
    import ray

    queue, idle = deque(keys), list(range(slots))
    running: dict[Any, tuple[int, K]] = {}
    attempts: dict[K, int] = {}
    while queue or running:
        while queue and idle:
            slot, key = idle.pop(), queue.popleft()
            running[submit(slot, key)] = (slot, key)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout_s)
        if not ready:
            raise TimeoutError(f"no {what} finished within {timeout_s:.0f} s; {hint}")
        slot, key = running.pop(ready[0])
        try:
            value = ray.get(ready[0], timeout=timeout_s)
        except retry_on as error:
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] > max_retries:
                raise RuntimeError(f"{what} {key} failed {attempts[key]} times: {error}") from error
            if on_retry is not None:
                on_retry(slot)
            queue.appendleft(key)
        else:
            on_result(key, value)
        idle.append(slot)
