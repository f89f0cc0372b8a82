"""The package's shape: one namespace, layers that only point down, a light ``import worldvid``, small modules.

The layer contract is checked here from the source itself (every import statement, at module level or
inside a function), because import-linter's graph builder only walks the ``worldvid/`` folder and would
not see ``envs/``, ``agents/`` and ``experiments/``, which install as ``worldvid.envs`` and so on.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"worldvid": "worldvid", "envs": "worldvid.envs", "agents": "worldvid.agents",
           "experiments": "worldvid.experiments"}
"""Repository folder -> installed package name (pyproject's package-dir)."""

LAYERS = (
    ("cli", ("worldvid.cli",)),
    ("experiments", ("worldvid.experiments",)),
    ("planners", ("worldvid.agents",)),
    ("dream env", ("worldvid.envs.dream", "worldvid.envs.dream_start")),
    ("core", ("worldvid",)),
    ("tasks", ("worldvid.envs",)),
)
"""Top to bottom; a module belongs to the first layer with a matching prefix (the longest prefix wins)."""
RANK = {"cli": 4, "experiments": 3, "planners": 2, "dream env": 2, "core": 1, "tasks": 0}
"""A module may import its own layer or any of lower rank; layers of equal rank (planners, dream env) are
independent of each other."""
FACADE = "worldvid"
"""The package root: it registers the tasks and lazily re-exports the public names, so it is an edge like
the command line, and nothing inside the package may import it."""


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> str:
    best = max(((len(prefix), name) for name, prefixes in LAYERS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer")
    return best[1]


def imports_of(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The worldvid modules ``module`` imports (a ``from X import Y`` of a submodule Y counts as X.Y)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "worldvid" or n.startswith("worldvid."))
    return found


def test_every_product_module_is_in_a_layer_and_imports_only_down():
    broken = []
    for module, path in MODULES.items():
        if module in (FACADE, "worldvid.cli") or module.startswith("worldvid.cli."):
            continue  # the edges import everything
        here = layer_of(module)
        for target in imports_of(module, path):
            if target == FACADE:
                broken.append(f"{module} imports the package root (import the module that defines the name)")
                continue
            if target not in MODULES:
                broken.append(f"{module} imports {target}, which is not a worldvid module")
                continue
            there = layer_of(target)
            if there != here and RANK[there] >= RANK[here]:
                broken.append(f"{module} ({here}) imports {target} ({there})")
    assert not broken, "layer contract broken:\n" + "\n".join(broken)


def test_there_are_no_import_cycles_at_module_level():
    graph = {m: {t for t in imports_of(m, p, top_level_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    # importing a package runs its __init__ first: a module importing its own ancestor package is no cycle
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_violation():
    assert layer_of("worldvid.envs.point_reach") == "tasks" and layer_of("worldvid.envs.dream") == "dream env"
    assert layer_of("worldvid.model.world_model") == "core" and layer_of("worldvid.agents.cem") == "planners"
    assert "worldvid.agents.base" in imports_of("worldvid.agents.cem", MODULES["worldvid.agents.cem"])
    # the rule itself: core -> planners is up, planners -> core is down, dream env -> planners is sideways
    assert RANK[layer_of("worldvid.agents")] > RANK[layer_of("worldvid.train")]
    assert RANK[layer_of("worldvid.envs.dream")] == RANK[layer_of("worldvid.agents")]


def test_no_product_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_users_own_envs_agents_and_experiments_packages_do_not_shadow_worldvids(tmp_path):
    for name in ("envs", "agents", "experiments"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    done = _run("""
        import sys
        import gymnasium as gym
        import worldvid
        env = gym.make("worldvid/PointReach-v0", size=16)
        assert env.reset(seed=0)[0].shape == (16, 16, 3)
        from worldvid.agents import PlannerConfig
        import worldvid.experiments.plan_table
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("envs", "agents", "experiments"))
        assert not leaked, leaked
        print("ok")
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_import_worldvid_loads_no_torch_ray_or_diffusers_and_the_public_names_load_on_use(tmp_path):
    done = _run("""
        import sys
        import worldvid
        heavy = sorted(m for m in ("torch", "ray", "diffusers") if m in sys.modules)
        assert not heavy, heavy
        from worldvid import WorldModel, WorldModelConfig, EpisodeStore, RunFolder, train, make_planner
        assert WorldModel.__module__ == "worldvid.model.world_model"
        assert "torch" in sys.modules
        print("ok")
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        import worldvid

        worldvid.NoSuchThing  # noqa: B018


def test_pyproject_installs_every_package_under_its_namespaced_name():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert set(setuptools["packages"]) == packages
    assert setuptools["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
