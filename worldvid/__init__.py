"""worldvid: a text-free, action-conditioned video diffusion world model for Gymnasium/MuJoCo tasks.

Importing the package registers every worldvid environment, so
``gym.make("worldvid:worldvid/PointReach-v0")`` works from a fresh interpreter.
"""

import worldvid.envs as _envs  # noqa: F401  (registers the environments)

__version__ = "0.1.0"
