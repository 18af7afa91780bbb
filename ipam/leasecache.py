"""The leases of each network kept in memory by skein-agent, re-read only
where inotify says something changed.

Why: every ADD reads every lease of its network, as host-local does, to
refuse a second lease for the same attachment; DEL and GC read them all as
well.  From a one-shot executable there is no way around it, but a node
agent that answers ADD after ADD reads the same files again and again: N
opens and reads per pod, with N the pods already on the node.

Why it is never stale: every writer (host-local, an exec'd skein-ipam, this
agent) changes a lease directory only while it holds the network's lock
(ipam/store.py), and the kernel queues an inotify event inside the very
system call that makes a change.  So once this process holds the lock, every
change made before it got the lock is already in the queue, and draining the
queue says exactly which names to read again.  Whatever makes the queue
unreliable (it overflowed, the directory was removed or moved, the watch
went away) drops the directory's leases, which are then read whole, as
without a cache.  The watch is set before that whole read, so no change
falls between the two.

A directory whose watch cannot be had (inotify's limits reached) is simply
read from disk every time.

What an ADD asks of the leases -- does this attachment hold one already, how
many addresses of this range set are taken, is this address free -- is
answered by the directory's `LeaseIndex` (ipam/store.py), which the cache
keeps current change by change: by attachment (through its container ID) and
a count per range set, so that an ADD costs the same on a node with a
thousand pods as on an empty one.  Without the cache (the executable) the
index is built from one full read, as host-local reads every lease on every
ADD.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from foundation import inotify
from ipam.store import LeaseIndex

if TYPE_CHECKING:
    from foundation.addresses import IPAddress
    from ipam.store import DiskStore, Lease

_CHANGES = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM
            | inotify.IN_MOVED_TO | inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE
            | inotify.IN_ATTRIB | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
            | inotify.IN_ONLYDIR)
# The directory itself is gone or no longer watched: nothing about it can be trusted.
_LOST = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_IGNORED


class _Directory:
    def __init__(self, wd: int) -> None:
        self.wd = wd
        self.index: LeaseIndex | None = None  # None: read it whole
        self.changed: set[str] = set()


class LeaseCache:
    """One inotify instance for every network directory of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inotify: inotify.Inotify | None = None
        self._dirs: dict[str, _Directory] = {}
        self._by_wd: dict[int, _Directory] = {}

    def leases(self, store: DiskStore) -> dict[IPAddress, Lease]:
        """`store.scan()`, from memory where nothing changed.  The caller
        holds the network's lock (DiskStore.open)."""
        return dict(self.index(store).leases)

    def index(self, store: DiskStore) -> LeaseIndex:
        """The index of `store`'s leases, brought up to date: valid while the
        caller holds the network's lock (DiskStore.open), which it must."""
        with self._lock:
            entry = self._entry(store.directory)
            if entry is None:
                return LeaseIndex(store.scan())
            self._drain()
            if self._by_wd.get(entry.wd) is not entry:  # its watch went away
                self._forget(entry)
                return LeaseIndex(store.scan())
            if entry.index is None:
                entry.changed.clear()
                entry.index = LeaseIndex(store.scan())
            elif entry.changed:
                for name in entry.changed:
                    address, lease = store.lease_named(name)
                    if address is not None:
                        entry.index.put(address, lease)
                entry.changed.clear()
            return entry.index

    def _entry(self, directory: str) -> _Directory | None:
        entry = self._dirs.get(directory)
        if entry is not None:
            return entry
        try:
            if self._inotify is None:
                self._inotify = inotify.Inotify()
            wd = self._inotify.add_watch(directory, _CHANGES)
        except OSError:
            return None  # no inotify, or its limits reached: read from disk
        entry = self._by_wd.get(wd)  # the same directory under another path
        if entry is None:
            entry = self._by_wd[wd] = _Directory(wd)
        self._dirs[directory] = entry
        return entry

    def _drain(self) -> None:
        assert self._inotify is not None
        for event in self._inotify.read():
            if event.mask & inotify.IN_Q_OVERFLOW:
                for entry in self._by_wd.values():
                    entry.index = None  # events were lost: read everything again
                continue
            watched = self._by_wd.get(event.wd)
            if watched is None:
                continue
            if event.mask & _LOST:
                watched.index = None
                if event.mask & inotify.IN_IGNORED:
                    del self._by_wd[event.wd]
                continue
            if event.name:
                watched.changed.add(event.name)

    def _forget(self, entry: _Directory) -> None:
        for path in [p for p, e in self._dirs.items() if e is entry]:
            del self._dirs[path]
        self._by_wd.pop(entry.wd, None)

    def close(self) -> None:
        with self._lock:
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            self._dirs.clear()
            self._by_wd.clear()
