"""The node's VXLAN device (`skein.1` by default), as flannel's vxlan backend.

One device per node, learning off: the node agent programs, for every peer,
a permanent neighbour entry (the peer's VTEP address -> its VTEP MAC) and an
FDB entry (VTEP MAC -> the peer's underlay IP).  The VTEP MAC is derived from
the node's underlay IPv4 address, so a node never needs to publish it and a
device recreated after a reboot keeps the MAC its peers already know.

The device's MTU is the underlay's minus 50 bytes of VXLAN/UDP/IPv4/Ethernet
encapsulation; the bridge and pod veths inherit it when the config sets none.
Both the agent and (if the device is missing at ADD time) the plugin create
it with the same parameters; the loser of a creation race uses the winner's.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass

from cni_plugin import netlink, spec
from cni_plugin.config import VxlanConf
from cni_plugin.netlink import IPRoute, Link, NetlinkError
from cni_plugin.spec import CniError

VXLAN_OVERHEAD = 50
_LINK_KEYS = ("IFLA_VXLAN_ID", "IFLA_VXLAN_PORT", "IFLA_VXLAN_LOCAL", "IFLA_VXLAN_LINK")


def vtep_mac(underlay_ip: str) -> str:
    """The MAC every peer derives from this node's address (one definition,
    shared with the Node model the agent reads peers from)."""
    from speaker.model.node import vtep_mac_for_ip

    return vtep_mac_for_ip(underlay_ip)


@dataclass(frozen=True)
class Underlay:
    link: Link
    address: str


def find_underlay(ipr: IPRoute, device: str | None = None) -> Underlay:
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


def _first_ipv4(ipr: IPRoute, link: Link, name: str) -> str:
    for cidr in netlink.addresses(ipr, link.index):
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4:
            return str(iface.ip)
    raise CniError(spec.ERR_INVALID_CONFIG, f"underlay device {name} has no IPv4 address",
                   "VXLAN needs the node's IPv4 address on its uplink")


def existing_params(ipr: IPRoute, index: int) -> dict[str, object]:
    msg = ipr.get_links(index)[0]
    info = msg.get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return {}
    return {key: data.get(key) for key in _LINK_KEYS}


def matches(ipr: IPRoute, link: Link, conf: VxlanConf, underlay: Underlay) -> bool:
    params = existing_params(ipr, link.index)
    return (params.get("IFLA_VXLAN_ID") == conf.vni and params.get("IFLA_VXLAN_PORT") == conf.port
            and params.get("IFLA_VXLAN_LOCAL") == underlay.address
            and params.get("IFLA_VXLAN_LINK") == underlay.link.index)


def create(ipr: IPRoute, conf: VxlanConf, underlay: Underlay) -> None:
    try:
        ipr.link("add", ifname=conf.device, kind="vxlan", vxlan_id=conf.vni,
                 vxlan_port=conf.port, vxlan_local=underlay.address,
                 vxlan_link=underlay.link.index, vxlan_learning=0,
                 address=vtep_mac(underlay.address),
                 mtu=underlay.link.mtu - VXLAN_OVERHEAD)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def ensure_device(ipr: IPRoute, conf: VxlanConf, recreate: bool = False) -> Link:
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
