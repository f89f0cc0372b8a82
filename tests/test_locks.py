"""One writer per folder: a second writer is refused by name; a killed owner's lock is taken over."""

import os
import signal
import subprocess
import sys

import pytest

from worldvid.locks import LOCK_NAME, FolderLockedError, folder_lock, holds_lock

HOLD = """
import sys, time
from worldvid.locks import folder_lock
with folder_lock(sys.argv[1], "collect"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path / "store")
    try:
        assert holds_lock(tmp_path / "store")
        with pytest.raises(FolderLockedError, match=rf"in use by collect \(pid {proc.pid}"):
            with folder_lock(tmp_path / "store", "train"):
                pass
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_killed_owners_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert (tmp_path / "run" / LOCK_NAME).exists() and not holds_lock(tmp_path / "run")
    with folder_lock(tmp_path / "run", "train") as path:
        assert holds_lock(tmp_path / "run") and f'"pid": {os.getpid()}' in path.read_text()
    assert not holds_lock(tmp_path / "run")


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with folder_lock(tmp_path, "collect"):
        with pytest.raises(FolderLockedError, match="in use by collect"):
            with folder_lock(tmp_path, "collect"):
                pass
    with folder_lock(tmp_path, "collect"):  # released on exit
        pass
