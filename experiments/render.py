"""``worldvid render``: real-vs-imagined videos, and the planning-episode video ``worldvid plan --video`` writes.

Open loop: from a start frame of an episode (held-out episodes of the run's data, episodes of another store,
or fresh real episodes of the model's task), the model imagines the episode's frames under its recorded
actions. Each video shows real | imagined | |error| side by side, upscaled (nearest), with the step number;
a JSON sidecar beside it holds the per-step PSNR.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from worldvid.atomic import write_json_atomic
from worldvid.run_folder import RunFolder
from worldvid.video import error_panel, side_by_side, upscale, write_video

FRESH_SEED = 1_000_000
"""Fresh real episodes use env seeds FRESH_SEED + i: far from the small seeds collection uses."""

MIN_PANEL_PIXELS = 128
"""The default upscale factor makes each panel at least this tall."""


def default_scale(frame_size: int) -> int:
    """The smallest integer factor that makes a frame_size panel at least ``MIN_PANEL_PIXELS`` tall (>= 1)."""
    return max(1, math.ceil(MIN_PANEL_PIXELS / frame_size))


# ---------------------------------------------------------------------------- one comparison video
def comparison_video(
    start: np.ndarray,
    real: np.ndarray,
    imagined: np.ndarray,
    path: str | os.PathLike,
    scale: int | None = None,
    fps: float = 10,
    meta: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write real | imagined | |error| for one open-loop rollout, and its JSON sidecar (same name, .json).

    start: uint8 [H, W, 3], the last real context frame f[t] (shown as step 0 in both panels);
    real, imagined: uint8 [T, H, W, 3] = f[t+1..t+T] and the model's frames for them. ``meta`` is merged into
    the sidecar, which holds ``psnr`` (float [T], step j+1 at index j) and ``mean_psnr``. Returns (video, sidecar).
    """
    from worldvid.metrics import psnr

    real, imagined = np.asarray(real), np.asarray(imagined)
    if real.shape != imagined.shape or real.ndim != 4 or np.asarray(start).shape != real.shape[1:]:
        raise ValueError(f"need start [H, W, 3] and real, imagined [T, H, W, 3] of one shape, got "
                         f"{np.asarray(start).shape}, {real.shape}, {imagined.shape}")
    scale = default_scale(real.shape[1]) if scale is None else scale
    real_all = np.concatenate([np.asarray(start)[None], real])
    imag_all = np.concatenate([np.asarray(start)[None], imagined])
    frames = side_by_side(
        [upscale(real_all, scale), upscale(imag_all, scale), upscale(error_panel(real_all, imag_all), scale)],
        ["real", "imagined", "|error|"],
        steps=range(len(real_all)),
    )
    video = write_video(path, frames, fps=fps)
    scores = psnr(imagined, real)
    sidecar = video.with_suffix(".json")
    write_json_atomic(sidecar, {**(meta or {}), "video": video.name, "horizon": int(len(real)),
                                "psnr": [round(float(s), 4) for s in scores], "mean_psnr": round(float(scores.mean()), 4)})
    return video, sidecar


# ---------------------------------------------------------------------------- which episodes
class _Episodes:
    """Fresh episodes behind the one method ``worldvid.evaluate.cut_windows`` reads (``read_episode``)."""

    def __init__(self, episodes: list) -> None:
        self.episodes = episodes

    def read_episode(self, index: int):
        return self.episodes[index]


def _episode_source(run: RunFolder, data: str | os.PathLike | None, count: int,
                    model) -> tuple[Any, list[int], str]:
    """(store-like, episode indices, description) of the episodes to render."""
    from worldvid.data.store import EpisodeStore

    if data is None and run.data() is not None and Path(run.data()).is_dir():
        data = run.data()
    if data is not None:
        store = EpisodeStore(data)
        spec = store.spec
        model.check_compatible(frame_size=spec.frame_shape[0], action_dim=spec.action_dim, env_id=spec.env_id)
        held_out = run.held_out_episodes(store)
        kind = "held-out episodes of the run's data" if held_out != store.episode_ids else f"episodes of {store.root}"
        return store, held_out[:count], kind

    from worldvid.data.collect import collect_episode
    from worldvid.envs.factory import make_pixel_env
    from worldvid.data.policies import make_policy

    env_id = model.config.env_id
    if env_id is None:
        raise ValueError(f"{run.model_path}: the model names no env_id and no --data was given, so there are no episodes to render")
    env = make_pixel_env(env_id, model.config.frame_size)
    try:
        episodes = [collect_episode(env, make_policy("mixed"), FRESH_SEED + i) for i in range(count)]
    finally:
        env.close()
    return _Episodes(episodes), list(range(count)), f"fresh real episodes of {env_id}"


def render_open_loop(
    model: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    episodes: int = 4,
    rollout_steps: int = 32,
    gif: bool = False,
    scale: int | None = None,
    fps: float = 10,
    seed: int = 0,
    num_steps: int | None = None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Open-loop comparison videos for ``episodes`` episodes; returns one summary dict per video.

    model: a run folder or a model folder. data: an episode store; None uses the run's own data (its held-out
    episodes) when the run records it, else fresh real episodes of the model's task. Each rollout starts at the
    episode's first frame (context = that frame repeated, as in training) and imagines min(rollout_steps, episode
    length) steps under the recorded actions; sampler noise is seeded with ``seed``, drawn on the model's device.
    device: where the model runs (None: CUDA when present, else CPU).
    """
    import torch

    from worldvid.device import resolve_device
    from worldvid.evaluate import cut_windows

    if episodes < 1 or rollout_steps < 1:
        raise ValueError(f"episodes and rollout_steps must be >= 1, got {episodes} and {rollout_steps}")
    device = resolve_device(device)
    run = RunFolder.of(model)
    world_model = run.load_model(device=device)
    source, chosen, kind = _episode_source(run, data, episodes, world_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".gif" if gif else ".mp4"
    k = world_model.config.context
    rows = []
    for index in chosen:
        ep = source.read_episode(index)
        steps = min(rollout_steps, ep.num_steps)
        windows = cut_windows(source, [index], k, steps, starts_per_episode=1)
        generator = torch.Generator(device=world_model.device).manual_seed(seed)
        imagined = world_model.rollout(windows.context, windows.past_actions, windows.actions, generator=generator,
                                       num_steps=num_steps).cpu().numpy()
        meta = {"env_id": ep.env_id, "model": str(run.model_path), "source": kind, "episode": int(index),
                "env_seed": int(ep.seed), "start_t": 0, "noise_seed": seed,
                "num_steps": num_steps or world_model.config.num_steps}
        video, sidecar = comparison_video(windows.context[0, -1], windows.real[0], imagined[0],
                                          out / f"open_loop_ep{index:05d}{suffix}", scale=scale, fps=fps, meta=meta)
        summary = json.loads(sidecar.read_text())
        rows.append({"video": str(video), "sidecar": str(sidecar), "episode": int(index), "horizon": steps,
                     "mean_psnr": summary["mean_psnr"], "final_psnr": summary["psnr"][-1]})
    return rows


# ---------------------------------------------------------------------------- planning episodes
def planning_video(
    real_frames: np.ndarray,
    goal_frame: np.ndarray,
    imagined_futures: Sequence[np.ndarray | None] | np.ndarray,
    path: str | os.PathLike,
    scale: int | None = None,
    fps: float = 4,
    max_future_frames: int = 8,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A planning episode: real frame | goal | the planner's best imagined future, one video frame per decision.

    real_frames: uint8 [T, H, W, 3], the observation at each decision (a final observation after the last
    decision may be included: its future panel stays empty). goal_frame: uint8 [H, W, 3].
    imagined_futures: one entry per decision d (at most T), uint8 [h_d, H, W, 3] = the best plan's imagined
    frames after decision d (or None); shown as a strip of at most ``max_future_frames`` frames evenly picked
    from the h_d (the last always included). ``meta`` (JSON-able), if given, is written beside the video as a
    .json sidecar. Returns the video's path (.mp4 or .gif by suffix).
    """
    real_frames = np.asarray(real_frames)
    goal = np.asarray(goal_frame)
    if real_frames.dtype != np.uint8 or real_frames.ndim != 4 or goal.shape != real_frames.shape[1:]:
        raise ValueError(f"need real_frames uint8 [T, H, W, 3] and goal_frame [H, W, 3], got {real_frames.shape}, {goal.shape}")
    futures = list(imagined_futures)
    if len(futures) > len(real_frames):
        raise ValueError(f"{len(futures)} imagined futures for {len(real_frames)} real frames: at most one per decision")
    if max_future_frames < 1:
        raise ValueError(f"max_future_frames must be >= 1, got {max_future_frames}")
    h, w = real_frames.shape[1:3]
    scale = default_scale(h) if scale is None else scale
    shown = 1
    for f in futures:
        if f is not None:
            f = np.asarray(f)
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[1:] != real_frames.shape[1:]:
                raise ValueError(f"each imagined future must be uint8 [h, {h}, {w}, 3], got {f.dtype} {f.shape}")
            shown = max(shown, min(len(f), max_future_frames))
    gap = 2
    strip = np.zeros((len(real_frames), h * scale, shown * (w * scale + gap) - gap, 3), np.uint8)
    longest = 0
    for d, f in enumerate(futures):
        if f is None or len(f) == 0:
            continue
        f = np.asarray(f)
        longest = max(longest, len(f))
        picks = np.unique(np.linspace(0, len(f) - 1, min(len(f), shown)).round().astype(int))
        for j, p in enumerate(picks):
            x = j * (w * scale + gap)
            strip[d, :, x:x + w * scale] = upscale(f[p], scale)
    frames = side_by_side(
        [upscale(real_frames, scale), upscale(goal[None], scale), strip],
        ["real", "goal", f"imagined: best plan ({longest} steps)" if longest else "imagined: best plan"],
        steps=range(len(real_frames)),
    )
    video = write_video(path, frames, fps=fps)
    if meta is not None:
        write_json_atomic(video.with_suffix(".json"), {**meta, "video": video.name, "decisions": len(futures)})
    return video


# ---------------------------------------------------------------------------- command line
