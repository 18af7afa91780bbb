"""The allocation strategy against a real store in a temporary directory.

The properties compare the allocator with a model a few lines long: the usable
addresses in walk order, a cursor at the last reserved address, and the set of
leases.  Whatever the ranges and the sequence of allocations and releases, the
allocator must pick what the model picks, never a network, gateway or IPv4
broadcast address, and never one that is leased.
"""

from __future__ import annotations

import ipaddress
import tempfile
from ipaddress import ip_address as A
from ipaddress import ip_network as N
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from foundation.addresses import IPAddress, RangeError
from foundation.cni.spec import Attachment
from ipam.allocator import (
    Allocator,
    DuplicateAllocation,
    RangeExhausted,
    RequestedInvalid,
    RequestedUnavailable,
    allocate,
)
from ipam.ranges import RangeSet, SubnetRange
from ipam.store import DiskStore


def range_set(*specs: str) -> RangeSet:
    """'10.1.0.0/29' or '10.1.0.0/29 10.1.0.2 10.1.0.5' (subnet, start, end)."""
    ranges = []
    for spec in specs:
        subnet, *bounds = spec.split()
        start, end = (A(b) for b in bounds) if bounds else (None, None)
        ranges.append(SubnetRange.build(N(subnet), start, end))
    return RangeSet(tuple(ranges))


def att(i: int, ifname: str = "eth0") -> Attachment:
    return Attachment(f"c{i}", ifname)


def test_round_robin_does_not_reuse_a_released_address_at_once(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29")
    with DiskStore.open(str(tmp_path), "n") as store:
        alloc = Allocator(rs, store, 0)
        first = alloc.get(att(1))
        assert str(first.address) == "10.1.0.2/29" and str(first.gateway) == "10.1.0.1"
        store.release(first.address.ip)
        assert str(alloc.get(att(2)).address.ip) == "10.1.0.3"


def test_exhaustion_and_duplicates(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29 10.1.0.2 10.1.0.6")
    with DiskStore.open(str(tmp_path), "n") as store:
        alloc = Allocator(rs, store, 0)
        got = [str(alloc.get(att(i)).address.ip) for i in range(5)]
        assert got == [f"10.1.0.{i}" for i in range(2, 7)]
        with pytest.raises(RangeExhausted, match=r"no free address in range 10\.1\.0\.2-10"):
            alloc.get(att(9))
        store.release(A("10.1.0.4"))
        with pytest.raises(DuplicateAllocation, match="c1/eth0 already holds 10.1.0.3"):
            alloc.get(att(1))
        assert alloc.free_count() == 1
        # A second interface of the same container is a different attachment.
        assert str(alloc.get(att(1, "net1")).address.ip) == "10.1.0.4"


def test_legacy_lease_counts_as_a_duplicate(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29")
    with DiskStore.open(str(tmp_path), "n") as store:
        (tmp_path / "n" / "10.1.0.5").write_text("c1")
        with pytest.raises(DuplicateAllocation):
            Allocator(rs, store, 0).get(att(1))


def test_empty_lease_left_by_a_crash_is_skipped(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29")
    with DiskStore.open(str(tmp_path), "n") as store:
        (tmp_path / "n" / "10.1.0.2").write_bytes(b"")
        assert str(Allocator(rs, store, 0).get(att(1)).address.ip) == "10.1.0.3"


def test_requested_addresses(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29")
    with DiskStore.open(str(tmp_path), "n") as store:
        alloc = Allocator(rs, store, 0)
        assert str(alloc.get(att(1), A("10.1.0.5")).address) == "10.1.0.5/29"
        with pytest.raises(RequestedUnavailable, match="already leased to c1/eth0"):
            alloc.get(att(2), A("10.1.0.5"))
        for bad in ("10.1.0.1", "10.1.0.7", "10.1.0.0", "10.9.0.1"):
            with pytest.raises(RequestedInvalid):
                alloc.get(att(2), A(bad))
        # The round robin continues after the requested one, like the reference.
        assert str(alloc.get(att(3)).address.ip) == "10.1.0.6"


def test_allocate_is_all_or_nothing_and_keeps_older_leases(tmp_path: Path) -> None:
    v4 = range_set("10.1.0.0/24")
    v6 = range_set("fd00::/120 fd00::5 fd00::5")
    with DiskStore.open(str(tmp_path), "n") as store:
        first = allocate([v4, v6], store, att(1))
        assert [str(a.address) for a in first] == ["10.1.0.2/24", "fd00::5/120"]
        store.reserve(att(2), A("10.1.0.200"), 0)  # an older lease of the failing attachment
        with pytest.raises(RangeExhausted) as err:
            allocate([v4, v6], store, att(2, "net1"))
        assert err.value.range_id == 1
        assert set(store.leases()) == {A("10.1.0.2"), A("fd00::5"), A("10.1.0.200")}


def test_cursor_outside_the_set_starts_over(tmp_path: Path) -> None:
    rs = range_set("10.1.0.0/29")
    with DiskStore.open(str(tmp_path), "n") as store:
        (tmp_path / "n" / "last_reserved_ip.0").write_text("10.99.0.1")
        assert str(Allocator(rs, store, 0).get(att(1)).address.ip) == "10.1.0.2"


@st.composite
def range_sets(draw: st.DrawFn) -> RangeSet:
    """1-3 ranges of one family in distinct small subnets, with random bounds and gateway."""
    version = draw(st.sampled_from([4, 6]))
    ranges = []
    for i in range(draw(st.integers(1, 3))):
        prefix = draw(st.integers(27, 30) if version == 4 else st.integers(123, 126))
        subnet = N(f"10.{i}.0.0/{prefix}" if version == 4 else f"fd00:{i}::/{prefix}")
        hosts = [subnet.network_address + k for k in range(subnet.num_addresses)]
        pick = st.none() | st.sampled_from(hosts)
        start, end, gateway = draw(pick), draw(pick), draw(pick)
        try:
            ranges.append(SubnetRange.build(subnet, start, end, gateway))
        except RangeError:
            assume(False)  # start after end, or nothing usable left: not a valid config
    return RangeSet(tuple(ranges))


def model_order(rs: RangeSet) -> list[IPAddress]:
    """Usable addresses in host-local order from the very start, computed naively."""
    out = []
    for rng in rs.ranges:
        cls = ipaddress.IPv4Address if rng.version == 4 else ipaddress.IPv6Address
        for value in range(int(rng.span.first), int(rng.span.last) + 1):
            address = cls(value)
            never = {rng.subnet.network_address, rng.gateway}
            if rng.version == 4:
                never.add(rng.subnet.broadcast_address)
            if address not in never:
                out.append(address)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(range_sets(), st.lists(st.just(-1) | st.integers(0, 40), max_size=40))
def test_allocator_follows_the_round_robin_model(rs: RangeSet, ops: list[int]) -> None:
    """ops: -1 allocates for a new attachment, n >= 0 releases the n-th current lease."""
    order = model_order(rs)
    leased: dict[IPAddress, Attachment] = {}
    cursor: int | None = None  # index in `order` of the last reserved address
    with tempfile.TemporaryDirectory() as tmp, DiskStore.open(tmp, "n") as store:
        alloc = Allocator(rs, store, 0)
        for step, op in enumerate(ops):
            if op >= 0:
                if leased:
                    victim = sorted(leased, key=int)[op % len(leased)]
                    assert store.release(victim)
                    del leased[victim]
                continue
            who = att(step)
            free = [i for i in range(len(order)) if order[i] not in leased]
            if not free:
                with pytest.raises(RangeExhausted):
                    alloc.get(who)
                continue
            start = 0 if cursor is None else cursor + 1
            expected = next(i % len(order) for i in range(start, start + len(order))
                            if order[i % len(order)] not in leased)
            got = alloc.get(who)
            assert got.address.ip == order[expected]
            rng = rs.range_for(got.address.ip)
            assert rng is not None and got.gateway == rng.gateway
            assert got.address.network == rng.subnet
            leased[got.address.ip] = who
            cursor = expected
        assert {a: (lease.container_id, lease.ifname) for a, lease in store.leases().items()} \
            == {a: (w.container_id, w.ifname) for a, w in leased.items()}


@settings(max_examples=40, deadline=None)
@given(range_sets())
def test_filling_a_range_set_hands_out_each_usable_address_once(rs: RangeSet) -> None:
    with tempfile.TemporaryDirectory() as tmp, DiskStore.open(tmp, "n") as store:
        alloc = Allocator(rs, store, 0)
        got = [alloc.get(att(i)).address.ip for i in range(rs.usable_count())]
        with pytest.raises(RangeExhausted):
            alloc.get(att(-1))
    assert len(set(got)) == len(got) == len(model_order(rs))
    for address in got:
        rng = rs.range_for(address)
        assert rng is not None
        assert address not in (rng.subnet.network_address, rng.gateway)
        assert rng.version == 6 or address != rng.subnet.broadcast_address
