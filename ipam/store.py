"""host-local's on-disk lease store, file for file, behind a narrow interface.

Why identical: a node must be able to switch between the reference host-local
plugin and skein-ipam in either direction without losing or duplicating a
lease, and during a rollout both may run against the same network at once.  So
this reproduces the reference's disk backend (plugins/ipam/host-local/backend/
disk) and takes the same lock:

    <dataDir>/<network>/                       one directory per network name
    <dataDir>/<network>/lock                   flock(LOCK_EX) around every operation
    <dataDir>/<network>/<address>              one file per lease: "<containerID>\\r\\n<ifname>"
                                               (older host-local wrote "<containerID>")
    <dataDir>/<network>/last_reserved_ip.<N>   the last address reserved in range set N

Crash safety: a lease appears complete or not at all.  Its content is written
to a temporary file and fsynced, then the file is hard-linked to the address's
name; link(2) fails with EEXIST when the address is taken, exactly as the
reference's O_CREAT|O_EXCL does, but neither a kill -9 nor a power loss can
leave an empty lease that no DEL would ever match.  All writers hold the lock,
so one temporary name suffices, and a leftover one is stale by definition.
Inside skein-agent the file is instead an unnamed one made ahead of time
(ipam/spare.py), fsynced and linked the same way.

The interface (`Store`: reserve / release / release_by_id / get_by_id /
last_reserved / leases / index / remove_stale_temp, and `OpenStore` to hold a
network's lock) is what the allocator and the plugin need and nothing more, so
a different backend can replace this one, as the reference's backend.Store
does; tests/ipam/fake_store.py is the in-memory one.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from foundation.addresses import IPAddress, address_order
from foundation.cni.spec import Attachment

if TYPE_CHECKING:
    from ipam.leasecache import LeaseCache
    from ipam.ranges import RangeSet
    from ipam.spare import Spares

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LOCK_FILE = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
# Dot-prefixed so that it can never be taken for an address; host-local ignores it.
TEMP_FILE = ".skein-ipam.tmp"


class Store(Protocol):
    """The leases of one network, while its lock is held."""

    def reserve(self, att: Attachment, address: IPAddress, range_id: int) -> bool: ...
    def release(self, address: IPAddress) -> bool: ...
    def index(self) -> LeaseIndex: ...
    def last_reserved(self, range_id: int) -> IPAddress | None: ...
    def leases(self) -> dict[IPAddress, Lease]: ...
    def get_by_id(self, att: Attachment) -> list[IPAddress]: ...
    def release_by_id(self, att: Attachment) -> list[IPAddress]: ...
    def remove_stale_temp(self) -> bool: ...


class OpenStore(Protocol):
    """Holds network `network`'s lock for a block and yields its `Store`
    (raises LockTimeout when not granted within `timeout` seconds, OSError on
    storage failures); `DiskStore.open` binds its own extras with partial."""

    def __call__(self, data_dir: str, network: str,
                 timeout: float | None = None) -> AbstractContextManager[Store]: ...


class LockTimeout(Exception):
    """The network's lock was not granted within the allowed time."""


class Lease(NamedTuple):
    """The content of a lease file; `ifname` is None in a legacy (ID-only) file.
    What a lease belongs to is an `Attachment` (foundation.cni.spec).

    Value records here are NamedTuples, not dataclasses: they are built at
    import time of a process that runs once per pod, and cost a fifth as much.
    """

    container_id: str
    ifname: str | None

    @classmethod
    def parse(cls, data: bytes) -> Lease:
        # host-local compares the whole trimmed file with "<id>\r\n<ifname>";
        # splitting once on the line break is the same comparison.
        text = data.decode("utf-8", errors="replace").strip()
        container_id, sep, ifname = text.partition(LINE_BREAK)
        return cls(container_id, ifname if sep else None)

    def exact(self, att: Attachment) -> bool:
        return self.container_id == att.container_id.strip() and self.ifname == att.ifname

    def legacy(self, att: Attachment) -> bool:
        return self.ifname is None and self.container_id == att.container_id.strip()

    def held_by(self, att: Attachment) -> bool:
        return self.exact(att) or self.legacy(att)

    def __str__(self) -> str:
        if not self.container_id:
            return "(empty lease file)"
        return self.container_id if self.ifname is None else f"{self.container_id}/{self.ifname}"


# Range sets whose counts an index keeps (the configs a node uses; beyond that
# the least recently added goes, and is counted afresh if it comes back).
MAX_COUNTED = 16


class LeaseIndex:
    """The leases of one directory (address -> lease), indexed by container ID,
    with a count of the addresses each range set asked about has leased: what
    the allocator asks, answered without a walk over every lease.  skein-agent's
    LeaseCache keeps one per directory current (ipam/leasecache.py)."""

    def __init__(self, leases: dict[IPAddress, Lease]) -> None:
        self.leases = leases
        self._by_container: dict[str, set[IPAddress]] = {}
        self._taken: dict[RangeSet, int] = {}
        for address, lease in leases.items():
            self._by_container.setdefault(lease.container_id, set()).add(address)

    def __contains__(self, address: object) -> bool:
        return address in self.leases

    def get(self, address: IPAddress) -> Lease | None:
        return self.leases.get(address)

    def put(self, address: IPAddress, lease: Lease | None) -> None:
        """The file of `address` now holds `lease` (None: it is gone)."""
        old = self.leases.pop(address, None)
        if old is not None:
            same = self._by_container.get(old.container_id)
            if same is not None:
                same.discard(address)
                if not same:
                    del self._by_container[old.container_id]
        if lease is not None:
            self.leases[address] = lease
            self._by_container.setdefault(lease.container_id, set()).add(address)
        if (old is None) != (lease is None):
            step = 1 if lease is not None else -1
            for range_set in self._taken:
                if _counted(range_set, address):
                    self._taken[range_set] += step

    def _of(self, att: Attachment, holds: Callable[[Lease, Attachment], bool]) -> list[IPAddress]:
        # In address order: a set's order depends on its history, which differs
        # between a scan and a store kept current, and callers report this list.
        return sorted((a for a in self._by_container.get(att.container_id.strip(), ())
                       if holds(self.leases[a], att)), key=address_order)

    def held(self, att: Attachment) -> list[IPAddress]:
        """Addresses `att` holds: its own leases and its container's legacy ones."""
        return self._of(att, Lease.held_by)

    def exact(self, att: Attachment) -> list[IPAddress]:
        return self._of(att, Lease.exact)

    def legacy(self, att: Attachment) -> list[IPAddress]:
        return self._of(att, Lease.legacy)

    def taken(self, range_set: RangeSet) -> int:
        """How many usable addresses of `range_set` are leased; counted once,
        then kept by `put`."""
        count = self._taken.get(range_set)
        if count is None:
            count = sum(1 for address in self.leases if _counted(range_set, address))
            if len(self._taken) >= MAX_COUNTED:
                del self._taken[next(iter(self._taken))]
            self._taken[range_set] = count
        return count


def _counted(range_set: RangeSet, address: IPAddress) -> bool:
    rng = range_set.range_for(address)
    return rng is not None and not rng.is_reserved(address)



def lock_file(fd: int, timeout: float | None) -> None:
    """flock(LOCK_EX) on `fd`, giving up after `timeout` seconds (None: wait
    forever); raises LockTimeout.  See `wait_for_lock`."""

    def take(blocking: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)

    wait_for_lock(take, timeout)


def wait_for_lock(take: Callable[[bool], None], timeout: float | None) -> None:
    """Take a kernel lock with `take(blocking)`, which raises BlockingIOError
    when not blocking and the lock is held; give up after `timeout` seconds
    (None: wait forever) with LockTimeout.

    A blocking wait interrupted by SIGALRM wakes exactly when the holder
    releases, unlike polling, which matters with dozens of pods starting at
    once.  On the main thread of a plugin the signal is ours; other threads
    poll.  (cni_plugin/attachment.py waits with it too.)
    """
    if timeout is None:
        take(True)
        return
    try:
        take(False)
        return
    except BlockingIOError:
        if timeout <= 0:
            raise LockTimeout from None
    if threading.current_thread() is not threading.main_thread():
        # Inside skein-agent (one thread per request) SIGALRM is not ours to
        # borrow: poll instead, with a short back-off.
        _poll(take, timeout)
        return

    def expire(signum: int, frame: Any) -> None:
        raise LockTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        take(True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if previous_delay > 0:
            # Someone else's alarm (a test runner's timeout, say) was pending: give
            # it back with what is left of it, so borrowing SIGALRM is invisible.
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def _poll(take: Callable[[bool], None], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            take(False)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockTimeout from None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


# A lease holds "<container ID>\r\n<ifname>"; IDs are at most a few hundred bytes.
MAX_LEASE_SIZE = 64 * 1024


def write_synced(fd: int, data: bytes) -> None:
    """Write a new lease's content and make it durable before the file gets
    its name: a crash may lose the name (the node's pods are gone then too),
    but never leaves a name whose file is empty, a lease no DEL would match."""
    os.write(fd, data)
    os.fsync(fd)


def read_small(path: str) -> bytes:
    """The content of a lease or hint file (tens of bytes): one bare read(2)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, MAX_LEASE_SIZE)
    finally:
        os.close(fd)


def _read_lease(path: str) -> Lease:
    try:
        return Lease.parse(read_small(path))
    except OSError:
        # Unreadable (or gone since it was listed), but the name occupies the address.
        return Lease("", None)


@functools.lru_cache(maxsize=65536)
def address_of(name: str) -> IPAddress | None:
    """The address a lease file's name stands for, None for any other file."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


_thread_locks: dict[str, threading.Lock] = {}


def _thread_lock(directory: str) -> threading.Lock:
    """The in-process half of a network's lock (see DiskStore.open); setdefault
    is atomic, so two threads asking at once get the same one."""
    lock = _thread_locks.get(directory)
    return lock if lock is not None else _thread_locks.setdefault(directory, threading.Lock())


class DiskStore:
    """The leases of one network; use `DiskStore.open` to hold its lock.
    With `spares`, new leases are written into spare files (ipam/spare.py);
    with `cache`, leases are re-read only where they changed
    (ipam/leasecache.py).  Both are skein-agent's."""

    def __init__(self, directory: str, spares: Spares | None = None,
                 cache: LeaseCache | None = None) -> None:
        self.directory = directory
        self.spares = spares
        self.cache = cache

    @classmethod
    @contextmanager
    def open(cls, data_dir: str, network: str, timeout: float | None = None,
             spares: Spares | None = None, cache: LeaseCache | None = None
             ) -> Iterator[DiskStore]:
        """Create the network's directory if needed and hold its lock for the block.

        Raises LockTimeout, or OSError for any filesystem failure.  A finite
        `timeout` borrows SIGALRM on the main thread and polls on any other.
        """
        directory = os.path.join(data_dir, network)
        # Threads of one process (skein-agent serving parallel ADDs) queue on a
        # threading lock first: it wakes the next one the moment it is free,
        # where the flock can only be polled off the main thread.  The flock
        # then orders this process against every other (host-local included).
        in_process = _thread_lock(os.path.abspath(directory))
        started = time.monotonic()
        if not in_process.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise LockTimeout
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(os.path.join(directory, LOCK_FILE),
                         os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                left = None if timeout is None else timeout - (time.monotonic() - started)
                lock_file(fd, left)
                yield cls(directory, spares, cache)
            finally:
                os.close(fd)  # closing the descriptor releases the flock
        finally:
            in_process.release()

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _write_temp(self, data: bytes) -> str:
        temp = self._path(TEMP_FILE)
        # Unlink rather than truncate: a leftover temp may still be a hard link
        # to a live lease (a process killed between link and unlink).
        with suppress(FileNotFoundError):
            os.unlink(temp)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_synced(fd, data)
        finally:
            os.close(fd)
        return temp

    def _create_lease(self, name: str, data: bytes) -> bool:
        """A new file `name` holding `data`, complete or not at all; False if
        `name` exists.  A spare file is used when there is one."""
        if self.spares is not None:
            spare = self.spares.take(self.directory)
            if spare is not None:
                linked = self._link_spare(spare, name, data)
                if linked is not None:
                    return linked
        temp = self._write_temp(data)
        try:
            os.link(temp, self._path(name))
        except FileExistsError:
            return False
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temp)
        return True

    def _link_spare(self, spare: int, name: str, data: bytes) -> bool | None:
        """`_create_lease` through the spare file (closed here); None if spare
        files cannot be linked here, which turns them off for the directory."""
        from ipam.spare import link_unnamed

        assert self.spares is not None
        try:
            directory = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(spare)
            raise  # as the temporary file's open would: the directory is gone
        try:
            write_synced(spare, data)
            link_unnamed(spare, directory, name)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            # No /proc, or the directory moved to another file system (EXDEV).
            self.spares.unsupported(self.directory, exc)
            return None
        finally:
            os.close(spare)
            os.close(directory)

    def reserve(self, att: Attachment, address: IPAddress, range_id: int) -> bool:
        """Create the lease for `address`; False if the address is already leased.

        Also records `address` as the last reserved of range set `range_id`, as
        the reference does; if that fails, the lease is removed again so that
        the caller's error does not leave an orphan.
        """
        lease = str(address)
        if not self._create_lease(lease, (att.container_id.strip() + LINE_BREAK
                                          + att.ifname).encode()):
            return False
        try:
            self._record_last_reserved(address, range_id)
        except OSError:
            with suppress(OSError):
                os.unlink(self._path(lease))
            raise
        return True

    def _record_last_reserved(self, address: IPAddress, range_id: int) -> None:
        """Rewrite last_reserved_ip.N in place.

        Not through a temp file and a rename like a lease: on ext4 a rename over
        an existing file (or a truncation to zero, the reference's way) makes
        the kernel start writing the data out at once (auto_da_alloc), on the
        path of every ADD.  Every reader holds the lock, so none sees the file half
        written; a crash in between leaves at worst a wrong or unparsable hint,
        which costs one round of round robin (see `last_reserved`)."""
        data = str(address).encode()
        fd = os.open(self._path(f"{LAST_RESERVED_PREFIX}{range_id}"),
                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def release(self, address: IPAddress) -> bool:
        """Remove the lease of `address`; False if there was none."""
        try:
            os.unlink(self._path(str(address)))
        except FileNotFoundError:
            return False
        return True

    def leases(self) -> dict[IPAddress, Lease]:
        """Every lease of the network: files named by an address, nothing else.
        With a LeaseCache (skein-agent), only what changed is read."""
        if self.cache is not None:
            return self.cache.leases(self)
        return self.scan()

    def index(self) -> LeaseIndex:
        """The leases with what an ADD asks of them (ipam/leasecache.py): kept
        current by the LeaseCache (skein-agent), else built from `scan`."""
        if self.cache is not None:
            return self.cache.index(self)
        return LeaseIndex(self.scan())

    def scan(self) -> dict[IPAddress, Lease]:
        """Every lease, read from disk.

        Every ADD reads them all (as host-local does, to refuse a second lease
        for the same attachment), so the loop stays lean: file names are parsed
        once per process (`address_of`), contents read with a bare read(2)."""
        out: dict[IPAddress, Lease] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                address = address_of(entry.name)
                if address is None:
                    continue  # lock, last_reserved_ip.N, temp, anything foreign
                if not entry.is_file(follow_symlinks=False):
                    continue
                out[address] = _read_lease(entry.path)
        return out

    def lease_named(self, name: str) -> tuple[IPAddress | None, Lease | None]:
        """(address, lease) of one file as `scan` would see it: address None
        for a name that is no address, lease None when it holds no lease."""
        address = address_of(name)
        if address is None:
            return None, None
        path = self._path(name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return address, None
        except FileNotFoundError:
            return address, None
        return address, _read_lease(path)

    def get_by_id(self, att: Attachment) -> list[IPAddress]:
        """Addresses leased to `att`, counting legacy ID-only leases of its container."""
        return self.index().held(att)

    def release_by_id(self, att: Attachment) -> list[IPAddress]:
        """Release what `att` holds, as the reference does: its exact leases, or
        when there are none, the legacy leases of its container ID."""
        index = self.index()
        chosen = index.exact(att) or index.legacy(att)
        return [a for a in chosen if self.release(a)]

    def last_reserved(self, range_id: int) -> IPAddress | None:
        """The last address reserved in range set `range_id`, if one is recorded."""
        try:
            data = read_small(self._path(f"{LAST_RESERVED_PREFIX}{range_id}"))
        except FileNotFoundError:
            return None
        try:
            return ipaddress.ip_address(data.decode("ascii", errors="replace").strip())
        except ValueError:
            return None  # garbage costs only one round of round robin, as in the reference

    def remove_stale_temp(self) -> bool:
        """Drop a temp file left by a killed process (only safe under the lock)."""
        try:
            os.unlink(self._path(TEMP_FILE))
        except FileNotFoundError:
            return False
        return True
