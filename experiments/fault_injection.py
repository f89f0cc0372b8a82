"""Kill -9 at seeded points during each command, rerun, and compare with an uninterrupted run.

``python -m worldvid.experiments.fault_injection --kills 20 --out DIR`` runs, for each of ``collect``,
``train``, ``plan``, ``dagger`` and ``demo`` on tiny configurations (16 px PointReach, a few episodes and
steps, one worker, so every process of a command is in one process group): one uninterrupted reference run
(timed), then ``kills`` times: start the command in a fresh folder, SIGKILL its whole process group after a
delay drawn uniformly from the reference's wall time (seeded), rerun the same command to the end, and check
that (a) the rerun exits 0, (b) its results equal the reference's (file bytes of episode shards and manifests,
every weight tensor bit for bit, every saved episode array, and the summaries' fields but wall-clock ones), (c) no temporary or half-swapped file is left.
Writes DIR/fault_injection.json and prints the matrix (command x outcome counts). The test suite runs the
same scenarios with one kill point each (``tests/test_fault_injection.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ENV = "worldvid/PointReach-v0"
LEFTOVER = re.compile(r"\.tmp|\.old-|\.partial")
"""Names a finished command must not leave behind (temporaries of atomic writes and folder swaps)."""
TIMING = re.compile(r"second|wall|latency|_per_s|elapsed|time|date|duration", re.IGNORECASE)
"""Result fields that measure wall-clock time (they differ between any two runs)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "worldvid.cli", *args]


# ---------------------------------------------------------------------------- what a finished run made
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_timing(value: Any) -> Any:
    """JSON ``value`` with every wall-clock field (by name) and every absolute path dropped."""
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not TIMING.search(k)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return value


def _safetensors(path: Path) -> dict[str, Any]:
    """Every tensor's sha256 and the metadata (safetensors writes its metadata entries in a random order, so two
    files of bit-identical weights can differ in their header's bytes)."""
    from safetensors.numpy import load_file, safe_open

    with safe_open(str(path), "np") as f:
        metadata = dict(sorted((f.metadata() or {}).items()))
    tensors = load_file(str(path))
    return {"metadata": metadata,
            **{k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in sorted(tensors.items())}}


def _npz(path: Path) -> dict[str, str]:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: hashlib.sha256(np.ascontiguousarray(arrays[k]).tobytes()).hexdigest() for k in arrays.files
                if not TIMING.search(k)}


def fingerprint(folder: Path, exact: tuple[str, ...], json_files: tuple[str, ...], npz_globs: tuple[str, ...]) -> dict[str, Any]:
    """What must be equal between two runs: sha256 of the ``exact`` globs' files, the timing-free content of
    the ``json_files``, the arrays of the ``npz_globs``' files (paths relative to ``folder``)."""
    out: dict[str, Any] = {}
    for pattern in exact:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                out[str(path.relative_to(folder))] = _safetensors(path) if path.suffix == ".safetensors" else _digest(path)
    for name in json_files:
        path = folder / name
        out[name] = _without_timing(json.loads(path.read_text())) if path.is_file() else None
    for pattern in npz_globs:
        for path in sorted(folder.glob(pattern)):
            out[str(path.relative_to(folder))] = _npz(path)
    return out


def leftovers(folder: Path) -> list[str]:
    """Files and folders under ``folder`` whose names mark a temporary or an unfinished swap."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if LEFTOVER.search(p.name))


# ---------------------------------------------------------------------------- the scenarios
@dataclass(frozen=True)
class Scenario:
    """One command on a tiny configuration: how to run it into a folder, and what of its output must match."""

    name: str
    command: Callable[[Path, Path], list[str]]
    """(shared inputs folder, output folder) -> argv."""
    exact: tuple[str, ...] = ()
    json_files: tuple[str, ...] = ()
    npz_globs: tuple[str, ...] = ()
    resume: Callable[[Path], list[str]] = lambda out: []
    """Extra arguments of the rerun after a kill, from what the killed run left in the output folder (what a user
    adds: ``--resume`` where a training run was started)."""


def _plan_args(inputs: Path) -> list[str]:
    return ["--env", ENV, "--model", str(inputs / "run"), "--cost", "keypoint", "--episodes", "3", "--seed", "900",
            "--workers", "1", "--max-episode-steps", "4", "--candidates", "4", "--horizon", "2", "--iterations", "1",
            "--elites", "2"]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("collect", lambda i, o: _cli("collect", "--env", ENV, "--episodes", "24", "--episodes-per-shard", "2",
                                          "--size", "16", "--workers", "1", "--out", str(o / "store")),
             exact=("store/*.h5", "store/manifest.json")),
    Scenario("train", lambda i, o: _cli("train", "--data", str(i / "store"), "--out", str(o / "run"),
                                        "--train-steps", "12", "--batch-size", "4", "--channels", "8", "16",
                                        "--checkpoint-every", "3", "--log-every", "2", "--warmup-steps", "1"),
             exact=("run/model/*.safetensors",),
             resume=lambda o: ["--resume"] if (o / "run" / "training_state.pt").exists() else []),
    Scenario("plan", lambda i, o: _cli("plan", *_plan_args(i), "--out", str(o / "plan")),
             json_files=("plan/summary.json",), npz_globs=("plan/episodes/*.npz",)),
    Scenario("dagger", lambda i, o: _cli("dagger", "--env", ENV, "--model", str(i / "run"), "--data", str(i / "store"),
                                         "--out", str(o / "dagger"), "--rounds", "1", "--episodes", "2",
                                         "--oracle-episodes", "2", "--train-steps", "4", "--workers", "1",
                                         "--max-episode-steps", "4", "--candidates", "4", "--horizon", "2",
                                         "--iterations", "1", "--elites", "2"),
             exact=("dagger/round_*/run/model/*.safetensors", "dagger/round_*/*_data/*.h5"),
             json_files=("dagger/dagger.json",)),
    Scenario("demo", lambda i, o: _cli("demo", "--out", str(o / "demo"), "--size", "16", "--episodes", "4",
                                       "--workers", "1", "--train-steps", "3", "--plan-episodes", "1",
                                       "--max-episode-steps", "2", "--channels", "8", "16", "--cost-steps", "3"),
             exact=("demo/run/model/*.safetensors", "demo/cost/model/*.safetensors", "demo/data/*.h5"),
             npz_globs=("demo/plan/*/episodes/*.npz",)),
)}


def prepare_inputs(folder: Path) -> Path:
    """The shared inputs of train, plan and dagger: a tiny store and a tiny model trained on it."""
    if not (folder / "run" / "model" / "config.json").is_file():
        for argv in (SCENARIOS["collect"].command(folder, folder),
                     SCENARIOS["train"].command(folder, folder)):
            subprocess.run(argv, check=True, capture_output=True, env=_env(), timeout=600)
    return folder


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(argv: list[str], timeout: float = 600) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=timeout)
    return done.returncode, done.stderr, time.perf_counter() - start


def _run_killed(argv: list[str], delay: float) -> bool:
    """Run ``argv`` and SIGKILL its process group after ``delay`` s; True when the kill landed (it was running)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        return True


def inject(scenario: Scenario, inputs: Path, work: Path, kills: int, seed: int = 0,
           window: tuple[float, float] = (0.0, 1.0),
           progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Reference run, then ``kills`` seeded kill-and-rerun trials of ``scenario``; returns the counts and failures.

    Each kill lands after a delay drawn uniformly from ``window`` (fractions of the reference's wall time)."""
    reference = work / f"{scenario.name}_reference"
    shutil.rmtree(reference, ignore_errors=True)
    code, err, wall = _run(scenario.command(inputs, reference))
    if code != 0:
        raise RuntimeError(f"{scenario.name}: the uninterrupted run failed: {err.strip().splitlines()[-1:]}")
    expected = fingerprint(reference, scenario.exact, scenario.json_files, scenario.npz_globs)
    rng = np.random.default_rng(seed)
    counts = {"trials": 0, "killed": 0, "finished_before_kill": 0, "rerun_ok": 0, "equal": 0, "clean": 0}
    failures = []
    for trial in range(kills):
        folder = work / f"{scenario.name}_{trial}"
        shutil.rmtree(folder, ignore_errors=True)
        delay = float(rng.uniform(window[0] * wall, window[1] * wall))
        killed = _run_killed(scenario.command(inputs, folder), delay)
        code, err, _ = _run(scenario.command(inputs, folder) + scenario.resume(folder))
        equal = code == 0 and fingerprint(folder, scenario.exact, scenario.json_files, scenario.npz_globs) == expected
        left = leftovers(folder)
        counts["trials"] += 1
        counts["killed" if killed else "finished_before_kill"] += 1
        counts["rerun_ok"] += code == 0
        counts["equal"] += equal
        counts["clean"] += not left
        if code != 0 or not equal or left:
            failures.append({"trial": trial, "delay_s": round(delay, 2), "killed": killed, "rerun_exit": code,
                             "stderr": err.strip().splitlines()[-1:] if code else [], "equal": equal, "leftovers": left})
        else:
            shutil.rmtree(folder, ignore_errors=True)
        progress(f"{scenario.name} kill {trial + 1}/{kills} at {delay:.1f} s of {wall:.1f}: "
                 f"{'killed' if killed else 'finished first'}, rerun exit {code}, equal {equal}, leftovers {len(left)}")
    return {"command": scenario.name, "reference_wall_s": wall, **counts, "failures": failures}


def format_matrix(rows: list[dict[str, Any]]) -> str:
    """The fault x command matrix as a markdown table."""
    lines = ["| command | kill points | killed mid-run | rerun exit 0 | results equal | nothing left behind | reference run (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['command']} | {r['trials']} | {r['killed']} | {r['rerun_ok']} | {r['equal']} | {r['clean']} "
                     f"| {r['reference_wall_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="seeded kill points per command")
    parser.add_argument("--commands", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="work folder; fault_injection.json and .md are written here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(out / "inputs")
    rows = []
    for k, name in enumerate(args.commands):
        rows.append(inject(SCENARIOS[name], inputs, out, args.kills, seed=args.seed + k, progress=print))
        (out / "fault_injection.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = format_matrix(rows)
    (out / "fault_injection.md").write_text(table + "\n")
    print(table)
    return 0 if all(r["equal"] == r["trials"] == r["clean"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
