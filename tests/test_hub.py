"""Hugging Face Hub conventions, offline: repo ids resolve through huggingface_hub's own cache layout, every save
writes a model card that parses, old folders still load, and a push fails in one line while offline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from worldvid.model import card as hub_card
from worldvid.model import hub
from worldvid.goal_distance import GoalDistance, GoalDistanceConfig
from worldvid.model import CONFIG_NAME, WEIGHTS_NAME, WorldModel, WorldModelConfig
from worldvid.model.folder import state_checksum
from worldvid.train import TrainConfig

S, K, A = 16, 2, 2
ENV = "worldvid/PointReach-v0"
REPO = "owner/name"
COMMITS = ("a" * 40, "b" * 40)


def tiny_world_model(seed: int) -> WorldModel:
    torch.manual_seed(seed)
    config = WorldModelConfig(action_dim=A, frame_size=S, context=K, block_channels=(8, 16), time_embed_dim=32,
                              action_embed_dim=16, num_steps=1, env_id=ENV)
    model = WorldModel(config).eval()
    torch.nn.init.normal_(model.denoiser.inner.unet.conv_out.weight, std=0.1)  # outputs depend on the weights
    return model


def tiny_distance(seed: int) -> GoalDistance:
    torch.manual_seed(seed)
    return GoalDistance(GoalDistanceConfig(frame_size=S, env_id=ENV, widths=(8, 16, 16), hidden=32, embed_dim=8)).eval()


def imagine(model: WorldModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, K, S, S, 3), generator=g, dtype=torch.uint8)
    return model.rollout(frames, torch.randn(2, K, A, generator=g), torch.randn(2, 3, A, generator=g),
                         generator=torch.Generator().manual_seed(1))


def distances(model: GoalDistance) -> torch.Tensor:
    frames = np.random.default_rng(0).integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    with torch.no_grad():
        return model.distance(frames, frames[0])


def cache_repo(cache: Path, repo_id: str, folder: Path, revision: str, commit: str) -> None:
    """Lay ``folder``'s files out as huggingface_hub caches a download of ``repo_id`` at ``commit``: the bytes in
    blobs/, snapshots/<commit>/<file> linking to them, refs/<revision> naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty Hub cache at tmp_path/hf (the default cache of this test); yields
    (cache, calls): the arguments of every snapshot_download call."""
    import huggingface_hub
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub read the variable when imported
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    calls, real = [], huggingface_hub.snapshot_download

    def spy(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    return cache, calls


def two_revisions(tmp_path: Path, cache: Path, repo_id: str, models: tuple) -> None:
    """``models[0]`` at main (commit a...), ``models[1]`` at branch v1 (commit b...)."""
    for model, revision, commit in zip(models, ("main", "v1"), COMMITS):
        model.save_pretrained(tmp_path / revision)
        cache_repo(cache, repo_id, tmp_path / revision, revision, commit)


def test_a_world_model_resolves_from_the_hub_cache_offline_at_a_revision(tmp_path, offline_cache):
    from huggingface_hub import scan_cache_dir

    cache, calls = offline_cache
    models = (tiny_world_model(0), tiny_world_model(1))
    two_revisions(tmp_path, cache, REPO, models)
    [repo] = scan_cache_dir(cache).repos  # huggingface_hub reads the layout as its own
    assert repo.repo_id == REPO and {r.commit_hash: set(r.refs) for r in repo.revisions} == {
        COMMITS[0]: {"main"}, COMMITS[1]: {"v1"}}

    for revision, expected in ((None, models[0]), ("v1", models[1]), (COMMITS[0], models[0])):
        loaded = WorldModel.from_pretrained(REPO, revision=revision, frame_size=S, action_dim=A, env_id=ENV)
        assert torch.equal(imagine(loaded), imagine(expected)) and not loaded.training
    assert not torch.equal(imagine(models[0]), imagine(models[1]))
    assert [(repo_id, kw["revision"], kw["local_files_only"]) for repo_id, kw in calls] == [
        (REPO, None, True), (REPO, "v1", True), (REPO, COMMITS[0], True)]
    # an explicit cache_dir, and a folder of the snapshot: the run-folder and leftover logic see a plain folder
    loaded = WorldModel.from_pretrained(REPO, revision="v1", cache_dir=cache, local_files_only=True)
    assert torch.equal(imagine(loaded), imagine(models[1]))
    assert hub.resolve_folder(REPO, revision="v1") == cache / f"models--owner--name/snapshots/{COMMITS[1]}"


def test_a_goal_distance_resolves_from_the_hub_cache_offline_at_a_revision(tmp_path, offline_cache):
    cache, calls = offline_cache
    models = (tiny_distance(0), tiny_distance(1))
    two_revisions(tmp_path, cache, "owner/distance", models)
    for revision, expected in ((None, models[0]), ("v1", models[1])):
        loaded = GoalDistance.from_pretrained("owner/distance", revision=revision)
        assert torch.equal(distances(loaded), distances(expected)) and not loaded.training
    assert len(calls) == 2
    with pytest.raises(ValueError, match="not a WorldModel"):  # each class refuses the other's folder
        WorldModel.from_pretrained("owner/distance")


def test_a_repo_that_is_not_cached_offline_fails_in_one_line(offline_cache, monkeypatch):
    cache, _ = offline_cache
    with pytest.raises(FileNotFoundError) as error:
        WorldModel.from_pretrained(REPO, revision="v2")
    message = str(error.value)
    assert "\n" not in message and REPO in message and "v2" in message and "offline" in message, message
    assert str(cache) in message
    with pytest.raises(FileNotFoundError, match="owner/distance.*offline"):
        GoalDistance.from_pretrained("owner/distance")
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(FileNotFoundError, match="local_files_only=True") as error:
        WorldModel.from_pretrained(REPO, local_files_only=True)
    assert "\n" not in str(error.value)


def test_a_local_folder_wins_over_a_repo_id_and_takes_no_revision(tmp_path, offline_cache, monkeypatch):
    _, calls = offline_cache
    model = tiny_world_model(0)
    monkeypatch.chdir(tmp_path)
    model.save_pretrained(tmp_path / "owner" / "name")
    assert torch.equal(imagine(WorldModel.from_pretrained(REPO)), imagine(model)) and not calls
    with pytest.raises(ValueError, match="local folder"):
        WorldModel.from_pretrained(REPO, revision="v1")
    with pytest.raises(FileNotFoundError, match="elsewhere"):  # a Path is never a repo id
        WorldModel.from_pretrained(Path("elsewhere/name"))
    assert not calls


def test_every_save_writes_a_model_card_that_parses_for_both_kinds(tmp_path):
    from huggingface_hub import ModelCard
    from safetensors import safe_open

    for model, cls in ((tiny_world_model(0), WorldModel), (tiny_distance(0), GoalDistance)):
        folder = model.save_pretrained(tmp_path / cls.__name__)
        card = ModelCard.load(folder / hub_card.CARD_NAME)  # the Hub's own parser
        assert card.data.library_name == "worldvid" and "worldvid" in card.data.tags
        block = hub_card.card_metadata(folder)["worldvid"]
        assert block["class"] == cls.__name__ and block["env_id"] == ENV
        assert block["config"] == json.loads(json.dumps(model.config.to_dict()))
        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:  # the checksum still covers the weights
            assert block["weights_sha256"] == f.metadata()["worldvid_sha256"]
        assert f"{cls.__name__}.from_pretrained" in card.text and hub_card.CARD_MARKER in card.content
        config = json.loads((folder / CONFIG_NAME).read_text())
        assert config["_worldvid_class"] == cls.__name__ and config["_library_name"] == "worldvid"
        assert "_class_name" not in config  # diffusers' loaders would look for a diffusers class of that name


def test_diffusers_is_not_told_the_folder_holds_a_diffusers_class(tmp_path):
    from diffusers import AutoModel

    tiny_world_model(0).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError) as error:
        AutoModel.from_pretrained(str(tmp_path / "m"))
    assert "WorldModel" not in str(error.value)  # format 1: "`diffusers` has no class `WorldModel`"


def test_old_folders_without_a_card_still_load(tmp_path, offline_cache):
    cache, _ = offline_cache
    for model, cls in ((tiny_world_model(0), WorldModel), (tiny_distance(0), GoalDistance)):
        folder = model.save_pretrained(tmp_path / cls.__name__)
        (folder / hub_card.CARD_NAME).unlink()
        config = json.loads((folder / CONFIG_NAME).read_text())
        old = {k: v for k, v in config.items() if k not in ("_worldvid_class", "_library_name")}
        (folder / CONFIG_NAME).write_text(json.dumps({**old, "_class_name": cls.__name__, "_format_version": 1}))
        cache_repo(cache, f"old/{cls.__name__}", folder, "main", COMMITS[0])
        check = imagine if cls is WorldModel else distances
        for source in (folder, f"old/{cls.__name__}"):
            assert torch.equal(check(cls.from_pretrained(source)), check(model))
        assert not (folder / hub_card.CARD_NAME).exists()
        model.save_pretrained(folder)  # the next save writes a card
        assert hub_card.card_metadata(folder)["library_name"] == "worldvid"


def test_a_card_the_user_wrote_is_kept(tmp_path):
    folder = tiny_world_model(0).save_pretrained(tmp_path / "m")
    (folder / hub_card.CARD_NAME).write_text("---\nlicense: mit\n---\n# mine\n")
    tiny_world_model(1).save_pretrained(folder)
    assert (folder / hub_card.CARD_NAME).read_text() == "---\nlicense: mit\n---\n# mine\n"


def fake_run(run: Path) -> None:
    """A run folder's records as ``worldvid train`` writes them (its model/ is saved by the caller)."""
    run.mkdir()
    store = {"data": "/somewhere/private/point16", "held_out_episodes": [4, 5]}
    (run / "train_config.json").write_text(json.dumps({
        "train": dataclasses.asdict(TrainConfig(steps=6)), "data": store["data"],
        "held_out_episodes": store["held_out_episodes"], "stores": [store], "init_from": None}))
    rows = [{"step": 3, "loss": 0.5, "lr": 1e-4}, {"step": 6, "loss": 0.25, "lr": 1e-4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "lo')  # torn tail


def test_a_card_names_the_runs_data_and_metrics_and_they_travel_with_the_same_weights(tmp_path):
    run = tmp_path / "run"
    fake_run(run)
    model = tiny_world_model(0)
    model.save_pretrained(run / "model")
    block = hub_card.card_metadata(run / "model")["worldvid"]
    assert block["training"]["data"] == ["point16"] and block["training"]["held_out_episodes"] == 2
    assert block["training"]["config"]["steps"] == 6 and "/somewhere" not in (run / "model" / "README.md").read_text()
    assert block["metrics"] == {"train": {"step": 6, "loss": 0.25, "lr": 1e-4}}  # no eval yet
    report = {"episodes": [4, 5], "horizon": 2, "model": {"psnr": [30.0, 25.5], "ssim": [0.9, 0.8]},
              "copy_last_frame": {"psnr": [28.0, 20.0]}}
    (run / "eval.json").write_text(json.dumps(report))  # evaluated after the save: it describes these weights

    loaded = WorldModel.from_pretrained(run)  # a run folder reads its model/
    folder = hub.prepare_upload(loaded, tmp_path / "upload", REPO)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert torch.equal(imagine(WorldModel.from_pretrained(folder)), imagine(model))
    card = hub_card.card_metadata(folder)["worldvid"]
    assert card["training"] == block["training"] and card["metrics"]["train"] == block["metrics"]["train"]
    assert card["metrics"]["open_loop"]["model.psnr@2"] == 25.5
    assert f'WorldModel.from_pretrained("{REPO}")' in (folder / "README.md").read_text()
    again = hub.prepare_upload(WorldModel.from_pretrained(folder), tmp_path / "again", REPO)  # and on from a card
    assert hub_card.card_metadata(again)["worldvid"]["metrics"] == card["metrics"]
    with torch.no_grad():
        loaded.denoiser.inner.unet.conv_out.weight.add_(1.0)  # other weights: the run's numbers no longer apply
    changed = hub_card.card_metadata(hub.prepare_upload(loaded, tmp_path / "changed"))["worldvid"]
    assert "metrics" not in changed and "training" not in changed
    hub_card.write_card(run / "model")  # the run's own card, refreshed after the evaluation
    assert hub_card.card_metadata(run / "model")["worldvid"]["metrics"]["open_loop"]["model.ssim@1"] == 0.9


def test_a_world_model_loads_in_bfloat16_under_autocast(tmp_path):
    model = tiny_world_model(0)
    model.save_pretrained(tmp_path / "m")
    reference = WorldModel.from_pretrained(tmp_path / "m", autocast=True)
    for kwargs in ({"dtype": torch.bfloat16}, {"torch_dtype": "bfloat16"}):
        half = WorldModel.from_pretrained(tmp_path / "m", **kwargs)
        assert next(half.parameters()).dtype == torch.bfloat16 and half.autocast is True
        error = (imagine(half).float() - imagine(reference).float()).abs()  # norms read bf16-rounded weights
        assert error.mean() < 0.5 and error.max() <= 8, (error.mean(), error.max())
    assert next(WorldModel.from_pretrained(tmp_path / "m", dtype="auto").parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="float16"):
        WorldModel.from_pretrained(tmp_path / "m", dtype=torch.float16)
    with pytest.raises(ValueError, match="autocast"):
        WorldModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16, autocast=False)
    with pytest.raises(ValueError, match="differ"):
        WorldModel.from_pretrained(tmp_path / "m", dtype=torch.float32, torch_dtype=torch.bfloat16)


def test_a_push_while_offline_fails_in_one_line_and_writes_nothing(tmp_path, offline_cache, monkeypatch):
    from huggingface_hub import HfApi

    def never(*args, **kwargs):
        raise AssertionError("the Hub was called")

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, never)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    cache, _ = offline_cache
    for model in (tiny_world_model(0), tiny_distance(0)):
        with pytest.raises(ConnectionError) as error:
            model.push_to_hub(REPO, revision="v1", private=True, commit_message="try")
        assert "\n" not in str(error.value) and REPO in str(error.value) and "offline" in str(error.value)
    assert not any(temporary.iterdir()) and not any(cache.iterdir())
    with pytest.raises(ValueError, match="owner/name"):
        tiny_world_model(0).push_to_hub("not a repo id")


def test_hf_hub_offline_set_before_python_starts_is_honoured(tmp_path):
    cache = tmp_path / "hf"
    tiny_world_model(1).save_pretrained(tmp_path / "v1")
    cache_repo(cache, REPO, tmp_path / "v1", "v1", COMMITS[1])
    code = ("from worldvid.model import WorldModel; from worldvid.model.folder import state_checksum; "
            f"print(state_checksum(WorldModel.from_pretrained({REPO!r}, revision='v1').state_dict()))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == state_checksum(tiny_world_model(1).state_dict())
