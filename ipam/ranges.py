"""Address ranges: the pure arithmetic under every allocator in Skein.

Why a module of its own: the IPAM plugin (host-local ranges: a subnet, an
optional rangeStart/rangeEnd and a gateway) and the LoadBalancer pool allocator
(MetalLB IPAddressPool entries such as "10.0.0.0/24" or "10.0.0.5-10.0.0.10")
need the same few operations -- parse, contain, overlap, count, and walk the
addresses in a stable order from a cursor -- for IPv4 and IPv6 alike.  Keeping
them free of I/O makes them testable by properties and cheap to import: this
module uses the standard library only, because `skein-ipam` runs once per pod.

Arithmetic is done on the integer value of the addresses, so an IPv6 /64 is
walked lazily and counted in O(1), never materialised.

Layers: `AddressRange` is a plain inclusive block of one family (what a pool
entry is); `SubnetRange` is host-local's range (a block inside a subnet, with a
gateway and the addresses that must never be handed out); `RangeSet` is
host-local's list of ranges that together serve one address per attachment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeError(ValueError):
    """A range that cannot be built.

    `field` names the offending key in host-local's vocabulary ("subnet",
    "rangeStart", ...) so that the config layer can prefix its own path, and
    `fix` says what to write instead.
    """

    def __init__(self, msg: str, field: str = "", fix: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.field = field
        self.fix = fix


def parse_address(text: object, field: str = "") -> IPAddress:
    if not isinstance(text, str):
        raise RangeError(f"expected an IP address as a string, got {text!r}", field,
                         'write it as a string, e.g. "10.1.0.1" or "fd00::1"')
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise RangeError(f"{text!r} is not an IP address", field,
                         'write an IPv4 or IPv6 address, e.g. "10.1.0.1" or "fd00::1"') from None


def parse_network(text: object, field: str = "") -> IPNetwork:
    """A CIDR whose host bits are zero (host-local refuses "10.1.0.5/24" too)."""
    if not isinstance(text, str) or "/" not in text:
        raise RangeError(f"{text!r} is not a CIDR", field,
                         'write a network in CIDR form, e.g. "10.1.0.0/24" or "fd00:1::/64"')
    try:
        loose = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise RangeError(f"{text!r} is not a CIDR", field,
                         'write a network in CIDR form, e.g. "10.1.0.0/24" or "fd00:1::/64"'
                         ) from None
    if ipaddress.ip_interface(text.strip()).ip != loose.network_address:
        raise RangeError(f"{text} has host bits set", field, f"use the network address: {loose}")
    return loose


def _at(version: int, value: int) -> IPAddress:
    # ip_address(int) guesses the family from the magnitude; a small IPv6 value
    # such as ::5 must stay IPv6, so the family is always explicit.
    if version == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


@dataclass(frozen=True)
class AddressRange:
    """An inclusive block [first, last] of addresses of one family."""

    first: IPAddress
    last: IPAddress
    # The bounds as integers and the family's class: `in` is asked once per
    # lease on every ADD, and ipaddress's comparisons are Python code.
    _low: int = field(init=False, repr=False, compare=False)
    _high: int = field(init=False, repr=False, compare=False)
    _family: type = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise RangeError(f"{self.first} and {self.last} are of different address families")
        if int(self.first) > int(self.last):
            raise RangeError(f"{self.first} comes after {self.last}",
                             fix="the first address of a range must not exceed the last")
        object.__setattr__(self, "_low", int(self.first))
        object.__setattr__(self, "_high", int(self.last))
        object.__setattr__(self, "_family", type(self.first))

    @classmethod
    def from_network(cls, network: IPNetwork) -> AddressRange:
        return cls(network.network_address, network.broadcast_address)

    @classmethod
    def parse(cls, text: str) -> AddressRange:
        """"A-B", a CIDR (every address of it) or a single address (MetalLB's forms)."""
        if "-" in text:
            first, _, last = text.partition("-")
            return cls(parse_address(first), parse_address(last))
        if "/" in text:
            return cls.from_network(parse_network(text))
        address = parse_address(text)
        return cls(address, address)

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, address: object) -> bool:
        # Only an address of this range's family (comparing across families
        # raises TypeError in ipaddress; anything else is simply not in it).
        if not isinstance(address, self._family):
            return False
        return self._low <= int(address) <= self._high  # type: ignore[call-overload]

    def overlaps(self, other: AddressRange) -> bool:
        return (self.version == other.version
                and int(self.first) <= int(other.last) and int(other.first) <= int(self.last))

    def addresses(self, start: int | None = None, stop: int | None = None
                  ) -> Iterator[IPAddress]:
        """The addresses with integer values in [start, stop] (default: all), lazily."""
        low = int(self.first) if start is None else start
        high = int(self.last) if stop is None else stop
        for value in range(low, high + 1):
            yield _at(self.version, value)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def walk(spans: Sequence[AddressRange], after: IPAddress | None = None
         ) -> Iterator[tuple[int, IPAddress]]:
    """Every address of `spans` exactly once, as (span index, address).

    host-local's round-robin order: start just after `after` if one of the spans
    holds it (moving on to the next span when `after` is the last address of
    its span), else at the first address of the first span; run to the end of
    each span, continue with the next span, wrap around the list, and stop
    before coming back to the start.  Round robin means a crash-looping pod does
    not get the address it had a moment ago until the whole set was used.
    """
    if not spans:
        return
    index, start = 0, int(spans[0].first)
    if after is not None:
        for i, span in enumerate(spans):
            if after in span:
                if after == span.last:
                    index = (i + 1) % len(spans)
                    start = int(spans[index].first)
                else:
                    index, start = i, int(after) + 1
                break
    for address in spans[index].addresses(start=start):
        yield index, address
    for step in range(1, len(spans)):
        other = (index + step) % len(spans)
        for address in spans[other].addresses():
            yield other, address
    for address in spans[index].addresses(stop=start - 1):
        yield index, address


def _network_plus_one(subnet: IPNetwork) -> IPAddress:
    return _at(subnet.version, int(subnet.network_address) + 1)


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
            end = _at(4, int(subnet.broadcast_address) - 1)
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
        while first < last and _at(self.version, first) in self.reserved:
            first += 1
        while last > first and _at(self.version, last) in self.reserved:
            last -= 1
        return f"{_at(self.version, first)}-{_at(self.version, last)}"


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
