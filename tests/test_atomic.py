"""Atomic writes: the whole new file or the old one, never a half-written file or a stray temporary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldvid.atomic import save_npz_atomic, write_json_atomic


def test_json_round_trip_leaves_only_the_target(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"version": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"version": object()})  # not JSON: fails before anything is replaced
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_npz_round_trip(tmp_path):
    save_npz_atomic(tmp_path / "e.npz", frames=np.zeros((2, 4, 4, 3), np.uint8), actions=np.ones((1, 2), np.float32))
    with np.load(tmp_path / "e.npz") as data:
        assert data["frames"].shape == (2, 4, 4, 3) and data["actions"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]
