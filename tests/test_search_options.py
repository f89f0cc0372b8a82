"""The sampling planners' search options (``PlannerConfig``): settle steps, the commit margin, stall restarts and the
shrinking horizon, each on test dynamics whose frames encode the actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_planners import HIGH, LOW, POINT, TARGET, CountedActions, EncodedActions, quadratic_cost
from worldvid.agents import CEMPlanner, History, PlannerConfig, RandomPlanner, run_episode, run_lockstep
from worldvid.envs.factory import make_pixel_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_settle_scores_steps_of_no_action_that_are_imagined_but_never_executed():
    def last_frame_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:
        return ((frames[..., 0, 0, :2] - TARGET[0]) ** 2).sum(-1)  # wants the last imagined action = TARGET[0]

    config = PlannerConfig(candidates=32, horizon=3, action_repeat=2, iterations=3, settle=4, reduce="final")
    history, goal = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2), np.zeros((4, 4, 3), np.uint8)
    low = np.array([0.2, -1.0], np.float32)  # no action is 0, clipped into the box: [0.2, 0]
    dynamics = CountedActions()
    plan = CEMPlanner(dynamics, last_frame_cost, low, HIGH, config, seed=0).plan(history, goal)
    assert plan.actions.shape == (6, 2) and plan.imagined.shape[0] == 6 + 4  # settle steps imagined, not executed
    np.testing.assert_array_equal(plan.imagined[6:, 0, 0, :2], np.tile([0.2, 0.0], (4, 1)).astype(np.float32))
    assert plan.cost == pytest.approx(float(((torch.tensor([0.2, 0.0]) - TARGET[0]) ** 2).sum()))  # read at rest
    assert sum(dynamics.sizes) * 10 == config.imagined_per_decision
    with pytest.raises(ValueError, match="settle"):
        PlannerConfig(settle=-1)


def test_commit_margin_keeps_the_previous_plan_unless_a_candidate_gains_clearly_more():
    history, goal = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2), np.zeros((4, 4, 3), np.uint8)
    target = {"point": TARGET}

    def moving_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:
        return ((frames[..., 0, 0, :2] - target["point"]) ** 2).sum(-1)

    def shifted(plan) -> torch.Tensor:  # the warm start of the next decision (warm_tail 'zero')
        return torch.cat([torch.as_tensor(plan.actions[1:]), torch.zeros(1, 2)])

    def decisions(margin: float) -> list:
        config = PlannerConfig(candidates=64, horizon=4, iterations=4, elites=8, init_std=0.8, noise_correlation=0.0,
                               reduce="mean", warm_tail="zero", commit_margin=margin)
        planner = CEMPlanner(EncodedActions(), moving_cost, LOW, HIGH, config, seed=0)
        target["point"] = TARGET
        plans = [planner.plan(history, goal)]
        target["point"] = shifted(plans[-1]) + 0.1  # the shifted plan stays nearly as good as the best
        plans.append(planner.plan(history, goal, shift=1))
        target["point"] = -TARGET  # the shifted plan now does worse than doing nothing
        plans.append(planner.plan(history, goal, shift=1))
        kept = shifted(plans[-1])
        # out of reach at the end: the shifted plan gains a little on doing nothing, a new one 10x more, though its
        # cost is still 64% of the shifted plan's (12.5: a margin on costs instead of gains would keep it)
        target["point"] = torch.cat([kept[:3], torch.tensor([[5.0, 5.0]])])
        plans.append(planner.plan(history, goal, shift=1))
        return plans

    plans = decisions(0.5)
    np.testing.assert_array_equal(plans[1].actions, shifted(plans[0]).numpy())  # no clear gain: the plan goes on
    for previous, plan, bound in zip(plans[1:3], plans[2:], (0.1, 8.1)):
        assert not np.array_equal(plan.actions, shifted(previous).numpy()) and plan.cost < bound  # clear gains win
    free = decisions(0.0)
    assert not np.array_equal(free[1].actions, shifted(free[0]).numpy())  # without a margin the best one wins
    with pytest.raises(ValueError, match="commit_margin"):
        PlannerConfig(commit_margin=-0.1)


def test_stall_rounds_search_again_only_where_no_plan_gains_on_doing_nothing():
    history, goal = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2), np.zeros((4, 4, 3), np.uint8)

    def needle_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:  # flat but for a narrow well
        distance = ((frames[..., 0, 0, :2] - torch.tensor([0.95, -0.95])) ** 2).sum(-1)
        return 1.0 - torch.exp(-distance / 0.002)

    plans = {}
    for rounds in (0, 2):
        config = PlannerConfig(candidates=16, horizon=2, iterations=2, elites=4, reduce="mean", stall_rounds=rounds)
        plans[rounds] = CEMPlanner(EncodedActions(), needle_cost, LOW, HIGH, config, seed=0).plan(history, goal)
    assert plans[0].model_calls == 2 and plans[2].model_calls == 6  # stalled: two more searches of 2 rounds
    assert plans[2].cost <= plans[0].cost  # the first rounds are the same; more search only adds candidates
    config = PlannerConfig(candidates=16, horizon=4, iterations=2, elites=4, reduce="mean", stall_rounds=2)
    plan = CEMPlanner(EncodedActions(), quadratic_cost, LOW, HIGH, config, seed=0).plan(history, goal)
    assert plan.model_calls == 2  # a plan that gains clearly on doing nothing needs no more search
    for bad in (dict(stall_rounds=-1), dict(stall_gain=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PlannerConfig(**bad)


class IntegratedActions(EncodedActions):
    """Test dynamics: frame h holds the position sum(a[:h + 1]) of a point that starts at the origin."""

    def imagine(self, history: History, actions: torch.Tensor) -> torch.Tensor:
        return super().imagine(history, actions.cumsum(1))


def test_a_shrinking_horizon_imagines_no_action_after_the_time_limit_and_plans_to_arrive_in_time():
    history, goal = History.start(np.zeros((4, 4, 3), np.uint8), 4, 2), np.zeros((4, 4, 3), np.uint8)
    point = torch.tensor([1.8, 0.0])  # two full steps away: reachable in time only by pushing at once

    def end_cost(frames: torch.Tensor, goal: np.ndarray) -> torch.Tensor:
        return ((frames[..., 0, 0, :2] - point) ** 2).sum(-1)

    def plan(shrink: bool, remaining: int | None):
        config = PlannerConfig(candidates=64, horizon=6, iterations=4, elites=8, settle=2, shrink_horizon=shrink)
        return CEMPlanner(IntegratedActions(), end_cost, LOW, HIGH, config, seed=0).plan(history, goal,
                                                                                         remaining=remaining)

    timed = plan(True, remaining=2)
    assert timed.actions.shape == (6, 2) and timed.imagined.shape[0] == 6 + 2
    np.testing.assert_array_equal(timed.imagined[2:], np.broadcast_to(timed.imagined[1], timed.imagined[2:].shape))
    assert timed.actions[:2, 0].sum() > 1.6 and timed.cost < 0.05  # there by the limit, and scored there
    free = plan(False, remaining=2)  # the limit unseen: the plan may arrive later
    assert free.cost < 0.2 and free.imagined[1, 0, 0, 0] < 1.6
    unlimited = plan(True, remaining=None)
    np.testing.assert_array_equal(unlimited.actions, free.actions)
    with pytest.raises(ValueError, match="remaining"):
        plan(True, remaining=0)


def test_the_mpc_loop_tells_the_planner_the_steps_left():
    class Recording(RandomPlanner):
        def plan(self, history, goal_frame, shift=1, remaining=None):
            seen.append(remaining)
            return super().plan(history, goal_frame, shift, remaining)

    seen: list[int | None] = []
    with make_pixel_env(POINT, size=16) as env:
        run_episode(env, Recording(LOW, HIGH, horizon=3, seed=0), seed=1, execute=2, max_steps=5,
                    stop_on_success=False, keep_imagined=False)
    assert seen == [5, 3, 1]
    seen.clear()
    envs = [make_pixel_env(POINT, size=16) for _ in range(2)]
    try:
        run_lockstep(envs, [Recording(LOW, HIGH, horizon=3, seed=s) for s in (0, 1)], [1, 2], execute=2,
                     max_steps=5, stop_on_success=False, keep_imagined=False)
    finally:
        for env in envs:
            env.close()
    assert seen == [5, 5, 3, 3, 1, 1]
