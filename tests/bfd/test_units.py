"""BFD's pure parts: the control packet against RFC 5880 §4.1's layout and §6.8.6's
discard rules, the session state machine of §6.2/§6.8.6, and the timer arithmetic
of §6.8.4 and §6.8.7."""

from __future__ import annotations

import dataclasses
import logging
import struct

import pytest

from foundation.kube.model.metallb import BFDProfile
from speaker.bfd import session as m
from speaker.bfd.packet import BfdDecodeError, ControlPacket, Diag, State, decode
from speaker.bfd.profile import bfd_config

# A packet as the RFC draws it, written field by field: version 1, diag 3, state Up,
# Poll, detect mult 3, length 24, discriminators 0x11223344 / 0x55667788, intervals.
WIRE = bytes([0x20 | 3, (3 << 6) | 0x20, 3, 24]) + struct.pack(
    "!IIIII", 0x11223344, 0x55667788, 300_000, 250_000, 0)


def test_encode_matches_rfc_layout() -> None:
    pkt = ControlPacket(state=State.UP, diag=Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, poll=True,
                        detect_mult=3, my_discriminator=0x11223344,
                        your_discriminator=0x55667788, desired_min_tx_us=300_000,
                        required_min_rx_us=250_000)
    assert pkt.encode() == WIRE
    assert decode(WIRE) == pkt


def test_flag_bits() -> None:
    pkt = ControlPacket(state=State.INIT, final=True, control_plane_independent=True,
                        detect_mult=5, my_discriminator=1, your_discriminator=2,
                        desired_min_tx_us=1, required_min_rx_us=1)
    assert pkt.encode()[1] == (2 << 6) | 0x10 | 0x08
    assert decode(pkt.encode()) == pkt
    with pytest.raises(ValueError, match="Poll and Final"):
        ControlPacket(state=State.UP, poll=True, final=True, detect_mult=1,
                      my_discriminator=1, your_discriminator=1, desired_min_tx_us=1,
                      required_min_rx_us=1).encode()


def _patch(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1:]


@pytest.mark.parametrize(("data", "reason"), [
    (WIRE[:23], "shorter"),
    (_patch(WIRE, 0, (2 << 5) | 3), "version 2"),
    (_patch(WIRE, 1, WIRE[1] | 0x04), "authentication"),
    (_patch(WIRE, 3, 20), "length field 20"),
    (_patch(WIRE, 3, 30), "length field 30 > 24"),
    (_patch(WIRE, 2, 0), "detect multiplier 0"),
    (_patch(WIRE, 1, WIRE[1] | 0x01), "multipoint"),
    (WIRE[:4] + bytes(4) + WIRE[8:], "my discriminator 0"),
    (WIRE[:8] + bytes(4) + WIRE[12:], "your discriminator 0 in state Up"),
])
def test_discard_rules(data: bytes, reason: str) -> None:
    with pytest.raises(BfdDecodeError, match=reason):
        decode(data)


def test_your_discriminator_zero_allowed_when_down() -> None:
    down = ControlPacket(state=State.DOWN, detect_mult=3, my_discriminator=9,
                         your_discriminator=0, desired_min_tx_us=1_000_000,
                         required_min_rx_us=300_000)
    assert decode(down.encode() + b"extra") == down  # trailing bytes past Length ignored


# --- the state machine -------------------------------------------------------------------

LOCAL, REMOTE = 0xAAAA, 0xBBBB


def peer_packet(state: State, *, your: int = LOCAL, tx: int = 300_000, rx: int = 300_000,
                mult: int = 3, poll: bool = False, final: bool = False) -> m.Received:
    return m.Received(ControlPacket(state=state, my_discriminator=REMOTE,
                                    your_discriminator=0 if state == State.DOWN else your,
                                    desired_min_tx_us=tx, required_min_rx_us=rx,
                                    detect_mult=mult, poll=poll, final=final))


def sends(actions: list[m.Action]) -> list[ControlPacket]:
    return [a.packet for a in actions if isinstance(a, m.Send)]


def changes(actions: list[m.Action]) -> list[tuple[State, State]]:
    return [(a.old, a.new) for a in actions if isinstance(a, m.StateChanged)]


def up_session() -> m.Vars:
    v = m.Vars(local_discr=LOCAL)
    v, _ = m.handle(v, peer_packet(State.DOWN, tx=1_000_000))
    v, _ = m.handle(v, peer_packet(State.UP))
    assert v.state == State.UP
    return v


def test_three_way_handshake_down_init_up() -> None:
    v = m.Vars(local_discr=LOCAL)
    [pkt] = sends(m.handle(v, m.TransmitDue())[1])
    # Not Up: Desired Min TX is at least one second (§6.8.3), your discriminator unknown.
    assert (pkt.state, pkt.your_discriminator, pkt.desired_min_tx_us) == (State.DOWN, 0,
                                                                          1_000_000)
    v, actions = m.handle(v, peer_packet(State.DOWN, tx=1_000_000))
    assert changes(actions) == [(State.DOWN, State.INIT)]
    assert v.remote_discr == REMOTE
    [sent] = sends(actions)  # the new state goes out at once
    assert (sent.state, sent.your_discriminator) == (State.INIT, REMOTE)
    v, actions = m.handle(v, peer_packet(State.UP))
    assert changes(actions) == [(State.INIT, State.UP)]
    [sent] = sends(actions)
    # Up: the profile's 300 ms, changed from 1 s, so a Poll Sequence starts.
    assert (sent.state, sent.desired_min_tx_us, sent.poll) == (State.UP, 300_000, True)
    assert v.poll_pending
    v, _ = m.handle(v, peer_packet(State.UP, final=True))
    assert not v.poll_pending
    [periodic] = sends(m.handle(v, m.TransmitDue())[1])
    assert not periodic.poll


def test_down_to_up_directly_on_init() -> None:
    v, actions = m.handle(m.Vars(local_discr=LOCAL), peer_packet(State.INIT))
    assert changes(actions) == [(State.DOWN, State.UP)]


def test_init_ignores_down_and_up_ignores_init() -> None:
    v, _ = m.handle(m.Vars(local_discr=LOCAL), peer_packet(State.DOWN))
    v, actions = m.handle(v, peer_packet(State.DOWN))
    assert v.state == State.INIT and not changes(actions)
    v = up_session()
    v, actions = m.handle(v, peer_packet(State.INIT))
    assert v.state == State.UP and not changes(actions)


def test_peer_down_and_admin_down() -> None:
    v, actions = m.handle(up_session(), peer_packet(State.DOWN))
    assert changes(actions) == [(State.UP, State.DOWN)]
    assert v.local_diag == Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    assert sends(actions)[0].desired_min_tx_us == 1_000_000
    v, actions = m.handle(up_session(), peer_packet(State.ADMIN_DOWN))
    assert changes(actions) == [(State.UP, State.DOWN)]
    assert v.remote_state == State.ADMIN_DOWN


def test_detection_timeout_takes_the_session_down() -> None:
    v = up_session()
    v, actions = m.handle(v, m.DetectionExpired())
    assert changes(actions) == [(State.UP, State.DOWN)]
    assert v.local_diag == Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert v.remote_discr == 0  # forgotten (§6.8.1)
    [sent] = sends(actions)
    assert (sent.state, sent.your_discriminator) == (State.DOWN, 0)
    # In Down, expiry changes nothing more.
    assert not changes(m.handle(v, m.DetectionExpired())[1])


def test_poll_answered_with_final() -> None:
    v = up_session()
    _, actions = m.handle(v, peer_packet(State.UP, poll=True))
    [sent] = sends(actions)
    assert sent.final and not sent.poll


def test_wrong_your_discriminator_and_admin_down_discard() -> None:
    v = up_session()
    assert m.handle(v, peer_packet(State.UP, your=0x1234)) == (v, [])
    stopped, actions = m.handle(v, m.AdminStop())
    assert changes(actions) == [(State.UP, State.ADMIN_DOWN)]
    [sent] = sends(actions)
    assert (sent.state, sent.diag) == (State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN)
    assert m.handle(stopped, peer_packet(State.UP)) == (stopped, [])
    assert m.handle(stopped, m.TransmitDue()) == (stopped, [])


def test_passive_waits_for_the_peer() -> None:
    v = m.Vars(local_discr=LOCAL, params=m.Params(passive=True))
    assert sends(m.handle(v, m.TransmitDue())[1]) == []
    v, actions = m.handle(v, peer_packet(State.DOWN))
    assert [p.state for p in sends(actions)] == [State.INIT]
    assert len(sends(m.handle(v, m.TransmitDue())[1])) == 1
    # The peer vanished: silent again until it is heard from, even when stopped.
    v, _ = m.handle(v, m.DetectionExpired())
    assert sends(m.handle(v, m.TransmitDue())[1]) == []
    stopped, actions = m.handle(v, m.AdminStop())
    assert stopped.state == State.ADMIN_DOWN and sends(actions) == []


def test_peer_asking_for_no_packets() -> None:
    v, _ = m.handle(up_session(), peer_packet(State.UP, rx=0))
    assert sends(m.handle(v, m.TransmitDue())[1]) == []


def test_new_parameters_while_up_poll_and_hold_the_old_timing_until_final() -> None:
    """§6.8.3: a profile change while Up goes out at once with Poll; a slower Desired
    Min TX and a faster Required Min RX take effect for our timing only after Final."""
    v, _ = m.handle(up_session(), peer_packet(State.UP, final=True))
    assert not v.poll_pending and m.tx_interval(v) == pytest.approx(0.3)
    slower = m.Params(desired_min_tx_us=500_000, required_min_rx_us=100_000, detect_mult=5)
    v, actions = m.handle(v, m.Reconfigure(slower))
    [sent] = sends(actions)
    assert (sent.poll, sent.desired_min_tx_us, sent.required_min_rx_us,
            sent.detect_mult) == (True, 500_000, 100_000, 5)
    assert v.state == State.UP and not changes(actions)
    assert m.tx_interval(v) == pytest.approx(0.3)  # the peer still expects 300 ms
    assert m.detection_time(v) == pytest.approx(0.9)  # it may still send every 300 ms
    [periodic] = sends(m.handle(v, m.TransmitDue())[1])
    assert periodic.poll  # until the peer answers
    v, _ = m.handle(v, peer_packet(State.UP, tx=100_000, final=True))
    assert not v.poll_pending and v.held is None
    assert m.tx_interval(v) == pytest.approx(0.5)
    assert m.detection_time(v) == pytest.approx(0.3)  # 3 x max(100 ms, the peer's 100 ms)
    assert not sends(m.handle(v, m.TransmitDue())[1])[0].poll


def test_new_parameters_before_up_and_multiplier_alone() -> None:
    v, actions = m.handle(m.Vars(local_discr=LOCAL), m.Reconfigure(m.Params(detect_mult=7)))
    assert v.params.detect_mult == 7 and not v.poll_pending and not sends(actions)
    v, _ = m.handle(up_session(), peer_packet(State.UP, final=True))
    v, actions = m.handle(v, m.Reconfigure(dataclasses.replace(v.params, detect_mult=4)))
    [sent] = sends(actions)
    # Not a timing change: no Poll Sequence, the new multiplier just goes out.
    assert (sent.detect_mult, sent.poll, v.held) == (4, False, None)
    v, _ = m.handle(v, m.AdminStop())
    assert m.handle(v, m.Reconfigure(m.Params(desired_min_tx_us=1)))[1] == []


# --- timers ------------------------------------------------------------------------------

def test_detection_time_and_intervals() -> None:
    v = up_session()  # peer: 300 ms tx, multiplier 3
    assert m.detection_time(v) == pytest.approx(0.9)
    v, actions = m.handle(v, peer_packet(State.UP, tx=500_000, mult=5))
    assert m.detection_time(v) == pytest.approx(2.5)  # the peer's multiplier x its tx
    assert isinstance(actions[-1], m.ArmDetection)
    assert actions[-1].seconds == pytest.approx(2.5)
    v, _ = m.handle(v, peer_packet(State.UP, tx=50_000, rx=700_000))
    assert m.detection_time(v) == pytest.approx(0.9)  # our rx 300 ms is the floor
    assert m.tx_interval(v) == pytest.approx(0.7)  # the peer's Required Min RX wins
    assert m.tx_interval(m.Vars(local_discr=1)) == pytest.approx(1.0)  # not Up: slow


def test_jitter_bounds() -> None:
    assert m.jittered(1.0, 3, 0.0) == pytest.approx(0.75)
    assert m.jittered(1.0, 3, 0.999999) == pytest.approx(1.0)
    assert m.jittered(1.0, 1, 0.999999) == pytest.approx(0.9)  # detect mult 1: <= 90 %


def test_profile_to_params(caplog: pytest.LogCaptureFixture) -> None:
    profile = BFDProfile(namespace="metallb-system", name="fast", receive_interval_ms=100,
                         transmit_interval_ms=200, detect_multiplier=5, echo_mode=True,
                         passive_mode=True, minimum_ttl=250)
    with caplog.at_level(logging.WARNING, "speaker.bfd"):
        cfg = bfd_config(profile, multihop=True)
    assert cfg.params == m.Params(desired_min_tx_us=200_000, required_min_rx_us=100_000,
                                  detect_mult=5, passive=True)
    assert (cfg.multihop, cfg.minimum_ttl) == (True, 250)
    assert "metallb-system/fast: spec.echoMode is not supported" in caplog.text
