"""MetalLB CRDs as a MetalLB user writes them: parsed, defaulted, selected, rejected."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from foundation.kube.model import (
    ClusterState,
    ModelError,
    Node,
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_ip_address_pool,
    parse_object,
    range_networks,
    range_text,
)
from foundation.kube.sources import read_manifests, yaml_documents

DATA = Path(__file__).parent / "data" / "metallb.yaml"


@pytest.fixture(scope="module")
def state() -> ClusterState:
    parsed = read_manifests(str(DATA))
    assert parsed.errors == [] and parsed.problems == []
    return parsed.state


def example_docs() -> list[Any]:
    """The example documents read as Kubernetes reads YAML (no base-60 numbers)."""
    return [doc for _, doc in yaml_documents(DATA.read_text())]


def docs_by_name() -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in example_docs()}


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_every_example_object_is_understood(state: ClusterState) -> None:
    assert [p.name for p in state.ip_address_pools] == ["expensive", "first-pool", "ns-pool"]
    assert [a.name for a in state.l2_advertisements] == ["by-label", "example"]
    assert [p.name for p in state.bgp_peers] == ["old-style", "sample"]
    assert [a.name for a in state.bgp_advertisements] == ["external", "local"]


def test_pool_ranges_cidrs_and_defaults(state: ClusterState) -> None:
    pool = state.pool("first-pool")
    assert pool is not None
    assert [range_text(r) for r in pool.addresses] == [
        "192.168.10.0/24", "192.168.9.1-192.168.9.5", "fc00:f853:ccd:e799::/124"]
    assert pool.auto_assign and not pool.avoid_buggy_ips
    assert ip("192.168.9.5") in pool and ip("192.168.9.6") not in pool
    assert ip("fc00:f853:ccd:e799::f") in pool and ip("fc00:f853:ccd:e799::10") not in pool
    assert pool.addresses[1].size == 5
    assert [str(n) for n in range_networks(pool.addresses[1])] == [
        "192.168.9.1/32", "192.168.9.2/31", "192.168.9.4/31"]
    assert state.pool_of(ip("192.168.10.77")) is pool


def test_pool_cidr_with_host_bits_means_its_network(state: ClusterState) -> None:
    # MetalLB's docs write 198.51.100.10/24 and mean the whole /24.
    pool = state.pool("ns-pool")
    assert pool is not None and range_text(pool.addresses[0]) == "198.51.100.0/24"


def test_avoid_buggy_ips(state: ClusterState) -> None:
    pool = state.pool("expensive")
    assert pool is not None and not pool.auto_assign
    assert all(pool.usable(a) for a in pool.addresses[0].addresses())
    straddling = parse_ip_address_pool(
        {"kind": "IPAddressPool", "metadata": {"name": "p"},
         "spec": {"addresses": ["10.0.0.254-10.0.1.1", "fd00::ff/128"], "avoidBuggyIPs": True}})
    ends = [ip(f"10.0.{n}") for n in ("0.254", "0.255", "1.0", "1.1")]
    assert [straddling.usable(a) for a in ends] == [True, False, False, True]
    assert straddling.usable(ip("fd00::ff")) and not straddling.usable(ip("10.0.1.2"))
    first = state.pool("first-pool")
    assert first is not None and first.usable(ip("192.168.10.0"))


def test_service_allocation_selects_by_namespace_and_service_labels(
        state: ClusterState) -> None:
    pool = state.pool("ns-pool")
    assert pool is not None and pool.service_allocation is not None
    alloc = pool.service_allocation
    assert alloc.priority == 50
    assert alloc.selects("namespace-a", {}, {"app": "bar"})
    assert alloc.selects("other", {"foo": "bar"}, {"app": "bar"})
    assert not alloc.selects("other", {}, {"app": "bar"})
    assert not alloc.selects("namespace-a", {}, {"app": "baz"})


def test_l2_advertisement_pools_nodes_interfaces(state: ClusterState) -> None:
    first, expensive = state.pool("first-pool"), state.pool("expensive")
    assert first is not None and expensive is not None
    node_a = Node("a", labels={"kubernetes.io/hostname": "NodeA"})
    node_c = Node("c", labels={"kubernetes.io/hostname": "NodeC"})
    assert [a.name for a in state.l2_advertisements_for(first, node_a)] == [
        "by-label", "example"]
    assert [a.name for a in state.l2_advertisements_for(first, node_c)] == ["by-label"]
    assert state.l2_advertisements_for(expensive, node_a) == ()
    example = next(a for a in state.l2_advertisements if a.name == "example")
    assert example.interfaces == ("eth0", "eth1")


def test_bgp_peer_v1beta2(state: ClusterState) -> None:
    peer = next(p for p in state.bgp_peers if p.name == "sample")
    assert (peer.my_asn, peer.peer_asn, str(peer.peer_address)) == (64500, 64501, "10.0.0.1")
    assert (peer.hold_time, peer.keepalive_time, peer.peer_port) == (90.0, 10.0, 179)
    assert peer.ebgp_multihop and peer.ibgp is False
    assert peer.selects_node({"rack": "frontend"})
    assert peer.selects_node({"rack": "frontend", "network-speed": "fast"})
    assert not peer.selects_node({"rack": "frontend", "network-speed": "slow"})
    assert not peer.selects_node({})
    assert [p.name for p in state.bgp_peers_for(Node("x", labels={"rack": "frontend"}))] == [
        "old-style", "sample"]


def test_bgp_peer_v1beta1_defaults(state: ClusterState) -> None:
    peer = next(p for p in state.bgp_peers if p.name == "old-style")
    assert peer.ibgp is True and peer.peer_port == 1179
    assert (peer.hold_time, peer.keepalive_time) == (90.0, 30.0)
    assert str(peer.router_id) == "10.10.10.10"
    assert str(peer.source_address) == "fc00:f853:ccd:e793::2"
    assert peer.password == "yourPassword"


def test_bgp_advertisement_and_community_aliases(state: ClusterState) -> None:
    local = next(a for a in state.bgp_advertisements if a.name == "local")
    assert (local.aggregation_length, local.aggregation_length_v6, local.local_pref) == (
        32, 128, 100)
    assert [str(c) for c in state.communities_for(local)] == [
        "65535:65282", "65535:65281", "1234:1", "large:64512:7:8"]
    assert local.selects_peer("sample") and not local.selects_peer("old-style")
    external = next(a for a in state.bgp_advertisements if a.name == "external")
    assert (external.aggregation_length, external.aggregation_length_v6) == (24, 64)
    assert external.selects_peer("anyone") and external.local_pref is None


def test_unknown_community_alias_names_the_field(state: ClusterState) -> None:
    adv = parse_bgp_advertisement(
        {"kind": "BGPAdvertisement", "metadata": {"name": "a", "namespace": "metallb-system"},
         "spec": {"communities": ["1:2", "nope"]}})
    with pytest.raises(ModelError) as err:
        state.communities_for(adv)
    assert str(err.value) == ('BGPAdvertisement metallb-system/a: spec.communities[1]: '
                              'no Community object defines "nope"')


def mutated(name: str, path: str, value: Any) -> Any:
    """The example object `name` with the field at dotted `path` set to `value`."""
    doc = copy.deepcopy(docs_by_name()[name])
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(("name", "path", "value", "message"), [
    ("first-pool", "spec.addresses.1", "192.168.9.9-192.168.9.1",
     'IPAddressPool metallb-system/first-pool: spec.addresses[1]: range starts after it ends: '
     '"192.168.9.9-192.168.9.1"'),
    ("first-pool", "spec.addresses.1", "192.168.9.1-fc00::1",
     "IPAddressPool metallb-system/first-pool: spec.addresses[1]: range mixes IPv4 and IPv6"),
    ("first-pool", "spec.addresses.0", "192.168.10.0/33",
     'IPAddressPool metallb-system/first-pool: spec.addresses[0]: expected a CIDR or a range '
     '"first-last", got "192.168.10.0/33"'),
    ("first-pool", "spec.addresses.1", "192.168.10.200-192.168.10.210",
     "IPAddressPool metallb-system/first-pool: spec.addresses: addresses[0] 192.168.10.0/24 "
     "overlaps addresses[1] 192.168.10.200-192.168.10.210"),
    ("first-pool", "spec.addresses", [],
     "IPAddressPool metallb-system/first-pool: spec.addresses: expected at least one"),
    ("expensive", "spec.autoAssign", "no",
     'IPAddressPool metallb-system/expensive: spec.autoAssign: expected true or false, '
     'got "no"'),
    ("sample", "spec.holdTime", "90",
     'BGPPeer metallb-system/sample: spec.holdTime: expected a duration such as "90s"'),
    ("sample", "spec.holdTime", "2s",
     'BGPPeer metallb-system/sample: spec.holdTime: expected 0 or at least 3s, got "2s"'),
    ("sample", "spec.keepaliveTime", "2m",
     'BGPPeer metallb-system/sample: spec.keepaliveTime: must not exceed holdTime'),
    ("sample", "spec.peerASN", 4294967296,
     "BGPPeer metallb-system/sample: spec.peerASN: expected an integer 1-4294967295, "
     "got 4294967296"),
    ("sample", "spec.peerAddress", "10.0.0.256",
     'BGPPeer metallb-system/sample: spec.peerAddress: expected an IPv4 or IPv6 address, '
     'got "10.0.0.256"'),
    ("old-style", "spec.routerID", "fc00::1",
     'BGPPeer metallb-system/old-style: spec.routerID: expected an IPv4 address'),
    ("sample", "spec.nodeSelectors.0.matchExpressions.0.operator", "Gt",
     "BGPPeer metallb-system/sample: spec.nodeSelectors[0].matchExpressions[0].operator: "
     "expected one of In, NotIn, Exists, DoesNotExist, got \"Gt\""),
    ("local", "spec.aggregationLength", 33,
     "BGPAdvertisement metallb-system/local: spec.aggregationLength: expected an integer 0-32"),
    ("example", "spec.interfaces", "eth0",
     'L2Advertisement metallb-system/example: spec.interfaces: expected a list, got "eth0"'),
])
def test_errors_name_object_and_field(name: str, path: str, value: Any, message: str) -> None:
    with pytest.raises(ModelError) as err:
        parse_object(mutated(name, path, value))
    assert str(err.value).startswith(message)


def test_base60_community_from_a_yaml11_reader_gets_a_hint() -> None:
    # yaml.safe_load reads `1234:1` as 74041; the message says what happened.
    doc = next(d for d in yaml.safe_load_all(DATA.read_text()) if d["kind"] == "Community")
    with pytest.raises(ModelError, match=r"spec\.communities\[0\]\.value: expected a string, "
                                         r"got 74041 \(quote communities"):
        parse_object(doc)
    assert [doc for _, doc in yaml_documents("v: 1234:1")] == [{"v": "1234:1"}]


def test_peer_asn_may_be_dynamic_but_not_both() -> None:
    base = docs_by_name()["sample"]["spec"]
    dynamic: dict[str, Any] = {"kind": "BGPPeer", "metadata": {"name": "d"},
               "spec": {k: v for k, v in base.items() if k != "peerASN"} | {
                   "dynamicASN": "external"}}
    assert parse_bgp_peer(dynamic).ibgp is False
    del dynamic["spec"]["dynamicASN"]
    with pytest.raises(ModelError, match=r"spec\.peerASN: required \(or set spec\.dynamicASN\)"):
        parse_bgp_peer(dynamic)
    dynamic["spec"] |= {"dynamicASN": "internal", "peerASN": 1}
    with pytest.raises(ModelError, match=r"spec\.dynamicASN: cannot be combined"):
        parse_bgp_peer(dynamic)


def test_password_secret_reference() -> None:
    doc: dict[str, Any] = {
        "kind": "BGPPeer", "metadata": {"name": "s", "namespace": "metallb-system"},
        "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "10.0.0.1",
                 "passwordSecret": {"name": "bgp-pass"}}}
    assert parse_bgp_peer(doc).password_secret == "metallb-system/bgp-pass"
    doc["spec"]["password"] = "x"
    with pytest.raises(ModelError, match=r"spec\.passwordSecret: cannot be combined"):
        parse_bgp_peer(doc)


def test_v6_only_pool_parses() -> None:
    pool = parse_ip_address_pool({"kind": "IPAddressPool", "metadata": {"name": "v6"},
                                  "spec": {"addresses": ["fd00::10-fd00::1f"]}})
    assert pool.addresses[0].size == 16 and pool.usable(ip("fd00::10"))


def test_cross_object_problems_name_the_field() -> None:
    docs = example_docs()
    by_name = {d["metadata"]["name"]: d for d in docs}
    by_name["expensive"]["spec"]["addresses"] = ["192.168.10.128/25"]  # inside first-pool
    by_name["example"]["spec"]["ipAddressPools"] = ["first-pool", "frist-pool"]
    by_name["local"]["spec"]["peers"] = ["sample", "nobody"]
    by_name["local"]["spec"]["communities"] = ["vpn-only", "unknown-alias"]
    by_name["external"]["spec"]["ipAddressPools"] = ["first-pool"]
    objects = [o for o in (parse_object(d) for d in docs) if o is not None]
    problems = [str(p) for p in ClusterState.from_objects(objects).problems()]
    assert problems == [
        # The pool whose range starts later is the one said to overlap.
        "IPAddressPool metallb-system/expensive: spec.addresses[0]: overlaps IPAddressPool "
        "first-pool",
        'L2Advertisement metallb-system/example: spec.ipAddressPools[1]: no IPAddressPool is '
        'named "frist-pool"',
        # MetalLB's rule: per address entry, against its widest CIDR.
        "BGPAdvertisement metallb-system/external: spec.aggregationLength: 24 is shorter than "
        "prefix /31 of 192.168.9.1-192.168.9.5 in IPAddressPool first-pool",
        "BGPAdvertisement metallb-system/external: spec.aggregationLengthV6: 64 is shorter than "
        "prefix /124 of fc00:f853:ccd:e799::/124 in IPAddressPool first-pool",
        'BGPAdvertisement metallb-system/local: spec.peers[1]: no BGPPeer is named "nobody"',
        'BGPAdvertisement metallb-system/local: spec.communities[1]: no Community object '
        'defines "unknown-alias"',
    ]
