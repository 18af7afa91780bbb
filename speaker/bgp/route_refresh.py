"""The ROUTE-REFRESH message (RFC 2918): the peer asks us to send our Adj-RIB-Out for
one address family again, e.g. after it changed its import policy."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from speaker.bgp.errors import BAD_MESSAGE_LENGTH, header_error
from speaker.bgp.header import HEADER_LEN, ROUTE_REFRESH, encode_header
from speaker.bgp.nlri import Family


@dataclass(frozen=True)
class RouteRefresh:
    afi: int
    safi: int
    subtype: int = 0  # RFC 7313 enhanced route refresh uses 1 and 2; plain refresh is 0

    @property
    def family(self) -> Family:
        return (self.afi, self.safi)


def encode(msg: RouteRefresh) -> bytes:
    return encode_header(ROUTE_REFRESH, struct.pack("!HBB", msg.afi, msg.subtype, msg.safi))


def decode_body(body: bytes) -> RouteRefresh:
    if len(body) != 4:
        raise header_error(BAD_MESSAGE_LENGTH, f"ROUTE-REFRESH body of {len(body)} bytes",
                           (HEADER_LEN + len(body)).to_bytes(2, "big"))
    afi, subtype, safi = struct.unpack("!HBB", body)
    return RouteRefresh(afi, safi, subtype)
