"""Frame codec and responder, cross-checked against scapy's dissectors, plus fuzzing:
malformed frames are dropped (never raise), floods are answered a bounded number of times."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether

from foundation.netlink import mac
from speaker.l2 import frames
from speaker.l2.responder import RateLimiter, Responder

OUR_MAC = bytes.fromhex("02aabbccdd01")
CLIENT_MAC = "02:11:22:33:44:55"
LB4 = ipaddress.ip_address("10.99.0.200")
LB6 = ipaddress.ip_address("fd99::200")


def responder() -> Responder:
    r = Responder(OUR_MAC)
    r.v4, r.v6 = {LB4.packed}, {LB6.packed}
    return r


def arp_who_has(target: str, sender: str = "10.99.0.100", mac: str = CLIENT_MAC) -> bytes:
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=mac, psrc=sender, pdst=target))


def ns_for(target: str, src: str = "fd99::100", mac: str = CLIENT_MAC) -> bytes:
    group = ipaddress.ip_address(frames.SOLICITED_NODE_PREFIX
                                 + ipaddress.ip_address(target).packed[13:])
    pkt = (Ether(src=mac, dst="33:33:" + ":".join(f"{b:02x}" for b in group.packed[12:]))
           / IPv6(src=src, dst=str(group), hlim=255) / ICMPv6ND_NS(tgt=target))
    if src != "::":
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    return bytes(pkt)


def test_arp_reply_for_owned_address() -> None:
    reply = responder().answer(arp_who_has(str(LB4)), 0.0)
    assert reply is not None
    pkt = Ether(reply)
    assert pkt.dst == CLIENT_MAC and pkt.src == mac.mac_text(OUR_MAC)
    assert pkt[ARP].op == 2 and pkt[ARP].psrc == str(LB4)
    assert pkt[ARP].hwsrc == mac.mac_text(OUR_MAC)
    assert pkt[ARP].pdst == "10.99.0.100" and pkt[ARP].hwdst == CLIENT_MAC


def test_no_answer_for_addresses_not_owned_nor_for_gratuitous_or_replies() -> None:
    r = responder()
    assert r.answer(arp_who_has("10.99.0.201"), 0.0) is None
    assert r.answer(arp_who_has(str(LB4), sender=str(LB4)), 0.0) is None
    reply = bytes(Ether() / ARP(op=2, psrc="10.99.0.100", pdst=str(LB4)))
    assert r.answer(reply, 0.0) is None
    assert r.answer(ns_for("fd99::201"), 0.0) is None
    assert r.counters.arp_replies == r.counters.na_replies == 0


def test_arp_probe_is_answered() -> None:
    # RFC 5227: a host probing for the address must learn it is taken.
    assert responder().answer(arp_who_has(str(LB4), sender="0.0.0.0"), 0.0) is not None


def test_neighbor_advertisement_for_owned_address() -> None:
    reply = responder().answer(ns_for(str(LB6)), 0.0)
    assert reply is not None
    pkt = Ether(reply)
    na = pkt[ICMPv6ND_NA]
    assert pkt.dst == CLIENT_MAC and pkt[IPv6].dst == "fd99::100"
    assert pkt[IPv6].src == str(LB6) and pkt[IPv6].hlim == 255
    assert na.tgt == str(LB6) and na.S == 1 and na.O == 1 and na.R == 0
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == mac.mac_text(OUR_MAC)
    # scapy recomputes the checksum from scratch: ours must match it.
    rebuilt = Ether(reply)
    del rebuilt[ICMPv6ND_NA].cksum
    assert Ether(bytes(rebuilt))[ICMPv6ND_NA].cksum == na.cksum


def test_dad_probe_answered_to_all_nodes() -> None:
    reply = responder().answer(ns_for(str(LB6), src="::"), 0.0)
    assert reply is not None
    pkt = Ether(reply)
    assert pkt[IPv6].dst == "ff02::1" and pkt[ICMPv6ND_NA].S == 0


def test_invalid_solicitations_are_dropped() -> None:
    r = responder()
    good = ns_for(str(LB6))
    low_hop = bytearray(good)
    low_hop[21] = 64  # hop limit: off-link senders must be ignored (RFC 4861 7.1.1)
    bad_sum = bytearray(good)
    bad_sum[-1] ^= 0xFF
    zero_opt = bytearray(good)
    zero_opt[14 + 40 + 24 + 1] = 0  # option length 0
    for frame in (bytes(low_hop), bytes(bad_sum), bytes(zero_opt), good[:60]):
        assert r.answer(frame, 0.0) is None


def test_gratuitous_frames_are_the_shapes_linux_accepts() -> None:
    request, reply = (Ether(f) for f in frames.gratuitous_arps(OUR_MAC, LB4.packed))
    assert request.dst == "ff:ff:ff:ff:ff:ff" and request[ARP].op == 1
    assert request[ARP].psrc == request[ARP].pdst == str(LB4)
    assert reply[ARP].op == 2 and reply[ARP].hwdst == reply[ARP].hwsrc
    na = Ether(frames.unsolicited_advertisement(OUR_MAC, LB6.packed))
    assert na.dst == "33:33:00:00:00:01" and na[IPv6].dst == "ff02::1"
    assert na[ICMPv6ND_NA].O == 1 and na[ICMPv6ND_NA].S == 0
    assert na[ICMPv6NDOptDstLLAddr].lladdr == mac.mac_text(OUR_MAC)


def test_own_builders_round_trip() -> None:
    ns = frames.parse_neighbor_solicitation(
        frames.neighbor_solicitation(OUR_MAC, ipaddress.ip_address("fd99::1").packed, LB6.packed))
    assert ns is not None and ns.target == LB6.packed and ns.source_lladdr == OUR_MAC
    arp = frames.parse_arp_request(frames.arp_request(OUR_MAC, bytes(4), LB4.packed))
    assert arp is not None and arp.target_ip == LB4.packed


def test_flood_from_one_source_is_bounded_and_others_still_answered() -> None:
    r = Responder(OUR_MAC, RateLimiter(rate=50, burst=20))
    r.v4 = {LB4.packed}
    flood = arp_who_has(str(LB4), mac="02:00:00:00:00:66")
    answered = sum(r.answer(flood, 1.0 + i * 1e-5) is not None for i in range(10_000))
    assert answered <= 20 + 50 * 0.1 + 1  # the burst plus 0.1 s worth of rate
    assert r.answer(arp_who_has(str(LB4)), 1.1) is not None  # a real client is unaffected


def test_many_sources_hit_the_interface_cap() -> None:
    r = Responder(OUR_MAC, RateLimiter(total_rate=100, total_burst=50, max_keys=64))
    r.v4 = {LB4.packed}
    answered = sum(
        r.answer(arp_who_has(str(LB4), mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"), 5.0)
        is not None for i in range(5000))
    assert answered == 50


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"\x08\x06", b"\x86\xdd", b"\x08\x00"]))
def test_random_frames_never_raise(payload: bytes, ethertype: bytes) -> None:
    frame = b"\xff" * 6 + b"\x02" * 6 + ethertype + payload
    reply = responder().answer(frame, 0.0)
    assert reply is None or len(reply) >= 42


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_valid_requests_never_raise(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from([arp_who_has(str(LB4)), ns_for(str(LB6))])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    responder().answer(bytes(frame[:cut]), 0.0)


FOREIGN = bytes.fromhex("02dead000001")


def test_claims_to_owned_addresses_are_reported_and_not_answered() -> None:
    r = responder()
    request_form, reply_form = frames.gratuitous_arps(FOREIGN, LB4.packed)
    for frame, how in ((request_form, "gratuitous ARP"), (reply_form, "gratuitous ARP"),
                       (frames.arp_request(FOREIGN, LB4.packed, bytes(4)), "ARP request"),
                       (frames.unsolicited_advertisement(FOREIGN, LB6.packed),
                        "Neighbor Advertisement"),
                       (frames.neighbor_solicitation(FOREIGN, LB6.packed,
                                                     ipaddress.ip_address("fd99::1").packed),
                        "Neighbor Solicitation")):
        reply, claim = r.handle(frame, 0.0)
        assert reply is None, how
        assert claim is not None and claim.mac == FOREIGN and claim.how == how
    assert r.counters.claims == 5


def test_no_claim_from_our_own_macs_nor_for_addresses_we_do_not_own() -> None:
    r = responder()
    other_port = bytes.fromhex("02aabbccdd02")
    r.own_macs = {OUR_MAC, other_port}
    for frame in (*frames.gratuitous_arps(OUR_MAC, LB4.packed),
                  *frames.gratuitous_arps(other_port, LB4.packed),
                  frames.unsolicited_advertisement(other_port, LB6.packed),
                  *frames.gratuitous_arps(FOREIGN, ipaddress.ip_address("10.99.0.201").packed),
                  frames.unsolicited_advertisement(FOREIGN, ipaddress.ip_address(
                      "fd99::201").packed)):
        assert r.handle(frame, 0.0) == (None, None)
    assert r.counters.claims == 0


def test_a_request_from_a_claimant_is_still_answered() -> None:
    """Who-has for our address, sent from our address by another MAC: a claim,
    and a question that gets our answer (which is the defence too)."""
    reply, claim = responder().handle(arp_who_has(str(LB4), sender=str(LB4)), 0.0)
    assert reply is None and claim is not None  # sender == target: gratuitous, asks nothing
    reply, claim = responder().handle(
        frames.arp_request(FOREIGN, LB4.packed, ipaddress.ip_address("10.99.0.201").packed), 0.0)
    assert reply is None and claim is not None and claim.how == "ARP request"


def test_neighbor_advertisements_are_validated() -> None:
    good = frames.unsolicited_advertisement(FOREIGN, LB6.packed)
    na = frames.parse_neighbor_advertisement(good)
    assert na is not None and na.target == LB6.packed and na.target_lladdr == FOREIGN
    assert na.flags & frames.NA_OVERRIDE and not na.flags & frames.NA_SOLICITED
    # Solicited, yet to all nodes (checksum right): RFC 4861 7.1.2 says drop it.
    solicited_to_all = frames._advert(FOREIGN, LB6.packed, frames.NA_SOLICITED,
                                      frames.ALL_NODES_MAC, frames.ALL_NODES_V6)
    low_hop = bytearray(good)
    low_hop[21] = 64
    for bad in (bytes(solicited_to_all), bytes(low_hop), good[:70]):
        assert frames.parse_neighbor_advertisement(bad) is None
    pkt = Ether(good)
    assert pkt[ICMPv6ND_NA].tgt == str(LB6)  # and scapy reads it as we do
