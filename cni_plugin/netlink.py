"""Thin wrappers over pyroute2 for what the datapath needs.

Every function takes an open `IPRoute` socket, so the caller decides which
namespace it works in (a socket stays in the namespace it was opened in).
Adding what already exists is success: ADD is idempotent and parallel ADDs
race to create the same bridge.  pyroute2 is imported here and nowhere on the
plugin's VERSION path, because importing it costs ~150 ms.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
AF_INET = 2
AF_INET6 = 10

__all__ = ["IPRoute", "NetlinkError", "Link", "open_route_socket"]


def open_route_socket() -> IPRoute:
    return IPRoute()


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    kind: str
    master: int | None
    up: bool
    promisc: bool
    link_netnsid: int | None = None
    peer_index: int | None = None


def _link_from_msg(msg: Any) -> Link:
    info = msg.get("IFLA_LINKINFO")
    kind = (info.get("IFLA_INFO_KIND") if info is not None else None) or ""
    return Link(
        index=msg["index"],
        name=msg.get("IFLA_IFNAME"),
        mac=msg.get("IFLA_ADDRESS") or "",
        mtu=msg.get("IFLA_MTU") or 0,
        kind=kind,
        master=msg.get("IFLA_MASTER"),
        up=bool(msg["flags"] & IFF_UP),
        promisc=bool(msg["flags"] & IFF_PROMISC),
        link_netnsid=msg.get("IFLA_LINK_NETNSID"),
        peer_index=msg.get("IFLA_LINK"),
    )


def link_index(name: str) -> int | None:
    """The ifindex of `name` in the calling thread's namespace, or None.  An
    ioctl, ~100x cheaper than a netlink dump that pyroute2 decodes in full:
    the existence checks of every ADD use it."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


IFNAMSIZ = 16


def get_link(ipr: IPRoute, name: str) -> Link | None:
    """The link called `name` in `ipr`'s namespace, or None.  One RTM_GETLINK
    by IFLA_IFNAME: `get_links(ifname=...)` would dump every link and decode
    each (~0.2 ms apiece) to filter in Python, so an ADD on a node with 100
    pods paid ~25 ms here."""
    if not name or len(name.encode()) >= IFNAMSIZ:
        return None  # no link can have that name (and the kernel refuses to look)
    try:
        msgs = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    # The kernel also resolves alternative names (`ip link property add altname`);
    # the dump matched the name proper only, and so does this.
    links = [_link_from_msg(m) for m in msgs]
    return next((link for link in links if link.name == name), None)


def get_link_by_index(ipr: IPRoute, index: int) -> Link | None:
    try:
        msgs = ipr.get_links(index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return _link_from_msg(msgs[0]) if msgs else None


def list_links(ipr: IPRoute) -> list[Link]:
    return [_link_from_msg(m) for m in ipr.get_links()]


def delete_link(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def set_up(ipr: IPRoute, index: int) -> None:
    ipr.link("set", index=index, state="up")


def set_mtu(ipr: IPRoute, index: int, mtu: int) -> None:
    ipr.link("set", index=index, mtu=mtu)


def set_promisc(ipr: IPRoute, index: int, on: bool = True) -> None:
    ipr.link("set", index=index, flags=IFF_PROMISC if on else 0, mask=IFF_PROMISC)


def set_hairpin(ipr: IPRoute, index: int, on: bool = True) -> None:
    ipr.brport("set", index=index, mode=1 if on else 0)  # IFLA_BRPORT_MODE is hairpin


def addresses(ipr: IPRoute, index: int) -> list[str]:
    """Global and link-local addresses as 'addr/len' strings."""
    return [f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}" for m in ipr.get_addr(index=index)]


def add_address(ipr: IPRoute, index: int, cidr: str) -> None:
    """Add `cidr` to the link; already present is fine.  IPv6 skips DAD: the
    address comes from IPAM, and a tentative address would break the first
    packets of a pod that starts at once."""
    iface = ipaddress.ip_interface(cidr)
    kwargs: dict[str, Any] = {"index": index, "address": str(iface.ip),
                              "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        kwargs["flags"] = IFA_F_NODAD
    try:
        ipr.addr("add", **kwargs)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def delete_address(ipr: IPRoute, index: int, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    try:
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except NetlinkError as exc:
        if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
            raise


def add_route(ipr: IPRoute, dst: str, gateway: str | None, oif: int) -> None:
    """Add a route; one that already exists is fine."""
    net = ipaddress.ip_network(dst, strict=False)
    kwargs: dict[str, Any] = {"dst": str(net), "oif": oif,
                              "family": AF_INET if net.version == 4 else AF_INET6}
    if gateway:
        kwargs["gateway"] = gateway
    try:
        ipr.route("add", **kwargs)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


@dataclass(frozen=True)
class Route:
    dst: str
    gateway: str | None
    oif: int | None


def list_routes(ipr: IPRoute, family: int) -> list[Route]:
    out = []
    for msg in ipr.route("dump", family=family):
        if msg.get("RTA_TABLE") != 254:  # main table only
            continue
        dst = msg.get("RTA_DST")
        length = msg["dst_len"]
        if dst is None:
            dst = "0.0.0.0" if family == AF_INET else "::"
        out.append(Route(dst=f"{dst}/{length}", gateway=msg.get("RTA_GATEWAY"),
                         oif=msg.get("RTA_OIF")))
    return out
