"""foundation/netlink/rtnl.py and foundation/netlink.

Three layers:

* golden wire bytes of every message shape the plugin sends, written out by hand
  from the kernel ABI (<linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>,
  <linux/if_addr.h>; netlink is host byte order, these literals are little-endian as on
  x86-64 and arm64),
  and cross-checked against pyroute2's encoders and decoders;
* decoding of hand-made kernel answers (attributes, datagrams, errors with and
  without extended ack) and a property test that the decoders never raise;
* the real kernel, only inside namespaces created here (random tag, deleted at
  teardown): every RouteSocket is opened with the calling thread inside such a
  namespace, and the results are read back with `ip -j` / `bridge -j`, never
  through rtnl itself.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from cni_plugin import veth, vxlan
from cni_plugin.config import VxlanConf
from foundation import netlink
from foundation.netlink import rtnl
from foundation.netlink.mac import mac_bytes
from foundation.netlink.netns import entered_fd, open_netns
from lab.netns import Netns


def H(text: str) -> bytes:  # noqa: N802 - reads like a literal
    return bytes.fromhex(text)


# Hand-made encoders for decoding tests: independent of rtnl's own.
def rta(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    size = 16 + len(payload)
    return struct.pack("=IHHII", size, kind, flags, seq, 0) + payload + b"\0" * (-size % 4)


# ---------------------------------------------------------------- golden bytes


@pytest.mark.parametrize(("encoded", "expected"), [
    (rtnl.attr(1, b"ab"), "06000100 61620000"),           # len 6, padded to 8
    (rtnl.attr(3, b""), "04000300"),                      # header only
    (rtnl.attr(2, b"abcd"), "08000200 61626364"),         # already aligned
    (rtnl.attr_u8(7, 1), "05000700 01000000"),
    (rtnl.attr_u32(4, 0x12345678), "08000400 78563412"),  # host order
    (rtnl.attr_str(3, "lo"), "07000300 6c6f0000"),        # NUL counted in len
])
def test_attr(encoded: bytes, expected: str) -> None:
    assert encoded == H(expected)


def test_nested_with_and_without_nla_f_nested() -> None:
    kind = rtnl.attr_str(1, "veth")
    assert kind == H("09000100 76657468 00000000")
    assert rtnl.nested(18, kind) == H("10001200 09000100 76657468 00000000")
    assert rtnl.nested(18, kind, flag=True) == H("10001280 09000100 76657468 00000000")
    assert rtnl.nested(18) == H("04001200")
    two = rtnl.nested(12, rtnl.attr_u8(4, 1), rtnl.attr_u8(1, 3), flag=True)
    assert two == H("14000c80 05000400 01000000 05000100 03000000")


def test_message_header_and_link_get() -> None:
    msg = rtnl.message(rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, 0x01020304,
                       rtnl.link_get("eth0"))
    assert msg == H(
        "34000000 1200 0500 04030201 00000000"          # nlmsghdr: len 52, type 18, flags 5
        "00 00 0000 00000000 00000000 00000000"         # ifinfomsg
        "08001d00 08000000"                             # IFLA_EXT_MASK = RTEXT_FILTER_SKIP_STATS
        "09000300 65746830 00000000")                   # IFLA_IFNAME "eth0"
    assert rtnl.link_get(index=7) == H("00000000 07000000 00000000 00000000 08001d00 08000000")
    assert rtnl.link_dump() == H("00000000 00000000 00000000 00000000 08001d00 08000000")
    assert rtnl.ifinfomsg(0) == bytes(16)


VETH_CREATE = H(
    "0000 0000 00000000 01000000 01000000"  # ifinfomsg: flags IFF_UP, change IFF_UP
    "0b000300 76657468 31610000"            # IFLA_IFNAME "veth1a"
    "08000400 78050000"                     # IFLA_MTU 1400
    "08000a00 05000000"                     # IFLA_MASTER 5
    "50001200"                              # IFLA_LINKINFO (80)
    "  09000100 76657468 00000000"          #   IFLA_INFO_KIND "veth"
    "  40000200"                            #   IFLA_INFO_DATA (64)
    "    3c000100"                          #     VETH_INFO_PEER (60)
    "      00000000 00000000 00000000 00000000"  # peer ifinfomsg
    "      09000300 65746830 00000000"      #       IFLA_IFNAME "eth0"
    "      08001c00 07000000"               #       IFLA_NET_NS_FD 7
    "      08000400 78050000"               #       IFLA_MTU 1400
    "      0a000100 0242ac11 00020000")     #       IFLA_ADDRESS 02:42:ac:11:00:02


def veth_create_body() -> bytes:
    peer = rtnl.veth_peer("eth0", 7, mtu=1400, mac="02:42:ac:11:00:02")
    return rtnl.link_create("veth1a", "veth", peer, mtu=1400, master=5, up=True)


def test_link_create_veth_with_peer_in_netns_fd() -> None:
    assert veth_create_body() == VETH_CREATE
    assert len(VETH_CREATE) == 124


def test_link_create_veth_decoded_by_pyroute2() -> None:
    msg = ifinfmsg(rtnl.message(rtnl.RTM_NEWLINK, 0x605, 9, veth_create_body()))
    msg.decode()
    assert msg["header"]["length"] == 16 + 124
    assert (msg["index"], msg["flags"], msg["change"]) == (0, 1, 1)
    assert msg.get_attr("IFLA_IFNAME") == "veth1a"
    assert msg.get_attr("IFLA_MTU") == 1400
    assert msg.get_attr("IFLA_MASTER") == 5
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_NET_NS_FD") == 7
    assert peer.get_attr("IFLA_MTU") == 1400
    assert peer.get_attr("IFLA_ADDRESS") == "02:42:ac:11:00:02"


def test_link_create_bridge() -> None:
    assert rtnl.link_create("br0", "bridge") == H(
        "00000000 00000000 00000000 00000000"   # down: flags and change 0
        "08000300 62723000"                     # IFLA_IFNAME "br0"
        "10001200 0b000100 62726964 67650000")  # IFLA_LINKINFO { IFLA_INFO_KIND "bridge" }
    assert rtnl.link_create("br0", "bridge", mtu=1450, mac="02:00:00:00:00:01") == H(
        "00000000 00000000 00000000 00000000"
        "08000300 62723000"
        "08000400 aa050000"                     # IFLA_MTU 1450
        "0a000100 02000000 00010000"            # IFLA_ADDRESS
        "10001200 0b000100 62726964 67650000")


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"up": True, "promisc": True, "mtu": 9000, "mac": "aa:bb:cc:dd:ee:ff"},
     "00000000 04000000 01010000 01010000 08000400 28230000 0a000100 aabbccdd eeff0000"),
    ({"up": False}, "00000000 04000000 00000000 01000000"),     # change masks IFF_UP only
    ({"promisc": False}, "00000000 04000000 00000000 00010000"),  # IFF_PROMISC 0x100
    ({"promisc": True}, "00000000 04000000 00010000 00010000"),
    ({"mtu": 1500}, "00000000 04000000 00000000 00000000 08000400 dc050000"),
    ({"mac": "02-00-00-00-00-09"},
     "00000000 04000000 00000000 00000000 0a000100 02000000 00090000"),
])
def test_link_set(kwargs: dict[str, Any], expected: str) -> None:
    assert rtnl.link_set(4, **kwargs) == H(expected)


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "02:00:00:00:00:00:01", "zz:00:00:00:00:00"])
def test_mac_bytes_rejects_non_macs(mac: str) -> None:
    with pytest.raises(ValueError):
        mac_bytes(mac)


def test_brport_hairpin() -> None:
    # family AF_BRIDGE; IFLA_PROTINFO with NLA_F_NESTED, else the bridge reads it
    # as a bare port state byte.
    assert rtnl.brport_hairpin(6, True) == H(
        "07000000 06000000 00000000 00000000 0c000c80 05000400 01000000")
    assert rtnl.brport_hairpin(6, False) == H(
        "07000000 06000000 00000000 00000000 0c000c80 05000400 00000000")
    msg = ifinfmsg(rtnl.message(rtnl.RTM_SETLINK, 5, 1, rtnl.brport_hairpin(6, True)))
    msg.decode()
    assert (msg["family"], msg["index"]) == (socket.AF_BRIDGE, 6)
    assert msg.get_attr("IFLA_PROTINFO").get_attr("IFLA_BRPORT_MODE") == 1


def test_vxlan_data_port_in_network_order() -> None:
    assert rtnl.vxlan_data(42, 8472, "192.168.1.10", 3) == H(
        "08000100 2a000000"    # IFLA_VXLAN_ID 42
        "08000300 03000000"    # IFLA_VXLAN_LINK 3
        "08000400 c0a8010a"    # IFLA_VXLAN_LOCAL 192.168.1.10
        "05000700 00000000"    # IFLA_VXLAN_LEARNING 0
        "06000f00 21180000")   # IFLA_VXLAN_PORT 8472 = 0x2118, big-endian
    assert rtnl.vxlan_data(1, 4789, "10.0.0.1", 2, learning=True)[-16:] == H(
        "05000700 01000000 06000f00 12b50000")


def test_vxlan_link_create_matches_pyroute2_encoder() -> None:
    ours = rtnl.message(rtnl.RTM_NEWLINK, 5, 7, rtnl.link_create(
        "vx0", "vxlan", rtnl.vxlan_data(42, 8472, "10.0.0.1", 3)))
    theirs = ifinfmsg()
    theirs["header"].update(type=rtnl.RTM_NEWLINK, flags=5, sequence_number=7)
    theirs["attrs"] = [("IFLA_IFNAME", "vx0"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "vxlan"),
        ("IFLA_INFO_DATA", {"attrs": [
            ("IFLA_VXLAN_ID", 42), ("IFLA_VXLAN_LINK", 3), ("IFLA_VXLAN_LOCAL", "10.0.0.1"),
            ("IFLA_VXLAN_LEARNING", 0), ("IFLA_VXLAN_PORT", 8472)]})]})]
    theirs.encode()
    assert ours == bytes(theirs.data)


@pytest.mark.parametrize(("address", "prefixlen", "flags", "expected"), [
    ("10.1.2.3", 24, 0, "02180000 03000000 08000200 0a010203 08000100 0a010203"
                        " 08000400 0a0102ff"),           # IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST
    ("10.1.2.5", 30, 0, "021e0000 03000000 08000200 0a010205 08000100 0a010205"
                        " 08000400 0a010207"),
    ("10.1.2.4", 31, 0, "021f0000 03000000 08000200 0a010204 08000100 0a010204"),  # no brd
    ("10.1.2.4", 32, 0, "02200000 03000000 08000200 0a010204 08000100 0a010204"),
    ("fd00::2", 64, 0x02, "0a400200 03000000"            # AF_INET6, /64, IFA_F_NODAD
                          " 14000200 fd000000 00000000 00000000 00000002"
                          " 14000100 fd000000 00000000 00000000 00000002"),
])
def test_address_body(address: str, prefixlen: int, flags: int, expected: str) -> None:
    assert rtnl.address_body(3, address, prefixlen, flags) == H(expected)


def test_address_body_decoded_and_encoded_by_pyroute2() -> None:
    ours = rtnl.message(rtnl.RTM_NEWADDR, 5, 7, rtnl.address_body(3, "10.1.2.3", 24))
    theirs = ifaddrmsg()
    theirs["header"].update(type=rtnl.RTM_NEWADDR, flags=5, sequence_number=7)
    theirs.update(family=socket.AF_INET, prefixlen=24, index=3)
    theirs["attrs"] = [("IFA_LOCAL", "10.1.2.3"), ("IFA_ADDRESS", "10.1.2.3"),
                       ("IFA_BROADCAST", "10.1.2.255")]
    theirs.encode()
    assert ours == bytes(theirs.data)

    v6 = ifaddrmsg(rtnl.message(rtnl.RTM_NEWADDR, 5, 8,
                                rtnl.address_body(9, "fd00::2", 64, netlink.IFA_F_NODAD)))
    v6.decode()
    assert (v6["family"], v6["prefixlen"], v6["flags"], v6["index"]) == (socket.AF_INET6, 64,
                                                                           0x02, 9)
    assert v6.get_attr("IFA_LOCAL") == v6.get_attr("IFA_ADDRESS") == "fd00::2"
    assert v6.get_attr("IFA_BROADCAST") is None


@pytest.mark.parametrize(("args", "expected"), [
    (("0.0.0.0", 0, "10.1.2.1", 3),                      # default via gateway: universe scope
     "02000000 fe030001 00000000 08000500 0a010201 08000400 03000000 08000f00 fe000000"),
    (("10.1.2.0", 24, None, 3),                          # no gateway: link scope (0xfd)
     "02180000 fe03fd01 00000000 08000100 0a010200 08000400 03000000 08000f00 fe000000"),
    (("::", 0, "fd00::1", 3),
     "0a000000 fe030001 00000000 14000500 fd000000 00000000 00000000 00000001"
     " 08000400 03000000 08000f00 fe000000"),
    (("fd00:1::", 64, None, None),                       # no oif: no RTA_OIF
     "0a400000 fe03fd01 00000000 14000100 fd000001 00000000 00000000 00000000"
     " 08000f00 fe000000"),
])
def test_route_body(args: tuple[str, int, str | None, int | None], expected: str) -> None:
    # rtmsg: family, dst_len, src_len, tos, table MAIN, proto BOOT, scope, type UNICAST, flags
    assert rtnl.route_body(*args) == H(expected)


def test_route_body_decoded_and_encoded_by_pyroute2() -> None:
    ours = rtnl.message(rtnl.RTM_NEWROUTE, 5, 7, rtnl.route_body("10.1.2.0", 24, None, 3))
    theirs = rtmsg()
    theirs["header"].update(type=rtnl.RTM_NEWROUTE, flags=5, sequence_number=7)
    theirs.update(family=socket.AF_INET, dst_len=24, table=254, proto=3, scope=253, type=1)
    theirs["attrs"] = [("RTA_DST", "10.1.2.0"), ("RTA_OIF", 3), ("RTA_TABLE", 254)]
    theirs.encode()
    assert ours == bytes(theirs.data)

    default6 = rtmsg(rtnl.message(rtnl.RTM_NEWROUTE, 5, 8,
                                  rtnl.route_body("::", 0, "fd00::1", 4)))
    default6.decode()
    assert (default6["family"], default6["dst_len"], default6["scope"]) == (socket.AF_INET6, 0, 0)
    assert (default6["proto"], default6["type"], default6["table"]) == (3, 1, 254)
    assert default6.get_attr("RTA_DST") is None
    assert default6.get_attr("RTA_GATEWAY") == "fd00::1"
    assert default6.get_attr("RTA_OIF") == 4


# Neighbour and FDB entries, routes with a protocol and flags, and the IPv6
# address generation mode: what skein-agent's VXLAN device and the pod's node
# end need.


@pytest.mark.parametrize(("body", "expected"), [
    # ndmsg: family, pad x3, ifindex, state, flags, type; then the attributes.
    (rtnl.neigh_body(socket.AF_INET, 7, "0e:4b:0a:63:00:0c", "10.244.1.0",
                     state=rtnl.NUD_PERMANENT, protocol=83),
     "02000000 07000000 80000000 08000100 0af40100 0a000200 0e4b0a63 000c0000"
     " 05000c00 53000000"),
    (rtnl.neigh_body(socket.AF_INET6, 7, dst="fd44:0:0:1::"),          # a delete
     "0a000000 07000000 00000000 14000100 fd440000 00000001 00000000 00000000"),
    (rtnl.neigh_body(rtnl.AF_BRIDGE, 7, "0e:4b:0a:63:00:0c", "10.99.0.12",
                     state=rtnl.NUD_PERMANENT | rtnl.NUD_NOARP, flags=rtnl.NTF_SELF),
     "07000000 07000000 c0000200 08000100 0a63000c 0a000200 0e4b0a63 000c0000"),
])
def test_neigh_body(body: bytes, expected: str) -> None:
    assert body == H(expected)


def test_neigh_body_decoded_by_pyroute2() -> None:
    msg = ndmsg(rtnl.message(rtnl.RTM_NEWNEIGH, 5, 3, rtnl.neigh_body(
        socket.AF_INET6, 9, "0e:6b:00:00:00:0c", "fd44:0:0:1::", state=rtnl.NUD_PERMANENT,
        protocol=83)))
    msg.decode()
    assert (msg["family"], msg["ifindex"], msg["state"]) == (socket.AF_INET6, 9, 0x80)
    assert msg.get_attr("NDA_DST") == "fd44:0:0:1::"
    assert msg.get_attr("NDA_LLADDR") == "0e:6b:00:00:00:0c"
    assert msg.get_attr("NDA_PROTOCOL") == 83
    fdb = ndmsg(rtnl.message(rtnl.RTM_NEWNEIGH, 5, 4, rtnl.neigh_body(
        rtnl.AF_BRIDGE, 9, "0e:4b:0a:63:00:0c", "10.99.0.12", flags=rtnl.NTF_SELF)))
    fdb.decode()
    assert (fdb["family"], fdb["flags"]) == (rtnl.AF_BRIDGE, rtnl.NTF_SELF)
    assert (fdb.get_attr("NDA_LLADDR"), fdb.get_attr("NDA_DST")) == ("0e:4b:0a:63:00:0c",
                                                                      "10.99.0.12")


def test_neigh_dump_filters_the_way_the_kernel_reads_them() -> None:
    # Neighbours: an ndmsg, then NDA_IFINDEX.
    assert rtnl.neigh_dump(socket.AF_INET, 7) == H("02000000 00000000 00000000 08000800 07000000")
    # FDB: an ifinfomsg (16 bytes, neither an ndmsg's 12 nor 12 + one u32
    # attribute) whose index names the device (rtnetlink.c, valid_fdb_dump_legacy).
    body = rtnl.neigh_dump(rtnl.AF_BRIDGE, 7)
    assert body == H("07000000 07000000 00000000 00000000")
    assert len(body) not in (rtnl.NDMSG.size, rtnl.NDMSG.size + 8)


def test_parse_neigh() -> None:
    payload = (struct.pack("=BxxxiHBB", socket.AF_INET, 7, 0x80, 0, 1)
               + rta(rtnl.NDA_DST, bytes([10, 244, 1, 0]))
               + rta(rtnl.NDA_LLADDR, bytes.fromhex("0e4b0a63000c"))
               + rta(rtnl.NDA_PROTOCOL, b"\x53"))
    assert rtnl.parse_neigh(payload) == rtnl.NeighMessage(
        socket.AF_INET, 7, 0x80, 0, "10.244.1.0", bytes.fromhex("0e4b0a63000c"), 83)
    bare = struct.pack("=BxxxiHBB", socket.AF_INET, 7, 0x02, 0, 1)   # incomplete, no attrs
    assert rtnl.parse_neigh(bare) == rtnl.NeighMessage(socket.AF_INET, 7, 2, 0, None, None,
                                                       None)


@pytest.mark.parametrize(("kwargs", "expected"), [
    # replace: proto 83 (skein), scope universe, type unicast, rtm_flags RTNH_F_ONLINK
    ({"protocol": 83, "flags": rtnl.RTNH_F_ONLINK},
     "02180000 fe530001 04000000 08000100 0af40100 08000500 0af40100 08000400 07000000"
     " 08000f00 fe000000"),
    # delete: any scope (RT_SCOPE_NOWHERE) and type, as `ip route del` sends
    ({"protocol": 83, "delete": True},
     "02180000 fe53ff00 00000000 08000100 0af40100 08000500 0af40100 08000400 07000000"
     " 08000f00 fe000000"),
])
def test_route_body_with_protocol_flags_and_delete(kwargs: dict[str, Any], expected: str) -> None:
    assert rtnl.route_body("10.244.1.0", 24, "10.244.1.0", 7, **kwargs) == H(expected)


def test_addr_gen_mode_none_matches_pyroute2() -> None:
    body = rtnl.addr_gen_mode_none(7)
    # ifinfomsg index 7; IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = 1 } }
    assert body == H("00000000 07000000 00000000 00000000 10001a00 0c000a00 05000800 01000000")
    msg = ifinfmsg(rtnl.message(rtnl.RTM_SETLINK, 5, 1, body))
    msg.decode()
    inet6 = msg.get_attr("IFLA_AF_SPEC").get_attr("AF_INET6")
    assert inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") == rtnl.IN6_ADDR_GEN_MODE_NONE


# ---------------------------------------------------------------- decoding


def test_parse_attrs_masks_flags_and_uses_offset_and_end() -> None:
    data = (b"HEAD" + rta(0x8000 | 3, b"nest") + rta(0x4000 | 5, b"\x01\x02")
            + rta(7, b"seven"))
    assert rtnl.parse_attrs(data, 4) == {3: b"nest", 5: b"\x01\x02", 7: b"seven"}
    assert rtnl.parse_attrs(data, 4, 4 + 8) == {3: b"nest"}
    assert rtnl.parse_attrs(b"") == {}


@pytest.mark.parametrize("tail", [
    struct.pack("=HH", 12, 9) + b"abcd",   # claims 12 bytes, 8 present
    struct.pack("=HH", 0, 9) + b"abcd",    # zero length would loop forever
    struct.pack("=HH", 3, 9),              # shorter than its own header
    b"\x08\x00",                           # half a header
])
def test_parse_attrs_stops_at_truncation(tail: bytes) -> None:
    assert rtnl.parse_attrs(rta(1, b"ok") + tail) == {1: b"ok"}


def test_split_messages() -> None:
    one = nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, 5, b"x")        # len 17, padded to 20
    two = nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, 5, struct.pack("=i", 0))
    truncated = struct.pack("=IHHII", 64, 16, 0, 5, 0) + b"short"
    assert list(rtnl.split_messages(one + two + truncated)) == [
        (rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, 5, b"x"),
        (rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, 5, b"\0\0\0\0"),
    ]
    assert list(rtnl.split_messages(struct.pack("=IHHII", 4, 2, 0, 0, 0))) == []
    assert list(rtnl.split_messages(b"")) == []


REQUEST = nlmsg(rtnl.RTM_NEWLINK, 0x605, 3, bytes(16) + rta(3, b"cni0\0"))  # echoed request


def test_error_of_ack() -> None:
    assert rtnl.error_of(rtnl.NLM_F_CAPPED, struct.pack("=i", 0) + REQUEST[:16]) == 0


def test_error_of_plain_error_echoing_the_request() -> None:
    payload = struct.pack("=i", -errno.EEXIST) + REQUEST
    assert rtnl.error_of(0, payload) == (errno.EEXIST, "")


def test_error_of_capped_with_extack_message() -> None:
    flags = rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS
    assert flags == 0x300
    payload = (struct.pack("=i", -errno.EINVAL) + REQUEST[:16]  # only the header echoed
               + rta(rtnl.NLMSGERR_ATTR_MSG, b"Unknown device type\0")
               + rta(2, struct.pack("=I", 20)))                # NLMSGERR_ATTR_OFFS
    assert rtnl.error_of(flags, payload) == (errno.EINVAL, "Unknown device type")


def test_error_of_uncapped_with_extack_after_an_unaligned_request() -> None:
    request = struct.pack("=IHHII", 22, 16, 5, 3, 0) + b"abcdef"   # nlmsg_len 22
    echoed = request + b"\0\0"                                    # the kernel aligns it
    payload = (struct.pack("=i", -errno.ERANGE) + echoed
               + rta(rtnl.NLMSGERR_ATTR_MSG, b"Attribute failed policy validation\0"))
    assert rtnl.error_of(rtnl.NLM_F_ACK_TLVS, payload) == (
        errno.ERANGE, "Attribute failed policy validation")


def test_parse_link() -> None:
    info = rta(rtnl.IFLA_INFO_KIND, b"vxlan\0") + rta(rtnl.IFLA_INFO_DATA, (
        rta(rtnl.IFLA_VXLAN_ID, struct.pack("=I", 42))
        + rta(rtnl.IFLA_VXLAN_PORT, b"\x21\x18")))
    payload = (struct.pack("=BxHiII", 0, 1, 7, 0x1003, 0)
               + rta(rtnl.IFLA_IFNAME, b"skein.1\0") + rta(rtnl.IFLA_MTU, struct.pack("=I", 1450))
               + rta(rtnl.IFLA_ADDRESS, b"\x02\x00\x0a\x00\x00\x01")
               + rta(rtnl.IFLA_MASTER, struct.pack("=I", 3))
               + rta(rtnl.IFLA_LINK_NETNSID, struct.pack("=i", 0))
               + rta(0x8000 | rtnl.IFLA_LINKINFO, info))
    msg = rtnl.parse_link(payload)
    assert (msg.index, msg.flags) == (7, 0x1003)
    assert msg.kind == "vxlan"
    assert msg.info_data == {rtnl.IFLA_VXLAN_ID: struct.pack("=I", 42),
                             rtnl.IFLA_VXLAN_PORT: b"\x21\x18"}
    link = netlink.link_from_message(msg)
    assert link == netlink.Link(index=7, name="skein.1", mac="02:00:0a:00:00:01", mtu=1450,
                                kind="vxlan", master=3, up=True, promisc=False, link_netnsid=0,
                                peer_index=None)
    bare = rtnl.parse_link(struct.pack("=BxHiII", 0, 772, 1, 0x49, 0))
    assert (bare.kind, bare.info, bare.info_data) == ("", {}, {})


def test_parse_address() -> None:
    v4 = (struct.pack("=BBBBI", socket.AF_INET, 24, 0x80, 0, 4)
          + rta(rtnl.IFA_ADDRESS, bytes([10, 0, 0, 5])) + rta(rtnl.IFA_LOCAL, bytes([10, 0, 0, 5]))
          + rta(3, b"eth0\0"))
    assert rtnl.parse_address(v4) == rtnl.AddressMessage(socket.AF_INET, 24, 4, "10.0.0.5")
    local_only = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 1) + rta(
        rtnl.IFA_LOCAL, bytes([127, 0, 0, 1]))
    assert rtnl.parse_address(local_only).address == "127.0.0.1"
    v6 = struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 9) + rta(
        rtnl.IFA_ADDRESS, socket.inet_pton(socket.AF_INET6, "fd00::2"))
    assert rtnl.parse_address(v6) == rtnl.AddressMessage(socket.AF_INET6, 64, 9, "fd00::2")
    none = struct.pack("=BBBBI", socket.AF_INET, 8, 0, 0, 2)
    assert rtnl.parse_address(none).address is None


def test_parse_address_of_a_point_to_point_address_is_the_local_one() -> None:
    ptp = (struct.pack("=BBBBI", socket.AF_INET, 32, 0x80, 0, 4)
           + rta(rtnl.IFA_ADDRESS, bytes([10, 9, 0, 2]))   # the peer
           + rta(rtnl.IFA_LOCAL, bytes([10, 9, 0, 1])))    # this end
    assert rtnl.parse_address(ptp).address == "10.9.0.1"


def test_parse_route() -> None:
    default = (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
               + rta(rtnl.RTA_TABLE, struct.pack("=I", 254))
               + rta(rtnl.RTA_GATEWAY, bytes([10, 0, 0, 1]))
               + rta(rtnl.RTA_OIF, struct.pack("=I", 2)))
    assert rtnl.parse_route(default) == rtnl.RouteMessage(socket.AF_INET, 0, 254, None,
                                                          "10.0.0.1", 2, protocol=3)
    # A table id above 255 lives only in RTA_TABLE (rtm_table says RT_TABLE_COMPAT 252).
    big = (struct.pack("=BBBBBBBBI", socket.AF_INET6, 64, 0, 0, 252, 3, 253, 1, 0)
           + rta(rtnl.RTA_TABLE, struct.pack("=I", 1000))
           + rta(rtnl.RTA_DST, socket.inet_pton(socket.AF_INET6, "fd00::")))
    assert rtnl.parse_route(big) == rtnl.RouteMessage(socket.AF_INET6, 64, 1000, "fd00::",
                                                      None, None, protocol=3)
    onlink = struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 254, 83, 0, 1,
                         rtnl.RTNH_F_ONLINK)
    assert (rtnl.parse_route(onlink).protocol, rtnl.parse_route(onlink).flags) == (83, 4)
    no_table_attr = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 255, 2, 254, 2, 0)
    assert rtnl.parse_route(no_table_attr).table == 255


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=640))
def test_parse_attrs_never_raises(data: bytes, offset: int) -> None:
    rtnl.parse_attrs(data)
    rtnl.parse_attrs(data, offset)
    rtnl.parse_attrs(data, 0, min(offset, len(data)))


@given(st.binary(max_size=600))
def test_split_messages_never_raises(data: bytes) -> None:
    for _, _, _, payload in rtnl.split_messages(data):
        rtnl.parse_attrs(payload)


@given(st.dictionaries(st.integers(min_value=0, max_value=rtnl.NLA_TYPE_MASK),
                       st.binary(max_size=40), max_size=8), st.booleans())
def test_attr_roundtrip(attrs: dict[int, bytes], nested_flag: bool) -> None:
    encoded = b"".join(rtnl.attr(k, v) for k, v in attrs.items())
    assert rtnl.parse_attrs(encoded) == attrs
    outer = rtnl.parse_attrs(rtnl.nested(9, encoded, flag=nested_flag))
    assert rtnl.parse_attrs(outer[9]) == attrs


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                          st.integers(0, 0xFFFFFFFF), st.binary(max_size=40)), max_size=6))
def test_message_roundtrip(messages: list[tuple[int, int, int, bytes]]) -> None:
    datagram = b"".join(nlmsg(*m) for m in messages)
    assert [m[:3] for m in rtnl.split_messages(datagram)] == [m[:3] for m in messages]
    assert [m[3] for m in rtnl.split_messages(datagram)] == [m[3] for m in messages]


# ---------------------------------------------------------------- request loop, no kernel


class ScriptedSocket:
    """Stands in for the netlink socket: records what is sent, answers from a script."""

    def __init__(self, answers: Callable[[int], list[bytes]]) -> None:
        self.sent: list[bytes] = []
        self.answers = answers
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        self.queue.extend(self.answers(struct.unpack_from("=I", data, 8)[0]))
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.queue.pop(0)

    def close(self) -> None:
        pass


def scripted(answers: Callable[[int], list[bytes]]) -> tuple[rtnl.RouteSocket, ScriptedSocket]:
    fake = ScriptedSocket(answers)
    sock = rtnl.RouteSocket.__new__(rtnl.RouteSocket)
    sock._sock = fake  # type: ignore[assignment]
    sock._seq = 0
    return sock, fake


def ack(seq: int, code: int = 0, note: bytes = b"") -> bytes:
    flags = rtnl.NLM_F_CAPPED | (rtnl.NLM_F_ACK_TLVS if note else 0)
    tlvs = rta(rtnl.NLMSGERR_ATTR_MSG, note + b"\0") if note else b""
    echoed = struct.pack("=IHHII", 32, 0, 0, seq, 0)
    return nlmsg(rtnl.NLMSG_ERROR, flags, seq, struct.pack("=i", -code) + echoed + tlvs)


def test_request_skips_stale_answers_and_collects_a_get() -> None:
    link = struct.pack("=BxHiII", 0, 1, 5, 1, 0) + rta(rtnl.IFLA_IFNAME, b"br0\0")
    sock, fake = scripted(lambda seq: [
        ack(seq - 1, errno.EEXIST),                                   # a late answer
        nlmsg(rtnl.RTM_NEWLINK, 0, seq, link) + ack(seq)])            # one datagram
    assert sock.request(rtnl.RTM_GETLINK, rtnl.link_get("br0")) == [link]
    assert fake.sent == [rtnl.message(rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, 1,
                                      rtnl.link_get("br0"))]


def test_request_raises_with_the_kernel_note() -> None:
    sock, _ = scripted(lambda seq: [ack(seq, errno.EOPNOTSUPP, b"Unknown device type")])
    with pytest.raises(rtnl.NetlinkError) as info:
        sock.create(rtnl.link_create("x", "nosuch"))
    assert info.value.code == errno.EOPNOTSUPP
    assert str(info.value).endswith(f"{os.strerror(errno.EOPNOTSUPP)} (Unknown device type)")


def test_dump_spans_datagrams_until_done() -> None:
    def link(index: int) -> bytes:
        return struct.pack("=BxHiII", 0, 1, index, 0, 0) + rta(rtnl.IFLA_IFNAME, b"x\0")

    sock, fake = scripted(lambda seq: [
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, seq, link(1))
        + nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, seq, link(2)),
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, seq, link(3)),
        nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, struct.pack("=i", 0))])
    assert [m.index for m in sock.links()] == [1, 2, 3]
    assert struct.unpack_from("=H", fake.sent[0], 6)[0] == (
        rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_DUMP)


def test_dump_that_fails_part_way_raises() -> None:
    sock, _ = scripted(lambda seq: [
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, seq, struct.pack("=BxHiII", 0, 1, 1, 0, 0)),
        nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, struct.pack("=i", -errno.EMSGSIZE))])
    with pytest.raises(rtnl.NetlinkError):
        sock.links()


def test_an_interrupted_dump_is_asked_again() -> None:
    """NLM_F_DUMP_INTR: the table changed during the dump; the next answer counts."""
    first = struct.pack("=BxHiII", 0, 1, 1, 0, 0)
    second = struct.pack("=BxHiII", 0, 1, 2, 0, 0)
    done = struct.pack("=i", 0)
    sock, fake = scripted(lambda seq: [
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR, seq, first),
        nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, done),
    ] if seq == 1 else [
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, seq, second),
        nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, done)])
    assert [link.index for link in sock.links()] == [2]
    assert len(fake.sent) == 2


def test_a_dump_interrupted_every_time_is_an_error_after_a_bounded_number_of_tries() -> None:
    """As the reference plugins' netlinksafe: a few tries, then EINTR, never an
    answer that may miss entries."""
    link = struct.pack("=BxHiII", 0, 1, 1, 0, 0)
    sock, fake = scripted(lambda seq: [
        nlmsg(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR, seq, link),
        nlmsg(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, struct.pack("=i", 0))])
    with pytest.raises(rtnl.NetlinkError) as info:
        sock.links()
    assert info.value.code == errno.EINTR and "interrupted" in str(info.value)
    assert len(fake.sent) == rtnl.DUMP_ATTEMPTS == 5


def test_batch_is_one_write_of_consecutive_requests() -> None:
    def answers(seq: int) -> list[bytes]:
        return [ack(seq + 1, errno.EEXIST) + ack(seq)]   # in one datagram, out of order

    sock, fake = scripted(answers)
    bodies = [rtnl.link_set(3, up=True), rtnl.link_get(index=3)]
    outcomes = sock.batch([(rtnl.RTM_SETLINK, bodies[0], 0), (rtnl.RTM_GETLINK, bodies[1], 0)])
    assert outcomes[0] == []
    assert isinstance(outcomes[1], rtnl.NetlinkError) and outcomes[1].code == errno.EEXIST
    flags = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    assert fake.sent == [rtnl.message(rtnl.RTM_SETLINK, flags, 1, bodies[0])
                         + rtnl.message(rtnl.RTM_GETLINK, flags, 2, bodies[1])]
    assert sock.request(rtnl.RTM_SETLINK, bodies[0]) == []   # numbering goes on after it
    assert struct.unpack_from("=I", fake.sent[1], 8)[0] == 3


# ---------------------------------------------------------------- the real kernel


def thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture(autouse=True)
def stays_home() -> Iterator[None]:
    """Every test leaves this thread in the namespace it started in."""
    home = thread_netns()
    yield
    assert thread_netns() == home


class Lab:
    """Namespaces (from netns_factory: random tag, deleted at teardown) with a
    RouteSocket opened inside each; sockets and fds are closed before the
    namespaces go."""

    def __init__(self, factory: Callable[[str], Netns]) -> None:
        self.factory = factory
        self.fds: dict[str, int] = {}
        self.sockets: list[rtnl.RouteSocket] = []

    def namespace(self, suffix: str) -> tuple[Netns, rtnl.RouteSocket]:
        ns = self.factory(suffix)
        assert ns.exists() and ns.name.startswith("sk") and ns.name != "sk"
        fd = open_netns(ns.path)
        self.fds[ns.name] = fd
        with entered_fd(fd):
            assert thread_netns() == os.stat(ns.path).st_ino
            sock = netlink.open_route_socket()
        self.sockets.append(sock)
        return ns, sock

    def fd(self, ns: Netns) -> int:
        return self.fds[ns.name]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for fd in self.fds.values():
            os.close(fd)


@pytest.fixture
def lab(netns_factory: Callable[[str], Netns]) -> Iterator[Lab]:
    made = Lab(netns_factory)
    try:
        yield made
    finally:
        made.close()


def links(ns: Netns) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in json.loads(ns.ip("-j", "-d", "link", "show").stdout)}


def addrs(ns: Netns, dev: str) -> list[dict[str, Any]]:
    [link] = json.loads(ns.ip("-j", "-d", "addr", "show", "dev", dev).stdout)
    return list(link["addr_info"])


def routes(ns: Netns, family: str) -> list[dict[str, Any]]:
    return list(json.loads(ns.ip(family, "-j", "-d", "route", "show").stdout))


def bridge_ports(ns: Netns) -> dict[str, dict[str, Any]]:
    out = subprocess.run(["bridge", "-n", ns.name, "-j", "-d", "link", "show"], check=True,
                         capture_output=True, text=True).stdout
    return {port["ifname"]: port for port in json.loads(out or "[]")}


def veth_pair(lab: Lab, ns: Netns, sock: rtnl.RouteSocket, name: str, peer: str,
              up: bool = True) -> tuple[netlink.Link, netlink.Link]:
    """A veth pair with both ends inside `ns`."""
    sock.create(rtnl.link_create(name, "veth", rtnl.veth_peer(peer, lab.fd(ns)), up=up))
    a, b = netlink.get_link(sock, name), netlink.get_link(sock, peer)
    assert a is not None and b is not None
    if up:
        netlink.set_up(sock, b.index)
    return a, b


def test_bridge_create_then_eexist(lab: Lab) -> None:
    ns, sock = lab.namespace("b")
    sock.create(rtnl.link_create("br0", "bridge", mtu=1450, up=True))
    br = links(ns)["br0"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert br["mtu"] == 1450 and "UP" in br["flags"]
    with pytest.raises(rtnl.NetlinkError) as info:
        sock.create(rtnl.link_create("br0", "bridge"))
    assert info.value.code == errno.EEXIST
    assert str(info.value).startswith(f"[Errno {errno.EEXIST}] {os.strerror(errno.EEXIST)}")
    assert sorted(links(ns)) == ["br0", "lo"]


def test_kernel_extack_text_reaches_the_error(lab: Lab) -> None:
    ns, sock = lab.namespace("e")
    with pytest.raises(rtnl.NetlinkError) as info:   # IFLA_IFNAME longer than IFNAMSIZ - 1
        sock.create(rtnl.link_create("n" * 20, "bridge"))
    assert info.value.code in (errno.ERANGE, errno.EINVAL)
    assert "policy" in str(info.value)               # "Attribute failed policy validation"
    veth, _ = veth_pair(lab, ns, sock, "ve0", "ve1")
    netlink.add_address(sock, veth.index, "10.61.0.2/24")
    with pytest.raises(rtnl.NetlinkError) as info:   # a gateway that is not on-link
        netlink.add_route(sock, "10.62.0.0/16", "10.99.0.1", veth.index)
    assert info.value.code == errno.ENETUNREACH
    assert "gateway" in str(info.value)              # "Nexthop has invalid gateway"
    assert sorted(links(ns)) == ["lo", "ve0", "ve1"]


POD_MAC = "02:42:0a:4d:00:05"


def test_veth_peer_straight_into_another_namespace(lab: Lab) -> None:
    node, nsock = lab.namespace("n")
    pod, psock = lab.namespace("p")
    nsock.create(rtnl.link_create("br0", "bridge", up=True))
    bridge = netlink.get_link(nsock, "br0")
    assert bridge is not None
    # One request: host end named, mtu, enslaved and up; peer in `pod` as eth0.
    nsock.create(rtnl.link_create(
        "vh0", "veth", rtnl.veth_peer("eth0", lab.fd(pod), mtu=1400, mac=POD_MAC),
        mtu=1400, master=bridge.index, up=True))

    host = links(node)
    assert sorted(host) == ["br0", "lo", "vh0"]      # no eth0 left behind in the node
    assert host["vh0"]["master"] == "br0"
    assert "UP" in host["vh0"]["flags"]
    assert host["vh0"]["mtu"] == 1400
    assert host["vh0"]["linkinfo"]["info_kind"] == "veth"
    assert host["vh0"]["linkinfo"]["info_slave_kind"] == "bridge"
    assert "vh0" in bridge_ports(node)
    inside = links(pod)
    assert sorted(inside) == ["eth0", "lo"]
    assert inside["eth0"]["address"] == POD_MAC
    assert inside["eth0"]["mtu"] == 1400
    assert inside["eth0"]["linkinfo"]["info_kind"] == "veth"

    seen = netlink.get_link(nsock, "vh0")
    assert seen is not None
    assert (seen.index, seen.kind, seen.master, seen.up) == (host["vh0"]["ifindex"], "veth",
                                                             bridge.index, True)
    assert seen.peer_index == inside["eth0"]["ifindex"]
    assert seen.link_netnsid == host["vh0"]["link_netnsid"]
    eth0 = netlink.get_link(psock, "eth0")
    assert eth0 is not None and (eth0.mac, eth0.mtu) == (POD_MAC, 1400)
    assert netlink.get_link(nsock, "eth0") is None


def test_get_link_by_name_and_index_and_list(lab: Lab) -> None:
    ns, sock = lab.namespace("g")
    sock.create(rtnl.link_create("br0", "bridge"))
    veth_pair(lab, ns, sock, "gv0", "gv1", up=False)
    kernel = links(ns)
    br = netlink.get_link(sock, "br0")
    assert br is not None
    assert (br.index, br.mac, br.mtu, br.kind, br.master, br.up) == (
        kernel["br0"]["ifindex"], kernel["br0"]["address"], kernel["br0"]["mtu"], "bridge",
        None, False)
    assert netlink.get_link_by_index(sock, br.index) == br
    lo = netlink.get_link_by_index(sock, 1)
    assert lo is not None and lo.name == "lo" and lo.up
    assert netlink.get_link(sock, "nosuch0") is None
    assert netlink.get_link(sock, "") is None
    assert netlink.get_link(sock, "x" * 16) is None          # IFNAMSIZ: never a name
    assert netlink.get_link(sock, "é" * 8) is None           # 16 bytes, 8 characters
    assert netlink.get_link_by_index(sock, 0x7FFF0000) is None
    assert {link.name: link.index for link in netlink.list_links(sock)} == {
        name: link["ifindex"] for name, link in kernel.items()}
    # An alternative name resolves in the kernel, but only the name proper counts.
    ns.ip("link", "property", "add", "dev", "br0", "altname", "bralt")  # Linux >= 5.5
    assert netlink.get_link(sock, "bralt") is None


def test_set_up_mtu_mac_promisc(lab: Lab) -> None:
    ns, sock = lab.namespace("s")
    a, _ = veth_pair(lab, ns, sock, "sv0", "sv1", up=False)
    assert "UP" not in links(ns)["sv0"]["flags"]
    netlink.set_mtu(sock, a.index, 1280)
    netlink.set_mac(sock, a.index, "02:00:00:00:aa:01")
    netlink.set_promisc(sock, a.index)
    netlink.set_up(sock, a.index)
    seen = links(ns)["sv0"]
    assert seen["mtu"] == 1280
    assert seen["address"] == "02:00:00:00:aa:01"
    assert seen["promiscuity"] == 1 and "PROMISC" in seen["flags"]
    assert "UP" in seen["flags"]
    link = netlink.get_link(sock, "sv0")
    assert link is not None and (link.up, link.promisc, link.mtu) == (True, True, 1280)
    netlink.set_promisc(sock, a.index, on=False)             # leaves UP alone
    seen = links(ns)["sv0"]
    assert seen["promiscuity"] == 0 and "PROMISC" not in seen["flags"]
    assert "UP" in seen["flags"]


def test_set_hairpin(lab: Lab) -> None:
    ns, sock = lab.namespace("h")
    sock.create(rtnl.link_create("br0", "bridge"))
    bridge = netlink.get_link(sock, "br0")
    assert bridge is not None
    sock.create(rtnl.link_create("hp0", "veth", rtnl.veth_peer("hp1", lab.fd(ns)),
                                 master=bridge.index))
    port = netlink.get_link(sock, "hp0")
    assert port is not None
    assert bridge_ports(ns)["hp0"]["hairpin"] is False
    netlink.set_hairpin(sock, port.index)
    assert bridge_ports(ns)["hp0"]["hairpin"] is True
    netlink.set_hairpin(sock, port.index, on=False)
    assert bridge_ports(ns)["hp0"]["hairpin"] is False


def test_addresses(lab: Lab) -> None:
    ns, sock = lab.namespace("a")
    a, _ = veth_pair(lab, ns, sock, "av0", "av1")
    for _ in range(2):                                        # twice: already there is fine
        netlink.add_address(sock, a.index, "10.66.0.2/24")
        netlink.add_address(sock, a.index, "10.66.1.0/31")
        netlink.add_address(sock, a.index, "fd66::2/64")
    got = {(x["local"], x["prefixlen"]): x for x in addrs(ns, "av0")}
    assert got[("10.66.0.2", 24)]["broadcast"] == "10.66.0.255"
    assert "broadcast" not in got[("10.66.1.0", 31)]
    v6 = got[("fd66::2", 64)]
    assert v6.get("nodad") is True and "tentative" not in v6
    assert v6["scope"] == "global"
    listed = netlink.addresses(sock, a.index)
    assert {"10.66.0.2/24", "10.66.1.0/31", "fd66::2/64"} <= set(listed)
    assert set(listed) == {f"{x['local']}/{x['prefixlen']}" for x in addrs(ns, "av0")}

    netlink.delete_address(sock, a.index, "10.66.9.9/24")     # missing: fine
    netlink.delete_address(sock, a.index, "fd66::9/64")
    netlink.delete_address(sock, 0x7FFF0000, "10.66.0.2/24")  # missing link: fine
    netlink.delete_address(sock, a.index, "10.66.0.2/24")
    netlink.delete_address(sock, a.index, "fd66::2/64")
    left = {x["local"] for x in addrs(ns, "av0")}
    assert "10.66.0.2" not in left and "fd66::2" not in left and "10.66.1.0" in left


def test_routes(lab: Lab) -> None:
    ns, sock = lab.namespace("r")
    a, _ = veth_pair(lab, ns, sock, "rv0", "rv1")
    netlink.add_address(sock, a.index, "10.67.0.2/24")
    netlink.add_address(sock, a.index, "fd67::2/64")
    for _ in range(2):                                        # twice: already there is fine
        netlink.add_route(sock, "0.0.0.0/0", "10.67.0.1", a.index)
        netlink.add_route(sock, "10.68.0.5/16", None, a.index)  # host bits dropped
        netlink.add_route(sock, "::/0", "fd67::1", a.index)
        netlink.add_route(sock, "fd68::/64", None, a.index)

    v4 = {r["dst"]: r for r in routes(ns, "-4")}
    assert v4["default"]["gateway"] == "10.67.0.1"
    assert (v4["default"]["dev"], v4["default"]["scope"], v4["default"]["protocol"]) == (
        "rv0", "global", "boot")
    assert "gateway" not in v4["10.68.0.0/16"]
    assert (v4["10.68.0.0/16"]["dev"], v4["10.68.0.0/16"]["scope"]) == ("rv0", "link")
    v6 = {r["dst"]: r for r in routes(ns, "-6")}
    assert (v6["default"]["gateway"], v6["default"]["dev"]) == ("fd67::1", "rv0")
    assert v6["fd68::/64"]["dev"] == "rv0" and "gateway" not in v6["fd68::/64"]

    boot, kernel = rtnl.RTPROT_BOOT, 2                       # kernel: the prefix route
    listed4 = netlink.list_routes(sock, netlink.AF_INET)
    assert netlink.Route("0.0.0.0/0", "10.67.0.1", a.index, boot) in listed4
    assert netlink.Route("10.68.0.0/16", None, a.index, boot) in listed4
    assert netlink.Route("10.67.0.0/24", None, a.index, kernel) in listed4
    assert all(":" not in r.dst for r in listed4)
    assert len(listed4) == len(v4)                           # main table only, like `ip route`
    listed6 = netlink.list_routes(sock, netlink.AF_INET6)
    assert netlink.Route("::/0", "fd67::1", a.index, boot) in listed6
    assert netlink.Route("fd68::/64", None, a.index, boot) in listed6
    assert all("." not in r.dst for r in listed6)


def test_configure_link_in_one_round_trip(lab: Lab) -> None:
    """Addresses, up, routes and the link's state come from one write; the
    routes find the link up because the kernel takes the messages in order.
    Twice is fine (EEXIST is success, as one at a time)."""
    ns, sock = lab.namespace("c")
    a, _ = veth_pair(lab, ns, sock, "cv0", "cv1", up=False)
    assert not a.up
    for _ in range(2):
        link = netlink.configure_link(sock, a.index, ["10.69.0.2/24", "fd69::2/64"],
                                      [("0.0.0.0/0", "10.69.0.1"), ("10.70.0.0/16", None),
                                       ("::/0", "fd69::1")])
        assert link is not None and link.index == a.index and link.up and link.name == "cv0"
    assert {(x["local"], x["prefixlen"]) for x in addrs(ns, "cv0")} >= {
        ("10.69.0.2", 24), ("fd69::2", 64)}
    v4 = {r["dst"]: r for r in routes(ns, "-4")}
    assert (v4["default"]["gateway"], v4["default"]["dev"]) == ("10.69.0.1", "cv0")
    assert v4["10.70.0.0/16"]["dev"] == "cv0" and "gateway" not in v4["10.70.0.0/16"]
    assert {r["dst"]: r for r in routes(ns, "-6")}["default"]["gateway"] == "fd69::1"
    with pytest.raises(rtnl.NetlinkError) as info:      # no such link: the first refusal
        netlink.configure_link(sock, 0x7FFF0000, ["10.69.1.2/24"], [])
    assert info.value.code == errno.ENODEV


def test_a_refused_request_of_a_batch_leaves_the_others_answered(lab: Lab) -> None:
    """Each request of a batch gets its own answer, in order: a refusal
    (with the kernel's note) does not stop the requests after it."""
    ns, sock = lab.namespace("b")
    a, _ = veth_pair(lab, ns, sock, "bv0", "bv1")
    create = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    outcomes = sock.batch([
        (rtnl.RTM_NEWADDR, rtnl.address_body(a.index, "10.71.0.2", 24), create),
        (rtnl.RTM_NEWLINK, rtnl.link_create("bx", "nosuch"), create),
        (rtnl.RTM_NEWADDR, rtnl.address_body(a.index, "10.71.0.3", 24), create),
        (rtnl.RTM_GETLINK, rtnl.link_get(index=a.index), 0)])
    assert outcomes[0] == [] and outcomes[2] == []
    refused = outcomes[1]
    assert isinstance(refused, rtnl.NetlinkError) and refused.code == errno.EOPNOTSUPP
    got = outcomes[3]
    assert isinstance(got, list) and rtnl.parse_link(got[0]).index == a.index
    assert {x["local"] for x in addrs(ns, "bv0")} >= {"10.71.0.2", "10.71.0.3"}
    # The socket is clean afterwards: the next request gets its own answer.
    assert netlink.get_link_by_index(sock, a.index) is not None
    with pytest.raises(ValueError):
        sock.batch([(rtnl.RTM_GETLINK, rtnl.link_dump(), rtnl.NLM_F_DUMP)])


def test_delete_link(lab: Lab) -> None:
    ns, sock = lab.namespace("d")
    a, b = veth_pair(lab, ns, sock, "dv0", "dv1")
    netlink.delete_link(sock, a.index)
    assert sorted(links(ns)) == ["lo"]                        # a veth goes with its peer
    netlink.delete_link(sock, a.index)                        # missing: fine
    netlink.delete_link(sock, b.index)
    assert netlink.get_link_by_index(sock, a.index) is None


def test_vxlan_device_on_an_underlay_veth(lab: Lab) -> None:
    ns, sock = lab.namespace("x")
    underlay, _ = veth_pair(lab, ns, sock, "ul0", "ul1")
    netlink.add_address(sock, underlay.index, "192.168.77.1/24")
    mac = vxlan.vtep_mac("192.168.77.1")
    sock.create(rtnl.link_create("vx0", "vxlan",
                                 rtnl.vxlan_data(42, 8472, "192.168.77.1", underlay.index),
                                 mtu=1450, mac=mac, up=True))
    seen = links(ns)["vx0"]
    assert seen["linkinfo"]["info_kind"] == "vxlan"
    data = seen["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"], data["link"]) == (42, 8472, "192.168.77.1",
                                                                       "ul0")
    assert data["learning"] is False
    assert (seen["mtu"], seen["address"]) == (1450, mac)
    assert "UP" in seen["flags"]
    link = netlink.get_link(sock, "vx0")
    assert link is not None and link.kind == "vxlan"
    assert vxlan.existing_params(sock, link.index) == vxlan.VxlanParams(
        vni=42, port=8472, local="192.168.77.1", link=underlay.index)


def test_addresses_of_a_point_to_point_link_are_the_local_ones(lab: Lab) -> None:
    ns, sock = lab.namespace("q")
    a, _ = veth_pair(lab, ns, sock, "pv0", "pv1")
    ns.ip("addr", "add", "10.69.0.1", "peer", "10.69.0.2/32", "dev", "pv0")
    [kernel] = [x for x in addrs(ns, "pv0") if x["family"] == "inet"]
    assert (kernel["local"], kernel["address"]) == ("10.69.0.1", "10.69.0.2")
    assert "10.69.0.1/32" in netlink.addresses(sock, a.index)


def neigh_json(ns: Netns, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(ns.ip("-j", "-d", *args).stdout or "[]"))


def fdb_json(ns: Netns, dev: str) -> list[dict[str, Any]]:
    out = subprocess.run(["bridge", "-n", ns.name, "-j", "fdb", "show", "dev", dev], check=True,
                         capture_output=True, text=True).stdout
    return [e for e in json.loads(out or "[]") if e["mac"] != "00:00:00:00:00:00"]


def test_vxlan_device_neighbours_fdb_and_routes(lab: Lab) -> None:
    """skein-agent's overlay entries, written and read back through rtnl only,
    checked against `ip` and `bridge`; replace semantics; its own entries told
    from everyone else's."""
    ns, sock = lab.namespace("v")
    underlay, _ = veth_pair(lab, ns, sock, "ul0", "ul1")
    netlink.add_address(sock, underlay.index, "192.168.77.1/24")
    conf = VxlanConf(vni=42, port=8472, device="vx0", underlay_device="ul0")
    device = vxlan.VxlanDevice.ensure(sock, conf, recreate=True)
    mac, mac6 = "0e:4b:c0:a8:4d:02", "0e:6b:00:00:00:02"
    device.set_neighbour("10.244.1.0", mac)
    device.set_neighbour("fd44:0:0:1::", mac6)
    device.set_fdb(mac, "192.168.77.2")
    device.set_route("10.244.1.0/24", "10.244.1.0")
    device.set_route("fd44:0:0:1::/64", "fd44:0:0:1::")
    # Someone else's entries on the same device and beside it.
    ns.ip("neigh", "add", "10.244.9.0", "lladdr", "0e:00:00:00:00:09", "dev", "vx0")
    ns.ip("neigh", "add", "192.168.77.9", "lladdr", "0e:00:00:00:00:19", "dev", "ul0",
          "proto", "83")
    ns.ip("route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "vx0", "onlink")

    kernel4 = {n["dst"]: n for n in neigh_json(ns, "neigh", "show", "dev", "vx0")}
    assert kernel4["10.244.1.0"]["lladdr"] == mac and "PERMANENT" in kernel4["10.244.1.0"]["state"]
    kernel6 = {n["dst"]: n for n in neigh_json(ns, "-6", "neigh", "show", "dev", "vx0")}
    assert kernel6["fd44:0:0:1::"]["lladdr"] == mac6
    [fdb] = fdb_json(ns, "vx0")
    assert (fdb["mac"], fdb["dst"], fdb["state"]) == (mac, "192.168.77.2", "permanent")
    ours4 = neigh_json(ns, "route", "show", "proto", "83")
    assert [(r["dst"], r["gateway"], r["dev"], r["flags"]) for r in ours4] == [
        ("10.244.1.0/24", "10.244.1.0", "vx0", ["onlink"])]
    ours6 = neigh_json(ns, "-6", "route", "show", "proto", "83")
    assert [(r["dst"], r["gateway"], r["dev"]) for r in ours6] == [
        ("fd44:0:0:1::/64", "fd44:0:0:1::", "vx0")]

    assert sorted((n.address, n.mac) for n in device.neighbours()) == [
        ("10.244.1.0", mac), ("fd44:0:0:1::", mac6)]  # not the unowned, not ul0's
    assert [(f.mac, f.address) for f in device.fdb()] == [(mac, "192.168.77.2")]
    assert sorted((r.dst, r.gateway) for r in device.routes()) == [
        ("10.244.1.0/24", "10.244.1.0"), ("fd44:0:0:1::/64", "fd44:0:0:1::")]

    # Replace: the peer moved to another underlay address, its MAC changed.
    device.set_fdb(mac, "192.168.77.3")
    device.set_neighbour("10.244.1.0", "0e:4b:c0:a8:4d:03")
    device.set_route("10.244.1.0/24", "10.244.1.0")   # again: changes nothing
    assert [(f.mac, f.address) for f in device.fdb()] == [(mac, "192.168.77.3")]
    assert ("10.244.1.0", "0e:4b:c0:a8:4d:03") in {(n.address, n.mac)
                                                   for n in device.neighbours()}
    assert len(neigh_json(ns, "route", "show", "proto", "83")) == 1

    # Delete, route first; what is already gone is fine.
    for _ in range(2):
        device.delete_route("10.244.1.0/24", "10.244.1.0")
        device.delete_route("fd44:0:0:1::/64", "fd44:0:0:1::")
        device.delete_fdb(mac, "192.168.77.3")
        device.delete_neighbour("10.244.1.0")
        device.delete_neighbour("fd44:0:0:1::")
    assert device.routes() == [] and device.fdb() == [] and device.neighbours() == []
    assert [r["dst"] for r in neigh_json(ns, "route", "show", "dev", "vx0")] == ["10.244.9.0/24"]
    assert [n["dst"] for n in neigh_json(ns, "neigh", "show", "dev", "vx0")] == ["10.244.9.0"]


def test_the_node_end_of_a_pod_veth_makes_no_ipv6_address(lab: Lab) -> None:
    """IFLA_INET6_ADDR_GEN_MODE none on the node end, set while the pod end is
    down, so the node end never gets a link-local (no DAD, RS or MLD flooded
    to the bridge's ports); the pod end keeps its IPv6."""
    node, host = lab.namespace("n")
    pod, pod_sock = lab.namespace("p")
    host.create(rtnl.link_create("br0", "bridge", up=True))
    bridge = netlink.get_link(host, "br0")
    assert bridge is not None
    end = veth.create_pair(host, "vethnode0", "eth0", lab.fd(pod), None, bridge, hairpin=True)
    assert end.peer_index is not None
    netlink.configure_link(pod_sock, end.peer_index, ["10.78.0.2/24"], [])
    [node_end] = neigh_json(node, "link", "show", "dev", "vethnode0")
    assert node_end["inet6_addr_gen_mode"] == "none"
    assert bridge_ports(node)["vethnode0"]["hairpin"] is True
    deadline = time.monotonic() + 5
    while not any(a["family"] == "inet6" for a in addrs(pod, "eth0")):
        assert time.monotonic() < deadline, "the pod end never got its link-local address"
        time.sleep(0.05)
    assert "LOWER_UP" in links(node)["vethnode0"]["flags"]
    assert [a for a in addrs(node, "vethnode0") if a["family"] == "inet6"] == []
