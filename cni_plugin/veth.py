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
from cni_plugin.sidecall import Pending, SideThread
from cni_plugin.spec import CniError


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:8]}"


def create_pair(host: RouteSocket, host_name: str, pod_ifname: str, pod_netns_fd: int,
                mtu: int | None, bridge: Link, hairpin: bool,
                pod_mac: str | None = None, side: SideThread | None = None) -> PendingPair:
    """Have the kernel make the pair, host end already enslaved to the bridge
    and up (one netlink request instead of three: every request is paid per
    pod).  With `side`, the request is sent from that thread, so this one can
    go on (the lease) while the kernel works; `PendingPair.link` waits."""
    leftover = netlink.link_index(host_name)  # this thread is in the host namespace
    if leftover is not None:
        netlink.delete_link(host, leftover)
    peer = rtnl.veth_peer(pod_ifname, pod_netns_fd, mtu, pod_mac)
    seq, request = host.prepare(rtnl.RTM_NEWLINK, rtnl.link_create(
        host_name, "veth", peer, mtu=mtu, master=bridge.index, up=True), rtnl.CREATE_ECHO)
    if side is None:
        host.send_prepared(request)
        return PendingPair(host, seq, None, host_name, pod_ifname, hairpin)
    return PendingPair(host, seq, side.start(host.send_prepared, request), host_name,
                       pod_ifname, hairpin)


class PendingPair:
    """A veth pair asked of the kernel; `link()` is its host end, made."""

    def __init__(self, host: RouteSocket, seq: int, sent: Pending | None, host_name: str,
                 pod_ifname: str, hairpin: bool) -> None:
        self._host, self._seq, self._sent = host, seq, sent
        self._host_name, self._pod_ifname, self._hairpin = host_name, pod_ifname, hairpin

    def link(self) -> Link:
        if self._sent is not None:
            self._sent.result()  # the send's own failure, if it had one
        try:
            echoed = [rtnl.parse_link(p) for p in self._host.answer(self._seq)]
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise CniError(spec.ERR_INVALID_ENV,
                               f"interface {self._pod_ifname} already exists in the container",
                               "CNI_IFNAME must name an interface that does not exist yet"
                               ) from None
            raise
        # The echo saves a lookup (index, MAC, peer index are all the result needs).
        link = next((made for made in map(netlink.link_from_message, echoed)
                     if made.name == self._host_name), None) or netlink.get_link(
                         self._host, self._host_name)
        if link is None:
            raise CniError(spec.ERR_KERNEL, f"veth {self._host_name} vanished right after creation")
        if self._hairpin:
            netlink.set_hairpin(self._host, link.index)
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
