"""Hardening of the Ray paths and of plan evaluation: a hung worker is cancelled and its episode retried, every
worker failure ends in one line naming the work, plan evaluation resumes episode by episode, sweep folders that
this package did not record are refused (issue 14)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from worldvid.agents import PlannerConfig
from worldvid.data.store import EpisodeStore
from worldvid.experiments.plan_config import PlanEvalConfig
from worldvid.experiments.plan_eval import evaluate_planner
from worldvid.experiments.plan_workers import FaultInjection
from worldvid.parallel import WorkerError, WorkerTimeoutError, bounded_queue

POINT = "worldvid/PointReach-v0"
ORACLE = PlanEvalConfig(env_id=POINT, planner="cem", cost="keypoint", oracle=True, episodes=3, max_steps=4, size=16,
                        planner_config=PlannerConfig(candidates=4, horizon=2, iterations=1, elites=2))
WALL_CLOCK = ("wall_seconds", "episodes_per_second", "seconds_per_decision")
"""The summary fields a resumed run may not reproduce (measured times)."""


@pytest.fixture
def ray_address(ray_session) -> dict[str, str]:
    """The environment that makes a command join the session's Ray (``init_ray`` reads ``RAY_ADDRESS``) instead of
    starting its own: seconds instead of ten."""
    return {"RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "worldvid.cli", *args], capture_output=True, text=True, timeout=240,
                          env=environment)


def error_lines(done: subprocess.CompletedProcess, command: str) -> list[str]:
    """The error reports in stderr (a progress bar may precede one on its line); asserts the run failed without
    a traceback."""
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr, done.stderr[-3000:]
    return re.findall(rf"worldvid {command}: error: [^\r\n]*", done.stderr)


def assert_same_episodes(a, b) -> None:
    assert [r.seed for r in a.results] == [r.seed for r in b.results]
    for x, y in zip(a.results, b.results):
        assert x.success == y.success and x.final_distance == y.final_distance
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.frames, y.frames)


def without_wall_clock(summary: dict) -> dict:
    row = {k: v for k, v in summary["summary"].items() if k not in WALL_CLOCK}
    episodes = [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in summary["episodes"]]
    return {**summary, "summary": row, "episodes": episodes}


# ---------------------------------------------------------------------------- hung and failing Ray workers
def test_a_hung_worker_is_killed_at_its_deadline_and_its_episode_retried(ray_session, tmp_path, guard):
    calm = evaluate_planner(ORACLE, progress=False)
    start = time.monotonic()
    hung = evaluate_planner(replace(ORACLE, workers=2, episode_timeout_s=4), progress=False,
                            _faults=FaultInjection(str(tmp_path), hang_at=1))
    assert (tmp_path / "hang-1-0").exists()  # episode 1's first attempt really slept forever
    assert time.monotonic() - start >= 4  # ... until its deadline
    assert_same_episodes(calm, hung)


def test_an_episode_that_keeps_hanging_ends_the_run_in_one_line_and_a_rerun_completes_it(ray_session, tmp_path, guard):
    faults = FaultInjection(str(tmp_path), hang_at=1)
    config = replace(ORACLE, workers=2, episode_timeout_s=3, max_episode_retries=0)
    with pytest.raises(WorkerTimeoutError, match=r"^episode 1 \(seed 1\) did not finish within 3 s \(1 attempt\); "):
        evaluate_planner(config, out=tmp_path / "out", progress=False, _faults=faults)
    kept = sorted(p.name for p in (tmp_path / "out" / "episodes").glob("*.json"))
    # the episodes that finished before episode 1's deadline are kept (which ones depends on how fast the other
    # slot's worker started, so only the hung one is named) ...
    assert "episode_0001.json" not in kept and set(kept) <= {"episode_0000.json", "episode_0002.json"}
    again = evaluate_planner(replace(config, workers=1), out=tmp_path / "out", progress=False, _faults=faults)
    assert again.kept == len(kept)  # ... and a rerun (the fault spent) runs only the missing ones
    assert_same_episodes(evaluate_planner(ORACLE, progress=False), again)


@pytest.mark.parametrize("error", [OSError, KeyError, TypeError])
def test_an_exception_raised_in_a_task_is_one_line_naming_the_task_and_keeps_its_type(ray_session, error):
    ray = ray_session

    @ray.remote(num_cpus=0, max_retries=0)
    def work(key: int) -> int:
        if key == 1:
            raise error("bad\ninput")
        return key

    results: dict[int, int] = {}
    with pytest.raises(error) as caught:
        bounded_queue(range(3), lambda slot, key: work.remote(key), results.__setitem__, slots=2, timeout_s=60,
                      what="shard", max_retries=2)
    assert isinstance(caught.value, WorkerError) and caught.value.key == 1
    said = " ".join(str(error("bad\ninput")).split())  # KeyError quotes its message
    assert str(caught.value) == f"shard 1 failed: {error.__name__}: {said}"


def test_a_hung_task_is_cancelled_at_its_deadline_and_retried(ray_session, tmp_path):
    ray = ray_session

    @ray.remote(num_cpus=0, max_retries=0)
    def work(key: int, marker: str) -> int:
        if key == 0 and not os.path.exists(marker):  # the first attempt hangs
            open(marker, "w").close()
            time.sleep(10_000)
        return key * 10

    results: dict[int, int] = {}
    retried: list[int] = []
    marker = str(tmp_path / "hung")
    bounded_queue(range(3), lambda slot, key: work.remote(key, marker), results.__setitem__, slots=2, timeout_s=3,
                  what="shard", max_retries=1, on_retry=retried.append)
    assert results == {0: 0, 1: 10, 2: 20} and len(retried) == 1


# ---------------------------------------------------------------------------- one line from the command line
def test_collect_with_two_workers_fails_in_the_same_one_line_as_with_one(tmp_path, ray_address):
    # an explicit --policy scripted fails in the workers (the default, mixed, falls back to random there)
    args = ["collect", "--env", "Reacher-v5", "--policy", "scripted", "--episodes", "4", "--episodes-per-shard", "2",
            "--size", "16"]
    one = error_lines(cli(*args, "--workers", "1", "--out", str(tmp_path / "w1")), "collect")
    two = error_lines(cli(*args, "--workers", "2", "--out", str(tmp_path / "w2"), env=ray_address), "collect")
    assert len(one) == len(two) == 1
    cause = "Reacher-v5 has no scripted policy; use --policy random"
    assert re.sub(r"shard \d", "shard N", one[0]) == re.sub(r"shard \d", "shard N", two[0])  # which shard fails first varies
    assert one[0].endswith(cause) and "shard 0 failed" in one[0]


def test_plan_worker_that_dies_or_raises_ends_in_one_line_naming_the_episode(tmp_path, ray_address):
    faults = {"marker_dir": str(tmp_path), "crash_at": 1}
    done = cli("plan", "--env", POINT, "--oracle", "--episodes", "2", "--seed", "5", "--workers", "2",
               "--max-episode-retries", "0", "--max-episode-steps", "3", "--size", "16", "--candidates", "4",
               "--horizon", "2", "--iterations", "1", "--out", str(tmp_path / "p"),
               env={"WORLDVID_INJECT_FAULTS": json.dumps(faults), **ray_address})
    assert re.fullmatch(r"worldvid plan: error: episode 1 \(seed 6\) failed 1 time: its worker died \(\w+Error\)",
                        *error_lines(done, "plan"))
    with pytest.raises(KeyError) as raised:  # an exception in the episode, here in this process (one worker)
        evaluate_planner(replace(ORACLE, episodes=2), progress=False,
                         _faults=FaultInjection(str(tmp_path), raise_at=1, error="KeyError"))
    assert isinstance(raised.value, WorkerError)
    assert str(raised.value) == "episode 1 (seed 1) failed: KeyError: 'fault injected at episode 1'"


# ---------------------------------------------------------------------------- plan evaluation resumes
def test_plan_killed_mid_run_resumes_episode_by_episode_to_the_uninterrupted_result(tmp_path):
    config = replace(ORACLE, episodes=4, seed=3)
    whole = evaluate_planner(config, out=tmp_path / "whole", record=tmp_path / "whole_store", progress=False)
    args = ["plan", "--env", POINT, "--oracle", "--episodes", "4", "--seed", "3", "--max-episode-steps", "4",
            "--size", "16", "--candidates", "4", "--elites", "2", "--horizon", "2", "--iterations", "1",
            "--out", str(tmp_path / "out"),
            "--record", str(tmp_path / "store")]
    faults = {"WORLDVID_INJECT_FAULTS": json.dumps({"marker_dir": str(tmp_path), "crash_at": 2})}
    killed = cli(*args, env=faults)  # the process dies (os._exit, as kill -9) when it starts episode 2
    assert killed.returncode == 1 and (tmp_path / "crash-2-0").exists()
    assert not (tmp_path / "out" / "summary.json").exists()
    rerun = cli(*args, env=faults)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "kept 2 finished episode(s)" in rerun.stdout
    assert "episode 0 seed" not in rerun.stdout and "episode 2 seed 5" in rerun.stdout  # only the rest ran
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    reference = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert without_wall_clock(saved) == without_wall_clock({**reference, "summary": {
        **reference["summary"], "recorded_store": str(tmp_path / "store")}})
    for index in range(4):
        name = f"episode_{index:04d}"
        assert json.loads((tmp_path / "out" / "episodes" / f"{name}.json").read_text()) == \
            json.loads((tmp_path / "whole" / "episodes" / f"{name}.json").read_text())
        a = np.load(tmp_path / "out" / "episodes" / f"{name}.npz")
        b = np.load(tmp_path / "whole" / "episodes" / f"{name}.npz")
        assert set(a.files) == set(b.files)
        for key in set(a.files) - {"latency_s"}:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
    store, reference_store = EpisodeStore(tmp_path / "store"), EpisodeStore(tmp_path / "whole_store")
    assert store.episode_ids == reference_store.episode_ids == [0, 1, 2, 3]
    for index in range(4):
        x, y = store.read_episode(index), reference_store.read_episode(index)
        assert x.seed == y.seed == 3 + index
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.actions, y.actions)
    assert whole.summary["episodes"] == 4


def test_plan_rerun_with_another_config_is_refused_by_name_and_a_corrupt_episode_is_redone(tmp_path):
    out = tmp_path / "out"
    first = evaluate_planner(ORACLE, out=out, progress=False)
    before = (out / "summary.json").read_bytes()
    assert evaluate_planner(ORACLE, out=out, progress=False).kept == 3  # a rerun of a finished run changes nothing
    assert (out / "summary.json").read_bytes() == before
    bigger = replace(ORACLE, planner_config=replace(ORACLE.planner_config, candidates=8))
    with pytest.raises(ValueError, match=r"another configuration \(planner_config.candidates: 4 there, 8 asked\)"):
        evaluate_planner(bigger, out=out, progress=False)
    assert (out / "summary.json").read_bytes() == before  # nothing overwritten
    (out / "episodes" / "episode_0001.npz").write_bytes(b"torn")  # a damaged episode file is redone
    again = evaluate_planner(replace(ORACLE, workers=1, episode_timeout_s=99), out=out, progress=False)
    assert again.kept == 2
    assert_same_episodes(first, again)


# ---------------------------------------------------------------------------- sweep folders
class _Payload:
    """Unpickling this creates the file ``path``: the stand-in for code a crafted Tune state file would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def planted_tune_state(out, marker) -> None:
    import pickle

    (out / "tune").mkdir(parents=True)
    for name in ("tuner.pkl", "experiment_state-2024-01-01_00-00-00.json"):
        (out / "tune" / name).write_bytes(pickle.dumps(_Payload(str(marker))))


def test_sweep_refuses_tune_state_it_did_not_record_in_one_line_and_unpickles_nothing(tmp_path):
    out, marker = tmp_path / "sweep", tmp_path / "code_ran"
    planted_tune_state(out, marker)
    (tmp_path / "model").mkdir()
    done = cli("sweep", "--family", "planner", "--model", str(tmp_path / "model"), "--env", POINT, "--out", str(out))
    said = (f"worldvid sweep: error: {out / 'tune'} holds Ray Tune state that this package did not record (no "
            "sweep.json); worldvid never restores Tune state (Tune unpickles it): use another --out folder")
    assert error_lines(done, "sweep") == [said]
    assert not marker.exists() and not (out / "sweep.json").exists()


def test_sweep_resumes_from_its_own_json_records_only_and_refuses_other_settings_by_name(tmp_path):
    from worldvid.experiments import sweep

    out, marker = tmp_path / "sweep", tmp_path / "code_ran"
    (tmp_path / "model").mkdir()
    fixed = {"env_id": POINT, "model": str(tmp_path / "model"), "cost": "keypoint", "episodes": 1, "seed": 0}
    grid = {"planner": ["cem", "mppi"], "num_steps": [1], "candidates": [4], "horizon": [2]}
    # the records a first run leaves: sweep.json, then one JSON per finished trial (written here, as that run would)
    out.mkdir()
    saved_fixed = {**fixed, "model": str((tmp_path / "model").resolve())}
    (out / "sweep.json").write_text(json.dumps({"family": "planner", "fixed": saved_fixed}))
    figures = {}
    for k, planner in enumerate(grid["planner"]):
        point = {"planner": planner, "num_steps": 1, "candidates": 4, "horizon": 2}
        figures[planner] = {"success_rate": k / 2, "ci_low": 0.0, "ci_high": 1.0, "seconds_per_decision": 0.1 + k,
                            "final_distance_mean": 0.5}
        path = sweep._record_path(out, point)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"point": point, "metrics": figures[planner]}))
    planted_tune_state(out, marker)  # Tune's state of that run: a rerun never reads it
    table = sweep.run_sweep("planner", out, fixed, grid)  # every trial recorded: no trial runs, no Ray
    assert not marker.exists()
    assert list(table["planner"]) == ["cem", "mppi"]
    assert list(table["seconds_per_decision"]) == [figures["cem"]["seconds_per_decision"],
                                                   figures["mppi"]["seconds_per_decision"]]
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header.startswith("planner,num_steps,candidates,horizon,success_rate")
    with pytest.raises(ValueError, match=r"holds a sweep with other settings \(seed: 0 there, 1 asked\)"):
        sweep.run_sweep("planner", out, {**fixed, "seed": 1}, grid)
