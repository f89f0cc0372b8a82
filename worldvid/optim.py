"""Shared pieces of the training loops (world model, learned goal distance): the learning-rate schedule,
the EMA of the weights, and the metrics log of a run folder (which feeds the run's tracker, ``worldvid.tracking``)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from worldvid.atomic import write_bytes_atomic
from worldvid.run_folder import RunFolder
from worldvid.tracking import NoTracker, Tracker


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


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (none when it is missing), each a dict with an int "step".

    A torn last line (what a kill in the middle of an append leaves) is dropped with a warning; any other line
    that is not a JSON object with a step raises ValueError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1].strip(b"\0 \r\t"):
        lines.pop()  # the empty tail after the last newline
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line.decode("utf-8"))
            if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
                raise ValueError("not a JSON object with an integer step")
        except (UnicodeDecodeError, ValueError) as err:
            if number == len(lines):
                warnings.warn(f"{path}: dropped a torn last line {number} (a kill while it was written)", stacklevel=2)
                break
            raise ValueError(f"{path}: line {number} is not a metrics row ({str(err).splitlines()[0][:120]}); "
                             "repair or delete the line to resume") from None
        rows.append(row)
    return rows


def _append_synced(path: Path, text: str) -> None:
    with open(path, "a", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class MetricsLog:
    """Appends metric rows to RUN/metrics.jsonl and RUN/metrics.csv, and sends them to ``tracker``
    (``worldvid.tracking``: TensorBoard, W&B; None: none).

    A kill at any moment leaves a readable prefix of rows: on start the rows up to ``resume_step`` are kept and
    both files rewritten atomically (temporary file, fsync, rename); each row is then appended, flushed and
    fsynced, before the tracker sees it. A torn last line is dropped on the next start (``read_metrics``).
    """

    def __init__(self, run: RunFolder, resume_step: int, tracker: Tracker | None = None) -> None:
        self.jsonl, self.csv = run.metrics_jsonl, run.metrics_csv
        self.rows = [r for r in read_metrics(self.jsonl) if r["step"] <= resume_step]  # later rows are redone
        self._rewrite()
        self.tracker: Tracker = NoTracker() if tracker is None else tracker

    def _rewrite(self) -> None:
        write_bytes_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows).encode())
        text = io.StringIO(newline="")
        if self.rows:
            writer = csv.DictWriter(text, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        write_bytes_atomic(self.csv, text.getvalue().encode())

    def add(self, row: dict[str, Any]) -> None:
        """Append ``row`` (a dict with an int "step" and numbers) to both files, synced to disk."""
        self.rows.append(row)
        _append_synced(self.jsonl, json.dumps(row) + "\n")
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(row))
        if len(self.rows) == 1:
            writer.writeheader()
        writer.writerow(row)
        _append_synced(self.csv, text.getvalue())
        self.tracker.scalars({k: v for k, v in row.items() if k != "step"}, row["step"])

    def close(self) -> None:
        """Close the tracker (the files are complete after every ``add``)."""
        self.tracker.close()
