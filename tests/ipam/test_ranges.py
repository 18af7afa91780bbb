"""Pure range logic: parsing, host-local defaults, containment, the round-robin walk."""

from __future__ import annotations

import ipaddress
from ipaddress import ip_address as A
from ipaddress import ip_network as N

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.addresses import AddressRange, RangeError, parse_network, walk
from ipam.ranges import RangeSet, SubnetRange


def test_address_range_parses_metallb_forms() -> None:
    assert AddressRange.parse("10.0.0.5-10.0.0.10") == AddressRange(A("10.0.0.5"), A("10.0.0.10"))
    assert AddressRange.parse("10.0.0.0/24").size == 256
    assert AddressRange.parse("fd00::/120") == AddressRange(A("fd00::"), A("fd00::ff"))
    assert AddressRange.parse("fd00::5-fd00::7").size == 3
    assert AddressRange.parse("10.0.0.7").size == 1
    # A /64 is counted, never materialised.
    assert AddressRange.parse("fd00:1::/64").size == 2**64


@pytest.mark.parametrize("text", ["10.0.0.10-10.0.0.5", "10.0.0.1-fd00::1", "banana",
                                  "10.0.0.1/24", "10.0.0.0/33"])
def test_address_range_rejects(text: str) -> None:
    with pytest.raises(RangeError):
        AddressRange.parse(text)


def test_parse_network_names_the_fix_for_host_bits() -> None:
    with pytest.raises(RangeError) as err:
        parse_network("10.1.0.5/24", "subnet")
    assert err.value.field == "subnet" and "10.1.0.0/24" in err.value.fix


def test_containment_and_overlap_respect_families() -> None:
    v4 = AddressRange.parse("10.0.0.0/24")
    # The same integer values as 10.0.0.0/24, but IPv6: never the same addresses.
    same_ints_v6 = AddressRange.parse("::a00:0-::a00:ff")
    assert A("10.0.0.255") in v4 and A("10.0.1.0") not in v4
    assert A("::a00:5") not in v4 and "10.0.0.1" not in v4
    assert not v4.overlaps(same_ints_v6) and not same_ints_v6.overlaps(v4)
    assert v4.overlaps(AddressRange.parse("10.0.0.255-10.0.1.3"))
    assert not v4.overlaps(AddressRange.parse("10.0.1.0-10.0.1.3"))


def test_small_ipv6_values_stay_ipv6() -> None:
    rng = AddressRange.parse("::1-::3")
    assert [str(a) for a in rng.addresses()] == ["::1", "::2", "::3"]


def test_host_local_defaults_ipv4() -> None:
    rng = SubnetRange.build(N("10.1.0.0/24"))
    assert rng.gateway == A("10.1.0.1")
    assert rng.span == AddressRange(A("10.1.0.1"), A("10.1.0.254"))  # broadcast excluded
    assert rng.reserved == {A("10.1.0.0"), A("10.1.0.1"), A("10.1.0.255")}
    assert rng.usable_count() == 253
    assert str(rng) == "10.1.0.2-10.1.0.254"  # what can really be handed out


def test_host_local_defaults_ipv6() -> None:
    rng = SubnetRange.build(N("fd00:1::/120"))
    assert rng.gateway == A("fd00:1::1")
    assert rng.span == AddressRange(A("fd00:1::1"), A("fd00:1::ff"))  # no broadcast in IPv6
    assert rng.usable_count() == 254


def test_explicit_range_covering_reserved_addresses_never_offers_them() -> None:
    net = N("10.1.0.0/29")
    rng = SubnetRange.build(net, A("10.1.0.0"), A("10.1.0.7"), A("10.1.0.3"))
    offered = [a for _, a in RangeSet((rng,)).candidates()]
    assert offered == [A(f"10.1.0.{i}") for i in (1, 2, 4, 5, 6)]


@pytest.mark.parametrize(("subnet", "kwargs", "field"), [
    ("10.1.0.0/31", {}, "subnet"),
    ("fd00::/127", {}, "subnet"),
    ("10.1.0.0/24", {"range_start": A("10.2.0.1")}, "rangeStart"),
    ("10.1.0.0/24", {"range_end": A("10.2.0.1")}, "rangeEnd"),
    ("10.1.0.0/24", {"range_start": A("10.1.0.9"), "range_end": A("10.1.0.5")}, "rangeEnd"),
    ("10.1.0.0/24", {"gateway": A("fd00::1")}, "gateway"),
    ("10.1.0.0/24", {"range_start": A("10.1.0.1"), "range_end": A("10.1.0.1")}, "rangeEnd"),
])
def test_subnet_range_errors_name_the_field(subnet: str, kwargs: dict[str, object],
                                            field: str) -> None:
    with pytest.raises(RangeError) as err:
        SubnetRange.build(N(subnet), **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field and err.value.fix


def test_range_set_rejects_overlap_and_mixed_families() -> None:
    a = SubnetRange.build(N("10.1.0.0/24"))
    b = SubnetRange.build(N("10.1.0.0/24"), A("10.1.0.200"))
    with pytest.raises(RangeError, match="overlaps"):
        RangeSet((a, b))
    with pytest.raises(RangeError, match="IPv6"):
        RangeSet((a, SubnetRange.build(N("fd00::/64"))))
    # Two spans of one subnet that do not overlap are fine (host-local compares spans).
    low = SubnetRange.build(N("10.1.0.0/24"), A("10.1.0.2"), A("10.1.0.99"))
    assert RangeSet((low, b)).usable_count() == 98 + 55


def test_walk_order_is_host_locals() -> None:
    spans = [AddressRange.parse("10.0.0.1-10.0.0.3"), AddressRange.parse("10.0.1.1-10.0.1.2")]
    names = lambda after: [str(a) for _, a in walk(spans, after)]  # noqa: E731
    assert names(None) == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2"]
    assert names(A("10.0.0.2")) == ["10.0.0.3", "10.0.1.1", "10.0.1.2", "10.0.0.1", "10.0.0.2"]
    # The last address of a span moves on to the next span...
    assert names(A("10.0.0.3"))[0] == "10.0.1.1"
    # ...and of the last span, back to the first.
    assert names(A("10.0.1.2"))[0] == "10.0.0.1"
    # An address outside every span (the ranges changed) starts over.
    assert names(A("10.9.9.9"))[0] == "10.0.0.1"


@st.composite
def span_lists(draw: st.DrawFn) -> list[AddressRange]:
    version = draw(st.sampled_from([4, 6]))
    spans: list[AddressRange] = []
    for i in range(draw(st.integers(1, 4))):
        base = int(ipaddress.ip_address("10.0.0.0" if version == 4 else "fd00::")) + i * 64
        lo = draw(st.integers(0, 40))
        hi = draw(st.integers(lo, 60))
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        spans.append(AddressRange(cls(base + lo), cls(base + hi)))
    return spans


@given(span_lists(), st.data())
def test_walk_visits_every_address_once_starting_after_the_cursor(
        spans: list[AddressRange], data: st.DataObject) -> None:
    everything = [a for span in spans for a in span.addresses()]
    after = data.draw(st.none() | st.sampled_from(everything))
    seen = [a for _, a in walk(spans, after)]
    assert sorted(seen) == sorted(everything) and len(set(seen)) == len(seen)
    if after is None:
        assert seen == everything
    else:
        # The rotation of the natural order that ends with the cursor.
        at = everything.index(after)
        assert seen == everything[at + 1:] + everything[:at + 1]


@given(span_lists())
def test_walk_reports_the_span_of_each_address(spans: list[AddressRange]) -> None:
    for index, address in walk(spans):
        assert address in spans[index]
