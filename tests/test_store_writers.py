"""Episode stores with several processes: one writer at a time (a second writer or collect is refused in one line,
a forked child never releases its parent's lock), readers are never refused and follow a shard a writer grew."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import make_episode
from worldvid.data.collect import collect
from worldvid.data.manifest import MANIFEST, is_temporary
from worldvid.data.store import EpisodeStore, StoreError
from worldvid.locks import FolderLockedError, holds_lock
from test_store_integrity import POINT, TINY, cli, shard_bytes, synthetic_spec


# ---------------------------------------------------------------- one writer per store
def test_a_second_writer_is_refused_and_readers_are_not(tmp_path):
    writer = EpisodeStore.create(tmp_path, synthetic_spec())
    writer.write_shard(0, [make_episode(seed=0), make_episode(seed=1)])
    with pytest.raises(FolderLockedError, match=f"in use by writing an episode store \\(pid {os.getpid()}"):
        EpisodeStore.create(tmp_path, synthetic_spec())
    assert len(EpisodeStore(tmp_path)) == 2  # a reader needs no lock
    reader = EpisodeStore(tmp_path)
    with pytest.raises(StoreError, match="not open for writing"):
        reader.write_shard(1, [make_episode(seed=2)])
    writer.close()
    with EpisodeStore.create(tmp_path, synthetic_spec()) as again:
        again.write_shard(1, [make_episode(seed=2)])
    assert not holds_lock(tmp_path)
    dropped = EpisodeStore.create(tmp_path, synthetic_spec())
    del dropped  # a writer that is never closed releases the lock when it is collected
    gc.collect()
    assert not holds_lock(tmp_path)
    assert EpisodeStore(tmp_path).verify() == 3


def test_a_forked_child_never_releases_its_parents_lock(tmp_path):
    writer = EpisodeStore.create(tmp_path, synthetic_spec())
    pid = os.fork()
    if pid == 0:  # what a DataLoader worker does at exit: drop the copy of the store it inherited
        try:
            writer.close()
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert holds_lock(tmp_path)
    with pytest.raises(FolderLockedError):
        EpisodeStore.create(tmp_path, synthetic_spec())
    writer.write_shard(0, [make_episode(seed=0)])  # the parent still writes
    writer.close()
    assert not holds_lock(tmp_path)


HOLDER = textwrap.dedent("""
    import sys
    from worldvid.data.collect import collect_shard, store_spec
    from worldvid.data.store import EpisodeStore
    root = sys.argv[1]
    spec = store_spec("worldvid/PointReach-v0", 16, "random", 0, 1)
    with EpisodeStore.create(root, spec) as store:
        store.write_shard(0, collect_shard(spec.env_id, 16, {}, "random", [0]))
        print("ready", flush=True)
        sys.stdin.readline()  # hold the store open until the test says go on
        for shard in (1, 2):
            store.write_shard(shard, collect_shard(spec.env_id, 16, {}, "random", [shard]))
    print("done", flush=True)
""")


def test_a_second_collect_gets_one_line_and_the_first_writer_finishes(tmp_path):
    root = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "ready"
        second = cli("collect", "--env", POINT, "--episodes", "3", "--size", "16", "--policy", "random",
                     "--episodes-per-shard", "1", "--out", str(root))
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by writing an episode store" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert "Traceback" not in second.stderr
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    report = EpisodeStore(root).check(full=True)
    assert report.ok and report.episodes == 3 and report.shards == 3, report.lines()
    assert not [n for n in os.listdir(root) if is_temporary(n)]
    # the first writer's data, whole: the same bytes as an uninterrupted collect
    ref = collect(POINT, 3, tmp_path / "ref", size=16, policy="random", episodes_per_shard=1, progress=False)
    assert shard_bytes(root) == shard_bytes(ref.store.root)


def test_collect_while_a_collect_subprocess_runs_is_refused(tmp_path):
    root = tmp_path / "store"
    args = ["collect", "--env", POINT, "--episodes", "40", "--size", "16", "--policy", "random",
            "--episodes-per-shard", "1", "--out", str(root)]
    first = subprocess.Popen([sys.executable, "-m", "worldvid.cli", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while not ((root / MANIFEST).exists() and holds_lock(root)) and time.time() < deadline:
        time.sleep(0.01)
    assert first.poll() is None, "the first collect finished before a second writer could try; make it longer"
    with pytest.raises(FolderLockedError, match=f"pid {first.pid}"):
        collect(POINT, 40, root, size=16, policy="random", episodes_per_shard=1, progress=False)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    report = EpisodeStore(root).check()
    assert report.ok and report.episodes == 40, report.lines()


def test_a_reader_follows_a_shard_a_writer_grew(tmp_path):
    collect(POINT, 3, tmp_path, **TINY)
    reader = EpisodeStore(tmp_path)  # shard 1 holds episode 2 only
    collect(POINT, 4, tmp_path, **TINY)  # renames a 2-episode shard 1 over it
    assert len(reader) == 3 and reader.episode_ids == [0, 1, 2]  # the reader's view does not change under it
    fresh = EpisodeStore(tmp_path)
    assert reader.read_episode(2).equals(fresh.read_episode(2))
    assert len(fresh) == 4
