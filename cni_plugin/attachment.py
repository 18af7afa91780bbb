"""The per-attachment lock between skein-agent and the `skein` fallback.

While the agent works on an attachment (container ID + interface) it holds
that attachment's lock; a plugin whose agent died mid-request waits for the
kernel to drop the lock, then undoes and redoes the work itself
(cni_plugin/fallback.py).

One file, `attachments.lock` beside the agent's socket, serves every
attachment: the lock is one byte of it, at an offset hashed from the
attachment, taken as an open file description lock (fcntl F_OFD_SETLKW).
Such a lock belongs to the open file, not to the process as a classic POSIX
record lock does, so two of the agent's threads exclude each other just as
the agent and a plugin do, and the kernel drops it when the file is closed
or its holder dies, as with flock.  Why not a file per attachment, each
flocked: that creates a file on every pod ADD (an inode, more than a lock
costs), and the files must be removed after DEL, carefully, since a waiter
could be holding the removed one.  Two attachments whose
hashes meet (one chance in 2^56) only take turns.

Waiting is ipam.store's `wait_for_lock`: exact wake-ups on a plugin's main
thread, polling on the agent's worker threads.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct

from ipam.store import LockTimeout, wait_for_lock

LOCK_FILE = "attachments.lock"
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
_FLOCK = struct.Struct("@hhqqi4x")


def lock_path(socket_path: str) -> str:
    return os.path.join(os.path.dirname(socket_path), LOCK_FILE)


def lock_offset(container_id: str, ifname: str) -> int:
    """The attachment's byte in the lock file (stable across processes)."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def lock(socket_path: str, container_id: str, ifname: str, timeout: float = 60.0) -> int | None:
    """Hold the attachment's lock: the fd (`unlock` or closing it releases the
    lock), or None when it could not be had within `timeout` seconds."""
    path = lock_path(socket_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # no agent ever ran here: nobody to wait for
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    region = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, lock_offset(container_id, ifname), 1, 0)

    def take(blocking: bool) -> None:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if blocking else fcntl.F_OFD_SETLK, region)
        except PermissionError:  # EACCES: how some systems say "held" (fcntl(2))
            raise BlockingIOError from None

    try:
        wait_for_lock(take, timeout)
    except LockTimeout:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    """Release the attachment's lock."""
    os.close(fd)
