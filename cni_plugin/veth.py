"""The veth pair between a pod and the bridge.

The pair is created from the node side with the peer placed straight into the
pod's namespace under its final name, so there is never a moment where the
pod end sits in the node namespace under a temporary name.  The node end's
name is derived from container ID and interface name: a retried or half-done
ADD finds (and replaces) its own leftover instead of leaking a new one.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
from typing import Any

from cni_plugin import netlink, rtnl, spec
from cni_plugin.netlink import Link, NetlinkError, RouteSocket
from cni_plugin.spec import CniError


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:8]}"


def create_pair(host: RouteSocket, host_name: str, pod_ifname: str, pod_netns_fd: int,
                mtu: int | None, bridge: Link, hairpin: bool,
                pod_mac: str | None = None) -> Link:
    """The pair, host end already enslaved to the bridge and up (one netlink
    request instead of three: every request is paid per pod)."""
    leftover = netlink.link_index(host_name)  # this thread is in the host namespace
    if leftover is not None:
        netlink.delete_link(host, leftover)
    peer = rtnl.veth_peer(pod_ifname, pod_netns_fd, mtu, pod_mac)
    try:
        echoed = host.create(rtnl.link_create(host_name, "veth", peer, mtu=mtu,
                                              master=bridge.index, up=True), echo=True)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            raise CniError(spec.ERR_INVALID_ENV,
                           f"interface {pod_ifname} already exists in the container",
                           "CNI_IFNAME must name an interface that does not exist yet") from None
        raise
    # The echo saves a lookup (index, MAC, peer index are all the result needs).
    link = next((made for made in map(netlink.link_from_message, echoed)
                 if made.name == host_name), None) or netlink.get_link(host, host_name)
    if link is None:
        raise CniError(spec.ERR_KERNEL, f"veth {host_name} vanished right after creation")
    if hairpin:
        netlink.set_hairpin(host, link.index)
    return link


def configure_pod_side(pod: RouteSocket, host_veth: Link, ips: list[dict[str, Any]],
                       routes: list[dict[str, Any]]) -> Link:
    """Addresses, link up, then routes (a route needs its link up), in one
    round trip (netlink.configure_link).  The pod end is found by the host
    end's peer index (IFLA_LINK), not by a lookup."""
    index = host_veth.peer_index
    if index is None:
        raise CniError(spec.ERR_KERNEL, f"{host_veth.name} does not name its peer")
    gateways = {ipaddress.ip_interface(ip["address"]).version: ip.get("gateway")
                for ip in ips if ip.get("gateway")}
    via = [(route["dst"], route.get("gw") or
            gateways.get(ipaddress.ip_network(route["dst"], strict=False).version))
           for route in routes]
    link = netlink.configure_link(pod, index, [ip["address"] for ip in ips], via)
    if link is None:
        raise CniError(spec.ERR_KERNEL, "the pod end of the veth vanished during ADD")
    return link
