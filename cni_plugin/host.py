"""How the plugin reaches the node's namespace, cold or warm.

The executable runs one command and exits: it opens a netlink socket, makes
sure bridge and gateway are there, and closes.  skein-agent serves thousands
of commands: it keeps one socket per worker thread and remembers the bridge
and gateway it already made sure of, re-checking the bridge by its ifindex
(an ioctl, microseconds) so a deleted and recreated bridge is noticed, and
forgetting everything on each resync so a gateway address someone removed by
hand comes back within one resync period.
"""

from __future__ import annotations

import ipaddress
import threading

from cni_plugin import bridge
from foundation import netlink
from foundation.netlink import Link, RouteSocket

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class ColdHost:
    """One socket per command, every check done every time (the executable)."""

    def socket(self) -> RouteSocket:
        return netlink.open_route_socket()

    def release(self, ipr: RouteSocket) -> None:
        ipr.close()

    def bridge(self, ipr: RouteSocket, name: str, mtu: int | None, promisc: bool) -> Link:
        return bridge.ensure_bridge(ipr, name, mtu, promisc)

    def gateway(self, ipr: RouteSocket, br: Link, gateway: Interface, force: bool) -> None:
        bridge.ensure_gateway_address(ipr, br, gateway, force)
        bridge.enable_forwarding(gateway.version)


class WarmHost(ColdHost):
    """Per-thread sockets and a memory of what is already in place (the agent).
    The memory is shared by the agent's worker threads without a lock: each of
    its operations is one dict or set operation, atomic, and two threads that
    both find nothing both make sure of the same thing, which is idempotent."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._bridges: dict[tuple[str, int | None, bool], Link] = {}
        self._gateways: set[tuple[int, str]] = set()

    def socket(self) -> RouteSocket:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = self._local.ipr = netlink.open_route_socket()
        return ipr

    def release(self, ipr: RouteSocket) -> None:
        pass  # kept for this thread's next command

    def bridge(self, ipr: RouteSocket, name: str, mtu: int | None, promisc: bool) -> Link:
        key = (name, mtu, promisc)
        known = self._bridges.get(key)
        if known is not None and netlink.link_index(name) == known.index:
            return known
        link = super().bridge(ipr, name, mtu, promisc)
        self._bridges[key] = link
        return link

    def gateway(self, ipr: RouteSocket, br: Link, gateway: Interface, force: bool) -> None:
        key = (br.index, str(gateway))
        if key in self._gateways:
            return
        super().gateway(ipr, br, gateway, force)
        self._gateways.add(key)

    def forget(self) -> None:
        self._bridges.clear()
        self._gateways.clear()
