"""Minari datasets in and out: an episode store as a local Minari dataset, and a local Minari dataset as a store.

Minari (``pip install worldvid[minari]``) is imported inside the functions that need it. Datasets live under
``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) with ids ``NAMESPACE/NAME-v0``; nothing is downloaded.

Export: store episode i -> Minari episode i. Observations are the frames, uint8 [T+1, H, W, 3], or, when the
episodes carry goal images, a Dict {"observation": frames, "desired_goal": the goal frame repeated T+1 times}
(Gymnasium-Robotics' keys); infos {"success": bool [T+1]} (Minari's infos are T+1 long, entry 0 the reset's:
False); the reset seed is Minari's episode seed, with episode metadata ``worldvid_episode`` and ``worldvid_policy``;
dataset metadata ``worldvid`` names the env id, frame shape, source store and store spec, and the env spec is the
registered env at the store's frame size. Frames are stored raw (Minari's JPEG encoding off), and the dataset is
built in a hidden staging folder, then renamed into place whole.

Import: a dataset we exported comes back as the same store. Any other needs pixel observations (a uint8
[H, W, 3] Box, or a Dict holding one); a Dict's "desired_goal" of the frames' shape gives the goal frame, else
episodes are stored with ``goal_frame=None`` (as for envs without a goal image), never an invented one. Every
episode is validated before the store is opened; an existing store is completed as ``worldvid collect`` does.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from worldvid.atomic import TEMPORARY, fsync_path, temporary_name
from worldvid.data.episode import Episode, EpisodeError
from worldvid.data.manifest import first_line
from worldvid.data.shard import check_matches_spec
from worldvid.data.store import EpisodeStore, StoreSpec
from worldvid.envs.factory import make_pixel_env
from worldvid.locks import pid_alive
from worldvid.version import __version__

METADATA_KEY, FORMAT = "worldvid", 1
"""Dataset metadata key of what an export records (its ``format``, ``env_id``, ``frame_shape``, ``store_spec``...)."""
FRAMES_KEY, GOAL_KEY = "observation", "desired_goal"
"""Keys of the Dict observations of an export whose episodes carry goal frames (Gymnasium-Robotics' names)."""
ROOT_VARIABLE = "MINARI_DATASETS_PATH"
_DATASET_ID = re.compile(r"(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+")
"""Minari's id form, ``(namespace/)name-v<version>``, with the version required."""


class MissingExtraError(RuntimeError):
    """An optional extra (here Minari) is not installed."""


def require_minari() -> Any:
    """The ``minari`` module, or MissingExtraError naming the install command."""
    try:
        import minari
    except ImportError as err:
        raise MissingExtraError(f"this needs the Minari extra: pip install worldvid[minari] ({err})") from err
    return minari


def check_dataset_id(dataset_id: str) -> str:
    """``dataset_id`` when it has Minari's form ``NAMESPACE/NAME-v0`` (namespace optional), else ValueError."""
    if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id):
        raise ValueError(f"Minari dataset id {dataset_id!r} must look like NAMESPACE/NAME-v0 "
                         "(letters, digits, - and _; the namespace is optional, the version is not)")
    return dataset_id


@dataclass
class ExportReport:
    """What ``export_minari`` wrote: the dataset id and folder, episodes and steps, notes for the user."""

    dataset_id: str
    path: Path
    episodes: int
    steps: int
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What ``import_minari`` did: the store, how many episodes it wrote now, broken shards redone, notes."""

    store: EpisodeStore
    new_episodes: int
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_minari(data: str | os.PathLike, dataset_id: str, progress: bool = True) -> ExportReport:
    """Write every finished episode of the store at ``data`` as the local Minari dataset ``dataset_id``.

    Observations: uint8 [T+1, H, W, 3] frames, or Dict {"observation", "desired_goal"} of that shape when the
    episodes carry goal frames (all or none must). Raises ValueError when the id is malformed or taken, or the
    store is empty; MissingExtraError without Minari.
    """
    minari = require_minari()
    from minari.data_collector import EpisodeBuffer
    from minari.namespace import create_namespace, list_local_namespaces
    from minari.storage import get_dataset_path

    check_dataset_id(dataset_id)
    store = EpisodeStore(data)
    spec, ids = store.spec, store.episode_ids
    if not ids:
        raise ValueError(f"the store at {data} holds no finished episode: nothing to export")
    root = get_dataset_path()
    target = root / dataset_id
    if target.exists():
        raise ValueError(f"a Minari dataset {dataset_id!r} already exists at {target}: choose another name or version")
    _remove_dead_staging(root)
    with_goal = store.read_episode(ids[0]).goal_frame is not None
    frames = gym.spaces.Box(0, 255, spec.frame_shape, np.uint8)
    observation_space = gym.spaces.Dict({FRAMES_KEY: frames, GOAL_KEY: frames}) if with_goal else frames
    env, action_space, notes = _probe_env(spec)
    options = {"jpeg_encoding": False} if "jpeg_encoding" in inspect.signature(
        minari.create_dataset_from_buffers).parameters else {}  # Minari < 0.5.4 never encodes
    staging = temporary_name(root / "worldvid-export")
    bar = tqdm(total=len(ids), desc=f"export {dataset_id}", unit="ep", disable=not progress)
    steps, policies = 0, []
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"minari(\.|$)")  # "author is None" etc.
            dataset = None
            for chunk in (ids[i:i + spec.episodes_per_shard] for i in range(0, len(ids), spec.episodes_per_shard)):
                episodes = [store.read_episode(i) for i in chunk]
                buffers = [_buffer(EpisodeBuffer, ep, index, with_goal) for index, ep in zip(chunk, episodes)]
                steps += sum(ep.num_steps for ep in episodes)
                policies += [ep.policy for ep in episodes]
                if dataset is None:
                    dataset = minari.create_dataset_from_buffers(
                        dataset_id, buffers, env=env, observation_space=observation_space, action_space=action_space,
                        algorithm_name=spec.policy, data_format="hdf5", description=(
                            f"worldvid episode store {Path(data).resolve()}: {spec.env_id} at "
                            f"{spec.frame_shape[0]}x{spec.frame_shape[1]} px, policy {spec.policy}"), **options)
                else:
                    dataset.update_dataset_from_buffer(buffers)
                bar.update(len(chunk))
            assert dataset is not None
            dataset.storage.update_episode_metadata(
                [{"worldvid_episode": i, "worldvid_policy": policy} for i, policy in zip(ids, policies)],
                episode_indices=range(len(ids)))
            dataset.storage.update_metadata({METADATA_KEY: {
                "format": FORMAT, "worldvid_version": __version__, "env_id": spec.env_id,
                "frame_shape": list(spec.frame_shape), "source_store": str(Path(data).resolve()),
                "store_spec": spec.to_dict(), "observation_keys": [FRAMES_KEY, GOAL_KEY] if with_goal else None}})
        namespace = dataset_id.rpartition("/")[0]
        if namespace and namespace not in list_local_namespaces():
            create_namespace(namespace)
        os.rename(staging / dataset_id, target)  # whole, or not at all
        fsync_path(target.parent)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        if env is not None:
            env.close()
    return ExportReport(dataset_id, target, len(ids), steps, notes)


def _buffer(buffer_class: type, ep: Episode, index: int, with_goal: bool) -> Any:
    """One store episode as a Minari ``EpisodeBuffer`` (arrays as in the module docstring)."""
    if (ep.goal_frame is not None) != with_goal:
        raise ValueError(f"episode {index} {'lacks' if with_goal else 'has'} a goal frame and the store's first "
                         "episode does not: a Minari dataset has one observation space")
    observations: Any = ep.frames
    if with_goal:
        observations = {FRAMES_KEY: ep.frames, GOAL_KEY: np.repeat(ep.goal_frame[None], len(ep.frames), axis=0)}
    infos = {} if ep.success is None else {"success": np.concatenate([[False], ep.success])}
    return buffer_class(
        seed=ep.seed, observations=observations, actions=ep.actions, rewards=ep.rewards,
        terminations=ep.terminated, truncations=ep.truncated, infos=infos)


def _probe_env(spec: StoreSpec) -> tuple[gym.Env | None, gym.spaces.Box, list[str]]:
    """(the store's env at its frame size, its action space, notes); without the env here: (None, an unbounded
    Box of the store's action size, a note), and the dataset has no env spec."""
    unbounded = gym.spaces.Box(-np.inf, np.inf, (spec.action_dim,), np.float32)
    try:
        env = make_pixel_env(spec.env_id, spec.frame_shape[0], **spec.env_kwargs)
    except (ValueError, TypeError, ImportError, gym.error.Error) as err:
        return None, unbounded, [f"no env spec recorded: {spec.env_id} cannot be made here ({first_line(err)})"]
    space = env.action_space
    if env.observation_space.shape != spec.frame_shape or int(np.prod(space.shape)) != spec.action_dim:
        env.close()
        return None, unbounded, [f"no env spec recorded: {spec.env_id} makes other frames or actions now"]
    return env, space, []


@contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari at ``path`` for the block: the one way its public API places a new dataset elsewhere."""
    old = os.environ.get(ROOT_VARIABLE)
    os.environ[ROOT_VARIABLE] = str(path)
    try:
        yield
    finally:
        os.environ.pop(ROOT_VARIABLE, None)
        if old is not None:
            os.environ[ROOT_VARIABLE] = old


def _remove_dead_staging(root: Path) -> None:
    """Remove staging folders of exports whose process no longer runs (a killed export's leftovers)."""
    for entry in root.iterdir():
        match = TEMPORARY.match(entry.name)
        if match and entry.name.startswith(".worldvid-export") and entry.is_dir() and not pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class _Layout:
    """How a dataset's episodes become store episodes: the spec, where frames and goals are, each episode's slot."""

    spec: StoreSpec
    frames_key: str | None  # None: the observations are the frames
    goal_key: str | None
    slots: list[int]  # store index of each Minari episode, in dataset order
    seeds: list[int]
    policies: list[str]
    one_hot: int | None  # n of Discrete(n) actions
    notes: list[str]


def import_minari(dataset_id: str, out: str | os.PathLike, episodes_per_shard: int = 10,
                  observation_key: str | None = None, progress: bool = True) -> ImportReport:
    """Make (or complete) the episode store at ``out`` from the local Minari dataset ``dataset_id``.

    Frames uint8 [T+1, H, W, 3] are the observations, or a Dict's ``observation_key`` (default: "observation",
    else its one frame key); Discrete(n) actions become one-hot float32 [T, n]; success comes from infos "success"
    (or "is_success"). Store episode i is the dataset's i-th (ours: its recorded index), with the recorded reset
    seed when those run consecutively, else seed i. Every episode is converted and validated before the store is
    opened; shards are then written atomically as ``worldvid collect`` writes them, and a rerun keeps those that
    verify. Raises ValueError naming the problem (missing dataset, no pixel observations, a bad episode, a store
    of another spec); MissingExtraError without Minari.
    """
    minari = require_minari()
    check_dataset_id(dataset_id)
    try:
        dataset = minari.load_dataset(dataset_id)
    except FileNotFoundError as err:
        raise ValueError(f"no local Minari dataset {dataset_id!r} ({first_line(err).split('. Use')[0]}); worldvid "
                         f"reads local datasets only (set {ROOT_VARIABLE}, or `minari download` it first)") from err
    layout = _layout(dataset, dataset_id, episodes_per_shard, observation_key)
    for _ in _episodes(dataset, dataset_id, layout, range(len(layout.slots)), progress, "check"):
        pass
    per = layout.spec.episodes_per_shard
    shards: dict[int, list[int]] = {}
    for position in np.argsort(layout.slots, kind="stable"):
        shards.setdefault(layout.slots[position] // per, []).append(int(position))
    new = 0
    with EpisodeStore.create(Path(out), layout.spec) as store:
        repaired = store.discard_broken(shards)
        todo = {j: ps for j, ps in shards.items() if not store.has_shard(j, j * per + len(ps))}
        episodes = _episodes(dataset, dataset_id, layout, [p for ps in todo.values() for p in ps], progress, "import")
        for index, positions in todo.items():
            store.write_shard(index, [next(episodes) for _ in positions])
            new += len(positions)
    return ImportReport(store, new, repaired, layout.notes)


def _is_frames(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and space.shape[2:] == (3,) \
        and len(space.shape) == 3


def _frame_keys(space: gym.Space, dataset_id: str, observation_key: str | None) -> tuple[str | None, str | None]:
    """(key of the frames in a Dict observation or None for a frame Box, key of same-shaped goal frames or None)."""
    found = f"{space}".replace("\n", " ")[:240]
    frames = [k for k, s in space.spaces.items() if _is_frames(s)] if isinstance(space, gym.spaces.Dict) else []
    if observation_key is not None:
        if observation_key not in frames:
            raise ValueError(f"observation key {observation_key!r} of {dataset_id!r} is not uint8 [H, W, 3] frames "
                             f"in a Dict: observations are {found}")
        key = observation_key
    elif _is_frames(space):
        return None, None
    else:
        others = [k for k in frames if k not in (GOAL_KEY, "achieved_goal")]
        candidates = [FRAMES_KEY] if FRAMES_KEY in frames else others
        if len(candidates) > 1:
            raise ValueError(f"Minari dataset {dataset_id!r} has several frame keys {candidates}: choose one with "
                             "--observation-key")
        if not candidates:
            raise ValueError(f"Minari dataset {dataset_id!r} has no pixel observations: found {found}; worldvid needs "
                             "uint8 [H, W, 3] frames (a Box, or a Dict holding one)")
        key = candidates[0]
    return key, GOAL_KEY if GOAL_KEY in frames and space[GOAL_KEY].shape == space[key].shape else None


def _layout(dataset: Any, dataset_id: str, episodes_per_shard: int, observation_key: str | None) -> _Layout:
    """Everything decided from the dataset's spaces and metadata, checked before any episode is read."""
    if dataset.total_episodes < 1:
        raise ValueError(f"Minari dataset {dataset_id!r} holds no episode")
    frames_key, goal_key = _frame_keys(dataset.observation_space, dataset_id, observation_key)
    frame_space = dataset.observation_space if frames_key is None else dataset.observation_space[frames_key]
    actions, one_hot = dataset.action_space, None
    if isinstance(actions, gym.spaces.Discrete):
        one_hot = int(actions.n)
    elif not isinstance(actions, gym.spaces.Box) or not actions.shape or int(np.prod(actions.shape)) < 1:
        raise ValueError(f"Minari dataset {dataset_id!r} has actions {actions}; worldvid needs a Box (or Discrete) "
                         "action space")
    action_dim = one_hot or int(np.prod(actions.shape))
    metadata = list(dataset.storage.get_episode_metadata(dataset.episode_indices))
    recorded = [m.get("seed") for m in metadata]
    ours = dataset.storage.metadata.get(METADATA_KEY)
    notes: list[str] = []
    if isinstance(ours, dict) and ours.get("format") == FORMAT:
        try:
            spec = StoreSpec.from_dict(ours["store_spec"])
            slots = [int(m["worldvid_episode"]) for m in metadata]
            policies = [str(m["worldvid_policy"]) for m in metadata]
            seeds = [int(s) for s in recorded]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Minari dataset {dataset_id!r}: its worldvid metadata is unreadable "
                             f"({first_line(err)})") from err
        if len(set(slots)) != len(slots):
            raise ValueError(f"Minari dataset {dataset_id!r} lists a worldvid episode index twice")
        if spec.frame_shape != frame_space.shape or spec.action_dim != action_dim:
            raise ValueError(f"Minari dataset {dataset_id!r}: its worldvid metadata says frames "
                             f"{list(spec.frame_shape)} and {spec.action_dim} actions, its spaces hold "
                             f"{list(frame_space.shape)} and {action_dim}")
    else:
        env_spec = dataset.env_spec
        seeds = list(range(len(metadata)))
        if all(s is not None for s in recorded) and [int(s) - int(recorded[0]) for s in recorded] == seeds:
            seeds = [int(s) for s in recorded]
        else:
            how = "are not consecutive" if any(s is not None for s in recorded) else "were not recorded"
            notes.append(f"episode seeds {how}: store episode i has seed i")
        policy = str(dataset.storage.metadata.get("algorithm_name") or "minari")
        spec = StoreSpec(env_id=env_spec.id if env_spec is not None else dataset_id, frame_shape=frame_space.shape,
                         action_dim=action_dim, policy=policy, seed=seeds[0], episodes_per_shard=episodes_per_shard)
        slots, policies = [s - seeds[0] for s in seeds], [policy] * len(seeds)
        if goal_key is None:
            notes.append("no goal frames (no 'desired_goal' frames in the observations): stored without one")
        if getattr(dataset.storage, "jpeg_encoding", False) and min(frame_space.shape[:2]) >= 32:
            notes.append("Minari stored these frames as JPEG (lossy); they come in decoded, as Minari reads them")
        if one_hot:
            notes.append(f"Discrete({one_hot}) actions are stored one-hot: float32 [T, {one_hot}]")
    return _Layout(spec, frames_key, goal_key, slots, seeds, policies, one_hot, notes)


def _episodes(dataset: Any, dataset_id: str, layout: _Layout, positions: Iterable[int], progress: bool,
              what: str) -> Iterator[Episode]:
    """The store episodes of the dataset's episodes at ``positions`` (in that order), each validated."""
    positions = list(positions)
    indices = [int(dataset.episode_indices[p]) for p in positions]
    bar = tqdm(total=len(positions), desc=f"{what} {dataset_id}", unit="ep", disable=not progress)
    for position, data in zip(positions, dataset.iterate_episodes(indices)):
        try:
            episode = _episode(data, layout, position)
            check_matches_spec(episode, layout.spec, layout.spec.seed + layout.slots[position])
        except (ValueError, IndexError) as err:
            raise EpisodeError(f"Minari dataset {dataset_id!r}, episode {data.id}: {first_line(err)}") from err
        bar.update(1)
        yield episode
    bar.close()


def _episode(data: Any, layout: _Layout, position: int) -> Episode:
    """One Minari ``EpisodeData`` as an Episode (validated on construction)."""
    observations = data.observations
    frames = np.asarray(observations if layout.frames_key is None else observations[layout.frames_key])
    goal = None
    if layout.goal_key is not None:
        goals = np.asarray(observations[layout.goal_key])
        if not (goals == goals[:1]).all():
            raise ValueError(f"its {layout.goal_key!r} changes within the episode; a store holds one goal frame")
        goal = goals[0]
    actions = np.asarray(data.actions)
    if layout.one_hot is not None:
        if actions.size and (actions.min() < 0 or actions.max() >= layout.one_hot):
            raise ValueError(f"a Discrete({layout.one_hot}) action is out of range")
        actions = np.eye(layout.one_hot, dtype=np.float32)[actions.astype(np.int64)]
    steps = len(data.rewards)
    return Episode(frames=frames, actions=actions.reshape(len(actions), -1).astype(np.float32),
                   rewards=np.asarray(data.rewards, np.float32), terminated=np.asarray(data.terminations).astype(bool),
                   truncated=np.asarray(data.truncations).astype(bool), goal_frame=goal, env_id=layout.spec.env_id,
                   seed=layout.seeds[position], policy=layout.policies[position], success=_success(data.infos, steps))


def _success(infos: dict | None, steps: int) -> np.ndarray | None:
    """bool [T] from infos "success" (or "is_success"), T+1 long (entry 0 the reset's) or T long; None without."""
    for key in ("success", "is_success"):
        if infos and key in infos:
            values = np.asarray(infos[key]).reshape(-1).astype(bool)
            if len(values) == steps + 1:
                return values[1:]
            if len(values) == steps:
                return values
            raise ValueError(f"infos[{key!r}] holds {len(values)} values for {steps} steps")
    return None
