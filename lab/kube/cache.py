"""The build cache's one rule: a named build holds its lock for as long as it
writes, so parallel `skein-lab kube up`s (or a test and a bench) reuse one
result instead of racing to write it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def cache_lock(root: Path, name: str, error: Callable[[str], Exception]) -> Iterator[None]:
    """flock `root/.NAME.lock` for the block; an unwritable cache raises `error(message)`."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise error(f"cache {root} is not writable: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
