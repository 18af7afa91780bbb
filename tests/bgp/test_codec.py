"""Golden wire bytes for every message type, capability and attribute.

The hex strings are derived by hand from the RFC layouts (field by field in the
comments), so encode and decode are checked against the standard, not against
each other.  Each case checks both directions: encode(obj) == bytes and
decode(bytes) == obj.
"""

from __future__ import annotations

import ipaddress

import pytest

from speaker.bgp import capabilities as caps
from speaker.bgp import errors, message
from speaker.bgp.attributes import (
    Aggregator,
    As4Aggregator,
    As4Path,
    AsPath,
    AtomicAggregate,
    Communities,
    LocalPref,
    Med,
    MpReachNlri,
    MpUnreachNlri,
    NextHop,
    Origin,
    UnknownAttribute,
    community_text,
    decode_attributes,
    encode_attributes,
    merge_as4_path,
)
from speaker.bgp.errors import (
    ATTRIBUTE_DISCARD,
    SESSION_RESET,
    TREAT_AS_WITHDRAW,
    BgpError,
    Handling,
)
from speaker.bgp.header import split_messages
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.negotiated import ASSUMED, TWO_OCTET_AS, Negotiated
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open, validate_open
from speaker.bgp.route_refresh import RouteRefresh
from speaker.bgp.update import Update, end_of_rib

MARKER = "ff" * 16
net = ipaddress.ip_network


def wire(length_and_type_and_body: str) -> bytes:
    return bytes.fromhex(MARKER + length_and_type_and_body.replace(" ", ""))


def session(four_octet: bool) -> Negotiated:
    return ASSUMED if four_octet else TWO_OCTET_AS


def test_keepalive() -> None:
    golden = wire("0013 04")
    assert message.encode(Keepalive()) == golden
    assert message.decode(golden) == Keepalive()


OPEN_GOLDEN = wire(
    "002d 01"          # length 45, OPEN
    "04 fde9 00b4"     # version 4, AS 65001, hold time 180
    "0a000001 10"      # BGP identifier 10.0.0.1, optional parameters length 16
    "02 0e"            # parameter: capabilities, 14 bytes
    "01 04 0001 00 01"  # multiprotocol IPv4 unicast
    "02 00"            # route refresh
    "41 04 0000fde9"   # 4-octet AS 65001
)


def test_open_golden() -> None:
    msg = Open(65001, 180, "10.0.0.1",
               (caps.Multiprotocol(1, 1), caps.RouteRefresh(), caps.FourOctetAs(65001)))
    assert message.encode(msg) == OPEN_GOLDEN
    assert message.decode(OPEN_GOLDEN) == msg


def test_open_four_octet_asn_uses_as_trans() -> None:
    golden = wire(
        "0025 01"
        "04 5ba0 005a"    # AS_TRANS 23456 in the 2-octet field, hold 90
        "c0000201 08"     # 192.0.2.1, 8 bytes of parameters
        "02 06 41 04 fa56ea01"  # 4-octet AS 4200000001
    )
    msg = Open(4200000001, 90, "192.0.2.1", (caps.FourOctetAs(4200000001),))
    assert message.encode(msg) == golden
    decoded = message.decode(golden)
    assert decoded == msg
    assert isinstance(decoded, Open) and decoded.asn == 4200000001


def test_open_without_capabilities_and_large_as_is_refused() -> None:
    with pytest.raises(ValueError):
        message.encode(Open(4200000001, 90, "192.0.2.1"))


@pytest.mark.parametrize("cap, golden", [
    (caps.Multiprotocol(2, 1), "01 04 0002 00 01"),
    (caps.RouteRefresh(), "02 00"),
    (caps.FourOctetAs(4200000001), "41 04 fa56ea01"),
    # restart flags R=1, restart time 120 (0x078) -> 0x8078; IPv4 unicast with F bit
    (caps.GracefulRestart(120, caps.GR_RESTART_STATE, ((1, 1, caps.GR_FORWARDING_PRESERVED),)),
     "40 06 8078 0001 01 80"),
    (caps.GracefulRestart(90), "40 02 005a"),
    (caps.UnknownCapability(73, b"\x01\x02"), "49 02 0102"),
])
def test_capability_golden(cap: caps.Capability, golden: str) -> None:
    raw = bytes.fromhex(golden.replace(" ", ""))
    assert caps.encode_capability(cap) == raw
    assert caps.decode_capabilities(raw) == [cap]


@pytest.mark.parametrize("attr, golden, four_octet", [
    (Origin(0), "40 01 01 00", True),
    (Origin(2), "40 01 01 02", True),
    (AsPath.sequence(65001), "40 02 06 02 01 0000fde9", True),
    (AsPath.sequence(65001, 65002), "40 02 06 02 02 fde9 fdea", False),
    (AsPath(), "40 02 00", True),
    (AsPath(((1, (64512, 64513)),)), "40 02 0a 01 02 0000fc00 0000fc01", True),
    (NextHop("10.0.0.1"), "40 03 04 0a000001", True),
    (Med(100), "80 04 04 00000064", True),
    (LocalPref(200), "40 05 04 000000c8", True),
    (AtomicAggregate(), "40 06 00", True),
    (Aggregator(65001, "10.0.0.1"), "c0 07 08 0000fde9 0a000001", True),
    (Aggregator(65001, "10.0.0.1"), "c0 07 06 fde9 0a000001", False),
    (As4Aggregator(4200000001, "10.0.0.1"), "c0 12 08 fa56ea01 0a000001", False),
    (Communities((0xFDE80064, 0xFFFFFF01)), "c0 08 08 fde80064 ffffff01", True),
    (As4Path(((2, (4200000001,)),)), "c0 11 06 02 01 fa56ea01", False),
    (MpReachNlri(2, 1, ("2001:db8::1",), (net("2001:db8:1::/48"),)),
     "80 0e 1c 0002 01 10 20010db8000000000000000000000001 00 30 20010db80001", True),
    (MpUnreachNlri(2, 1, (net("2001:db8:1::/48"),)), "80 0f 0a 0002 01 30 20010db80001", True),
    (UnknownAttribute(0xC0, 99, b"\xab"), "c0 63 01 ab", True),
])
def test_attribute_golden(attr: object, golden: str, four_octet: bool) -> None:
    raw = bytes.fromhex(golden.replace(" ", ""))
    assert encode_attributes([attr], session(four_octet)) == raw  # type: ignore[list-item]
    assert decode_attributes(raw, session(four_octet)) == [attr]


def test_extended_length_is_used_above_255_bytes() -> None:
    values = tuple(range(70))  # 280 bytes of communities
    encoded = Communities(values).encode()
    assert encoded[:4] == bytes([0xD0, 8, 0x01, 0x18])
    assert decode_attributes(encoded) == [Communities(values)]


def test_two_octet_session_carries_large_asn_in_as4_path() -> None:
    encoded = encode_attributes([AsPath.sequence(4200000001, 65001)], TWO_OCTET_AS)
    assert encoded == bytes.fromhex("40 02 06 02 02 5ba0 fde9" "c0 11 0a 02 02 fa56ea01 0000fde9"
                                    .replace(" ", ""))
    as_path, as4 = decode_attributes(encoded, TWO_OCTET_AS)
    assert isinstance(as_path, AsPath) and isinstance(as4, As4Path)
    assert merge_as4_path(as_path, as4) == AsPath.sequence(4200000001, 65001)


def test_merge_as4_path_keeps_leading_two_octet_hops() -> None:
    # A 2-octet-only speaker (65010) prepended itself after the AS4_PATH was made.
    as_path = AsPath.sequence(65010, 23456, 65001)
    as4 = As4Path(((2, (4200000001, 65001)),))
    assert merge_as4_path(as_path, as4) == AsPath(((2, (65010,)), (2, (4200000001, 65001))))
    # An AS4_PATH longer than the AS_PATH is ignored (RFC 6793 §4.2.3).
    assert merge_as4_path(AsPath.sequence(1), As4Path(((2, (2, 3)),))) == AsPath.sequence(1)


UPDATE_GOLDEN = wire(
    "0046 02"
    "0004 18 c63364"                     # withdrawn: 198.51.100.0/24
    "0022"                               # 34 bytes of path attributes
    "40 01 01 00"                        # ORIGIN IGP
    "40 02 06 02 01 0000fde9"            # AS_PATH 65001
    "40 03 04 0a000001"                  # NEXT_HOP 10.0.0.1
    "80 04 04 00000000"                  # MED 0
    "c0 08 04 fde80064"                  # COMMUNITIES 65000:100
    "18 c00002 20 cb007107"              # NLRI 192.0.2.0/24, 203.0.113.7/32
)


def test_update_ipv4_golden() -> None:
    msg = Update(
        withdrawn=(net("198.51.100.0/24"),),
        attributes=(Origin(0), AsPath.sequence(65001), NextHop("10.0.0.1"), Med(0),
                    Communities((0xFDE80064,))),  # 65000:100
        nlri=(net("192.0.2.0/24"), net("203.0.113.7/32")),
    )
    assert message.encode(msg) == UPDATE_GOLDEN
    assert message.decode(UPDATE_GOLDEN) == msg


def test_update_ipv6_golden() -> None:
    golden = wire(
        "0057 02 0000 0040"
        "40 01 01 00"
        "40 02 00"
        "80 0e 36 0002 01 20"             # MP_REACH IPv6 unicast, 32-byte next hop
        "20010db8000000000000000000000001"  # global
        "fe800000000000000000000000000001"  # link-local
        "00 80 20010db8000000000000000000000064"  # reserved, 2001:db8::64/128
    )
    msg = Update(attributes=(
        Origin(0), AsPath(),
        MpReachNlri(2, 1, ("2001:db8::1", "fe80::1"), (net("2001:db8::64/128"),))))
    assert message.encode(msg) == golden
    decoded = message.decode(golden)
    assert decoded == msg
    assert isinstance(decoded, Update) and decoded.announced() == [net("2001:db8::64/128")]


def test_end_of_rib_markers() -> None:
    ipv4 = wire("0017 02 0000 0000")
    ipv6 = wire("001d 02 0000 0006 80 0f 03 0002 01")
    assert end_of_rib((1, 1)) == ipv4
    assert end_of_rib((2, 1)) == ipv6
    for raw, family in ((ipv4, (1, 1)), (ipv6, (2, 1))):
        decoded = message.decode(raw)
        assert isinstance(decoded, Update) and decoded.end_of_rib() == family
    assert Update(withdrawn=(net("10.0.0.0/8"),)).end_of_rib() is None


def test_notification_golden() -> None:
    golden = wire("0019 03 06 02 03 627965")  # Cease / Administrative Shutdown, "bye"
    msg = Notification.shutdown("bye")
    assert message.encode(msg) == golden
    decoded = message.decode(golden)
    assert decoded == msg
    assert str(decoded) == "Cease / Administrative Shutdown ('bye')"
    bad_as = wire("0015 03 02 02")
    assert message.decode(bad_as) == Notification(2, 2)
    assert str(Notification(2, 2)) == "OPEN Message Error / Bad Peer AS"


def test_route_refresh_golden() -> None:
    golden = wire("0017 05 0002 00 01")
    assert message.encode(RouteRefresh(2, 1)) == golden
    assert message.decode(golden) == RouteRefresh(2, 1)


def test_communities_text_is_read_by_the_one_parser() -> None:
    """The BGP side has no community parser of its own: the runner reads texts
    with foundation.kube.model.communities (MetalLB's rules: no built-in names)."""
    from speaker.bgp.runner import route_attrs

    attrs = route_attrs({"communities": ["65000:100", "65535:65281", "large:65000:1:2"],
                         "local_pref": 100})
    assert attrs.communities == (0xFDE80064, 0xFFFFFF01)
    assert attrs.large_communities == ((65000, 1, 2),)
    assert attrs.local_pref == 100
    assert community_text(0xFDE80064) == "65000:100"
    for bad in ("70000:1", "no-export"):
        with pytest.raises(ValueError):
            route_attrs({"communities": [bad]})


def test_split_messages_keeps_partial_tail() -> None:
    stream = wire("0013 04") + OPEN_GOLDEN + OPEN_GOLDEN[:10]
    msgs, used = split_messages(stream)
    assert msgs == [wire("0013 04"), OPEN_GOLDEN]
    assert used == 19 + len(OPEN_GOLDEN)


# --- errors: each carries the NOTIFICATION RFC 4271 §6 prescribes -----------------------

def _decode(raw: bytes) -> Update:
    msg = message.decode(raw)
    assert isinstance(msg, Update)
    return msg


def _error(raw: bytes) -> BgpError:
    """The error decoding `raw` raises (a session reset) or, handled as RFC 7606 says,
    records in the decoded UPDATE."""
    try:
        msg = _decode(raw)
    except BgpError as err:
        return err
    assert msg.errors, msg
    return msg.errors[0]


@pytest.mark.parametrize("raw, code, subcode, data", [
    (b"\x00" * 16 + bytes.fromhex("001304"), 1, 1, ""),            # marker not all ones
    (wire("0012 04"), 1, 2, "0012"),                                 # length below 19
    (wire("1001 04"), 1, 2, "1001"),                                 # length above 4096
    (wire("0014 04 00"), 1, 2, "0014"),                              # KEEPALIVE with a body
    (wire("0016 05 000100"), 1, 2, "0016"),                          # short ROUTE-REFRESH
    (wire("0013 09"), 1, 3, "09"),                                   # unknown type
    (wire("001d 01 03 fde9 00b4 0a000001 00"), 2, 1, "0004"),        # version 3
    (wire("0021 01 04 fde9 00b4 0a000001 04 01 02 0000"), 2, 4, ""),  # parameter type 1
    (wire("001d 01 04 fde9 00b4 0a000001 05"), 2, 0, ""),            # params length lies
    (wire("0017 02 0005 0000"), 3, 1, ""),                           # withdrawn length overrun
    (wire("001b 02 0000 0004 40 01 05 00"), 3, 1, ""),               # attribute overruns field
])
def test_decode_errors(raw: bytes, code: int, subcode: int, data: str) -> None:
    err = _error(raw)
    assert (err.code, err.subcode, err.data.hex()) == (code, subcode, data)


def _update_with(attrs_hex: str, nlri_hex: str = "18c00002") -> bytes:
    attrs = bytes.fromhex(attrs_hex.replace(" ", ""))
    nlri = bytes.fromhex(nlri_hex)
    body = b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs + nlri
    return bytes.fromhex(MARKER) + (19 + len(body)).to_bytes(2, "big") + b"\x02" + body


GOOD_ATTRS = "40 01 01 00  40 02 00  40 03 04 0a000001"


@pytest.mark.parametrize("attrs, subcode, data, handling", [
    # ORIGIN sent as optional: Attribute Flags Error, data = the whole attribute
    ("c0 01 01 00  40 02 00  40 03 04 0a000001", 4, "c0010100", TREAT_AS_WITHDRAW),
    ("40 01 02 0000  40 02 00  40 03 04 0a000001", 5, "4001020000", TREAT_AS_WITHDRAW),
    ("40 01 01 07  40 02 00  40 03 04 0a000001", 6, "40010107", TREAT_AS_WITHDRAW),
    ("40 01 01 00  40 02 00  40 03 04 e0000001", 8, "400304e0000001", TREAT_AS_WITHDRAW),
    ("40 01 01 00  40 02 03 07 01 00  40 03 04 0a000001", 11, "", TREAT_AS_WITHDRAW),
    ("40 01 01 00  40 02 00", 3, "03", TREAT_AS_WITHDRAW),            # no NEXT_HOP
    ("40 01 01 00  40 02 00  40 03 04 0a000001  40 63 00", 2, "406300", SESSION_RESET),
    # A repeated attribute: Malformed Attribute List; RFC 7606 §3 (g) keeps the first.
    ("40 01 01 00  40 01 01 00  40 02 00  40 03 04 0a000001", 1, "", ATTRIBUTE_DISCARD),
    (GOOD_ATTRS + " c0 08 03 000000", 5, "c00803000000", TREAT_AS_WITHDRAW),  # communities % 4
    (GOOD_ATTRS + " 40 0e 03 000201", 4, "400e03000201", SESSION_RESET),  # MP_REACH transitive
])
def test_update_attribute_errors(attrs: str, subcode: int, data: str,
                                 handling: Handling) -> None:
    err = _error(_update_with(attrs))
    assert (err.code, err.subcode, err.data.hex(), err.handling) == \
        (3, subcode, data, handling)
    if handling is TREAT_AS_WITHDRAW:
        update = _decode(_update_with(attrs))
        assert update.withdrawals() == [net("192.0.2.0/24")] and not update.announced()
        assert update.end_of_rib() is None


def test_invalid_network_field() -> None:
    err = _error(_update_with(GOOD_ATTRS, "21c0000201"))  # /33
    assert (err.code, err.subcode) == (3, errors.INVALID_NETWORK_FIELD)


def test_validate_open() -> None:
    msg = Open(65001, 90, "10.0.0.2")
    validate_open(msg, peer_as=65001, local_router_id="10.0.0.1")
    validate_open(msg, peer_as=None, local_router_id="10.0.0.1")
    cases = [
        (dict(peer_as=65002, local_router_id="10.0.0.1"), msg, errors.BAD_PEER_AS),
        (dict(peer_as=65001, local_router_id="10.0.0.1"), Open(65001, 2, "10.0.0.2"),
         errors.UNACCEPTABLE_HOLD_TIME),
        (dict(peer_as=65001, local_router_id="10.0.0.1", min_hold_time=30),
         Open(65001, 10, "10.0.0.2"), errors.UNACCEPTABLE_HOLD_TIME),
        (dict(peer_as=65001, local_router_id="10.0.0.1"), Open(65001, 90, "0.0.0.0"),
         errors.BAD_BGP_IDENTIFIER),
        (dict(peer_as=65001, local_router_id="10.0.0.2", ibgp=True), msg,
         errors.BAD_BGP_IDENTIFIER),
    ]
    for kwargs, bad, subcode in cases:
        with pytest.raises(BgpError) as info:
            validate_open(bad, **kwargs)  # type: ignore[arg-type]
        assert (info.value.code, info.value.subcode) == (2, subcode)
    validate_open(Open(65001, 0, "10.0.0.2"), peer_as=65001, local_router_id="10.0.0.1",
                  min_hold_time=30)  # zero (no keepalives) is always acceptable
