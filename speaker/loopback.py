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

from speaker.model.fields import IPAddress

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

    async def sync(self, addresses: set[IPAddress]) -> None:
        from pyroute2 import AsyncIPRoute

        self._ignore_arp_for_lo()
        try:
            async with AsyncIPRoute() as ipr:
                ours = {ipaddress.ip_address(msg.get("address"))
                        async for msg in await ipr.addr("dump", index=LOOPBACK_INDEX)
                        if msg.get("IFA_PROTO") == self.proto}
                for address in ours - addresses:
                    await ipr.addr("del", index=LOOPBACK_INDEX, address=str(address),
                                   prefixlen=address.max_prefixlen)
                for address in addresses - ours:
                    try:
                        await ipr.addr("add", index=LOOPBACK_INDEX, address=str(address),
                                       prefixlen=address.max_prefixlen, proto=self.proto)
                    except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError
                        if getattr(exc, "code", None) != errno.EEXIST:
                            raise
        except Exception as exc:  # noqa: BLE001 - announcing goes on; the log says what failed
            log.error("cannot set LoadBalancer addresses on lo (%s); traffic to them will not "
                      "be accepted on this node", exc)

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
