"""One BFD session's state machine (RFC 5880 §6.2, §6.8), as pure functions of
(variables, event) -> (new variables, actions).

`handle(vars, event)` takes a received packet (already through `packet.decode`),
the expiry of the detection timer, the periodic transmit tick, new parameters
from the profile, or an administrative stop, and returns the session's new
variables and what the caller must do: send a packet now, (re)arm or disarm the
detection timer, report a state change.  `tx_interval` and `jittered` give the
periodic transmit schedule (§6.8.7), `detection_time` the detection timer
(§6.8.4); the asyncio layer supplies the clock and the randomness.

Asynchronous mode only: no demand mode, no echo function (we advertise a Required
Min Echo RX Interval of 0, which tells the peer not to send echoes, §6.8.9).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from speaker.bfd.packet import ControlPacket, Diag, State

# §6.8.3: while the session is not Up, Desired Min TX must be at least one second.
SLOW_TX_US = 1_000_000


@dataclass(frozen=True)
class Params:
    """What the profile asks for, in microseconds."""

    desired_min_tx_us: int = 300_000
    required_min_rx_us: int = 300_000
    detect_mult: int = 3
    passive: bool = False


@dataclass(frozen=True)
class Vars:
    """The state variables of §6.8.1 (those asynchronous mode uses)."""

    local_discr: int
    params: Params = Params()
    state: State = State.DOWN
    remote_state: State = State.DOWN
    remote_discr: int = 0
    local_diag: Diag = Diag.NONE
    remote_min_rx_us: int = 1
    # From the last packet received: what the detection time is computed from.
    remote_desired_min_tx_us: int = 0
    remote_detect_mult: int = 0
    poll_pending: bool = False  # a Poll Sequence is in progress (§6.5)
    # The parameters in force before a change made while Up: until the Poll Sequence
    # that announced the change ends, timing uses the slower of old and new (§6.8.3).
    held: Params | None = None

    @property
    def desired_min_tx_us(self) -> int:
        if self.state == State.UP:
            return self.params.desired_min_tx_us
        return max(self.params.desired_min_tx_us, SLOW_TX_US)

    def packet(self, *, poll: bool = False, final: bool = False) -> ControlPacket:
        return ControlPacket(
            state=self.state, diag=self.local_diag, detect_mult=self.params.detect_mult,
            my_discriminator=self.local_discr, your_discriminator=self.remote_discr,
            desired_min_tx_us=self.desired_min_tx_us,
            required_min_rx_us=self.params.required_min_rx_us, poll=poll, final=final)


# --- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    packet: ControlPacket


@dataclass(frozen=True)
class DetectionExpired:
    pass


@dataclass(frozen=True)
class TransmitDue:
    """The periodic transmit timer fired."""


@dataclass(frozen=True)
class AdminStop:
    pass


@dataclass(frozen=True)
class Reconfigure:
    """The profile changed: new intervals, multiplier or passive role, applied to the
    running session (no teardown: the peer learns them through a Poll Sequence)."""

    params: Params


Event = Received | DetectionExpired | TransmitDue | AdminStop | Reconfigure


# --- actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    packet: ControlPacket


@dataclass(frozen=True)
class ArmDetection:
    seconds: float


@dataclass(frozen=True)
class DisarmDetection:
    pass


@dataclass(frozen=True)
class StateChanged:
    old: State
    new: State
    diag: Diag


Action = Send | ArmDetection | DisarmDetection | StateChanged


# --- timers ------------------------------------------------------------------------------

def may_transmit(v: Vars) -> bool:
    """§6.8.7: no periodic packets while the peer asks for none (Required Min RX 0),
    nor, in the passive role, before the peer's discriminator is known."""
    if v.remote_min_rx_us == 0:
        return False
    return not (v.params.passive and v.remote_discr == 0)


def tx_interval(v: Vars) -> float:
    """Seconds between periodic packets before jitter: the larger of our Desired Min
    TX and the peer's Required Min RX.  During a Poll Sequence that raised Desired Min
    TX, the old pace holds: the peer's detection time still assumes it (§6.8.3)."""
    tx = v.desired_min_tx_us
    if v.held is not None and v.state == State.UP:
        tx = min(tx, v.held.desired_min_tx_us)
    return max(tx, v.remote_min_rx_us) / 1e6


def jittered(interval: float, detect_mult: int, r: float) -> float:
    """§6.8.7: 75-100 % of the interval, or 75-90 % with a detect multiplier of 1;
    `r` is a random number in [0, 1)."""
    top = 0.90 if detect_mult == 1 else 1.0
    return interval * (0.75 + (top - 0.75) * r)


def detection_time(v: Vars) -> float:
    """§6.8.4, asynchronous mode: the peer's Detect Mult times the larger of our
    Required Min RX and the peer's last Desired Min TX, in seconds.  During a Poll
    Sequence that lowered Required Min RX, the old value holds (§6.8.3): the peer may
    not have sped up yet."""
    rx = v.params.required_min_rx_us
    if v.held is not None:
        rx = max(rx, v.held.required_min_rx_us)
    return v.remote_detect_mult * max(rx, v.remote_desired_min_tx_us) / 1e6


# --- the transition function -------------------------------------------------------------

def _goto(v: Vars, new: State, diag: Diag) -> tuple[Vars, list[Action]]:
    """Change state; Desired Min TX follows (slow unless Up), which starts a Poll
    Sequence when it changes (§6.8.3).  The new state is sent at once rather than
    at the next tick, so the peer learns it without waiting an interval."""
    if new == v.state:
        return v, []
    before = v.desired_min_tx_us
    changed = dataclasses.replace(v, state=new, local_diag=diag)
    if changed.desired_min_tx_us != before:
        changed = dataclasses.replace(changed, poll_pending=True)
    return changed, [StateChanged(v.state, new, diag)]


def handle(v: Vars, event: Event) -> tuple[Vars, list[Action]]:
    if isinstance(event, Received):
        return _received(v, event.packet)
    if isinstance(event, TransmitDue):
        if v.state == State.ADMIN_DOWN or not may_transmit(v):
            return v, []
        return v, [Send(v.packet(poll=v.poll_pending))]
    if isinstance(event, Reconfigure):
        return _reconfigure(v, event.params)
    if isinstance(event, DetectionExpired):
        actions: list[Action] = []
        if v.state in (State.INIT, State.UP):
            v, actions = _goto(v, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED)
        # §6.8.1: the peer's discriminator is forgotten once the detection time passes.
        v = dataclasses.replace(v, remote_discr=0, remote_state=State.DOWN,
                                remote_min_rx_us=1, poll_pending=False, held=None)
        if actions and may_transmit(v):
            actions.append(Send(v.packet()))
        return v, actions
    # AdminStop
    if v.state == State.ADMIN_DOWN:
        return v, []
    v, actions = _goto(v, State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN)
    # A passive session that never heard from its peer has no one to tell.
    tell = [Send(v.packet())] if may_transmit(v) else []
    return v, [*actions, DisarmDetection(), *tell]


def _received(v: Vars, pkt: ControlPacket) -> tuple[Vars, list[Action]]:
    """§6.8.6 from "If the Your Discriminator field is nonzero" on; the checks that
    need no session were made by `packet.decode`."""
    if pkt.your_discriminator not in (0, v.local_discr):
        return v, []
    if v.state == State.ADMIN_DOWN:
        return v, []
    v = dataclasses.replace(
        v, remote_discr=pkt.my_discriminator, remote_state=pkt.state,
        remote_min_rx_us=pkt.required_min_rx_us,
        remote_desired_min_tx_us=pkt.desired_min_tx_us, remote_detect_mult=pkt.detect_mult,
        poll_pending=v.poll_pending and not pkt.final,
        held=None if pkt.final else v.held)
    actions: list[Action] = []
    if pkt.state == State.ADMIN_DOWN:
        if v.state != State.DOWN:
            v, actions = _goto(v, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN)
    elif v.state == State.DOWN:
        if pkt.state == State.DOWN:
            v, actions = _goto(v, State.INIT, Diag.NONE)
        elif pkt.state == State.INIT:
            v, actions = _goto(v, State.UP, Diag.NONE)
    elif v.state == State.INIT:
        if pkt.state in (State.INIT, State.UP):
            v, actions = _goto(v, State.UP, Diag.NONE)
    elif pkt.state == State.DOWN:  # Up
        v, actions = _goto(v, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN)
    if pkt.poll:
        # §6.5: answer a Poll at once with Final (never both bits in one packet).
        actions.append(Send(v.packet(final=True)))
    elif actions and may_transmit(v):
        actions.append(Send(v.packet(poll=v.poll_pending)))
    actions.append(ArmDetection(detection_time(v)))
    return v, actions


def _reconfigure(v: Vars, params: Params) -> tuple[Vars, list[Action]]:
    """§6.8.3: while Up, a changed Desired Min TX or Required Min RX starts a Poll
    Sequence (the new values go out at once with Poll set) and the old ones keep
    governing our timing until the peer's Final.  Before Up nothing depends on them
    yet: the periodic packets carry them."""
    if params == v.params or v.state != State.UP:
        return dataclasses.replace(v, params=params), []
    timing = (params.desired_min_tx_us != v.params.desired_min_tx_us
              or params.required_min_rx_us != v.params.required_min_rx_us)
    v = dataclasses.replace(v, params=params, held=(v.held or v.params) if timing else v.held,
                            poll_pending=v.poll_pending or timing)
    if not may_transmit(v):
        return v, []
    return v, [Send(v.packet(poll=v.poll_pending))]
