"""Synchronous rtnetlink, standard library only: message codec and one socket.

Skein's one netlink layer for the datapath: the plugin's per-pod work (links,
addresses, routes, a bridge port flag) and the agent's VXLAN device with its
peers' neighbour, FDB and route entries (cni_plugin/vxlan.py).  Why not
pyroute2 (it stays where it serves: the speakers, status): the plugin is an
executable that must start fast and carry only the standard library, and
pyroute2 0.9 runs every request through an asyncio event loop and costs a
large import (bench/cni_add.py measures the plugin).  The message shapes
needed are few, so they are encoded and decoded here: pure functions over
bytes (tests/cni/test_rtnl.py holds their golden bytes, cross-checked against
pyroute2's codec), and a `RouteSocket` that sends a request and collects its
answer.

A socket stays in the network namespace it was opened in, like any socket;
the caller picks the namespace by opening it there (foundation/netlink/netns.py).
One socket serves one thread at a time.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from foundation.netlink.mac import mac_bytes

# <linux/netlink.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP_INTR = 0x10  # the dump's table changed while it ran
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an error: the request was not echoed past its header
NLM_F_ACK_TLVS = 0x200  # in an error: extended-ack attributes follow
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete: any scope
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4  # the gateway is on the link, whatever its addresses say

# <linux/if_link.h>
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_LINKINFO = 18
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_VXLAN_ID = 1
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_LEARNING = 7
IFLA_VXLAN_PORT = 15
RTEXT_FILTER_SKIP_STATS = 1 << 3  # replies without counters: smaller, cheaper to read
IFLA_INET6_ADDR_GEN_MODE = 8  # inside IFLA_AF_SPEC / AF_INET6
IN6_ADDR_GEN_MODE_NONE = 1  # no link-local address, hence no RS, DAD or MLD of its own

# <linux/neighbour.h>
NDA_DST = 1
NDA_LLADDR = 2
NDA_IFINDEX = 8  # in a dump request: only this device's entries
NDA_PROTOCOL = 12  # who installed the entry (Linux >= 5.2)
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02  # an FDB entry of the device itself (a VXLAN device's remotes)

# <linux/if_addr.h>
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4

# <linux/rtnetlink.h> route attributes
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15

AF_UNSPEC = 0
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
AF_BRIDGE = 7
IFF_UP = 0x1

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
#                                      scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
RTATTR = struct.Struct("=HH")  # len, type
U32 = struct.Struct("=I")
I32 = struct.Struct("=i")
RECV_SIZE = 1 << 17  # a dump's datagrams are at most 32 KiB
# A dump the kernel marks interrupted (NLM_F_DUMP_INTR) is asked again, up to
# this many times in all, as the reference plugins' netlinksafe does; then it
# is an error (EINTR), never an answer that may miss entries or repeat them.
DUMP_ATTEMPTS = 5


class NetlinkError(OSError):
    """The kernel refused a request: `code` is the errno, the message adds the
    kernel's own explanation (extended ack) when it gave one."""

    @property
    def code(self) -> int:
        return self.errno or 0


# ---- encoding ----


def align(size: int) -> int:
    return (size + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    size = RTATTR.size + len(payload)
    return RTATTR.pack(size, kind) + payload + b"\0" * (align(size) - size)


def attr_u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, U32.pack(value))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def nested(kind: int, *attrs: bytes, flag: bool = False) -> bytes:
    """A nest; `flag` sets NLA_F_NESTED, which some receivers require (bridge
    port attributes) and the older ones (link info) do not look at."""
    return attr(kind | (NLA_F_NESTED if flag else 0), b"".join(attrs))


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC) -> bytes:
    return IFINFOMSG.pack(family, 0, index, flags, change)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def link_get(name: str | None = None, index: int = 0) -> bytes:
    """RTM_GETLINK body for one link, by index or by name, without statistics."""
    body = ifinfomsg(index) + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    return body + attr_str(IFLA_IFNAME, name) if name else body


def link_dump() -> bytes:
    return ifinfomsg() + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def link_set(index: int, up: bool | None = None, promisc: bool | None = None,
             mtu: int | None = None, mac: str | None = None) -> bytes:
    """RTM_SETLINK body: only what is given changes (ifi_change masks the flags)."""
    flags = change = 0
    if up is not None:
        change |= IFF_UP
        flags |= IFF_UP if up else 0
    if promisc is not None:
        change |= 0x100
        flags |= 0x100 if promisc else 0
    body = ifinfomsg(index, flags, change)
    if mtu is not None:
        body += attr_u32(IFLA_MTU, mtu)
    if mac is not None:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    return body


def link_create(name: str, kind: str, info_data: bytes = b"", mtu: int | None = None,
                master: int | None = None, up: bool = False, mac: str | None = None) -> bytes:
    """RTM_NEWLINK body creating a link of `kind`, its type-specific attributes
    (`info_data`, already encoded) inside IFLA_LINKINFO."""
    body = ifinfomsg(flags=IFF_UP if up else 0, change=IFF_UP if up else 0)
    body += attr_str(IFLA_IFNAME, name)
    if mtu:
        body += attr_u32(IFLA_MTU, mtu)
    if master is not None:
        body += attr_u32(IFLA_MASTER, master)
    if mac:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    info = attr_str(IFLA_INFO_KIND, kind)
    if info_data:
        info += attr(IFLA_INFO_DATA, info_data)
    return body + nested(IFLA_LINKINFO, info)


def veth_peer(name: str, netns_fd: int, mtu: int | None = None, mac: str | None = None) -> bytes:
    """IFLA_INFO_DATA of a veth: the peer, created straight inside `netns_fd`."""
    peer = ifinfomsg() + attr_str(IFLA_IFNAME, name) + attr(IFLA_NET_NS_FD, I32.pack(netns_fd))
    if mtu:
        peer += attr_u32(IFLA_MTU, mtu)
    if mac:
        peer += attr(IFLA_ADDRESS, mac_bytes(mac))
    return attr(VETH_INFO_PEER, peer)


def vxlan_data(vni: int, port: int, local: str, link: int, learning: bool = False) -> bytes:
    """IFLA_INFO_DATA of a VXLAN device (the port is in network byte order)."""
    return (attr_u32(IFLA_VXLAN_ID, vni) + attr_u32(IFLA_VXLAN_LINK, link)
            + attr(IFLA_VXLAN_LOCAL, socket.inet_aton(local))
            + attr_u8(IFLA_VXLAN_LEARNING, int(learning))
            + attr(IFLA_VXLAN_PORT, struct.pack("!H", port)))


def addr_gen_mode_none(index: int) -> bytes:
    """RTM_SETLINK body: the link makes no IPv6 address of its own (no
    link-local, hence none of the router solicitations, DAD and MLD reports
    that come with one); it still forwards IPv6."""
    inet6 = nested(AF_INET6, attr_u8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE))
    return ifinfomsg(index) + nested(IFLA_AF_SPEC, inet6)


def brport_hairpin(index: int, on: bool) -> bytes:
    """RTM_SETLINK body (family AF_BRIDGE) for a bridge port's hairpin mode."""
    return (ifinfomsg(index, family=AF_BRIDGE)
            + nested(IFLA_PROTINFO, attr_u8(IFLA_BRPORT_MODE, int(on)), flag=True))


def family_of(address: str) -> int:
    return AF_INET6 if ":" in address else AF_INET


def address_body(index: int, address: str, prefixlen: int, flags: int = 0) -> bytes:
    """RTM_NEWADDR / RTM_DELADDR body.  IPv4 gets the broadcast address below
    /31, as `ip addr add ... brd +` and the reference plugins' netlink library do."""
    family = family_of(address)
    raw = socket.inet_pton(family, address)
    body = IFADDRMSG.pack(family, prefixlen, flags, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    if family == AF_INET and prefixlen < 31:
        host_mask = (1 << (32 - prefixlen)) - 1
        broadcast = int.from_bytes(raw, "big") | host_mask
        body += attr(IFA_BROADCAST, broadcast.to_bytes(4, "big"))
    return body


def route_body(dst: str, dst_len: int, gateway: str | None, oif: int | None,
               protocol: int = RTPROT_BOOT, flags: int = 0, delete: bool = False) -> bytes:
    """RTM_NEWROUTE body for a main-table unicast route; link scope without a
    gateway.  `flags`: the route's (RTNH_F_ONLINK).  With `delete`, the
    RTM_DELROUTE body that matches it whatever its scope and type, as `ip
    route del` sends (`protocol` 0: whoever installed it)."""
    family = family_of(dst)
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    kind = RTN_UNICAST
    if delete:
        scope, kind = RT_SCOPE_NOWHERE, 0
    body = RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, protocol, scope, kind, flags)
    if dst_len:
        body += attr(RTA_DST, socket.inet_pton(family, dst))
    if gateway:
        body += attr(RTA_GATEWAY, socket.inet_pton(family_of(gateway), gateway))
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    return body + attr_u32(RTA_TABLE, RT_TABLE_MAIN)


def neigh_body(family: int, index: int, lladdr: str | None = None, dst: str | None = None,
               state: int = 0, flags: int = 0, protocol: int | None = None) -> bytes:
    """RTM_NEWNEIGH / RTM_DELNEIGH body: a neighbour entry (family AF_INET or
    AF_INET6, `dst` the neighbour's address, `lladdr` its MAC) or a bridge or
    VXLAN FDB entry (AF_BRIDGE, `lladdr` the MAC, `dst` the remote's address,
    `flags` NTF_SELF for the device's own table)."""
    body = NDMSG.pack(family, index, state, flags, 0)
    if dst is not None:
        body += attr(NDA_DST, socket.inet_pton(family_of(dst), dst))
    if lladdr is not None:
        body += attr(NDA_LLADDR, mac_bytes(lladdr))
    if protocol is not None:
        body += attr_u8(NDA_PROTOCOL, protocol)
    return body


def neigh_dump(family: int, index: int) -> bytes:
    """RTM_GETNEIGH dump body for the neighbour entries (AF_INET, AF_INET6) of
    link `index`, or its FDB entries (AF_BRIDGE).  The kernel reads the filter
    differently for the two: an NDA_IFINDEX attribute after an ndmsg for
    neighbours; for the FDB, a request of an ifinfomsg's size, whose index
    names the device (rtnetlink.c, valid_fdb_dump_legacy)."""
    if family == AF_BRIDGE:
        return ifinfomsg(index, family=AF_BRIDGE)
    return NDMSG.pack(family, 0, 0, 0, 0) + attr_u32(NDA_IFINDEX, index)


# ---- decoding ----


def parse_attrs(data: bytes, offset: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attribute type (flags masked off) -> payload, for one level."""
    end = len(data) if end is None else end
    out: dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        size, kind = RTATTR.unpack_from(data, offset)
        if size < RTATTR.size or offset + size > end:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + RTATTR.size:offset + size]
        offset += align(size)
    return out


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        size, kind, flags, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if size < NLMSGHDR.size or offset + size > len(data):
            break
        yield kind, flags, seq, data[offset + NLMSGHDR.size:offset + size]
        offset += align(size)


def error_of(flags: int, payload: bytes) -> int | tuple[int, str]:
    """An NLMSG_ERROR payload: 0 (an ack), or (errno, the kernel's message or "")."""
    code = -I32.unpack_from(payload)[0]
    if code == 0:
        return 0
    note = ""
    if flags & NLM_F_ACK_TLVS and len(payload) >= 4 + NLMSGHDR.size:
        echoed = NLMSGHDR.unpack_from(payload, 4)[0]
        start = 4 + (NLMSGHDR.size if flags & NLM_F_CAPPED else echoed)
        text = parse_attrs(payload, align(start)).get(NLMSGERR_ATTR_MSG, b"")
        note = text.rstrip(b"\0").decode(errors="replace")
    return code, note


def refusal_of(flags: int, payload: bytes) -> NetlinkError | None:
    """An NLMSG_ERROR payload as the error to raise, or None for an ack."""
    outcome = error_of(flags, payload)
    if outcome == 0:
        return None
    assert isinstance(outcome, tuple)
    code, note = outcome
    return NetlinkError(code, os.strerror(code) + (f" ({note})" if note else ""))


def string(payload: bytes | None) -> str | None:
    return None if payload is None else payload.split(b"\0", 1)[0].decode(errors="replace")


def u32(payload: bytes | None) -> int | None:
    return None if payload is None or len(payload) < 4 else U32.unpack_from(payload)[0]


def i32(payload: bytes | None) -> int | None:
    return None if payload is None or len(payload) < 4 else I32.unpack_from(payload)[0]


def ip_text(payload: bytes | None) -> str | None:
    """An IPv4 or IPv6 address; None for anything else (other families' addresses)."""
    if payload is None or len(payload) not in (4, 16):
        return None
    return socket.inet_ntop(AF_INET if len(payload) == 4 else AF_INET6, payload)


@dataclass(frozen=True)
class LinkMessage:
    index: int
    flags: int
    attrs: dict[int, bytes]

    @property
    def info(self) -> dict[int, bytes]:
        raw = self.attrs.get(IFLA_LINKINFO)
        return parse_attrs(raw) if raw is not None else {}

    @property
    def kind(self) -> str:
        return string(self.info.get(IFLA_INFO_KIND)) or ""

    @property
    def info_data(self) -> dict[int, bytes]:
        raw = self.info.get(IFLA_INFO_DATA)
        return parse_attrs(raw) if raw is not None else {}


def parse_link(payload: bytes) -> LinkMessage:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(payload)
    return LinkMessage(index, flags, parse_attrs(payload, IFINFOMSG.size))


@dataclass(frozen=True)
class AddressMessage:
    family: int
    prefixlen: int
    index: int
    address: str | None


def parse_address(payload: bytes) -> AddressMessage:
    family, prefixlen, _, _, index = IFADDRMSG.unpack_from(payload)
    attrs = parse_attrs(payload, IFADDRMSG.size)
    # IFA_LOCAL is this end; IFA_ADDRESS is the peer on a point-to-point link
    # (and the same as IFA_LOCAL elsewhere; IPv6 sends only IFA_ADDRESS).
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    return AddressMessage(family, prefixlen, index, ip_text(raw))


@dataclass(frozen=True)
class RouteMessage:
    family: int
    dst_len: int
    table: int
    dst: str | None
    gateway: str | None
    oif: int | None
    protocol: int = 0
    flags: int = 0


def parse_route(payload: bytes) -> RouteMessage:
    family, dst_len, _, _, table, protocol, _, _, flags = RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload, RTMSG.size)
    return RouteMessage(family, dst_len, u32(attrs.get(RTA_TABLE)) or table,
                        ip_text(attrs.get(RTA_DST)), ip_text(attrs.get(RTA_GATEWAY)),
                        u32(attrs.get(RTA_OIF)), protocol, flags)


@dataclass(frozen=True)
class NeighMessage:
    family: int
    index: int
    state: int
    flags: int
    dst: str | None
    lladdr: bytes | None
    protocol: int | None


def parse_neigh(payload: bytes) -> NeighMessage:
    family, index, state, flags, _ = NDMSG.unpack_from(payload)
    attrs = parse_attrs(payload, NDMSG.size)
    protocol = attrs.get(NDA_PROTOCOL)
    return NeighMessage(family, index, state, flags, ip_text(attrs.get(NDA_DST)),
                        attrs.get(NDA_LLADDR), protocol[0] if protocol else None)


# ---- the socket ----


class RouteSocket:
    """A blocking NETLINK_ROUTE socket in the namespace it was opened in."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             socket.NETLINK_ROUTE)
        try:
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass  # an older kernel: plain errors, whole requests echoed
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[bytes]:
        """Send one request and return the payloads of its answer (one for a
        get, many for a dump, none for a change); NetlinkError on refusal.
        A dump the kernel marks inconsistent (the table changed under it) is
        asked again, up to DUMP_ATTEMPTS times; then NetlinkError(EINTR)."""
        for _ in range(DUMP_ATTEMPTS):
            replies, interrupted = self._exchange(kind, body, flags)
            if not interrupted:
                return replies
        raise NetlinkError(errno.EINTR, f"{os.strerror(errno.EINTR)} (dump interrupted "
                                        f"{DUMP_ATTEMPTS} times: the table keeps changing)")

    def _exchange(self, kind: int, body: bytes, flags: int) -> tuple[list[bytes], bool]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        self._sock.send(message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, body))
        replies: list[bytes] = []
        interrupted = False
        while True:
            data = self._sock.recv(RECV_SIZE)
            for mtype, mflags, mseq, payload in split_messages(data):
                if mseq != seq:
                    continue  # an answer to an earlier request that gave up
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_ERROR:
                    refusal = refusal_of(mflags, payload)
                    if refusal is None:
                        return replies, interrupted
                    raise refusal
                if mtype == NLMSG_DONE:
                    # A dump that failed part-way says so here (a negative errno).
                    failed = -I32.unpack_from(payload)[0] if len(payload) >= 4 else 0
                    if failed > 0:
                        raise NetlinkError(failed, os.strerror(failed) + " (dump cut short)")
                    if dump:
                        return replies, interrupted
                    continue
                replies.append(payload)

    def batch(self, requests: Sequence[tuple[int, bytes, int]]
              ) -> list[list[bytes] | NetlinkError]:
        """Send the requests (kind, body, flags; no dumps) in one write and
        return each one's answer: its payloads, or the NetlinkError it was
        refused with.  The kernel handles them one after the other, in order,
        and a refusal does not stop the ones after it; the caller decides which
        refusals matter.  One round trip instead of one per request."""
        first = self._seq + 1
        messages = []
        for i, (kind, body, flags) in enumerate(requests):
            if flags & NLM_F_DUMP == NLM_F_DUMP:
                raise ValueError("a dump cannot be part of a batch")
            messages.append(message(kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                                    (first + i) & 0xFFFFFFFF, body))
        self._seq = (first + len(requests) - 1) & 0xFFFFFFFF
        index_of = {(first + i) & 0xFFFFFFFF: i for i in range(len(requests))}
        replies: list[list[bytes]] = [[] for _ in requests]
        outcomes: list[list[bytes] | NetlinkError | None] = [None] * len(requests)
        pending = len(requests)
        self._sock.send(b"".join(messages))
        while pending:
            for mtype, mflags, mseq, payload in split_messages(self._sock.recv(RECV_SIZE)):
                at = index_of.get(mseq)
                if at is None or outcomes[at] is not None or mtype == NLMSG_DONE:
                    continue  # an earlier request's, or already answered
                if mtype == NLMSG_ERROR:
                    refusal = refusal_of(mflags, payload)
                    outcomes[at] = replies[at] if refusal is None else refusal
                    pending -= 1
                else:
                    replies[at].append(payload)
        return [outcome for outcome in outcomes if outcome is not None]

    def links(self) -> list[LinkMessage]:
        return [parse_link(p) for p in self.request(RTM_GETLINK, link_dump(), NLM_F_DUMP)]

    def link(self, name: str | None = None, index: int = 0) -> LinkMessage | None:
        """One link by name or index; None when there is no such link."""
        try:
            replies = self.request(RTM_GETLINK, link_get(name, index))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        return parse_link(replies[0]) if replies else None

    def create(self, body: bytes, echo: bool = False) -> list[LinkMessage]:
        """Create a link; with `echo`, the kernel answers with the new link
        (Linux >= 6.2 honours NLM_F_ECHO here; older ones answer nothing)."""
        flags = NLM_F_CREATE | NLM_F_EXCL | (NLM_F_ECHO if echo else 0)
        return [parse_link(p) for p in self.request(RTM_NEWLINK, body, flags)]

    def set(self, body: bytes) -> None:
        self.request(RTM_SETLINK, body)

    def delete(self, index: int) -> None:
        self.request(RTM_DELLINK, ifinfomsg(index))

    def addresses(self, family: int = AF_UNSPEC) -> list[AddressMessage]:
        body = IFADDRMSG.pack(family, 0, 0, 0, 0)
        return [parse_address(p) for p in self.request(RTM_GETADDR, body, NLM_F_DUMP)]

    def add_address(self, body: bytes) -> None:
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def delete_address(self, body: bytes) -> None:
        self.request(RTM_DELADDR, body)

    def routes(self, family: int) -> list[RouteMessage]:
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [parse_route(p) for p in self.request(RTM_GETROUTE, body, NLM_F_DUMP)]

    def add_route(self, body: bytes) -> None:
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)

    def replace_route(self, body: bytes) -> None:
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_REPLACE)

    def delete_route(self, body: bytes) -> None:
        self.request(RTM_DELROUTE, body)

    def neighbours(self, family: int, index: int) -> list[NeighMessage]:
        """The neighbour (AF_INET, AF_INET6) or FDB (AF_BRIDGE) entries of link
        `index` (filtered here too: an older kernel may not filter)."""
        return [m for m in map(parse_neigh, self.request(RTM_GETNEIGH, neigh_dump(family, index),
                                                         NLM_F_DUMP))
                if m.index == index and m.family == family]

    def replace_neighbour(self, body: bytes) -> None:
        self.request(RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_REPLACE)

    def delete_neighbour(self, body: bytes) -> None:
        self.request(RTM_DELNEIGH, body)
