"""RFC 7606 revised error handling in the decoder, and the attribute registry it
dispatches through: what each malformed UPDATE decodes to, without a socket."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import pytest

from speaker.bgp import message
from speaker.bgp.attributes import (
    REGISTRY,
    Aggregator,
    AsPath,
    Attribute,
    MpUnreachNlri,
    NextHop,
    Origin,
    UnknownAttribute,
    decode_attributes,
    parse_attributes,
    register,
)
from speaker.bgp.errors import (
    ATTRIBUTE_DISCARD,
    SESSION_RESET,
    TREAT_AS_WITHDRAW,
    BgpError,
)
from speaker.bgp.negotiated import ASSUMED, TWO_OCTET_AS, Negotiated
from speaker.bgp.update import Update

net = ipaddress.ip_network
GOOD = "40010100 400200 4003040a000001"


def update_bytes(attrs_hex: str, nlri_hex: str = "18c00002", withdrawn_hex: str = "") -> bytes:
    withdrawn, attrs = bytes.fromhex(withdrawn_hex), bytes.fromhex(attrs_hex.replace(" ", ""))
    body = (struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs))
            + attrs + bytes.fromhex(nlri_hex))
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body


def decode(raw: bytes, negotiated: Negotiated = ASSUMED) -> Update:
    msg = message.decode(raw, negotiated)
    assert isinstance(msg, Update)
    return msg


@pytest.mark.parametrize("attrs", [
    "40010107 400200 4003040a000001",      # ORIGIN 7
    "40010100 400200",                     # NEXT_HOP missing
    "40010100 4002030701ff 4003040a000001",  # AS_PATH segment type 7
    "40010100 40020402010000 4003040a000001",  # AS_PATH segment overruns
    "40010100 400200 4003040a000001 80040200",  # MED of 2 bytes
    "40010100 400200 4003040a000001 400503000000",  # LOCAL_PREF of 3 bytes
    "40010100 400200 4003040a000001 c0200b" + "00" * 11,  # LARGE_COMMUNITIES % 12
    "40010100 400200 4003040a000001 4004",  # attribute header cut short (§4)
])
def test_treat_as_withdraw_keeps_the_prefixes_as_withdrawals(attrs: str) -> None:
    update = decode(update_bytes(attrs, withdrawn_hex="18c63364"))
    assert update.treated_as_withdraw and update.errors[0].handling is TREAT_AS_WITHDRAW
    assert update.withdrawn == (net("198.51.100.0/24"), net("192.0.2.0/24"))
    assert update.nlri == () and update.attributes == () and update.announced() == []
    assert update.end_of_rib() is None


def test_treat_as_withdraw_covers_multiprotocol_prefixes() -> None:
    mp_reach = ("800e1e 0002 01 10 fd000000000000000000000000000001 00 40 fd00000100000000")
    update = decode(update_bytes("40010103 400200 " + mp_reach, ""))
    assert update.treated_as_withdraw
    assert update.attributes == (MpUnreachNlri(2, 1, (net("fd00:1::/64"),)),)


def test_attribute_discard_keeps_the_route() -> None:
    # AGGREGATOR of 6 bytes on a 4-octet session: discarded (RFC 7606 §7.7).
    update = decode(update_bytes(GOOD + " c00706fde90a000001"))
    assert update.nlri == (net("192.0.2.0/24"),)
    assert update.attributes == (Origin(0), AsPath(), NextHop("10.0.0.1"))
    assert [e.handling for e in update.errors] == [ATTRIBUTE_DISCARD]
    assert not update.treated_as_withdraw


def test_a_repeated_attribute_keeps_the_first() -> None:
    update = decode(update_bytes(GOOD + " 40010102"))
    assert update.attribute(Origin) == Origin(0) and update.nlri == (net("192.0.2.0/24"),)
    assert [(e.subcode, e.handling) for e in update.errors] == [(1, ATTRIBUTE_DISCARD)]


@pytest.mark.parametrize("attrs, subcode", [
    # A handled error first does not hide a later one that needs a reset (§3).
    ("40010107 400200 4003040a000001 400e03000201", 4),  # MP_REACH_NLRI flagged transitive
    (GOOD + " 800f03000201 800f03000201", 1),            # MP_UNREACH_NLRI twice
    (GOOD + " 406300", 2),                               # unknown well-known attribute
])
def test_what_still_resets_the_session(attrs: str, subcode: int) -> None:
    with pytest.raises(BgpError) as info:
        decode(update_bytes(attrs))
    assert (info.value.code, info.value.subcode, info.value.handling) == \
        (3, subcode, SESSION_RESET)


def test_negotiated_object_sets_the_as_width() -> None:
    four, two = bytes.fromhex("c00708 fa56ea01 0a000001"), bytes.fromhex("c00706 5ba0 0a000001")
    assert decode_attributes(four, ASSUMED) == [Aggregator(4200000001, "10.0.0.1")]
    assert decode_attributes(two, TWO_OCTET_AS) == [Aggregator(23456, "10.0.0.1")]
    # The same bytes on the other kind of session are malformed: discarded, not fatal.
    attrs, errors = parse_attributes(two, ASSUMED)
    assert attrs == [] and [e.handling for e in errors] == [ATTRIBUTE_DISCARD]


def test_registry_dispatches_by_type_code() -> None:
    assert {code: cls.__name__ for code, cls in REGISTRY.items()} == {
        1: "Origin", 2: "AsPath", 3: "NextHop", 4: "Med", 5: "LocalPref",
        6: "AtomicAggregate", 7: "Aggregator", 8: "Communities", 14: "MpReachNlri",
        15: "MpUnreachNlri", 17: "As4Path", 18: "As4Aggregator", 32: "LargeCommunities"}
    assert decode_attributes(bytes.fromhex("c06301ab")) == [UnknownAttribute(0xC0, 99, b"\xab")]

    @dataclass(frozen=True)
    class Clash(Attribute):
        type_code = 1
        flags = 0x40

    with pytest.raises(RuntimeError):
        register(Clash)
