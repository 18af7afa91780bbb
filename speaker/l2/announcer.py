"""L2Announcer: makes the addresses this node owns reachable on the local segment.

For each owned address, on each announcing interface:
  - answers ARP who-has (IPv4) and Neighbor Solicitations (IPv6) with the
    interface's MAC (speaker.l2.responder), through one kept-open raw socket
    per interface (speaker.l2.rawsock);
  - on taking an address over, sends a burst of gratuitous ARPs / unsolicited
    Neighbor Advertisements (at `burst` offsets: neighbours that cached the
    previous owner's MAC switch at once, and a lost frame is covered by the
    next), then repeats them every `refresh` seconds, because switches age
    their MAC tables out and a neighbour that missed the burst must not wait
    for its entry to go stale;
  - `reassert()` re-sends them for everything owned at once: the daemon calls
    it when a peer reappears (a healed partition, where the other side may have
    announced the same address meanwhile and won the neighbours' caches).

The announcing interface is the L2Advertisement's `interfaces` if it names any,
else the interface of the main-table route covering the address (as MetalLB:
the LoadBalancer address lives in a subnet of the segment the node is on).

The address itself is not configured on any interface: like MetalLB, the
speaker only attracts the traffic; kube-proxy accepts it.  Where there is no
kube-proxy (the lab, bare hosts), `assign_to_lo=True` adds each owned address
to `lo` (tagged with address protocol 83 so stale ones are found and removed
after a crash) and sets `arp_ignore=1` / `arp_announce=2` in the namespace, as
kube-proxy's IPVS mode does: otherwise the kernel of a node that held the
address would keep answering ARP for it on every interface.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from speaker.l2 import frames
from speaker.l2.rawsock import RawSocket
from speaker.l2.responder import RateLimiter, Responder
from speaker.loopback import LoopbackAddresses
from speaker.model.fields import IPAddress
from speaker.plan import L2, Announcement

log = logging.getLogger("speaker.l2")

ADDRESS_PROTO = 83  # IFA_PROTO on lo addresses we add: "ours", found again after a crash
DEFAULT_BURST = (0.0, 0.05, 0.15, 0.5, 1.0, 2.0)
READ_BUDGET = 64  # frames per wake-up: a flood must not starve heartbeats on the same loop

REPLIES = Counter("skein_speaker_l2_replies", "ARP replies and Neighbor Advertisements sent "
                  "in answer to requests", ["interface", "family"])
GRATUITOUS = Counter("skein_speaker_l2_gratuitous", "Gratuitous ARPs and unsolicited Neighbor "
                     "Advertisements sent", ["interface", "family"])
RATE_LIMITED = Counter("skein_speaker_l2_rate_limited", "Requests left unanswered by the "
                       "per-source rate limit", ["interface"])


@dataclass
class _Port:
    ifname: str
    sock: RawSocket
    responder: Responder
    owned: dict[IPAddress, tuple[str, ...]]
    last_limit_log: float = 0.0


class L2Announcer:
    kind = L2

    def __init__(self, *, burst: Sequence[float] = DEFAULT_BURST, refresh: float = 10.0,
                 assign_to_lo: bool = False,
                 limiter: Callable[[], RateLimiter] = RateLimiter) -> None:
        self.burst = tuple(burst)
        self.refresh = refresh
        self.assign_to_lo = assign_to_lo
        self._limiter = limiter
        self._ports: dict[str, _Port] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._unresolved: set[IPAddress] = set()
        self._failed_ifaces: set[str] = set()
        self._lo = LoopbackAddresses(ADDRESS_PROTO)

    # -- the Announcer protocol ----------------------------------------------------------

    async def apply(self, desired: Sequence[Announcement]) -> None:
        wanted: dict[str, dict[IPAddress, tuple[str, ...]]] = {}
        mine = [a for a in desired if a.kind == L2]
        for ann in mine:
            for ifname in ann.interfaces or await self._route_interfaces(ann.address):
                wanted.setdefault(ifname, {})[ann.address] = ann.services
        if self.assign_to_lo:
            # Before the first gratuitous ARP: traffic it attracts must be accepted.
            await self._lo.sync({a.address for a in mine})
        for ifname in list(self._ports):
            if ifname not in wanted:
                self._close_port(self._ports.pop(ifname))
        for ifname, addresses in wanted.items():
            port = self._ports.get(ifname) or self._open_port(ifname)
            if port is not None:
                self._update_port(port, addresses)
        if self._refresher is None and self.refresh > 0:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="l2-refresh")

    async def reassert(self) -> None:
        for port in self._ports.values():
            for address in port.owned:
                self._announce(port.ifname, address)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        for port in self._ports.values():
            self._close_port(port)
        self._ports.clear()
        if self.assign_to_lo:
            await self._lo.sync(set())

    # -- status -------------------------------------------------------------------------

    def owned(self) -> dict[str, list[IPAddress]]:
        return {p.ifname: sorted(p.owned, key=lambda a: (a.version, int(a)))
                for p in self._ports.values()}

    # -- ports ----------------------------------------------------------------------------

    def _open_port(self, ifname: str) -> _Port | None:
        try:
            sock = RawSocket(ifname)
        except OSError as exc:
            if ifname not in self._failed_ifaces:
                log.error("cannot announce on interface %s (%s); fix the L2Advertisement's "
                          "spec.interfaces or the node's links; retrying on every change",
                          ifname, exc.strerror or exc)
                self._failed_ifaces.add(ifname)
            return None
        self._failed_ifaces.discard(ifname)
        port = _Port(ifname, sock, Responder(sock.mac, self._limiter()), {})
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, port)
        self._ports[ifname] = port
        log.info("listening for ARP/NDP on %s (%s)", ifname, frames.mac_text(sock.mac))
        return port

    def _close_port(self, port: _Port) -> None:
        for address in port.owned:
            log.info("stopped announcing %s on %s", address, port.ifname)
        try:
            asyncio.get_running_loop().remove_reader(port.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        port.sock.close()

    def _update_port(self, port: _Port, addresses: dict[IPAddress, tuple[str, ...]]) -> None:
        gone = [a for a in port.owned if a not in addresses]
        new = [a for a in addresses if a not in port.owned]
        port.owned = dict(addresses)
        port.responder.v4 = {a.packed for a in addresses if a.version == 4}
        port.responder.v6 = {a.packed for a in addresses if a.version == 6}
        for address in gone:
            log.info("stopped announcing %s on %s", address, port.ifname)
        loop = asyncio.get_running_loop()
        for address in new:
            log.info("announcing %s on %s (%s) for %s", address, port.ifname,
                     frames.mac_text(port.sock.mac), ", ".join(addresses[address]))
            for delay in self.burst:
                if delay <= 0:
                    self._announce(port.ifname, address)
                else:
                    loop.call_later(delay, self._announce, port.ifname, address)

    def _announce(self, ifname: str, address: IPAddress) -> None:
        """Gratuitous ARP / unsolicited NA for `address`, if still owned there."""
        port = self._ports.get(ifname)
        if port is None or address not in port.owned:
            return
        if address.version == 4:
            for frame in frames.gratuitous_arps(port.sock.mac, address.packed):
                port.sock.send(frame)
            GRATUITOUS.labels(ifname, "ipv4").inc(2)
        else:
            port.sock.send(frames.unsolicited_advertisement(port.sock.mac, address.packed))
            GRATUITOUS.labels(ifname, "ipv6").inc()

    def _on_readable(self, port: _Port) -> None:
        now = time.monotonic()
        counters = port.responder.counters
        before = (counters.arp_replies, counters.na_replies, counters.rate_limited)
        for frame in port.sock.receive(READ_BUDGET):
            reply = port.responder.answer(frame, now)
            if reply is not None:
                port.sock.send(reply)
        arp, na, limited = (counters.arp_replies - before[0], counters.na_replies - before[1],
                            counters.rate_limited - before[2])
        if arp:
            REPLIES.labels(port.ifname, "ipv4").inc(arp)
        if na:
            REPLIES.labels(port.ifname, "ipv6").inc(na)
        if limited:
            RATE_LIMITED.labels(port.ifname).inc(limited)
            if now - port.last_limit_log > 10:
                port.last_limit_log = now
                log.warning("%s: rate-limiting ARP/NDP requests (%d unanswered so far); a "
                            "client is flooding the segment", port.ifname, counters.rate_limited)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self.reassert()

    # -- the kernel: routes, lo ------------------------------------------------------------

    async def _route_interfaces(self, address: IPAddress) -> tuple[str, ...]:
        """The interface of the longest main-table route covering `address`, lo excepted
        (a lo address we added must not make lo the announcing interface)."""
        from pyroute2 import AsyncIPRoute

        best: tuple[int, int] | None = None
        async with AsyncIPRoute() as ipr:
            names = {link["index"]: link.get("ifname") async for link in await ipr.link("dump")}
            async for route in await ipr.route("dump", table=254, family=_family(address)):
                oif, length = route.get("oif"), route["dst_len"]
                if oif is None or names.get(oif) == "lo" or route["type"] != 1:
                    continue
                dst = route.get("dst") or ("0.0.0.0" if address.version == 4 else "::")
                net = ipaddress.ip_network(f"{dst}/{length}", strict=False)
                if address in net and (best is None or length > best[0]):
                    best = (length, oif)
        if best is None or names.get(best[1]) is None:
            if address not in self._unresolved:
                log.error("no route covers %s, so no interface to announce it on; add a route "
                          "or name one in the L2Advertisement's spec.interfaces", address)
                self._unresolved.add(address)
            return ()
        self._unresolved.discard(address)
        return (str(names[best[1]]),)


def _family(address: IPAddress) -> int:
    import socket

    return socket.AF_INET if address.version == 4 else socket.AF_INET6
