"""IP addresses, networks and inclusive address ranges: the one home of the
`IPAddress`/`IPNetwork` types and the arithmetic every allocator in Skein uses.

The IPAM plugin (host-local ranges) and the LoadBalancer pools (MetalLB
IPAddressPool entries such as "10.0.0.0/24" or "10.0.0.5-10.0.0.10") need the
same few operations -- parse, contain, overlap, count, and walk the addresses
in a stable order from a cursor -- for IPv4 and IPv6 alike.  Free of I/O and
standard library only: `skein-ipam` imports it once per pod.

Arithmetic is done on the integer value of the addresses, so an IPv6 /64 is
walked lazily and counted in O(1), never materialised.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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


def address_order(address: IPAddress) -> tuple[int, int]:
    """Sort key: IPv4 before IPv6, then numeric (addresses of both families
    do not compare with `<`)."""
    return (address.version, int(address))


def address_at(version: int, value: int) -> IPAddress:
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
            yield address_at(self.version, value)

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


def parse_listen_address(text: str) -> tuple[str, int]:
    """A daemon's listen address (`--metrics-address`): "HOST:PORT",
    "[V6]:PORT" or ":PORT" (all addresses); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)
