"""MuJoCo's OpenGL backend, chosen when the first renderer is made: the user's ``MUJOCO_GL``, else EGL, else OSMesa.

MuJoCo picks its GL context class from ``MUJOCO_GL`` once, when ``mujoco`` is imported, and PyOpenGL fixes its
platform when it is first imported; a backend that fails half-way (EGL's library present, no usable device)
leaves the process unable to switch to another. So each candidate is probed in a fresh interpreter, and only
the first one that renders is loaded into this process. The choice is exported as ``MUJOCO_GL``, so child
processes (vector-env workers, Ray workers started later) load it directly without probing again.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

BACKENDS = ("egl", "osmesa")
"""Headless backends tried in order when the user has not set ``MUJOCO_GL``: EGL (GPU, or Mesa's software
EGL), then OSMesa (software)."""

INSTALL_HINT = ("install EGL (apt-get install libegl1, with a GPU driver or Mesa) or OSMesa (apt-get install "
                "libosmesa6), or set MUJOCO_GL to a backend that works here (e.g. glfw with a display)")
"""What to do when no backend works, said once wherever it is needed."""

_PROBE = ("import mujoco; mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8).render()")
"""What a probe runs: one 8x8 frame of an empty scene."""

_chosen: str | None = None
"""This process's backend once ``ensure_backend`` has run."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def probe_backend(name: str, timeout: float = 60.0) -> None:
    """Render one frame with ``MUJOCO_GL=name`` in a fresh interpreter; RuntimeError with its last error line if it
    cannot (an unknown name, missing libraries, no device, a hang past ``timeout`` seconds)."""
    environ = {**os.environ, "MUJOCO_GL": name}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no frame within {timeout:g} s") from None
    if done.returncode != 0:
        raise RuntimeError(_last_line(done.stderr))


def choose_backend(candidates: Sequence[str] = BACKENDS, probe: Callable[[str], None] = probe_backend) -> str:
    """The first of ``candidates`` for which ``probe(name)`` returns; RuntimeError in one line naming every
    failure and what to install when none does. ``probe`` raises RuntimeError, OSError or ImportError to
    reject a backend."""
    if isinstance(candidates, str) or not candidates:
        raise ValueError(f"candidates must be a non-empty sequence of MUJOCO_GL names, got {candidates!r}")
    failures = []
    for name in candidates:
        try:
            probe(name)
        except (RuntimeError, OSError, ImportError) as error:
            failures.append(f"{name}: {error}")
        else:
            return name
    raise RuntimeError(f"no OpenGL backend for MuJoCo rendering works here ({'; '.join(failures)}); {INSTALL_HINT}")


def _install(name: str) -> None:
    """Make ``mujoco.Renderer`` create ``name``'s GL contexts in this process (it reads its module's
    ``gl_context.GLContext`` at construction, fixed from ``MUJOCO_GL`` when mujoco was imported)."""
    import mujoco

    context_class = importlib.import_module(f"mujoco.{name}").GLContext
    gl_context = getattr(sys.modules[mujoco.Renderer.__module__], "gl_context", None)
    if gl_context is None:
        raise RuntimeError(f"this mujoco {mujoco.__version__} has no gl_context to switch: set MUJOCO_GL={name} "
                           "before anything imports mujoco")
    gl_context.GLContext = context_class


def ensure_backend() -> str:
    """This process's MuJoCo GL backend, chosen on the first call (before the first renderer is made).

    A ``MUJOCO_GL`` the user set is kept as it is (mujoco loaded it on import). Otherwise the first of
    ``BACKENDS`` that renders is loaded here and exported as ``MUJOCO_GL``; RuntimeError in one line
    (``choose_backend``) when none does.
    """
    global _chosen
    if _chosen is None:
        user = os.environ.get("MUJOCO_GL", "").strip()
        if user:
            _chosen = user.lower()
        else:
            name = choose_backend()
            _install(name)
            os.environ["MUJOCO_GL"] = name
            _chosen = name
    return _chosen


def renderer_failure(error: BaseException) -> str:
    """One line for a renderer that could not be made although a backend was chosen."""
    backend = os.environ.get("MUJOCO_GL", "")
    return (f"could not create a MuJoCo OpenGL context with MUJOCO_GL={backend!r}: {_last_line(str(error))}; "
            f"unset MUJOCO_GL to let worldvid try {' then '.join(BACKENDS)}, or {INSTALL_HINT}")
