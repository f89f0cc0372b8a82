"""The demo pipeline end to end on a tiny configuration, and its rerun reusing finished stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_runs_end_to_end_and_reuses_finished_stages(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "worldvid.cli", "demo", "--out", str(out), "--size", "16", "--episodes", "4",
           "--workers", "1", "--train-steps", "3", "--plan-episodes", "1", "--max-episode-steps", "2", "--channels", "8", "16",
           "--cost-steps", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "copy-last-frame" in done.stdout and "random" in done.stdout and "artefacts" in done.stdout
    result = json.loads((out / "results.json").read_text())
    labels = [row["label"] for row in result["planning"]]
    assert labels == ["cem/keypoint/model", "cem/blur/model", "cem/learned/model", "cem/keypoint/oracle",
                      "cem/blur/oracle", "cem/learned/oracle", "random/-/-"]
    assert (out / "cost" / "model" / "model.safetensors").is_file()
    for path in result["artefacts"].values():
        assert os.path.exists(path), path
    assert list((out / "videos").glob("*.mp4")) and list((out / "plan" / "cem_keypoint_model" / "videos").glob("*.mp4"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, reused") >= 10  # train, evaluation, cost, 7 planning rows, videos

    # What a kill leaves: training stopped before its first metrics row (empty metrics.jsonl, no marker), a
    # temporary video of a killed render: neither counts as finished, the rerun completes both.
    (out / "stages" / "train.json").unlink()
    (out / "run" / "metrics.jsonl").write_text("")
    (out / "stages" / "videos.json").unlink()
    for video in (out / "videos").glob("*.mp4"):
        video.unlink()
    (out / "videos" / ".open_loop_0.tmp-99999.mp4").write_bytes(b"half a video")
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "train 3 steps\n" in third.stdout and "render real-vs-imagined videos\n" in third.stdout
    assert third.stdout.count("finished earlier, reused") == again.stdout.count("finished earlier, reused") - 2
    assert [p for p in (out / "videos").glob("*.mp4") if not p.name.startswith(".")]
