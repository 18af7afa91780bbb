"""The heartbeat membership's pure parts: the wire format and one speaker's view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from speaker.membership.udp import ALIVE, LEAVING, Message, View


def view() -> View:
    v = View("n1", dead_after=0.2)
    v.set_members(frozenset({"n1", "n2", "n3"}))
    return v


def test_message_round_trip() -> None:
    msg = Message(ALIVE, "worker-7", 1_700_000_000_000_000_000, 42)
    assert Message.decode(msg.encode()) == msg


@given(st.binary(max_size=80))
def test_garbage_is_not_a_message(data: bytes) -> None:
    msg = Message.decode(data)
    assert msg is None or msg.encode() == data


def test_truncated_or_padded_messages_are_rejected() -> None:
    raw = Message(ALIVE, "n2", 1, 1).encode()
    assert Message.decode(raw[:-1]) is None
    assert Message.decode(raw + b"x") is None
    assert Message.decode(b"SKHB" + raw[4:5].replace(b"\x01", b"\x09") + raw[5:]) is None


def test_heard_peers_are_live_and_silent_ones_die() -> None:
    v = view()
    assert v.live() == {"n1"}
    assert v.receive(Message(ALIVE, "n2", 5, 1), now=10.0)
    assert v.receive(Message(ALIVE, "n3", 5, 1), now=10.0)
    assert not v.receive(Message(ALIVE, "n3", 5, 2), now=10.1)
    assert v.expire(10.15) == frozenset()
    assert v.expire(10.25) == {"n2"}
    assert v.live() == {"n1", "n3"}
    assert v.receive(Message(ALIVE, "n2", 5, 9), now=10.3)  # a healed partition
    assert v.live() == {"n1", "n2", "n3"}


def test_leaving_is_immediate_and_late_heartbeats_do_not_resurrect() -> None:
    v = view()
    v.receive(Message(ALIVE, "n2", 5, 1), now=1.0)
    assert v.receive(Message(LEAVING, "n2", 5, 2), now=1.01)
    assert v.live() == {"n1"}
    assert not v.receive(Message(ALIVE, "n2", 5, 1), now=1.02)  # in flight before the leave
    assert v.receive(Message(ALIVE, "n2", 6, 1), now=2.0)  # restarted: a new incarnation
    assert not v.receive(Message(LEAVING, "n2", 5, 3), now=2.01)  # the old one's, late


def test_strangers_and_self_are_ignored() -> None:
    v = view()
    assert not v.receive(Message(ALIVE, "n9", 1, 1), now=1.0)
    assert not v.receive(Message(LEAVING, "n1", 1, 1), now=1.0)
    assert v.live() == {"n1"}
    v.receive(Message(ALIVE, "n3", 1, 1), now=1.0)
    v.set_members(frozenset({"n1", "n2"}))  # n3's Node object was deleted
    assert v.live() == {"n1"}
