"""BGP capabilities carried in OPEN (RFC 5492): what each side can do.

The speaker advertises multiprotocol IPv4/IPv6 unicast (RFC 4760), 4-octet AS
numbers (RFC 6793), route refresh (RFC 2918) and graceful restart (RFC 4724).  A
capability this module does not know is kept as `UnknownCapability` so the
session can ignore it, which RFC 5492 requires, instead of failing the OPEN.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from speaker.bgp.errors import open_error

MULTIPROTOCOL = 1
ROUTE_REFRESH = 2
GRACEFUL_RESTART = 64
FOUR_OCTET_AS = 65

# Graceful restart: the R bit ("I have restarted") in the first flags nibble, and the
# F bit ("forwarding state preserved") in each family's flags (RFC 4724 §3).
GR_RESTART_STATE = 0x8
GR_FORWARDING_PRESERVED = 0x80


@dataclass(frozen=True)
class Multiprotocol:
    afi: int
    safi: int

    code = MULTIPROTOCOL

    def value(self) -> bytes:
        return struct.pack("!HBB", self.afi, 0, self.safi)


@dataclass(frozen=True)
class RouteRefresh:
    code = ROUTE_REFRESH

    def value(self) -> bytes:
        return b""


@dataclass(frozen=True)
class GracefulRestart:
    """restart_flags is the 4-bit flags nibble; families are (afi, safi, flags)."""

    restart_time: int = 120
    restart_flags: int = 0
    families: tuple[tuple[int, int, int], ...] = ()

    code = GRACEFUL_RESTART

    def value(self) -> bytes:
        head = struct.pack("!H", (self.restart_flags << 12) | (self.restart_time & 0x0FFF))
        return head + b"".join(struct.pack("!HBB", afi, safi, flags)
                               for afi, safi, flags in self.families)


@dataclass(frozen=True)
class FourOctetAs:
    asn: int

    code = FOUR_OCTET_AS

    def value(self) -> bytes:
        return struct.pack("!I", self.asn)


@dataclass(frozen=True)
class UnknownCapability:
    code: int
    data: bytes

    def value(self) -> bytes:
        return self.data


Capability = Multiprotocol | RouteRefresh | GracefulRestart | FourOctetAs | UnknownCapability


def encode_capability(cap: Capability) -> bytes:
    value = cap.value()
    if len(value) > 255:
        raise ValueError(f"capability {cap.code} value too long")
    return bytes([cap.code, len(value)]) + value


def _decode_one(code: int, value: bytes) -> Capability:
    if code == MULTIPROTOCOL:
        if len(value) != 4:
            raise open_error(0, f"multiprotocol capability of length {len(value)}")
        afi, _, safi = struct.unpack("!HBB", value)
        return Multiprotocol(afi, safi)
    if code == ROUTE_REFRESH:
        if value:
            raise open_error(0, f"route refresh capability of length {len(value)}")
        return RouteRefresh()
    if code == FOUR_OCTET_AS:
        if len(value) != 4:
            raise open_error(0, f"4-octet AS capability of length {len(value)}")
        return FourOctetAs(struct.unpack("!I", value)[0])
    if code == GRACEFUL_RESTART:
        if len(value) < 2 or (len(value) - 2) % 4:
            raise open_error(0, f"graceful restart capability of length {len(value)}")
        (head,) = struct.unpack_from("!H", value)
        fams = tuple(struct.unpack_from("!HBB", value, off) for off in range(2, len(value), 4))
        return GracefulRestart(head & 0x0FFF, head >> 12, fams)
    return UnknownCapability(code, value)


def split_tlvs(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """A run of (1-byte type, 1-byte length, value), the layout shared by OPEN optional
    parameters and capabilities; raises OPEN Message Error if it does not add up."""
    out = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise open_error(0, f"{what} header truncated")
        code, length = data[i], data[i + 1]
        if i + 2 + length > len(data):
            raise open_error(0, f"{what} {code} runs past its field")
        out.append((code, data[i + 2:i + 2 + length]))
        i += 2 + length
    return out


def decode_capabilities(data: bytes) -> list[Capability]:
    """The value of one Capabilities optional parameter."""
    return [_decode_one(code, value) for code, value in split_tlvs(data, "capability")]
