"""A goal-reaching distance learned from the project's own video: d(frame, goal frame) in steps.

``GoalDistance`` (the network and its checkpoint folder), ``train_goal_distance`` (``worldvid train-cost``);
``worldvid.costs.LearnedCost`` plans with it.
"""

from worldvid.goal_distance.model import GoalDistance, GoalDistanceConfig
from worldvid.goal_distance.train import GoalDistanceTrainConfig, train_goal_distance

__all__ = ["GoalDistance", "GoalDistanceConfig", "GoalDistanceTrainConfig", "train_goal_distance"]
