"""Prefix (NLRI) encoding, RFC 4271 §4.3 and RFC 4760 §5: a length byte, then only as
many address bytes as the length needs.

The speaker keeps its routes as these wire encodings (`bytes`, e.g. 5 bytes for an
IPv4 /32) rather than as `ipaddress` objects: the encoding is the dictionary key,
it is what goes on the wire unchanged, and it costs a fraction of the memory at
100k routes.  `encode_prefix_text` parses "a.b.c.d/n" with `inet_pton` because
`ipaddress.ip_network` is an order of magnitude slower in bulk.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from speaker.bgp.errors import INVALID_NETWORK_FIELD, update_error

AFI_IPV4 = 1
AFI_IPV6 = 2
SAFI_UNICAST = 1

Family = tuple[int, int]
IPV4_UNICAST: Family = (AFI_IPV4, SAFI_UNICAST)
IPV6_UNICAST: Family = (AFI_IPV6, SAFI_UNICAST)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_ADDR_LEN = {AFI_IPV4: 4, AFI_IPV6: 16}
_AF = {AFI_IPV4: socket.AF_INET, AFI_IPV6: socket.AF_INET6}


def family_name(family: Family) -> str:
    afi, safi = family
    name = {AFI_IPV4: "ipv4", AFI_IPV6: "ipv6"}.get(afi, f"afi{afi}")
    return f"{name}-unicast" if safi == SAFI_UNICAST else f"{name}-safi{safi}"


def afi_of(network: Network) -> int:
    return AFI_IPV4 if network.version == 4 else AFI_IPV6


def encode_prefix(network: Network) -> bytes:
    """One prefix on the wire: length byte + the significant address bytes."""
    plen = network.prefixlen
    return bytes([plen]) + network.network_address.packed[:(plen + 7) // 8]


def encode_prefix_text(text: str) -> tuple[int, bytes]:
    """Parse 'addr/len' (or a bare address = host route) to (afi, wire bytes).

    Host bits must be zero, as with `ipaddress.ip_network(strict=True)`.
    """
    addr, sep, plen_text = text.partition("/")
    afi = AFI_IPV6 if ":" in addr else AFI_IPV4
    packed = socket.inet_pton(_AF[afi], addr)
    width = len(packed) * 8
    plen = int(plen_text) if sep else width
    if not 0 <= plen <= width:
        raise ValueError(f"{text!r}: prefix length out of range")
    nbytes = (plen + 7) // 8
    if plen != width and int.from_bytes(packed, "big") & ((1 << (width - plen)) - 1):
        raise ValueError(f"{text!r} has host bits set")
    return afi, bytes([plen]) + packed[:nbytes]


def host_keys(start: str, count: int) -> tuple[int, list[bytes]]:
    """(afi, wire encodings) of `count` consecutive host routes (/32 or /128) from `start`,
    built from integers: no text per prefix, for announcing large ranges."""
    afi = AFI_IPV6 if ":" in start else AFI_IPV4
    packed = socket.inet_pton(_AF[afi], start)
    width = len(packed)
    first = int.from_bytes(packed, "big")
    if count < 0 or first + count > 1 << (8 * width):
        raise ValueError(f"{count} addresses from {start} run past the address space")
    head = bytes([8 * width])
    return afi, [head + n.to_bytes(width, "big") for n in range(first, first + count)]


def decode_prefix(afi: int, wire: bytes) -> Network:
    """Wire bytes of exactly one prefix back to an `ipaddress` network.

    Trailing bits past the length are ignored (RFC 7606 §5.3 says they carry no meaning).
    """
    plen = wire[0]
    packed = wire[1:].ljust(_ADDR_LEN[afi], b"\x00")
    if afi == AFI_IPV4:
        return ipaddress.IPv4Network((packed, plen), strict=False)
    return ipaddress.IPv6Network((packed, plen), strict=False)


def prefix_text(afi: int, wire: bytes) -> str:
    return str(decode_prefix(afi, wire))


def split_prefixes(afi: int, data: bytes) -> list[bytes]:
    """Cut a run of encoded prefixes into one `bytes` per prefix (still encoded).

    Raises BgpError (UPDATE / Invalid Network Field) on a length beyond the address
    width or a prefix running past the end of the field.
    """
    width = _ADDR_LEN.get(afi)
    if width is None:
        raise update_error(INVALID_NETWORK_FIELD, f"unsupported AFI {afi}")
    out = []
    i = 0
    end = len(data)
    while i < end:
        plen = data[i]
        if plen > width * 8:
            raise update_error(INVALID_NETWORK_FIELD, f"prefix length {plen} > {width * 8}")
        nxt = i + 1 + (plen + 7) // 8
        if nxt > end:
            raise update_error(INVALID_NETWORK_FIELD, "prefix runs past the end of its field")
        out.append(data[i:nxt])
        i = nxt
    return out


def decode_prefixes(afi: int, data: bytes) -> list[Network]:
    return [decode_prefix(afi, wire) for wire in split_prefixes(afi, data)]


def encode_prefixes(networks: Iterable[Network]) -> bytes:
    return b"".join(encode_prefix(n) for n in networks)
