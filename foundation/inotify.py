"""A thin inotify(7) wrapper: one non-blocking instance, watches, drained events.

The standard library has no inotify; three libc calls through ctypes are all
ipam/leasecache.py and the manifests file source need, which is less than a
dependency is worth.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len


class Event(NamedTuple):
    wd: int  # -1 with IN_Q_OVERFLOW
    mask: int
    name: str  # "" for an event of the watched directory itself


def parse_events(data: bytes) -> list[Event]:
    """The events of one read(2) of an inotify descriptor."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset:offset + size]
        offset += size
        events.append(Event(wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
    return events


class Inotify:
    """One inotify instance; `read` never blocks."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "inotify_init1")
        self.fd = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def read(self) -> list[Event]:
        """Every queued event, [] when there is none."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            events.extend(parse_events(data))

    def close(self) -> None:
        os.close(self.fd)
