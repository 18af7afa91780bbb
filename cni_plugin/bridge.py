"""The node's pod bridge (`cni0` by default) and the gateway address on it.

Several ADDs may run at once on a fresh node and all try to create the
bridge; whoever loses the race simply uses the winner's.  The bridge's MAC is
pinned when it is created: otherwise Linux re-derives it from the lowest port
MAC whenever a pod comes or goes, and every pod's ARP entry for its gateway
goes stale.
"""

from __future__ import annotations

import errno
import ipaddress

from foundation import netlink
from foundation.cni import spec
from foundation.cni.spec import CniError
from foundation.netlink import Link, NetlinkError, RouteSocket, rtnl

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def ensure_bridge(ipr: RouteSocket, name: str, mtu: int | None, promisc: bool) -> Link:
    link = netlink.get_link(ipr, name)
    if link is None:
        try:
            ipr.create(rtnl.link_create(name, "bridge", mtu=mtu))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        link = netlink.get_link(ipr, name)
        if link is None:
            raise CniError(spec.ERR_KERNEL, f"bridge {name} vanished right after creation")
        if link.kind == "bridge":
            # Pin the MAC (addr_assign_type becomes "set"), see the module doc.
            netlink.set_mac(ipr, link.index, link.mac)
    if link.kind != "bridge":
        raise CniError(spec.ERR_INVALID_CONFIG,
                       f"invalid network config: bridge: {name} exists and is a "
                       f"{link.kind or 'plain'} device, not a bridge",
                       'name another bridge in "bridge", or remove the device')
    changed = False
    if mtu and link.mtu != mtu:
        netlink.set_mtu(ipr, link.index, mtu)
        changed = True
    if promisc and not link.promisc:
        netlink.set_promisc(ipr, link.index)
        changed = True
    if not link.up:
        netlink.set_up(ipr, link.index)
        changed = True
    return (netlink.get_link_by_index(ipr, link.index) or link) if changed else link


def ensure_gateway_address(ipr: RouteSocket, bridge: Link, gateway: Interface,
                           force_address: bool) -> None:
    """Put `gateway` on the bridge.  Another address of the same subnet already
    there is an error unless `forceAddress`, as in the reference plugin."""
    for existing in netlink.addresses(ipr, bridge.index):
        current = ipaddress.ip_interface(existing)
        if current.version != gateway.version or current.ip.is_link_local:
            continue
        if current == gateway:
            return
        if current.ip in gateway.network or gateway.ip in current.network:
            if not force_address:
                raise CniError(spec.ERR_INVALID_CONFIG,
                               f"bridge {bridge.name} already has address {current}, "
                               f"not the gateway {gateway}",
                               'set "forceAddress": true to replace it, or fix the IPAM gateway')
            netlink.delete_address(ipr, bridge.index, str(current))
    netlink.add_address(ipr, bridge.index, str(gateway))


def enable_forwarding(version: int) -> None:
    """Routing between pods and the rest of the world needs forwarding in this
    (the node's) namespace; /proc/sys/net follows the calling thread's netns."""
    path = ("/proc/sys/net/ipv4/ip_forward" if version == 4
            else "/proc/sys/net/ipv6/conf/all/forwarding")
    try:
        # Read first: in a container /proc/sys is read-only, and a node whose
        # forwarding is already on must not fail for it.
        with open(path, encoding="ascii") as knob:
            if knob.read().strip() == "1":
                return
        with open(path, "w", encoding="ascii") as knob:
            knob.write("1")
    except OSError as exc:
        raise CniError(spec.ERR_IO, f"cannot enable forwarding ({path}): {exc}",
                       "turn forwarding on for the node (sysctl -w net.ipv4.ip_forward=1; "
                       "the skein-node DaemonSet does it at start)") from None
