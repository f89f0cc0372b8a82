"""The fault-injection matrix in the suite: kill -9 once mid-run during plan, dagger and demo, rerun, compare.

(collect and train have their own kill tests: tests/test_store_integrity.py, tests/test_hardening_train.py; the
script ``python -m worldvid.experiments.fault_injection`` runs 20 kill points per command outside the suite.)
"""

from __future__ import annotations

import pytest

from worldvid.experiments.fault_injection import SCENARIOS, fingerprint, inject, leftovers, prepare_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return prepare_inputs(tmp_path_factory.mktemp("fault_inputs"))


@pytest.mark.parametrize("command", ["plan", "dagger", "demo"])
def test_a_kill_mid_run_then_a_rerun_equals_an_uninterrupted_run(command, inputs, tmp_path):
    row = inject(SCENARIOS[command], inputs, tmp_path, kills=1, seed=3, window=(0.5, 0.9))
    assert row["failures"] == [], row["failures"]
    assert row["trials"] == row["rerun_ok"] == row["equal"] == row["clean"] == 1


def test_the_comparison_sees_a_changed_result_and_a_leftover(inputs, tmp_path):
    expected = fingerprint(inputs, ("store/*.h5",), (), ())
    shard = sorted((inputs / "store").glob("*.h5"))[0]
    copy = tmp_path / "store"
    copy.mkdir()
    for path in (inputs / "store").glob("*.h5"):
        (copy / path.name).write_bytes(path.read_bytes())
    assert fingerprint(tmp_path, ("store/*.h5",), (), ()) == expected
    data = bytearray((copy / shard.name).read_bytes())
    data[len(data) // 2] ^= 1
    (copy / shard.name).write_bytes(bytes(data))
    assert fingerprint(tmp_path, ("store/*.h5",), (), ()) != expected
    assert leftovers(tmp_path) == []
    (copy / ".manifest.json.tmp123").write_text("{")
    (tmp_path / ".model.old-4-abc").mkdir()
    assert leftovers(tmp_path) == [".model.old-4-abc", "store/.manifest.json.tmp123"]
