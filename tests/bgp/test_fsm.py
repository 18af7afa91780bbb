"""The RFC 4271 §8 state machine without sockets: every state against every event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speaker.bgp import errors
from speaker.bgp.capabilities import FourOctetAs, GracefulRestart, Multiprotocol, RouteRefresh
from speaker.bgp.fsm import (
    LARGE_HOLD_TIME,
    Action,
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
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open
from speaker.bgp.route_refresh import RouteRefresh as RouteRefreshMessage
from speaker.bgp.update import Update

LOCAL = Open(64512, 90, "10.0.0.1", (Multiprotocol(1, 1), Multiprotocol(2, 1), RouteRefresh(),
                                     FourOctetAs(64512)))
PEER = Open(65112, 30, "10.0.0.254", (Multiprotocol(1, 1), FourOctetAs(65112),
                                     GracefulRestart(120)))


def make(passive: bool = False, **kw: object) -> Fsm:
    return Fsm(FsmConfig(local_open=LOCAL, peer_as=65112, passive=passive, **kw))  # type: ignore[arg-type]


def drive(fsm: Fsm, *events: Event) -> list[Action]:
    actions: list[Action] = []
    for event in events:
        actions = fsm.handle(event)
    return actions


def at(state: State, passive: bool = False) -> Fsm:
    """A fresh FSM brought to `state` along the normal path."""
    fsm = make(passive)
    path: list[Event] = []
    if state != State.IDLE:
        path.append(ManualStart())
    if state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
        path.append(TcpConnected())
    if state in (State.OPEN_CONFIRM, State.ESTABLISHED):
        path.append(MessageReceived(PEER))
    if state == State.ESTABLISHED:
        path.append(MessageReceived(Keepalive()))
    if state == State.ACTIVE and not passive:
        path.append(TcpFailed("refused"))
    drive(fsm, *path)
    assert fsm.state == state
    return fsm


def sent(actions: list[Action]) -> list[object]:
    return [a.message for a in actions if isinstance(a, Send)]


def test_manual_start_active_and_passive() -> None:
    fsm = make()
    actions = fsm.handle(ManualStart())
    assert fsm.state == State.CONNECT
    assert Connect() in actions and StartTimer(Timer.CONNECT_RETRY, 5.0) in actions
    fsm = make(passive=True)
    actions = fsm.handle(ManualStart())
    assert fsm.state == State.ACTIVE
    assert Connect() not in actions


def test_connect_success_sends_open_with_large_hold_timer() -> None:
    fsm = at(State.CONNECT)
    actions = fsm.handle(TcpConnected())
    assert fsm.state == State.OPEN_SENT
    assert actions == [StopTimer(Timer.CONNECT_RETRY), Send(LOCAL),
                       StartTimer(Timer.HOLD, LARGE_HOLD_TIME)]


def test_connect_failures_back_off_exponentially() -> None:
    fsm = at(State.CONNECT)
    delays = []
    for _ in range(9):
        actions = fsm.handle(TcpFailed("refused"))
        assert fsm.state == State.ACTIVE
        delays.append(next(a.seconds for a in actions if isinstance(a, StartTimer)))
        assert fsm.handle(TimerExpired(Timer.CONNECT_RETRY))[-1] == Connect()
        assert fsm.state == State.CONNECT
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_connect_retry_expiry_retries_and_passive_keeps_waiting() -> None:
    fsm = at(State.CONNECT)
    assert fsm.handle(TimerExpired(Timer.CONNECT_RETRY)) == [
        Disconnect(), StartTimer(Timer.CONNECT_RETRY, 5.0), Connect()]
    passive = at(State.ACTIVE, passive=True)
    assert passive.handle(TimerExpired(Timer.CONNECT_RETRY)) == [
        StartTimer(Timer.CONNECT_RETRY, 5.0)]
    assert passive.state == State.ACTIVE
    passive.handle(TcpConnected(outgoing=False))
    assert passive.state == State.OPEN_SENT


def test_open_accepted_negotiates() -> None:
    fsm = at(State.OPEN_SENT)
    actions = fsm.handle(MessageReceived(PEER))
    assert fsm.state == State.OPEN_CONFIRM
    assert sent(actions) == [Keepalive()]
    assert StartTimer(Timer.HOLD, 30) in actions and StartTimer(Timer.KEEPALIVE, 10) in actions
    accepted = [a for a in actions if isinstance(a, OpenAccepted)]
    assert len(accepted) == 1
    neg = accepted[0].negotiated
    assert (neg.hold_time, neg.keepalive_time, neg.peer_as) == (30, 10, 65112)
    assert neg.four_octet_as and not neg.route_refresh
    assert neg.families == {(1, 1)}
    assert neg.peer_graceful_restart == GracefulRestart(120)


def test_keepalive_time_configured_and_zero_hold_time() -> None:
    fsm = make(keepalive_time=3)
    drive(fsm, ManualStart(), TcpConnected())
    actions = fsm.handle(MessageReceived(PEER))
    assert StartTimer(Timer.KEEPALIVE, 3) in actions
    fsm = make()
    drive(fsm, ManualStart(), TcpConnected())
    actions = fsm.handle(MessageReceived(Open(65112, 0, "10.0.0.254")))
    assert not [a for a in actions if isinstance(a, StartTimer)]
    assert fsm.negotiated is not None and fsm.negotiated.families == {(1, 1)}
    # With hold time 0 nothing restarts the hold timer once established.
    assert fsm.handle(MessageReceived(Keepalive()))[0] == SessionUp(fsm.negotiated)
    assert fsm.handle(MessageReceived(Keepalive())) == []


@pytest.mark.parametrize("peer_open, subcode", [
    (Open(65999, 30, "10.0.0.254"), errors.BAD_PEER_AS),
    (Open(65112, 2, "10.0.0.254"), errors.UNACCEPTABLE_HOLD_TIME),
    (Open(65112, 30, "0.0.0.0"), errors.BAD_BGP_IDENTIFIER),
])
def test_bad_open_sends_notification_and_backs_off(peer_open: Open, subcode: int) -> None:
    fsm = at(State.OPEN_SENT)
    actions = fsm.handle(MessageReceived(peer_open))
    assert fsm.state == State.IDLE
    notes = sent(actions)
    assert len(notes) == 1 and isinstance(notes[0], Notification)
    assert (notes[0].code, notes[0].subcode) == (2, subcode)
    assert actions.index(Send(notes[0])) < actions.index(Disconnect())
    assert StartTimer(Timer.IDLE_HOLD, 1.0) in actions
    assert fsm.connect_retry_counter == 1
    # The back-off expiry restarts the FSM automatically.
    assert Connect() in fsm.handle(TimerExpired(Timer.IDLE_HOLD))
    assert fsm.state == State.CONNECT


def test_established_flow() -> None:
    fsm = at(State.OPEN_CONFIRM)
    fsm.connect_retry_counter = 3
    actions = fsm.handle(MessageReceived(Keepalive()))
    assert fsm.state == State.ESTABLISHED
    assert fsm.connect_retry_counter == 0
    assert actions[0] == StartTimer(Timer.HOLD, 30)
    assert isinstance(actions[1], SessionUp)
    assert fsm.handle(MessageReceived(Keepalive())) == [StartTimer(Timer.HOLD, 30)]
    update = Update()
    assert fsm.handle(MessageReceived(update))[-1] == UpdateReceived(update)
    assert fsm.handle(MessageReceived(RouteRefreshMessage(2, 1)))[-1] == ResendRoutes((2, 1))
    assert fsm.handle(TimerExpired(Timer.KEEPALIVE)) == [
        Send(Keepalive()), StartTimer(Timer.KEEPALIVE, 10)]


@pytest.mark.parametrize("state, event, code, subcode", [
    (State.OPEN_SENT, MessageReceived(Keepalive()), 5, 1),
    (State.OPEN_SENT, MessageReceived(Update()), 5, 1),
    (State.OPEN_CONFIRM, MessageReceived(Update()), 5, 2),
    (State.OPEN_CONFIRM, MessageReceived(PEER), 5, 2),
    (State.ESTABLISHED, MessageReceived(PEER), 5, 3),
    (State.OPEN_SENT, TimerExpired(Timer.HOLD), 4, 0),
    (State.OPEN_CONFIRM, TimerExpired(Timer.HOLD), 4, 0),
    (State.ESTABLISHED, TimerExpired(Timer.HOLD), 4, 0),
    (State.ESTABLISHED, DecodeError(errors.update_error(4, "flags", b"\xc0\x01\x01\x00")), 3, 4),
    (State.OPEN_SENT, DecodeError(errors.header_error(1, "marker")), 1, 1),
    (State.ESTABLISHED, ManualStop("maintenance"), 6, 2),
    (State.OPEN_SENT, ManualStop(), 6, 2),
    (State.ESTABLISHED, BfdDown("control detection time expired"), 6, 10),  # RFC 9384
    (State.OPEN_CONFIRM, BfdDown(), 6, 10),
])
def test_errors_notify_then_close(state: State, event: Event, code: int, subcode: int) -> None:
    fsm = at(state)
    actions = fsm.handle(event)
    assert fsm.state == State.IDLE
    notes = [m for m in sent(actions) if isinstance(m, Notification)]
    assert [(n.code, n.subcode) for n in notes] == [(code, subcode)]
    assert Disconnect() in actions
    assert (SessionDown in {type(a) for a in actions}) == (state == State.ESTABLISHED)
    assert fsm.negotiated is None


def test_manual_stop_is_final_until_started_again() -> None:
    fsm = at(State.ESTABLISHED)
    actions = fsm.handle(ManualStop("bye"))
    note = sent(actions)[0]
    assert isinstance(note, Notification) and note.communication() == "bye"
    assert not [a for a in actions if isinstance(a, StartTimer)]
    assert fsm.handle(TimerExpired(Timer.IDLE_HOLD)) == []
    assert fsm.handle(TcpConnected(outgoing=False)) == [Disconnect()]  # stopped: refuse
    assert fsm.state == State.IDLE
    fsm.handle(ManualStart())
    assert fsm.state == State.CONNECT


def test_notification_received_closes_without_reply() -> None:
    for state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
        fsm = at(state)
        actions = fsm.handle(MessageReceived(Notification(6, 2)))
        assert fsm.state == State.IDLE and sent(actions) == []
        assert "Administrative Shutdown" in fsm.last_error
        assert fsm.connect_retry_counter == 1
    fsm = at(State.OPEN_SENT)
    fsm.handle(MessageReceived(Notification(2, 1, b"\x00\x04")))
    assert fsm.connect_retry_counter == 0  # version mismatch is not flapping


def test_tcp_failure_in_every_connected_state() -> None:
    for state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
        fsm = at(state)
        actions = fsm.handle(TcpFailed("reset"))
        assert fsm.state == State.IDLE and sent(actions) == []
        assert StartTimer(Timer.IDLE_HOLD, 1.0) in actions


def test_incoming_connection_cuts_the_back_off_short() -> None:
    fsm = at(State.OPEN_SENT)
    fsm.handle(TcpFailed("reset"))
    assert fsm.state == State.IDLE and fsm.started
    actions = fsm.handle(TcpConnected(outgoing=False))
    assert fsm.state == State.OPEN_SENT
    assert StopTimer(Timer.IDLE_HOLD) in actions and Send(LOCAL) in actions


def test_collision_dump() -> None:
    for state in (State.OPEN_SENT, State.OPEN_CONFIRM):
        fsm = at(state)
        actions = fsm.handle(CollisionDump())
        assert fsm.state == State.IDLE
        assert sent(actions) == [Notification(6, 7)]
        assert Disconnect() in actions
        assert not [a for a in actions if isinstance(a, StartTimer)]
        assert fsm.connect_retry_counter == 0
    fsm = at(State.ESTABLISHED)
    assert fsm.handle(CollisionDump()) == []
    assert fsm.state == State.ESTABLISHED


def test_collision_rule() -> None:
    assert collision_winner_is_incoming("10.0.0.1", "10.0.0.2")
    assert not collision_winner_is_incoming("10.0.0.2", "10.0.0.1")
    # Identifiers compare as numbers, not as text.
    assert collision_winner_is_incoming("9.255.255.255", "10.0.0.0")


ALL_EVENTS: list[Event] = [
    ManualStart(), ManualStop(), TcpConnected(True), TcpConnected(False), TcpFailed("x"),
    *(TimerExpired(t) for t in Timer),
    MessageReceived(PEER), MessageReceived(Open(1, 30, "1.1.1.1")), MessageReceived(Keepalive()),
    MessageReceived(Update()), MessageReceived(RouteRefreshMessage(1, 1)),
    MessageReceived(Notification(6, 4)), DecodeError(errors.header_error(2, "len", b"\x00\x05")),
    CollisionDump(), BfdDown(),
]


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("passive", [False, True])
def test_every_state_accepts_every_event(state: State, passive: bool) -> None:
    for event in ALL_EVENTS:
        if state == State.CONNECT and passive:
            continue
        fsm = at(state, passive)
        before = fsm.state
        actions = fsm.handle(event)
        # Whenever a connected session leaves for Idle, the connection is dropped.
        connected = before in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED)
        if connected and fsm.state == State.IDLE:
            assert Disconnect() in actions, (before, event)
        # Keepalive/hold timers never outlive a connection.
        if fsm.state in (State.IDLE, State.CONNECT, State.ACTIVE):
            assert not [a for a in actions if isinstance(a, StartTimer)
                        and a.timer in (Timer.HOLD, Timer.KEEPALIVE)], (before, event)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALL_EVENTS), max_size=40), st.booleans())
def test_random_event_sequences_keep_invariants(events: list[Event], passive: bool) -> None:
    fsm = make(passive)
    up = 0
    for event in events:
        for action in fsm.handle(event):
            if isinstance(action, SessionUp):
                up += 1
            elif isinstance(action, SessionDown):
                up -= 1
            assert up in (0, 1)
        assert (up == 1) == (fsm.state == State.ESTABLISHED)
        assert (fsm.negotiated is not None) == (fsm.state in (State.OPEN_CONFIRM,
                                                              State.ESTABLISHED))


@pytest.mark.parametrize("state", [State.IDLE, State.CONNECT, State.ACTIVE])
def test_bfd_down_without_a_session_changes_nothing(state: State) -> None:
    fsm = at(state)
    assert fsm.handle(BfdDown()) == [] and fsm.state == state


def test_bfd_down_restarts_after_the_back_off() -> None:
    fsm = at(State.ESTABLISHED)
    actions = fsm.handle(BfdDown("neighbor signaled session down"))
    assert "BFD session down: neighbor signaled session down" == fsm.last_error
    assert StartTimer(Timer.IDLE_HOLD, 1.0) in actions  # then reconnect, as after any failure
    assert fsm.handle(TimerExpired(Timer.IDLE_HOLD))[-1] == Connect()


@pytest.mark.parametrize("mode, peer_as, accepted", [
    ("internal", 64512, True), ("internal", 65112, False),
    ("external", 65112, True), ("external", 4200000000, True), ("external", 64512, False),
])
def test_dynamic_asn(mode: str, peer_as: int, accepted: bool) -> None:
    """MetalLB's dynamicASN: any AS from the peer's OPEN, internal = ours, external =
    not ours; otherwise NOTIFICATION OPEN Message Error / Bad Peer AS."""
    fsm = Fsm(FsmConfig(local_open=LOCAL, peer_as=None, dynamic_asn=mode))
    drive(fsm, ManualStart(), TcpConnected())
    peer = Open(peer_as, 30, "10.0.0.254", (FourOctetAs(peer_as),))
    actions = fsm.handle(MessageReceived(peer))
    if accepted:
        assert fsm.state == State.OPEN_CONFIRM
        assert fsm.negotiated is not None and fsm.negotiated.peer_as == peer_as
    else:
        assert fsm.state == State.IDLE
        [note] = [m for m in sent(actions) if isinstance(m, Notification)]
        assert (note.code, note.subcode) == (errors.OPEN_MESSAGE_ERROR, errors.BAD_PEER_AS)
        assert f"dynamicASN {mode}" in fsm.last_error or "our own" in fsm.last_error


def test_dynamic_asn_peer_config() -> None:
    from speaker.bgp.peer import Peer, PeerConfig

    internal = PeerConfig("10.0.0.254", 0, 64512, dynamic_asn="internal")
    external = PeerConfig("10.0.0.254", 0, 64512, dynamic_asn="external")
    assert internal.ibgp and internal.ttl == 255
    assert not external.ibgp and external.ttl == 1
    assert Peer(internal, "10.0.0.1").fsm.config.peer_as is None
    with pytest.raises(ValueError, match="dynamic_asn 'both'"):
        PeerConfig("10.0.0.254", 0, 64512, dynamic_asn="both")
