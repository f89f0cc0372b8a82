"""worldvid's Gymnasium tasks. Every ``gymnasium.register`` call of the project lives here.

Entry points are strings, so importing this package is cheap and spawned vector-env workers
(which re-import it) see the same registry. Importing it leaves ``MUJOCO_GL`` alone: the rendering backend
is chosen when the first renderer is made (``envs/gl_backend.py``: the user's ``MUJOCO_GL``, else EGL, else
OSMesa).

Every task takes ``PixelMujocoEnv``'s options besides its own keywords: ``goal_conditioned`` (Dict
observations with the goal frame), ``terminate_on_success``, ``width`` / ``height`` (MuJoCo v5's names for
``size``) and ``render_size`` (the side of ``render()`` frames).
"""

from gymnasium.envs.registration import register, registry

TASKS: dict[str, dict] = {
    "worldvid/PointReach-v0": {"entry_point": "worldvid.envs.point_reach:PointReachEnv", "max_episode_steps": 50},
    "worldvid/Push-v0": {"entry_point": "worldvid.envs.push:PushEnv", "max_episode_steps": 100},
    "worldvid/Reacher-v0": {"entry_point": "worldvid.envs.reacher:ReacherEnv", "max_episode_steps": 50},
    "worldvid/PushT-v0": {"entry_point": "worldvid.envs.push_t:PushTEnv", "max_episode_steps": 200},
}
"""The pixel MuJoCo tasks: id -> registration arguments."""

for _env_id, _kwargs in TASKS.items():
    if _env_id not in registry:
        register(id=_env_id, **_kwargs)

DREAM_ID = "worldvid/Dream-v0"
"""The learned simulator (``envs.dream``): ``gym.make(DREAM_ID, model=RUN)`` / ``gym.make_vec(DREAM_ID, num_envs=N,
vectorization_mode="vector_entry_point", model=RUN)``. Not in ``TASKS``: it needs a trained model to exist."""

if DREAM_ID not in registry:
    register(
        id=DREAM_ID,
        entry_point="worldvid.envs.dream:DreamEnv",
        vector_entry_point="worldvid.envs.dream:DreamVectorEnv",
        max_episode_steps=50,  # envs.dream.DEFAULT_MAX_EPISODE_STEPS (not imported: it would load torch)
    )
