"""The model card of a checkpoint folder: README.md with YAML metadata (``library_name: worldvid``, tags, the config,
the training data and metrics when known), written by every save (``worldvid.model.pretrained.save_folder``). Its
facts come from the run folder the model is saved into (``worldvid.run_files`` names its files), or travel with a
loaded model to its next save while its weights are the same (their SHA-256 is in the card).

PyYAML (installed with huggingface_hub) is imported where it is used.
"""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from worldvid.atomic import write_bytes_atomic
from worldvid.model.folder import WEIGHTS_NAME, class_name_of, folder_to_read, read_folder, state_checksum
from worldvid.run_files import METRICS_JSONL, MODEL_DIR, TRAIN_CONFIG
from worldvid.version import __version__

if TYPE_CHECKING:
    import torch

CARD_NAME = "README.md"
LIBRARY_NAME = "worldvid"
CARD_MARKER = "<!-- worldvid model card: rewritten by every save_pretrained; delete this line to keep your edits -->"
EVAL_JSON = "eval.json"
KINDS = {"WorldModel": ("world model", ["world-model", "video-diffusion", "action-conditioned"]),
         "GoalDistance": ("goal distance", ["goal-conditioned", "learned-distance"])}
"""Class name -> (what a card calls it, its tags)."""
_TAGS = ["gymnasium", "mujoco", "reinforcement-learning"]
_PROVENANCE: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, Any]]" = weakref.WeakKeyDictionary()
"""A loaded model -> its card's facts (training, metrics) and the SHA-256 of the weights they describe."""


def card_is_ours(card: str | os.PathLike) -> bool:
    """Whether the README.md at ``card`` is one worldvid wrote (a save may rewrite it), not the user's."""
    try:
        return CARD_MARKER in Path(card).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def card_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The YAML metadata of ``folder``'s README.md ({} when it has none, or no card)."""
    import yaml

    try:
        text = (Path(folder) / CARD_NAME).read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        return {}
    try:
        data = yaml.safe_load(text[4:text.index("\n---\n", 3)])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def model_card(model: "torch.nn.Module", destination: str | os.PathLike, checksum: str,
               repo_id: str | None = None) -> str:
    """The README.md for ``model`` saved into ``destination`` with weights of SHA-256 ``checksum``.

    Training data and metrics: from the run folder when ``destination`` is one's model/, else those the model
    was loaded with (``remember_provenance``) while its weights are the same, else none."""
    facts = run_provenance(Path(destination))
    carried = _PROVENANCE.get(model, {})
    if not facts and carried.get("weights_sha256") == checksum:
        facts = {key: carried[key] for key in ("training", "metrics") if key in carried}
    return render_card(type(model).__name__, model.config.to_dict(), checksum, facts, repo_id)


def render_card(class_name: str, config: Mapping[str, Any], checksum: str, facts: Mapping[str, Any],
                repo_id: str | None = None) -> str:
    """Model card text: YAML metadata (library_name, tags, a ``worldvid`` block with the class, config, weights
    SHA-256, and ``facts``: training, metrics) then Markdown."""
    import yaml

    kind, tags = KINDS.get(class_name, (class_name, []))
    env_id = config.get("env_id") or ", ".join(config.get("tasks") or ()) or None  # a multi-task model: its tasks
    block = {"class": class_name, "version": __version__, "env_id": config.get("env_id"), "weights_sha256": checksum,
             "config": dict(config), **{k: facts[k] for k in ("training", "metrics") if facts.get(k)}}
    meta = {"library_name": LIBRARY_NAME, "tags": [LIBRARY_NAME, *tags, *_TAGS], LIBRARY_NAME: block}
    front = yaml.safe_dump(meta, sort_keys=False, default_flow_style=None, allow_unicode=True, width=110)
    source = repo_id or "path/to/this/folder"
    if class_name == "GoalDistance":
        about = (f"A goal-reaching distance learned from video of `{env_id or 'a task'}`: `distance(frames, goal)` "
                 "estimates how many steps separate a frame from a goal frame (uint8 RGB).")
        usage = ["from worldvid.goal_distance import GoalDistance", "",
                 f'model = GoalDistance.from_pretrained("{source}")',
                 "steps = model.distance(frames, goal)  # uint8 [..., H, W, 3], [H, W, 3] -> float32 [...]"]
    else:
        about = (f"An action-conditioned video diffusion world model of `{env_id or 'a task'}`: it imagines the next "
                 f"frames ({config.get('frame_size')} px) from the last {config.get('context')} frames and actions.")
        usage = ["from worldvid.model import WorldModel", "", f'model = WorldModel.from_pretrained("{source}")',
                 "frames = model.rollout(context_frames, past_actions, actions)  # uint8 [B, T, H, W, C]"]
    training = facts.get("training") or {}
    lines = ["---", front.rstrip("\n"), "---", CARD_MARKER, "", f"# {env_id or 'worldvid'} {kind} (worldvid)", "",
             about, "", "## Usage", "", "```python", *usage, "```", "", "## Training data", ""]
    if training:
        stores = ", ".join(map(str, training.get("data", []))) or "unknown"
        held_out = training.get("held_out_episodes", 0)
        lines += [f"- episode stores: {stores} (env `{env_id}`), {held_out} episodes held out"]
        lines += [f"- fine-tuned from: {training['init_from']}"] if training.get("init_from") else []
    else:
        lines += ["Unknown: this checkpoint was not saved into a training run folder."]
    lines += ["", "## Metrics", ""]
    rows = [(f"{group}.{name}", value) for group, values in (facts.get("metrics") or {}).items()
            for name, value in values.items()]
    table = ["| metric | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows]]
    lines += table if rows else ["None recorded yet."]
    lines += ["", "## Config", "", "| field | value |", "|---|---|",
              *[f"| {k} | {json.dumps(v)} |" for k, v in config.items()], "",
              f"`{WEIGHTS_NAME}` (safetensors) carries the SHA-256 `{checksum}` of its tensors, checked on every "
              "load.", ""]
    return "\n".join(lines)


def run_provenance(folder: Path, evaluated_since_ns: int | None = None) -> dict[str, Any]:
    """Training data and metrics of the run whose model/ is ``folder`` ({} when it is not one): the stores it
    trained on (by folder name), its last metrics row, and its eval.json when written at or after
    ``evaluated_since_ns`` (the weights' mtime: an older report evaluated older weights)."""
    if folder.name != MODEL_DIR:
        return {}
    run = folder.parent
    try:
        saved = json.loads((run / TRAIN_CONFIG).read_text(encoding="utf-8"))
        stores = saved.get("stores") or [{"data": saved["data"], "held_out_episodes": saved["held_out_episodes"]}]
        training = {"data": [Path(s["data"]).name for s in stores],
                    "held_out_episodes": sum(len(s["held_out_episodes"]) for s in stores),
                    "config": dict(saved.get("train") or {})}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no run (or a torn record): a card without them, never a failed save
    if saved.get("init_from"):
        training["init_from"] = Path(saved["init_from"]).name
    metrics = {"train": _last_row(run / METRICS_JSONL)}
    if evaluated_since_ns is not None:
        metrics["open_loop"] = _open_loop(run / EVAL_JSON, evaluated_since_ns)
    return {"training": training, "metrics": {k: v for k, v in metrics.items() if v}}


def _last_row(path: Path) -> dict[str, Any]:
    """The numbers of the last whole row of a metrics.jsonl ({} when none); read from the end of the file."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - 65536)
            f.seek(start)
            lines = f.read().split(b"\n")[1 if start else 0:]  # from the middle of the file: its first line is cut
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            return {k: _rounded(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {}


def _open_loop(path: Path, since_ns: int) -> dict[str, Any]:
    """Headline numbers of an open-loop eval.json (first and last imagined step of each curve), {} when it is
    missing, unreadable or older than ``since_ns``."""
    try:
        if path.stat().st_mtime_ns < since_ns:
            return {}
        report = json.loads(path.read_text(encoding="utf-8"))
        out: dict[str, Any] = {"episodes": len(report.get("episodes", [])), "horizon": report.get("horizon")}
        for section in ("model", "copy_last_frame"):
            for name, curve in (report.get(section) or {}).items():
                if isinstance(curve, list) and curve and all(isinstance(v, (int, float)) for v in curve):
                    out[f"{section}.{name}@1"] = _rounded(curve[0])
                    out[f"{section}.{name}@{len(curve)}"] = _rounded(curve[-1])
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
    return out


def _rounded(value: float) -> float:
    return value if isinstance(value, int) else float(f"{value:.6g}")


def remember_provenance(model: "torch.nn.Module", folder: str | os.PathLike) -> None:
    """Let ``model``, just loaded from ``folder``, carry its card's facts to its next save while its weights stay
    the same: from ``folder``'s run folder when it lies in one (with an eval.json newer than the weights), else from
    ``folder``'s card when that describes these weights."""
    from safetensors import safe_open

    folder = Path(folder)
    folder = folder_to_read(folder) or folder
    try:
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt", device="cpu") as f:
            checksum = (f.metadata() or {}).get("worldvid_sha256")
        since = (folder / WEIGHTS_NAME).stat().st_mtime_ns
    except OSError:
        return
    facts = run_provenance(folder, evaluated_since_ns=since) if folder.name == MODEL_DIR else {}
    if not facts:
        block = card_metadata(folder).get(LIBRARY_NAME)
        if isinstance(block, dict) and block.get("weights_sha256") == checksum:
            facts = {key: block[key] for key in ("training", "metrics") if key in block}
    if checksum is not None:
        _PROVENANCE[model] = {"weights_sha256": checksum, **facts}


def write_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Rewrite the card of a saved folder from its config, weights and run folder (e.g. after ``worldvid eval``
    wrote eval.json beside it); a card the user wrote (without ``CARD_MARKER``) is left alone. Returns its path."""
    folder = Path(folder)
    card = folder / CARD_NAME
    if card.is_file() and not card_is_ours(card):
        return card
    data, state = read_folder(folder, kind="checkpoint")
    checksum = state_checksum(state)
    facts = run_provenance(folder, evaluated_since_ns=(folder / WEIGHTS_NAME).stat().st_mtime_ns)
    config = {k: v for k, v in data.items() if not k.startswith("_")}
    text = render_card(class_name_of(data) or "WorldModel", config, checksum, facts, repo_id)
    return write_bytes_atomic(card, text.encode())
