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
    announced the same address meanwhile and won the neighbours' caches);
  - answers a foreign claim at once: when another MAC says it holds an owned
    address (a gratuitous ARP, an ARP or Neighbor Solicitation sent from it, a
    Neighbor Advertisement for it), the neighbours that believed it are moved
    back by our own gratuitous ARP / unsolicited NA, sent at once and twice
    more within 250 ms (the claim may reach a neighbour after our first answer);
    at most DEFEND_BURST such answers at once, then DEFEND_RATE a second per
    address, so a flood of claims is not answered by a flood.  The claim is counted
    (skein_speaker_l2_conflicts_total), logged once per address and MAC (again
    after CONFLICT_QUIET seconds without one; claims from ever new MACs are
    logged a few at once, then once a minute per address), and handed to
    `conflict_listeners` (the daemon makes it a "conflict" event).  A claim
    from another speaker of the cluster (its MAC learnt from the ARP it sends
    from its InternalIP, or from the neighbour table) is a handover in progress
    or a partition between the speakers: the election settles it, so it is
    logged at info and not fought.

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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from foundation.addresses import address_order
from foundation.kube.model.fields import IPAddress
from foundation.netlink.mac import mac_bytes, mac_text
from speaker.l2 import frames
from speaker.l2.rawsock import RawSocket
from speaker.l2.responder import Claim, RateLimiter, Responder
from speaker.loopback import LoopbackAddresses
from speaker.plan import L2, Announcement

log = logging.getLogger("speaker.l2")

ADDRESS_PROTO = 83  # IFA_PROTO on lo addresses we add: "ours", found again after a crash
DEFAULT_BURST = (0.0, 0.05, 0.15, 0.5, 1.0, 2.0)
READ_BUDGET = 64  # frames per wake-up: a flood must not starve heartbeats on the same loop

# What `L2Announcer.counts` counts, by (counter, interface, family); family "" for
# RATE_LIMITED.  speaker.metrics exports them as skein_speaker_l2_<counter>_total
# (prometheus_client is loaded only when metrics are served).
REPLIES = "replies"  # ARP replies and Neighbor Advertisements sent in answer to requests
GRATUITOUS = "gratuitous"  # gratuitous ARPs and unsolicited Neighbor Advertisements sent
RATE_LIMITED = "rate_limited"  # requests left unanswered by the per-source rate limit
CONFLICTS = "conflicts"  # frames in which another host claimed an address announced here

DEFEND_BURST = 3.0  # defences of one address at once (claims answered)...
DEFEND_RATE = 1.0  # ...then this many a second
# A defence: our announcement at once, then again at these offsets, in case the
# claim reached some neighbour after our answer (a loaded host, a switch queue).
DEFEND_AGAIN = (0.05, 0.25)
CONFLICT_QUIET = 60.0  # a claim after this long without one is logged (and an event) again
# A flood of claims from ever new MACs: this many remembered per interface, and
# their log lines (and events) at most REPORT_BURST at once, then one a minute per address.
MAX_CLAIMANTS = 1024
REPORT_BURST, REPORT_RATE = 5.0, 1 / 60


@dataclass(frozen=True)
class Conflict:
    """A foreign claim to `address` on `interface`: `mac` said it holds it, in a `how`."""

    address: IPAddress
    interface: str
    mac: str
    how: str


@dataclass
class _Port:
    ifname: str
    sock: RawSocket
    responder: Responder
    owned: dict[IPAddress, tuple[str, ...]]
    last_limit_log: float = 0.0
    # (address, claimant MAC) -> when it last claimed it: logging once per episode
    claims: dict[tuple[IPAddress, bytes], float] = field(default_factory=dict)


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
        self._own_macs: set[bytes] = set()  # every port's: shared by their responders
        self._defense = RateLimiter(rate=DEFEND_RATE, burst=DEFEND_BURST,
                                    total_rate=100 * DEFEND_RATE, total_burst=100 * DEFEND_BURST)
        self._reports = RateLimiter(rate=REPORT_RATE, burst=REPORT_BURST,
                                    total_rate=10 * REPORT_RATE, total_burst=4 * REPORT_BURST)
        self._members: dict[bytes, str] = {}  # packed InternalIP -> the other speakers' nodes
        self._peer_macs: dict[bytes, str] = {}  # their MACs, as learnt
        self.conflict_listeners: list[Callable[[Conflict], None]] = []
        self.counts: Counter[tuple[str, str, str]] = Counter()
        # The list the last apply went through with (None: none did, or one failed),
        # and the members it saw: what `apply_change` may skip from.
        self._applied: Sequence[Announcement] | None = None
        self._members_seen: dict[bytes, str] | None = None

    def set_members(self, members: Mapping[str, Sequence[IPAddress]]) -> None:
        """The other speakers (node -> InternalIPs): a claim from one of them is a
        handover or a partition, not a foreign host (called before each `apply`)."""
        known = {ip.packed: name for name, ips in members.items() for ip in ips}
        if known != self._members:  # kept otherwise: `apply_change` tells by identity
            self._members = known
        self._peer_macs = {mac: name for mac, name in self._peer_macs.items()
                           if name in members}

    # -- the Announcer protocol ----------------------------------------------------------

    async def apply_change(self, desired: Sequence[Announcement],
                           before: Sequence[Announcement], added: Sequence[Announcement],
                           removed: Sequence[Announcement]) -> None:
        """`apply(desired)`, skipped when it cannot change anything: the last apply was
        given `before` and went through, no layer-2 entry came or went, and nothing is
        waiting to be retried (an interface that failed, an address without a route),
        nor did the other speakers change.  The resync applies everything again."""
        if (before is self._applied and not self._failed_ifaces and not self._unresolved
                and self._members_seen is self._members
                and not any(a.kind == L2 for a in added)
                and not any(a.kind == L2 for a in removed)):
            self._applied = desired
            return
        await self.apply(desired)

    async def apply(self, desired: Sequence[Announcement]) -> None:
        self._applied = None
        wanted: dict[str, dict[IPAddress, tuple[str, ...]]] = {}
        mine = [a for a in desired if a.kind == L2]
        for ann in mine:
            for ifname in ann.interfaces or await self._route_interfaces(ann.address):
                wanted.setdefault(ifname, {})[ann.address] = ann.services
        if self.assign_to_lo:
            # Before the first gratuitous ARP: traffic it attracts must be accepted.
            await self._lo.sync({a.address for a in mine})
        if mine and self._members:
            await self._learn_peer_macs()
        for ifname in list(self._ports):
            if ifname not in wanted:
                self._close_port(self._ports.pop(ifname))
        for ifname, addresses in wanted.items():
            port = self._ports.get(ifname) or self._open_port(ifname)
            if port is not None:
                self._update_port(port, addresses)
        if self._refresher is None and self.refresh > 0:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="l2-refresh")
        self._applied, self._members_seen = desired, self._members

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
        self._applied = None
        if self.assign_to_lo:
            await self._lo.sync(set())

    # -- status -------------------------------------------------------------------------

    def owned(self) -> dict[str, list[IPAddress]]:
        return {p.ifname: sorted(p.owned, key=address_order)
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
        self._own_macs.add(sock.mac)
        responder = Responder(sock.mac, self._limiter())
        responder.own_macs = self._own_macs
        port = _Port(ifname, sock, responder, {})
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, port)
        self._ports[ifname] = port
        log.info("listening for ARP/NDP on %s (%s)", ifname, mac_text(sock.mac))
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
        port.claims = {k: t for k, t in port.claims.items() if k[0] in addresses}
        for address in gone:
            log.info("stopped announcing %s on %s", address, port.ifname)
        loop = asyncio.get_running_loop()
        for address in new:
            log.info("announcing %s on %s (%s) for %s", address, port.ifname,
                     mac_text(port.sock.mac), ", ".join(addresses[address]))
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
            self.counts[GRATUITOUS, ifname, "ipv4"] += 2
        else:
            port.sock.send(frames.unsolicited_advertisement(port.sock.mac, address.packed))
            self.counts[GRATUITOUS, ifname, "ipv6"] += 1

    def _on_readable(self, port: _Port) -> None:
        now = time.monotonic()
        counters = port.responder.counters
        before = (counters.arp_replies, counters.na_replies, counters.rate_limited)
        for frame in port.sock.receive(READ_BUDGET):
            reply, claim = port.responder.handle(frame, now)
            if reply is not None:
                port.sock.send(reply)
            if claim is not None:
                self._on_claim(port, claim, now)
            elif self._members and frame[12:14] == b"\x08\x06" and len(frame) >= 42:
                # ARP from another speaker's InternalIP tells its MAC (bytes 22-32:
                # sender MAC and IP), before it ever claims anything.
                name = self._members.get(frame[28:32])
                if name is not None:
                    self._peer_macs[frame[22:28]] = name
        arp, na, limited = (counters.arp_replies - before[0], counters.na_replies - before[1],
                            counters.rate_limited - before[2])
        if arp:
            self.counts[REPLIES, port.ifname, "ipv4"] += arp
        if na:
            self.counts[REPLIES, port.ifname, "ipv6"] += na
        if limited:
            self.counts[RATE_LIMITED, port.ifname, ""] += limited
            if now - port.last_limit_log > 10:
                port.last_limit_log = now
                log.warning("%s: rate-limiting ARP/NDP requests (%d unanswered so far); a "
                            "client is flooding the segment", port.ifname, counters.rate_limited)

    def _on_claim(self, port: _Port, claim: Claim, now: float) -> None:
        address = ipaddress.ip_address(claim.address)
        mac = mac_text(claim.mac)
        key = (address, claim.mac)
        last = port.claims.pop(key, None)
        port.claims[key] = now  # the most recent last: the oldest go first when full
        if len(port.claims) > MAX_CLAIMANTS:
            del port.claims[next(iter(port.claims))]
        quiet = last is None or now - last > CONFLICT_QUIET
        peer = self._peer_macs.get(claim.mac)
        if peer is not None:
            if quiet:
                log.info("%s: %s is also announced by node %s (%s, %s): a handover in progress, "
                         "or the speakers cannot hear each other; the election settles it",
                         port.ifname, address, peer, mac, claim.how)
            return
        self.counts[CONFLICTS, port.ifname, f"ipv{address.version}"] += 1
        if self._defense.allow(claim.address, now):
            self._announce(port.ifname, address)
            loop = asyncio.get_running_loop()
            for delay in DEFEND_AGAIN:
                loop.call_later(delay, self._announce, port.ifname, address)
        if quiet and self._reports.allow(claim.address, now):
            log.warning("address conflict on %s: %s claimed by %s (%s); announced it again "
                        "as %s", port.ifname, address, mac, claim.how,
                        mac_text(port.sock.mac))
            conflict = Conflict(address, port.ifname, mac, claim.how)
            for listener in self.conflict_listeners:
                try:
                    listener(conflict)
                except Exception:  # noqa: BLE001 - a listener must not stop the answering
                    log.exception("conflict listener failed")

    async def _learn_peer_macs(self) -> None:
        """The other speakers' MACs from the kernel's neighbour table (the
        heartbeats keep their entries there)."""
        from pyroute2 import AsyncIPRoute

        try:
            async with AsyncIPRoute() as ipr:
                async for neigh in await ipr.neigh("dump"):
                    dst, lladdr = neigh.get("dst"), neigh.get("lladdr")
                    if not dst or not lladdr:
                        continue
                    name = self._members.get(ipaddress.ip_address(dst).packed)
                    if name is not None:
                        self._peer_macs[mac_bytes(lladdr)] = name
        except Exception as exc:  # noqa: BLE001 - the ARP they send teaches them as well
            log.debug("cannot read the neighbour table: %s", exc)

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
