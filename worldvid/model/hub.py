"""worldvid's checkpoint folders on the Hugging Face Hub (world model, goal distance).

- ``resolve_folder``: what ``from_pretrained`` reads: a local folder (or a run folder, whose model/ it reads) or a
  Hub repo id "owner/name" at ``revision``, fetched by ``huggingface_hub.snapshot_download`` into the Hub's own
  cache (only the cache is read when HF_HUB_OFFLINE is set or ``local_files_only``).
- ``push_to_hub``: save into a temporary folder (``prepare_upload``), then ``HfApi.create_repo`` + ``upload_folder``.
  The card it uploads is ``worldvid.model.card``'s.

huggingface_hub (installed with diffusers) is imported where it is used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldvid.model.card import KINDS, LIBRARY_NAME
from worldvid.model.folder import folder_to_read
from worldvid.model.pretrained import save_folder
from worldvid.run_files import MODEL_DIR
from worldvid.version import __version__

if TYPE_CHECKING:
    import torch

HUB_FILES = ["*.json", "*.safetensors", "*.md"]
"""What ``from_pretrained`` fetches from a repo: configs, weights, cards; never a pickle (training_state.pt)."""


# ---------------------------------------------------------------------------- resolution
def is_repo_id(name: object) -> bool:
    """Whether ``name`` is a str of the Hub's "owner/name" form (a Path never is)."""
    if not isinstance(name, str) or name.count("/") != 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def offline() -> bool:
    """Whether the Hub is offline: HF_HUB_OFFLINE as huggingface_hub read it at import, or as it is now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def resolve_folder(name_or_path: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                   token: str | bool | None = None, kind: str = "world model") -> Path:
    """The folder ``from_pretrained`` reads for ``name_or_path``: a local folder (a run folder: its model/), or
    the snapshot of Hub repo "owner/name" at ``revision`` (a branch, tag or commit; default "main") in the Hub
    cache (``cache_dir``, default HF_HUB_CACHE). A str that names an existing local folder is that folder.

    A repo not in the cache while offline (or ``local_files_only``) raises FileNotFoundError, in one line
    naming the repo, the revision and the cache.
    """
    local = Path(name_or_path).expanduser()
    if not is_repo_id(name_or_path) or local.exists() or folder_to_read(local) is not None:
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to a Hub repo id, but {name_or_path} is a local folder")
        folder = local
    else:
        folder = _download(str(name_or_path), revision, cache_dir, local_files_only, token, kind)
    if folder_to_read(folder) is None and ((folder / MODEL_DIR).is_dir() or folder_to_read(folder / MODEL_DIR)):
        return folder / MODEL_DIR  # a run folder
    return folder


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None, local_files_only: bool,
              token: str | bool | None, kind: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    cache_only = offline() or local_files_only
    where = f"Hub repo {repo_id} (revision {revision or 'main'})"
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=cache_only, allow_patterns=HUB_FILES,
                                      library_name=LIBRARY_NAME, library_version=__version__))
    except LocalEntryNotFoundError as e:  # also an incomplete snapshot (IncompleteSnapshotError)
        why = ("the Hub is offline (HF_HUB_OFFLINE=1)" if offline() else "local_files_only=True" if local_files_only
               else "the Hub could not be reached")
        state = "is incomplete in" if type(e).__name__ == "IncompleteSnapshotError" else "is not in"
        raise FileNotFoundError(f"no {kind} at {repo_id}: not a local folder, and {where} {state} the Hugging Face "
                                f"cache {Path(cache_dir or constants.HF_HUB_CACHE)} while {why}") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"no {kind} at {where}: the repo has no such revision") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"no {kind} at {repo_id}: not a local folder, nor a Hub repo this token can read "
                                "(private or gated repos need token=)") from None
    except HfHubHTTPError as e:
        raise OSError(f"cannot fetch the {kind} {where}: {_first_line(e)}") from None


# ---------------------------------------------------------------------------- upload
def prepare_upload(model: "torch.nn.Module", folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Save ``model`` into ``folder`` as ``push_to_hub`` uploads it (config.json, model.safetensors, README.md
    naming ``repo_id``); returns the folder."""
    return save_folder(model, folder, kind=KINDS.get(type(model).__name__, ("model",))[0], repo_id=repo_id)


def push_to_hub(model: "torch.nn.Module", repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | bool | None = None, commit_message: str | None = None) -> Any:
    """Upload ``model`` to Hub repo ``repo_id`` (created when missing; ``revision``: a branch, created from main
    when missing) as one commit; returns huggingface_hub's CommitInfo.

    Offline (HF_HUB_OFFLINE) it raises ConnectionError in one line before writing anything."""
    kind = KINDS.get(type(model).__name__, ("model",))[0]
    if not is_repo_id(repo_id):
        raise ValueError(f"cannot push the {kind}: {repo_id!r} is not a Hub repo id of the form 'owner/name'")
    if offline():
        raise ConnectionError(f"cannot push the {kind} to {repo_id}: the Hub is offline (HF_HUB_OFFLINE=1); "
                              "nothing was written or uploaded")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="worldvid-push-") as tmp:
        folder = prepare_upload(model, Path(tmp) / "upload", repo_id)
        api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                     commit_message=commit_message or f"Upload {kind} (worldvid {__version__})")
        except (HfHubHTTPError, OSError) as e:
            raise OSError(f"cannot push the {kind} to {repo_id}: {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
