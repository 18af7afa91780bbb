"""The node's VXLAN device (`skein.1` by default), as flannel's vxlan backend.

One device per node, learning off: the node agent programs, for every peer,
a permanent neighbour entry (the peer's VTEP address -> its VTEP MAC), an
FDB entry (VTEP MAC -> the peer's underlay IP) and a route to the peer's pod
subnet.  `VxlanDevice` is that device and those entries as one object over
one netlink socket (foundation/netlink), as flannel's `vxlanDevice` is over
one netlink library.  The VTEP MAC is derived from
the node's underlay IPv4 address, so a node never needs to publish it and a
device recreated after a reboot keeps the MAC its peers already know.

The device's MTU is the underlay's minus 50 bytes of VXLAN/UDP/IPv4/Ethernet
encapsulation; the bridge and pod veths inherit it when the config sets none.
Both the agent and (if the device is missing at ADD time) the plugin create
it with the same parameters; the loser of a creation race uses the winner's.

The agent owns the device: it makes sure of it at start and on every resync,
so an ADD it serves does not verify it from scratch (underlay route and
address, the device's parameters: four netlink round trips).  `KnownDevice`
holds the device the agent last made sure of, and an ADD only checks that the
name still has that ifindex (an ioctl); a device that is gone, or was
replaced, goes through `ensure_device` again.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass

from cni_plugin.config import VxlanConf
from foundation import netlink
from foundation.cni import spec
from foundation.cni.spec import CniError
from foundation.netlink import RTPROT_SKEIN, Link, Neighbour, NetlinkError, Route, RouteSocket, rtnl
from foundation.netlink.mac import vtep_mac_for_ip

VXLAN_OVERHEAD = 50


def vtep_mac(underlay_ip: str) -> str:
    """The MAC every peer derives from this node's address (the Node model the
    agent reads peers from derives it the same way)."""
    return vtep_mac_for_ip(underlay_ip)


@dataclass(frozen=True)
class Underlay:
    link: Link
    address: str


def find_underlay(ipr: RouteSocket, device: str | None = None) -> Underlay:
    """The device that carries the node's address: the named one, else the one
    with the default route, else the only one with a global IPv4 address."""
    if device:
        link = netlink.get_link(ipr, device)
        if link is None:
            raise CniError(spec.ERR_INVALID_CONFIG,
                           f"invalid network config: vxlan.underlayDevice: {device} not found",
                           "name the node's uplink interface, or leave the field out")
        return Underlay(link, _first_ipv4(ipr, link, device))
    for route in netlink.list_routes(ipr, netlink.AF_INET):
        if route.dst == "0.0.0.0/0" and route.oif:
            link = netlink.get_link_by_index(ipr, route.oif)
            if link is not None:
                return Underlay(link, _first_ipv4(ipr, link, link.name))
    candidates = []
    for link in netlink.list_links(ipr):
        for cidr in netlink.addresses(ipr, link.index):
            iface = ipaddress.ip_interface(cidr)
            # Pod-facing devices (bridge, vxlan) hold gateway addresses, not the node's.
            if (iface.version == 4 and not iface.ip.is_loopback and not iface.ip.is_link_local
                    and link.kind not in ("bridge", "vxlan")):
                candidates.append(Underlay(link, str(iface.ip)))
    if len(candidates) == 1:
        return candidates[0]
    raise CniError(spec.ERR_INVALID_CONFIG,
                   "cannot tell which device carries the node's address for VXLAN",
                   'set "vxlan": {"underlayDevice": "eth0"} (found '
                   f"{len(candidates)} candidates and no default route)")


def _first_ipv4(ipr: RouteSocket, link: Link, name: str) -> str:
    for cidr in netlink.addresses(ipr, link.index):
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4:
            return str(iface.ip)
    raise CniError(spec.ERR_INVALID_CONFIG, f"underlay device {name} has no IPv4 address",
                   "VXLAN needs the node's IPv4 address on its uplink")


@dataclass(frozen=True)
class VxlanParams:
    vni: int | None
    port: int | None
    local: str | None
    link: int | None


def existing_params(ipr: RouteSocket, index: int) -> VxlanParams:
    msg = ipr.link(index=index)
    data = msg.info_data if msg is not None else {}
    port = data.get(rtnl.IFLA_VXLAN_PORT)
    return VxlanParams(vni=rtnl.u32(data.get(rtnl.IFLA_VXLAN_ID)),
                       port=int.from_bytes(port, "big") if port else None,
                       local=rtnl.ip_text(data.get(rtnl.IFLA_VXLAN_LOCAL)),
                       link=rtnl.u32(data.get(rtnl.IFLA_VXLAN_LINK)))


def matches(ipr: RouteSocket, link: Link, conf: VxlanConf, underlay: Underlay) -> bool:
    return existing_params(ipr, link.index) == VxlanParams(conf.vni, conf.port, underlay.address,
                                                           underlay.link.index)


def create(ipr: RouteSocket, conf: VxlanConf, underlay: Underlay) -> None:
    data = rtnl.vxlan_data(conf.vni, conf.port, underlay.address, underlay.link.index)
    try:
        ipr.create(rtnl.link_create(conf.device, "vxlan", data,
                                    mtu=underlay.link.mtu - VXLAN_OVERHEAD,
                                    mac=vtep_mac(underlay.address)))
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def ensure_device(ipr: RouteSocket, conf: VxlanConf, recreate: bool = False) -> Link:
    """The VXLAN device, created if missing.  A device of that name with other
    parameters is replaced when `recreate` (the agent) and an error otherwise
    (the plugin must not cut every pod of the node off in the middle of an ADD)."""
    underlay = find_underlay(ipr, conf.underlay_device)
    link = netlink.get_link(ipr, conf.device)
    if link is not None and (link.kind != "vxlan" or not matches(ipr, link, conf, underlay)):
        if not recreate:
            raise CniError(spec.ERR_INVALID_CONFIG,
                           f"device {conf.device} exists with other parameters than "
                           f"vni {conf.vni}, port {conf.port}, local {underlay.address}",
                           "let skein-agent recreate it, or fix the vxlan section")
        netlink.delete_link(ipr, link.index)
        link = None
    if link is None:
        create(ipr, conf, underlay)
        link = netlink.get_link(ipr, conf.device)
        if link is None:
            raise CniError(spec.ERR_KERNEL, f"{conf.device} vanished right after creation")
    if not link.up:
        netlink.set_up(ipr, link.index)
    return link


class VxlanDevice:
    """The node's VXLAN device and what tunnels through it to each peer, over
    one netlink socket (flannel's `vxlanDevice`): the device made sure of
    (`ensure`), the neighbour, FDB and route entries the agent programs, read
    back and written.  Routes and neighbour entries carry RTPROT_SKEIN, which
    tells them from everyone else's; an FDB entry cannot carry a protocol
    (cni_plugin/agent/plan.py says which ones are the agent's)."""

    def __init__(self, sock: RouteSocket, link: Link) -> None:
        self.sock = sock
        self.link = link

    @classmethod
    def ensure(cls, sock: RouteSocket, conf: VxlanConf, recreate: bool = False) -> VxlanDevice:
        """The device of `conf` in `sock`'s namespace (see `ensure_device`)."""
        return cls(sock, ensure_device(sock, conf, recreate))

    @property
    def index(self) -> int:
        return self.link.index

    @property
    def mtu(self) -> int:
        return self.link.mtu

    def add_address(self, cidr: str) -> None:
        netlink.add_address(self.sock, self.index, cidr)

    def neighbours(self) -> list[Neighbour]:
        """The agent's neighbour entries on the device, both families."""
        return [n for family in (netlink.AF_INET, netlink.AF_INET6)
                for n in netlink.neighbours(self.sock, self.index, family)
                if n.protocol == RTPROT_SKEIN]

    def fdb(self) -> list[Neighbour]:
        """Every remote of the device: (MAC, underlay address)."""
        return netlink.fdb_entries(self.sock, self.index)

    def routes(self) -> list[Route]:
        """The agent's routes (main table), both families."""
        return [r for family in (netlink.AF_INET, netlink.AF_INET6)
                for r in netlink.list_routes(self.sock, family) if r.protocol == RTPROT_SKEIN]

    def set_neighbour(self, address: str, mac: str) -> None:
        netlink.replace_neighbour(self.sock, self.index, address, mac, RTPROT_SKEIN)

    def delete_neighbour(self, address: str) -> None:
        netlink.delete_neighbour(self.sock, self.index, address)

    def set_fdb(self, mac: str, remote: str) -> None:
        netlink.replace_fdb(self.sock, self.index, mac, remote)

    def delete_fdb(self, mac: str, remote: str) -> None:
        netlink.delete_fdb(self.sock, self.index, mac, remote)

    def set_route(self, dst: str, via: str) -> None:
        """`dst` via the peer's VTEP address `via`, on the device (onlink: no
        address of the device covers `via`)."""
        netlink.replace_route(self.sock, dst, via, self.index, RTPROT_SKEIN, onlink=True)

    def delete_route(self, dst: str, via: str) -> None:
        netlink.delete_route(self.sock, dst, via, self.index, RTPROT_SKEIN)


class KnownDevice:
    """The VXLAN device as the agent last made sure of it, per configuration
    (a cached fact, checked cheaply: see the module doc).  The agent's fast
    path workers share one; each of its operations is a single dict operation,
    atomic, so it needs no lock."""

    def __init__(self) -> None:
        self._links: dict[VxlanConf, Link] = {}

    def remember(self, conf: VxlanConf, link: Link) -> None:
        self._links[conf] = link

    def forget(self) -> None:
        self._links.clear()

    def device(self, ipr: RouteSocket, conf: VxlanConf) -> Link:
        """The device for `conf`: the known one while its name still has the
        same ifindex in this thread's namespace, else `ensure_device`'s."""
        known = self._links.get(conf)
        if known is not None and netlink.link_index(conf.device) == known.index:
            return known
        link = ensure_device(ipr, conf)
        self.remember(conf, link)
        return link
