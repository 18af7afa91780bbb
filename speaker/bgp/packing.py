"""Turning many routes into few UPDATE messages.

Routes that share a path-attribute set go into the same UPDATE until it would pass
4096 bytes (RFC 4271 §4); IPv4 unicast prefixes ride in the classic NLRI field, other
families in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).  Greedy filling is optimal
here: prefixes of one attribute set are interchangeable, so the message count is the
minimum for each set, and sets cannot share a message.

The functions work on pre-encoded pieces (attribute bytes, prefix bytes) so the
session can encode a peer's attribute set once and send 100k prefixes without
building an object per prefix; `pack_updates` is the object-level convenience.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

from speaker.bgp.attributes import (
    EXTENDED_LENGTH,
    MP_REACH_NLRI,
    MP_UNREACH_NLRI,
    OPTIONAL,
    Attribute,
    MpReachNlri,
    encode_attributes,
    mp_reach_prefix,
)
from speaker.bgp.header import HEADER_LEN, MAX_MESSAGE_LEN, UPDATE
from speaker.bgp.nlri import AFI_IPV4, SAFI_UNICAST, Network, afi_of, encode_prefix

# Withdrawn-routes length + path-attribute length fields.
_LENGTH_FIELDS = 4
# An MP attribute always uses the extended (2-byte) length here, so its header size
# does not depend on how many prefixes end up inside.
_MP_ATTR_HEADER = 4
_HEADER_PREFIX = b"\xff" * 16


def _message(body: bytes) -> bytes:
    return _HEADER_PREFIX + struct.pack("!HB", HEADER_LEN + len(body), UPDATE) + body


def chunk_prefixes(prefixes: Iterable[bytes], room: int) -> Iterator[bytes]:
    """Concatenate encoded prefixes greedily into runs of at most `room` bytes."""
    if room < 17:  # the largest single prefix (an IPv6 /128) must always fit
        raise ValueError(f"no room for prefixes ({room} bytes) in an UPDATE")
    run: list[bytes] = []
    size = 0
    for prefix in prefixes:
        if size + len(prefix) > room and run:
            yield b"".join(run)
            run = []
            size = 0
        run.append(prefix)
        size += len(prefix)
    if run:
        yield b"".join(run)


def pack_ipv4(attributes: bytes, prefixes: Iterable[bytes],
              max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    """UPDATEs announcing IPv4 unicast `prefixes` with the encoded `attributes`."""
    room = max_len - HEADER_LEN - _LENGTH_FIELDS - len(attributes)
    head = b"\x00\x00" + struct.pack("!H", len(attributes)) + attributes
    return [_message(head + run) for run in chunk_prefixes(prefixes, room)]


def pack_ipv4_withdraw(prefixes: Iterable[bytes], max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    room = max_len - HEADER_LEN - _LENGTH_FIELDS
    return [_message(struct.pack("!H", len(run)) + run + b"\x00\x00")
            for run in chunk_prefixes(prefixes, room)]


def pack_mp_reach(afi: int, safi: int, next_hops: Sequence[str], attributes: bytes,
                  prefixes: Iterable[bytes], max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    """UPDATEs announcing `prefixes` of (afi, safi) in MP_REACH_NLRI next to `attributes`."""
    mp_head = mp_reach_prefix(afi, safi, next_hops)
    room = (max_len - HEADER_LEN - _LENGTH_FIELDS - len(attributes) - _MP_ATTR_HEADER
            - len(mp_head))
    out = []
    for run in chunk_prefixes(prefixes, room):
        value = mp_head + run
        mp = struct.pack("!BBH", OPTIONAL | EXTENDED_LENGTH, MP_REACH_NLRI, len(value)) + value
        path = attributes + mp
        out.append(_message(b"\x00\x00" + struct.pack("!H", len(path)) + path))
    return out


def pack_mp_unreach(afi: int, safi: int, prefixes: Iterable[bytes],
                    max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    head = struct.pack("!HB", afi, safi)
    room = max_len - HEADER_LEN - _LENGTH_FIELDS - _MP_ATTR_HEADER - len(head)
    out = []
    for run in chunk_prefixes(prefixes, room):
        value = head + run
        mp = struct.pack("!BBH", OPTIONAL | EXTENDED_LENGTH, MP_UNREACH_NLRI, len(value)) + value
        out.append(_message(b"\x00\x00" + struct.pack("!H", len(mp)) + mp))
    return out


def pack_updates(routes: Iterable[tuple[Network, Sequence[Attribute]]],
                 withdrawn: Iterable[Network] = (), four_octet: bool = True,
                 max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    """The fewest UPDATEs that withdraw `withdrawn` and announce `routes`.

    Each route's attributes are complete for its family: IPv4 routes carry NEXT_HOP,
    other routes carry an MpReachNlri with the next hop(s) and no prefixes (a
    template the prefixes are packed into).  Withdrawals come first, so a prefix
    both withdrawn and announced ends up announced.
    """
    groups: dict[tuple[int, tuple[Attribute, ...]], list[bytes]] = {}
    for network, attrs in routes:
        groups.setdefault((afi_of(network), tuple(attrs)), []).append(encode_prefix(network))
    gone: dict[int, list[bytes]] = {}
    for network in withdrawn:
        gone.setdefault(afi_of(network), []).append(encode_prefix(network))

    out: list[bytes] = []
    for afi, prefixes in sorted(gone.items()):
        if afi == AFI_IPV4:
            out += pack_ipv4_withdraw(prefixes, max_len)
        else:
            out += pack_mp_unreach(afi, SAFI_UNICAST, prefixes, max_len)
    for (afi, attrs), prefixes in groups.items():
        ordered = sorted(attrs, key=lambda a: a.type_code)
        if afi == AFI_IPV4:
            out += pack_ipv4(encode_attributes(ordered, four_octet), prefixes, max_len)
            continue
        templates = [a for a in ordered if isinstance(a, MpReachNlri)]
        if len(templates) != 1 or templates[0].nlri:
            raise ValueError("a non-IPv4 route needs exactly one MpReachNlri template "
                             "without prefixes")
        rest = [a for a in ordered if not isinstance(a, MpReachNlri)]
        mp = templates[0]
        out += pack_mp_reach(mp.afi, mp.safi, mp.next_hops, encode_attributes(rest, four_octet),
                             prefixes, max_len)
    return out
