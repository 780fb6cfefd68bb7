"""The on-disk cache (tokenizers, tokenized corpora): ``$EFFITRAIN_CACHE`` or ``~/.cache/effitrain``.

Files are written to a temporary name in the same folder and renamed into place, so an
interrupted or failed build never leaves a half-written entry behind. Each entry is built under
a file lock (`build_lock`), so runs that build the same fresh cache at once build it once: the
first builds, the others wait and then read what it built. New files get the permissions of any
file the user creates (0666 less the umask), like the rest of the cache.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("EFFITRAIN_CACHE") or Path.home() / ".cache" / "effitrain")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp_path = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
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
    with FileLock(str(cache_dir("locks") / name)):
        yield
