"""The goal-conditioned Gymnasium contract of every task and of Dream-v0: Dict observations with the goal frame,
``is_success``, ``terminate_on_success``, MuJoCo v5's ``width`` / ``height``, ``render_size``, and the rendering
backend chosen when the first renderer is made. Tiny frames (16 px) and a tiny untrained model keep it fast."""

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
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from worldvid.envs import DREAM_ID, TASKS
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


# ---------------------------------------------------------------------------- Dream-v0
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny untrained PointReach model (16 px, one sampler step) saved to a model folder; no store: dreams
    start from real resets of the task, whose goal frames they keep."""
    from worldvid.model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(action_dim=2, frame_size=SIZE, block_channels=(8, 16),
                                        env_id="worldvid/PointReach-v0", num_steps=1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("goal_dream") / "model"
    model.save_pretrained(folder)
    return str(folder)


def test_dream_goal_conditioned_single(tiny_model: str) -> None:
    env = gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", goal_conditioned=True)
    check_env(env.unwrapped, skip_render_check=True)
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    np.testing.assert_array_equal(observation["desired_goal"], info["goal_frame"])
    infos = [info]
    for _ in range(2):
        observation, reward, terminated, _, info = env.step(env.action_space.sample())
        np.testing.assert_array_equal(observation["desired_goal"], info["goal_frame"])
        assert env.observation_space.contains(observation) and not terminated
        infos.append(info)
    assert all(i["is_success"] is False and i["success"] is False for i in infos)  # no success_cost: no success
    again, _ = gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", goal_conditioned=True).reset(seed=0)
    assert all(np.array_equal(again[k], env.reset(seed=0)[0][k]) for k in again)
    env.close()


def test_dream_success_cost_and_terminate_on_success(tiny_model: str) -> None:
    env = gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", success_cost=1e9, terminate_on_success=True)
    _, info = env.reset(seed=1)
    assert info["is_success"] is True  # every frame is within a threshold of 1e9
    _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert terminated is True and info["is_success"] is True and info["success"] is True
    strict = gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", success_cost=0.0,
                      terminate_on_success=True)
    strict.reset(seed=1)
    _, reward, terminated, _, info = strict.step(np.zeros(2, np.float32))
    assert reward < 0 and terminated is False and info["is_success"] is False
    with pytest.raises(ValueError, match="success_cost needs a goal-image cost"):
        gym.make(DREAM_ID, model=tiny_model, cost=None, device="cpu", success_cost=1.0)
    with pytest.raises(ValueError, match="success_cost must be a finite number"):
        gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", success_cost=float("nan"))
    with pytest.raises(ValueError, match="goal_conditioned must be True or False"):
        gym.make(DREAM_ID, model=tiny_model, device="cpu", goal_conditioned="yes")


def test_dream_goal_conditioned_vector(tiny_model: str) -> None:
    n = 3
    vector = gym.make_vec(DREAM_ID, num_envs=n, vectorization_mode="vector_entry_point", model=tiny_model,
                          cost="blur", device="cpu", goal_conditioned=True, max_episode_steps=2)
    assert vector.single_observation_space == make_single_space()
    observations, infos = vector.reset(seed=3)
    assert vector.observation_space.contains(observations)
    assert observations["observation"].shape == (n, SIZE, SIZE, 3)
    np.testing.assert_array_equal(observations["desired_goal"], np.stack(infos["goal_frame"]))
    single = gym.make(DREAM_ID, model=tiny_model, cost="blur", device="cpu", goal_conditioned=True)
    for i in range(n):  # a start involves no model: sub-env i is the single env reset with seed 3 + i
        first, _ = single.reset(seed=3 + i)
        assert all(np.array_equal(first[k], observations[k][i]) for k in first)
    for _ in range(2):
        observations, _, terminated, truncated, infos = vector.step(np.zeros((n, 2), np.float32))
        assert vector.observation_space.contains(observations) and not terminated.any()
        assert infos["is_success"].dtype == np.bool_ and not infos["is_success"].any()
    assert truncated.all()
    vector.close()


def make_single_space() -> gym.spaces.Dict:
    frame = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    return gym.spaces.Dict({"observation": frame, "desired_goal": frame})


def test_dream_vector_terminates_on_success_same_step(tiny_model: str) -> None:
    vector = gym.make_vec(DREAM_ID, num_envs=2, vectorization_mode="vector_entry_point", model=tiny_model,
                          cost="blur", device="cpu", goal_conditioned=True, success_cost=1e9,
                          terminate_on_success=True, autoreset_mode=AutoresetMode.SAME_STEP)
    vector.reset(seed=0)
    observations, _, terminated, truncated, infos = vector.step(np.zeros((2, 2), np.float32))
    assert terminated.all() and not truncated.any() and infos["is_success"].all()
    final = infos["final_obs"]  # one ended observation per sub-env, as SyncVectorEnv gives them
    assert final.shape == (2,) and all(vector.single_observation_space.contains(obs) for obs in final)
    assert vector.observation_space.contains(observations)
    vector.close()


def test_a_dream_without_a_goal_frame_cannot_be_goal_conditioned() -> None:
    from worldvid.envs.dream_start import Dream

    dream = Dream(np.zeros((4, SIZE, SIZE, 3), np.uint8), np.zeros((4, 2), np.float32), None, torch.Generator(),
                  {"source": "store", "episode": 0, "t": 0})
    assert dream.observation(False).shape == (SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="goal_conditioned=True needs goal frames"):
        dream.observation(True)


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
