"""Data-path figures: frames/s collected with 1 and 2 workers, bytes per frame on disk, ms per window read."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldvid.data.collect import collect
from worldvid.data.dataset import FrameWindowDataset
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.parallel import init_ray

TASK_IDS = ("worldvid/PointReach-v0", "worldvid/Push-v0", "worldvid/Reacher-v0")


def time_window_reads(store: EpisodeStore, context: int = 4, reads: int = 500, seed: int = 0) -> float:
    """Mean milliseconds to read one random window (K frames + K actions + target) from a fresh handle set."""
    data = FrameWindowDataset(store, context=context)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(data), size=reads)
    store.close()
    data[int(indices[0])]  # open the file handles outside the timing, as a long-running loader has them open
    start = time.perf_counter()
    for i in indices:
        data[int(i)]
    return (time.perf_counter() - start) / reads * 1e3


def recompress(store: EpisodeStore, root: Path, compression: str) -> EpisodeStore:
    """A copy of ``store`` written with another frame compression (same episodes)."""
    spec = StoreSpec(**{**store.spec.to_dict(), "frame_shape": store.spec.frame_shape, "compression": compression})
    copy = EpisodeStore.create(root, spec)
    for shard in sorted({spec.shard_of(e) for e in store.episode_ids}):
        copy.write_shard(shard, [store.read_episode(e) for e in spec.episodes_of(shard, len(store))])
    return copy


def bench_data(episodes: int = 40, sizes: tuple[int, ...] = (64, 32), workers: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """One row per (task, size): frames/s per worker count, bytes/frame and ms/window for gzip and lzf."""
    if max(workers) > 1:
        init_ray(num_cpus=max(workers))  # start-up kept out of the timing
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in TASK_IDS:
            for size in sizes:
                row: dict[str, Any] = {"env": env_id, "size": size, "episodes": episodes}
                for w in workers:
                    out = Path(tmp) / f"{env_id.replace('/', '_')}_{size}_w{w}"
                    report = collect(env_id, episodes, out, workers=w, size=size, episodes_per_shard=5, progress=False)
                    row[f"frames_per_s_w{w}"] = report.frames_per_second
                store = report.store
                for compression in ("gzip", "lzf"):
                    variant = store if compression == store.spec.compression else recompress(store, Path(str(out) + compression), compression)
                    row[f"bytes_per_frame_{compression}"] = variant.summary()["bytes_per_frame"]
                    row[f"ms_per_window_{compression}"] = time_window_reads(variant)
                rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as an aligned text table."""
    keys = list(rows[0])
    cells = [[f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(keys)] + [line(c) for c in cells])


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    result = bench_data(episodes=n)
    print(format_table(result))
    print(json.dumps(result))
