"""The pure BGP planner: MetalLB's BGP semantics (every eligible node announces,
aggregation, localPref, communities, peers), the sessions a node runs, and
Calico's extras (pod CIDRs, service ranges), without a router or a socket."""

from __future__ import annotations

import base64
import ipaddress
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.speakers import (
    address_pool,
    bgp_advertisement,
    bgp_peer,
    calico_bgp_configuration,
    endpoint_slice,
    l2_advertisement,
    lb_service,
)
from speaker.bgp.nlri import IPV4_UNICAST, IPV6_UNICAST
from speaker.bgp_plan import BgpPlan, plan_bgp
from speaker.plan import BGP, L2, plan_node
from tests.l2.test_plan import node as l2_node
from tests.l2.test_plan import state

NET = ipaddress.ip_network


def node(name: str, ip: str | None = "10.0.0.1", labels: dict[str, str] | None = None,
         ready: bool | None = None, ip6: str | None = None,
         pod_cidrs: tuple[str, ...] = ()) -> dict[str, Any]:
    """tests.l2's Node, with an IPv6 InternalIP, pod CIDRs, or no IPv4 address."""
    doc = l2_node(name, labels, ready, ip or "")
    doc["status"]["addresses"] = [{"type": "InternalIP", "address": a} for a in (ip, ip6) if a]
    if pod_cidrs:
        doc["spec"] = {"podCIDRs": list(pod_cidrs)}
    return doc


def community(name: str, **aliases: str) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "Community",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"communities": [{"name": k, "value": v} for k, v in aliases.items()]}}


NODES = [node(f"n{i}", ip=f"10.0.0.{i}") for i in range(1, 4)]
# Dual-stack pools below: the session carries both families (MetalLB 0.15+
# carries the peer address's family only unless asked).
TOR = bgp_peer("tor", "10.0.0.254", 65112, 64512, dualStackAddressFamily=True)
BASE = [*NODES, address_pool("pool", "192.0.2.0/28", "2001:db8::/124"), TOR,
        bgp_advertisement("bgp")]


def routes(plan: BgpPlan) -> set[tuple[str, str, tuple[str, ...]]]:
    """(address, prefix, peers) of every planned route."""
    return {(str(a.address), str(a.prefix), a.peers) for a in plan.routes}


def test_every_eligible_node_announces_no_election() -> None:
    s = state(*BASE, lb_service("web", "192.0.2.1", "2001:db8::1"))
    for name in ("n1", "n2", "n3"):
        plan = plan_bgp(s, name)
        assert routes(plan) == {("192.0.2.1", "192.0.2.1/32", ("tor",)),
                                ("2001:db8::1", "2001:db8::1/128", ("tor",))}
        assert all(a.kind == BGP and a.services == ("default/web",) for a in plan.routes)
        assert plan.problems == ()


def test_an_l2_only_pool_is_not_announced_over_bgp_and_vice_versa() -> None:
    s = state(*NODES, TOR, address_pool("l2pool", "192.0.2.0/28"),
              address_pool("bgppool", "198.51.100.0/28"), l2_advertisement("l2", ["l2pool"]),
              bgp_advertisement("bgp", ["bgppool"]),
              lb_service("a", "192.0.2.1"), lb_service("b", "198.51.100.1"))
    assert routes(plan_bgp(s, "n1")) == {("198.51.100.1", "198.51.100.1/32", ("tor",))}
    l2 = [a for n in ("n1", "n2", "n3") for a in plan_node(s, n, {"n1", "n2", "n3"})]
    assert [(str(a.address), a.kind) for a in l2] == [("192.0.2.1", L2)]


def test_excluded_and_not_ready_nodes_keep_sessions_but_announce_nothing() -> None:
    excluded = node("n1", labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""})
    s = state(excluded, node("n2", ip="10.0.0.2", ready=False), node("n3", ip="10.0.0.3"),
              *BASE[3:], lb_service("web", "192.0.2.1"))
    for name in ("n1", "n2"):
        plan = plan_bgp(s, name)
        assert plan.routes == () and [x.name for x in plan.sessions] == ["tor"]
    assert routes(plan_bgp(s, "n3")) == {("192.0.2.1", "192.0.2.1/32", ("tor",))}


def test_local_policy_only_nodes_with_ready_endpoints() -> None:
    s = state(*BASE, lb_service("local", "192.0.2.1", policy="Local"),
              endpoint_slice("local", ["n2"]))
    assert [n for n in ("n1", "n2", "n3") if plan_bgp(s, n).routes] == ["n2"]
    s = state(*BASE, lb_service("local", "192.0.2.1", policy="Local"),
              endpoint_slice("local", ["n2"], ready=False))
    assert not any(plan_bgp(s, n).routes for n in ("n1", "n2", "n3"))


def test_aggregation_lengths() -> None:
    s = state(*NODES, TOR, address_pool("pool", "192.0.2.0/24", "2001:db8::/120"),
              bgp_advertisement("agg", aggregationLength=24, aggregationLengthV6=120),
              lb_service("a", "192.0.2.1"), lb_service("b", "192.0.2.7", "2001:db8::9"))
    plan = plan_bgp(s, "n1")
    assert {str(a.prefix) for a in plan.routes} == {"192.0.2.0/24", "2001:db8::/120"}
    assert {str(a.address) for a in plan.routes} == {"192.0.2.1", "192.0.2.7", "2001:db8::9"}
    assert "192.0.2.0/24 for 192.0.2.1 (bgp to tor)" in [a.describe() for a in plan.routes]


def test_peers_restrict_and_attributes_follow_the_advertisement() -> None:
    other = bgp_peer("edge", "10.0.0.253", 64512, 64512)
    s = state(*NODES, TOR, other, address_pool("pool", "192.0.2.0/28"),
              community("aliases", **{"no-leak": "65535:65281"}),
              bgp_advertisement("to-edge", peers=["edge"], localPref=150,
                                communities=["no-leak", "64512:7", "large:64512:1:2"]),
              bgp_advertisement("to-tor", peers=["tor"]),
              lb_service("web", "192.0.2.1"))
    plan = plan_bgp(s, "n1")
    by_peer = {a.peers: a for a in plan.routes}
    assert set(by_peer) == {("edge",), ("tor",)}
    edge = by_peer[("edge",)]
    assert edge.local_pref == 150
    assert sorted(str(c) for c in edge.communities) == ["64512:7", "65535:65281",
                                                       "large:64512:1:2"]
    assert by_peer[("tor",)].local_pref is None and by_peer[("tor",)].communities == ()


def test_same_prefix_same_peer_merges_communities_and_takes_highest_local_pref() -> None:
    s = state(*NODES, TOR, address_pool("pool", "192.0.2.0/28"),
              bgp_advertisement("a", localPref=100, communities=["64512:1"]),
              bgp_advertisement("b", localPref=200, communities=["64512:2"]),
              lb_service("web", "192.0.2.1"))
    plan = plan_bgp(s, "n1")
    [route] = plan.routes
    assert route.local_pref == 200
    assert [str(c) for c in route.communities] == ["64512:1", "64512:2"]
    assert any("different localPref" in p for p in plan.problems)


def test_undefined_alias_drops_that_advertisement_with_one_problem() -> None:
    s = state(*NODES, TOR, address_pool("pool", "192.0.2.0/28"),
              bgp_advertisement("bad", communities=["nope"]),
              lb_service("a", "192.0.2.1"), lb_service("b", "192.0.2.2"))
    plan = plan_bgp(s, "n1")
    assert plan.routes == ()
    assert len(plan.problems) == 1 and "nope" in plan.problems[0]


def test_node_selectors_of_peers_and_advertisements() -> None:
    rack = [{"matchLabels": {"rack": "a"}}]
    nodes = [node("n1", labels={"rack": "a"}), node("n2", ip="10.0.0.2", labels={"rack": "b"})]
    s = state(*nodes, bgp_peer("tor-a", "10.0.0.254", 65112, 64512, node_selectors=rack),
              bgp_peer("spine", "10.0.0.250", 65000, 64512), address_pool("pool", "192.0.2.0/28"),
              bgp_advertisement("rack-a", node_selectors=rack), lb_service("web", "192.0.2.1"))
    n1, n2 = plan_bgp(s, "n1"), plan_bgp(s, "n2")
    assert [x.name for x in n1.sessions] == ["spine", "tor-a"]
    assert [x.name for x in n2.sessions] == ["spine"]
    assert routes(n1) == {("192.0.2.1", "192.0.2.1/32", ("spine", "tor-a"))}
    assert n2.routes == ()


def test_session_configuration_from_the_bgppeer() -> None:
    s = state(node("n1", ip="10.0.0.1", ip6="fd00::1"),
              bgp_peer("tor", "10.0.0.254", 4200000001, 4200000002, holdTime="9s",
                       keepaliveTime="2s", routerID="10.255.0.1", sourceAddress="10.0.0.1",
                       password="s3cret", ebgpMultiHop=True, peerPort=1179,
                       dualStackAddressFamily=True),
              bgp_peer("v6", "fd00::fe", 65112, 64512, version="v1beta1", disableMP=True))
    tor, v6 = (x.config for x in plan_bgp(s, "n1").sessions)
    assert (tor.peer_asn, tor.my_asn, tor.peer_port) == (4200000001, 4200000002, 1179)
    assert (tor.hold_time, tor.keepalive_time) == (9, 2)
    assert (tor.router_id, tor.source_address, tor.password) == ("10.255.0.1", "10.0.0.1",
                                                                 "s3cret")
    assert tor.ebgp_multihop and tor.ttl == 255
    # An IPv4 session carries IPv6 routes with the node's IPv6 address as next hop.
    assert (tor.next_hop_ipv4, tor.next_hop_ipv6) == (None, "fd00::1")
    assert v6.router_id == "10.0.0.1"  # the node's InternalIPv4
    assert (v6.next_hop_ipv4, v6.next_hop_ipv6) == ("10.0.0.1", None)
    assert v6.families != tor.families and IPV4_UNICAST not in v6.families


def test_graceful_restart_only_when_the_bgppeer_enables_it() -> None:
    s = state(node("n1"), bgp_peer("plain", "10.0.0.254", 65112, 64512),
              bgp_peer("gr", "10.0.0.253", 65112, 64512, enableGracefulRestart=True))
    gr, plain = (x.config for x in plan_bgp(s, "n1").sessions)  # sorted by name
    # Without it a router drops a killed node's routes at once instead of
    # keeping them, stale but used, for the restart time.
    assert plain.graceful_restart_time is None
    assert gr.graceful_restart_time == 120


def test_peers_that_cannot_run_are_problems_not_crashes() -> None:
    s = state(node("n1", ip=None, ip6="fd00::1"),
              bgp_peer("no-id", "fd00::fe", 65112, 64512),
              bgp_peer("secret", "fd00::fc", 65112, 64512, routerID="10.0.0.9",
                       passwordSecret={"name": "pw"}),
              bgp_peer("bfd", "fd00::fd", 65112, 64512, routerID="10.0.0.9",
                       bfdProfile="nonesuch"),
              bgp_peer("vrf", "fd00::fa", 65112, 64512, routerID="10.0.0.9", vrf="red"),
              bgp_peer("ok", "fd00::fb", 65112, 64512, routerID="10.0.0.9"),
              bgp_peer("ok-dup", "fd00::fb", 65113, 64512, routerID="10.0.0.9"))
    plan = plan_bgp(s, "n1")
    assert [x.name for x in plan.sessions] == ["ok"]
    text = "\n".join(plan.problems)
    for expected in ("no IPv4 InternalIP", "spec.passwordSecret: no Secret metallb-system/pw",
                     "spec.bfdProfile: no BFDProfile is named 'nonesuch'", "spec.vrf:",
                     "same peerAddress"):
        assert expected in text
    assert len(plan.problems) == 5


def test_no_sessions_no_routes_and_unknown_node_plans_nothing() -> None:
    s = state(*NODES, address_pool("pool", "192.0.2.0/28"), bgp_advertisement("bgp"),
              lb_service("web", "192.0.2.1"))
    assert plan_bgp(s, "n1") == BgpPlan()
    assert plan_bgp(state(*BASE, lb_service("web", "192.0.2.1")), "nobody") == BgpPlan()


def test_load_balancer_class_and_addresses_outside_pools() -> None:
    other = lb_service("other", "192.0.2.3")
    other["spec"]["loadBalancerClass"] = "example.com/lb"
    s = state(*BASE, other, lb_service("stray", "203.0.113.1"), lb_service("web", "192.0.2.1"))
    assert {a for a, _, _ in routes(plan_bgp(s, "n1"))} == {"192.0.2.1"}
    assert {a for a, _, _ in routes(plan_bgp(s, "n1", "example.com/lb"))} == {"192.0.2.3"}


def test_pod_cidrs_only_when_asked_and_calico_ranges_from_every_node() -> None:
    nodes = [node(f"n{i}", ip=f"10.0.0.{i}", pod_cidrs=(f"10.244.{i}.0/24",))
             for i in (1, 2)]
    calico = calico_bgp_configuration(cluster_ips=["10.96.0.0/12"],
                                      external_ips=["198.51.100.0/24"],
                                      load_balancer_ips=["192.0.2.0/28"])
    s = state(*nodes, TOR, calico)
    assert {str(a.prefix) for a in plan_bgp(s, "n1").routes} == {
        "10.96.0.0/12", "198.51.100.0/24", "192.0.2.0/28"}
    with_pods = plan_bgp(s, "n2", advertise_pod_cidrs=True)
    assert {str(a.prefix) for a in with_pods.routes} == {
        "10.96.0.0/12", "198.51.100.0/24", "192.0.2.0/28", "10.244.2.0/24"}
    # Ranges are routes, not addresses to accept: no services, every peer.
    assert all(a.services == () and a.peers == ("tor",) for a in with_pods.routes)


# --- properties --------------------------------------------------------------------------

services_strategy = st.lists(
    st.tuples(st.integers(0, 15), st.sampled_from(["Cluster", "Local"]),
              st.sets(st.sampled_from(["n1", "n2", "n3"]))),
    max_size=8)


@settings(max_examples=80, deadline=None)
@given(services=services_strategy, excluded=st.sets(st.sampled_from(["n1", "n2", "n3"])),
       agg=st.integers(28, 32), seed=st.integers(0, 2**16))
def test_plans_follow_eligibility_and_ignore_document_order(
        services: list[tuple[int, str, set[str]]], excluded: set[str], agg: int,
        seed: int) -> None:
    label = "node.kubernetes.io/exclude-from-external-load-balancers"
    docs: list[dict[str, Any]] = [
        node(n, ip=f"10.0.0.{i}", labels={label: ""} if n in excluded else {})
        for i, n in enumerate(("n1", "n2", "n3"), start=1)]
    docs += [TOR, address_pool("pool", "192.0.2.0/28"),
             bgp_advertisement("bgp", aggregationLength=agg)]
    expected: dict[str, set[str]] = {"n1": set(), "n2": set(), "n3": set()}
    for i, (host, policy, endpoints) in enumerate(services):
        address = f"192.0.2.{host}"
        docs.append(lb_service(f"s{i}", address, policy=policy))
        docs.append(endpoint_slice(f"s{i}", sorted(endpoints)))
        for name in expected:
            if name not in excluded and (policy == "Cluster" or name in endpoints):
                expected[name].add(address)
    shuffled = list(docs)
    random.Random(seed).shuffle(shuffled)
    for name, addresses in expected.items():
        plan = plan_bgp(state(*docs), name)
        assert plan == plan_bgp(state(*shuffled), name)
        assert {str(a.address) for a in plan.routes} == addresses
        for route in plan.routes:
            assert route.prefix is not None and route.prefix.prefixlen == agg
            assert route.address in route.prefix and route.peers == ("tor",)


def bfd_profile(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec}


def basic_auth(name: str, password: bytes, type_: str = "kubernetes.io/basic-auth"
               ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": "metallb-system"},
            "data": {"username": base64.b64encode(b"ignored").decode(),
                     "password": base64.b64encode(password).decode()}}


def test_one_address_family_per_session_unless_dual_stack_is_asked() -> None:
    """MetalLB 0.15+'s default: an IPv4 session carries IPv4 only; IPv6 goes to
    the IPv6 session, or, with dualStackAddressFamily, to both."""
    pool = address_pool("pool", "192.0.2.0/28", "2001:db8::/124")
    svc = lb_service("web", "192.0.2.1", "2001:db8::1")
    n1 = node("n1", ip="10.0.0.1", ip6="fd00::1")
    v4 = bgp_peer("v4", "10.0.0.254", 65112, 64512)
    v6 = bgp_peer("v6", "fd00::fe", 65112, 64512)
    both = bgp_peer("both", "10.0.0.253", 65112, 64512, dualStackAddressFamily=True)
    legacy = bgp_peer("legacy", "10.0.0.252", 65112, 64512, disableMP=True)
    plan = plan_bgp(state(n1, pool, svc, v4, v6, both, legacy, bgp_advertisement("bgp")), "n1")
    families = {x.name: x.config.families for x in plan.sessions}
    assert families == {"v4": (IPV4_UNICAST,), "v6": (IPV6_UNICAST,),
                        "both": (IPV4_UNICAST, IPV6_UNICAST), "legacy": (IPV4_UNICAST,)}
    assert routes(plan) == {("192.0.2.1", "192.0.2.1/32", ("both", "legacy", "v4")),
                            ("2001:db8::1", "2001:db8::1/128", ("both", "v6"))}
    assert plan.problems == ()
    # An IPv6 address with IPv4-only sessions: a problem that says what to set.
    alone = plan_bgp(state(n1, pool, svc, v4, bgp_advertisement("bgp")), "n1")
    assert routes(alone) == {("192.0.2.1", "192.0.2.1/32", ("v4",))}
    assert len(alone.problems) == 1 and "spec.dualStackAddressFamily" in alone.problems[0]


def test_bfd_profile_is_resolved_into_the_session() -> None:
    s = state(node("n1"), bfd_profile("fast", receiveInterval=100, transmitInterval=150,
                                      detectMultiplier=5, passiveMode=True, minimumTtl=250),
              bfd_profile("defaults"),
              bgp_peer("a", "10.0.0.254", 65112, 64512, bfdProfile="fast"),
              bgp_peer("b", "10.0.0.253", 65112, 64512, bfdProfile="defaults"),
              bgp_peer("c", "10.0.0.252", 65112, 64512))
    a, b, c = plan_bgp(s, "n1").sessions
    assert a.bfd is not None and b.bfd is not None and c.bfd is None
    assert (a.bfd.receive_interval_ms, a.bfd.transmit_interval_ms, a.bfd.detect_multiplier,
            a.bfd.passive_mode, a.bfd.minimum_ttl, a.bfd.echo_mode) == (100, 150, 5, True, 250,
                                                                         False)
    # MetalLB's defaults: 300 ms both ways, times 3.
    assert (b.bfd.receive_interval_ms, b.bfd.transmit_interval_ms,
            b.bfd.detect_multiplier) == (300, 300, 3)
    assert plan_bgp(s, "n1").problems == ()


def test_dynamic_asn_local_asn_and_password_secret() -> None:
    s = state(node("n1"), basic_auth("pw", b"t0p s3cret"),
              basic_auth("opaque", b"x", type_="Opaque"),
              bgp_peer("dyn", "10.0.0.254", None, 64512, dynamicASN="external"),
              bgp_peer("local", "10.0.0.253", 65112, 64512, localASN=65410),
              bgp_peer("secret", "10.0.0.252", 65112, 64512, passwordSecret={"name": "pw"}),
              bgp_peer("wrong", "10.0.0.251", 65112, 64512, passwordSecret={"name": "opaque"}))
    plan = plan_bgp(s, "n1")
    by_name = {x.name: x.config for x in plan.sessions}
    assert set(by_name) == {"dyn", "local", "secret"}
    assert (by_name["dyn"].peer_asn, by_name["dyn"].dynamic_asn) == (0, "external")
    assert by_name["local"].dynamic_asn is None
    # localASN: the session shows that AS instead of myASN (FRR's local-as
    # no-prepend replace-as), so the peer sees eBGP from 65410 only.
    assert (by_name["local"].my_asn, by_name["local"].peer_asn) == (65410, 65112)
    assert by_name["secret"].password == "t0p s3cret"
    assert plan.problems == ("BGPPeer metallb-system/wrong: spec.passwordSecret: Secret "
                             "metallb-system/opaque is of type Opaque; expected "
                             "kubernetes.io/basic-auth; no session",)
    # The password is kept for the session, never shown.
    secret = s.secret("metallb-system", "pw")
    assert secret is not None and "t0p" not in repr(secret) and "t0p" not in repr(s)


def test_service_selectors_restrict_a_bgp_advertisement() -> None:
    s = state(*NODES, TOR, address_pool("pool", "192.0.2.0/28"),
              bgp_advertisement("prod", ["pool"], communities=["64512:1"],
                                serviceSelectors=[{"matchExpressions": [
                                    {"key": "env", "operator": "In", "values": ["prod"]}]}]),
              *(dict(lb_service(n, ip), metadata={"name": n, "namespace": "default",
                                                   "labels": labels})
                for n, ip, labels in (("a", "192.0.2.1", {"env": "prod"}),
                                      ("b", "192.0.2.2", {"env": "dev"}),
                                      ("c", "192.0.2.3", {}))))
    plan = plan_bgp(s, "n1")
    assert routes(plan) == {("192.0.2.1", "192.0.2.1/32", ("tor",))}
