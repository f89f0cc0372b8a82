"""Open-loop evaluation of a world model against real frames, beside the copy-last-frame baseline,
and an action-controllability check on the true simulator (worldvid's tasks and any Gymnasium MuJoCo env)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from worldvid.data.store import EpisodeStore
from worldvid.envs.factory import make_pixel_env, sim_state_io
from worldvid.keypoints import task_has_heading, task_objects
from worldvid.metrics import heading_error, moving_mask, moving_part_error, object_position_error, psnr, ssim
from worldvid.model import WorldModel
from worldvid.windows import actions_at, frames_at, past_window


def task_colors(env_id: str) -> tuple[np.ndarray, list[str], str | None]:
    """(colors float64 [N, 3], object names, goal object) of a task (``worldvid.keypoints.task_objects``)."""
    colors, names, goal_object = task_objects(env_id)
    return np.array(colors, np.float64).reshape(-1, 3), names, goal_object


@dataclass
class Windows:
    """Open-loop test windows cut from episodes.

    context: uint8 [N, K, H, W, 3] = f[t-K+1..t]; past_actions: float32 [N, K, A] = a[t-K..t-1];
    actions: float32 [N, T, A] = a[t..t+T-1]; real: uint8 [N, T, H, W, 3] = f[t+1..t+T]
    (``worldvid.windows``: steps before an episode's start repeat its first frame and have zero actions).
    steps: int [N], the real steps each window has (None: all T); past them, ``real`` repeats the episode's last
    frame and ``actions`` are zeros, and no score counts them.
    episode: int [N], the episode each window was cut from (None: unknown; each window its own).
    """

    context: np.ndarray
    past_actions: np.ndarray
    actions: np.ndarray
    real: np.ndarray
    steps: np.ndarray | None = None
    episode: np.ndarray | None = None


def cut_windows(store: EpisodeStore, episodes: Sequence[int], context: int, horizon: int, starts_per_episode: int = 2,
                allow_short: bool = False) -> Windows:
    """Windows at ``starts_per_episode`` evenly spaced start times t of each episode (deterministic).

    Without ``allow_short`` an episode shorter than ``horizon`` raises ValueError. With it, an episode too short for
    ``starts_per_episode`` distinct full windows (fewer than ``horizon`` + ``starts_per_episode`` - 1 steps) gives
    windows starting evenly over all its steps, each as long as the episode lets it be (``Windows.steps``).
    """
    out: dict[str, list[Any]] = {"context": [], "past_actions": [], "actions": [], "real": [], "steps": [], "episode": []}
    for episode in episodes:
        ep = store.read_episode(episode)
        n = ep.num_steps
        if n >= horizon + starts_per_episode - 1 or (n >= horizon and not allow_short):
            starts = np.linspace(0, n - horizon, starts_per_episode).round().astype(int)
        elif allow_short:
            starts = np.unique(np.linspace(0, n - 1, starts_per_episode).round().astype(int))
        else:
            raise ValueError(f"episode {episode} has {n} steps, fewer than the horizon {horizon}")
        for t in map(int, starts):
            steps = min(horizon, n - t)
            frames, past = past_window(ep.frames, ep.actions, t, context)
            real, actions = frames_at(ep.frames, t + 1, steps), actions_at(ep.actions, t, steps)
            out["context"].append(frames)
            out["past_actions"].append(past)
            out["actions"].append(np.concatenate([actions, np.zeros((horizon - steps, *actions.shape[1:]), np.float32)]))
            out["real"].append(np.concatenate([real, np.repeat(real[-1:], horizon - steps, axis=0)]))
            out["steps"].append(steps)
            out["episode"].append(int(episode))
    return Windows(**{k: np.stack(v) for k, v in out.items()})


def imagine(model: WorldModel, windows: Windows, batch_size: int = 64, seed: int = 0, num_steps: int | None = None) -> np.ndarray:
    """Roll the model out on every window: uint8 [N, T, H, W, 3]."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    parts = []
    for s in range(0, len(windows.context), batch_size):
        sl = slice(s, s + batch_size)
        parts.append(model.rollout(windows.context[sl], windows.past_actions[sl], windows.actions[sl], generator=g, num_steps=num_steps).cpu().numpy())
    return np.concatenate(parts)


def frame_scores(imagined: np.ndarray, windows: Windows, colors: np.ndarray, goal_index: int | None,
                 heading: bool = False) -> dict[str, list[float]]:
    """Per-step means over the windows that reach the step: PSNR, SSIM, the moving-part error
    (``worldvid.metrics.moving_part_error``, on the mask of the real frames) and (for tasks with colours)
    object-position error in pixels; with ``heading`` also the goal object's heading error in radians
    (``goal_object_heading_error_rad``). A step no window reaches scores None."""
    reach = _reach(windows)
    mask = moving_mask(windows.context[:, -1], windows.real, windows.steps)
    scores = {"psnr": _masked_mean(psnr(imagined, windows.real), reach, axes=(0,)),
              "ssim": _masked_mean(ssim(imagined, windows.real), reach, axes=(0,)),
              "moving_part_error": moving_part_error(imagined, windows.real, mask, windows.steps)}
    if len(colors):
        err, valid = object_position_error(imagined, windows.real, colors)
        valid = valid & (reach[..., None] if valid.ndim == 3 else reach)
        scores["object_error_px"] = _masked_mean(err, valid, axes=(0, 2))
        if goal_index is not None:
            scores["goal_object_error_px"] = _masked_mean(err[..., goal_index], valid[..., goal_index], axes=(0,))
            if heading:
                turn, seen = heading_error(imagined, windows.real, tuple(colors[goal_index]))
                scores["goal_object_heading_error_rad"] = _masked_mean(turn, seen & reach, axes=(0,))
    unreached = ~reach.any(0)
    return {key: [None if gone or np.isnan(v) else float(v) for v, gone in zip(curve, unreached)]
            for key, curve in scores.items()}


TURNED_RAD = 0.05
"""A window "turned" at a step where the goal object's real heading differs from the last context frame's by more
than this (copy-last-frame's heading error there): the windows whose heading there is something to imagine."""


def heading_split(imagined: np.ndarray, windows: Windows, color: tuple[float, float, float]) -> dict[str, Any]:
    """The goal object's heading error per step, split into the windows where the real object turned by then
    (``TURNED_RAD``) and those where it did not, for the model and for copy-last-frame: a mean over all windows
    mixes the few that turn with the many that stand still.

    imagined: uint8 [N, T, H, W, 3]. Returns per-step lists (None where no window is of that kind): ``turned``
    and ``still`` (window counts), ``model_turned``, ``copy_turned``, ``model_still``, ``copy_still`` (radians).
    """
    copy = np.repeat(windows.context[:, -1:], imagined.shape[1], axis=1)
    model_err, seen = heading_error(imagined, windows.real, color)
    copy_err, _ = heading_error(copy, windows.real, color)
    valid = seen & _reach(windows)
    kinds = {"turned": valid & (copy_err > TURNED_RAD), "still": valid & (copy_err <= TURNED_RAD)}
    out: dict[str, Any] = {"turned_rad": TURNED_RAD}
    for kind, mask in kinds.items():
        count = mask.sum(0)
        out[kind] = count.tolist()
        for name, err in (("model", model_err), ("copy", copy_err)):
            means = _masked_mean(err, mask, axes=(0,))
            out[f"{name}_{kind}"] = [float(m) if c else None for m, c in zip(means, count)]
    return out


RATIO_STEPS = (8, 16)
"""Imagined steps at which ``ratio_intervals`` bootstraps the model's ratio to copy-last-frame."""


def ratio_intervals(imagined: np.ndarray, windows: Windows, colors: np.ndarray, goal_index: int, heading: bool,
                    steps: Sequence[int] = RATIO_STEPS, resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """Bootstrap intervals (``level``) of copy-last-frame's error / the model's (the ratio; > 1: the model is
    better) for the goal object's position and (with ``heading``) heading error at imagined ``steps``.

    The windows of one episode are not independent, so whole episodes are resampled (``windows.episode``), each
    resample's ratio being its summed copy error over its summed model error. imagined: uint8 [N, T, H, W, 3].
    Returns ``{"resamples", "level", "goal_object_error_px": {step: [low, high]}, ...}`` (a step no window
    reaches is left out).
    """
    copy = np.repeat(windows.context[:, -1:], imagined.shape[1], axis=1)
    errors = {"goal_object_error_px": [object_position_error(x, windows.real, colors[goal_index:goal_index + 1])
                                       for x in (imagined, copy)]}
    if heading:
        errors["goal_object_heading_error_rad"] = [heading_error(x, windows.real, tuple(colors[goal_index]))
                                                   for x in (imagined, copy)]
    episode = np.arange(len(imagined)) if windows.episode is None else windows.episode
    _, group = np.unique(episode, return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(group.max() + 1, np.full(group.max() + 1, 1 / (group.max() + 1)),
                                                    size=resamples)  # [B, E]: how often each episode is drawn
    out: dict[str, Any] = {"resamples": resamples, "level": level}
    reach = _reach(windows)
    for key, ((model_err, valid), (copy_err, _)) in errors.items():
        model_err, copy_err, valid = model_err.reshape(reach.shape), copy_err.reshape(reach.shape), valid.reshape(reach.shape)
        out[key] = {}
        for step in (s for s in steps if s <= reach.shape[1]):
            mask = valid[:, step - 1] & reach[:, step - 1]
            if not mask.any():
                continue
            sums = [np.bincount(group, np.where(mask, e[:, step - 1], 0.0), minlength=draws.shape[1])
                    for e in (model_err, copy_err)]
            ratios = (draws @ sums[1]) / np.maximum(draws @ sums[0], 1e-9)
            out[key][str(step)] = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2]).tolist()
    return out


def _reach(windows: Windows) -> np.ndarray:
    """bool [N, T]: window n has a real frame at step j."""
    n, t = windows.real.shape[:2]
    steps = np.full(n, t) if windows.steps is None else windows.steps
    return np.arange(t)[None, :] < steps[:, None]


def _masked_mean(values: np.ndarray, mask: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mean of ``values`` over ``axes`` where ``mask`` holds (0 where it holds nowhere)."""
    return (values * mask).sum(axes) / np.maximum(mask.sum(axes), 1)


def evaluate_open_loop(
    model: WorldModel,
    store: EpisodeStore,
    episodes: Sequence[int],
    horizon: int = 16,
    starts_per_episode: int = 4,
    seed: int = 0,
    num_steps: int | None = None,
) -> dict[str, Any]:
    """Imagined rollouts driven by recorded actions vs the real frames, and the copy-last-frame baseline.

    Returns per-step curves (index j = imagined step j+1) for "model" and "copy_last_frame", "reached": how
    many windows reach each step, and for a task whose goal has a heading "heading_split" (``heading_split``).
    Episodes shorter than the horizon give shorter windows (``cut_windows(allow_short=True)``); a step no window
    reaches scores None.
    """
    windows = cut_windows(store, episodes, model.config.context, horizon, starts_per_episode, allow_short=True)
    colors, names, goal_object = task_colors(store.spec.env_id)
    goal_index = names.index(goal_object) if goal_object in names else None
    heading = task_has_heading(store.spec.env_id)
    imagined = imagine(model, windows, seed=seed, num_steps=num_steps)
    copy = np.repeat(windows.context[:, -1:], horizon, axis=1)
    report = {
        "env_id": store.spec.env_id, "episodes": list(map(int, episodes)), "windows": len(windows.context), "horizon": horizon,
        "objects": names, "goal_object": goal_object, "reached": _reach(windows).sum(0).tolist(),
        "model": frame_scores(imagined, windows, colors, goal_index, heading),
        "copy_last_frame": frame_scores(copy, windows, colors, goal_index, heading),
    }
    if heading and goal_index is not None:
        report["heading_split"] = heading_split(imagined, windows, tuple(colors[goal_index]))
    if goal_index is not None:
        report["ratio_intervals"] = ratio_intervals(imagined, windows, colors, goal_index, heading, seed=seed)
    return report


def controllability(
    model: WorldModel,
    env_id: str,
    seeds: Sequence[int],
    horizon: int = 8,
    warmup: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Do imagined futures differ under different actions as the real futures do?

    For each env seed: reach a state with random actions, then from that one state play two different
    random action sequences A and B in the true simulator (``sim_state_io``) and in the model. With d(x, y)
    the distance at the last step: for a task with colours, in pixels averaged over the task's objects (the
    pusher as well as the block: random actions seldom move a block, so it alone says little); for any other
    env the colour-free moving-part error (mean |x - y| in [0, 1] over the pixels where any real frame of A or B
    differs from the last context frame: ``worldvid.metrics.moving_mask``). ``matched`` = mean d(imag_A, real_A),
    d(imag_B, real_B); ``real_divergence`` = d(real_A, real_B); ``imagined_divergence`` = d(imag_A, imag_B).
    It passes when matched < 0.5 real_divergence and imagined_divergence > 0.5 real_divergence: a model that
    ignores actions imagines A = B and fails. An env whose state cannot be saved and restored (not MuJoCo)
    returns {"skipped": one line}.
    """
    from worldvid.data.policies import CorrelatedNoisePolicy

    k = model.config.context
    warmup = k if warmup is None else warmup
    env = make_pixel_env(env_id, model.config.frame_size, **(env_kwargs or {}))
    io = sim_state_io(env)
    if io is None:
        env.close()
        return {"skipped": f"controllability skipped: {env_id} is not a MuJoCo env, so its state cannot be restored"}
    save, restore = io
    colors, _, _ = task_colors(env_id)
    rows = []
    for s in seeds:
        rng = np.random.default_rng([s, 7])
        policy = CorrelatedNoisePolicy()
        obs, _ = env.reset(seed=int(s))
        policy.reset(env, rng)
        frames, acts = [obs], []
        for _ in range(warmup):
            acts.append(policy(obs))
            obs, *_ = env.step(acts[-1])
            frames.append(obs)
        context, past = past_window(np.stack(frames), np.stack(acts), warmup, k)
        state = save()
        plans = np.stack([np.stack([policy(None) for _ in range(horizon)]) for _ in range(2)]).astype(np.float32)
        real = []
        for plan in plans:
            restore(state)
            real.append(np.stack([env.step(a)[0] for a in plan]))
        g = torch.Generator(device=model.device).manual_seed(seed + int(s))
        imag = model.rollout(context[None], past[None], plans, generator=g).cpu().numpy()
        last = np.stack([real[0][-1], real[1][-1], imag[0][-1], imag[1][-1]])
        if len(colors):
            d = lambda a, b: float(object_position_error(last[a], last[b], colors)[0].mean())  # noqa: E731
        else:
            mask = moving_mask(np.stack([context[-1]] * 2), np.stack(real)).any(0)
            d = lambda a, b: float(np.abs(last[a].astype(np.float64) - last[b]).mean(-1)[mask].sum()  # noqa: E731
                                   / max(int(mask.sum()), 1) / 255.0)
        rows.append({"matched": (d(2, 0) + d(3, 1)) / 2, "real_divergence": d(0, 1), "imagined_divergence": d(2, 3)})
    env.close()
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    mean["passed"] = bool(mean["matched"] < 0.5 * mean["real_divergence"] and mean["imagined_divergence"] > 0.5 * mean["real_divergence"])
    mean.update(seeds=len(rows), horizon=horizon, unit="px" if len(colors) else "moving-part mean |error| (0-1)")
    return mean
