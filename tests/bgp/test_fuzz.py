"""Hypothesis fuzzing of the decoder: whatever the bytes, the only exception that may
leave the codec is BgpError (which the session turns into a NOTIFICATION)."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speaker.bgp import capabilities as caps
from speaker.bgp import message
from speaker.bgp.attributes import (
    Aggregator,
    AsPath,
    Communities,
    Med,
    MpReachNlri,
    MpUnreachNlri,
    NextHop,
    Origin,
)
from speaker.bgp.errors import BgpError
from speaker.bgp.header import split_messages
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.negotiated import ASSUMED, TWO_OCTET_AS
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open
from speaker.bgp.route_refresh import RouteRefresh
from speaker.bgp.update import Update, end_of_rib
from tests.fuzzing import mutate

net = ipaddress.ip_network

VALID = [
    message.encode(Keepalive()),
    message.encode(Open(4200000001, 90, "10.0.0.1", (
        caps.Multiprotocol(1, 1), caps.Multiprotocol(2, 1), caps.RouteRefresh(),
        caps.FourOctetAs(4200000001), caps.GracefulRestart(120, 0, ((1, 1, 0x80),))))),
    message.encode(Update(
        withdrawn=(net("198.51.100.0/24"),),
        attributes=(Origin(0), AsPath.sequence(65001, 4200000001), NextHop("10.0.0.1"), Med(5),
                    Communities((1, 2)), Aggregator(65001, "10.0.0.1")),
        nlri=(net("192.0.2.0/24"), net("203.0.113.7/32")))),
    message.encode(Update(attributes=(
        Origin(2), AsPath(), MpReachNlri(2, 1, ("fd00::1", "fe80::1"), (net("fd00:1::/64"),)),
        MpUnreachNlri(2, 1, (net("fd00:2::/64"),))))),
    end_of_rib((2, 1)),
    message.encode(Notification.shutdown("maintenance")),
    message.encode(RouteRefresh(1, 1)),
]

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_bgp_error(raw: bytes, four_octet: bool) -> None:
    try:
        msg = message.decode(raw, ASSUMED if four_octet else TWO_OCTET_AS)
    except BgpError:
        return
    # An UPDATE handled by treat-as-withdraw (RFC 7606) announces nothing.
    if isinstance(msg, Update) and msg.treated_as_withdraw:
        assert not msg.announced() and msg.end_of_rib() is None


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes(raw: bytes, four_octet: bool) -> None:
    decode_or_bgp_error(raw, four_octet)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(range(1, 6)), st.booleans())
def test_random_bodies_with_a_valid_header(body: bytes, msg_type: int, four_octet: bool) -> None:
    raw = b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([msg_type]) + body
    decode_or_bgp_error(raw, four_octet)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = mutate(draw, draw(st.sampled_from(VALID)), 6)
    if draw(st.booleans()) and len(raw) >= 19:
        raw[16:18] = len(raw).to_bytes(2, "big")  # keep the length consistent
    return bytes(raw)


@FUZZ
@given(mutated(), st.booleans())
def test_mutated_valid_messages(raw: bytes, four_octet: bool) -> None:
    decode_or_bgp_error(raw, four_octet)


@FUZZ
@given(st.lists(st.sampled_from(VALID), max_size=5), st.binary(max_size=40))
def test_stream_framing(messages: list[bytes], tail: bytes) -> None:
    stream = b"".join(messages) + tail
    try:
        found, used = split_messages(stream)
    except BgpError:
        return
    assert found[:len(messages)] == messages
    assert used <= len(stream)


def test_valid_corpus_decodes() -> None:
    for raw in VALID:
        decoded = message.decode(raw)
        assert message.encode(decoded) == raw
