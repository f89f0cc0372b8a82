"""DAgger-style aggregation: record planner and oracle episodes, fine-tune on them, continue where it stopped."""

from __future__ import annotations

import json

import pytest

from worldvid.agents import PlannerConfig
from worldvid.experiments.dagger import DaggerConfig, run_dagger
from worldvid.data.collect import collect
from worldvid.data.store import EpisodeStore
from worldvid.model import WorldModelConfig
from worldvid.train import TrainConfig, train

POINT = "worldvid/PointReach-v0"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(data store, run) of a tiny 16x16 PointReach model trained for 2 steps."""
    root = tmp_path_factory.mktemp("dagger")
    collect(POINT, 4, root / "data", size=16, episodes_per_shard=4, progress=False)
    config = WorldModelConfig(action_dim=2, frame_size=16, block_channels=(8, 16), env_id=POINT, num_steps=1)
    train(root / "data", root / "run", TrainConfig(steps=2, batch_size=4, warmup_steps=1), config, progress=False)
    return root / "data", root / "run"


def tiny(data, run, out, **kw) -> DaggerConfig:
    return DaggerConfig(env_id=POINT, model=str(run), data=str(data), out=str(out), episodes=2, oracle_episodes=2,
                        steps=2, workers=1, max_steps=4, planner_config=PlannerConfig(candidates=4, horizon=2,
                        iterations=1, elites=2), train_overrides={"batch_size": 4, "warmup_steps": 1}, **kw)


def test_two_rounds_record_and_fine_tune_then_a_rerun_does_nothing(base, tmp_path):
    data, run = base
    rows = run_dagger(tiny(data, run, tmp_path, rounds=2), progress=False)
    assert [r["seeds"] for r in rows] == ["1000-1001", "1002-1003"]
    assert rows[1]["model"] == str(tmp_path / "round_0" / "run")  # round 1 plans with round 0's model
    recorded = EpisodeStore(tmp_path / "round_1" / "planner_data")
    assert len(recorded) == 2 and recorded.spec.policy == "plan:cem/keypoint/model" and recorded.spec.seed == 1002
    assert EpisodeStore(tmp_path / "oracle_data").spec.policy == "plan:cem/keypoint/oracle"
    saved = json.loads((tmp_path / "round_1" / "run" / "train_config.json").read_text())
    assert [s["data"].split("/")[-1] for s in saved["stores"]] == ["data", "planner_data", "planner_data", "oracle_data"]
    assert saved["train"]["data_weights"] == [0.5, 0.15, 0.15, 0.2]
    assert saved["init_from"] == str((tmp_path / "round_0" / "run").resolve())
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = run_dagger(tiny(data, run, tmp_path, rounds=2), progress=False)
    assert again == rows
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert changed == [tmp_path / "dagger.json"]  # nothing recorded or trained twice


def test_the_recording_runs_take_the_goal_set_the_executed_steps_and_run_to_the_step_cap(base, tmp_path):
    data, run = base
    run_dagger(tiny(data, run, tmp_path, goal_steps=2, execute=2, stop_on_success=False), progress=False)
    for plan, store in (("oracle_plan", "oracle_data"), ("round_0/plan", "round_0/planner_data")):
        saved = json.loads((tmp_path / plan / "summary.json").read_text())["config"]
        assert (saved["goal_steps"], saved["execute"], saved["stop_on_success"]) == (2, 2, False)
        recorded = EpisodeStore(tmp_path / store)
        assert [recorded.episode_length(e) for e in recorded.episode_ids] == [4, 4]  # no episode ended early


def test_bad_settings_fail_before_any_work(base, tmp_path):
    data, run = base
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        tiny(data, run, tmp_path, rounds=0)
    with pytest.raises(FileNotFoundError, match="no world model"):
        run_dagger(tiny(data, tmp_path / "nothing", tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        run_dagger(tiny(data, run, tmp_path / "out", device="gpu"), progress=False)
    assert not (tmp_path / "out").exists()
