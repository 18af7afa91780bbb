"""Turning many routes into few UPDATE messages.

Routes that share a path-attribute set go into the same UPDATE until it would pass
4096 bytes (RFC 4271 §4); IPv4 unicast prefixes ride in the classic NLRI field, other
families in MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).  Greedy filling is optimal
here: prefixes of one attribute set are interchangeable, so the message count is the
minimum for each set, and sets cannot share a message.

`pack` only decides the split and yields `Update`s; `update.encode` is the one place
their bytes are made.  Sizes are worked out from prefix lengths, so splitting
100k prefixes encodes each of them once, when its message is encoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

from speaker.bgp import update
from speaker.bgp.attributes import Attribute, MpReachNlri, MpUnreachNlri, encode_attributes
from speaker.bgp.header import HEADER_LEN, MAX_MESSAGE_LEN
from speaker.bgp.negotiated import ASSUMED, Negotiated
from speaker.bgp.nlri import AFI_IPV4, SAFI_UNICAST, Network, afi_of, prefix_size
from speaker.bgp.update import Update

# The header plus the withdrawn-routes and path-attribute length fields.
_FIXED = HEADER_LEN + 4
# An MP attribute's header, counted as extended (4 bytes) so that its size does not
# depend on how many prefixes end up inside.
_MP_HEADER = 4
_MP_UNREACH_HEAD = 3  # AFI, SAFI

Group = tuple[Sequence[Attribute], Sequence[Network]]


def _runs(prefixes: Iterable[Network], room: int) -> Iterator[tuple[Network, ...]]:
    """Cut `prefixes` greedily into runs whose encodings fit in `room` bytes."""
    if room < 17:  # the largest single prefix (an IPv6 /128) must always fit
        raise ValueError(f"no room for prefixes ({room} bytes) in an UPDATE")
    run: list[Network] = []
    size = 0
    for prefix in prefixes:
        needed = prefix_size(prefix)
        if size + needed > room and run:
            yield tuple(run)
            run = []
            size = 0
        run.append(prefix)
        size += needed
    if run:
        yield tuple(run)


def pack(groups: Iterable[Group], withdrawn: Iterable[Network] = (),
         negotiated: Negotiated = ASSUMED, max_len: int = MAX_MESSAGE_LEN) -> Iterator[Update]:
    """The fewest Updates that withdraw `withdrawn` and announce each group's prefixes
    with the group's attributes.

    A group's attributes are complete for its family: IPv4 unicast routes carry
    NEXT_HOP, other routes an MpReachNlri with the next hop(s) and no prefixes (a
    template the prefixes are packed into).  Withdrawals come first, so a prefix both
    withdrawn and announced ends up announced.
    """
    gone: dict[int, list[Network]] = {}
    for network in withdrawn:
        gone.setdefault(afi_of(network), []).append(network)
    for afi, removed in sorted(gone.items()):
        if afi == AFI_IPV4:
            for run in _runs(removed, max_len - _FIXED):
                yield Update(withdrawn=run)
        else:
            for run in _runs(removed, max_len - _FIXED - _MP_HEADER - _MP_UNREACH_HEAD):
                yield Update(attributes=(MpUnreachNlri(afi, SAFI_UNICAST, run),))
    for attrs, prefixes in groups:
        ordered = tuple(sorted(attrs, key=lambda a: a.type_code))
        templates = [a for a in ordered if isinstance(a, MpReachNlri)]
        if not templates:
            room = max_len - _FIXED - len(encode_attributes(ordered, negotiated))
            for run in _runs(prefixes, room):
                yield Update(attributes=ordered, nlri=run)
            continue
        mp = templates[0]
        if len(templates) != 1 or mp.nlri:
            raise ValueError("a non-IPv4 route needs exactly one MpReachNlri template "
                             "without prefixes")
        rest = [a for a in ordered if a is not mp]
        room = (max_len - _FIXED - len(encode_attributes(rest, negotiated)) - _MP_HEADER
                - len(mp.head()))
        for run in _runs(prefixes, room):
            filled = dataclasses.replace(mp, nlri=run)
            yield Update(attributes=tuple(filled if a is mp else a for a in ordered))


def pack_updates(routes: Iterable[tuple[Network, Sequence[Attribute]]],
                 withdrawn: Iterable[Network] = (), negotiated: Negotiated = ASSUMED,
                 max_len: int = MAX_MESSAGE_LEN) -> list[bytes]:
    """`pack` for (prefix, attributes) pairs, encoded."""
    groups: dict[tuple[int, tuple[Attribute, ...]], list[Network]] = {}
    for network, attrs in routes:
        groups.setdefault((afi_of(network), tuple(attrs)), []).append(network)
    return [update.encode(u, negotiated) for u in pack(
        ((attrs, prefixes) for (_, attrs), prefixes in groups.items()), withdrawn, negotiated,
        max_len)]
