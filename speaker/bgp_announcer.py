"""BgpAnnouncer: the daemon's Announcer of kind "bgp", around one `BgpSpeaker`.

The plan (speaker.bgp_plan) says which sessions this node runs and which
routes go to which of them; this class hands that to the speaker:
  - `set_sessions(sessions)`: peers that appeared are added (the speaker
    connects out at once), peers that went or whose configuration changed are
    removed with a Cease NOTIFICATION (a changed one is added again); a session
    with a BFD profile gets a BFD session beside it (multihop with ebgpMultiHop),
    whose failure takes the BGP session down at once.  A change of BFD alone (the
    BFDProfile's values, or bfdProfile set or cleared) leaves the BGP session up:
    the BFD session renegotiates its intervals with the peer (a Poll Sequence),
    starts or stops;
  - `apply(desired)`: each peer gets its whole desired table, prefixes as the
    plan's `ipaddress` networks (`BgpSpeaker.set_routes`); the peer works out
    what to withdraw and announce and says so, and this class logs it; the
    speaker flushes after its 20 ms batching delay, grouped by attributes;
  - `close()`: Cease / Administrative Shutdown to every peer, so routers drop
    this node's paths at once instead of after the hold time.

Listening is off by default: MetalLB's speaker only connects out, and a
speaker that never binds port 179 needs no NET_BIND_SERVICE in its DaemonSet.
`listen=("0.0.0.0", "::")` (the speaker's `--bgp-listen`) accepts incoming
sessions from the configured peers too.

As with L2, nothing here makes the node accept traffic for the addresses
(kube-proxy does).  Where there is none (the lab), `assign_to_lo=True` puts
every LoadBalancer address this node announces on `lo`, tagged with address
protocol 84 (L2's are 83, so the two announcers never remove each other's) and
with arp_ignore=1 / arp_announce=2, as the L2 announcer does.

For the API: `speaker` is the BgpSpeaker (`speaker.status()` per peer),
`peer_names` maps BGPPeer names to peer addresses, `advertised()` lists the
prefixes sent to each peer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from foundation.kube.model.communities import BGPCommunity
from foundation.kube.model.metallb import BFDProfile
from speaker.bfd.endpoint import BfdConfig
from speaker.bfd.profile import bfd_config
from speaker.bgp.nlri import Network
from speaker.bgp.peer import RibChange, RouteAttrs
from speaker.bgp.sockopts import unmap
from speaker.bgp.speaker import BgpSpeaker
from speaker.bgp_plan import BgpSession
from speaker.loopback import LoopbackAddresses
from speaker.plan import BGP, Announcement

log = logging.getLogger("speaker.bgp")

LO_ADDRESS_PROTO = 84  # IFA_PROTO of lo addresses the BGP announcer adds
SHOWN = 8  # prefixes named per log line; more are counted


def route_attrs(local_pref: int | None, communities: Iterable[BGPCommunity]) -> RouteAttrs:
    standard = tuple(sorted({c.value for c in communities if not c.large}))
    large = tuple(sorted({(c.parts[0], c.parts[1], c.parts[2]) for c in communities
                          if c.large}))
    return RouteAttrs(local_pref=local_pref, communities=standard, large_communities=large)


def _merge(a: RouteAttrs, b: RouteAttrs) -> RouteAttrs:
    """One prefix wanted twice towards one peer (a Calico range equal to an aggregate):
    the union of communities, the higher localPref, as the plan merges."""
    prefs = [p for p in (a.local_pref, b.local_pref) if p is not None]
    return RouteAttrs(local_pref=max(prefs) if prefs else None,
                      communities=tuple(sorted({*a.communities, *b.communities})),
                      large_communities=tuple(sorted({*a.large_communities,
                                                      *b.large_communities})))


def _order(network: Network) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


def _listed(prefixes: Sequence[Network]) -> str:
    shown = ", ".join(str(p) for p in prefixes[:SHOWN])
    return shown + (f" and {len(prefixes) - SHOWN} more" if len(prefixes) > SHOWN else "")


class BgpAnnouncer:
    kind = BGP

    def __init__(self, *, listen: Sequence[str] = (), listen_port: int = 179,
                 assign_to_lo: bool = False, batch_delay: float = 0.02) -> None:
        # Every planned session names its router ID; the speaker's own is a placeholder.
        self.speaker = BgpSpeaker("0.0.0.0", listen_addresses=tuple(listen) or None,
                                  listen_port=listen_port, batch_delay=batch_delay)
        self.assign_to_lo = assign_to_lo
        self.peer_names: dict[str, str] = {}  # BGPPeer name -> peer address (speaker key)
        self._sessions: dict[str, BgpSession] = {}  # peer address -> session
        self._started = False
        # Accept an address already on lo: the L2 announcer may hold the same one.
        self._lo = LoopbackAddresses(LO_ADDRESS_PROTO)

    # -- sessions -------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            await self.speaker.start()
        except OSError as exc:
            log.error("cannot listen for BGP on port %d (%s); connecting out only",
                      self.speaker.listen_port, exc.strerror or exc)
            await self.speaker.shutdown()
            self.speaker.listen_addresses = ()
            await self.speaker.start()

    async def set_sessions(self, sessions: Sequence[BgpSession]) -> None:
        """Make the speaker's peers exactly `sessions`."""
        await self._start()
        wanted = {unmap(s.config.peer_address): s for s in sessions}
        for key, peer in list(self.speaker.peers.items()):
            session = wanted.get(key)
            running = self._sessions.get(key)
            if session is not None and session.config == peer.config and running is not None:
                if running.bfd != session.bfd:
                    self._change_bfd(key, running.bfd, session)
                    self._sessions[key] = session
                continue
            why = "BGPPeer changed" if session is not None else "BGPPeer removed"
            log.info("BGP peer %s: %s, closing the session", key, why)
            self._sessions.pop(key, None)
            await self.speaker.remove_peer(key, why)
        for key, session in wanted.items():
            if key not in self.speaker.peers:
                cfg = session.config
                log.info("BGP peer %s (BGPPeer %s): AS %d, local AS %d, router ID %s%s",
                         key, session.name, cfg.peer_asn, cfg.my_asn, cfg.router_id,
                         f", from {cfg.source_address}" if cfg.source_address else "")
                self.speaker.add_peer(cfg, _bfd_of(key, session))
            self._sessions[key] = session
        self.peer_names = {s.name: key for key, s in wanted.items()}

    def _change_bfd(self, key: str, old: BFDProfile | None, session: BgpSession) -> None:
        if session.bfd is None:
            assert old is not None
            log.info("BGP peer %s: BFD off (BGPPeer %s names no BFDProfile any more, was %s); "
                     "the BGP session stays", key, session.name, old.name)
        elif old is not None:
            what = (f"BFDProfile {old.name} changed" if old.name == session.bfd.name
                    else f"BFDProfile {session.bfd.name} instead of {old.name}")
            log.info("BGP peer %s: %s; renegotiating BFD, the BGP session stays", key, what)
        self.speaker.set_bfd(key, _bfd_of(key, session))

    # -- the Announcer protocol ---------------------------------------------------------

    async def apply(self, desired: Sequence[Announcement]) -> None:
        await self._start()
        mine = [a for a in desired if a.kind == BGP and a.prefix is not None]
        wanted: dict[str, dict[Network, RouteAttrs]] = {}
        for ann in mine:
            assert ann.prefix is not None
            attrs = route_attrs(ann.local_pref, ann.communities)
            for name in ann.peers:
                key = self.peer_names.get(name)
                if key is None:
                    continue
                table = wanted.setdefault(key, {})
                old = table.get(ann.prefix)
                table[ann.prefix] = attrs if old is None or old == attrs else _merge(old, attrs)
        if self.assign_to_lo:
            # Before the routes go out: the traffic they attract must be accepted.
            await self._lo.sync({a.address for a in mine if a.services})
        for key in self.speaker.peers:
            _log_change(key, self.speaker.set_routes(key, wanted.get(key, {})))

    async def reassert(self) -> None:
        """Nothing: a BGP session keeps the routes; a new one gets the whole table."""

    async def close(self) -> None:
        await self.speaker.shutdown("skein-speaker stopping")
        if self.assign_to_lo:
            await self._lo.sync(set())

    # -- status ---------------------------------------------------------------------------

    def advertised(self) -> dict[str, list[Network]]:
        """Peer address -> the prefixes sent to it (what the plan asked for)."""
        return {key: sorted((n for n, _ in peer.routes()), key=_order)
                for key, peer in self.speaker.peers.items()}


def _bfd_of(key: str, session: BgpSession) -> BfdConfig | None:
    if session.bfd is None:
        return None
    multihop = session.config.ebgp_multihop
    log.info("BGP peer %s: BFD with BFDProfile %s (%s)", key, session.bfd.name,
             "multihop" if multihop else "single hop")
    return bfd_config(session.bfd, multihop=multihop)


def _log_change(key: str, change: RibChange) -> None:
    if change.withdrawn:
        log.info("BGP peer %s: withdrawing %s", key,
                 _listed(sorted(change.withdrawn, key=_order)))
    by_attrs: dict[RouteAttrs, list[Network]] = {}
    for prefix, attrs in change.announced.items():
        by_attrs.setdefault(attrs, []).append(prefix)
    for attrs, prefixes in by_attrs.items():
        log.info("BGP peer %s: announcing %s%s", key, _listed(sorted(prefixes, key=_order)),
                 _attrs_text(attrs))


def _attrs_text(attrs: RouteAttrs) -> str:
    parts = []
    if attrs.local_pref is not None:
        parts.append(f"localPref {attrs.local_pref}")
    if attrs.communities:
        parts.append("communities " + " ".join(f"{c >> 16}:{c & 0xFFFF}"
                                               for c in attrs.communities))
    if attrs.large_communities:
        parts.append("large communities " + " ".join(":".join(map(str, c))
                                                     for c in attrs.large_communities))
    return f" ({', '.join(parts)})" if parts else ""
