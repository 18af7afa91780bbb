"""Prefix (NLRI) encoding, RFC 4271 §4.3 and RFC 4760 §5: a length byte, then only as
many address bytes as the length needs.

Prefixes are `ipaddress` networks everywhere above the wire: the plan makes them,
the announcer and the peers key their tables by them, and they are turned into
bytes only here, when an UPDATE is encoded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from foundation.addresses import IPNetwork
from speaker.bgp.errors import INVALID_NETWORK_FIELD, update_error

AFI_IPV4 = 1
AFI_IPV6 = 2
SAFI_UNICAST = 1

Family = tuple[int, int]
IPV4_UNICAST: Family = (AFI_IPV4, SAFI_UNICAST)
IPV6_UNICAST: Family = (AFI_IPV6, SAFI_UNICAST)

Network = IPNetwork  # the one alias (foundation.addresses), under the codec's name

_ADDR_LEN = {AFI_IPV4: 4, AFI_IPV6: 16}


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


def prefix_size(network: Network) -> int:
    """len(encode_prefix(network)), without encoding it."""
    return 1 + (network.prefixlen + 7) // 8


def decode_prefix(afi: int, wire: bytes) -> Network:
    """Wire bytes of exactly one prefix back to an `ipaddress` network.

    Trailing bits past the length are ignored (RFC 7606 §5.3 says they carry no meaning).
    """
    plen = wire[0]
    packed = wire[1:].ljust(_ADDR_LEN[afi], b"\x00")
    if afi == AFI_IPV4:
        return ipaddress.IPv4Network((packed, plen), strict=False)
    return ipaddress.IPv6Network((packed, plen), strict=False)


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
