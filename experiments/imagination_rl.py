"""Train in imagination, act in reality: PPO (Stable-Baselines3) trained only inside Dream-v0, evaluated in the real
task on unseen seeds, beside the same agent trained in the real task for the same number of steps, and random.

``python -m worldvid.experiments.imagination_rl --model RUN --cost-model COST_RUN --out DIR`` (needs the ``sb3``
extra). The dream agent sees goal-conditioned observations (frame and goal frame) and is rewarded by ``-cost(imagined
frame, goal frame)`` with the learned goal distance (``worldvid train-cost``): no reward, success signal or state of
the task reaches it. Dream starts are real resets of the task followed by K random steps (``envs/dream_start.py``),
so the goals it trains on are the task's own distribution; the evaluation seeds (``eval_seed`` on) start no dream and
no episode of the model's training data. The real twin trains on the task's own reward (minus the distance to the
goal). Both use ``SmallFrameCNN`` (``worldvid.sb3``), PPO's defaults otherwise except those in the config, and
reward normalisation (``VecNormalize``). Writes DIR/results.json, DIR/results.md and DIR/<agent>.zip.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from worldvid.agents import wilson_interval
from worldvid.atomic import temporary_name, write_bytes_atomic, write_json_atomic
from worldvid.envs import DREAM_ID


AGENTS = ("dream", "real", "random")
"""The rows: PPO trained in Dream-v0, PPO trained in the real task, random actions."""


@dataclass(frozen=True)
class ImaginationRLConfig:
    """One imagination-versus-reality comparison."""

    model: str
    """World-model run folder (or model folder) that Dream-v0 imagines with."""
    cost_model: str | None = None
    """Learned goal-distance run (``worldvid train-cost``) for the dream's reward; needed by cost 'learned'."""
    cost: str = "learned"
    """Goal-image cost of the dream's reward (``worldvid.costs``)."""
    env_id: str = "worldvid/PointReach-v0"
    """The real task (evaluation, and the real twin's training)."""
    timesteps: int = 200_000
    """Environment steps each agent trains for (dream steps for the dream agent, real steps for the twin)."""
    num_envs: int = 16
    """Parallel envs per agent (one batched model call per step in the dream)."""
    n_steps: int = 64
    """PPO rollout length per env between updates."""
    batch_size: int = 256
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.95
    features_dim: int = 256
    """Width of ``SmallFrameCNN``'s features."""
    eval_episodes: int = 30
    eval_seed: int = 5000
    """Evaluation episodes use seeds eval_seed .. eval_seed + eval_episodes - 1."""
    seed: int = 0
    threads: int = 1
    """Torch threads (the model and the policy)."""
    agents: tuple[str, ...] = ("dream", "real", "random")
    """Which rows to run."""


def _ppo(config: ImaginationRLConfig, venv: Any) -> Any:
    from stable_baselines3 import PPO

    from worldvid.sb3 import small_frame_policy_kwargs

    return PPO("MultiInputPolicy", venv, n_steps=config.n_steps, batch_size=config.batch_size,
               n_epochs=config.n_epochs, learning_rate=config.learning_rate, gamma=config.gamma, seed=config.seed,
               policy_kwargs=small_frame_policy_kwargs(config.features_dim), device="cpu", verbose=0)


def _progress(total: int, label: str) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, desc=label, unit="step")

        def _on_step(self) -> bool:
            self.bar.n = self.num_timesteps
            self.bar.refresh()
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


def dream_env(config: ImaginationRLConfig) -> Any:
    """Dream-v0 (goal-conditioned, same-step autoreset) as one SB3 VecEnv with reward normalisation."""
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from worldvid.sb3 import sb3_vec_env

    vector = gym.make_vec(DREAM_ID, num_envs=config.num_envs, vectorization_mode="vector_entry_point",
                          model=config.model, cost=config.cost, cost_model=config.cost_model, num_steps=1,
                          device="cpu", goal_conditioned=True, autoreset_mode="SameStep")
    return VecNormalize(VecMonitor(sb3_vec_env(vector)), norm_obs=False, norm_reward=True, gamma=config.gamma)


def real_env(config: ImaginationRLConfig, size: int) -> Any:
    """The real task (goal-conditioned) as SB3's DummyVecEnv with reward normalisation."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = make_vec_env(config.env_id, n_envs=config.num_envs, seed=config.seed,
                        env_kwargs={"size": size, "goal_conditioned": True})
    return VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=config.gamma)


def evaluate_in_reality(act: Callable[[dict[str, np.ndarray]], np.ndarray], config: ImaginationRLConfig,
                        size: int) -> dict[str, Any]:
    """Success of ``act`` (goal-conditioned observation -> action float32 [A]) in the real task on seeds
    ``eval_seed`` .. + ``eval_episodes`` - 1; an episode succeeds at its first success (as ``worldvid plan``)."""
    env = gym.make(config.env_id, size=size, goal_conditioned=True, terminate_on_success=True)
    successes, steps = [], []
    try:
        for i in range(config.eval_episodes):
            observation, info = env.reset(seed=config.eval_seed + i)
            success, t = bool(info["is_success"]), 0
            while not success:
                observation, _, terminated, truncated, info = env.step(act(observation))
                t, success = t + 1, bool(info["is_success"])
                if terminated or truncated:
                    break
            successes.append(success)
            steps.append(t)
    finally:
        env.close()
    n, k = len(successes), int(sum(successes))
    return {"episodes": n, "successes": k, "success_rate": k / n, "success_ci95": list(wilson_interval(k, n)),
            "steps_mean": float(np.mean(steps)), "seeds": [config.eval_seed, config.eval_seed + n - 1]}


def run(config: ImaginationRLConfig, out: str | Path) -> dict[str, Any]:
    """Train and evaluate the agents of ``config.agents``; writes OUT/results.json and OUT/results.md."""
    from worldvid.run_folder import RunFolder

    unknown = [a for a in config.agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agent {unknown[0]!r}; choose from {', '.join(AGENTS)}")
    torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = RunFolder.of(config.model).load_model(device="cpu").config.frame_size
    rows: dict[str, Any] = {}
    for agent in config.agents:
        start = time.perf_counter()
        if agent == "random":
            space = gym.make(config.env_id, size=size).action_space
            space.seed(config.seed)
            train_s, result = 0.0, evaluate_in_reality(lambda _: space.sample(), config, size)
        else:
            venv = dream_env(config) if agent == "dream" else real_env(config, size)
            model = _ppo(config, venv)
            model.learn(config.timesteps, callback=_progress(config.timesteps, f"PPO in {agent}"))
            train_s = time.perf_counter() - start
            saved = temporary_name(out / f"{agent}.zip")
            with open(saved, "wb") as file:  # SB3 writes the zip in place: a temporary name, then the rename
                model.save(file)
            os.replace(saved, out / f"{agent}.zip")
            venv.close()
            result = evaluate_in_reality(lambda o: model.predict(o, deterministic=True)[0], config, size)
        rows[agent] = {**result, "train_steps": 0 if agent == "random" else config.timesteps,
                       "train_s": train_s, "wall_s": time.perf_counter() - start}
        print(f"{agent}: {result['successes']}/{result['episodes']} real successes, trained {train_s:.0f} s", flush=True)
    results = {"config": asdict(config), "rows": rows}
    write_json_atomic(out / "results.json", results, indent=1)
    write_bytes_atomic(out / "results.md", (table(results) + "\n").encode())
    return results


def table(results: dict[str, Any]) -> str:
    """Markdown table of ``run``'s results."""
    lines = ["| agent (trained in) | real success | 95% CI | steps to success or limit | train steps | train time |",
             "|---|---|---|---|---|---|"]
    for agent, r in results["rows"].items():
        low, high = r["success_ci95"]
        lines.append(f"| {agent} | {r['successes']}/{r['episodes']} | [{low:.0%}, {high:.0%}] | {r['steps_mean']:.1f} "
                     f"| {r['train_steps']:,} | {r['train_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ImaginationRLConfig(model="")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    for name in ("cost_model", "cost", "env_id", "timesteps", "num_envs", "n_steps", "batch_size", "n_epochs",
                 "learning_rate", "gamma", "features_dim", "eval_episodes", "eval_seed", "seed", "threads"):
        value = getattr(defaults, name)
        kind = type(value) if value is not None else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    parser.add_argument("--agents", nargs="+", default=list(defaults.agents))
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    args["agents"] = tuple(args["agents"])
    run(ImaginationRLConfig(**args), out)


if __name__ == "__main__":
    main()
