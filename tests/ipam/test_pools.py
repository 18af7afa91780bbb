"""The pool allocator's free-address bookkeeping: whatever was assigned and released
before, a new service gets exactly the first free usable address in the pool's
order (what a walk from the start would find), and per-pool counts stay exact."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.addresses import AddressRange, IPAddress
from ipam.pools import Allocator, Pool, Request, usable

POOLS = (
    Pool("a", (AddressRange.parse("10.0.0.254-10.0.1.2"), AddressRange.parse("10.0.3.0/30"),
               AddressRange.parse("fd00::/126")), avoid_buggy_ips=True),
    # Overlaps a: what one pool hands out is not free in the other.
    Pool("b", (AddressRange.parse("10.0.1.0/29"),)),
)
NAMES = [f"s{i}" for i in range(12)]


def first_free(alloc: Allocator, pool: Pool, family: int) -> IPAddress | None:
    for span in pool.addresses:
        if span.version == family:
            for address in span.addresses():
                if usable(pool, address) and not alloc.users(address):
                    return address
    return None


ops = st.lists(st.tuples(st.sampled_from(["assign", "release", "adopt"]),
                         st.sampled_from(NAMES), st.sampled_from(["a", "b"]),
                         st.sampled_from([4, 6])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_first_fit_after_any_history(steps: list[tuple[str, str, str, int]]) -> None:
    alloc = Allocator.with_pools(POOLS)
    pools = {p.name: p for p in POOLS}
    for op, name, pool_name, family in steps:
        pool = pools[pool_name]
        if op == "release":
            alloc.release(name)
        elif op == "adopt" and alloc.assignment(name) is None:
            # Held by hand (a status read back), anywhere in the pool.
            free = [a for span in pool.addresses for a in span.addresses()
                    if usable(pool, a) and not alloc.users(a)]
            if free:
                alloc.adopt(name, [free[len(free) // 2]], Request(pool=pool_name))
        elif op == "assign" and alloc.assignment(name) is None:
            want = first_free(alloc, pool, family)
            try:
                got = alloc.assign(name, Request(families=(family,), pool=pool_name))
            except Exception:  # noqa: BLE001 - the pool is full: nothing was free
                assert want is None
                continue
            assert got == (want,)
        for p in POOLS:
            held = {a for s in NAMES if (asg := alloc.assignment(s))
                    for a, src in zip(asg.addresses, asg.pools, strict=True) if src == p.name}
            assert alloc.in_use(p.name) == len(held)


def test_pool_change_forgets_what_it_skipped() -> None:
    small = Pool("p", (AddressRange.parse("10.0.0.0/30"),))
    alloc = Allocator.with_pools([small])
    for i in range(4):
        alloc.assign(f"s{i}", Request(families=(4,), pool="p"))
    grown = Pool("p", (AddressRange.parse("10.0.0.8/30"), AddressRange.parse("10.0.0.0/30")))
    alloc.set_pools([grown])
    # The grown pool's walk starts with the new span, not where the old one stopped.
    assert alloc.assign("new", Request(families=(4,), pool="p")) == (
        ipaddress.ip_address("10.0.0.8"),)
