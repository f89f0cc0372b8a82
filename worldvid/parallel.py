"""The Ray helper: starting or joining Ray, each worker's GPU share, and a bounded queue of remote work with
deadlines, cancellation and retries that ends every failure in one line naming the work (``WorkerError``).

Every parallel path (collection, plan evaluation, sweeps, bench) starts Ray through ``init_ray``, so one rule
decides where work runs: an explicit address, else the ``RAY_ADDRESS`` environment variable, else a local
instance. Ray is imported inside the functions; importing this module does not import it.
"""

from __future__ import annotations

import math
import os
import time
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


class WorkerError(RuntimeError):
    """Remote work (a shard, an episode, a trial) failed for good. The message is one line that names the work and
    the cause; ``key`` is the work's key.

    When the work itself raised, the error is also an instance of that exception's type (``reworded``), so a
    ``ValueError`` raised in a worker is still caught by ``except ValueError`` in the caller.
    """

    def __init__(self, message: str, key: Any = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # not the cause type's (KeyError would quote the message)
        return str(self.args[0]) if self.args else ""

    _kind: type | None = None
    """The work's own exception type this error is also an instance of (None: none)."""

    def __reduce__(self) -> tuple:  # the dual classes are made at run time: rebuild them from the cause's type
        if self._kind is None:
            return type(self), (str(self), self.key)
        return _rebuild, (self._kind, str(self), self.key)


class WorkerTimeoutError(WorkerError, TimeoutError):
    """Remote work passed its deadline on every attempt."""


_DUAL: dict[type, type] = {}


def _dual_class(kind: type | None) -> type:
    """WorkerError that is also a ``kind`` (WorkerError itself where Python cannot combine the two)."""
    if kind is None or not issubclass(kind, Exception) or issubclass(kind, WorkerError) \
            or kind.__module__.split(".")[0] == "ray":  # Ray's own errors proxy a cause the copy would lack
        return WorkerError
    if kind not in _DUAL:
        try:
            _DUAL[kind] = type(f"WorkerError({kind.__name__})", (WorkerError, kind), {"_kind": kind})
        except TypeError:  # e.g. an incompatible layout of a C-level exception
            _DUAL[kind] = WorkerError
    return _DUAL[kind]


def _rebuild(kind: type | None, message: str, key: Any) -> WorkerError:
    return _dual_class(kind)(message, key)


def one_line(text: str) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(text).split())


def reworded(cause: BaseException, message: str, key: Any = None) -> WorkerError:
    """A ``WorkerError`` saying ``message`` (made one line) that is also an instance of ``cause``'s type; raise it
    ``from cause`` to keep the original traceback for debugging."""
    return _dual_class(type(cause))(one_line(message), key)


def explain(error: BaseException) -> tuple[BaseException, str, bool]:
    """(the cause, one line saying what went wrong, whether another attempt may succeed) for an error of
    ``ray.get``, a Ray Tune trial, or work run in this process.

    An exception raised by the work itself (``RayTaskError``: its cause), or by an actor's constructor, is the
    work's own: another attempt would fail the same way. A worker process or node that died, or a lost result,
    may not recur.
    """
    import sys

    rx = sys.modules.get("ray.exceptions")  # work run in this process needs no Ray
    if rx is None:
        return error, f"{type(error).__name__}: {one_line(str(error))}", False
    while isinstance(error, rx.RayTaskError) and isinstance(error.cause, BaseException) and error.cause is not error:
        error = error.cause
    if isinstance(error, rx.RayActorError) and error.actor_init_failed:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return error, f"its worker could not start: {lines[-1] if lines else type(error).__name__}", False
    if isinstance(error, (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError,
                          rx.OutOfMemoryError, rx.LocalRayletDiedError)):
        return error, f"its worker died ({type(error).__name__})", True
    text = one_line(str(error))
    if isinstance(error, rx.RayError) and len(text) > 300:
        text = text[:300] + " ..."
    return error, f"{type(error).__name__}: {text}" if text else type(error).__name__, False


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
    cancel: Callable[[int, Any], None] | None = None,
    describe: Callable[[K], str] | None = None,
) -> None:
    """Run one remote call per key, at most ``slots`` in flight, handing each result to ``on_result(key, value)``.

    keys: the work, submitted in this order (hashable ids, e.g. shard or episode indices).
    submit(slot, key): starts the work of ``key`` on slot ``slot`` (0 .. slots-1, free while it runs) and returns
        its ``ray.ObjectRef``; the slot lets a caller keep one actor per slot.
    on_result: called in completion order, in this process; results must not depend on the order.
    timeout_s: each call's deadline, counted from its submission. A call that has not finished by then is stopped
        (``cancel``) and retried like a dead worker's.
    cancel(slot, ref): stops a call past its deadline (and every call still running when the queue ends in an
        error). Default ``ray.cancel(ref, force=True)``, which kills a task's worker process; an actor's call
        cannot be force-cancelled, so actor callers pass one that kills (``ray.kill``) the slot's actor.
    on_retry(slot): called before a key is resubmitted on ``slot`` (e.g. start a fresh actor for the slot).
    max_retries: resubmissions of one key after its worker died, its deadline passed, or it raised one of
        ``retry_on``. An exception the work raises itself is not retried (it would recur), unless in ``retry_on``.
    describe(key): how messages name a key (default "{what} {key}"), e.g. "episode 3 (seed 3)".

    Every failure ends in a ``WorkerError`` whose message is one line naming the key and the cause, raised after
    the calls still running are stopped: "{name} failed: {Type}: {message}" (also an instance of the work's own
    exception type), "{name} failed {n} times: its worker died (...)", or ``WorkerTimeoutError`` (a
    ``TimeoutError``) "{name} did not finish within {timeout_s} s (n attempts); {hint}".
    """
    import ray
    from ray.exceptions import GetTimeoutError

    name = describe or (lambda key: f"{what} {key}")
    stop = cancel or (lambda slot, ref: ray.cancel(ref, force=True))
    queue, idle = deque(keys), list(range(slots))
    running: dict[Any, tuple[int, K, float]] = {}  # ref -> (slot, key, deadline on time.monotonic)
    attempts: dict[K, int] = {}

    def retry(slot: int, key: K, error: BaseException | None, why: str = "") -> None:
        """Resubmit ``key`` first, or raise once it has had ``max_retries`` resubmissions (error None: a deadline)."""
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] > max_retries:
            n = attempts[key]
            if error is None:
                raise WorkerTimeoutError(f"{name(key)} did not finish within {timeout_s:g} s "
                                         f"({n} attempt{'s' * (n > 1)}); {hint}", key)
            cause = explain(error)[0]
            raise reworded(cause, f"{name(key)} failed {n} time{'s' * (n > 1)}: {why}", key) from error
        if on_retry is not None:
            on_retry(slot)
        queue.appendleft(key)

    try:
        while queue or running:
            while queue and idle:
                slot, key = idle.pop(), queue.popleft()
                running[submit(slot, key)] = (slot, key, time.monotonic() + timeout_s)
            soonest = min(deadline for _, _, deadline in running.values())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, soonest - time.monotonic()))
            if not ready:  # every call past its deadline is stopped and retried
                now = time.monotonic()
                for ref, (slot, key, deadline) in list(running.items()):
                    if deadline <= now:
                        del running[ref]
                        stop(slot, ref)
                        _consume([ref], 5.0)
                        idle.append(slot)
                        retry(slot, key, None)
                continue
            ref = ready[0]
            slot, key, _ = running.pop(ref)
            idle.append(slot)
            try:
                value = ray.get(ref, timeout=timeout_s)
            except GetTimeoutError:  # ready, yet its value did not arrive (e.g. from a lost node)
                stop(slot, ref)
                retry(slot, key, None)
            except retry_on as error:
                retry(slot, key, error, explain(error)[1])
            except Exception as error:  # every failure of remote work is explained, in one line, below
                cause, why, transient = explain(error)
                if transient:
                    retry(slot, key, cause, why)
                else:
                    raise reworded(cause, f"{name(key)} failed: {why}", key) from error
            else:
                on_result(key, value)
    finally:
        if running:  # stop the rest of the work; read their errors so Ray does not log them as unhandled
            for ref, (slot, _, _) in running.items():
                stop(slot, ref)
            _consume(list(running), 5.0)


def _consume(refs: list, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for stopped calls and read their outcome (a stopped call's error that is never read
    is logged by Ray as an unhandled error)."""
    import ray
    from ray.exceptions import RayError

    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            ray.get(ref, timeout=1.0)
        except RayError:  # the expected outcome of a stopped call
            pass
