"""Scenes no one here wrote: Gymnasium's own MuJoCo envs through collect and evaluate, the colour-free moving-part
metric, controllability on any MuJoCo env (and its one-line skip elsewhere), and the collection-policy fallback."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.conftest import TINY, fast, make_episode
from worldvid.data.collect import collect
from worldvid.data.policies import policy_for_env
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.envs.factory import make_pixel_env
from worldvid.evaluate import controllability, cut_windows, evaluate_open_loop, frame_scores, sim_state_io
from worldvid.experiments.open_loop import format_report, run_open_loop_evaluation, skipped_steps
from worldvid.metrics import moving_mask, moving_part_error
from worldvid.model import WorldModel, WorldModelConfig
from worldvid.train import train


class Dot(gym.Env):
    """A non-MuJoCo env with a Box action that renders rgb_array frames itself: a dot the action moves."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:  # no width/height: the factory resizes its frames
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        return self.pos.copy(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.2 * np.asarray(action, np.float32), -1, 1)
        return self.pos.copy(), 0.0, False, False, {}

    def render(self):
        frame = np.zeros((20, 20, 3), np.uint8)
        r, c = ((self.pos + 1) / 2 * 19).round().astype(int)
        frame[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = 255
        return frame


DOT = "WorldvidTestDot-v0"
if DOT not in gym.registry:
    gym.register(DOT, entry_point=Dot, max_episode_steps=12)


def tiny_model(env_id: str, action_dim: int, seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig(action_dim=action_dim, frame_size=16, env_id=env_id, **TINY)).eval()


class IgnoresActions:
    """A world model whose rollout never sees the actions it is given (it imagines with zeros)."""

    def __init__(self, model: WorldModel) -> None:
        self.model, self.config, self.device = model, model.config, model.device

    def rollout(self, context, past_actions, actions, **kw):
        return self.model.rollout(context, past_actions, np.zeros_like(actions), **kw)


class Replays:
    """A perfect world model: it replays the true simulator from the state the check saved (``sim_state_io``)."""

    def __init__(self, model: WorldModel, monkeypatch) -> None:
        import worldvid.evaluate as evaluate

        self.config, self.device = model.config, model.device
        real_io = evaluate.sim_state_io

        def recording_io(env):
            save, restore = real_io(env)
            self.env, self.restore = env, restore

            def saving():
                self.state = save()
                return self.state
            return saving, restore
        monkeypatch.setattr(evaluate, "sim_state_io", recording_io)

    def rollout(self, context, past_actions, actions, **kw):
        out = []
        for plan in actions:
            self.restore(self.state)
            out.append(np.stack([self.env.step(a)[0] for a in plan]))
        return torch.as_tensor(np.stack(out))


def test_moving_part_metric_on_hand_made_frames():
    last = np.zeros((2, 4, 4, 3), np.uint8)
    real = np.zeros((2, 2, 4, 4, 3), np.uint8)
    real[:, 0, 0, 0, 0] = 100  # step 1 moves pixel (0, 0) in one channel
    real[:, 1, 1, 1, 2] = 9  # step 2 moves pixel (1, 1) by 9 > 8 levels
    real[:, 1, 2, 2, :] = 8  # ... and pixel (2, 2) by 8 levels in every channel: not more than 8, static
    steps = np.array([2, 1])  # window 1 has only its first real frame
    mask = moving_mask(last, real, steps)
    assert np.argwhere(mask[0]).tolist() == [[0, 0], [1, 1]] and np.argwhere(mask[1]).tolist() == [[0, 0]]
    model = real.copy()
    model[:, 0, 0, 0, 0] = 70  # off by 30 levels in one of 3 channels at the moving pixel
    model[:, 0, 3, 3] = 200  # a static pixel: outside the mask, it costs nothing
    err = moving_part_error(model, real, mask, steps)
    # step 1: pixels (0,0),(1,1) of window 0 and (0,0) of window 1; step 2: window 0 only
    np.testing.assert_allclose(err, [(10 + 0 + 10) / 3 / 255, 0.0])
    copy = np.repeat(last[:, None], 2, axis=1)
    np.testing.assert_allclose(moving_part_error(copy, real, mask, steps),
                               [(100 / 3 + 0 + 100 / 3) / 3 / 255, (0 + 3) / 2 / 255])
    assert np.isnan(moving_part_error(copy, real, np.zeros_like(mask), steps)).all()  # nothing moves: no score


def test_windows_shorter_than_the_rollout_skip_the_steps_none_reaches(tmp_path):
    store = EpisodeStore.create(tmp_path, StoreSpec("test/Fake-v0", (8, 8, 3), 2, "test", 0, episodes_per_shard=1))
    store.write_shard(0, [make_episode(steps=7, seed=0)])
    with pytest.raises(ValueError, match="fewer than the horizon"):
        cut_windows(store, [0], context=3, horizon=10)
    w = cut_windows(store, [0], context=3, horizon=10, starts_per_episode=2, allow_short=True)  # t = 0 and t = 6
    assert w.steps.tolist() == [7, 1] and w.real.shape == (2, 10, 8, 8, 3)
    assert w.real[0, :, 0, 0, 0].tolist() == [10, 20, 30, 40, 50, 60, 70, 70, 70, 70]  # f[1..7], then held
    assert w.actions[1, :, 0].tolist() == [6] + [0] * 9
    copy = np.repeat(w.context[:, -1:], 10, axis=1)
    scores = frame_scores(copy, w, np.zeros((0, 3)), None)
    assert scores["psnr"][6] is not None and scores["psnr"][7:] == [None, None, None]
    # the hand-made frames move everywhere: copy is off by 10 levels per step taken
    np.testing.assert_allclose(scores["moving_part_error"][:2], [(10 + 10) / 2 / 255, 20 / 255])
    report = {"horizon": 50, "model": {"psnr": [1.0] * 25 + [None] * 25}}
    assert skipped_steps(report) == ["step 50: skipped, no held-out episode is long enough to reach it"]


def test_default_policy_falls_back_to_random_only_without_an_expert(tmp_path, capsys):
    reacher = make_pixel_env("Reacher-v5", 16)
    policy, note = policy_for_env("mixed", reacher)
    assert policy == "random" and note.count("\n") == 0 and "Reacher-v5" in note
    assert policy_for_env("scripted", reacher) == ("scripted", None)  # an explicit choice is kept ...
    reacher.close()
    with pytest.raises(Exception, match="no scripted policy"):  # ... and fails with its own line
        collect("Reacher-v5", 1, tmp_path / "s", policy="scripted", size=16, progress=False)
    ours = make_pixel_env("worldvid/PointReach-v0", 16)
    assert policy_for_env("mixed", ours) == ("mixed", None)
    ours.close()


def test_reacher_camera_shows_the_arm():
    def moving_fraction(**kw) -> float:
        env = make_pixel_env("Reacher-v5", 32, **kw)
        actions = np.random.default_rng(0).uniform(-1, 1, (30, 2)).astype(np.float32)
        frames = [env.reset(seed=0)[0]] + [env.step(a)[0] for a in actions]
        env.close()
        return float(moving_mask(frames[0][None], np.stack(frames[1:])[None]).mean())

    ours, gymnasiums = moving_fraction(), moving_fraction(default_camera_config={"trackbodyid": 0})
    assert ours > 2 * gymnasiums  # Gymnasium's far, slanted view shows the arm as a few dark pixels


def test_reacher_v5_collect_train_evaluate_runs_clean(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    collect("Reacher-v5", 5, data, size=16, episodes_per_shard=5, progress=False)  # the default policy
    assert "collecting with --policy random" in capsys.readouterr().out
    store = EpisodeStore(data)
    assert store.spec.policy == "random"
    config = WorldModelConfig(action_dim=store.spec.action_dim, frame_size=16, env_id="Reacher-v5", **TINY)
    train(data, run, fast(1), config, progress=False)
    report = run_open_loop_evaluation(run, rollout_steps=50, controllability_seeds=2)
    printed = capsys.readouterr().out
    assert "moving err" in printed and "controllability" in printed and "Traceback" not in printed
    for curve in (report["model"]["moving_part_error"], report["copy_last_frame"]["moving_part_error"]):
        assert all(curve[step - 1] is not None and curve[step - 1] > 0 for step in (8, 25, 50))
    assert report["reached"][49] >= 1 and report["notes"] == []
    c = report["controllability"]
    assert c["real_divergence"] > 0 and not c["passed"]  # an untrained model cannot match the real futures


def test_controllability_on_a_gymnasium_mujoco_env_fails_a_model_that_ignores_actions(monkeypatch):
    model = tiny_model("Reacher-v5", 2)
    assert not controllability(IgnoresActions(model), "Reacher-v5", seeds=[1, 2], horizon=6)["passed"]
    perfect = controllability(Replays(model, monkeypatch), "Reacher-v5", seeds=[1, 2], horizon=6)
    assert perfect["matched"] == 0.0 and perfect["imagined_divergence"] == perfect["real_divergence"] > 0
    assert perfect["passed"]
    # perfect physics that ignores the actions (it plays zeros): imagines A = B, and fails
    blind = controllability(IgnoresActions(Replays(model, monkeypatch)), "Reacher-v5", seeds=[1, 2], horizon=6)
    assert blind["imagined_divergence"] == 0.0 and blind["real_divergence"] > 0 and not blind["passed"]


def test_sim_state_io_restores_a_gymnasium_mujoco_env():
    env = make_pixel_env("Reacher-v5", 16)
    env.reset(seed=3)
    save, restore = sim_state_io(env)
    state, action = save(), np.array([0.5, -0.5], np.float32)
    first = [env.step(action)[0] for _ in range(3)]
    restore(state)
    again = [env.step(action)[0] for _ in range(3)]
    env.close()
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_a_non_mujoco_env_gets_a_one_line_skip(tmp_path, capsys):
    data = tmp_path / "dot"
    collect(DOT, 3, data, size=16, episodes_per_shard=3, progress=False)
    model = tiny_model(DOT, 2)
    check = controllability(model, DOT, seeds=[0])
    assert set(check) == {"skipped"} and "not a MuJoCo env" in check["skipped"] and "\n" not in check["skipped"]
    report = evaluate_open_loop(model, EpisodeStore(data), [0, 1, 2], horizon=8)
    report["controllability"] = check
    table = format_report(report)
    assert table.splitlines()[-1] == check["skipped"] and "moving err" in table
