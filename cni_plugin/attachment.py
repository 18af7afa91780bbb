"""The per-attachment lock between skein-agent and the `skein` fallback.

While the agent works on an attachment (container ID + interface) it holds
that attachment's lock file; a plugin whose agent died mid-request waits for
the kernel to drop the lock, then undoes and redoes the work itself
(cni_plugin/fallback.py).  The files live beside the agent's socket, under
`attachments/`, and a successful DEL removes its own.  Waiting for the lock is
ipam.store's `lock_file`: exact wake-ups on a plugin's main thread, polling
on the agent's worker threads.
"""

from __future__ import annotations

import hashlib
import os
import time

from ipam.store import LockTimeout, lock_file


def lock_path(socket_path: str, container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:32]
    return os.path.join(os.path.dirname(socket_path), "attachments", digest + ".lock")


def lock(socket_path: str, container_id: str, ifname: str, timeout: float = 60.0) -> int | None:
    """flock the attachment's lock file; the fd (closing it unlocks), or None
    when it could not be had in time.  A DEL removes the file (see `unlock`),
    so a lock won on a file that is no longer the one at its path is
    worthless: it is dropped and taken again on the new file."""
    path = lock_path(socket_path, container_id, ifname)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the first attachment: no directory yet
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            continue
        try:
            lock_file(fd, deadline - time.monotonic())
        except LockTimeout:
            os.close(fd)
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev,
                                                                          held.st_ino):
            return fd
        os.close(fd)  # removed by a DEL while we waited: lock the file there now


def unlock(fd: int, socket_path: str, container_id: str, ifname: str, deleted: bool) -> None:
    """Release the attachment's lock; after a successful DEL also remove its
    file (while still holding it), so the files do not pile up."""
    try:
        if deleted:
            try:
                os.unlink(lock_path(socket_path, container_id, ifname))
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
