"""The OPEN message (RFC 4271 §4.2) with capabilities (RFC 5492) and the 4-octet AS
rules of RFC 6793: the 2-octet "My AS" field carries AS_TRANS (23456) when the real
AS does not fit, and the real AS travels in the 4-octet AS capability.

`validate_open` holds the checks that depend on configuration (expected peer AS,
our own identifier, acceptable hold times); it is separate from `decode` so the
codec stays a pure bytes <-> object mapping and the FSM decides what is acceptable.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from speaker.bgp.capabilities import (
    Capability,
    FourOctetAs,
    decode_capabilities,
    encode_capability,
    split_tlvs,
)
from speaker.bgp.errors import (
    BAD_BGP_IDENTIFIER,
    BAD_PEER_AS,
    UNACCEPTABLE_HOLD_TIME,
    UNSUPPORTED_OPTIONAL_PARAMETER,
    UNSUPPORTED_VERSION_NUMBER,
    open_error,
)
from speaker.bgp.header import OPEN, encode_header

AS_TRANS = 23456
BGP_VERSION = 4
CAPABILITIES_PARAMETER = 2

_FIXED = struct.Struct("!BHH4sB")


@dataclass(frozen=True)
class Open:
    """asn is the sender's real AS; my_as_field overrides the 2-octet field only when a
    decoded message carried something other than what `asn` implies (kept for
    faithful round trips)."""

    asn: int
    hold_time: int
    router_id: str
    capabilities: tuple[Capability, ...] = ()
    version: int = BGP_VERSION
    my_as_field: int | None = None

    @property
    def four_octet_as(self) -> bool:
        return any(isinstance(c, FourOctetAs) for c in self.capabilities)


def encode(msg: Open) -> bytes:
    if msg.my_as_field is not None:
        as_field = msg.my_as_field
    else:
        as_field = msg.asn if msg.asn <= 0xFFFF else AS_TRANS
        if msg.asn > 0xFFFF and not msg.four_octet_as:
            raise ValueError(f"AS {msg.asn} needs the 4-octet AS capability")
    params = b""
    chunk = b""
    for cap in msg.capabilities:
        enc = encode_capability(cap)
        if len(chunk) + len(enc) > 255:
            params += bytes([CAPABILITIES_PARAMETER, len(chunk)]) + chunk
            chunk = b""
        chunk += enc
    if chunk:
        params += bytes([CAPABILITIES_PARAMETER, len(chunk)]) + chunk
    if len(params) > 255:
        raise ValueError("optional parameters longer than 255 bytes")
    body = _FIXED.pack(msg.version, as_field, msg.hold_time,
                       socket.inet_aton(msg.router_id), len(params)) + params
    return encode_header(OPEN, body)


def decode_body(body: bytes) -> Open:
    if len(body) < _FIXED.size:
        raise open_error(0, f"OPEN body of {len(body)} bytes")
    version, as_field, hold, ident, opt_len = _FIXED.unpack_from(body)
    if version != BGP_VERSION:
        raise open_error(UNSUPPORTED_VERSION_NUMBER, f"version {version}",
                         struct.pack("!H", BGP_VERSION))
    params = body[_FIXED.size:]
    if len(params) != opt_len:
        raise open_error(0, f"optional parameters length {opt_len} but {len(params)} bytes")
    caps: list[Capability] = []
    for ptype, value in split_tlvs(params, "optional parameter"):
        if ptype != CAPABILITIES_PARAMETER:
            raise open_error(UNSUPPORTED_OPTIONAL_PARAMETER, f"optional parameter type {ptype}")
        caps.extend(decode_capabilities(value))
    four = [c for c in caps if isinstance(c, FourOctetAs)]
    asn = four[0].asn if four else as_field
    implied = asn if asn <= 0xFFFF else AS_TRANS
    return Open(asn, hold, socket.inet_ntoa(ident), tuple(caps), version,
                None if implied == as_field else as_field)


def validate_open(msg: Open, *, peer_as: int | None, local_router_id: str,
                  ibgp: bool | None = None, min_hold_time: int = 3,
                  dynamic_asn: str | None = None, local_as: int | None = None) -> None:
    """The configuration-dependent OPEN checks of RFC 4271 §6.2; raises BgpError.

    peer_as None accepts any AS (a dynamic neighbour), unless `dynamic_asn` (MetalLB's
    dynamicASN) restricts it: "internal" wants our own AS (`local_as`), "external"
    any other.  Hold times 1 and 2 are always unacceptable; below `min_hold_time`
    (other than 0) is local policy.
    """
    if peer_as is not None and msg.asn != peer_as:
        raise open_error(BAD_PEER_AS, f"peer says AS {msg.asn}, configured {peer_as}")
    if dynamic_asn == "internal" and msg.asn != local_as:
        raise open_error(BAD_PEER_AS, f"peer says AS {msg.asn}, dynamicASN internal wants "
                         f"our AS {local_as}")
    if dynamic_asn == "external" and msg.asn == local_as:
        raise open_error(BAD_PEER_AS, f"peer says AS {msg.asn}, our own, but dynamicASN "
                         "is external")
    if msg.hold_time != 0 and msg.hold_time < max(3, min_hold_time):
        raise open_error(UNACCEPTABLE_HOLD_TIME, f"hold time {msg.hold_time}")
    if msg.router_id == "0.0.0.0":
        raise open_error(BAD_BGP_IDENTIFIER, "BGP identifier 0.0.0.0")
    if ibgp and msg.router_id == local_router_id:
        raise open_error(BAD_BGP_IDENTIFIER, f"iBGP peer uses our identifier {msg.router_id}")
