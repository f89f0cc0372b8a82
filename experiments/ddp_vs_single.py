"""Data-parallel training on Ray Train against the in-process path, side by side in one run (issue 17's bar).

``python -m worldvid.experiments.ddp_vs_single --data STORE --out DIR [--model-config RUN/model/config.json]
[--train-config RUN/train_config.json] [--steps 500] [--batch-size 32] [--workers 2] [--evaluate] [--no-ceiling]``
trains the same model config on the same store(s) with the same TrainConfig (so the same global batches) twice:
(a) in this process with 1 torch thread (``worldvid.train.train``), then (b) on ``--workers`` Ray Train workers
with 1 torch thread each (``worldvid.train_distributed.train_distributed``; ``--address`` for a cluster). It
reports, for each: the mean training loss over steps 400-500 (``--loss-steps``; the last fifth of a shorter run),
samples/s with start-up included (the whole call: validation, Ray and its workers starting, checkpoints) and
excluded (the training loop alone), and with ``--evaluate`` the 8-step open-loop error of each EMA model beside
copy-last-frame on the held-out episodes (``worldvid.evaluate.evaluate_open_loop``) and its ratio. Unless
``--no-ceiling``, (c) the in-process run once more at each worker's share of the batch (batch / workers): ``workers``
times its samples/s is what the workers would reach with no communication at all (the ceiling: a smaller batch
per process is itself slower per sample), and the report gives the ceiling's speed-up and the share of it DDP
reaches. Writes
DIR/ddp_vs_single.json and DIR/ddp_vs_single.md; the run folders are DIR/single, DIR/ddp and DIR/share.

Measure on an otherwise idle machine with at least workers + 1 cores: the in-process run and the workers
compete for nothing else then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from worldvid.atomic import write_bytes_atomic, write_json_atomic
from worldvid.data.store import EpisodeStore
from worldvid.model import WorldModelConfig
from worldvid.optim import read_metrics
from worldvid.train import TrainConfig, train
from worldvid.train_distributed import DistributedConfig, train_distributed

from worldvid.experiments.bench import torch_threads
from worldvid.experiments.open_loop import ERRORS, open_loop_at


def mean_loss(run: str | Path, first: int, last: int) -> float | None:
    """The mean training loss of the rows of RUN/metrics.jsonl logged at steps first+1..last, each weighted by the
    steps it averages (those since the previous row: with a log_every that divides ``first`` these are exactly steps
    first+1..last); None when no row falls in the range."""
    total, count, previous = 0.0, 0, 0
    for row in read_metrics(Path(run) / "metrics.jsonl"):
        steps = row["step"] - previous
        if first < row["step"] <= last:
            total, count = total + row["loss"] * steps, count + steps
        previous = row["step"]
    return total / count if count else None


def _measure(name: str, run: Path, call: Any, config: TrainConfig, loss_steps: tuple[int, int],
             evaluate: bool) -> dict[str, Any]:
    started = time.perf_counter()
    summary = call()
    wall = time.perf_counter() - started
    samples = (summary["steps"]) * config.batch_size
    row = {"path": name, "run": str(run), "wall_seconds": wall, "loop_seconds": summary["seconds"],
           "samples_per_s_with_startup": samples / wall, "samples_per_s_without_startup": samples / summary["seconds"],
           "mean_loss": mean_loss(run, *loss_steps), "final_loss": summary["final_loss"]}
    if evaluate:
        row["open_loop"] = open_loop_at(run)
    return row


def speedups(single: dict[str, Any], ddp: dict[str, Any], workers: int,
             share: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison of ``_measure`` rows: the relative difference of DDP's mean loss from the in-process one, the
    samples/s speed-ups with and without start-up, and with ``share`` (the in-process run at batch / workers) the
    ceiling (``workers`` x its samples/s without start-up, over the in-process run's) and DDP's share of it."""
    out: dict[str, Any] = {
        "loss_relative_difference": None if single["mean_loss"] is None or ddp["mean_loss"] is None
        else abs(ddp["mean_loss"] - single["mean_loss"]) / single["mean_loss"],
        "speedup_with_startup": ddp["samples_per_s_with_startup"] / single["samples_per_s_with_startup"],
        "speedup_without_startup": ddp["samples_per_s_without_startup"] / single["samples_per_s_without_startup"],
    }
    if share is not None:
        ceiling = workers * share["samples_per_s_without_startup"]
        out["ceiling_speedup"] = ceiling / single["samples_per_s_without_startup"]
        out["share_of_ceiling"] = ddp["samples_per_s_without_startup"] / ceiling
    return out


def compare(data: Sequence[str], out: str | Path, model_config: WorldModelConfig, train_config: TrainConfig,
            workers: int = 2, address: str | None = None, loss_steps: tuple[int, int] = (400, 500),
            evaluate: bool = False, ceiling: bool = True) -> dict[str, Any]:
    """Train ``model_config`` on ``data`` in-process at 1 torch thread, then on ``workers`` Ray Train workers at 1
    thread each, with the same ``train_config``, and (``ceiling``) in-process once more at batch / workers; returns
    (and writes to OUT/ddp_vs_single.json and .md) the rows and their comparison (``speedups``): the relative
    difference of the mean loss over steps loss_steps[0]+1..loss_steps[1] (the last fifth of the run when it is
    shorter), the samples/s speed-ups, and the ceiling."""
    out = Path(out)
    if loss_steps[1] > train_config.steps:
        loss_steps = (train_config.steps - max(1, train_config.steps // 5), train_config.steps)
    distributed = DistributedConfig(workers=workers, address=address, threads_per_worker=1)
    shared = dataclasses.replace(train_config, batch_size=train_config.batch_size // workers)
    runs, share = [], None
    with torch_threads(1):  # every run, and the evaluation of each model, at 1 thread
        single = _measure("in-process, 1 thread", out / "single", lambda: train(
            data, out / "single", train_config, model_config, progress=False), train_config, loss_steps, evaluate)
        ddp = _measure(f"Ray Train, {workers} workers x 1 thread", out / "ddp", lambda: train_distributed(
            data, out / "ddp", train_config, model_config, distributed=distributed, progress=False),
            train_config, loss_steps, evaluate)
        runs += [single, ddp]
        if ceiling:
            share = _measure(f"in-process, 1 thread, batch {shared.batch_size} (one worker's share)", out / "share",
                             lambda: train(data, out / "share", shared, model_config, progress=False), shared,
                             loss_steps, False)
            share["mean_loss"] = None  # another batch: not comparable
            runs.append(share)
    comparison = speedups(single, ddp, workers, share)
    if evaluate:
        for key in ERRORS:
            if key in single["open_loop"] and key in ddp["open_loop"]:
                a, b = single["open_loop"][key]["ratio"], ddp["open_loop"][key]["ratio"]
                comparison[f"{key}_ratio_relative_difference"] = abs(b - a) / a
    report = {"data": [str(Path(d).resolve()) for d in data], "model": model_config.to_dict(),
              "train": dataclasses.asdict(train_config), "workers": workers, "address": address,
              "loss_steps": list(loss_steps), "runs": runs, "comparison": comparison}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ddp_vs_single.json", report, indent=1)
    write_bytes_atomic(out / "ddp_vs_single.md", table(report).encode())
    return report


def table(report: dict[str, Any]) -> str:
    """A markdown table of ``compare``'s report."""
    first, last = report["loss_steps"]
    evaluate = "open_loop" in report["runs"][0]
    head = f"| path | mean loss, steps {first + 1}-{last} | samples/s (start-up incl.) | samples/s (excl.) | wall s |"
    rule = "|---|---|---|---|---|"
    if evaluate:
        head += " 8-step error model / copy (ratio) |"
        rule += "---|"
    title = f"{report['train']['steps']} steps of batch {report['train']['batch_size']} on {', '.join(report['data'])}"
    lines = [title, "", head, rule]
    for run in report["runs"]:
        loss = "-" if run["mean_loss"] is None else f"{run['mean_loss']:.4f}"
        line = (f"| {run['path']} | {loss} | {run['samples_per_s_with_startup']:.1f} | "
                f"{run['samples_per_s_without_startup']:.1f} | {run['wall_seconds']:.1f} |")
        if evaluate:
            scores = [f"{key}: {s['model']:.3f} / {s['copy_last_frame']:.3f} ({s['ratio']:.2f}x)"
                      for key in ERRORS if (s := run.get("open_loop", {}).get(key))]
            line += f" {'; '.join(scores) or '-'} |"
        lines.append(line)
    c = report["comparison"]
    loss_diff = "-" if c["loss_relative_difference"] is None else f"{c['loss_relative_difference']:.1%}"
    lines += ["", (f"mean loss differs by {loss_diff}; speed-up {c['speedup_without_startup']:.2f}x without "
                   f"start-up, {c['speedup_with_startup']:.2f}x with it")]
    if "ceiling_speedup" in c:
        lines.append(f"ceiling (workers x the samples/s of one worker's share of the batch, no communication): "
                     f"{c['ceiling_speedup']:.2f}x; DDP reaches {c['share_of_ceiling']:.0%} of it")
    lines += [f"{key.removesuffix('_ratio_relative_difference')} 8-step ratio differs by {value:.1%}"
              for key, value in c.items() if key.endswith("_ratio_relative_difference")]
    return "\n".join(lines) + "\n"


def _json_object(path: str | None, key: str | None = None) -> dict[str, Any]:
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    return dict(data[key]) if key is not None and key in data else dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="episode store folder(s)")
    parser.add_argument("--out", required=True, help="folder for the two runs and the report (must not hold them)")
    parser.add_argument("--model-config", help="a model's config.json (default: WorldModelConfig sized for the data)")
    parser.add_argument("--train-config", help="JSON of TrainConfig fields, or a run's train_config.json")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default: 500)")
    parser.add_argument("--batch-size", type=int, help="global batch (default: the train config's)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default: 2)")
    parser.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS if set, else Ray started locally)")
    parser.add_argument("--loss-steps", type=int, nargs=2, default=[400, 500], metavar=("FIRST", "LAST"),
                        help="mean loss over steps FIRST+1..LAST (default: 400 500)")
    parser.add_argument("--evaluate", action="store_true", help="also the 8-step open-loop errors of both models")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip the in-process run at one worker's share of the batch (the ceiling)")
    args = parser.parse_args(argv)
    spec = EpisodeStore(args.data[0]).spec
    if args.model_config:
        model_config = WorldModelConfig.from_dict(_json_object(args.model_config))
    else:
        model_config = WorldModelConfig(action_dim=spec.action_dim, frame_size=spec.frame_shape[0], env_id=spec.env_id)
    given = _json_object(args.train_config, "train")
    given.update(steps=args.steps, logger="none", **({"batch_size": args.batch_size} if args.batch_size else {}))
    if "data_weights" in given and given["data_weights"] is not None:
        given["data_weights"] = tuple(given["data_weights"])
    report = compare(args.data, args.out, model_config, TrainConfig(**given), args.workers, args.address,
                     tuple(args.loss_steps), args.evaluate, args.ceiling)
    print(table(report), end="")
    print(f"report: {Path(args.out) / 'ddp_vs_single.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
