"""Whether an episode store, a training run or a model folder is whole (``worldvid verify PATH``).

Nothing found is executed and nothing is changed:

- an episode store (it holds ``manifest.json``): ``worldvid.data.verify.check_store``, i.e. the manifest's
  schema and paths, every shard's size, sha256 and arrays against the lengths the manifest lists;
- a run folder (``train_config.json`` or ``model/``): ``train_config.json`` parses, its model folder checks as
  below, and its training state exists (it is not loaded);
- a model folder (``config.json``): the config parses to a JSON object, and the safetensors header (JSON read
  as text) parses, with every tensor's byte range inside the file and of the size its dtype and shape say.
  No tensor is loaded: the weights' own checksum is checked when a command loads them.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
"""Bytes per element of the safetensors dtypes."""
_MAX_HEADER = 100 * 1024 * 1024
"""safetensors refuses headers larger than this; so does this check, before reading one."""


@dataclass
class VerifyReport:
    """What ``verify_path`` found: the kind of folder, one line per problem (each naming its file), a summary."""

    path: Path
    kind: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: ``ok: ...`` or ``broken: ...``."""
        if self.ok:
            return f"ok: {self.kind} {self.path}" + (f": {self.checked}" if self.checked else "")
        return f"broken: {self.kind} {self.path}: {len(self.problems)} problem{'s' * (len(self.problems) != 1)}"


def _read_json_object(file: Path) -> tuple[dict | None, str | None]:
    """(the JSON object in ``file``, None) or (None, the problem)."""
    if not file.is_file():
        return None, f"{file}: missing"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        return None, f"{file}: not valid JSON ({err})"
    if not isinstance(data, dict):
        return None, f"{file}: expected a JSON object, got {type(data).__name__}"
    return data, None


def safetensors_problems(file: Path) -> tuple[list[str], int]:
    """(problems, number of tensors) of a safetensors file's header, read as JSON text; no tensor is loaded."""
    if not file.is_file():
        return [f"{file}: missing"], 0
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return [f"{file}: truncated ({size} bytes, no header)"], 0
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            return [f"{file}: truncated or not safetensors (header of {length} bytes in a file of {size})"], 0
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return [f"{file}: header is not valid JSON ({err})"], 0
    if not isinstance(header, dict):
        return [f"{file}: header is not a JSON object"], 0
    data_bytes, problems = size - 8 - length, []
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            expected = math.prod(shape) * _DTYPE_BYTES[dtype]
            fits = 0 <= begin <= end <= data_bytes
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{file}: tensor {name!r} has a malformed header entry ({err!r})")
            continue
        if not fits:
            problems.append(f"{file}: tensor {name!r} lies outside the file (bytes {begin}..{end} of {data_bytes}): "
                            "truncated")
        elif end - begin != expected:
            problems.append(f"{file}: tensor {name!r} holds {end - begin} bytes, its {dtype} {shape} needs {expected}")
    return problems, len(tensors)


def check_model_folder(folder: Path, report: VerifyReport) -> None:
    """Add the problems of a model folder (config.json + model.safetensors) to ``report``."""
    from worldvid.model.folder import CONFIG_NAME, WEIGHTS_NAME

    if not folder.is_dir():
        report.problems.append(f"{folder}: missing")
        return
    _, problem = _read_json_object(folder / CONFIG_NAME)
    report.problems += [problem] if problem else []
    problems, tensors = safetensors_problems(folder / WEIGHTS_NAME)
    report.problems += problems
    report.checked += f"{tensors} tensors in {folder / WEIGHTS_NAME}"


def verify_path(path: str | os.PathLike, full: bool = False) -> VerifyReport:
    """Check the store, run folder or model folder at ``path``; ``full``: read every byte of a store's shards.

    Raises FileNotFoundError when ``path`` does not exist, ValueError when it is none of the three.
    """
    from worldvid.data.manifest import MANIFEST
    from worldvid.data.verify import check_store

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / MANIFEST).is_file():
        store = check_store(path, full=full)
        report = VerifyReport(path, "episode store", store.lines(),
                              checked=f"{store.episodes} episodes in {store.shards} shards")
        report.notes = [f"{path / name}: not listed in the manifest (an interrupted writer's; the next collect "
                        "replaces or removes it)" for name in store.unlisted]
        return report
    from worldvid.checkpoint import TRAINING_STATE  # the run's names, from their one home (these import torch)
    from worldvid.model.folder import CONFIG_NAME
    from worldvid.run_folder import MODEL_DIR, TRAIN_CONFIG

    if (path / TRAIN_CONFIG).is_file() or (path / MODEL_DIR).is_dir():
        report = VerifyReport(path, "run folder")
        _, problem = _read_json_object(path / TRAIN_CONFIG)
        report.problems += [problem] if problem else []
        check_model_folder(path / MODEL_DIR, report)
        if not (path / TRAINING_STATE).is_file():
            report.problems.append(f"{path / TRAINING_STATE}: missing (the run cannot be resumed)")
        return report
    if (path / CONFIG_NAME).is_file():
        report = VerifyReport(path, "model folder")
        check_model_folder(path, report)
        return report
    raise ValueError(f"{path} is not an episode store ({MANIFEST}), a run folder ({TRAIN_CONFIG}, {MODEL_DIR}/) or a "
                     f"model folder ({CONFIG_NAME})")
