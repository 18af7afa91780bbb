"""UPDATE packing: every route arrives exactly once, no message passes 4096 bytes, and
the message count is the minimum for each attribute set."""

from __future__ import annotations

import ipaddress
import math

import pytest

from speaker.bgp import message, update
from speaker.bgp.attributes import (
    AsPath,
    Communities,
    MpReachNlri,
    NextHop,
    Origin,
    encode_attributes,
)
from speaker.bgp.header import MAX_MESSAGE_LEN
from speaker.bgp.nlri import Network, encode_prefix
from speaker.bgp.packing import pack, pack_updates
from speaker.bgp.runner import prefix
from speaker.bgp.update import Update

V4 = (Origin(0), AsPath.sequence(64512), NextHop("10.99.0.2"))
V6 = (Origin(0), AsPath.sequence(64512), MpReachNlri(2, 1, ("fd00::2",), ()))


def hosts(count: int) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [ipaddress.IPv4Network((base + i, 32)) for i in range(count)]


def decode_all(raw: list[bytes]) -> list[Update]:
    out = []
    for wire in raw:
        assert len(wire) <= MAX_MESSAGE_LEN
        msg = message.decode(wire)
        assert isinstance(msg, Update)
        out.append(msg)
    return out


def test_ten_thousand_host_routes_fill_minimal_updates() -> None:
    routes = [(n, V4) for n in hosts(10_000)]
    raw = pack_updates(routes)
    attrs_len = len(encode_attributes(V4))
    room = MAX_MESSAGE_LEN - 19 - 4 - attrs_len
    assert len(raw) == math.ceil(10_000 * 5 / (room - room % 5))
    updates = decode_all(raw)
    seen = [n for u in updates for n in u.nlri]
    assert seen == [n for n, _ in routes]
    assert all(u.attributes == V4 for u in updates)
    # All but the last message are full to within one prefix.
    assert all(len(w) > MAX_MESSAGE_LEN - 5 for w in raw[:-1])


def test_attribute_sets_never_share_a_message() -> None:
    other = (Origin(0), AsPath.sequence(64512), NextHop("10.99.0.2"), Communities((1,)))
    nets = hosts(10)
    raw = pack_updates([(n, V4 if i % 2 else other) for i, n in enumerate(nets)])
    updates = decode_all(raw)
    assert len(updates) == 2
    by_attrs = {u.attributes: set(u.nlri) for u in updates}
    assert by_attrs[V4] == {n for i, n in enumerate(nets) if i % 2}
    assert by_attrs[other] == {n for i, n in enumerate(nets) if not i % 2}


def test_ipv6_goes_in_mp_reach_and_withdrawals_in_both_forms() -> None:
    v6 = [ipaddress.IPv6Network(f"fd00:1::{i:x}/128") for i in range(1, 400)]
    gone4: list[Network] = list(hosts(1000))
    gone6: list[Network] = [ipaddress.IPv6Network(f"fd00:2::{i:x}/128") for i in range(1, 300)]
    raw = pack_updates([(n, V6) for n in v6], withdrawn=gone4 + gone6)
    updates = decode_all(raw)
    announced = [n for u in updates for n in u.announced()]
    withdrawn = [n for u in updates for n in u.withdrawals()]
    assert announced == v6
    assert sorted(withdrawn, key=str) == sorted(gone4 + gone6, key=str)
    for u in updates:
        if u.announced():
            mp = u.attribute(MpReachNlri)
            assert isinstance(mp, MpReachNlri) and mp.next_hops == ("fd00::2",)
            assert not u.nlri
    # 1000 IPv4 withdrawals need two messages; 299 /128s (17 bytes) need two MP_UNREACH.
    assert sum(1 for u in updates if u.withdrawn) == 2
    assert sum(1 for u in updates if u.withdrawals() and not u.withdrawn) == 2


def test_packing_groups_matches_packing_pairs() -> None:
    nets = [ipaddress.ip_network(f"192.0.2.{i}/32") for i in range(256)]
    raw = [update.encode(u) for u in pack([(V4, nets)])]
    expected = pack_updates([(n, V4) for n in nets])
    assert raw == expected


def test_prefix_text_at_the_edge() -> None:
    assert encode_prefix(prefix("10.1.0.0/16")) == b"\x10\x0a\x01"
    assert encode_prefix(prefix("10.1.2.3")) == b"\x20\x0a\x01\x02\x03"
    assert encode_prefix(prefix("2001:db8::/32")) == b"\x20\x20\x01\x0d\xb8"
    for bad in ("10.1.0.1/16", "10.0.0.0/33", "fd00::/129"):
        with pytest.raises(ValueError):
            prefix(bad)
