"""The datapath's netlink operations, over foundation/netlink/rtnl.py's socket.

Every function takes an open `RouteSocket`, so the caller decides which
namespace it works in (a socket stays in the namespace it was opened in).
Adding what already exists is success: ADD is idempotent and parallel ADDs
race to create the same bridge; deleting what is gone is success too.
Entries that a daemon owns (skein-agent's neighbour, FDB and route entries)
are written with replace semantics, so writing them again changes nothing.
Nothing here imports pyroute2 (see rtnl.py for why): the plugin's and the
agent's whole netlink path is the standard library.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from foundation.cni.names import is_ifname
from foundation.netlink import mac, rtnl
from foundation.netlink.rtnl import AF_INET, AF_INET6, NetlinkError, RouteSocket

IFF_PROMISC = 0x100
# The routing protocol number of what skein-agent installs (routes, neighbour
# entries): its own entries are told apart from everyone else's by it, and
# `skeinctl status` shows them.
RTPROT_SKEIN = 83
IFA_F_NODAD = 0x02
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)

__all__ = ["AF_INET", "AF_INET6", "NetlinkError", "RouteSocket", "Link", "Neighbour", "Route",
           "RTPROT_SKEIN", "open_route_socket"]


def open_route_socket() -> RouteSocket:
    return RouteSocket()


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


def link_from_message(msg: rtnl.LinkMessage) -> Link:
    attrs = msg.attrs
    return Link(
        index=msg.index,
        name=rtnl.string(attrs.get(rtnl.IFLA_IFNAME)) or "",
        mac=mac.mac_text(attrs.get(rtnl.IFLA_ADDRESS)),
        mtu=rtnl.u32(attrs.get(rtnl.IFLA_MTU)) or 0,
        kind=msg.kind,
        master=rtnl.u32(attrs.get(rtnl.IFLA_MASTER)),
        up=bool(msg.flags & rtnl.IFF_UP),
        promisc=bool(msg.flags & IFF_PROMISC),
        link_netnsid=rtnl.i32(attrs.get(rtnl.IFLA_LINK_NETNSID)),
        peer_index=rtnl.u32(attrs.get(rtnl.IFLA_LINK)),
    )


def link_index(name: str) -> int | None:
    """The ifindex of `name` in the calling thread's namespace, or None.  An
    ioctl, cheaper than any netlink round trip: the existence checks of every
    ADD use it."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def get_link(sock: RouteSocket, name: str) -> Link | None:
    """The link called `name` in `sock`'s namespace, or None (one RTM_GETLINK
    by name, never a dump)."""
    if not is_ifname(name):
        return None  # no link can have that name (and the kernel refuses to look)
    msg = sock.link(name=name)
    if msg is None:
        return None
    link = link_from_message(msg)
    # The kernel also resolves alternative names (`ip link property add altname`);
    # only the name proper counts.
    return link if link.name == name else None


def get_link_by_index(sock: RouteSocket, index: int) -> Link | None:
    msg = sock.link(index=index)
    return link_from_message(msg) if msg is not None else None


def list_links(sock: RouteSocket) -> list[Link]:
    return [link_from_message(m) for m in sock.links()]


def delete_link(sock: RouteSocket, index: int) -> None:
    try:
        sock.delete(index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def set_up(sock: RouteSocket, index: int) -> None:
    sock.set(rtnl.link_set(index, up=True))


def set_mtu(sock: RouteSocket, index: int, mtu: int) -> None:
    sock.set(rtnl.link_set(index, mtu=mtu))


def set_mac(sock: RouteSocket, index: int, mac: str) -> None:
    sock.set(rtnl.link_set(index, mac=mac))


def set_promisc(sock: RouteSocket, index: int, on: bool = True) -> None:
    sock.set(rtnl.link_set(index, promisc=on))


def set_hairpin(sock: RouteSocket, index: int, on: bool = True) -> None:
    sock.set(rtnl.brport_hairpin(index, on))


def configure_port(sock: RouteSocket, index: int, hairpin: bool) -> None:
    """A new bridge port, before it has a carrier: no IPv6 address generation
    of its own (rtnl.addr_gen_mode_none), and hairpin mode when asked, in one
    round trip.  A kernel without IPv6 has nothing to turn off."""
    requests = [(rtnl.RTM_SETLINK, rtnl.addr_gen_mode_none(index), 0)]
    if hairpin:
        requests.append((rtnl.RTM_SETLINK, rtnl.brport_hairpin(index, True), 0))
    addr_gen, *rest = sock.batch(requests)
    if isinstance(addr_gen, NetlinkError) and addr_gen.code not in (errno.EAFNOSUPPORT,
                                                                    errno.EOPNOTSUPP):
        raise addr_gen
    for outcome in rest:
        if isinstance(outcome, NetlinkError):
            raise outcome


def addresses(sock: RouteSocket, index: int) -> list[str]:
    """Global and link-local addresses of the link as 'addr/len' strings."""
    return [f"{a.address}/{a.prefixlen}" for a in sock.addresses()
            if a.index == index and a.address]


def _address_body(index: int, cidr: str) -> bytes:
    iface = ipaddress.ip_interface(cidr)
    # IPv6 skips DAD: the address comes from IPAM, and a tentative address
    # would break the first packets of a pod that starts at once.
    flags = IFA_F_NODAD if iface.version == 6 else 0
    return rtnl.address_body(index, str(iface.ip), iface.network.prefixlen, flags)


def add_address(sock: RouteSocket, index: int, cidr: str) -> None:
    """Add `cidr` to the link; already present is fine."""
    try:
        sock.add_address(_address_body(index, cidr))
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def delete_address(sock: RouteSocket, index: int, cidr: str) -> None:
    try:
        sock.delete_address(_address_body(index, cidr))
    except NetlinkError as exc:
        if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
            raise


def _route_body(dst: str, gateway: str | None, oif: int) -> bytes:
    net = ipaddress.ip_network(dst, strict=False)  # host bits dropped, as `ip route` does
    return rtnl.route_body(str(net.network_address), net.prefixlen, gateway, oif)


def add_route(sock: RouteSocket, dst: str, gateway: str | None, oif: int) -> None:
    """Add a main-table route; one that already exists is fine."""
    try:
        sock.add_route(_route_body(dst, gateway, oif))
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def configure_link(sock: RouteSocket, index: int, cidrs: list[str],
                   routes: list[tuple[str, str | None]]) -> Link | None:
    """Give the link its addresses, bring it up, add the routes (dst, gateway)
    through it, and return it as it then is (None if it is gone): all in one
    write and one round trip instead of one per request.
    The kernel handles them in this order, so the routes find the link up.
    An address or route already there is fine, as in `add_address`."""
    create = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    requests = [(rtnl.RTM_NEWADDR, _address_body(index, cidr), create) for cidr in cidrs]
    requests.append((rtnl.RTM_SETLINK, rtnl.link_set(index, up=True), 0))
    requests += [(rtnl.RTM_NEWROUTE, _route_body(dst, gateway, index), create)
                 for dst, gateway in routes]
    requests.append((rtnl.RTM_GETLINK, rtnl.link_get(index=index), 0))
    outcomes = sock.batch(requests)
    for (kind, _, _), outcome in zip(requests, outcomes, strict=True):
        if not isinstance(outcome, NetlinkError):
            continue
        if kind in (rtnl.RTM_NEWADDR, rtnl.RTM_NEWROUTE) and outcome.code == errno.EEXIST:
            continue
        if kind == rtnl.RTM_GETLINK and outcome.code == errno.ENODEV:
            return None
        raise outcome
    found = outcomes[-1]
    assert not isinstance(found, NetlinkError)
    return link_from_message(rtnl.parse_link(found[0])) if found else None


@dataclass(frozen=True)
class Route:
    dst: str
    gateway: str | None
    oif: int | None
    protocol: int = 0


def list_routes(sock: RouteSocket, family: int) -> list[Route]:
    """The main table's routes of `family`."""
    out = []
    for msg in sock.routes(family):
        if msg.table != rtnl.RT_TABLE_MAIN or msg.family != family:
            continue
        dst = msg.dst or ("0.0.0.0" if family == AF_INET else "::")
        out.append(Route(dst=f"{dst}/{msg.dst_len}", gateway=msg.gateway, oif=msg.oif,
                         protocol=msg.protocol))
    return out


def _gateway_route(dst: str, gateway: str, oif: int, protocol: int, *,
                   onlink: bool = False, delete: bool = False) -> bytes:
    net = ipaddress.ip_network(dst, strict=False)
    return rtnl.route_body(str(net.network_address), net.prefixlen, gateway, oif,
                           protocol=protocol, flags=rtnl.RTNH_F_ONLINK if onlink else 0,
                           delete=delete)


def replace_route(sock: RouteSocket, dst: str, gateway: str, oif: int, protocol: int,
                  onlink: bool = False) -> None:
    """The main-table route to `dst` via `gateway` on `oif`, installed by
    `protocol`: added, or put in place of the route to `dst` there is."""
    sock.replace_route(_gateway_route(dst, gateway, oif, protocol, onlink=onlink))


def delete_route(sock: RouteSocket, dst: str, gateway: str, oif: int, protocol: int) -> None:
    """Remove that route, if it is there (and was installed by `protocol`)."""
    try:
        sock.delete_route(_gateway_route(dst, gateway, oif, protocol, delete=True))
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise


@dataclass(frozen=True)
class Neighbour:
    """A neighbour entry (address -> MAC) or a VXLAN FDB entry (MAC -> the
    remote's address), as the link holds it; `protocol` is who installed it."""

    address: str
    mac: str
    protocol: int | None = None


def neighbours(sock: RouteSocket, index: int, family: int) -> list[Neighbour]:
    """The neighbour entries of link `index` in `family` (AF_INET, AF_INET6)."""
    return [Neighbour(m.dst, mac.mac_text(m.lladdr), m.protocol)
            for m in sock.neighbours(family, index) if m.dst and m.lladdr]


def replace_neighbour(sock: RouteSocket, index: int, address: str, lladdr: str,
                      protocol: int) -> None:
    """A permanent neighbour entry `address` -> `lladdr` on link `index`."""
    sock.replace_neighbour(rtnl.neigh_body(rtnl.family_of(address), index, lladdr, address,
                                           state=rtnl.NUD_PERMANENT, protocol=protocol))


def delete_neighbour(sock: RouteSocket, index: int, address: str) -> None:
    try:
        sock.delete_neighbour(rtnl.neigh_body(rtnl.family_of(address), index, dst=address))
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise


def fdb_entries(sock: RouteSocket, index: int) -> list[Neighbour]:
    """The remotes of VXLAN device `index`: (MAC, the remote's address), the
    all-zeros default entry left out."""
    return [Neighbour(m.dst, mac.mac_text(m.lladdr))
            for m in sock.neighbours(rtnl.AF_BRIDGE, index)
            if m.dst and m.lladdr and any(m.lladdr)]


def replace_fdb(sock: RouteSocket, index: int, lladdr: str, remote: str) -> None:
    """The VXLAN device's own FDB entry: frames to `lladdr` go to `remote`."""
    sock.replace_neighbour(rtnl.neigh_body(rtnl.AF_BRIDGE, index, lladdr, remote,
                                           state=rtnl.NUD_PERMANENT | rtnl.NUD_NOARP,
                                           flags=rtnl.NTF_SELF))


def delete_fdb(sock: RouteSocket, index: int, lladdr: str, remote: str) -> None:
    try:
        sock.delete_neighbour(rtnl.neigh_body(rtnl.AF_BRIDGE, index, lladdr, remote,
                                              flags=rtnl.NTF_SELF))
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise
