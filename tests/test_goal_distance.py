"""The learned goal distance: it learns step distances on a toy, resumes bit-identically, reads only frames and
their order, refuses the wrong task or frame size, and plans end to end through ``worldvid plan``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from worldvid.costs import LearnedCost, make_cost
from worldvid.data.episode import Episode
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.experiments.cost_diagnostics import spearman
from worldvid.goal_distance import GoalDistance, GoalDistanceConfig, GoalDistanceTrainConfig, train_goal_distance

S = 16
TOY = "worldvid/PointReach-v0"
SMALL = GoalDistanceConfig(frame_size=S, env_id=TOY, widths=(8, 16, 16), hidden=32, embed_dim=8)
METRIC = GoalDistanceConfig(frame_size=S, env_id=TOY, widths=(8, 16, 16), hidden=32, embed_dim=8, head="metric")


def dot_frame(x: int) -> np.ndarray:
    """A 16x16 frame with a 2x2 white dot at column x (0..14), row 7: the toy's state is x."""
    frame = np.zeros((S, S, 3), np.uint8)
    frame[7:9, x:x + 2] = 255
    return frame


def toy_store(root, episodes: int = 12, steps: int = 40, scramble: bool = False) -> EpisodeStore:
    """Walks of the dot, one column per step, that keep their direction 9 times in 10 and bounce off the edges:
    the true step distance between x and y is |x - y|."""
    rng = np.random.default_rng(0)
    spec = StoreSpec(env_id=TOY, frame_shape=(S, S, 3), action_dim=1, policy="scrambled" if scramble else "walk",
                     seed=999 if scramble else 0, episodes_per_shard=episodes)
    store = EpisodeStore.create(root, spec)
    made, other = [], np.random.default_rng(1)
    for i in range(episodes):
        xs, direction = [int(rng.integers(0, 15))], int(rng.choice([-1, 1]))
        for _ in range(steps):
            if rng.random() < 0.1 or not 0 <= xs[-1] + direction <= 14:
                direction = -direction
            xs.append(xs[-1] + direction)
        frames = np.stack([dot_frame(x) for x in xs])
        actions = np.diff(np.array(xs, np.float32))[:, None]
        noise = other if scramble else np.random.default_rng(2)
        made.append(Episode(frames=frames, actions=actions.astype(np.float32),
                            rewards=noise.normal(size=steps).astype(np.float32),
                            terminated=noise.random(steps) < 0.5, truncated=noise.random(steps) < 0.5,
                            goal_frame=noise.integers(0, 255, (S, S, 3), dtype=np.uint8), env_id=TOY,
                            seed=spec.seed + i, policy=spec.policy,
                            success=noise.random(steps) < 0.5))
    store.write_shard(0, made)
    return store


def fast(steps: int, **kw) -> GoalDistanceTrainConfig:
    return GoalDistanceTrainConfig(steps=steps, batch_size=64, warmup_steps=10, log_every=5, checkpoint_every=5,
                                   lr=3e-3, max_distance=30.0, **kw)


@pytest.mark.parametrize("recipe", ["temporal", "temporal-log", "qrl"])
def test_learned_distance_is_monotone_in_the_true_step_distance(tmp_path, recipe):
    torch.set_num_threads(1)
    store = toy_store(tmp_path / "toy", episodes=16, steps=60)
    config = fast(400, objective=recipe) if recipe == "qrl" else fast(
        2000, objective="temporal", gap_power=1.0, error_scale="log" if recipe.endswith("log") else "steps")
    train_goal_distance(store.root, tmp_path / "run", config, METRIC if recipe == "qrl" else SMALL, progress=False)
    model = GoalDistance.from_pretrained(tmp_path / "run")
    frames = np.stack([dot_frame(x) for x in range(15)])
    with torch.inference_mode():
        d = model.distance(frames[:, None], frames[None]).numpy()  # [15, 15]
    true = np.abs(np.arange(15)[:, None] - np.arange(15)[None])
    mean_by_gap = [d[true == k].mean() for k in range(15)]
    # 'temporal' regresses the steps the walks took and is capped at max_distance, so it is checked over the
    # gaps the capped targets resolve; 'qrl' learns shortest paths, monotone over every gap
    covered = 15 if recipe == "qrl" else 9
    assert all(b > a for a, b in zip(mean_by_gap[:covered], mean_by_gap[1:covered])), np.round(mean_by_gap, 2)
    near = true < covered  # for each goal y (column), d(x, y) must rank the frames x by their distance to y
    per_goal = [spearman(d[near[:, y], y], true[near[:, y], y]) for y in range(15)]
    assert np.mean(per_goal) > 0.9, np.round(per_goal, 2)
    if recipe == "qrl":  # shortest paths, in units of steps
        assert d.diagonal().max() < 0.5 and abs(mean_by_gap[1] - 1.0) < 0.6


def one_way_store(root, episodes: int = 16) -> EpisodeStore:
    """Walks of the dot that only ever move right, one column per step, from a column in 0..3 to 14: no episode
    goes from x to a column left of it (like a block no episode pushes back from a wall)."""
    rng = np.random.default_rng(0)
    spec = StoreSpec(env_id=TOY, frame_shape=(S, S, 3), action_dim=1, policy="right", seed=0,
                     episodes_per_shard=episodes)
    store, made = EpisodeStore.create(root, spec), []
    for i in range(episodes):
        xs = np.arange(int(rng.integers(0, 4)), 15)
        steps = len(xs) - 1
        made.append(Episode(frames=np.stack([dot_frame(x) for x in xs]), actions=np.ones((steps, 1), np.float32),
                            rewards=np.zeros(steps, np.float32), terminated=np.zeros(steps, bool),
                            truncated=np.zeros(steps, bool), goal_frame=dot_frame(14), env_id=TOY, seed=i,
                            policy="right", success=np.zeros(steps, bool)))
    store.write_shard(0, made)
    return store


def test_random_pairs_lift_the_distance_to_states_no_episode_leaves(tmp_path):
    torch.set_num_threads(1)
    store = one_way_store(tmp_path / "toy")
    frames = np.stack([dot_frame(x) for x in range(15)])
    gap = np.arange(15)[None] - np.arange(15)[:, None]  # goal column minus frame column
    means = {}
    for far_weight in (0.0, 0.01):
        run = tmp_path / f"run{far_weight}"
        train_goal_distance(store.root, run, fast(1000, far_weight=far_weight), SMALL, progress=False)
        with torch.inference_mode():
            d = GoalDistance.from_pretrained(run).distance(frames[:, None], frames[None]).numpy()  # [15, 15]
        means[far_weight] = (np.array([d[gap == k].mean() for k in range(12)]),  # goals ahead: k steps
                             np.array([d[gap == -k].mean() for k in range(1, 12)]))  # goals behind: unreachable
    ahead, behind = means[0.0]
    assert behind.max() < 1.0, np.round(behind, 1)  # without the push a goal behind reads as reached
    ahead, behind = means[0.01]
    assert np.all(np.diff(ahead) > 0), np.round(ahead, 1)  # the steps ahead are still counted in order
    assert behind.min() > ahead.max(), (np.round(ahead, 1), np.round(behind, 1))


def test_pixels_are_standardised_by_the_training_frames_and_older_distances_still_load(tmp_path):
    model = GoalDistance(SMALL)
    frames = torch.from_numpy(np.stack([dot_frame(x) for x in range(15)]))
    model.fit_pixel_statistics(frames)
    background, dot_rows = model.pixel_mean[:, 0, 0], model.pixel_mean[:, 7, 5]
    assert torch.allclose(background, torch.full((3,), -1.0)) and bool((dot_rows > -1.0).all())
    assert float(model.pixel_scale.min()) == pytest.approx(0.1)  # never-changing pixels: the floor, not 0
    as_read, _ = model._as_input(frames[:1])
    assert float(as_read[0, :3, 0, 0].abs().max()) < 1e-6  # the static background reads as 0
    # a distance saved before standardisation existed: no 'standardize' in its config, no pixel statistics
    old_config = {k: v for k, v in SMALL.to_dict().items() if k != "standardize"}
    old = GoalDistance(GoalDistanceConfig.from_dict(old_config))
    assert not old.config.standardize and "pixel_mean" not in old.state_dict()
    old.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items() if k != "standardize"}))
    loaded = GoalDistance.from_pretrained(tmp_path / "old")
    assert not loaded.config.standardize
    with pytest.raises(ValueError, match="raw pixels"):
        loaded.fit_pixel_statistics(frames)


def test_unknown_training_choices_are_refused():
    with pytest.raises(ValueError, match="error_scale"):
        GoalDistanceTrainConfig(error_scale="cubic")
    with pytest.raises(ValueError, match="objective"):
        GoalDistanceTrainConfig(objective="contrastive")
    with pytest.raises(ValueError, match="far_weight"):
        GoalDistanceTrainConfig(far_weight=-0.1)


def test_training_resumes_bit_identically_and_refuses_to_overwrite(tmp_path):
    torch.set_num_threads(1)
    store = toy_store(tmp_path / "toy", episodes=4, steps=10)
    train_goal_distance(store.root, tmp_path / "full", fast(10), SMALL, progress=False)
    train_goal_distance(store.root, tmp_path / "half", fast(5), SMALL, progress=False)
    with pytest.raises(RuntimeError, match="--resume"):
        train_goal_distance(store.root, tmp_path / "half", fast(10), SMALL, progress=False)
    train_goal_distance(store.root, tmp_path / "half", fast(10), resume=True, progress=False)
    a, b = (GoalDistance.from_pretrained(tmp_path / r).state_dict() for r in ("full", "half"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]


def test_only_frames_and_their_order_are_read(tmp_path):
    torch.set_num_threads(1)
    plain = toy_store(tmp_path / "plain", episodes=4, steps=10)
    scrambled = toy_store(tmp_path / "scrambled", episodes=4, steps=10, scramble=True)
    assert scrambled.read_episode(0).policy != plain.read_episode(0).policy
    for store, name in ((plain, "a"), (scrambled, "b")):
        train_goal_distance(store.root, tmp_path / name, fast(6), SMALL, progress=False)
    a, b = (GoalDistance.from_pretrained(tmp_path / r).state_dict() for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_cost_model_of_another_task_or_frame_size_is_refused(tmp_path):
    GoalDistance(SMALL).save_pretrained(tmp_path / "cost" / "model")
    with pytest.raises(ValueError, match="learned on worldvid/PointReach-v0, not on worldvid/Push-v0"):
        make_cost("learned", "worldvid/Push-v0", cost_model=str(tmp_path / "cost"))
    cost = make_cost("learned", TOY, cost_model=str(tmp_path / "cost"))
    assert isinstance(cost, LearnedCost)
    with pytest.raises(ValueError, match="16x16"):
        cost(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="--cost-model"):
        make_cost("learned", TOY)
    frames = np.stack([dot_frame(x) for x in range(6)]).reshape(2, 3, S, S, 3)
    out = cost(frames, dot_frame(0))
    assert out.shape == (2, 3) and out.dtype == torch.float32 and bool((out >= 0).all())
    assert torch.allclose(out, cost(torch.from_numpy(frames).float() / 127.5 - 1, dot_frame(0)), atol=1e-4)


def test_worldvid_plan_with_the_learned_cost_end_to_end(tmp_path):
    from worldvid.data.collect import collect

    collect(TOY, 4, tmp_path / "store", size=S, progress=False, episodes_per_shard=4)
    train = subprocess.run([sys.executable, "-m", "worldvid.cli", "train-cost", "--data", str(tmp_path / "store"),
                            "--out", str(tmp_path / "cost"), "--train-steps", "3", "--batch-size", "8",
                            "--widths", "8", "16", "16", "--hidden", "16"], capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    out = tmp_path / "plan"
    plan = subprocess.run([sys.executable, "-m", "worldvid.cli", "plan", "--env", TOY, "--oracle", "--cost", "learned",
                           "--cost-model", str(tmp_path / "cost"), "--episodes", "2", "--out", str(out),
                           "--candidates", "8", "--horizon", "2", "--iterations", "1", "--max-episode-steps", "3",
                           "--size", str(S)], capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["cost"] == "learned" and summary["summary"]["episodes"] == 2
    assert summary["config"]["cost_model"] == str(tmp_path / "cost")
    wrong = subprocess.run([sys.executable, "-m", "worldvid.cli", "plan", "--env", TOY, "--oracle", "--cost", "learned",
                            "--cost-model", str(tmp_path / "cost"), "--episodes", "1", "--out", str(tmp_path / "x"),
                            "--size", "32"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "16x16" in wrong.stderr and not (tmp_path / "x" / "summary.json").exists()
