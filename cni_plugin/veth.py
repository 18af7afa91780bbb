"""The veth pair between a pod and the bridge.

The pair is created from the node side with the peer placed straight into the
pod's namespace under its final name, so there is never a moment where the
pod end sits in the node namespace under a temporary name.  The node end's
name is derived from container ID and interface name: a retried or half-done
ADD finds (and replaces) its own leftover instead of leaking a new one.

"Its own" is checked, not assumed: a node end of that name whose peer lives
in another network namespace belongs to a running pod (a second ADD for the
same container ID and interface, from a confused runtime or anyone else), and
deleting it would take that pod's eth0 away.  Such an ADD is refused and the
running pod is left alone, as the reference `bridge` does (its node ends have
random names, so it never meets one).  The namespaces are compared by their
ids in the node namespace (RTM_GETNSID), which the kernel assigns on demand.

The node end makes no IPv6 address of its own (IFLA_INET6_ADDR_GEN_MODE =
none): a bridge port needs none, and with one every new pod's node end would
send its link-local DAD, router solicitations and MLD reports, which the
bridge floods to every other port, a cost that grows with the node's pods.
The kernel generates the link-local when the link has a carrier, which a
veth gets once both ends are up: the mode is set right after the pair is made,
while the pod end is still down.  The pod end keeps IPv6 as it is.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from typing import Any

from foundation import netlink
from foundation.cni import spec
from foundation.cni.spec import CniError
from foundation.netlink import Link, NetlinkError, RouteSocket, rtnl

# <linux/rtnetlink.h>, <linux/net_namespace.h>
RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3
_RTGENMSG = struct.Struct("=B3x")


def netns_id(sock: RouteSocket, netns_fd: int) -> int | None:
    """The id of namespace `netns_fd` in `sock`'s namespace (None: it has none)."""
    body = _RTGENMSG.pack(0) + rtnl.attr_u32(NETNSA_FD, netns_fd)
    replies = sock.request(RTM_GETNSID, body)
    if not replies:
        return None
    nsid = rtnl.i32(rtnl.parse_attrs(replies[0], _RTGENMSG.size).get(NETNSA_NSID))
    return None if nsid is None or nsid < 0 else nsid


def peer_elsewhere(host: RouteSocket, index: int, pod_netns_fd: int) -> bool:
    """Whether node-side link `index` is a veth whose peer is in a namespace
    other than `pod_netns_fd`'s: a live attachment that is not this one's."""
    link = netlink.get_link_by_index(host, index)
    if link is None or link.kind != "veth" or link.link_netnsid is None:
        return False  # gone, no veth, or its peer is here: nobody else's pod
    # Asked after the link: reporting the peer's namespace gave that one an id.
    return netns_id(host, pod_netns_fd) != link.link_netnsid


def leftover_index(host: RouteSocket, host_name: str, pod_netns_fd: int | None) -> int | None:
    """For DEL: the node end `host_name` if it may be removed as this
    attachment's, else None (there is none, or its peer lives in a namespace
    other than the request's `pod_netns_fd`: another pod's, after a refused
    duplicate ADD).  Without a namespace (CNI_NETNS empty or gone) the DEL
    speaks for the attachment whatever holds its peer."""
    index = netlink.link_index(host_name)  # this thread is in the host namespace
    if index is None or (pod_netns_fd is not None and peer_elsewhere(host, index, pod_netns_fd)):
        return None
    return index


def create_pair(host: RouteSocket, host_name: str, pod_ifname: str, pod_netns_fd: int,
                mtu: int | None, bridge: Link, hairpin: bool,
                pod_mac: str | None = None) -> Link:
    """The pair, host end already enslaved to the bridge and up (one netlink
    request instead of three: every request is paid per pod)."""
    existing = netlink.link_index(host_name)  # this thread is in the host namespace
    if existing is not None:
        if peer_elsewhere(host, existing, pod_netns_fd):
            raise CniError(spec.ERR_INVALID_ENV,
                           f"this container ID and CNI_IFNAME {pod_ifname} are attached already, "
                           f"to another network namespace (node end {host_name})",
                           "a second ADD of one attachment is refused and the first left "
                           "alone; DEL it first, or use another container ID")
        netlink.delete_link(host, existing)
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
    netlink.configure_port(host, link.index, hairpin)
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
