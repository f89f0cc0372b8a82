"""One model across tasks: stores of several tasks train one multi-task model, which learns the task from its
frames alone, takes each task's actions (zero-padded where shorter) and is accepted by the consumers for any of
its tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, make_episode

from worldvid.data.dataset import FrameWindowDataset
from worldvid.data.manifest import StoreSpec
from worldvid.data.store import EpisodeStore
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.run_folder import RunFolder
from worldvid.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 8


def _ramp_episode(seed: int, action_dim: int, env_id: str, rising: bool, steps: int = 12) -> object:
    """An episode whose frames brighten (``rising``) or darken by 16 per step; the actions carry no signal."""
    ep = make_episode(steps=steps, size=SIZE, action_dim=action_dim, seed=seed, env_id=env_id)
    start = 20 + 4 * seed if rising else 235 - 4 * seed
    values = [start + (16 if rising else -16) * t for t in range(steps + 1)]
    ep.frames[:] = np.array(values, np.uint8)[:, None, None, None]
    return ep


def _store(path, env_id: str, action_dim: int, rising: bool, episodes: int = 6) -> EpisodeStore:
    spec = StoreSpec(env_id, (SIZE, SIZE, 3), action_dim, "test", 0, episodes_per_shard=3)
    with EpisodeStore.create(path, spec) as store:
        store.write_episodes([_ramp_episode(s, action_dim, env_id, rising) for s in range(episodes)])
    return EpisodeStore(path)


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
    """A rising task with 2-D actions and a falling task with 3-D actions, 8 px, and a multi-task run on both."""
    root = tmp_path_factory.mktemp("multi")
    rising = _store(root / "rising", "test/Rising-v0", 2, rising=True)
    falling = _store(root / "falling", "test/Falling-v0", 3, rising=False)
    config = TrainConfig(steps=150, batch_size=16, warmup_steps=10, lr=3e-3, checkpoint_every=150, log_every=50,
                         held_out_fraction=0.2, logger="none", ema_decay=0.9)
    train([rising.root, falling.root], root / "run", config, progress=False)
    return rising, falling, RunFolder.of(root / "run")


def test_stores_of_two_tasks_make_a_multi_task_model_as_wide_as_the_widest_actions(two_tasks):
    rising, falling, run = two_tasks
    model = run.load_model()
    assert model.config.tasks == ("test/Rising-v0", "test/Falling-v0")
    assert model.config.env_id is None and model.config.action_dim == 3 and model.config.multi_task
    assert json.loads((run.model_path / "config.json").read_text())["tasks"] == ["test/Rising-v0", "test/Falling-v0"]
    assert "# test/Rising-v0, test/Falling-v0 world model" in (run.model_path / "README.md").read_text()
    model.check_compatible(env_id="test/Rising-v0", action_dim=2, frame_size=SIZE)
    model.check_compatible(env_id="test/Falling-v0", action_dim=3)
    with pytest.raises(ValueError, match="trained on test/Rising-v0, test/Falling-v0, not on test/Other-v0"):
        model.check_compatible(env_id="test/Other-v0")
    with pytest.raises(ValueError, match="action_dim"):
        model.check_compatible(action_dim=4)


def test_the_multi_task_model_tells_the_tasks_apart_by_their_frames_alone(two_tasks):
    rising, falling, run = two_tasks
    model = run.load_model()
    for store, sign in ((rising, 1), (falling, -1)):
        episode = run.held_out_episodes(store)[0]
        frames = torch.from_numpy(store.read_frames(episode, 2, 7))  # f[2..6]: context f[2..5], real f[6]
        actions = torch.from_numpy(store.read_actions(episode, 2, 6))[None]
        predicted = model.predict_next(frames[None, :4], actions, generator=torch.Generator().manual_seed(0))
        change = predicted.float().mean() - frames[3].float().mean()
        assert sign * change > 8, f"{store.spec.env_id}: predicted change {change:.1f}, the real one {sign * 16}"
        # nearer the real next frame than the ramp's frame before or after it (16 grey levels apart)
        assert abs(predicted.float().mean() - frames[4].float().mean()) < 8


def test_a_shorter_tasks_actions_are_zero_padded_in_training_and_in_imagination(two_tasks):
    rising, _, run = two_tasks
    window = FrameWindowDataset(rising, context=4, action_dim=3)[7]
    plain = FrameWindowDataset(rising, context=4)[7]
    assert window["context_actions"].shape == (4, 3) and plain["context_actions"].shape == (4, 2)
    assert torch.equal(window["context_actions"][:, :2], plain["context_actions"])
    assert torch.count_nonzero(window["context_actions"][:, 2]) == 0
    with pytest.raises(ValueError, match="more than action_dim=1"):
        FrameWindowDataset(rising, context=4, action_dim=1)

    model = run.load_model()
    context = torch.from_numpy(rising.read_frames(0, 0, 4))[None]
    past, future = torch.rand(1, 4, 2) * 2 - 1, torch.rand(1, 5, 2) * 2 - 1
    short = model.rollout(context, past, future, generator=torch.Generator().manual_seed(3))
    padded = model.rollout(context, torch.nn.functional.pad(past, (0, 1)), torch.nn.functional.pad(future, (0, 1)),
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(short, padded)
    single = WorldModel(WorldModelConfig(action_dim=3, frame_size=SIZE, env_id="test/Falling-v0", **TINY))
    with pytest.raises(ValueError, match="action_dim A=3"):  # a single-task model pads nothing
        single.rollout(context, past, future)


def test_training_refuses_mixed_frame_sizes_and_one_task_with_two_action_sizes(tmp_path):
    a = _store(tmp_path / "a", "test/Rising-v0", 2, rising=True, episodes=3)
    b = _store(tmp_path / "b", "test/Rising-v0", 3, rising=True, episodes=3)
    with pytest.raises(ValueError, match="test/Rising-v0 actions of size 3"):
        train([a.root, b.root], tmp_path / "run", TrainConfig(steps=1, logger="none"), progress=False)
    spec = StoreSpec("test/Falling-v0", (16, 16, 3), 2, "test", 0)
    with EpisodeStore.create(tmp_path / "c", spec) as store:
        store.write_episodes([make_episode(steps=5, size=16, env_id="test/Falling-v0")])
    with pytest.raises(ValueError, match="one model trains at one frame size"):
        train([a.root, tmp_path / "c"], tmp_path / "run", TrainConfig(steps=1, logger="none"), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_single_task_config_is_written_as_before_and_a_bad_task_list_is_refused():
    single = WorldModelConfig(action_dim=2, env_id="worldvid/Push-v0")
    assert "tasks" not in single.to_dict()  # earlier versions read it
    assert WorldModelConfig.from_dict(single.to_dict()) == single
    multi = WorldModelConfig(action_dim=2, tasks=["worldvid/Push-v0", "worldvid/Reacher-v0"])
    assert WorldModelConfig.from_dict(json.loads(json.dumps(multi.to_dict()))) == multi
    with pytest.raises(ValueError, match="two or more different tasks"):
        WorldModelConfig(action_dim=2, tasks=("worldvid/Push-v0",))
    with pytest.raises(ValueError, match="no single env_id"):
        WorldModelConfig(action_dim=2, env_id="worldvid/Push-v0", tasks=("worldvid/Push-v0", "worldvid/Reacher-v0"))


def test_which_tasks_and_action_sizes_a_config_accepts():
    """One rule for training data and for consumers: a multi-task model takes any of its tasks and any action size up
    to its own; a single-task model its own task (or an unrecorded one) and its own action size."""
    single = WorldModelConfig(action_dim=2, env_id="worldvid/Push-v0")
    assert single.accepts_task("worldvid/Push-v0") and single.accepts_task("worldvid.envs:worldvid/Push-v0")
    assert single.accepts_task(None) and WorldModelConfig(action_dim=2).accepts_task("worldvid/Push-v0")
    assert not single.accepts_task("worldvid/Reacher-v0")
    assert single.accepts_actions(2) and not single.accepts_actions(1)
    multi = WorldModelConfig(action_dim=3, tasks=("worldvid/Push-v0", "worldvid/Reacher-v0"))
    assert multi.accepts_task("worldvid/Reacher-v0") and not multi.accepts_task("worldvid/PointReach-v0")
    assert multi.accepts_actions(1) and multi.accepts_actions(3) and not multi.accepts_actions(4)
    assert not multi.accepts_actions(0)


@pytest.fixture(scope="module")
def point_and_push(store_dir, tmp_path_factory):
    """The tiny 16 px PointReach store, a tiny 16 px Push store, and a TINY multi-task run of 4 steps on both."""
    from conftest import fast

    from worldvid.data.collect import collect

    root = tmp_path_factory.mktemp("point_and_push")
    collect("worldvid/Push-v0", 4, root / "push16", size=16, episodes_per_shard=2, progress=False)
    model = WorldModelConfig(action_dim=2, frame_size=16, tasks=("worldvid/PointReach-v0", "worldvid/Push-v0"), **TINY)
    train([store_dir, root / "push16"], root / "run", fast(4, logger="none"), model_config=model, progress=False)
    return EpisodeStore(store_dir), EpisodeStore(root / "push16"), RunFolder.of(root / "run")


def test_consumers_take_the_multi_task_model_for_one_of_its_tasks(point_and_push):
    from worldvid.envs.dream import DreamEnv
    from worldvid.experiments.open_loop import run_open_loop_evaluation

    point, push, run = point_and_push
    with pytest.raises(ValueError, match="multi-task model: pass --data"):
        run_open_loop_evaluation(run.path, rollout_steps=2, controllability_seeds=0, print_table=False)
    report = run_open_loop_evaluation(run.path, data=push.root, rollout_steps=2, controllability_seeds=2,
                                      print_table=False, out=run.path / "eval_push")
    assert report["env_id"] == "worldvid/Push-v0" and report["episodes"] == run.held_out_episodes(push)
    assert report["goal_object"] == "block" and "passed" in report["controllability"]
    env = DreamEnv(run.path, data=point.root)
    assert env.action_space.shape == (2,)
    env.reset(seed=0)
    observation, reward, *_ = env.step(np.zeros(2, np.float32))
    assert observation.shape == (16, 16, 3) and np.isfinite(reward)
    with pytest.raises(ValueError, match="several tasks"):
        DreamEnv(run.path)
    tuned = train([push.root], run.path.parent / "tuned", TrainConfig(steps=1, batch_size=2, logger="none"),
                  progress=False, init_from=run.path)  # fine-tuning on one of its tasks (e.g. a DAgger round)
    assert RunFolder.of(tuned["run"]).load_model().config.tasks == ("worldvid/PointReach-v0", "worldvid/Push-v0")
    with pytest.raises(ValueError, match="is for worldvid/PointReach-v0, worldvid/Reacher-v0, the data at .*push16 is from worldvid/Push-v0"):
        train([point.root, push.root], run.path / "other", TrainConfig(steps=1, logger="none"), progress=False,
              model_config=WorldModelConfig(action_dim=2, frame_size=16, tasks=("worldvid/PointReach-v0",
                                                                                 "worldvid/Reacher-v0"), **TINY))


def test_the_comparison_scores_both_models_on_the_same_held_out_windows(point_and_push, tmp_path):
    from conftest import fast

    from worldvid.experiments.multi_task import compare

    point, _, run = point_and_push
    config = WorldModelConfig(action_dim=2, frame_size=16, env_id="worldvid/PointReach-v0", **TINY)
    train(point.root, tmp_path / "single", fast(4, logger="none"), model_config=config, progress=False)
    report = compare(run.path, [tmp_path / "single"], tmp_path / "out", plan_episodes=0)
    row = report["tasks"]["PointReach"]
    assert row["held_out_episodes"] == len(run.held_out_episodes(point))
    for which in ("single", "multi"):
        moving = row[f"open_loop_{which}"]["moving_part_error"]
        assert moving["model"] > 0 and moving["copy_last_frame"] > 0
    assert row["open_loop_single"]["windows"] == row["open_loop_multi"]["windows"] > 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| PointReach | single:" in table and "| PointReach | multi:" in table
