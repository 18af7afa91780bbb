"""Layer 2 and a change of the plan: the announcer skips a change that cannot concern
it, and plan_node passes over addresses no L2Advertisement can elect an owner for."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.speakers import address_pool, endpoint_slice, l2_advertisement, lb_service
from speaker.l2.announcer import L2Announcer
from speaker.plan import BGP, L2, Announcement, l2_addresses, plan_node
from tests.l2.test_plan import node, state

IP = ipaddress.ip_address


def bgp(address: str) -> Announcement:
    return Announcement(IP(address), BGP, services=("default/a",),
                        prefix=ipaddress.ip_network(address), peers=("r",))


def test_a_change_without_layer_2_entries_is_skipped_unless_something_waits() -> None:
    announcer = L2Announcer(refresh=0)
    applied: list[Sequence[Announcement]] = []
    real_apply = announcer.apply

    async def apply(desired: Sequence[Announcement]) -> None:
        applied.append(desired)
        await real_apply(desired)

    announcer.apply = apply  # type: ignore[method-assign]

    async def scenario() -> None:
        one = (bgp("198.51.100.1"),)
        await announcer.apply_change(one, (), one, ())  # nothing applied yet: applied
        assert applied == [one]
        two = (*one, bgp("198.51.100.2"))
        await announcer.apply_change(two, one, two[1:], ())  # BGP only: skipped
        assert applied == [one]
        three = two[1:]
        await announcer.apply_change(three, one, (), one)  # not from what it applied
        assert applied == [one, three]
        l2 = Announcement(IP("198.51.100.9"), L2, ("lo-test-none",))
        # Its interface cannot be opened: the failure is left to retry...
        announcer._failed_ifaces.add("lo-test-none")
        four = (*three, bgp("198.51.100.3"))
        await announcer.apply_change(four, three, four[-1:], ())  # ...so not skipped
        assert applied == [one, three, four]
        announcer._failed_ifaces.clear()
        announcer.set_members({"n2": (IP("10.0.0.2"),)})  # another speaker came
        five = four[:-1]
        await announcer.apply_change(five, four, (), four[-1:])
        assert applied == [one, three, four, five]
        announcer.set_members({"n2": (IP("10.0.0.2"),)})  # the same again: nothing new
        six = (*five, bgp("198.51.100.4"))
        await announcer.apply_change(six, five, six[-1:], ())
        assert applied == [one, three, four, five]
        # A layer 2 entry came or went: applied (patched out: no socket is opened here).
        announcer.apply = _record(applied)  # type: ignore[method-assign]
        seven = (*six, l2)
        await announcer.apply_change(seven, six, (l2,), ())
        assert applied[-1] is seven
        await announcer.close()

    asyncio.run(scenario())


def _record(applied: list[Sequence[Announcement]]) -> Any:
    async def apply(desired: Sequence[Announcement]) -> None:
        applied.append(desired)
    return apply


NODES = [node(f"n{i}", ip=f"10.0.0.{i}") for i in range(1, 4)]
ADDRESSES = ["192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([(), ("a",), ("b",), ("a", "b"), ("",)]),
       st.lists(st.tuples(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=2,
                                   unique=True), st.booleans(),
                          st.sampled_from([(), ("n1",), ("n2", "n3")])),
                max_size=6),
       st.sampled_from(["n1", "n2", "n3"]))
def test_plan_node_is_the_owned_part_of_every_address(
        advertised: tuple[str, ...], services: list[tuple[list[str], bool, tuple[str, ...]]],
        me: str) -> None:
    """Pools a and b, L2Advertisements for some of them (or for every pool): what
    plan_node gives is exactly the addresses l2_addresses elects `me` for."""
    docs: list[dict[str, Any]] = [*NODES, address_pool("a", "192.0.2.0/28"),
                                  address_pool("b", "198.51.100.0/28")]
    for pool in advertised:
        docs.append(l2_advertisement(f"l2-{pool or 'all'}", [pool] if pool else []))
    for i, (ips, local, ready) in enumerate(services):
        doc = lb_service(f"s{i}", *ips, policy="Local" if local else "Cluster")
        doc["metadata"]["annotations"] = {"metallb.io/allow-shared-ip": "k"}
        docs += [doc, endpoint_slice(f"s{i}", ready)]
    s = state(*docs)
    live = {"n1", "n2", "n3"}
    want = [(v.address, v.eligible[me], v.services) for v in l2_addresses(s)
            if v.owner(live) == me]
    got = [(a.address, a.interfaces, a.services) for a in plan_node(s, me, live)]
    assert sorted(got) == sorted(want)
