"""The heartbeat membership's pure parts: the wire format and one speaker's view,
alone and combined with the Leases (speaker.membership.combined)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from speaker.membership.combined import (
    EXPIRED,
    HEARD,
    LEASE,
    LEASE_AFTER_SILENCE,
    SILENT,
    combined_live,
    peer_verdicts,
)
from speaker.membership.lease import LeaseView
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


def test_a_stall_of_our_own_is_not_the_peers_silence() -> None:
    v = view()
    v.receive(Message(ALIVE, "n2", 5, 1), now=10.0)
    v.forgive(0.5)  # this speaker did not run from 10.0 to 10.5
    assert v.expire(10.55) == frozenset()
    assert v.expire(10.75) == {"n2"}  # silent for dead_after after the stall


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


# -- heartbeats and Leases together (speaker.membership.combined) ---------------------------

def lease(node: str, renew: str) -> dict[str, object]:
    return {"metadata": {"name": f"skein-speaker-{node}"},
            "spec": {"holderIdentity": node, "renewTime": renew, "leaseDurationSeconds": 4}}


def both(now: float = 0.0) -> tuple[View, LeaseView]:
    hb = view()
    leases = LeaseView("n1", 4.0, members=frozenset({"n1", "n2", "n3"}))
    leases.replace([lease(n, "t0") for n in ("n1", "n2", "n3")], now, refresh=True)
    return hb, leases


def test_heard_peers_are_alive_and_a_dead_one_is_out_before_its_lease_expires() -> None:
    hb, leases = both()
    for name in ("n2", "n3"):
        hb.receive(Message(ALIVE, name, 5, 1), now=0.5)
    assert combined_live(hb, leases, 0.5, grace=1.0) == {"n1", "n2", "n3"}
    # n3 dies at 0.5: its Lease (seen at 0) is fresh until 4, its silence counts first.
    hb.receive(Message(ALIVE, "n2", 5, 2), now=0.7)
    hb.expire(0.75)
    assert peer_verdicts(hb, leases, 0.75, grace=1.0)["n3"] == (False, SILENT)
    assert combined_live(hb, leases, 0.75, grace=1.0) == {"n1", "n2"}


def test_a_peer_never_heard_is_alive_by_its_lease_and_dies_with_it() -> None:
    """7946/udp blocked from the start: the Leases decide, as Lease liveness would."""
    hb, leases = both()
    assert peer_verdicts(hb, leases, 1.0, grace=1.0)["n2"] == (True, LEASE)
    assert combined_live(hb, leases, 1.0, grace=1.0) == {"n1", "n2", "n3"}
    leases.observe(lease("n1", "t1"), 3.0)  # only this speaker keeps renewing
    assert combined_live(hb, leases, 4.5, grace=1.0) == {"n1"}
    assert peer_verdicts(hb, leases, 4.5, grace=1.0)["n2"] == (False, EXPIRED)


def test_heartbeats_lost_but_lease_renewed_brings_the_peer_back() -> None:
    """A healthy speaker whose datagrams stop arriving: dead for a moment (as a dead
    one would be), alive again once its Lease is seen renewed after the silence, so
    two owners last at most grace + a renew interval."""
    hb, leases = both()
    hb.receive(Message(ALIVE, "n2", 5, 1), now=1.0)
    hb.expire(1.3)
    assert peer_verdicts(hb, leases, 1.3, grace=1.0)["n2"] == (False, SILENT)
    leases.observe(lease("n2", "t1"), 1.5)  # a renewal in flight when it went silent
    assert peer_verdicts(hb, leases, 1.6, grace=1.0)["n2"] == (False, SILENT)
    leases.observe(lease("n2", "t2"), 2.5)  # renewed well after the silence began
    assert peer_verdicts(hb, leases, 2.5, grace=1.0)["n2"] == (True, LEASE_AFTER_SILENCE)
    assert "n2" in combined_live(hb, leases, 2.5, grace=1.0)
    hb.receive(Message(ALIVE, "n2", 5, 9), now=3.0)  # heard again
    assert peer_verdicts(hb, leases, 3.0, grace=1.0)["n2"] == (True, HEARD)


def test_leaving_is_immediate_and_a_lease_renewed_afterwards_counts_again() -> None:
    hb, leases = both()
    hb.receive(Message(ALIVE, "n2", 5, 1), now=1.0)
    hb.receive(Message(LEAVING, "n2", 5, 2), now=1.1)
    assert "n2" not in combined_live(hb, leases, 1.1, grace=1.0)
    # Restarted where its heartbeats cannot reach us: its new Lease brings it back.
    leases.observe(lease("n2", "t9"), 2.5)
    assert "n2" in combined_live(hb, leases, 2.5, grace=1.0)


def test_this_speaker_is_alive_while_its_lease_is_fresh_or_it_hears_a_peer() -> None:
    hb, leases = both()
    assert "n1" in combined_live(hb, leases, 1.0, grace=1.0)
    hb.receive(Message(ALIVE, "n2", 5, 1), now=4.8)
    # Its own Lease expired at 4 (the API unreachable to it), but n2 hears it as it hears n2.
    assert combined_live(hb, leases, 4.9, grace=1.0) == {"n1", "n2"}
    hb.expire(5.5)
    assert "n1" not in combined_live(hb, leases, 5.5, grace=1.0)
    # The API unreachable (the Lease view frozen at 1): no Lease expires, so n3 (never
    # heard) stays; n2's silence still counts, as its Lease was not renewed since.
    leases.frozen_at = 1.0
    assert combined_live(hb, leases, 60.0, grace=1.0) == {"n1", "n3"}
