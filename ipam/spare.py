"""Unnamed lease files made ahead of time, for skein-ipam inside skein-agent.

Why: a lease is a new file, and allocating its inode costs far more than the
link(2) that gives it its name.  Inside skein-agent the lease is on
the critical path of every pod ADD, while between two ADDs the agent has
nothing to do.  So the agent makes the next lease's file before it is asked
for: `Spares.take` hands the store a file opened with O_TMPFILE in the
network's directory, the store writes the lease into it and links it under
the address's name (ipam/store.py), and `Spares.replenish`, which the fast
path calls after it has sent each answer, makes the next one.

Why it is safe:
- an O_TMPFILE file has no name until it is linked, so nobody else can see
  a spare, and an agent that dies holding spares leaves nothing on disk: the
  kernel frees them with the process;
- what others see is unchanged: the finished lease appears under its name,
  under the network's lock, exactly as with the temporary-file way.

Where O_TMPFILE or /proc is missing (an old kernel, a file system without
it), the directory gets no spares and the store writes through a temporary
file as the executable does.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("skein.ipam.spare")


def unnamed_file(directory: str) -> int:
    """A new, empty, nameless file in `directory`'s file system, open for
    writing (O_TMPFILE); `link_unnamed` names it."""
    return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644)


def link_unnamed(fd: int, directory_fd: int, name: str) -> None:
    """Give the unnamed file `fd` the name `name` in `directory_fd`.

    linkat(2) with AT_SYMLINK_FOLLOW on /proc/self/fd/N is the documented
    way (open(2), O_TMPFILE) for a process without CAP_DAC_READ_SEARCH;
    os.link only makes a linkat(2) when given a directory fd.  Raises
    FileExistsError when `name` exists, another OSError when the file cannot
    be linked at all (no /proc, another file system: EXDEV)."""
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory_fd, follow_symlinks=True)


class Spares:
    """At most one spare file per lease directory, made by `replenish`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._unsupported: set[str] = set()

    def take(self, directory: str) -> int | None:
        """The spare file of `directory`, now the caller's to close; None if
        there is none yet (the next `replenish` makes one)."""
        with self._lock:
            if directory in self._unsupported:
                return None
            self._wanted.add(directory)
            return self._ready.pop(directory, None)

    def unsupported(self, directory: str, why: OSError) -> None:
        """A spare of `directory` could not be linked: make none again."""
        log.warning("lease files in %s: spare files cannot be linked (%s); writing "
                    "through a temporary file instead", directory, why.strerror or why)
        with self._lock:
            self._unsupported.add(directory)
            self._wanted.discard(directory)
            fd = self._ready.pop(directory, None)
        if fd is not None:
            os.close(fd)

    def replenish(self) -> None:
        """Make the spare files that were taken.  Never raises: a directory
        that cannot have one (gone, no O_TMPFILE) is left to the temporary
        file way."""
        with self._lock:
            missing = [d for d in self._wanted if d not in self._ready]
        for directory in missing:
            try:
                fd = unnamed_file(directory)
            except OSError as exc:
                # Gone (the next take asks again) or unsupported: either way no spare now.
                with self._lock:
                    self._wanted.discard(directory)
                log.debug("no spare lease file in %s: %s", directory, exc)
                continue
            with self._lock:
                if directory in self._ready or directory in self._unsupported:
                    os.close(fd)  # another worker was quicker, or linking failed meanwhile
                else:
                    self._ready[directory] = fd

    def close(self) -> None:
        with self._lock:
            fds = list(self._ready.values())
            self._ready.clear()
            self._wanted.clear()
        for fd in fds:
            os.close(fd)
