"""One configured BGP neighbour: its FSM, its TCP connection(s), its timers and its
Adj-RIB-Out, on asyncio.

The FSM decides; this class performs: it turns socket happenings and timer expiry
into FSM events and carries out the returned actions.

Routes are given as the whole desired set (`set(routes)`, MetalLB's
`Session.Set`): the peer diffs it against its Adj-RIB-Out (`rib`, keyed by
`ipaddress` network), marks what changed dirty and returns the change; or as a
delta (`update(announce, withdraw)`), which costs the change, not the table; a
per-session sender task flushes it after a short batching delay, grouped by
attribute set and packed into as few UPDATEs as possible.  A new session gets the
whole table followed by End-of-RIB for each negotiated family (RFC 4724), and a
ROUTE-REFRESH gets the family's whole table again (RFC 2918).

Received UPDATEs are handled as RFC 7606 says (`speaker.bgp.update`): one that
needs no reset is logged and the session stays up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from speaker.api.peer_status import BGP, PeerStatus
from speaker.bgp import fsm as bgp_fsm
from speaker.bgp import message, update
from speaker.bgp.attributes import (
    ORIGIN_IGP,
    AsPath,
    Attribute,
    Communities,
    LargeCommunities,
    LocalPref,
    Med,
    MpReachNlri,
    NextHop,
    Origin,
)
from speaker.bgp.capabilities import (
    GR_FORWARDING_PRESERVED,
    Capability,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    RouteRefresh,
)
from speaker.bgp.errors import (
    CEASE,
    CEASE_CONNECTION_COLLISION_RESOLUTION,
    CEASE_CONNECTION_REJECTED,
    BgpError,
)
from speaker.bgp.fsm import (
    BfdDown,
    CollisionDump,
    Connect,
    DecodeError,
    Disconnect,
    Event,
    Fsm,
    FsmConfig,
    ManualStart,
    ManualStop,
    MessageReceived,
    OpenAccepted,
    ResendRoutes,
    Send,
    SessionDown,
    SessionUp,
    StartTimer,
    State,
    StopTimer,
    TcpConnected,
    TcpFailed,
    Timer,
    TimerExpired,
    UpdateReceived,
    collision_winner_is_incoming,
)
from speaker.bgp.negotiated import Negotiated
from speaker.bgp.nlri import (
    AFI_IPV4,
    AFI_IPV6,
    IPV4_UNICAST,
    IPV6_UNICAST,
    SAFI_UNICAST,
    Family,
    Network,
    afi_of,
    family_name,
)
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open
from speaker.bgp.packing import pack
from speaker.bgp.session import Connection, open_connection
from speaker.bgp.update import Update, end_of_rib

log = logging.getLogger("speaker.bgp")

DEFAULT_LOCAL_PREF = 100


@dataclass(frozen=True)
class RouteAttrs:
    """What the caller says about a route; the per-peer rules (next hop self, AS_PATH,
    LOCAL_PREF only for iBGP) are applied at export.  Hashable: routes are grouped
    by it when packing."""

    origin: int = ORIGIN_IGP
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[int, ...] = ()
    next_hop: str | None = None
    large_communities: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class PeerConfig:
    peer_address: str
    peer_asn: int  # 0 with dynamic_asn: learned from the peer's OPEN
    my_asn: int
    router_id: str = ""  # empty: the speaker's router id
    peer_port: int = 179
    hold_time: int = 90
    keepalive_time: int | None = None
    source_address: str | None = None
    password: str | None = None
    ebgp_multihop: bool = False
    passive: bool = False
    connect_retry_time: float = 5.0
    backoff_max: float = 60.0
    families: tuple[Family, ...] = (IPV4_UNICAST, IPV6_UNICAST)
    graceful_restart_time: int | None = 120
    next_hop_ipv4: str | None = None
    next_hop_ipv6: str | None = None
    min_hold_time: int = 3
    dynamic_asn: str | None = None  # MetalLB's dynamicASN: "internal" or "external"

    def __post_init__(self) -> None:
        if self.dynamic_asn not in (None, "internal", "external"):
            raise ValueError(f"dynamic_asn {self.dynamic_asn!r}: use 'internal' or 'external'")

    @property
    def ibgp(self) -> bool:
        if self.dynamic_asn is not None:
            return self.dynamic_asn == "internal"
        return self.peer_asn == self.my_asn

    @property
    def ttl(self) -> int:
        return 255 if self.ibgp or self.ebgp_multihop else 1


def local_open(config: PeerConfig, router_id: str) -> Open:
    caps: list[Capability] = [Multiprotocol(afi, safi) for afi, safi in config.families]
    caps += [RouteRefresh(), FourOctetAs(config.my_asn)]
    if config.graceful_restart_time is not None:
        # Forwarding to the announced addresses does not depend on the speaker process,
        # so the F bit is honest: a helper may keep our routes while we restart.
        caps.append(GracefulRestart(config.graceful_restart_time, 0, tuple(
            (afi, safi, GR_FORWARDING_PRESERVED) for afi, safi in config.families)))
    return Open(config.my_asn, config.hold_time, router_id, tuple(caps))


def export_attributes(attrs: RouteAttrs, *, ibgp: bool, my_asn: int,
                      ipv4_next_hop: str | None) -> list[Attribute]:
    """The path attributes sent for a route: our AS prepended for eBGP, an empty path
    for iBGP; LOCAL_PREF only on iBGP (RFC 4271 §5.1.5).  The IPv4 NEXT_HOP is
    included when given; other families carry theirs in MP_REACH_NLRI."""
    out: list[Attribute] = [Origin(attrs.origin),
                            AsPath() if ibgp else AsPath.sequence(my_asn)]
    if ipv4_next_hop is not None:
        out.append(NextHop(ipv4_next_hop))
    if attrs.med is not None:
        out.append(Med(attrs.med))
    if ibgp:
        out.append(LocalPref(DEFAULT_LOCAL_PREF if attrs.local_pref is None
                             else attrs.local_pref))
    if attrs.communities:
        out.append(Communities(tuple(sorted(set(attrs.communities)))))
    if attrs.large_communities:
        out.append(LargeCommunities(tuple(sorted(set(attrs.large_communities)))))
    return out


@dataclass(frozen=True)
class RibChange:
    """What `Peer.set` or `Peer.update` changed in the Adj-RIB-Out."""

    announced: dict[Network, RouteAttrs]
    withdrawn: list[Network]


class Peer:
    def __init__(self, config: PeerConfig, router_id: str, batch_delay: float = 0.02) -> None:
        self.config = config
        self.router_id = config.router_id or router_id
        self.batch_delay = batch_delay
        self.name = f"{config.peer_address}" + (
            f":{config.peer_port}" if config.peer_port != 179 else "")
        self.fsm = Fsm(FsmConfig(
            local_open=local_open(config, self.router_id),
            peer_as=None if config.dynamic_asn else config.peer_asn,
            dynamic_asn=config.dynamic_asn,
            hold_time=config.hold_time, keepalive_time=config.keepalive_time,
            connect_retry_time=config.connect_retry_time, backoff_max=config.backoff_max,
            passive=config.passive, min_hold_time=config.min_hold_time))
        self.conn: Connection | None = None
        self.pending: Connection | None = None
        self.rib: dict[Network, RouteAttrs] = {}  # the Adj-RIB-Out
        self._dirty: dict[Network, None] = {}  # changed since the last flush, in order
        self._refresh: set[int] = set()  # AFIs to send whole on the next flush
        self._wake = asyncio.Event()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._connect_task: asyncio.Task[None] | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._established_mono: float | None = None
        self._established_wall: float | None = None
        self._warned_next_hop: set[int] = set()
        self.messages_in = 0
        self.messages_out = 0
        self.updates_out = 0  # UPDATE messages, End-of-RIB markers included
        self.peer_end_of_rib: set[Family] = set()

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        self._handle(ManualStart())

    async def stop(self, reason: str = "") -> None:
        """Cease / Administrative Shutdown if a session is up, then close everything."""
        conn = self.conn
        self._handle(ManualStop(reason))
        if self.pending is not None:
            self.pending.close()
            self.pending = None
        if conn is not None:
            await conn.wait_closed()

    def bfd_down(self, diag: str) -> None:
        """The tied BFD session went down: drop the session now (Cease / BFD Down),
        then reconnect as after any failure."""
        self._handle(BfdDown(diag))

    @property
    def state(self) -> State:
        return self.fsm.state

    @property
    def established(self) -> bool:
        return self.fsm.state == State.ESTABLISHED

    # -- routes ----------------------------------------------------------------------------

    def set(self, routes: Mapping[Network, RouteAttrs]) -> RibChange:
        """Make the Adj-RIB-Out exactly `routes`; what changed goes out on the next flush."""
        old = self.rib
        announced = {n: a for n, a in routes.items() if old.get(n) != a}
        withdrawn = [n for n in old if n not in routes]
        self.rib = dict(routes)
        if self._sender_task is not None and (announced or withdrawn):
            self._dirty.update(dict.fromkeys(withdrawn))
            self._dirty.update(dict.fromkeys(announced))
            self._wake.set()
        return RibChange(announced, withdrawn)

    def update(self, announce: Mapping[Network, RouteAttrs],
               withdraw: Iterable[Network] = ()) -> RibChange:
        """Change the Adj-RIB-Out by a delta: `announce` adds or replaces routes, `withdraw`
        removes prefixes (a prefix in both is announced).  Costs the size of the delta,
        not of the table; the RIB and what goes out are what `set` of the resulting
        whole table would give."""
        rib = self.rib
        announced = {n: a for n, a in announce.items() if rib.get(n) != a}
        withdrawn = [n for n in dict.fromkeys(withdraw) if n in rib and n not in announce]
        for n in withdrawn:
            del rib[n]
        rib.update(announced)
        if self._sender_task is not None and (announced or withdrawn):
            self._dirty.update(dict.fromkeys(withdrawn))
            self._dirty.update(dict.fromkeys(announced))
            self._wake.set()
        return RibChange(announced, withdrawn)

    def routes(self) -> list[tuple[Network, RouteAttrs]]:
        return list(self.rib.items())

    # -- incoming connections (collision handling, RFC 4271 §6.8) ---------------------------

    def accept(self, conn: Connection) -> None:
        state = self.fsm.state
        if state == State.ESTABLISHED or (state == State.IDLE and not self.fsm.started):
            subcode = (CEASE_CONNECTION_COLLISION_RESOLUTION if state == State.ESTABLISHED
                       else CEASE_CONNECTION_REJECTED)
            self._refuse(conn, subcode, f"session is {state.value}")
        elif state in (State.IDLE, State.CONNECT, State.ACTIVE):
            self._cancel_connect()
            self._adopt(conn)
        elif state == State.OPEN_CONFIRM:
            assert self.fsm.negotiated is not None
            self._resolve_collision(conn, self.fsm.negotiated.peer_router_id)
        elif self.pending is None:  # OpenSent: the peer's identifier is not known yet
            self.pending = conn
        else:
            self._refuse(conn, CEASE_CONNECTION_COLLISION_RESOLUTION, "a collision is pending")

    def _refuse(self, conn: Connection, subcode: int, why: str) -> None:
        log.info("BGP peer %s: refusing incoming connection: %s", self.name, why)
        conn.send(message.encode(Notification(CEASE, subcode)))
        conn.close()

    def _adopt(self, conn: Connection) -> None:
        self.conn = conn
        conn.start_reading(lambda msg: self._on_message(conn, msg),
                           lambda err: self._on_decode_error(conn, err),
                           lambda why: self._on_closed(conn, why))
        self._handle(TcpConnected(outgoing=conn.outgoing))

    def _resolve_collision(self, incoming: Connection, peer_router_id: str) -> None:
        current = self.conn
        if current is not None and current.outgoing and collision_winner_is_incoming(
                self.router_id, peer_router_id):
            log.info("BGP peer %s: connection collision, keeping the peer's connection",
                     self.name)
            self._handle(CollisionDump())
            self._adopt(incoming)
        else:
            self._refuse(incoming, CEASE_CONNECTION_COLLISION_RESOLUTION,
                         "connection collision, keeping ours")

    # -- the event/action loop ----------------------------------------------------------

    def _handle(self, event: Event) -> None:
        before = self.fsm.state
        actions = self.fsm.handle(event)
        for action in actions:
            self._perform(action)
        after = self.fsm.state
        if after == State.IDLE and before != State.IDLE:
            level = logging.INFO if isinstance(event, ManualStop) else logging.WARNING
            log.log(level, "BGP peer %s (AS %d): %s -> Idle: %s", self.name,
                    self.config.peer_asn, before.value, self.fsm.last_error)
        if after == State.IDLE and self.fsm.started and self.pending is not None:
            pending, self.pending = self.pending, None
            self._adopt(pending)

    def _perform(self, action: bgp_fsm.Action) -> None:
        if isinstance(action, Send):
            if self.conn is not None:
                self.conn.send(message.encode(action.message))
                self.messages_out += 1
        elif isinstance(action, StartTimer):
            self._stop_timer(action.timer)
            self._timers[action.timer] = asyncio.get_running_loop().call_later(
                action.seconds, self._timer_fired, action.timer)
        elif isinstance(action, StopTimer):
            self._stop_timer(action.timer)
        elif isinstance(action, Connect):
            self._cancel_connect()
            self._connect_task = asyncio.get_running_loop().create_task(self._connect())
        elif isinstance(action, Disconnect):
            self._cancel_connect()
            self._stop_sender()
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        elif isinstance(action, OpenAccepted):
            if self.conn is not None:
                self.conn.negotiated = action.negotiated
            if self.pending is not None:
                pending, self.pending = self.pending, None
                self._resolve_collision(pending, action.negotiated.peer_router_id)
        elif isinstance(action, SessionUp):
            self._session_up(action.negotiated)
        elif isinstance(action, SessionDown):
            self._established_mono = None
            self._established_wall = None
            self._stop_sender()
        elif isinstance(action, ResendRoutes):
            if action.family[1] == SAFI_UNICAST:
                self._refresh.add(action.family[0])
                self._wake.set()
        elif isinstance(action, UpdateReceived):
            family = action.update.end_of_rib()
            if family is not None:
                self.peer_end_of_rib.add(family)

    def _timer_fired(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self._handle(TimerExpired(timer))

    def _stop_timer(self, timer: Timer) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _cancel_connect(self) -> None:
        task, self._connect_task = self._connect_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _connect(self) -> None:
        cfg = self.config
        try:
            reader, writer = await open_connection(
                cfg.peer_address, cfg.peer_port, source_address=cfg.source_address,
                password=cfg.password, ttl=cfg.ttl, timeout=cfg.connect_retry_time)
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # includes TimeoutError
            if self._connect_task is asyncio.current_task():
                self._connect_task = None
                self._handle(TcpFailed(str(exc) or type(exc).__name__))
            return
        conn = Connection(reader, writer, outgoing=True)
        if self._connect_task is not asyncio.current_task() or self.conn is not None:
            conn.close()  # superseded (an incoming connection was adopted meanwhile)
            return
        self._connect_task = None
        self._adopt(conn)

    # -- connection callbacks (ignored once the connection is no longer ours) ---------------

    def _on_message(self, conn: Connection, msg: message.Message) -> None:
        if conn is self.conn:
            self.messages_in += 1
            if isinstance(msg, Update) and msg.errors:
                self._log_handled(msg)
            self._handle(MessageReceived(msg))

    def _log_handled(self, msg: Update) -> None:
        """RFC 7606 §8: an error handled without a reset is logged.  The speaker imports
        no routes, so a withdrawal or a discarded attribute changes nothing else here."""
        for err in msg.errors:
            log.warning("BGP peer %s: malformed UPDATE handled by %s (RFC 7606): %s%s",
                        self.name, err.handling.value, err,
                        f"; {len(msg.withdrawals())} prefixes treated as withdrawn"
                        if msg.treated_as_withdraw else "")

    def _on_decode_error(self, conn: Connection, err: BgpError) -> None:
        if conn is self.conn:
            self._handle(DecodeError(err))
        elif conn is self.pending:
            self.pending = None
            conn.close()

    def _on_closed(self, conn: Connection, why: str) -> None:
        if conn is self.conn:
            self._handle(TcpFailed(why))
        elif conn is self.pending:
            self.pending = None
            conn.close()

    # -- sending routes --------------------------------------------------------------------

    def _session_up(self, negotiated: Negotiated) -> None:
        conn = self.conn
        assert conn is not None
        self._established_mono = time.monotonic()
        self._established_wall = time.time()
        self.peer_end_of_rib = set()
        log.info("BGP peer %s (AS %d): Established (hold %ds, keepalive %ds, %s)", self.name,
                 negotiated.peer_as, negotiated.hold_time, negotiated.keepalive_time,
                 ", ".join(family_name(f) for f in sorted(negotiated.families)))
        self._stop_sender()
        self._sender_task = asyncio.get_running_loop().create_task(
            self._sender(conn, negotiated))

    def _stop_sender(self) -> None:
        task, self._sender_task = self._sender_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._dirty = {}
        self._refresh = set()

    async def _sender(self, conn: Connection, negotiated: Negotiated) -> None:
        afis = {afi for afi in (AFI_IPV4, AFI_IPV6) if (afi, SAFI_UNICAST) in negotiated.families}
        exported: dict[tuple[int, RouteAttrs], tuple[Attribute, ...] | None] = {}
        self._send(conn, [n for n in self.rib if afi_of(n) in afis], negotiated, exported)
        for family in sorted(negotiated.families):
            conn.send(end_of_rib(family))
            self.messages_out += 1
            self.updates_out += 1
        await conn.drain()
        while not conn.closed:
            await self._wake.wait()
            await asyncio.sleep(self.batch_delay)
            self._wake.clear()
            refresh, self._refresh = self._refresh & afis, set()
            dirty, self._dirty = self._dirty, {}
            # The whole RIB only for a route refresh: a change is its dirty keys.
            keys = [n for n in self.rib if afi_of(n) in refresh] if refresh else []
            keys += [n for n in dirty if afi_of(n) in afis - refresh]
            self._send(conn, keys, negotiated, exported)
            await conn.drain()

    def _send(self, conn: Connection, keys: list[Network], negotiated: Negotiated,
              exported: dict[tuple[int, RouteAttrs], tuple[Attribute, ...] | None]) -> None:
        """Withdraw the keys no longer in the RIB, announce the rest grouped by attributes."""
        if not keys:
            return
        groups: dict[tuple[int, RouteAttrs], list[Network]] = {}
        gone: list[Network] = []
        for key in keys:
            attrs = self.rib.get(key)
            if attrs is None:
                gone.append(key)
            else:
                groups.setdefault((afi_of(key), attrs), []).append(key)
        announce = []
        for group, prefixes in sorted(groups.items(), key=lambda item: item[0][0]):
            if group not in exported:
                exported[group] = self._export(conn, *group)
            attributes = exported[group]
            if attributes is not None:
                announce.append((attributes, prefixes))
        out = [update.encode(u, negotiated) for u in pack(announce, gone, negotiated)]
        if out:
            self.messages_out += len(out)
            self.updates_out += len(out)
            conn.send(b"".join(out))

    def _export(self, conn: Connection, afi: int, attrs: RouteAttrs
                ) -> tuple[Attribute, ...] | None:
        """The attributes `attrs` become on this session (None: no next hop to give)."""
        next_hop = self._next_hop(conn, afi, attrs)
        if next_hop is None:
            return None
        out = export_attributes(attrs, ibgp=self.config.ibgp, my_asn=self.config.my_asn,
                                ipv4_next_hop=next_hop if afi == AFI_IPV4 else None)
        if afi != AFI_IPV4:
            out.append(MpReachNlri(afi, SAFI_UNICAST, (next_hop,), ()))
        return tuple(out)

    def _next_hop(self, conn: Connection, afi: int, attrs: RouteAttrs) -> str | None:
        """Next hop self: our address on this session, unless the route or the peer
        config names one; a session of the other address family has no usable
        address of ours, so it needs the configured one."""
        if attrs.next_hop is not None:
            return attrs.next_hop
        configured = self.config.next_hop_ipv4 if afi == AFI_IPV4 else self.config.next_hop_ipv6
        if configured is not None:
            return configured
        local_is_v6 = ":" in conn.local_address
        if conn.local_address and (afi == AFI_IPV6) == local_is_v6:
            return conn.local_address
        if afi not in self._warned_next_hop:
            self._warned_next_hop.add(afi)
            log.warning("BGP peer %s: no %s next hop on this %s session; set next_hop_%s",
                        self.name, "IPv6" if afi == AFI_IPV6 else "IPv4",
                        "IPv6" if local_is_v6 else "IPv4",
                        "ipv6" if afi == AFI_IPV6 else "ipv4")
        return None

    # -- status ----------------------------------------------------------------------------

    def status(self) -> PeerStatus:
        neg = self.fsm.negotiated
        uptime = None
        if self._established_mono is not None and self.established:
            uptime = time.monotonic() - self._established_mono
        caps: tuple[str, ...] = ()
        if neg is not None and neg.peer_open is not None:
            caps = tuple(type(c).__name__ for c in neg.peer_open.capabilities)
        return PeerStatus(
            BGP, self.config.peer_address, self.fsm.state.value, uptime,
            peer_asn=self.config.peer_asn, local_asn=self.config.my_asn,
            last_error=self.fsm.last_error, prefixes_advertised=len(self.rib),
            peer_port=self.config.peer_port,
            local_address=self.conn.local_address if self.conn else None,
            peer_router_id=neg.peer_router_id if neg else None,
            hold_time=neg.hold_time if neg else None,
            keepalive_time=neg.keepalive_time if neg else None,
            established_since=self._established_wall if uptime is not None else None,
            families=tuple(family_name(f) for f in sorted(neg.families)) if neg else (),
            peer_capabilities=caps, messages_in=self.messages_in,
            messages_out=self.messages_out)
