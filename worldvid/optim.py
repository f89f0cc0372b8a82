"""Shared pieces of the training loops (world model, learned goal distance): the learning-rate schedule,
the EMA of the weights, and the metrics log of a run folder."""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Callable

import torch

from worldvid.run_folder import RunFolder


def lr_schedule(config: Any) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over config.warmup_steps, then cosine decay to config.lr_final_fraction
    of the peak at config.steps."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.lr_final_fraction + (1 - config.lr_final_fraction) * cosine

    return factor


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter; buffers are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


class MetricsLog:
    """Appends metric rows to RUN/metrics.jsonl and RUN/metrics.csv (and TensorBoard when installed)."""

    def __init__(self, run: RunFolder, resume_step: int) -> None:
        self.jsonl, self.csv = run.metrics_jsonl, run.metrics_csv
        rows = [json.loads(line) for line in self.jsonl.read_text().splitlines()] if self.jsonl.exists() else []
        rows = [r for r in rows if r["step"] <= resume_step]  # rows after the checkpoint are redone
        self.rows = rows
        self._rewrite()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run.path / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.tb = None

    def _rewrite(self) -> None:
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        with open(self.csv, "w", newline="") as f:
            if self.rows:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
