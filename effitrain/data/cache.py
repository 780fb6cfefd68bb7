"""The on-disk cache (tokenizers, tokenized corpora): ``$EFFITRAIN_CACHE`` or ``~/.cache/effitrain``.

Files are written to a temporary name in the same folder and renamed into place, so an
interrupted or failed build never leaves a half-written entry behind. Each entry is built under
a file lock (`build_lock`), so runs that build the same fresh cache at once build it once: the
first builds, the others wait and then read what it built. New files get the permissions of any
file the user creates (0666 less the umask), like the rest of the cache.
"""
from __future__ import annotations

import glob
import os
import secrets
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock

# what a write to a full or read-only disk raises (torch.save and Arrow writers raise RuntimeError)
WRITE_ERRORS = (OSError, RuntimeError)


class CacheWarning(UserWarning):
    """The cache could not be written (a read-only or full disk): what is there is read, the rest is
    built in memory for this run and not kept."""


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def checkout_folder(env: str, *parts: str) -> Path:
    """Folder `env` names if set; else `parts` under the source checkout this package runs from (a folder
    with pyproject.toml above the package); else the last part in the current folder."""
    named = os.environ.get(env, "").strip()
    if named:
        return Path(named).expanduser()
    repo = Path(__file__).resolve().parents[2]
    return repo.joinpath(*parts) if (repo / "pyproject.toml").exists() else Path.cwd() / parts[-1]


def cache_dir(*parts: str) -> Path:
    """A folder of the cache, made if it can be (a read-only cache still reads the folders it has)."""
    root = Path(os.environ.get("EFFITRAIN_CACHE") or Path.home() / ".cache" / "effitrain")
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # the first write in it says what is wrong, and the caller keeps its result in memory
    return path


def cannot_keep(what: str, where: Path, exc: BaseException) -> None:
    """Warn in one line that `what` is used from memory because `where` cannot be written."""
    warnings.warn(f"cache: cannot write {what} in {where} ({first_line(exc)}); using it from memory for this run",
                  CacheWarning, stacklevel=3)


def map_cached(dataset: Any, fn: Callable, path: Path, what: str, method: str = "map", **kwargs: Any) -> Any:
    """`dataset.map(fn, cache_file_name=path)` (or `.filter`), or in memory when the cache file cannot
    be written (nothing half-written is left at `path`)."""
    existed = path.exists()
    try:
        return getattr(dataset, method)(fn, cache_file_name=str(path), keep_in_memory=False, **kwargs)
    except WRITE_ERRORS as exc:
        if not existed and path.exists():
            try:
                path.unlink()
            except OSError:
                pass
        cannot_keep(what, path.parent, exc)
        return getattr(dataset, method)(fn, keep_in_memory=True, **kwargs)


# a temporary file older than this is stale whoever wrote it (a writer on another host of a shared cache)
STALE_TMP_SECONDS = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def sweep_stale(target: Path) -> list[Path]:
    """Remove the temporary files an `atomic_path` writer of `target` left when it was killed (a
    `kill -9` or a power cut gives no chance to clean up): those whose process is gone from this
    machine, or older than a day. Returns what was removed; what cannot be removed stays."""
    target, removed = Path(target), []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        owner = tmp.name[len(target.name) + 2:-len(".tmp")].split(".")[0]
        try:
            stale = (owner.isdigit() and not _alive(int(owner))) or time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The temporary name holds the writer's process id, so a later write of `target` removes what a
    killed writer left (`sweep_stale`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    while True:
        tmp_path = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            # O_EXCL: a fresh name of our own; mode 0o666: the umask applies, as to any new file
            # (tempfile.mkstemp would make it 0600, unreadable to the group of a shared cache)
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold the lock for building the cache entry `target` (across processes and threads).

    Build an entry as ``with build_lock(path): if not path.exists(): build it``: whoever comes
    second waits for the first and then finds the entry built. The lock files live in the cache's
    ``locks/`` folder, away from the entries.
    """
    target = Path(target)
    name = f"{target.parent.name}-{target.name}.lock"
    locks = cache_dir("locks")
    lock = FileLock(str(locks / name))
    try:
        lock.acquire()
    except OSError as exc:  # a read-only or full cache: read what is there, build the rest unlocked
        warnings.warn(f"cache: cannot lock {target.name} in {locks} ({first_line(exc)}); reading what "
                      "the cache has and building the rest without the lock", CacheWarning, stacklevel=3)
        yield
        return
    try:
        yield
    finally:
        lock.release()
