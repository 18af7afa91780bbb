"""host-local's ranges, over foundation.addresses.

`SubnetRange` is host-local's range (a block inside a subnet, with a gateway
and the addresses that must never be handed out); `RangeSet` is host-local's
list of ranges that together serve one address per attachment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from foundation.addresses import (
    AddressRange,
    IPAddress,
    IPNetwork,
    RangeError,
    address_at,
    walk,
)


def _network_plus_one(subnet: IPNetwork) -> IPAddress:
    return address_at(subnet.version, int(subnet.network_address) + 1)


@dataclass(frozen=True)
class SubnetRange:
    """host-local's range: the addresses `span` of `subnet`, served with `gateway`.

    Build it with `SubnetRange.build`, which applies host-local's defaults.
    """

    subnet: IPNetwork
    span: AddressRange
    gateway: IPAddress

    @classmethod
    def build(cls, subnet: IPNetwork, range_start: IPAddress | None = None,
              range_end: IPAddress | None = None, gateway: IPAddress | None = None
              ) -> SubnetRange:
        """Apply host-local's defaults and refuse what it cannot serve.

        Defaults: gateway and rangeStart are network+1 (the gateway is then
        skipped when walking), rangeEnd is the last address, or for IPv4 the one
        before the broadcast address.
        """
        if subnet.prefixlen > subnet.max_prefixlen - 2:
            raise RangeError(f"network {subnet} is too small to allocate from", "subnet",
                             f"use a prefix of at most /{subnet.max_prefixlen - 2}")
        for name, value in (("rangeStart", range_start), ("rangeEnd", range_end),
                            ("gateway", gateway)):
            if value is not None and value.version != subnet.version:
                raise RangeError(f"{value} is not an IPv{subnet.version} address like "
                                 f"subnet {subnet}", name,
                                 f"use an IPv{subnet.version} address or a matching subnet")
        for name, value in (("rangeStart", range_start), ("rangeEnd", range_end)):
            if value is not None and value not in subnet:
                raise RangeError(f"{value} is not in subnet {subnet}", name,
                                 f"pick an address inside {subnet}, or leave {name} out "
                                 "to use the default")
        start = range_start if range_start is not None else _network_plus_one(subnet)
        if range_end is not None:
            end = range_end
        elif subnet.version == 4:
            end = address_at(4, int(subnet.broadcast_address) - 1)
        else:
            end = subnet.broadcast_address
        if int(start) > int(end):
            raise RangeError(f"rangeStart {start} comes after rangeEnd {end}", "rangeEnd",
                             "swap them or widen the range")
        rng = cls(subnet, AddressRange(start, end),
                  gateway if gateway is not None else _network_plus_one(subnet))
        if rng.usable_count() == 0:
            raise RangeError(f"range {rng.span} holds no address that can be handed out "
                             "(the network, gateway and broadcast addresses never are)",
                             "rangeEnd", "widen the range")
        return rng

    @property
    def version(self) -> int:
        return self.subnet.version

    @cached_property
    def reserved(self) -> frozenset[IPAddress]:
        """Addresses never handed out, even when an explicit range covers them.

        Cached because the walk asks once per candidate address.
        """
        out: set[IPAddress] = {self.subnet.network_address, self.gateway}
        if self.version == 4:
            out.add(self.subnet.broadcast_address)
        return frozenset(out)

    @cached_property
    def _reserved_values(self) -> frozenset[int]:
        return frozenset(int(a) for a in self.reserved)

    def is_reserved(self, address: IPAddress) -> bool:
        # By integer value: an ipaddress object hashes through hex().
        return int(address) in self._reserved_values

    def usable(self, address: IPAddress) -> bool:
        return address in self.span and not self.is_reserved(address)

    def usable_count(self) -> int:
        return self.span.size - sum(1 for a in self.reserved if a in self.span)

    def __str__(self) -> str:
        # What can really be handed out: the default rangeStart is the gateway,
        # and "10.1.0.1-10.1.0.6" would promise an address that never is.
        first, last = int(self.span.first), int(self.span.last)
        while first < last and address_at(self.version, first) in self.reserved:
            first += 1
        while last > first and address_at(self.version, last) in self.reserved:
            last -= 1
        return f"{address_at(self.version, first)}-{address_at(self.version, last)}"


@dataclass(frozen=True)
class RangeSet:
    """Ranges of one family that together serve one address per attachment."""

    ranges: tuple[SubnetRange, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise RangeError("a range set needs at least one range", fix="add a range")
        for i, rng in enumerate(self.ranges):
            if rng.version != self.ranges[0].version:
                raise RangeError(f"range {i} ({rng}) is IPv{rng.version} but range 0 "
                                 f"({self.ranges[0]}) is IPv{self.ranges[0].version}",
                                 fix="put each address family in a range set of its own")
            for j in range(i):
                if self.ranges[j].span.overlaps(rng.span):
                    raise RangeError(f"range {j} ({self.ranges[j]}) overlaps range {i} ({rng})",
                                     fix="make the ranges disjoint")

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def range_for(self, address: IPAddress) -> SubnetRange | None:
        """The range whose span holds `address` (host-local's RangeFor)."""
        for rng in self.ranges:
            if address in rng.span:
                return rng
        return None

    def contains(self, address: IPAddress) -> bool:
        return self.range_for(address) is not None

    def usable_count(self) -> int:
        return sum(rng.usable_count() for rng in self.ranges)

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.span.overlaps(b.span) for a in self.ranges for b in other.ranges)

    def candidates(self, after: IPAddress | None = None
                   ) -> Iterator[tuple[SubnetRange, IPAddress]]:
        """Usable addresses in round-robin order after `after` (see `walk`)."""
        for index, address in walk([rng.span for rng in self.ranges], after):
            rng = self.ranges[index]
            if address not in rng.reserved:
                yield rng, address

    def __str__(self) -> str:
        return ", ".join(str(rng) for rng in self.ranges)
