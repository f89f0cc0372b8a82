"""The goal-conditioned Gymnasium contract of every task: Dict observations with the goal frame, ``is_success``,
``terminate_on_success``, MuJoCo v5's ``width`` / ``height``, ``render_size``, and the rendering backend chosen
when the first renderer is made. Tiny frames (16 px) keep it fast."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from worldvid.envs import TASKS
from worldvid.envs import gl_backend
from worldvid.envs.goal_conditioned import GOAL_KEY, OBSERVATION_KEY, goal_space

IDS = sorted(TASKS)
SIZE = 16
EXPERT_SOLVES = [i for i in IDS if i != "worldvid/PushT-v0"]
"""Tasks whose scripted expert reaches the goal within the time limit (tests/test_envs.py)."""


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{"size": SIZE, **kwargs})


@pytest.fixture(params=IDS)
def env_id(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------------------- tasks
def test_check_env_goal_conditioned(env_id: str) -> None:
    env = make(env_id, goal_conditioned=True)
    check_env(env.unwrapped, skip_render_check=True)
    frame = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    assert env.observation_space == gym.spaces.Dict({OBSERVATION_KEY: frame, GOAL_KEY: frame})
    env.close()


def test_dict_observation_holds_the_frame_and_the_goal_frame(env_id: str) -> None:
    env = make(env_id, goal_conditioned=True)
    observation, info = env.reset(seed=1)
    assert set(observation) == {"observation", "desired_goal"} and env.observation_space.contains(observation)
    np.testing.assert_array_equal(observation["desired_goal"], info["goal_frame"])
    np.testing.assert_array_equal(observation["observation"], env.unwrapped.render_observation())
    assert not np.array_equal(observation["observation"], observation["desired_goal"])
    plain, _ = make(env_id).reset(seed=1)  # the frame is the one the default (off) observation shows
    np.testing.assert_array_equal(observation["observation"], plain)
    for _ in range(3):
        observation, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
        np.testing.assert_array_equal(observation["desired_goal"], info["goal_frame"])
    env.close()


@pytest.mark.parametrize("goal_conditioned", [False, True])
def test_is_success_in_every_info(env_id: str, goal_conditioned: bool) -> None:
    env = make(env_id, goal_conditioned=goal_conditioned)
    _, info = env.reset(seed=2)
    infos = [info] + [env.step(env.action_space.sample())[4] for _ in range(3)]
    infos.append(env.unwrapped.adopt_goal(env.unwrapped.data.qpos.copy()))  # the goal is where it stands: success
    for info in infos:
        assert isinstance(info["is_success"], bool) and info["is_success"] == info["success"]
    assert infos[-1]["is_success"]
    env.close()


@pytest.mark.parametrize("env_id", EXPERT_SOLVES)
def test_terminate_on_success_ends_exactly_at_success(env_id: str) -> None:
    env = make(env_id, terminate_on_success=True, goal_conditioned=True)
    env.reset(seed=3)
    terminated, truncated, steps = False, False, 0
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
        assert terminated == info["success"]
        steps += 1
    assert terminated and not truncated and steps < env.spec.max_episode_steps
    env.close()


def test_terminate_on_success_is_off_by_default(env_id: str) -> None:
    env = make(env_id).unwrapped
    env.reset(seed=4)
    env.adopt_goal(env.data.qpos.copy())
    _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert info["success"] and terminated is False
    on = make(env_id, terminate_on_success=True).unwrapped
    on.reset(seed=4)
    on.adopt_goal(on.data.qpos.copy())
    assert on.step(np.zeros(2, np.float32))[2] is True
    env.close(), on.close()


def test_width_and_height_are_accepted_for_size() -> None:
    env = gym.make("worldvid/PointReach-v0", width=SIZE, height=SIZE)
    assert env.reset(seed=0)[0].shape == (SIZE, SIZE, 3) and env.unwrapped.size == SIZE
    assert gym.make("worldvid/PointReach-v0", width=SIZE).unwrapped.size == SIZE
    assert gym.make("worldvid/PointReach-v0", size=SIZE, height=SIZE).unwrapped.size == SIZE
    assert gym.make("worldvid/PointReach-v0").unwrapped.size == 64  # none given: the default, as before


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 16, "height": 24}, "square frames, but width=16, height=24 differ"),
    ({"size": 16, "width": 32}, "square frames, but size=16, width=32 differ"),
    ({"size": 16, "height": 32, "width": 16}, "differ"),
    ({"width": 4}, "width must be an integer >= 8"),
    ({"height": 16.0}, "height must be an integer"),
    ({"render_size": 4}, "render_size must be an integer >= 8"),
    ({"goal_conditioned": "yes"}, "goal_conditioned must be True or False"),
    ({"terminate_on_success": 1}, "terminate_on_success must be True or False"),
])
def test_bad_options_raise_one_clear_line(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        gym.make("worldvid/Push-v0", **kwargs)
    assert "\n" not in str(error.value)


def test_render_size_gives_bigger_render_frames(env_id: str) -> None:
    env = make(env_id, render_mode="rgb_array", render_size=48, goal_conditioned=True)
    observation, _ = env.reset(seed=5)
    frame = env.render()
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    assert observation["observation"].shape == (SIZE, SIZE, 3)
    task = env.unwrapped
    for name, color in task.object_colors.items():  # the same scene, three times finer
        row, col = np.round(task.object_pixel_positions()[name] * 3 + 1).astype(int)
        assert tuple(frame[row, col]) == color, name
    default = make(env_id, render_mode="rgb_array")
    np.testing.assert_array_equal(default.reset(seed=5)[0], observation["observation"])
    assert default.render().shape == (SIZE, SIZE, 3)
    env.close(), default.close()


def test_video_wrappers_collect_frames_at_render_size() -> None:
    # RecordVideo records what render() returns; RenderCollection shows it without needing moviepy
    env = gym.wrappers.RenderCollection(make("worldvid/PointReach-v0", render_mode="rgb_array", render_size=64,
                                             goal_conditioned=True))
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert [frame.shape for frame in env.render()] == [(64, 64, 3)] * 2
    env.close()


def test_determinism_and_pickling_under_a_seed(env_id: str) -> None:
    options = {"goal_conditioned": True, "terminate_on_success": True, "render_size": 24}
    first, second = make(env_id, **options), make(env_id, **options)
    actions = [np.array([0.8, -0.3], np.float32), np.array([-0.2, 1.0], np.float32)] * 2
    clone = pickle.loads(pickle.dumps(first))
    assert clone.unwrapped.render_size == 24 and clone.unwrapped.goal_conditioned
    runs = []
    for env in (first, second, clone):
        observation, _ = env.reset(seed=7)
        runs.append([observation] + [env.step(a)[0] for a in actions])
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    first.close(), second.close(), clone.close()


def test_goal_space_rejects_what_is_not_a_frame_box() -> None:
    with pytest.raises(ValueError, match="Box"):
        goal_space(gym.spaces.Discrete(3))


# ---------------------------------------------------------------------------- rendering backend
def test_choose_backend_takes_the_first_that_works() -> None:
    tried = []

    def probe(name: str) -> None:
        tried.append(name)
        if name != "works":
            raise RuntimeError(f"{name} is broken")

    assert gl_backend.choose_backend(["broken", "works", "never-tried"], probe) == "works"
    assert tried == ["broken", "works"]
    with pytest.raises(ValueError, match="non-empty"):
        gl_backend.choose_backend([], probe)


def test_a_backend_that_cannot_work_gives_one_clear_line() -> None:
    with pytest.raises(RuntimeError) as error:
        gl_backend.choose_backend(["no-such-backend"])  # the real probe: a fresh interpreter rejects the name
    message = str(error.value)
    assert "\n" not in message and "no-such-backend" in message and "MUJOCO_GL" in message
    assert "libegl1" in message and "libosmesa6" in message


def test_the_chosen_backend_is_exported_and_probes_clean() -> None:
    make("worldvid/PointReach-v0").reset(seed=0)  # a renderer exists: a backend was chosen
    backend = gl_backend.ensure_backend()
    assert os.environ["MUJOCO_GL"].lower() == backend
    gl_backend.probe_backend(backend)  # returns: it renders in a fresh interpreter too


def test_a_renderer_that_fails_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise mujoco.FatalError("gladLoadGL error")

    gl_backend.ensure_backend()  # the backend is chosen; the renderer itself fails
    monkeypatch.setattr(mujoco, "Renderer", fail)
    env = make("worldvid/Reacher-v0")  # a new env makes its own renderer at its first frame
    with pytest.raises(RuntimeError, match="could not create a MuJoCo OpenGL context with MUJOCO_GL=") as error:
        env.reset(seed=0)
    assert "\n" not in str(error.value) and "gladLoadGL error" in str(error.value)


def test_import_leaves_mujoco_gl_alone_and_the_first_renderer_chooses() -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "PYTHONPATH")}
    code = textwrap.dedent("""
        import os
        import gymnasium as gym
        import worldvid
        assert "MUJOCO_GL" not in os.environ
        frame, _ = gym.make("worldvid/PointReach-v0", size=16).reset(seed=0)
        assert frame.shape == (16, 16, 3) and frame.any()
        print(os.environ["MUJOCO_GL"])
    """)
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in gl_backend.BACKENDS
