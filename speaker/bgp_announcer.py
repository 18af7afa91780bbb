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
  - `apply(desired)`: each peer gets its desired table, prefixes as the plan's
    `ipaddress` networks.  The first apply, and any after the peers changed,
    hands every peer its whole table (`BgpSpeaker.set_routes`); the others work
    from the entries that came or went since the apply before (the plan keeps
    an unchanged entry's identity; `apply_change` is told them by the daemon)
    and hand each peer only the routes those touch (`BgpSpeaker.update_routes`),
    so a change costs its size, not the table's.  The same list again (a
    resync) changes no table, and puts lo right with `assign_to_lo`.  The
    peer works out what to withdraw and announce and says so,
    and this class logs it; the speaker flushes after its 20 ms batching delay,
    grouped by attributes;
  - `reassert()`: every peer gets its whole table again, the peer diffing it;
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
from foundation.kube.model.fields import IPAddress
from foundation.kube.model.metallb import BFDProfile
from foundation.sequences import identity_delta
from speaker.bfd.endpoint import BfdConfig
from speaker.bfd.profile import bfd_config
from speaker.bgp.nlri import Network
from speaker.bgp.peer import Peer, RibChange, RouteAttrs
from speaker.bgp.sockopts import unmap
from speaker.bgp.speaker import BgpSpeaker
from speaker.bgp_plan import BgpSession
from speaker.loopback import LoopbackAddresses
from speaker.plan import BGP, Announcement

log = logging.getLogger("speaker.bgp")

LO_ADDRESS_PROTO = 84  # IFA_PROTO of lo addresses the BGP announcer adds
SHOWN = 8  # prefixes named per log line; more are counted
ATTRS_MEMO = 4096  # distinct (localPref, communities) kept by the route_attrs memo


def route_attrs(local_pref: int | None, communities: Iterable[BGPCommunity]) -> RouteAttrs:
    standard = tuple(sorted({c.value for c in communities if not c.large}))
    large = tuple(sorted({(c.parts[0], c.parts[1], c.parts[2]) for c in communities
                          if c.large}))
    return RouteAttrs(local_pref=local_pref, communities=standard, large_communities=large)


def _merged(counted: dict[RouteAttrs, int]) -> RouteAttrs:
    """The route for one (peer, prefix) from the attributes of the entries wanting it."""
    it = iter(counted)  # _merge is commutative and associative: any order
    out = next(it)
    for attrs in it:
        out = _merge(out, attrs)
    return out


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


# Shorter than the speaker's own default: one reconcile hands a session all its
# changes before the sender task runs, so the delay only has later reconciles to
# gather, and it is added to every Service's time to the router.
BATCH_DELAY = 0.005


class BgpAnnouncer:
    kind = BGP

    def __init__(self, *, listen: Sequence[str] = (), listen_port: int = 179,
                 assign_to_lo: bool = False, batch_delay: float = BATCH_DELAY) -> None:
        # Every planned session names its router ID; the speaker's own is a placeholder.
        self.speaker = BgpSpeaker("0.0.0.0", listen_addresses=tuple(listen) or None,
                                  listen_port=listen_port, batch_delay=batch_delay)
        self.assign_to_lo = assign_to_lo
        self.peer_names: dict[str, str] = {}  # BGPPeer name -> peer address (speaker key)
        self._sessions: dict[str, BgpSession] = {}  # peer address -> session
        self._started = False
        # Accept an address already on lo: the L2 announcer may hold the same one.
        self._lo = LoopbackAddresses(LO_ADDRESS_PROTO)
        # What the last apply was given and made of it, for the next one's delta:
        # its list (None: rebuild everything), the peer names and peers it saw, per
        # peer the votes of the entries for each prefix (attributes -> how many
        # entries want them) and the resulting table, entries per lo address (kept
        # with `assign_to_lo` only).
        self._desired: Sequence[Announcement] | None = None
        self._names: dict[str, str] = {}
        self._peers: dict[str, Peer] = {}
        self._votes: dict[str, dict[Network, dict[RouteAttrs, int]]] = {}
        self._tables: dict[str, dict[Network, RouteAttrs]] = {}
        self._lo_count: dict[IPAddress, int] = {}
        self._attrs_memo: dict[tuple[int | None, tuple[BGPCommunity, ...]], RouteAttrs] = {}

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
        await self._apply(desired, None)

    async def apply_change(self, desired: Sequence[Announcement],
                           before: Sequence[Announcement], added: Sequence[Announcement],
                           removed: Sequence[Announcement]) -> None:
        """`apply(desired)`, from the entries the daemon says came and went since
        `before`, when `before` is what this announcer last applied."""
        await self._apply(desired, (before, added, removed))

    async def _apply(self, desired: Sequence[Announcement],
                     change: tuple[Sequence[Announcement], Sequence[Announcement],
                                   Sequence[Announcement]] | None) -> None:
        await self._start()
        peers = self.speaker.peers
        before = self._desired
        whole = (before is None or self.peer_names != self._names
                 or peers.keys() != self._peers.keys()
                 or any(p is not self._peers[k] for k, p in peers.items()))
        # Until this apply is through, a failure leaves the tables to rebuild.
        self._desired, self._names, self._peers = None, dict(self.peer_names), dict(peers)
        if before is None or whole:
            await self._apply_whole(desired)
        elif desired is before:
            # Nothing new (a resync): the tables stand; lo is put right, as the
            # resync is there to repair what changed under us.
            if self.assign_to_lo:
                await self._lo.sync(set(self._lo_count))
        elif change is not None and change[0] is before:
            await self._apply_delta(change[1], change[2])
        else:
            added, removed = identity_delta(before, desired)
            await self._apply_delta(added, removed)
        self._desired = desired

    async def _apply_whole(self, desired: Sequence[Announcement]) -> None:
        """Every table from scratch, each handed whole to its peer (`Peer.set`)."""
        self._votes = {}
        self._tables = {key: {} for key in self.speaker.peers}
        self._lo_count = {}
        for ann in desired:
            self._count(ann, 1, None)
        for key, votes in self._votes.items():
            table = self._tables.setdefault(key, {})
            for prefix, attrs in votes.items():
                table[prefix] = _merged(attrs)
        if self.assign_to_lo:
            # Before the routes go out: the traffic they attract must be accepted.
            await self._lo.sync(set(self._lo_count))
        for key in self.speaker.peers:
            _log_change(key, self.speaker.set_routes(key, self._tables[key]))

    async def _apply_delta(self, added: Sequence[Announcement],
                           removed: Sequence[Announcement]) -> None:
        """Only the entries that came or went since the last apply (the plan keeps an
        unchanged entry's identity), handed to each peer as a delta (`Peer.update`).
        An equal entry made anew counts as one gone and one come, which cancel."""
        touched: dict[str, set[Network]] = {}
        lo_changed = False
        for ann in removed:
            lo_changed |= self._count(ann, -1, touched)
        for ann in added:
            lo_changed |= self._count(ann, 1, touched)
        if self.assign_to_lo and lo_changed:
            await self._lo.sync(set(self._lo_count))
        for key, prefixes in touched.items():
            table = self._tables.setdefault(key, {})
            votes = self._votes.get(key, {})
            announce: dict[Network, RouteAttrs] = {}
            withdraw: list[Network] = []
            # What goes out is the session's to decide (`Peer.update` drops what its
            # Adj-RIB-Out already holds): the table only follows the votes.
            for prefix in prefixes:
                counted = votes.get(prefix)
                if counted:
                    table[prefix] = announce[prefix] = _merged(counted)
                else:
                    table.pop(prefix, None)
                    withdraw.append(prefix)
                    votes.pop(prefix, None)
            if announce or withdraw:
                _log_change(key, self.speaker.update_routes(key, announce, withdraw))

    def _count(self, ann: Announcement, sign: int,
               touched: dict[str, set[Network]] | None) -> bool:
        """Add (`sign` 1) or take away (-1) one entry's votes for its (peer, prefix)
        routes; the (peer, prefix) pairs it touches go into `touched`.  True when
        the set of addresses on lo changed."""
        if ann.kind != BGP or ann.prefix is None:
            return False
        attrs = self._attrs(ann.local_pref, ann.communities)
        prefix = ann.prefix
        for name in ann.peers:
            key = self.peer_names.get(name)
            if key is None:
                continue
            counted = self._votes.setdefault(key, {}).setdefault(prefix, {})
            n = counted.get(attrs, 0) + sign
            if n:
                counted[attrs] = n
            else:
                del counted[attrs]
            if touched is not None:
                touched.setdefault(key, set()).add(prefix)
        if not ann.services or not self.assign_to_lo:
            return False
        n = self._lo_count.get(ann.address, 0) + sign
        if n:
            self._lo_count[ann.address] = n
            return n == 1 and sign == 1
        del self._lo_count[ann.address]
        return True

    def _attrs(self, local_pref: int | None, communities: tuple[BGPCommunity, ...]
               ) -> RouteAttrs:
        """`route_attrs`, memoised: a few attribute sets serve thousands of routes, and
        the same RouteAttrs object makes the peer's comparisons cheap."""
        key = (local_pref, communities)
        attrs = self._attrs_memo.get(key)
        if attrs is None:
            if len(self._attrs_memo) >= ATTRS_MEMO:
                self._attrs_memo.clear()
            attrs = self._attrs_memo[key] = route_attrs(local_pref, communities)
        return attrs

    async def reassert(self) -> None:
        """Each peer gets its whole table again (`Peer.set`): the session diffs it, so a
        table that drifted from the deltas is put right; a session keeps its routes,
        and a new one gets the whole table anyway."""
        if self._desired is None:
            return  # the last apply failed: the next one hands over whole tables
        for key in self.speaker.peers:
            _log_change(key, self.speaker.set_routes(key, self._tables.get(key, {})))

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
