"""An in-memory `ipam.store.Store`, as the reference's backend/testing FakeStore.

It keeps the same facts as the disk store (a lease per address, the last
reserved address per range set) in dicts, so that the allocator and the
plugin can be driven without a filesystem, and `test_store_contract` holds
both to one behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from foundation.addresses import IPAddress
from foundation.cni.spec import Attachment
from ipam.store import Lease, LeaseIndex, LockTimeout


class FakeStore:
    def __init__(self) -> None:
        self._leases: dict[IPAddress, Lease] = {}
        self._last: dict[int, IPAddress] = {}
        self.stale_temp = False  # a temp file "left by a killed process"

    def reserve(self, att: Attachment, address: IPAddress, range_id: int) -> bool:
        if address in self._leases:
            return False
        self._leases[address] = Lease(att.container_id.strip(), att.ifname)
        self._last[range_id] = address
        return True

    def release(self, address: IPAddress) -> bool:
        return self._leases.pop(address, None) is not None

    def leases(self) -> dict[IPAddress, Lease]:
        return dict(self._leases)

    def index(self) -> LeaseIndex:
        return LeaseIndex(dict(self._leases))

    def last_reserved(self, range_id: int) -> IPAddress | None:
        return self._last.get(range_id)

    def get_by_id(self, att: Attachment) -> list[IPAddress]:
        return self.index().held(att)  # in address order, as LeaseIndex gives it

    def release_by_id(self, att: Attachment) -> list[IPAddress]:
        index = self.index()
        return [a for a in index.exact(att) or index.legacy(att) if self.release(a)]

    def remove_stale_temp(self) -> bool:
        stale, self.stale_temp = self.stale_temp, False
        return stale

    def put_legacy(self, address: IPAddress, container_id: str) -> None:
        """A lease as an older host-local wrote it (container ID only)."""
        self._leases[address] = Lease(container_id, None)


class FakeStores:
    """`OpenStore` over one FakeStore per (data_dir, network), with a real lock
    per network; `held` makes the next open time out, as a wedged holder would."""

    def __init__(self) -> None:
        self.stores: dict[tuple[str, str], FakeStore] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self.held: set[tuple[str, str]] = set()
        self.opened = 0

    @contextmanager
    def __call__(self, data_dir: str, network: str,
                 timeout: float | None = None) -> Iterator[FakeStore]:
        key = (data_dir, network)
        if key in self.held:
            raise LockTimeout
        lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=-1 if timeout is None else timeout):
            raise LockTimeout
        try:
            self.opened += 1
            yield self.stores.setdefault(key, FakeStore())
        finally:
            lock.release()
