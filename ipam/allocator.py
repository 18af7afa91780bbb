"""Choosing addresses: host-local's allocation strategy over a lease store.

Why apart from the store and the plugin: the strategy -- one address from each
range set, round robin after the last reserved address, all or nothing, no
second address for the same attachment -- is the part worth proving with
properties.  It sees storage only through the `Store` protocol, so its tests
can run against a temporary directory and other allocators can reuse it.

Unlike the reference, which tries to reserve every address in turn, the walk
skips addresses already known to be leased and refuses at once when the count
of leases shows the range set is full, so a full IPv6 /64 costs no more than a
full /29.  What it asks of the leases (held by this attachment? how many
taken? this one free?) goes through the store's `LeaseIndex`, which
skein-agent keeps current: no question costs more with more pods on the node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from contextlib import suppress
from typing import NamedTuple

from foundation.addresses import IPAddress
from foundation.cni.spec import Attachment
from ipam.ranges import RangeSet
from ipam.store import LeaseIndex, Store


class AllocationError(Exception):
    """An allocation that cannot be made; `range_id` is the range set concerned.

    Every message ends with the ranges ("... in range 10.1.0.2-10.1.0.6") so
    that a caller can append which network or pool they belong to.
    """

    def __init__(self, msg: str, range_id: int) -> None:
        super().__init__(msg)
        self.msg = msg
        self.range_id = range_id


class RangeExhausted(AllocationError):
    """Every usable address of the range set is leased."""


class DuplicateAllocation(AllocationError):
    """The attachment already holds an address of the range set (host-local refuses)."""


class RequestedUnavailable(AllocationError):
    """A specifically requested address is leased to someone (else)."""


class RequestedInvalid(AllocationError):
    """A requested address that this range set may never hand out."""


class Allocation(NamedTuple):
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface  # the address with its prefix
    gateway: IPAddress
    range_id: int


class Allocator:
    """Hands out the addresses of one range set (index `range_id` in the config)."""

    def __init__(self, range_set: RangeSet, store: Store, range_id: int) -> None:
        self.range_set = range_set
        self.store = store
        self.range_id = range_id

    def free_count(self) -> int:
        return self.range_set.usable_count() - self.store.index().taken(self.range_set)

    def get(self, att: Attachment, requested: IPAddress | None = None) -> Allocation:
        """Reserve an address for `att`: `requested`, or the next free one in round robin."""
        index = self.store.index()
        if requested is not None:
            return self._get_requested(att, requested, index)
        held = [a for a in index.held(att) if self.range_set.contains(a)]
        if held:
            raise DuplicateAllocation(
                f"{att} already holds {', '.join(map(str, held))} in "
                f"{self._describe()}", self.range_id)
        if self.range_set.usable_count() - index.taken(self.range_set) <= 0:
            raise RangeExhausted(f"no free address in {self._describe()}", self.range_id)
        for rng, address in self.range_set.candidates(self.store.last_reserved(self.range_id)):
            if address in index:
                continue
            if self.store.reserve(att, address, self.range_id):
                return Allocation(ipaddress.ip_interface(f"{address}/{rng.subnet.prefixlen}"),
                                  rng.gateway, self.range_id)
        # Only reachable if a lease appeared behind our back, i.e. a writer ignored the lock.
        raise RangeExhausted(f"no free address in {self._describe()}", self.range_id)

    def _get_requested(self, att: Attachment, address: IPAddress,
                       index: LeaseIndex) -> Allocation:
        rng = self.range_set.range_for(address)
        if rng is None or not rng.usable(address):
            raise RequestedInvalid(f"requested address {address} cannot be handed out from "
                                   f"{self._describe()}", self.range_id)
        if not self.store.reserve(att, address, self.range_id):
            holder = index.get(address)
            whom = f" to {holder}" if holder is not None else ""
            raise RequestedUnavailable(f"requested address {address} is already leased{whom} "
                                       f"in {self._describe()}", self.range_id)
        return Allocation(ipaddress.ip_interface(f"{address}/{rng.subnet.prefixlen}"),
                          rng.gateway, self.range_id)

    def _describe(self) -> str:
        plural = "s" if len(self.range_set.ranges) > 1 else ""
        return f"range{plural} {self.range_set}"


def allocate(range_sets: Sequence[RangeSet], store: Store, att: Attachment,
             requested: Sequence[IPAddress | None] = ()) -> list[Allocation]:
    """One address from each range set for `att`, all or nothing.

    `requested[i]`, when given and not None, is the address wanted from range
    set i.  If any range set fails, the addresses this call reserved are
    released before the error propagates (and only those: the reference
    releases everything the attachment holds, including older leases).
    """
    done: list[Allocation] = []
    try:
        for range_id, range_set in enumerate(range_sets):
            want = requested[range_id] if range_id < len(requested) else None
            done.append(Allocator(range_set, store, range_id).get(att, want))
    except BaseException:
        for allocation in done:
            with suppress(OSError):
                store.release(allocation.address.ip)
        raise
    return done
