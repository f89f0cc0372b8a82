"""The permuted-action control of ``worldvid explain``: a model trained with a run's own recipe on the same frames,
but with every episode's actions taken from another episode, so its actions carry no information about its frames.

Its explanation must give the actions a share of the predicted change near 0 (and be flagged), where the real
model's is large: the check that the explanation reads the model, not the data.

``python -m worldvid.experiments.explain_control --run runs/demo/run --out runs/explain_control``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

from worldvid.data.episode import Episode
from worldvid.data.store import EpisodeStore
from worldvid.run_folder import RunFolder


def permuted_action_store(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> Path:
    """Copy the store at ``source`` to ``out`` with the actions of episode i replaced by those of episode pi(i),
    pi a random derangement (no episode keeps its own actions; seeded). A donor shorter than the episode is
    repeated, a longer one cut. Frames, rewards, flags, goals and seeds are kept. Returns ``out``.

    A finished copy is reused (the same source and seed give the same store); a partial one resumes.
    """
    src = EpisodeStore(source)
    ids = src.episode_ids
    if len(ids) < 2:
        raise ValueError(f"{source} holds {len(ids)} episode(s): permuting actions needs at least 2")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(ids))
        if not np.any(order == np.arange(len(ids))):
            break
    spec = dataclasses.replace(src.spec, policy=f"{src.spec.policy}+permuted-actions")
    per = spec.episodes_per_shard
    with EpisodeStore.create(out, spec) as dst:
        for index in range(-(-len(ids) // per)):
            chunk = list(range(index * per, min(len(ids), (index + 1) * per)))
            if dst.has_shard(index, len(chunk)):
                continue
            episodes = []
            for position in chunk:
                episode = src.read_episode(ids[position])
                donor = src.read_actions(ids[order[position]], 0, src.episode_length(ids[order[position]]))
                reps = -(-episode.num_steps // len(donor))
                actions = np.ascontiguousarray(np.tile(donor, (reps, 1))[:episode.num_steps], np.float32)
                episodes.append(dataclasses.replace(episode, actions=actions))
            dst.write_shard(index, episodes)
    src.close()
    return Path(out)


def train_control(run: str | os.PathLike, out: str | os.PathLike, seed: int = 0, device: str | None = None) -> Path:
    """Train the control beside ``run``: its data with permuted actions (``OUT/data``), then the same model and
    training configuration (``OUT/run``). Returns the control's run folder; a finished one is reused."""
    from worldvid.train import TrainConfig, train

    folder = RunFolder.of(run)
    saved = folder.saved_config()
    if saved is None or folder.data() is None:
        raise ValueError(f"{run} has no train_config.json naming its data: not a finished training run")
    out = Path(out)
    data = permuted_action_store(folder.data(), out / "data", seed=seed)
    control = out / "run"
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved["train"].items() if k in train_fields}
    config = TrainConfig(**settings)
    if (control / "training_state.pt").is_file():  # started before: finish it, or reuse it when finished
        if not _finished(control, config.steps):
            train(data, control, config, resume=True, device=device)
        return control
    train(data, control, config, model_config=folder.load_model().config, device=device)
    return control


def _finished(run: Path, steps: int) -> bool:
    from worldvid.optim import read_metrics

    rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    return bool(rows) and rows[-1].get("step") == steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the run whose recipe and data the control copies")
    parser.add_argument("--out", required=True, help="folder for the permuted data (OUT/data) and the control (OUT/run)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the permutation")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    args = parser.parse_args(argv)
    print(train_control(args.run, args.out, seed=args.seed, device=args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
