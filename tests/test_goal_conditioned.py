"""The rendering backend chosen when the first renderer is made."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import mujoco
import pytest

from worldvid.envs import gl_backend

SIZE = 16


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{"size": SIZE, **kwargs})


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
