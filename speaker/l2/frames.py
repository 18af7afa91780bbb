"""ARP and NDP frames, parsed and built with `struct` on raw Ethernet bytes.

Plain struct rather than scapy because this is the responder's hot path: a
flood of requests is parsed here one frame at a time, and scapy's dissection
costs an order of magnitude more per frame than slicing bytes.  It also keeps
the daemon's start-up free of scapy's import.

Parsers take any bytes and return None for anything that is not well formed
(truncated, wrong lengths, wrong hop limit, bad checksum, malformed options):
a hostile or broken frame is never an exception.  Besides the requests we
answer, ARP replies and Neighbor Advertisements are parsed too: a host that
claims one of our addresses says so in them (speaker.l2.responder).

What Linux does with what we send (the reason for the shapes below): an
existing neighbour entry is replaced by a gratuitous ARP *request* (sender IP =
target IP) or by a reply whose target hardware address equals its sender's; a
reply to ff:ff:ff:ff:ff:ff is ignored within the neighbour locktime.  An
unsolicited Neighbor Advertisement with the Override flag replaces an existing
IPv6 entry.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ALL_NODES_V6 = ipaddress.IPv6Address("ff02::1").packed
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
# ff02::1:ffXX:XXXX, the solicited-node group, is this prefix + the low 24 bits.
SOLICITED_NODE_PREFIX = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]

ICMPV6 = 58
ND_SOLICIT = 135
ND_ADVERT = 136
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True, slots=True)
class ArpRequest:
    src_mac: bytes      # Ethernet source: where the reply goes
    sender_mac: bytes
    sender_ip: bytes    # 0.0.0.0 for an RFC 5227 probe
    target_ip: bytes


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """Any Ethernet/IPv4 ARP request or reply."""

    op: int             # 1 request, 2 reply
    src_mac: bytes      # Ethernet source
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    src_mac: bytes
    src_ip: bytes
    target: bytes
    flags: int          # NA_ROUTER | NA_SOLICITED | NA_OVERRIDE
    target_lladdr: bytes | None


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    src_mac: bytes
    src_ip: bytes       # :: for duplicate address detection
    target: bytes
    source_lladdr: bytes | None


def parse_arp(frame: bytes) -> ArpPacket | None:
    """An Ethernet/IPv4 ARP request or reply, or None."""
    if len(frame) < _ETH.size + _ARP.size:
        return None
    _dst, src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (1, 2):
        return None
    if sha[0] & 1:  # a multicast sender hardware address is never genuine
        return None
    return ArpPacket(op, src, sha, spa, tha, tpa)


def parse_arp_request(frame: bytes) -> ArpRequest | None:
    """An Ethernet/IPv4 ARP request, or None."""
    arp = parse_arp(frame)
    if arp is None or arp.op != 1:
        return None
    return ArpRequest(arp.src_mac, arp.sender_mac, arp.sender_ip, arp.target_ip)


def _arp(op: int, eth_dst: bytes, mac: bytes, sender_ip: bytes, target_mac: bytes,
         target_ip: bytes) -> bytes:
    return (_ETH.pack(eth_dst, mac, ETH_P_ARP)
            + _ARP.pack(1, 0x0800, 6, 4, op, mac, sender_ip, target_mac, target_ip))


def arp_reply(mac: bytes, ip: bytes, request: ArpRequest) -> bytes:
    """`ip` is at `mac`, unicast to the requester."""
    return _arp(2, request.src_mac, mac, ip, request.sender_mac, request.sender_ip)


def gratuitous_arps(mac: bytes, ip: bytes) -> tuple[bytes, bytes]:
    """The two gratuitous forms Linux accepts to replace an existing entry:
    a broadcast request with sender IP = target IP, and a broadcast reply whose
    target hardware address is the sender's own (RFC 5227 announcement style)."""
    return (_arp(1, BROADCAST, mac, ip, ZERO_MAC, ip),
            _arp(2, BROADCAST, mac, ip, mac, ip))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    pseudo = src + dst + struct.pack("!IxxxB", len(icmp), ICMPV6)
    return _checksum(pseudo + icmp)


def _options(data: bytes) -> dict[int, bytes] | None:
    """NDP options (type -> first value); None if malformed (RFC 4861 4.6)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            return None
        kind, units = data[i], data[i + 1]
        if units == 0 or i + units * 8 > len(data):
            return None
        out.setdefault(kind, data[i + 2:i + units * 8])
        i += units * 8
    return out


def _ndp(frame: bytes, kind: int) -> tuple[bytes, bytes, bytes, bytes, dict[int, bytes]] | None:
    """(source MAC, source IP, destination IP, ICMPv6 message, options) of a
    Neighbor Discovery message of `kind` that passes RFC 4861's common checks
    (7.1.1 / 7.1.2: hop limit 255, code 0, checksum, length, a unicast
    target, well-formed options), or None."""
    if len(frame) < _ETH.size + _IPV6.size + 24:
        return None
    _dst, src_mac, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        return None
    vtf, payload_len, next_header, hop_limit, src, dst = _IPV6.unpack_from(frame, _ETH.size)
    start = _ETH.size + _IPV6.size
    if vtf >> 28 != 6 or next_header != ICMPV6 or hop_limit != 255:
        return None
    if payload_len < 24 or start + payload_len > len(frame):
        return None
    icmp = frame[start:start + payload_len]
    if icmp[0] != kind or icmp[1] != 0:
        return None
    if _icmpv6_checksum(src, dst, icmp) != 0:
        return None
    if icmp[8] == 0xFF:  # a multicast target is invalid
        return None
    options = _options(icmp[24:])
    if options is None:
        return None
    return src_mac, src, dst, icmp, options


def parse_neighbor_advertisement(frame: bytes) -> NeighborAdvertisement | None:
    """A Neighbor Advertisement that passes RFC 4861 7.1.2 validation, or None."""
    parsed = _ndp(frame, ND_ADVERT)
    if parsed is None:
        return None
    src_mac, src, dst, icmp, options = parsed
    flags = icmp[4]
    if dst[0] == 0xFF and flags & NA_SOLICITED:  # solicited answers are unicast
        return None
    lladdr = options.get(OPT_TARGET_LLADDR)
    if lladdr is not None and len(lladdr) != 6:
        return None
    return NeighborAdvertisement(src_mac, src, icmp[8:24], flags, lladdr)


def parse_neighbor_solicitation(frame: bytes) -> NeighborSolicitation | None:
    """A Neighbor Solicitation that passes RFC 4861 7.1.1 validation, or None."""
    parsed = _ndp(frame, ND_SOLICIT)
    if parsed is None:
        return None
    src_mac, src, dst, icmp, options = parsed
    target = icmp[8:24]
    lladdr = options.get(OPT_SOURCE_LLADDR)
    unspecified = src == bytes(16)
    if unspecified and (lladdr is not None or dst[:13] != SOLICITED_NODE_PREFIX):
        return None  # DAD probes go to the solicited-node group and carry no lladdr
    if lladdr is not None and len(lladdr) != 6:
        return None
    return NeighborSolicitation(src_mac, src, target, lladdr)


def _ndp_frame(eth_dst: bytes, mac: bytes, src: bytes, dst: bytes, icmp: bytes) -> bytes:
    checksum = _icmpv6_checksum(src, dst, icmp)
    icmp = icmp[:2] + struct.pack("!H", checksum) + icmp[4:]
    return (_ETH.pack(eth_dst, mac, ETH_P_IPV6)
            + _IPV6.pack(6 << 28, len(icmp), ICMPV6, 255, src, dst) + icmp)


def _advert(mac: bytes, target: bytes, flags: int, eth_dst: bytes, dst: bytes) -> bytes:
    icmp = (struct.pack("!BBHB3x", ND_ADVERT, 0, 0, flags) + target
            + bytes((OPT_TARGET_LLADDR, 1)) + mac)
    return _ndp_frame(eth_dst, mac, target, dst, icmp)


def neighbor_advertisement(mac: bytes, solicit: NeighborSolicitation) -> bytes:
    """The answer to `solicit` for its target: solicited + override, unicast to
    the asker; to all-nodes (not solicited) when the asker is doing DAD."""
    if solicit.src_ip == bytes(16):
        return _advert(mac, solicit.target, NA_OVERRIDE, ALL_NODES_MAC, ALL_NODES_V6)
    return _advert(mac, solicit.target, NA_SOLICITED | NA_OVERRIDE,
                   solicit.source_lladdr or solicit.src_mac, solicit.src_ip)


def unsolicited_advertisement(mac: bytes, target: bytes) -> bytes:
    """RFC 4861 7.2.6: tell all nodes that `target` moved to `mac` (Override set)."""
    return _advert(mac, target, NA_OVERRIDE, ALL_NODES_MAC, ALL_NODES_V6)


def neighbor_solicitation(mac: bytes, src: bytes, target: bytes) -> bytes:
    """A solicitation for `target` (tests and tools use it; the daemon only answers)."""
    group = SOLICITED_NODE_PREFIX + target[13:]
    icmp = (struct.pack("!BBH4x", ND_SOLICIT, 0, 0) + target
            + bytes((OPT_SOURCE_LLADDR, 1)) + mac)
    return _ndp_frame(b"\x33\x33" + group[12:], mac, src, group, icmp)


def arp_request(mac: bytes, sender_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast who-has (tests and tools use it; the daemon only answers)."""
    return _arp(1, BROADCAST, mac, sender_ip, ZERO_MAC, target_ip)
