"""One writer per folder: an exclusive lock file that names its owner and dies with it.

``folder_lock(FOLDER, "collect")`` holds FOLDER/.worldvid.lock for the length of a ``with`` block. The lock is
an OS advisory lock (``fcntl.flock``) on that file, which the kernel releases when the owner exits for any
reason (kill -9 included), so a lock left behind by a dead process is stale by construction and simply taken
over. The file's text names the holder (pid, what it does, since when) so that a second writer is refused
with a line saying who holds the folder. Where ``fcntl`` does not exist (Windows) the file is created
exclusively and a lock whose pid no longer runs is taken over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".worldvid.lock"


class FolderLockedError(RuntimeError):
    """Another live process is writing to the folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"{info.get('purpose', 'another worldvid command')} (pid {info.get('pid', '?')}, since {info.get('since', '?')})"
    except (OSError, ValueError):
        return "another worldvid command"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine); used to tell a dead writer's leftovers from a live one's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse(folder: Path, path: Path) -> FolderLockedError:
    return FolderLockedError(f"{folder} is in use by {_holder(path)}; wait for it to finish or stop it, "
                             "then rerun (a killed owner's lock is released automatically)")


@contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """Hold ``folder``'s write lock (creating the folder) for the ``with`` block; yields the lock file's path.

    Raises FolderLockedError naming the holder when another live process holds it. Re-entrant within one
    process is not supported: take the lock once, at the command's top.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    record = json.dumps({"pid": os.getpid(), "purpose": purpose,
                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _refuse(folder, path) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            try:
                yield path
            finally:
                os.ftruncate(fd, 0)  # the file stays (unlinking a flock file races with a waiting opener)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    for _ in range(2):  # pragma: no cover - Windows
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            try:
                stale = not pid_alive(int(json.loads(path.read_text())["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                stale = True
            if not stale:
                raise _refuse(folder, path) from None
            path.unlink(missing_ok=True)
    else:  # pragma: no cover
        raise _refuse(folder, path)
    try:  # pragma: no cover - Windows
        os.write(fd, record)
        os.close(fd)
        yield path
    finally:  # pragma: no cover - Windows
        path.unlink(missing_ok=True)


def holds_lock(folder: str | os.PathLike) -> bool:
    """Whether some live process holds ``folder``'s write lock (never takes it for longer than a test)."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return False
    if fcntl is None:  # pragma: no cover - Windows
        try:
            return pid_alive(int(json.loads(path.read_text())["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "FolderLockedError", "folder_lock", "holds_lock", "pid_alive"]
