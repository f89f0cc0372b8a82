"""``worldvid bench``: throughput figures measured side by side in one run on this machine.

Each section returns a flat dict of figures; ``run_bench`` prints them as a table and writes JSON.
Sections: ``peak`` (torch matmul GFLOP/s, fp32 and bf16, at this process's thread count and with 1 and 2 threads),
``model`` (denoiser GFLOP/s and its fraction of the peak at batch 32 and 64, eager and compiled, imagined frames/s at
batch 1 and 64),
``sim`` (true-simulator frames/s), ``train`` (training samples/s), ``dream`` (Dream-v0 steps/s, 1 env and a vector
of 16), ``memory`` (peak RSS of training on 100 vs 1,000 episodes), ``plan`` (seconds per decision of each planner at
the default budget), ``floor`` (the FLOPs of one CEM decision, its floor at the matmul peak of the precision the
model runs in and its latency with 1 and 2 threads, eager and compiled) and ``eval`` (evaluation episodes/s with 1
and 2 Ray workers); ``plan`` and ``eval`` live in
``experiments.bench_plan``, ``floor`` in ``experiments.bench_floor``, where each docstring names its keys.
The sections that run a model (``DEVICE_SECTIONS``) run it on ``run_bench``'s device; ``peak``, ``sim`` and
``memory`` (host RSS) are CPU figures wherever the model runs.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from worldvid.atomic import write_json_atomic
from worldvid.device import native_bf16, resolve_device
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.model.compiled import compile_denoiser


def _best_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
                  device: torch.device | None = None, budget_s: float | None = None) -> float:
    """Fastest wall time of ``repeats`` calls after ``warmup`` calls (the least disturbed measurement); fewer (at
    least one) once the timed calls have taken ``budget_s`` seconds (e.g. bf16 on a CPU that emulates it).

    On a CUDA ``device`` each call is timed until the GPU has finished it, not only until it was queued."""
    def call() -> None:
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if budget_s is not None and sum(times) > budget_s:
            break
    return min(times)


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype`` on the CPU (2 n^3 flops), at the current torch thread count."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / _best_seconds(lambda: a @ b, repeats, budget_s=5.0) / 1e9


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads; the previous count is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def bench_peak(threads: tuple[int, ...] = (1, 2), n: int = 1024, repeats: int = 20) -> dict[str, float]:
    """Torch matmul peak, fp32 and bf16: at this process's thread count (``matmul_gflops_<dtype>``) and with each
    count of ``threads`` (``matmul_gflops_<dtype>_<T>_threads``), the ceiling the ``floor`` section divides by."""
    current = torch.get_num_threads()
    out: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for t in threads:
            with torch_threads(t):
                out[f"matmul_gflops_{name}_{t}_threads"] = matmul_peak(dtype, n, repeats)
        same = out.get(f"matmul_gflops_{name}_{current}_threads")  # measured above: not measured twice
        out[f"matmul_gflops_{name}"] = same if same is not None else matmul_peak(dtype, n, repeats)
    return out


def denoiser_flops(model: WorldModel, batch: int) -> int:
    """Flops of one denoiser call on a batch (counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    c, device = model.config, model.device
    x = torch.randn(batch, c.channels, c.frame_size, c.frame_size, device=device)
    context = torch.randn(batch, c.context, c.channels, c.frame_size, c.frame_size, device=device)
    actions = torch.zeros(batch, c.context, c.action_dim, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.denoiser(x, torch.ones(batch, device=device), context, actions)
    return counter.get_total_flops()


def bench_model(config: WorldModelConfig | None = None, batches: tuple[int, ...] = (1, 64), peak: dict[str, float] | None = None,
                device: str | torch.device | None = None, denoiser_batches: tuple[int, ...] = (32, 64),
                compiled: bool = True) -> dict[str, float]:
    """Imagined frames/s at each of ``batches`` and denoiser GFLOP/s at each of ``denoiser_batches`` (32: the
    planner's default candidates), on ``device`` (None: CUDA when present, else CPU), at this process's thread count.

    On the CPU, given ``peak`` (``bench_peak``'s figures), also the fraction of the matmul peak of the precision the
    denoiser runs in (bf16 under autocast): ``denoiser_fraction_of_peak_b<B>`` per batch, and
    ``denoiser_fraction_of_peak`` for the largest batch (the key earlier runs reported). With ``compiled``, the same
    denoiser figures of the denoiser compiled (``worldvid.model.compiled``), keys with ``compiled_`` before ``b<B>``.
    """
    config = config or WorldModelConfig(action_dim=2)
    device = resolve_device(device)
    model = WorldModel(config).to(device).eval()
    c = config
    out: dict[str, float] = {"model_parameters": float(sum(p.numel() for p in model.parameters())), "sampler_steps": float(c.num_steps)}
    for batch in batches:
        context = np.random.randint(0, 256, (batch, c.context, c.frame_size, c.frame_size, 3), dtype=np.uint8)
        actions = np.zeros((batch, c.context, c.action_dim), np.float32)
        seconds = _best_seconds(lambda: model.predict_next(context, actions), repeats=3, device=device)
        out[f"imagined_frames_per_s_b{batch}"] = batch / seconds
    precision = "bf16" if autocast_enabled(model) else "fp32"
    with_peak = bool(peak) and device.type == "cpu"  # the peak is the CPU's matmul peak
    if with_peak:
        out["denoiser_precision_is_bf16"] = float(precision == "bf16")
    flops = {batch: denoiser_flops(model, batch) for batch in denoiser_batches}  # counted eager, as compiled
    for mode in ("", "compiled_")[:1 + compiled]:
        if mode:
            compile_denoiser(model)
        for batch in denoiser_batches:
            gflops = denoiser_gflops(model, batch, flops[batch])
            out[f"denoiser_gflops_{mode}b{batch}"] = gflops
            if with_peak:
                out[f"denoiser_fraction_of_peak_{mode}b{batch}"] = gflops / peak[f"matmul_gflops_{precision}"]
    if with_peak:
        out["denoiser_fraction_of_peak"] = out[f"denoiser_fraction_of_peak_b{max(denoiser_batches)}"]
    return out


def denoiser_gflops(model: WorldModel, batch: int, flops: int | None = None) -> float:
    """Achieved GFLOP/s of one denoiser call on ``batch`` random frames, under the model's autocast, on its device
    (``flops``: the call's, when already counted by ``denoiser_flops``)."""
    c, device = model.config, model.device
    x = torch.randn(batch, c.channels, c.frame_size, c.frame_size, device=device)
    ctx = torch.randn(batch, c.context, c.channels, c.frame_size, c.frame_size, device=device)
    act = torch.zeros(batch, c.context, c.action_dim, device=device)
    sigma = torch.ones(batch, device=device)

    def call() -> None:
        with torch.inference_mode(), model.autocast_context():
            model.denoiser(x, sigma, ctx, act)

    flops = denoiser_flops(model, batch) if flops is None else flops
    return flops / _best_seconds(call, device=device) / 1e9


def autocast_enabled(model: WorldModel) -> bool:
    """Whether ``model`` runs its network under bf16 autocast here (on CPUs without native bf16 it runs fp32)."""
    return model.autocast_dtype() is not None


def bench_sim(env_id: str = "worldvid/PointReach-v0", size: int = 32, steps: int = 1000) -> dict[str, float]:
    """True-simulator frames/s (step + render) with random actions."""
    from worldvid.envs.factory import make_pixel_env

    env = make_pixel_env(env_id, size)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return {"sim_frames_per_s": steps / seconds}


def bench_train(config: WorldModelConfig | None = None, batch: int = 32, steps: int = 10,
                device: str | torch.device | None = None) -> dict[str, float]:
    """Training samples/s (forward + backward + AdamW step, bf16 autocast where ``train`` uses it) on random windows,
    on ``device`` (None: CUDA when present, else CPU)."""
    config = config or WorldModelConfig(action_dim=2)
    c = config
    device = resolve_device(device)
    model = WorldModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    context = torch.randint(0, 256, (batch, c.context, c.frame_size, c.frame_size, 3), dtype=torch.uint8, device=device)
    target = torch.randint(0, 256, (batch, c.frame_size, c.frame_size, 3), dtype=torch.uint8, device=device)
    actions = torch.zeros(batch, c.context, c.action_dim, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=native_bf16(device)):  # as train() does
            loss = model.loss(context, actions, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return {"train_samples_per_s": batch / _best_seconds(step, repeats=steps, warmup=2, device=device)}


def bench_dream(model: str | os.PathLike | None = None, num_envs: tuple[int, ...] = (1, 16), steps: int = 20,
                device: str | torch.device | None = None) -> dict[str, float]:
    """Dream-v0 env-steps/s: one env, and a vector env stepping N dreams in one batched model call.

    Uses a trained run when given, else the default 32x32 config with fresh weights (same cost per step); the
    model runs on ``device`` (None: CUDA when present, else CPU).
    """
    from worldvid.envs.dream import DreamEnv, DreamVectorEnv

    device = resolve_device(device)
    if model is None:
        model = WorldModel(WorldModelConfig(action_dim=2, env_id="worldvid/PointReach-v0"))
    out = {}
    for n in num_envs:
        env = DreamEnv(model=model, device=device) if n == 1 else DreamVectorEnv(n, model=model, device=device)
        env.reset(seed=0)
        actions = np.zeros((n, 2) if n > 1 else (2,), np.float32)
        for _ in range(3):  # warm-up
            env.step(actions)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(actions)
        out[f"dream_env_steps_per_s_{n}_envs"] = n * steps / (time.perf_counter() - start)
        env.close()
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Read from ``VmHWM`` in /proc/self/status where it exists: ``getrusage``'s ``ru_maxrss`` survives ``execve``,
    so a child started by a large parent would report the parent's peak instead of its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memory(episodes: tuple[int, ...] = (100, 1000), steps: int = 100, size: int = 32) -> dict[str, float]:
    """Peak RSS of a training process on stores of 100 and 1,000 episodes (each run in its own process)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        from worldvid.data.collect import collect

        collect("worldvid/PointReach-v0", max(episodes), data, workers=1, size=size, progress=False)
        for n in episodes:
            code = (
                "import json, sys; from experiments.bench import train_peak_rss; "
                f"print(json.dumps(train_peak_rss({str(data)!r}, {n}, {steps}, {str(Path(tmp) / f'run{n}')!r})))"
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
            out[f"train_peak_rss_mb_{n}_episodes"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def train_peak_rss(data: str, episodes: int, steps: int, run: str) -> float:
    """Train ``steps`` steps on the first ``episodes`` episodes of a store; return peak RSS in MiB."""
    from worldvid.data.dataset import FrameWindowDataset
    from worldvid.data.store import EpisodeStore

    store = EpisodeStore(data)
    dataset = FrameWindowDataset(store, episodes=store.episode_ids[:episodes])
    model = WorldModel(WorldModelConfig(action_dim=2, frame_size=store.spec.frame_shape[0]))
    opt = torch.optim.AdamW(model.parameters())
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(dataset), (32,), generator=g).tolist()
        batch = torch.utils.data.default_collate([dataset[i] for i in idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16("cpu")):
            loss = model.loss(batch["context"], batch["context_actions"], batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return peak_rss_mb()


def _bench_plan(device: str | None = None) -> dict[str, float]:
    from worldvid.experiments.bench_plan import bench_planners

    return bench_planners(device=device)


def _bench_eval(device: str | None = None) -> dict[str, float]:
    from worldvid.experiments.bench_plan import bench_eval_scaling

    return bench_eval_scaling(device=device)


def _bench_floor(device: str | None = None, peak: dict[str, float] | None = None) -> dict[str, float]:
    from worldvid.experiments.bench_floor import bench_floor

    return bench_floor(device=device, peak=peak)


SECTIONS: dict[str, Callable[..., dict[str, float]]] = {
    "peak": bench_peak, "model": bench_model, "sim": bench_sim, "train": bench_train, "dream": bench_dream,
    "memory": bench_memory, "plan": _bench_plan, "floor": _bench_floor, "eval": _bench_eval,
}

DEVICE_SECTIONS = ("model", "train", "dream", "plan", "floor", "eval")
"""The sections that run a world model, on ``run_bench``'s device."""


def run_bench(sections: list[str] | None = None, out: str | os.PathLike | None = None,
              device: str | None = None) -> dict[str, float]:
    """Run the named sections (all by default) in this process; print a table; write OUT/bench.json when
    ``out`` (a folder) is given.

    device: where the ``DEVICE_SECTIONS`` run their model (None: CUDA when present, else CPU); the figure
    ``model_on_cuda`` (1 or 0) records which.
    """
    sections = sections or list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    resolved = resolve_device(device)
    results: dict[str, float] = {"torch_threads": float(torch.get_num_threads()),
                                 "model_on_cuda": float(resolved.type == "cuda")}
    for name in sections:
        kwargs: dict[str, Any] = {"device": device} if name in DEVICE_SECTIONS else {}
        if name in ("model", "floor") and "matmul_gflops_fp32" in results:
            kwargs["peak"] = results  # measured once by the peak section
        results.update(SECTIONS[name](**kwargs))
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:{width}s}  {value:12.4g}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out) / "bench.json", results)
    return results
