"""Planners: goal-image costs, the search math on an analytic cost, imagination back ends, the MPC loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldvid.agents import (CEMPlanner, History, MPPIPlanner, PlannerConfig, RandomPlanner, RandomShootingPlanner,
                             SimulatorDynamics, WorldModelDynamics, make_planner, run_episode)
from worldvid.costs import BlurCost, make_cost, pixel_cost, reduce_costs, video_cost
from worldvid.envs.factory import make_pixel_env
from worldvid.model import WorldModel, WorldModelConfig

POINT = "worldvid/PointReach-v0"
LOW, HIGH = -np.ones(2, np.float32), np.ones(2, np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(env_id: str = POINT, frame_size: int = 16) -> WorldModel:
    return WorldModel(WorldModelConfig(action_dim=2, frame_size=frame_size, block_channels=(8, 16),
                                       env_id=env_id, num_steps=1))


def frames_with_agent(env, positions: np.ndarray) -> np.ndarray:
    """uint8 [P, H, W, 3]: the task scene with the point mass placed at each world position [P, 2]."""
    base = env.unwrapped
    saved = base.get_sim_state()
    frames = []
    for p in positions:
        base.set_state(np.asarray(p, float), np.zeros(2))
        frames.append(base.render() if base.render_mode else base._get_obs())
    base.set_sim_state(saved)
    return np.stack(frames)


# ---------------------------------------------------------------------------- costs
@pytest.mark.parametrize("name", ["keypoint", "blur", "pixel"])
def test_costs_are_batched_never_nan_and_accept_both_ranges(name):
    env = make_pixel_env(POINT, 16)
    _, info = env.reset(seed=0)
    goal = info["goal_frame"]
    cost = make_cost(name, POINT)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 5, 16, 16, 3), dtype=np.uint8))
    values = cost(frames, goal)
    assert values.shape == (3, 5) and values.dtype == torch.float32 and torch.isfinite(values).all()
    as_float = frames.float() / 127.5 - 1.0  # the model's [-1, 1] range gives the same cost
    torch.testing.assert_close(cost(as_float, goal), values, rtol=1e-4, atol=1e-4)
    assert float(cost(goal[None], goal)[0]) == pytest.approx(0.0, abs=1e-6)
    assert cost(goal, goal).shape == ()  # one frame (a dream env's reward)
    with pytest.raises(ValueError, match="goal frame"):
        cost(frames, np.zeros((8, 8, 3), np.uint8))


def test_keypoint_cost_penalises_a_lost_object_instead_of_nan():
    env = make_pixel_env(POINT, 16)
    _, info = env.reset(seed=0)
    goal = info["goal_frame"]
    empty = np.full((1, 16, 16, 3), 204, np.uint8)  # the agent vanished (as an imagined frame may do)
    cost = make_cost("keypoint", POINT)
    far = frames_with_agent(env, np.array([[0.4, 0.4], [-0.4, -0.4]]))
    assert float(cost(empty, goal)[0]) >= float(cost(far, goal).max())


@pytest.mark.parametrize("name", ["keypoint", "blur"])
def test_shaped_costs_fall_as_the_agent_nears_the_goal_and_pixel_mse_is_flat(name):
    env = make_pixel_env(POINT, 32)
    _, info = env.reset(seed=3)
    goal_position = env.unwrapped.goal.copy()
    direction = -np.sign(goal_position) * np.array([1.0, 0.0])  # toward the arena's far side
    distances = np.linspace(0.0, 0.6, 7)
    frames = frames_with_agent(env, goal_position + distances[:, None] * direction)
    values = make_cost(name, POINT)(frames, info["goal_frame"]).numpy()
    assert np.all(np.diff(values) > 0), values  # monotone all the way, not only while overlapping
    mse = pixel_cost(frames, info["goal_frame"]).numpy()
    assert mse[-1] == pytest.approx(mse[-2], rel=1e-6)  # why plain MSE fails: no signal once apart


def test_video_cost_reductions():
    per_frame = torch.tensor([[3.0, 2.0, 1.0]])
    assert float(reduce_costs(per_frame, "final")) == 1.0
    assert float(reduce_costs(per_frame, "mean")) == 2.0
    assert float(reduce_costs(per_frame, "discounted", 0.5)) == pytest.approx((3 + 1 + 0.25) / 1.75)
    with pytest.raises(ValueError, match="reduction"):
        reduce_costs(per_frame, "median")
    frames = torch.zeros(2, 3, 4, 4, 3, dtype=torch.uint8)
    assert video_cost(BlurCost(levels=3), frames, np.zeros((4, 4, 3), np.uint8)).shape == (2,)
    with pytest.raises(ValueError, match=r"\[N, T, H, W, 3\]"):
        video_cost(BlurCost(levels=3), frames[0], np.zeros((4, 4, 3), np.uint8))


def test_video_cost_final_scores_only_the_last_frames():
    seen = []

    def brightness(frames, goal):
        seen.append(tuple(frames.shape))
        return torch.as_tensor(frames).float().mean((-3, -2, -1))

    frames = torch.randint(0, 255, (4, 5, 6, 6, 3), dtype=torch.uint8)
    goal = np.zeros((6, 6, 3), np.uint8)
    final = video_cost(brightness, frames, goal, "final")
    assert seen == [(4, 1, 6, 6, 3)]  # one frame per video scored, not five
    assert torch.allclose(final, frames[:, -1].float().mean((-3, -2, -1)))
    assert torch.equal(final, reduce_costs(brightness(frames, goal), "final"))


# ---------------------------------------------------------------------------- search math
class EncodedActions:
    """Test dynamics: imagined frame h of a candidate holds its action a[h] in channels 0-1 of every pixel."""

    def __init__(self) -> None:
        self.calls = 0

    def reset(self, seed: int) -> None:
        self.calls = 0

    def imagine(self, history: History, actions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        n, h, _ = actions.shape
        frames = torch.zeros(n, h, 4, 4, 3)
        frames[..., :2] = actions[:, :, None, None, :]
        return frames  # float in [-1, 1], like the model's float output


TARGET = torch.tensor([[0.5, -0.3], [-0.7, 0.2], [0.1, 0.9], [-0.4, -0.6]])


def quadratic_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:
    """Per-frame squared distance of the encoded action to TARGET[h]: minimum 0 exactly at a = TARGET."""
    return ((frames[..., 0, 0, :2] - TARGET) ** 2).sum(-1)


@pytest.mark.parametrize("planner_class", [CEMPlanner, MPPIPlanner])
def test_cem_and_mppi_find_the_minimum_of_an_analytic_cost(planner_class):
    # white noise: the default AR(1)-correlated noise favours smooth sequences, and TARGET zig-zags
    config = PlannerConfig(candidates=64, horizon=4, iterations=12, elites=8, init_std=0.8, min_std=0.01,
                           temperature=0.05, noise_correlation=0.0, warm_start=False, reduce="mean")
    planner = planner_class(EncodedActions(), quadratic_cost, LOW, HIGH, config, seed=0)
    history = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2)
    plan = planner.plan(history, np.zeros((4, 4, 3), np.uint8))
    assert plan.actions.shape == (4, 2) and plan.model_calls == 12
    np.testing.assert_allclose(plan.actions, TARGET.numpy(), atol=0.03)
    shooting = RandomShootingPlanner(EncodedActions(), quadratic_cost, LOW, HIGH, config, seed=0)
    assert plan.cost < shooting.plan(history, np.zeros((4, 4, 3), np.uint8)).cost  # refinement beats blind search


class CountedActions(EncodedActions):
    """EncodedActions that records how many candidates each call imagined."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def imagine(self, history: History, actions: torch.Tensor) -> torch.Tensor:
        self.sizes.append(actions.shape[0])
        return super().imagine(history, actions)


def test_icem_decaying_population_and_kept_elites_imagine_fewer_frames_and_still_converge():
    fixed = dict(candidates=64, horizon=4, iterations=12, elites=8, init_std=0.8, min_std=0.01,
                 noise_correlation=0.0, warm_start=False, reduce="mean")
    icem = PlannerConfig(**fixed, population_decay=0.8, keep_elites=8)
    dynamics = CountedActions()
    history = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2)
    plan = CEMPlanner(dynamics, quadratic_cost, LOW, HIGH, icem, seed=0).plan(history, np.zeros((4, 4, 3), np.uint8))
    assert dynamics.sizes == [icem.population(i) for i in range(12)] and dynamics.sizes[0] == 64
    assert min(dynamics.sizes) == 8 and sorted(dynamics.sizes, reverse=True) == dynamics.sizes
    assert sum(dynamics.sizes) * 4 == icem.imagined_per_decision < 0.45 * PlannerConfig(**fixed).imagined_per_decision
    np.testing.assert_allclose(plan.actions, TARGET.numpy(), atol=0.05)
    assert PlannerConfig(**fixed).population(11) == 64  # the default keeps the population fixed
    for bad in (dict(population_decay=0.0), dict(population_decay=1.5), dict(keep_elites=-1), dict(keep_elites=65)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PlannerConfig(**{**fixed, **bad})


def test_planning_is_reproducible_and_warm_start_shifts_the_previous_plan():
    config = PlannerConfig(candidates=16, horizon=4, iterations=1)
    history = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2)
    goal = np.zeros((4, 4, 3), np.uint8)
    a, b = (CEMPlanner(EncodedActions(), quadratic_cost, LOW, HIGH, config, seed=5) for _ in range(2))
    first = a.plan(history, goal)
    np.testing.assert_array_equal(first.actions, b.plan(history, goal).actions)
    mean, std = a._initial(shift=2)
    np.testing.assert_array_equal(mean.numpy(), np.concatenate([first.actions[2:], first.actions[-1:].repeat(2, 0)]))
    assert float(std.min()) == pytest.approx(config.init_std)
    a.reset(seed=5)
    assert float(a._initial(shift=1)[0].abs().sum()) == 0.0  # reset forgets the warm start


def test_zero_warm_tail_fills_the_shifted_plan_with_no_action():
    config = PlannerConfig(candidates=16, horizon=4, iterations=1, warm_tail="zero")
    history, goal = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2), np.zeros((4, 4, 3), np.uint8)
    planner = CEMPlanner(EncodedActions(), quadratic_cost, LOW, HIGH, config, seed=5)
    first = planner.plan(history, goal)
    assert np.abs(first.actions[-1]).sum() > 0  # a last action that 'repeat' would have kept
    mean, _ = planner._initial(shift=1)
    np.testing.assert_array_equal(mean.numpy(), np.concatenate([first.actions[1:], np.zeros((1, 2), np.float32)]))
    with pytest.raises(ValueError, match="warm_tail"):
        PlannerConfig(warm_tail="last")


def test_action_repeat_holds_each_planned_action_and_imagines_every_step():
    held = TARGET[[0, 0, 1, 1]]  # two planned actions, each held for two steps

    def held_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:
        return ((frames[..., 0, 0, :2] - held) ** 2).sum(-1)

    config = PlannerConfig(candidates=64, horizon=2, action_repeat=2, iterations=12, elites=8, init_std=0.8,
                           min_std=0.01, noise_correlation=0.0, reduce="mean")
    dynamics = EncodedActions()
    planner = CEMPlanner(dynamics, held_cost, LOW, HIGH, config, seed=0)
    history = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2)
    plan = planner.plan(history, np.zeros((4, 4, 3), np.uint8))
    assert plan.actions.shape == (4, 2) and plan.imagined.shape[0] == 4  # horizon x repeat steps, all imagined
    np.testing.assert_array_equal(plan.actions[0], plan.actions[1])
    np.testing.assert_array_equal(plan.actions[2], plan.actions[3])
    np.testing.assert_allclose(plan.actions, held.numpy(), atol=0.05)
    mean, _ = planner._initial(shift=2 // config.action_repeat)  # two executed steps = one planned action
    np.testing.assert_array_equal(mean.numpy(), plan.actions[[2, 2]])
    with pytest.raises(ValueError, match="action_repeat"):
        PlannerConfig(action_repeat=0)


def test_bad_budgets_and_goal_shapes_raise():
    for bad in (dict(candidates=0), dict(horizon=-1), dict(iterations=0), dict(elites=64), dict(reduce="max")):
        with pytest.raises(ValueError):
            PlannerConfig(**bad)
    planner = CEMPlanner(EncodedActions(), quadratic_cost, LOW, HIGH, PlannerConfig(horizon=4))
    history = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2)
    with pytest.raises(ValueError, match="goal frame"):
        planner.plan(history, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="planner"):
        make_planner("annealing", EncodedActions(), quadratic_cost, LOW, HIGH)


# ---------------------------------------------------------------------------- imagination back ends
def test_world_model_dynamics_batches_candidates_and_is_reproducible():
    torch.manual_seed(0)
    dynamics = WorldModelDynamics(tiny_model())
    history = History(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
                      np.zeros((4, 2), np.float32))
    actions = torch.rand(5, 3, 2) * 2 - 1
    dynamics.reset(7)
    first = dynamics.imagine(history, actions)
    dynamics.reset(7)
    assert torch.equal(first, dynamics.imagine(history, actions))
    assert first.shape == (5, 3, 16, 16, 3) and first.dtype == torch.uint8 and dynamics.calls == 1


def test_simulator_dynamics_imagines_the_real_future_and_leaves_the_episode_untouched():
    env = make_pixel_env(POINT, 16)
    env.reset(seed=2)
    before = env.unwrapped.get_sim_state()
    actions = torch.tensor(np.random.default_rng(1).uniform(-1, 1, (3, 4, 2)), dtype=torch.float32)
    imagined = SimulatorDynamics(env).imagine(History.start(np.zeros((16, 16, 3), np.uint8), 4, 2), actions)
    after = env.unwrapped.get_sim_state()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    real = [env.step(a.numpy())[0] for a in actions[1]]
    np.testing.assert_array_equal(imagined[1].numpy(), np.stack(real))
    env.unwrapped.set_sim_state(before)
    last = SimulatorDynamics(env).imagine_last(History.start(np.zeros((16, 16, 3), np.uint8), 4, 2), actions)
    assert last.shape == (3, 1, 16, 16, 3) and torch.equal(last, imagined[:, -1:])


class EveryFrame:
    """The simulator without ``imagine_last``: planners must render every imagined frame."""

    def __init__(self, dynamics):
        self.dynamics = dynamics

    calls = property(lambda self: self.dynamics.calls)

    def reset(self, seed):
        self.dynamics.reset(seed)

    def imagine(self, history, actions):
        return self.dynamics.imagine(history, actions)


def test_rendering_only_the_last_frames_changes_no_decision():
    env = make_pixel_env(POINT, 16)
    runs = []
    for dynamics in (SimulatorDynamics(env), EveryFrame(SimulatorDynamics(env))):
        planner = make_planner("cem", dynamics, make_cost("keypoint", POINT), LOW, HIGH, BUDGET)
        runs.append(run_episode(env, planner, 5, max_steps=6, stop_on_success=False))
    fast, slow = runs
    np.testing.assert_array_equal(fast.actions, slow.actions)
    np.testing.assert_array_equal(fast.imagined, slow.imagined)  # the chosen videos, every frame, still shown
    assert fast.model_calls_per_action == slow.model_calls_per_action + 1  # + rendering the chosen video


# ---------------------------------------------------------------------------- the MPC loop
SEEDS = (11, 12, 13)
BUDGET = PlannerConfig(candidates=16, horizon=5, iterations=2)


def run_oracle(planner_name: str, cost: str, seed: int):
    env = make_pixel_env(POINT, 32)
    planner = make_planner(planner_name, SimulatorDynamics(env), make_cost(cost, POINT),
                           env.action_space.low, env.action_space.high, BUDGET)
    return run_episode(env, planner, seed)


@pytest.mark.parametrize("planner_name", ["cem", "mppi"])
def test_oracle_mpc_solves_point_reach_with_the_keypoint_cost(planner_name):
    results = [run_oracle(planner_name, "keypoint", seed) for seed in SEEDS]
    assert all(r.success for r in results), [r.summary() for r in results]
    r = results[0]
    assert r.frames.shape == (r.steps + 1, 32, 32, 3) and r.actions.shape == (r.steps, 2)
    assert r.imagined.shape == (len(r.latency_s), BUDGET.horizon, 32, 32, 3)
    assert r.model_calls_per_action == BUDGET.iterations + 1  # + the chosen candidate's video, rendered once
    assert r.aligned_imagination().shape == r.frames.shape


def test_oracle_mpc_solves_point_reach_with_the_task_agnostic_cost():
    results = [run_oracle("cem", "blur", seed) for seed in SEEDS]
    assert all(r.success for r in results), [r.summary() for r in results]


def test_random_actions_do_not_solve_point_reach():
    env = make_pixel_env(POINT, 32)
    results = [run_episode(env, RandomPlanner(LOW, HIGH, horizon=1), seed) for seed in SEEDS]
    assert sum(r.success for r in results) <= 1
    assert all(r.imagined is None and r.model_calls_per_action == 0 for r in results)


def test_mpc_executes_k_actions_per_decision_and_rejects_bad_k():
    env = make_pixel_env(POINT, 16)
    planner = make_planner("shooting", SimulatorDynamics(env), make_cost("keypoint", POINT), LOW, HIGH,
                           PlannerConfig(candidates=4, horizon=3, iterations=1))
    result = run_episode(env, planner, 0, execute=3, max_steps=7, stop_on_success=False)
    assert result.steps == 7 and result.decision_steps.tolist() == [0, 3, 6]
    with pytest.raises(ValueError, match="execute"):
        run_episode(env, planner, 0, execute=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_model_planner_runs_on_cuda_like_on_the_cpu():
    config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id=POINT, num_steps=1)
    torch.manual_seed(0)
    cpu_model = WorldModel(config).eval()
    cuda_model = WorldModel(config).eval().to("cuda")
    cuda_model.load_state_dict(cpu_model.state_dict())
    env = make_pixel_env(POINT, 16)
    results = []
    for model in (cpu_model, cuda_model):
        planner = make_planner("cem", WorldModelDynamics(model, num_steps=1), make_cost("keypoint", POINT), LOW, HIGH,
                               PlannerConfig(candidates=8, horizon=3, iterations=2, elites=2))
        results.append(run_episode(env, planner, 3, max_steps=4, stop_on_success=False))
    cpu, cuda = results
    assert cuda.actions.shape == cpu.actions.shape == (4, 2) and np.isfinite(cuda.actions).all()
    assert (np.abs(cuda.actions) <= 1).all()
    assert cuda.imagined.dtype == np.uint8 and cuda.imagined.shape == cpu.imagined.shape
