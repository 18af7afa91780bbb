"""LoadBalancer addresses on `lo`, for nodes without kube-proxy (the lab).

Both announcers can put the addresses they attract traffic for on the
loopback device, so the node accepts that traffic.  Each tags its addresses
with its own IFA_PROTO value: a restarted speaker finds its leftovers, and
the L2 and BGP announcers never remove each other's.  With an address on `lo`
Linux would answer ARP for it from every interface, which breaks L2's single
owner; arp_ignore=1 / arp_announce=2 (as kube-proxy's IPVS mode sets) stop
that.  Failures are logged, never raised: announcing goes on.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Any

from foundation.kube.model.fields import IPAddress

log = logging.getLogger(__name__)

LOOPBACK_INDEX = 1  # in every namespace
_ARP_SYSCTLS = (("arp_ignore", "1"), ("arp_announce", "2"))


class LoopbackAddresses:
    """The set of addresses one announcer keeps on `lo`, tagged with `proto`.
    An address already there (the other announcer's, for a Service announced
    both ways, or an operator's) counts as added, and is never removed: only
    addresses tagged `proto` are."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self._sysctls_done = False
        self._failed: set[IPAddress] = set()  # logged once each, until it works again

    async def sync(self, addresses: set[IPAddress]) -> None:
        from pyroute2 import AsyncIPRoute

        self._ignore_arp_for_lo()
        try:
            async with AsyncIPRoute() as ipr:
                ours = {ipaddress.ip_address(msg.get("address"))
                        async for msg in await ipr.addr("dump", index=LOOPBACK_INDEX)
                        if msg.get("IFA_PROTO") == self.proto}
                self._failed &= addresses | ours
                # One address at a time, each with its own outcome: one that lo
                # refuses must not keep the others off it (or on it).
                for address in ours - addresses:
                    await self._change(ipr, "del", address)
                for address in addresses - ours:
                    await self._change(ipr, "add", address)
        except Exception as exc:  # noqa: BLE001 - announcing goes on; the log says what failed
            log.error("cannot set LoadBalancer addresses on lo (%s); traffic to them will not "
                      "be accepted on this node", exc)

    async def _change(self, ipr: Any, command: str, address: IPAddress) -> None:
        options = {"proto": self.proto} if command == "add" else {}
        try:
            await ipr.addr(command, index=LOOPBACK_INDEX, address=str(address),
                           prefixlen=address.max_prefixlen, **options)
        except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError
            code = getattr(exc, "code", None)
            if code in ((errno.EEXIST,) if command == "add" else (errno.EADDRNOTAVAIL,)):
                return  # already there (someone else's), or already gone
            if address not in self._failed:
                self._failed.add(address)
                log.error("cannot %s %s %s lo (%s); the other addresses are not affected",
                          command, address, "to" if command == "add" else "from", exc)
            return
        if address in self._failed:
            self._failed.discard(address)
            log.info("%s %s lo now", "added to" if command == "add" else "removed from", address)

    def _ignore_arp_for_lo(self) -> None:
        if self._sysctls_done:
            return
        for key, value in _ARP_SYSCTLS:
            path = f"/proc/sys/net/ipv4/conf/all/{key}"
            try:
                with open(path, "w", encoding="ascii") as f:
                    f.write(value)
            except OSError as exc:
                log.error("cannot set %s=%s (%s): the kernel may answer ARP for LoadBalancer "
                          "addresses on lo", path, value, exc.strerror)
        self._sysctls_done = True
