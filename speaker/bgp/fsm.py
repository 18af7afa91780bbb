"""The BGP finite-state machine of RFC 4271 §8, as a pure function of (state, event).

`Fsm.handle(event)` changes the state and returns the actions the caller must
perform: send a message, start or stop a timer, open or drop the TCP connection,
report the session up or down.  There are no sockets, clocks or tasks in here,
so every transition is unit-tested directly; `session.py` is the thin layer that
turns socket and timer happenings into events and performs the actions.

Simplifications against the RFC, all optional features there: no DelayOpen
timer, one connection per FSM (the peer object detects collisions and feeds the
loser a CollisionDump), an incoming connection is taken even while backing off, and
"automatic restart" is built in: after an error the FSM goes to Idle and asks for
the IdleHold timer, whose expiry restarts it.  Its value doubles with every
failure in a row (ConnectRetryCounter) up to a ceiling, which gives the
exponential back-off RFC 4271 §8.1.1 suggests through DampPeerOscillations; a
failed TCP connect waits the same back-off as ConnectRetry in Active.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from speaker.bgp.capabilities import GracefulRestart, Multiprotocol
from speaker.bgp.capabilities import RouteRefresh as RouteRefreshCapability
from speaker.bgp.errors import (
    CEASE,
    CEASE_BFD_DOWN,
    CEASE_CONNECTION_COLLISION_RESOLUTION,
    FSM_ERROR,
    FSM_UNEXPECTED_IN_ESTABLISHED,
    FSM_UNEXPECTED_IN_OPENCONFIRM,
    FSM_UNEXPECTED_IN_OPENSENT,
    HOLD_TIMER_EXPIRED,
    OPEN_MESSAGE_ERROR,
    UNSUPPORTED_VERSION_NUMBER,
    BgpError,
)
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.negotiated import Negotiated
from speaker.bgp.nlri import IPV4_UNICAST, Family
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open, validate_open
from speaker.bgp.route_refresh import RouteRefresh
from speaker.bgp.update import Update


class State(enum.Enum):
    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


class Timer(enum.Enum):
    CONNECT_RETRY = "ConnectRetry"
    HOLD = "Hold"
    KEEPALIVE = "Keepalive"
    IDLE_HOLD = "IdleHold"


# --- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManualStart:
    pass


@dataclass(frozen=True)
class ManualStop:
    reason: str = ""


@dataclass(frozen=True)
class TimerExpired:
    timer: Timer


@dataclass(frozen=True)
class TcpConnected:
    """TcpCRAcked (our connect succeeded) or TcpConnectionConfirmed (we accepted one)."""

    outgoing: bool = True


@dataclass(frozen=True)
class TcpFailed:
    """TcpConnectionFails: the connect failed or an established connection closed."""

    reason: str = ""


@dataclass(frozen=True)
class CollisionDump:
    """OpenCollisionDump: collision detection chose the other connection (RFC 4271 §6.8)."""


@dataclass(frozen=True)
class MessageReceived:
    message: Open | Update | Notification | Keepalive | RouteRefresh


@dataclass(frozen=True)
class DecodeError:
    """BGPHeaderErr / BGPOpenMsgErr / UpdateMsgErr: the codec rejected a message."""

    error: BgpError


@dataclass(frozen=True)
class BfdDown:
    """The BFD session tied to this BGP session went down from Up (RFC 5882 §10.2):
    the forwarding path is gone, so the session goes too, without waiting for the
    hold time."""

    diag: str = ""


Event = ManualStart | ManualStop | TimerExpired | TcpConnected | TcpFailed | MessageReceived \
    | DecodeError | CollisionDump | BfdDown


# --- actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    message: Open | Keepalive | Notification


@dataclass(frozen=True)
class StartTimer:
    timer: Timer
    seconds: float


@dataclass(frozen=True)
class StopTimer:
    timer: Timer


@dataclass(frozen=True)
class Connect:
    """Initiate the outgoing TCP connection."""


@dataclass(frozen=True)
class Disconnect:
    """Close the TCP connection (after flushing what was sent)."""


@dataclass(frozen=True)
class OpenAccepted:
    """The peer's OPEN passed our checks (the moment collision detection runs)."""

    negotiated: Negotiated


@dataclass(frozen=True)
class SessionUp:
    negotiated: Negotiated


@dataclass(frozen=True)
class SessionDown:
    reason: str


@dataclass(frozen=True)
class ResendRoutes:
    """The peer asked for a route refresh of this family (RFC 2918)."""

    family: Family


@dataclass(frozen=True)
class UpdateReceived:
    update: Update


Action = Send | StartTimer | StopTimer | Connect | Disconnect | OpenAccepted | SessionUp \
    | SessionDown | ResendRoutes | UpdateReceived


# --- configuration -----------------------------------------------------------------------

# RFC 4271 §8.2.2 suggests a "large" hold time (4 minutes) while waiting for OPEN.
LARGE_HOLD_TIME = 240


@dataclass
class FsmConfig:
    local_open: Open
    peer_as: int | None
    hold_time: int = 90
    keepalive_time: int | None = None
    connect_retry_time: float = 5.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    passive: bool = False
    min_hold_time: int = 3
    dynamic_asn: str | None = None  # with peer_as None: "internal" or "external"


def negotiate(config: FsmConfig, peer: Open) -> Negotiated:
    """Hold time is the smaller of both (0 disables keepalives); keepalive is a third
    of it unless configured lower; a family counts if both announced it (no
    multiprotocol capability at all means IPv4 unicast only, RFC 4760 §8)."""
    hold = min(config.hold_time, peer.hold_time)
    keepalive = 0
    if hold:
        keepalive = max(1, hold // 3)
        if config.keepalive_time:
            keepalive = min(keepalive, config.keepalive_time)

    def families(msg: Open) -> set[Family]:
        mp = {(c.afi, c.safi) for c in msg.capabilities if isinstance(c, Multiprotocol)}
        return mp or {IPV4_UNICAST}

    gr = [c for c in peer.capabilities if isinstance(c, GracefulRestart)]
    return Negotiated(
        peer_as=peer.asn,
        peer_router_id=peer.router_id,
        hold_time=hold,
        keepalive_time=keepalive,
        four_octet_as=config.local_open.four_octet_as and peer.four_octet_as,
        families=frozenset(families(config.local_open) & families(peer)),
        route_refresh=any(isinstance(c, RouteRefreshCapability) for c in peer.capabilities),
        peer_graceful_restart=gr[0] if gr else None,
        peer_open=peer,
    )


_UNEXPECTED_SUBCODE = {
    State.OPEN_SENT: FSM_UNEXPECTED_IN_OPENSENT,
    State.OPEN_CONFIRM: FSM_UNEXPECTED_IN_OPENCONFIRM,
    State.ESTABLISHED: FSM_UNEXPECTED_IN_ESTABLISHED,
}


@dataclass
class Fsm:
    config: FsmConfig
    state: State = State.IDLE
    connect_retry_counter: int = 0
    negotiated: Negotiated | None = None
    last_error: str = ""
    # Whether a ManualStart is in force; after ManualStop the FSM stays in Idle.
    started: bool = False

    # -- helpers --

    def backoff(self) -> float:
        """The IdleHold / ConnectRetry wait after `connect_retry_counter` failures in a row."""
        if self.connect_retry_counter <= 0:
            return 0.0
        delay = self.config.backoff_base * 2 ** (self.connect_retry_counter - 1)
        return float(min(delay, self.config.backoff_max))

    def _start(self) -> list[Action]:
        if self.config.passive:
            self.state = State.ACTIVE
            return [StartTimer(Timer.CONNECT_RETRY, self.config.connect_retry_time)]
        self.state = State.CONNECT
        return [StartTimer(Timer.CONNECT_RETRY, self.config.connect_retry_time), Connect()]

    def _to_idle(self, reason: str, *, failure: bool = True,
                 notify: Notification | None = None) -> list[Action]:
        """Leave for Idle: tell the peer why (if at all), drop TCP, stop timers, and
        when still started, arm the back-off that restarts us."""
        was_established = self.state == State.ESTABLISHED
        actions: list[Action] = []
        if notify is not None:
            actions.append(Send(notify))
        if self.state != State.IDLE:
            actions.append(Disconnect())
        actions += [StopTimer(Timer.CONNECT_RETRY), StopTimer(Timer.HOLD),
                    StopTimer(Timer.KEEPALIVE)]
        if was_established:
            actions.append(SessionDown(reason))
        self.state = State.IDLE
        self.negotiated = None
        self.last_error = reason
        if failure:
            self.connect_retry_counter += 1
        if self.started:
            actions.append(StartTimer(Timer.IDLE_HOLD, max(self.backoff(), 0.001)))
        return actions

    def _fsm_error(self, what: str) -> list[Action]:
        subcode = _UNEXPECTED_SUBCODE.get(self.state, 0)
        return self._to_idle(f"unexpected {what} in {self.state.value}",
                             notify=Notification(FSM_ERROR, subcode))

    # -- the transition function --

    def handle(self, event: Event) -> list[Action]:
        if isinstance(event, ManualStart):
            if self.state != State.IDLE:
                return []
            self.started = True
            self.connect_retry_counter = 0
            return [StopTimer(Timer.IDLE_HOLD), *self._start()]
        if isinstance(event, ManualStop):
            self.started = False
            self.connect_retry_counter = 0
            notify = None
            if self.state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
                notify = Notification.shutdown(event.reason)
            actions = self._to_idle(f"stopped{': ' + event.reason if event.reason else ''}",
                                    failure=False, notify=notify)
            return [StopTimer(Timer.IDLE_HOLD), *actions]
        if self.state == State.IDLE:
            return self._idle(event)
        if self.state in (State.CONNECT, State.ACTIVE):
            return self._connecting(event)
        return self._open_or_established(event)

    def _idle(self, event: Event) -> list[Action]:
        if isinstance(event, TimerExpired) and event.timer == Timer.IDLE_HOLD and self.started:
            return self._start()  # automatic restart
        if isinstance(event, TcpConnected):
            if not self.started:
                return [Disconnect()]
            # An incoming connection while we wait out the back-off: the peer is ready
            # now, so take it rather than refuse and make it back off too.
            return [StopTimer(Timer.IDLE_HOLD), *self._connected()]
        return []

    def _connected(self) -> list[Action]:
        self.state = State.OPEN_SENT
        return [StopTimer(Timer.CONNECT_RETRY), Send(self.config.local_open),
                StartTimer(Timer.HOLD, LARGE_HOLD_TIME)]

    def _connecting(self, event: Event) -> list[Action]:
        if isinstance(event, TimerExpired) and event.timer == Timer.CONNECT_RETRY:
            actions: list[Action] = [StartTimer(Timer.CONNECT_RETRY,
                                                self.config.connect_retry_time)]
            if self.config.passive:
                return actions
            self.state = State.CONNECT
            return [Disconnect(), *actions, Connect()]
        if isinstance(event, TcpConnected):
            return self._connected()
        if isinstance(event, TcpFailed):
            # Wait in Active, where an incoming connection is still welcome, for a
            # ConnectRetry that doubles with each failure in a row.
            self.connect_retry_counter += 1
            self.last_error = f"connect failed: {event.reason}"
            self.state = State.ACTIVE
            return [StartTimer(Timer.CONNECT_RETRY, self.backoff())]
        if isinstance(event, TimerExpired | BfdDown):
            return []  # no session to take down yet
        # Any BGP message before the connection exists cannot happen on a socket we
        # own; treat it as the RFC's "any other event": back to Idle.
        return self._to_idle(f"unexpected event {type(event).__name__} in {self.state.value}")

    def _open_or_established(self, event: Event) -> list[Action]:
        state = self.state
        if isinstance(event, TimerExpired):
            if event.timer == Timer.HOLD:
                return self._to_idle("hold timer expired",
                                     notify=Notification(HOLD_TIMER_EXPIRED, 0))
            if event.timer == Timer.KEEPALIVE and state != State.OPEN_SENT:
                assert self.negotiated is not None
                return [Send(Keepalive()),
                        StartTimer(Timer.KEEPALIVE, self.negotiated.keepalive_time)]
            return []
        if isinstance(event, TcpConnected):
            # A second connection is the peer object's business (collision handling).
            return []
        if isinstance(event, CollisionDump):
            if state == State.ESTABLISHED:
                return []  # an established session always wins
            actions = self._to_idle("connection collision: keeping the other connection",
                                    failure=False,
                                    notify=Notification(CEASE,
                                                        CEASE_CONNECTION_COLLISION_RESOLUTION))
            # The winning connection is adopted at once: no back-off wait.
            return [a for a in actions if not (isinstance(a, StartTimer)
                                               and a.timer == Timer.IDLE_HOLD)]
        if isinstance(event, TcpFailed):
            return self._to_idle(f"connection closed: {event.reason}")
        if isinstance(event, BfdDown):
            # Cease / BFD Down (RFC 9384) in case the connection still carries it; the
            # restart then follows the usual back-off.
            return self._to_idle(f"BFD session down{': ' + event.diag if event.diag else ''}",
                                 notify=Notification(CEASE, CEASE_BFD_DOWN))
        if isinstance(event, DecodeError):
            err = event.error
            return self._to_idle(f"sent NOTIFICATION {err}",
                                 notify=Notification.from_error(err))
        if not isinstance(event, MessageReceived):
            return []  # ManualStart/ManualStop were handled in handle()
        msg = event.message
        if isinstance(msg, Notification):
            # A peer that does not speak version 4 is not "flapping": no back-off bump.
            version = (msg.code, msg.subcode) == (OPEN_MESSAGE_ERROR, UNSUPPORTED_VERSION_NUMBER)
            return self._to_idle(f"received NOTIFICATION {msg}", failure=not version)
        if state == State.OPEN_SENT:
            if not isinstance(msg, Open):
                return self._fsm_error(type(msg).__name__)
            return self._open_received(msg)
        if state == State.OPEN_CONFIRM:
            if isinstance(msg, Keepalive):
                assert self.negotiated is not None
                self.state = State.ESTABLISHED
                self.connect_retry_counter = 0
                return [*self._restart_hold(), SessionUp(self.negotiated)]
            return self._fsm_error(type(msg).__name__)
        # Established
        if isinstance(msg, Keepalive):
            return self._restart_hold()
        if isinstance(msg, Update):
            return [*self._restart_hold(), UpdateReceived(msg)]
        if isinstance(msg, RouteRefresh):
            return [*self._restart_hold(), ResendRoutes(msg.family)]
        return self._fsm_error(type(msg).__name__)

    def _restart_hold(self) -> list[Action]:
        assert self.negotiated is not None
        if not self.negotiated.hold_time:
            return []
        return [StartTimer(Timer.HOLD, self.negotiated.hold_time)]

    def _open_received(self, msg: Open) -> list[Action]:
        local = self.config.local_open
        try:
            validate_open(msg, peer_as=self.config.peer_as, local_router_id=local.router_id,
                          ibgp=msg.asn == local.asn, min_hold_time=self.config.min_hold_time,
                          dynamic_asn=self.config.dynamic_asn, local_as=local.asn)
        except BgpError as err:
            return self._to_idle(f"sent NOTIFICATION {err}", notify=Notification.from_error(err))
        negotiated = negotiate(self.config, msg)
        self.negotiated = negotiated
        self.state = State.OPEN_CONFIRM
        actions: list[Action] = [Send(Keepalive())]
        if negotiated.hold_time:
            actions += [StartTimer(Timer.KEEPALIVE, negotiated.keepalive_time),
                        StartTimer(Timer.HOLD, negotiated.hold_time)]
        else:
            actions += [StopTimer(Timer.HOLD)]
        return [*actions, OpenAccepted(negotiated)]


def collision_winner_is_incoming(local_router_id: str, peer_router_id: str) -> bool:
    """RFC 4271 §6.8: keep the connection opened by the side with the higher BGP
    identifier (compared as 32-bit numbers)."""
    def number(ident: str) -> int:
        a, b, c, d = (int(x) for x in ident.split("."))
        return (a << 24) | (b << 16) | (c << 8) | d

    return number(local_router_id) < number(peer_router_id)

