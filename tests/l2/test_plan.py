"""The pure L2 planner: one owner per address among eligible live speakers, always
the same one for the same inputs, and MetalLB's eligibility rules."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.model import ClusterState, parse_object
from lab.speakers import address_pool, endpoint_slice, l2_advertisement, lb_service
from speaker.plan import elect, l2_owners, plan_node

IP = ipaddress.ip_address


def node(name: str, labels: dict[str, str] | None = None, ready: bool | None = None,
         ip: str = "10.0.0.1") -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": name, "labels": labels or {}},
                           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    if ready is not None:
        doc["status"]["conditions"] = [{"type": "Ready", "status": str(ready)}]
    return doc


def state(*docs: dict[str, Any]) -> ClusterState:
    objects = [parse_object(d) for d in docs]
    return ClusterState.from_objects(o for o in objects if o is not None)


NODES = [node(f"n{i}", ip=f"10.0.0.{i}") for i in range(1, 4)]
BASE = [*NODES, address_pool("pool", "192.0.2.0/28", "2001:db8::/124"), l2_advertisement("l2")]


def test_election_is_metallbs_sha256_order() -> None:
    address = IP("192.0.2.1")
    names = ["n1", "n2", "n3", "worker-a"]
    expected = min(names, key=lambda n: hashlib.sha256(f"{n}#{address}".encode()).digest())
    assert elect(address, names) == expected
    assert elect(address, []) is None


def test_each_address_gets_one_owner_and_only_it_plans_it() -> None:
    s = state(*BASE, lb_service("a", "192.0.2.1"), lb_service("b", "192.0.2.2", "2001:db8::2"))
    live = {"n1", "n2", "n3"}
    owners = l2_owners(s, live)
    assert set(owners) == {IP("192.0.2.1"), IP("192.0.2.2"), IP("2001:db8::2")}
    for address, owner in owners.items():
        planned_by = [n for n in live if address in {a.address for a in plan_node(s, n, live)}]
        assert planned_by == [owner]


def test_dead_owner_is_replaced_by_a_live_one() -> None:
    s = state(*BASE, lb_service("a", "192.0.2.1"))
    first = l2_owners(s, {"n1", "n2", "n3"})[IP("192.0.2.1")]
    assert first is not None
    second = l2_owners(s, {"n1", "n2", "n3"} - {first})[IP("192.0.2.1")]
    assert second not in (None, first)
    assert l2_owners(s, set())[IP("192.0.2.1")] is None


def test_local_policy_only_nodes_with_ready_endpoints() -> None:
    s = state(*BASE, lb_service("a", "192.0.2.1", policy="Local"),
              endpoint_slice("a", ["n2"]))
    assert l2_owners(s, {"n1", "n2", "n3"})[IP("192.0.2.1")] == "n2"
    assert l2_owners(s, {"n1", "n3"})[IP("192.0.2.1")] is None  # never a node without endpoints
    not_ready = state(*BASE, lb_service("a", "192.0.2.1", policy="Local"),
                      endpoint_slice("a", ["n2"], ready=False))
    assert l2_owners(not_ready, {"n1", "n2", "n3"})[IP("192.0.2.1")] is None


def test_exclusion_label_not_ready_and_node_selectors() -> None:
    excluded = [node("n1", {"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
                node("n2", ready=False), node("n3", {"zone": "a"}), node("n4", {"zone": "b"})]
    ads = l2_advertisement("l2", node_selectors=[{"matchLabels": {"zone": "b"}}])
    s = state(*excluded, address_pool("pool", "192.0.2.0/28"), ads, lb_service("a", "192.0.2.1"))
    assert l2_owners(s, {"n1", "n2", "n3", "n4"})[IP("192.0.2.1")] == "n4"


def test_addresses_outside_pools_or_advertisements_are_not_announced() -> None:
    s = state(*NODES, address_pool("pool", "192.0.2.0/28"), address_pool("bgp", "198.51.100.0/28"),
              l2_advertisement("l2", pools=["pool"]),
              lb_service("a", "203.0.113.1"), lb_service("b", "198.51.100.1"),
              lb_service("c", "192.0.2.3"))
    owners = l2_owners(s, {"n1", "n2", "n3"})
    assert IP("203.0.113.1") not in owners
    assert owners[IP("198.51.100.1")] is None
    assert owners[IP("192.0.2.3")] is not None


def test_interfaces_come_from_the_advertisement() -> None:
    s = state(*BASE[:-1], l2_advertisement("l2", interfaces=["eth1", "eth0"]),
              lb_service("a", "192.0.2.1"))
    owner = l2_owners(s, {"n1", "n2", "n3"})[IP("192.0.2.1")]
    assert owner is not None
    (ann,) = plan_node(s, owner, {"n1", "n2", "n3"})
    assert ann.interfaces == ("eth0", "eth1")
    assert ann.services == ("default/a",)


def test_shared_address_gets_one_owner_that_serves_both() -> None:
    s = state(*BASE, lb_service("a", "192.0.2.1", policy="Local"),
              endpoint_slice("a", ["n1", "n3"]), lb_service("b", "192.0.2.1", policy="Local"),
              endpoint_slice("b", ["n3"]))
    live = {"n1", "n2", "n3"}
    assert l2_owners(s, live)[IP("192.0.2.1")] == "n3"
    (ann,) = plan_node(s, "n3", live)
    assert ann.services == ("default/a", "default/b")


def test_other_load_balancer_classes_are_left_alone() -> None:
    svc = lb_service("a", "192.0.2.1")
    svc["spec"]["loadBalancerClass"] = "example.com/other"
    s = state(*BASE, svc)
    assert l2_owners(s, {"n1", "n2", "n3"}) == {}
    assert IP("192.0.2.1") in l2_owners(s, {"n1"}, lb_class="example.com/other")


names = st.lists(st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1,
                 max_size=8, unique=True)


@settings(max_examples=60, deadline=None)
@given(nodes=names, data=st.data())
def test_exactly_one_owner_among_eligible_live_members(nodes: list[str], data: Any) -> None:
    count = data.draw(st.integers(1, 6))
    local = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    docs = [node(n, ip=f"10.0.{i // 250}.{i % 250 + 1}") for i, n in enumerate(nodes)]
    docs += [address_pool("pool", "192.0.2.0/24"), l2_advertisement("l2")]
    eligible: dict[str, set[str]] = {}
    for i in range(count):
        policy = "Local" if local[i] else "Cluster"
        docs.append(lb_service(f"s{i}", f"192.0.2.{i + 1}", policy=policy))
        with_endpoints = data.draw(st.sets(st.sampled_from(nodes)))
        docs.append(endpoint_slice(f"s{i}", sorted(with_endpoints)))
        eligible[f"192.0.2.{i + 1}"] = with_endpoints if local[i] else set(nodes)
    live = data.draw(st.sets(st.sampled_from(nodes)))
    s = state(*docs)
    plans = {n: plan_node(s, n, live | {n}) if n in live else () for n in nodes}
    for address, can in eligible.items():
        holders = [n for n, p in plans.items() if IP(address) in {a.address for a in p}]
        if can & live:
            assert len(holders) == 1 and holders[0] in can & live
        else:
            assert holders == []
    # Deterministic: the same inputs in another order give the same plans.
    again = state(*reversed(docs))
    assert all(plan_node(again, n, set(live) | {n}) == plans[n] for n in live)


@settings(max_examples=40, deadline=None)
@given(nodes=names, dead=st.integers(0, 7))
def test_only_addresses_of_the_dead_node_move(nodes: list[str], dead: int) -> None:
    docs = [node(n) for n in nodes] + [address_pool("pool", "192.0.2.0/24"),
                                       l2_advertisement("l2")]
    docs += [lb_service(f"s{i}", f"192.0.2.{i + 1}") for i in range(12)]
    s = state(*docs)
    before = l2_owners(s, set(nodes))
    gone = nodes[dead % len(nodes)]
    after = l2_owners(s, set(nodes) - {gone})
    for address, owner in before.items():
        if owner != gone:
            assert after[address] == owner  # no needless moves: neighbours keep their caches
        else:
            assert after[address] != gone


def test_service_problems_name_what_goes_unannounced_and_why() -> None:
    from speaker.plan import service_problems

    s = state(*NODES, address_pool("pool", "192.0.2.0/28"), l2_advertisement("l2", ["pool"]),
              address_pool("lonely", "198.51.100.0/28"),
              lb_service("ok", "192.0.2.1"), lb_service("nopool", "203.0.113.9"),
              lb_service("unselected", "198.51.100.3"), lb_service("multicast", "224.0.0.1"),
              lb_service("a", "192.0.2.2", port=80), lb_service("b", "192.0.2.2", port=80))
    assert service_problems(s) == (
        "Service default/multicast: 224.0.0.1 is a multicast address: not announced",
        "Service default/nopool: 203.0.113.9 is in no IPAddressPool: not announced (only "
        "addresses of a pool are)",
        "Service default/unselected: 198.51.100.3 is in IPAddressPool lonely, which no "
        "L2Advertisement or BGPAdvertisement selects: not announced",
        "192.0.2.2 is the address of Services default/a, default/b, which do not share one "
        "metallb.io/allow-shared-ip key: announced for all of them, but which one gets a "
        "connection is up to the node's forwarding")
    assert IP("224.0.0.1") not in l2_owners(s, {"n1"})  # planned for nobody, whatever the pool


def test_sharing_with_one_key_is_fine_unless_ports_collide() -> None:
    from speaker.plan import service_problems

    def shared(name: str, port: int) -> dict[str, Any]:
        doc = lb_service(name, "192.0.2.5", port=port)
        doc["metadata"]["annotations"] = {"metallb.io/allow-shared-ip": "k"}
        return doc

    assert service_problems(state(*BASE, shared("a", 80), shared("b", 443))) == ()
    (problem,) = service_problems(state(*BASE, shared("a", 80), shared("b", 80)))
    assert "both use port 80/TCP" in problem


def test_pools_holding_multicast_are_not_announced_from() -> None:
    s = state(*NODES, address_pool("odd", "224.0.0.0/28"), l2_advertisement("l2"),
              lb_service("m", "224.0.0.1"))
    assert l2_owners(s, {"n1", "n2", "n3"}) == {}


def labelled(doc: dict[str, Any], **labels: str) -> dict[str, Any]:
    doc["metadata"]["labels"] = labels
    return doc


def with_spec(doc: dict[str, Any], **spec: Any) -> dict[str, Any]:
    doc["spec"].update(spec)
    return doc


def test_service_selectors_restrict_an_l2_advertisement_to_matching_services() -> None:
    """MetalLB's documented frontend/backend split: one pool, two advertisements,
    each for the Services with its tier label, each on its own interface."""
    tier = lambda t: [{"matchLabels": {"tier": t}}]  # noqa: E731
    s = state(*NODES, address_pool("pool", "192.0.2.0/28"),
              with_spec(l2_advertisement("front", ["pool"], ["eth0"]),
                        serviceSelectors=tier("frontend")),
              with_spec(l2_advertisement("back", ["pool"], ["eth1"]),
                        serviceSelectors=tier("backend")),
              labelled(lb_service("web", "192.0.2.1"), tier="frontend"),
              labelled(lb_service("db", "192.0.2.2"), tier="backend"),
              lb_service("plain", "192.0.2.3"))
    live = {"n1", "n2", "n3"}
    planned = {a.address: a.interfaces for n in live for a in plan_node(s, n, live)}
    # The unlabelled Service is covered by neither advertisement: not announced at all.
    assert planned == {IP("192.0.2.1"): ("eth0",), IP("192.0.2.2"): ("eth1",)}
    from speaker.plan import service_problems
    assert service_problems(s) == (
        "Service default/plain: 192.0.2.3 is in IPAddressPool pool, whose advertisements' "
        "spec.serviceSelectors do not select this Service's labels: not announced",)


def test_preferred_node_selectors_pick_the_owner_and_others_take_over() -> None:
    nodes = [node("n1", {"zone": "b"}, ip="10.0.0.1"), node("n2", {"zone": "a"}, ip="10.0.0.2"),
             node("n3", {"zone": "c"}, ip="10.0.0.3")]
    prefer = [{"weight": 100, "preference": {"matchLabels": {"zone": "a"}}},
              {"weight": 50, "preference": {"matchLabels": {"zone": "b"}}}]
    addresses = [f"192.0.2.{i}" for i in range(1, 9)]
    s = state(*nodes, address_pool("pool", "192.0.2.0/28"),
              with_spec(l2_advertisement("l2", ["pool"]), preferredNodeSelectors=prefer),
              *(lb_service(f"s{i}", a) for i, a in enumerate(addresses)))
    # Without preferences the hash spreads the addresses; with them zone a takes all.
    plain = state(*nodes, address_pool("pool", "192.0.2.0/28"), l2_advertisement("l2"),
                  *(lb_service(f"s{i}", a) for i, a in enumerate(addresses)))
    assert len(set(l2_owners(plain, {"n1", "n2", "n3"}).values())) > 1
    assert set(l2_owners(s, {"n1", "n2", "n3"}).values()) == {"n2"}
    # Zone a gone: zone b (weight 50) before the unpreferred node; then the hash.
    assert set(l2_owners(s, {"n1", "n3"}).values()) == {"n1"}
    assert set(l2_owners(s, {"n3"}).values()) == {"n3"}


def test_a_preference_lifts_only_nodes_its_advertisement_selects() -> None:
    """Scores are advertisement-scoped (MetalLB's design): a preference of an
    advertisement restricted to rack x does not lift a node of rack y."""
    nodes = [node("n1", {"rack": "x", "fast": "1"}, ip="10.0.0.1"),
             node("n2", {"rack": "y", "fast": "1"}, ip="10.0.0.2")]
    fast = [{"weight": 100, "preference": {"matchLabels": {"fast": "1"}}}]
    only_x = [{"matchLabels": {"rack": "x"}}]
    addresses = [f"192.0.2.{i}" for i in range(1, 9)]
    s = state(*nodes, address_pool("pool", "192.0.2.0/28"),
              l2_advertisement("all", ["pool"]),
              with_spec(l2_advertisement("x", ["pool"], node_selectors=only_x),
                        preferredNodeSelectors=fast),
              *(lb_service(f"s{i}", a) for i, a in enumerate(addresses)))
    # Both match the preference, but advertisement "x" selects only n1: n1 owns all.
    assert set(l2_owners(s, {"n1", "n2"}).values()) == {"n1"}
    assert set(l2_owners(s, {"n2"}).values()) == {"n2"}  # n2 stays eligible (via "all")
