"""``worldvid sweep``: Ray Tune experiments over planner/sampler settings and over world-model sizes.

Family ``planner``: every trial evaluates one planner setting (planner x denoising steps x candidates x
horizon) with a trained model and reports success rate and seconds per decision. Family ``model``: every
trial trains a world model of one size on the same data and reports its open-loop figures.
A sweep is resumable: rerunning the same command after an interrupt restores it (``Tuner.restore``)
and runs only the unfinished trials. Results go to ``OUT/results.csv`` and ``OUT/frontier.png``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from worldvid.atomic import write_bytes_atomic
from worldvid.parallel import init_ray, worker_device

EXPERIMENT = "tune"
"""Name of the Tune experiment folder inside the sweep's output folder."""

PLANNER_GRID: dict[str, list[Any]] = {"planner": ["cem", "mppi"], "num_steps": [1, 3], "candidates": [16, 32], "horizon": [6]}
"""The default planner grid: 2 x 2 x 2 x 1 = 8 trials."""

MODEL_GRID: dict[str, list[Any]] = {"channels": [[8, 16, 32], [16, 32, 64], [32, 64, 64]]}
"""The default model-size grid."""

FIXED_DEFAULTS: dict[str, dict[str, Any]] = {
    "planner": {"cost": "keypoint", "episodes": 10, "seed": 0},
    "model": {"steps": 1000, "seed": 0},
}
"""Defaults of the settings every trial of a family shares (``worldvid sweep`` reads them from here)."""


def planner_trial(config: dict[str, Any]) -> dict[str, Any]:
    """One planner setting evaluated over ``config['episodes']`` episodes (in this Tune worker)."""
    import torch

    from worldvid.agents.base import PlannerConfig
    from worldvid.experiments.plan_config import PlanEvalConfig
    from worldvid.experiments.plan_eval import evaluate_planner

    torch.set_num_threads(1)
    planner = PlannerConfig(candidates=config["candidates"], horizon=config["horizon"], iterations=config.get("iterations", 3),
                            elites=min(4, config["candidates"]))
    report = evaluate_planner(
        PlanEvalConfig(env_id=config["env_id"], planner=config["planner"], cost=config["cost"],
                       cost_model=config.get("cost_model"), model=config["model"],
                       episodes=config["episodes"], workers=1, seed=config["seed"], num_steps=config["num_steps"],
                       max_steps=config.get("max_steps"), planner_config=planner, device=config.get("device")),
        progress=False,
    )
    s = report.summary
    return {"success_rate": s["success_rate"], "seconds_per_decision": s["seconds_per_decision"],
            "final_distance_mean": s["final_distance_mean"], "ci_low": s["success_ci95"][0], "ci_high": s["success_ci95"][1]}


def model_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Train one model size for ``config['steps']`` steps and report its open-loop figures at step 8."""
    import tempfile

    import torch

    from worldvid.experiments.open_loop import run_open_loop_evaluation
    from worldvid.data.store import EpisodeStore
    from worldvid.model import WorldModelConfig
    from worldvid.train import TrainConfig, train

    torch.set_num_threads(1)
    spec = EpisodeStore(config["data"]).spec
    model_config = WorldModelConfig(action_dim=spec.action_dim, frame_size=spec.frame_shape[0], env_id=spec.env_id,
                                    block_channels=tuple(config["channels"]))
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(config["data"], tmp, TrainConfig(steps=config["steps"], seed=config["seed"]), model_config,
                        progress=False, device=config.get("device"))
        report = run_open_loop_evaluation(tmp, rollout_steps=8, controllability_seeds=0, print_table=False,
                                          device=config.get("device"))
    metric = "goal_object_error_px"
    model_err, copy_err = report["model"][metric][-1], report["copy_last_frame"][metric][-1]
    return {"parameters": summary["parameters"], "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
            "error_px_step8": model_err, "copy_error_px_step8": copy_err, "ratio_vs_copy": copy_err / max(model_err, 1e-6),
            "psnr_step8": report["model"]["psnr"][-1]}


def _trainable(family: str, gpus: float = 0.0):
    """The Tune trainable of ``family``; each trial holds one CPU and ``gpus`` GPUs (Ray hides GPUs from a trial
    that asks for none)."""
    from ray import tune

    fn = planner_trial if family == "planner" else model_trial

    def trainable(config: dict[str, Any]) -> None:
        tune.report(fn(config))

    trainable.__name__ = f"{family}_trial"
    return tune.with_resources(trainable, {"cpu": 1, **({"gpu": gpus} if gpus else {})})


def run_sweep(
    family: str,
    out: str | os.PathLike,
    fixed: dict[str, Any],
    grid: dict[str, list[Any]] | None = None,
    address: str | None = None,
    max_concurrent: int = 2,
) -> Any:
    """Run (or resume) a sweep; write results.csv and frontier.png into ``out``; return the results DataFrame.

    fixed: settings every trial shares (planner family: env_id, model, cost, episodes, seed; model family:
    data, steps, seed; both: optionally ``device``, where the trials run their models, None: CUDA when present,
    else CPU). grid: the values to sweep (PLANNER_GRID / MODEL_GRID by default). On CUDA the ``max_concurrent``
    trials share the cluster's GPUs equally (``worldvid.parallel.worker_device``).
    """
    from worldvid.device import resolve_device

    from ray import tune

    if family not in ("planner", "model"):
        raise ValueError(f"family must be 'planner' or 'model', got {family!r}")
    needed = {"planner": ("env_id", "model", "cost", "episodes", "seed"), "model": ("data", "steps", "seed")}[family]
    missing = [k for k in needed if k not in fixed]
    if missing:
        raise ValueError(f"the {family} sweep needs {missing}")
    for key in ("model", "data", "cost_model"):
        if fixed.get(key) is not None:
            if not Path(fixed[key]).exists():
                raise FileNotFoundError(f"{key} {fixed[key]} does not exist")
            fixed = {**fixed, key: str(Path(fixed[key]).resolve())}  # trials run in other working directories
    grid = grid or (PLANNER_GRID if family == "planner" else MODEL_GRID)
    if family == "model":  # a bad width fails here, naming it, not later inside a trial
        from worldvid.model import WorldModelConfig

        for channels in grid.get("channels", []):
            WorldModelConfig(action_dim=1, block_channels=tuple(channels))
    resolve_device(fixed.get("device"))  # ValueError before any work
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(address, num_cpus=max_concurrent)
    gpus, device = worker_device(fixed.get("device"), max_concurrent)
    if device is not None:
        fixed = {**fixed, "device": device}  # on CUDA 'cuda': the GPU Ray assigns each trial
    trainable = _trainable(family, gpus)
    path = out / EXPERIMENT
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        space = {**fixed, **{k: tune.grid_search(v) for k, v in grid.items()}}
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=1),
        )
    results = tuner.fit()
    frame = results.get_dataframe()
    columns = [c for c in frame.columns if c.startswith("config/") and c.split("/", 1)[1] in grid] + \
        [c for c in frame.columns if not c.startswith("config/") and c in _metric_names(family)]
    table = frame[columns].rename(columns=lambda c: c.split("/", 1)[-1])
    table = table.sort_values(by=list(grid), key=lambda col: col.astype(str), ignore_index=True)  # trial order varies on restore
    write_bytes_atomic(out / "results.csv", table.to_csv(index=False).encode())
    _plot(table, family, out / "frontier.png")
    print(table.to_string(index=False))
    print(f"results: {out / 'results.csv'}  plot: {out / 'frontier.png'}")
    return table


def _metric_names(family: str) -> tuple[str, ...]:
    if family == "planner":
        return ("success_rate", "ci_low", "ci_high", "seconds_per_decision", "final_distance_mean")
    return ("parameters", "train_seconds", "final_loss", "error_px_step8", "copy_error_px_step8", "ratio_vs_copy", "psnr_step8")


def _plot_planners(table: Any, plt: Any) -> Any:
    """Two panels against seconds per decision: success rate (with the Pareto frontier) and final distance.

    Colour = planner, marker = denoising steps, label = candidates x horizon; the second panel still ranks
    settings when every one of them succeeds.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x, y = table["seconds_per_decision"], table["success_rate"]
    order = sorted(range(len(x)), key=lambda i: x.iloc[i])
    frontier, best = [], -1.0
    for i in order:  # cheapest first: a point is on the frontier if nothing cheaper succeeds as often
        if y.iloc[i] > best:
            frontier.append(i)
            best = y.iloc[i]
    ax.plot(x.iloc[frontier], y.iloc[frontier], "k--", lw=1, label="frontier")
    colors = dict(zip(sorted(set(table["planner"])), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    markers = dict(zip(sorted(set(table["num_steps"])), "os^Dv<>"))
    for panel, metric in ((ax, "success_rate"), (ax2, "final_distance_mean")):
        for k, r in enumerate(table.itertuples()):
            value = getattr(r, metric)
            panel.scatter(r.seconds_per_decision, value, color=colors[r.planner], marker=markers[r.num_steps],
                          label=f"{r.planner}, {r.num_steps} denoising step(s)")
            panel.annotate(f"n{r.candidates} h{r.horizon}", (r.seconds_per_decision, value), fontsize=7,
                           xytext=(3, 4 if k % 2 else -9), textcoords="offset points")
        panel.set_xlabel("seconds per decision")
        panel.grid(alpha=0.3)
    ax.set_ylim(-0.03, 1.08)
    ax.set_ylabel("success rate")
    ax2.set_ylabel("final distance to goal (world units)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    return fig


def _plot(table: Any, family: str, path: Path) -> None:
    """Planner family: success against seconds per decision, with the Pareto frontier. Model family: error vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if family == "planner":
        fig = _plot_planners(table, plt)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        x, y = table["parameters"], table["ratio_vs_copy"]
        labels = ["-".join(map(str, c)) for c in table["channels"]]
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("copy-last-frame error / model error (step 8)")
        ax.scatter(x, y)
        for xi, yi, label in zip(x, y, labels):
            ax.annotate(label, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
