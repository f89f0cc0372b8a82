"""``worldvid explain``: what a trained world model takes from its context frames and what from its actions.

On a run's held-out windows: the factorial shares of the predicted change per open-loop step
(``worldvid.explain.factorial``), pixel and action attributions of the next frame by integrated gradients and by
occlusion with their deletion curves against random deletion (``worldvid.explain.attribution``; the more
faithful one is shown), a counterfactual-action video, and one report (report.html, report.json, PNGs, GIF).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldvid.atomic import write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.device import resolve_device
from worldvid.evaluate import Windows, cut_windows
from worldvid.explain import attribution as attr
from worldvid.explain import factorial
from worldvid.explain.model_fns import model_next_frame, model_rollout
from worldvid.explain.report import plot_attributions, plot_deletion, plot_shares, write_html
from worldvid.model import WorldModel, frames_to_model, model_to_frames
from worldvid.run_folder import RunFolder
from worldvid.video import side_by_side, upscale, write_video

ACTION_SHARE_FLOOR = 0.05
"""A model is flagged when the 95% interval of its actions' share of the next frame's predicted change reaches
below this: it may be ignoring its actions (an action-conditioned model that plans must not)."""

EARLY_DELETION_POINTS = 8
"""Deletion-curve points spaced geometrically from one feature to 5% of them, added to the even grid: the
curve's area is integrated over all points (trapezoids), so where a few inputs carry the change it is resolved."""


@dataclass(frozen=True)
class ExplainConfig:
    """What ``explain_model`` measures and on how much."""

    windows: int = 100
    """Held-out windows decomposed (at least; whole episodes' worth of evenly spaced starts)."""
    horizon: int = 8
    """Open-loop steps decomposed per window."""
    action_baseline: str = "zeros"
    """A0: 'zeros' (no action) or 'mean' (the data's mean action)."""
    attribution_windows: int = 16
    """Next-frame predictions attributed and checked for faithfulness."""
    ig_steps: int = 16
    """Integrated-gradients points per prediction."""
    patch: int | None = None
    """Occlusion patch side in pixels (None: frame size / 8)."""
    deletion_points: int = 21
    """Evenly spaced points of each deletion curve (shares 0..1), besides EARLY_DELETION_POINTS up to 5%."""
    random_orders: int = 3
    """Random deletion orders averaged per prediction."""
    counterfactual_steps: int = 12
    """Imagined steps of the counterfactual-action video."""
    resamples: int = 2000
    """Bootstrap resamples of the share intervals."""
    batch: int = 32
    """Windows per batched rollout (x4 cells)."""
    seed: int = 0
    """Seeds the sampling noise, the random orders and the bootstrap."""

    def __post_init__(self) -> None:
        factorial.action_baseline(torch.zeros(1, 1, 1), self.action_baseline, torch.zeros(1))  # a bad name fails now
        for name in ("windows", "horizon", "attribution_windows", "ig_steps", "random_orders", "counterfactual_steps",
                     "resamples", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.deletion_points < 2:
            raise ValueError(f"deletion_points must be >= 2, got {self.deletion_points}")


def _model_windows(model: WorldModel, windows: Windows) -> dict[str, torch.Tensor]:
    dev = model.device
    return {
        "context": frames_to_model(torch.as_tensor(windows.context).to(dev)),
        "past": torch.as_tensor(windows.past_actions, dtype=torch.float32, device=dev),
        "actions": torch.as_tensor(windows.actions, dtype=torch.float32, device=dev),
    }


def _mean_action(store: EpisodeStore, episodes: list[int]) -> torch.Tensor:
    """The mean action over ``episodes``: float [A]."""
    return torch.as_tensor(np.concatenate([store.read_actions(e, 0, store.episode_length(e)) for e in episodes]).mean(0))


def decompose(model: WorldModel, windows: Windows, config: ExplainConfig, mean_action: torch.Tensor | None,
              progress: bool = True) -> dict[str, Any]:
    """The factorial shares over ``windows``: per step (with intervals), over all steps, each window's step-1 shares,
    and the flag. Steps past a window's real length count nowhere."""
    w = _model_windows(model, windows)
    n, t = w["actions"].shape[:2]
    c = model.config
    g = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(n, t, c.channels, c.frame_size, c.frame_size, generator=g).to(model.device)
    rollout = model_rollout(model)
    parts = []
    for s in tqdm(range(0, n, config.batch), desc="explain: decompose", unit="batch", disable=not progress):
        sl = slice(s, s + config.batch)
        ctx, past, act = w["context"][sl], w["past"][sl], w["actions"][sl]
        cells = factorial.imagine_cells(
            rollout, ctx, past, act, noise[sl], factorial.static_context(ctx),
            factorial.action_baseline(past, config.action_baseline, mean_action),
            factorial.action_baseline(act, config.action_baseline, mean_action))
        parts.append(factorial.Projections.of(cells))
    proj = factorial.Projections.concat(parts)
    if windows.steps is not None:  # steps past a window's end: zero weight everywhere
        valid = np.arange(t)[None, :] < np.asarray(windows.steps)[:, None]
        for key in (*factorial.TERMS, "change_sq"):
            setattr(proj, key, np.where(valid, getattr(proj, key), 0.0))
    per_step = [factorial.bootstrap_shares(proj, step, config.resamples, config.seed) for step in range(t)]
    overall = factorial.bootstrap_shares(proj, None, config.resamples, config.seed)
    first = per_step[0]["actions"]
    flag = None
    if not first["low"] >= ACTION_SHARE_FLOOR:
        flag = (f"the actions explain {first['share']:.1%} of the next frame's predicted change (95% interval "
                f"[{first['low']:.1%}, {first['high']:.1%}], reaching below {ACTION_SHARE_FLOOR:.0%}): this model may "
                "be ignoring its actions; check that the data's actions line up with its frames")
    return {
        "windows": int(n), "horizon": int(t), "context_baseline": "static copy of the last context frame",
        "action_baseline": config.action_baseline, "per_step": per_step, "all_steps": overall,
        "per_window_step1": {k: v.tolist() for k, v in proj.per_window(0).items()},
        "change_rms_step1": float(np.sqrt(proj.change_sq[:, 0].mean() / (c.channels * c.frame_size ** 2))),
        "flag": flag,
    }


def _attribution_inputs(model: WorldModel, windows: Windows, picks: np.ndarray, config: ExplainConfig,
                        mean_action: torch.Tensor | None) -> attr.Inputs:
    w = _model_windows(model, windows)
    ctx = w["context"][picks]
    actions = torch.cat([w["past"][picks, 1:], w["actions"][picks, :1]], dim=1)
    c = model.config
    g = torch.Generator().manual_seed(config.seed + 1)
    noise = torch.randn(len(picks), c.channels, c.frame_size, c.frame_size, generator=g).to(model.device)
    return attr.Inputs(ctx, actions, noise, factorial.static_context(ctx),
                       factorial.action_baseline(actions, config.action_baseline, mean_action))


def attribute(model: WorldModel, windows: Windows, config: ExplainConfig, mean_action: torch.Tensor | None,
              progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Attributions of the next frame on ``config.attribution_windows`` windows by integrated gradients and by
    occlusion, each checked by its deletion curve against random deletion. Returns (the JSON part, the arrays
    for the pictures)."""
    picks = np.unique(np.linspace(0, len(windows.context) - 1, config.attribution_windows).round().astype(int))
    x = _attribution_inputs(model, windows, picks, config, mean_action)
    predict = model_next_frame(model)
    patch = config.patch or max(1, model.config.frame_size // 8)
    bar = tqdm(total=4, desc="explain: attribute", unit="stage", disable=not progress)
    found = {"integrated_gradients": attr.integrated_gradients(model_next_frame(model, differentiable=True), x,
                                                                steps=config.ig_steps)}
    bar.update()
    found["occlusion"] = attr.occlusion(predict, x, patch=patch)
    bar.update()
    n_features = found["occlusion"].features().shape[1]
    # the uniform grid, plus points from one feature to 5% where few inputs can carry the whole change
    fractions = np.unique(np.concatenate([np.linspace(0, 1, config.deletion_points),
                                          np.geomspace(1 / n_features, 0.05, EARLY_DELETION_POINTS)]))
    curves = {name: attr.deletion_curve(predict, x, attr.attribution_order(a), fractions) for name, a in found.items()}
    bar.update()
    curves["random"] = np.mean([attr.deletion_curve(predict, x, attr.random_order(x.size, n_features, config.seed + r),
                                                    fractions) for r in range(config.random_orders)], axis=0)
    bar.update()
    bar.close()
    area = {name: float(attr.curve_area(curve, fractions).mean()) for name, curve in curves.items()}
    ratio = {name: area[name] / area["random"] if area["random"] > 0 else float("nan") for name in found}
    chosen = min(found, key=lambda name: ratio[name] if math.isfinite(ratio[name]) else math.inf)
    share_of = {}
    for name, a in found.items():
        totals = a.totals()
        frame_part = np.abs(totals["frames"]).sum(1)
        action_part = np.abs(totals["actions"]).reshape(len(picks), -1).sum(1)
        share_of[name] = float(np.mean(action_part / np.maximum(frame_part + action_part, 1e-12)))
    part = {
        "predictions": int(len(picks)), "window_indices": picks.tolist(), "patch": patch, "ig_steps": config.ig_steps,
        "fractions": fractions.tolist(), "mean_curve": {k: v.mean(0).tolist() for k, v in curves.items()},
        "area": area, "area_ratio": ratio, "chosen": chosen, "action_attribution_share": share_of,
        "ig_completeness": (found["integrated_gradients"].features().sum(1).cpu().numpy()).tolist(),
    }
    with torch.no_grad():
        predicted = model_to_frames(predict(x.context, x.actions, x.noise)).cpu().numpy()
    arrays = {"picks": picks, "curves": curves, "fractions": fractions, "chosen": found[chosen], "predicted": predicted}
    return part, arrays


def counterfactual_video(model: WorldModel, windows: Windows, index: int, config: ExplainConfig,
                         path: str | os.PathLike) -> dict[str, Any]:
    """One context, a sweep of constant actions, imagined side by side (the real continuation first), as a GIF.
    For 2-D actions: zero and 8 compass directions at the data's largest action size; else zero and +-1 per
    entry (up to 4 entries)."""
    a_dim = model.config.action_dim
    size = float(np.abs(windows.actions).max()) or 1.0
    if a_dim == 2:
        angles = np.arange(8) * np.pi / 4
        sweep = [np.zeros(2)] + [size * np.array([np.cos(x), np.sin(x)]) for x in angles]
        names = ["a=0"] + [f"{int(round(np.degrees(x)))} deg" for x in angles]
    else:
        sweep, names = [np.zeros(a_dim)], ["a=0"]
        for d in range(min(a_dim, 4)):
            for sign in (1, -1):
                v = np.zeros(a_dim)
                v[d] = sign * size
                sweep.append(v)
                names.append(f"a[{d}]={sign * size:+.2g}")
    steps = config.counterfactual_steps
    actions = np.stack([np.repeat(v[None], steps, 0) for v in sweep]).astype(np.float32)
    c = model.config
    noise = torch.randn(1, steps, c.channels, c.frame_size, c.frame_size,
                        generator=torch.Generator().manual_seed(config.seed + 2)).repeat(len(sweep), 1, 1, 1, 1)
    frames = model.rollout(windows.context[index:index + 1], windows.past_actions[index:index + 1], actions,
                           noise=noise.to(model.device)).cpu().numpy()
    factor = max(1, 64 // c.frame_size)  # 64 px panels: ten of them side by side stay readable and small
    real_steps = min(steps, windows.real.shape[1])
    real = np.concatenate([windows.real[index, :real_steps], np.repeat(windows.real[index, real_steps - 1:real_steps],
                                                                        steps - real_steps, 0)])
    panels = [upscale(real, factor)] + [upscale(f, factor) for f in frames]
    video = side_by_side(panels, ["real"] + names, steps=list(range(1, steps + 1)))
    write_video(path, video, fps=4)
    return {"window": int(index), "actions": [v.tolist() for v in sweep], "labels": names, "steps": steps}


def explain_model(run: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
                  config: ExplainConfig = ExplainConfig(), device: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Explain the model of ``run`` on held-out windows of ``data`` (default: the store it trained on, its held-out
    episodes; another store: all its episodes) and write OUT/report.{html,json}, PNGs and a GIF. Returns the
    report dict."""
    started = time.perf_counter()
    folder = RunFolder.of(run)
    data = data if data is not None else folder.data()
    if data is None:
        raise ValueError(f"{run} is a model folder without the run's data: pass --data STORE")
    store = EpisodeStore(data)
    model = folder.load_model_for(store, device=resolve_device(device)).requires_grad_(False)
    episodes = folder.held_out_episodes(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    starts = max(1, -(-config.windows // len(episodes)))
    windows = cut_windows(store, episodes, model.config.context, config.horizon, starts_per_episode=starts,
                          allow_short=True)
    mean_action = _mean_action(store, episodes) if config.action_baseline == "mean" else None
    stages = {"load": time.perf_counter() - started}
    decomposition = decompose(model, windows, config, mean_action, progress)
    stages["decompose"] = time.perf_counter() - started - sum(stages.values())
    attribution, arrays = attribute(model, windows, config, mean_action, progress)
    stages["attribute"] = time.perf_counter() - started - sum(stages.values())
    counterfactual = counterfactual_video(model, windows, int(arrays["picks"][0]), config, out / "counterfactual_actions.gif")
    stages["counterfactual video"] = time.perf_counter() - started - sum(stages.values())
    name = Path(run).name if Path(run).name not in ("run", "model") else str(Path(run))
    pictures = {
        "shares of the predicted change per imagined step": plot_shares(
            decomposition["per_step"], out / "shares.png", f"{name}: shares of the predicted change").name,
        "deletion curves": plot_deletion(np.asarray(arrays["fractions"]), arrays["curves"], attribution["area"],
                                         out / "deletion.png", f"{name}: deletion curves").name,
    }
    shown = arrays["picks"][: min(4, len(arrays["picks"]))]
    chosen = arrays["chosen"]
    pictures[f"attributions ({attribution['chosen']})"] = plot_attributions(
        windows.context[shown], arrays["predicted"][: len(shown)], windows.real[shown, 0],
        chosen.frames[: len(shown)].cpu().numpy(), chosen.actions[: len(shown)].cpu().numpy(),
        out / "attributions.png", f"{name}: what drives the predicted change ({attribution['chosen']})").name
    pictures["counterfactual actions (one context, constant actions)"] = "counterfactual_actions.gif"
    seconds = time.perf_counter() - started
    stages["report"] = seconds - sum(stages.values())
    report = {
        "model": str(run), "env_id": model.config.env_id, "data": str(data), "config": asdict(config),
        "decomposition": decomposition, "attribution": attribution, "counterfactual": counterfactual,
        "flag": decomposition["flag"], "seconds": seconds, "stage_seconds": stages, "device": str(model.device),
        "seconds_note": f"{seconds:.1f} s on {model.device} with {torch.get_num_threads()} torch threads ("
                        + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + ")",
    }
    write_json_atomic(out / "report.json", report)
    write_html(report, out, pictures)
    return report


def format_summary(report: dict[str, Any]) -> str:
    """The terminal lines: step-1 and all-step shares with intervals, faithfulness, the flag, where the report is."""
    d, a = report["decomposition"], report["attribution"]

    def cell(entry: dict[str, float]) -> str:
        return f"{entry['share']:+7.1%} [{entry['low']:+.1%}, {entry['high']:+.1%}]"

    lines = [f"{'share of the predicted change':<30}{'frames':>28}{'actions':>28}{'interaction':>28}"]
    for label, entry in (("next frame (step 1)", d["per_step"][0]), (f"all {d['horizon']} steps", d["all_steps"])):
        lines.append(f"{label:<30}" + "".join(f"{cell(entry[t]):>28}" for t in factorial.TERMS))
    lines.append(f"{d['windows']} held-out windows; baselines: context = {d['context_baseline']}, "
                 f"actions = {d['action_baseline']}")
    lines.append("deletion-curve area vs random: " + ", ".join(f"{k} {v:.2f}x" for k, v in a["area_ratio"].items())
                 + f" (chosen: {a['chosen']})")
    if report["flag"]:
        lines.append(f"FLAG: {report['flag']}")
    lines.append(report["seconds_note"])
    return "\n".join(lines)
