"""CHECK: does the kernel still hold what ADD reported (the prevResult)?

Every mismatch is reported with what was expected and what was found, so an
operator can see at once whether an address, a route or a link went missing.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from cni_plugin.config import NetConf
from foundation import netlink
from foundation.cni import spec
from foundation.cni.skel import Request
from foundation.cni.spec import CniError
from foundation.netlink import netns


def _fail(msg: str, details: str = "") -> CniError:
    return CniError(spec.ERR_CHECK_FAILED, msg, details)


def _pod_interface(prev: dict[str, Any], req: Request) -> tuple[int, dict[str, Any]]:
    for index, iface in enumerate(prev["interfaces"]):
        if iface.get("name") == req.ifname and iface.get("sandbox"):
            return index, iface
    raise _fail(f"prevResult names no interface {req.ifname} inside a sandbox")


def check_attachment(conf: NetConf, req: Request) -> None:
    prev = conf.prev_result
    assert prev is not None
    index, iface = _pod_interface(prev, req)
    fd = netns.open_netns(req.netns)
    try:
        with netns.entered_fd(fd):
            pod = netlink.open_route_socket()
        try:
            _check_pod(pod, req, index, iface, prev)
        finally:
            pod.close()
    finally:
        os.close(fd)
    host = netlink.open_route_socket()
    try:
        _check_host(host, conf, prev)
    finally:
        host.close()


def _check_pod(pod: Any, req: Request, index: int, iface: dict[str, Any],
               prev: dict[str, Any]) -> None:
    link = netlink.get_link(pod, req.ifname)
    if link is None:
        raise _fail(f"interface {req.ifname} is missing in {req.netns}")
    if iface.get("mac") and iface["mac"].lower() != link.mac.lower():
        raise _fail(f"interface {req.ifname} has MAC {link.mac}, prevResult says {iface['mac']}")
    held = {ipaddress.ip_interface(a) for a in netlink.addresses(pod, link.index)}
    for ip in prev["ips"]:
        if ip.get("interface") not in (None, index):
            continue
        if ipaddress.ip_interface(ip["address"]) not in held:
            raise _fail(f"address {ip['address']} is missing on {req.ifname}",
                        f"found: {', '.join(sorted(map(str, held))) or 'none'}")
    for route in prev["routes"]:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        family = netlink.AF_INET if dst.version == 4 else netlink.AF_INET6
        present = [r for r in netlink.list_routes(pod, family)
                   if ipaddress.ip_network(r.dst, strict=False) == dst]
        if not present:
            raise _fail(f"route to {route['dst']} is missing in {req.netns}")
        if route.get("gw") and not any(r.gateway == route["gw"] for r in present):
            raise _fail(f"route to {route['dst']} does not go via {route['gw']}")


def _check_host(host: Any, conf: NetConf, prev: dict[str, Any]) -> None:
    bridge = netlink.get_link(host, conf.bridge)
    if bridge is None or bridge.kind != "bridge":
        raise _fail(f"bridge {conf.bridge} is missing")
    for iface in prev["interfaces"]:
        if iface.get("sandbox") or iface.get("name") == conf.bridge:
            continue
        link = netlink.get_link(host, iface["name"])
        if link is None:
            raise _fail(f"host interface {iface['name']} is missing")
        if link.kind == "veth" and link.master != bridge.index:
            raise _fail(f"{iface['name']} is not attached to bridge {conf.bridge}")
