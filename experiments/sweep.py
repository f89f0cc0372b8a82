"""``worldvid sweep``: Ray Tune experiments over planner/sampler settings and over world-model sizes.

Family ``planner``: every trial evaluates one planner setting (planner x denoising steps x candidates x
horizon) with a trained model and reports success rate and seconds per decision. Family ``model``: every
trial trains a world model of one size on the same data and reports its open-loop figures.
Results go to ``OUT/results.csv`` and ``OUT/frontier.png``.

A sweep is resumable without restoring Ray Tune's state, which Tune reads back by unpickling files (a file
crafted by someone else would run code): ``OUT/sweep.json`` (family and fixed settings, written before the first
trial) says what the folder holds, and this process records each finished trial's figures as JSON in
``OUT/trials/`` as it finishes. Rerunning the same command runs only the trials without a record, in a fresh Tune
experiment (``OUT/tune`` is Tune's working folder, never read back). A rerun with other fixed settings is refused,
naming them (another grid may add points); a folder holding Tune state but no ``sweep.json`` was not made by this
package and is refused too. A trial that fails ends the sweep with one line naming it, after the others ran.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from pathlib import Path
from typing import Any

from worldvid.atomic import write_bytes_atomic, write_json_atomic
from worldvid.parallel import explain, init_ray, reworded, worker_device

EXPERIMENT = "tune"
"""Name of the Tune experiment folder inside the sweep's output folder (Tune's working state; never restored)."""

SWEEP_FILE = "sweep.json"
"""What a sweep folder holds: {"family", "fixed"}, written before its first trial."""

TRIALS = "trials"
"""Folder of the finished trials' records: one JSON {"point", "metrics"} per grid point."""

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

    from worldvid.agents.planner_config import PlannerConfig
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
    """The Tune trainable of ``family``: runs the trial of ``config['point']`` (one grid point) with the fixed
    settings; each trial holds one CPU and ``gpus`` GPUs (Ray hides GPUs from a trial that asks for none)."""
    from ray import tune

    fn = planner_trial if family == "planner" else model_trial

    def trainable(config: dict[str, Any]) -> None:
        settings = {k: v for k, v in config.items() if k != "point"}
        tune.report(fn({**settings, **config["point"]}))

    trainable.__name__ = f"{family}_trial"
    return tune.with_resources(trainable, {"cpu": 1, **({"gpu": gpus} if gpus else {})})


def point_name(point: dict[str, Any]) -> str:
    """How messages name a grid point, e.g. 'planner=cem num_steps=1 candidates=16 horizon=6'."""
    return " ".join(f"{k}={v}" for k, v in point.items())


def _record_path(out: Path, point: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]
    return out / TRIALS / f"trial_{digest}.json"


def _read_record(out: Path, point: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded metrics of ``point`` (None when it has no readable record of exactly this point)."""
    try:
        record = json.loads(_record_path(out, point).read_text())
        return record["metrics"] if record["point"] == json.loads(json.dumps(point)) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorder(out: Path, family: str):
    """A Tune callback (run in this process) that records each finished trial's figures in ``out/trials``."""
    from ray import tune

    names = _metric_names(family)

    class Recorder(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            metrics = {k: v for k, v in (trial.last_result or {}).items() if k in names}
            if len(metrics) == len(names):
                point = trial.config["point"]
                (out / TRIALS).mkdir(exist_ok=True)
                write_json_atomic(_record_path(out, point), {"point": point, "metrics": metrics})

    return Recorder()


def _trial_failure(error: Any) -> tuple[BaseException, str]:
    """(cause, one line) of a trial's failure as Tune reports it: an exception, or the text of one (its last
    line, e.g. 'ValueError: ...'), or None when the trial ended without figures."""
    if isinstance(error, BaseException):
        cause, why, _ = explain(error)
        return cause, why
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return RuntimeError(), lines[-1] if lines else "it reported no figures"


def _claim(out: Path, family: str, fixed: dict[str, Any]) -> None:
    """Check that ``out`` is new or holds a sweep of ``family`` with these ``fixed`` settings (ValueError naming
    what differs; nothing is written then), and record them there."""
    path = out / SWEEP_FILE
    if not path.is_file():
        if (out / EXPERIMENT).exists():
            raise ValueError(f"{out / EXPERIMENT} holds Ray Tune state that this package did not record (no "
                             f"{SWEEP_FILE}); worldvid never restores Tune state (Tune unpickles it): use another "
                             f"--out folder")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"family": family, "fixed": fixed}, indent=2)
        return
    try:
        saved = json.loads(path.read_text())
        there = {"family": saved["family"], **saved["fixed"]}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); use another --out folder") from None
    asked = json.loads(json.dumps({"family": family, **fixed}))
    different = sorted(k for k in there.keys() | asked.keys() if there.get(k) != asked.get(k))
    if different:
        shown = "; ".join(f"{k}: {there.get(k)!r} there, {asked.get(k)!r} asked" for k in different[:4])
        raise ValueError(f"{out} holds a sweep with other settings ({shown}); use another --out folder, or the same "
                         f"settings to resume it")


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
    _claim(out, family, fixed)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    todo = [p for p in points if _read_record(out, p) is None]
    errors: dict[str, BaseException] = {}
    if todo:
        from ray import tune

        init_ray(address, num_cpus=max_concurrent)
        gpus, device = worker_device(fixed.get("device"), max_concurrent)
        if device is not None:
            fixed = {**fixed, "device": device}  # on CUDA 'cuda': the GPU Ray assigns each trial
        tuner = tune.Tuner(
            _trainable(family, gpus), param_space={**fixed, "point": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=1,
                                      callbacks=[_recorder(out, family)]),
        )
        for result in tuner.fit():
            if result.error is not None and result.config is not None:
                errors[point_name(result.config["point"])] = result.error
    records = {point_name(p): _read_record(out, p) for p in points}
    unfinished = [name for name, metrics in records.items() if metrics is None]
    if unfinished:
        name = unfinished[0]
        cause, why = _trial_failure(errors.get(name))
        raise reworded(cause, f"sweep trial {name} failed: {why}; {len(points) - len(unfinished)} of {len(points)} "
                              f"trials finished, rerun to retry the rest")
    import pandas as pd

    table = pd.DataFrame([{**p, **records[point_name(p)]} for p in points], columns=[*grid, *_metric_names(family)])
    table = table.sort_values(by=list(grid), key=lambda col: col.astype(str), ignore_index=True)
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
