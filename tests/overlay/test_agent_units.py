"""The agent's pure parts: choosing peers from Node objects and planning the
kernel entries, including what happens with bad peer data."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from cni_plugin.agent.peers import select_peers
from cni_plugin.agent.plan import Action, Entries, Fdb, Neigh, Route, desired_entries, diff
from foundation.kube.model.node import Node, vtep_mac_for_ip


def node(name, ip="10.99.0.11", cidr="10.244.0.0/24"):
    return Node(name=name, internal_ips=(ipaddress.ip_address(ip),) if ip else (),
                pod_cidrs=(ipaddress.ip_network(cidr),) if cidr else ())


NODES = [node("n1", "10.99.0.11", "10.244.0.0/24"), node("n2", "10.99.0.12", "10.244.1.0/24"),
         node("n3", "10.99.0.13", "10.244.2.0/24")]


def test_peers_are_the_other_nodes():
    topo = select_peers(NODES, "n1")
    assert [p.name for p in topo.peers] == ["n2", "n3"]
    assert topo.own_cidrs == (ipaddress.ip_network("10.244.0.0/24"),)
    assert topo.peers[0].vtep_mac == vtep_mac_for_ip("10.99.0.12")
    assert topo.problems == ()


def test_bad_entries_are_skipped_and_named():
    bad = [node("noip", None, "10.244.5.0/24"), node("nocidr", "10.99.0.20", None),
           node("mine", "10.99.0.21", "10.244.0.0/25"),
           node("z-dupip", "10.99.0.12", "10.244.9.0/24"),
           node("z-overlap", "10.99.0.22", "10.244.2.0/23")]
    topo = select_peers(NODES + bad, "n1")
    assert [p.name for p in topo.peers] == ["n2", "n3"]
    text = "\n".join(topo.problems)
    for name in ("noip", "nocidr", "mine", "z-dupip", "z-overlap"):
        assert f"node {name}" in text


def test_an_established_peer_wins_over_a_newcomer():
    newcomer = node("a-new", "10.99.0.30", "10.244.2.0/24")  # sorts before n3
    established = frozenset({("10.244.2.0/24", vtep_mac_for_ip("10.99.0.13"))})
    topo = select_peers(NODES + [newcomer], "n1", established)
    assert [p.name for p in topo.peers] == ["n2", "n3"]
    assert any("a-new" in p for p in topo.problems)
    fresh = select_peers(NODES + [newcomer], "n1")
    assert [p.name for p in fresh.peers] == ["a-new", "n2"]


def test_unknown_self_is_reported():
    topo = select_peers(NODES, "nope")
    assert topo.own_cidrs == () and "nope" in topo.problems[0]


def test_plan_orders_adds_and_deletes_safely():
    desired = desired_entries(select_peers(NODES, "n1").peers)
    assert Route("10.244.1.0/24", "10.244.1.0") in desired.routes
    assert Fdb(vtep_mac_for_ip("10.99.0.12"), "10.99.0.12") in desired.fdbs
    actions = diff(desired, Entries())
    kinds = [type(a.entry).__name__ for a in actions]
    assert kinds == sorted(kinds, key=["Neigh", "Fdb", "Route"].index)
    gone = diff(Entries(), desired)
    kinds = [type(a.entry).__name__ for a in gone]
    assert kinds == sorted(kinds, key=["Route", "Fdb", "Neigh"].index)
    assert all(a.op == "del" for a in gone)
    assert diff(desired, desired) == []


def test_changed_peer_address_replaces_without_deleting_the_route():
    old = desired_entries(select_peers(NODES, "n1").peers)
    moved = [NODES[0], node("n2", "10.99.0.42", "10.244.1.0/24"), NODES[2]]
    new = desired_entries(select_peers(moved, "n1").peers)
    actions = diff(new, old)
    assert not any(a.op == "del" and isinstance(a.entry, Route) for a in actions)
    assert Action("add", Fdb(vtep_mac_for_ip("10.99.0.42"), "10.99.0.42")) in actions


@given(st.sets(st.integers(0, 50), max_size=12), st.sets(st.integers(0, 50), max_size=12))
def test_diff_converges(before, after):
    def entries(ids):
        nodes = [node(f"n{i}", f"10.99.1.{i + 1}", f"10.244.{i}.0/24") for i in ids]
        return desired_entries(select_peers([node("me", "10.99.0.1", "10.245.0.0/24")] + nodes,
                                            "me").peers)
    start, goal = entries(before), entries(after)
    neighs, fdbs, routes = set(start.neighs), set(start.fdbs), set(start.routes)
    for action in diff(goal, start):
        target = {Neigh: neighs, Fdb: fdbs, Route: routes}[type(action.entry)]
        if action.op == "add":
            # replace semantics: an add of a key replaces the entry with that key
            target.difference_update({e for e in target if _key(e) == _key(action.entry)})
            target.add(action.entry)
        else:
            target.discard(action.entry)
    assert Entries(frozenset(neighs), frozenset(fdbs), frozenset(routes)) == goal


def _key(entry):
    if isinstance(entry, Neigh):
        return entry.address
    if isinstance(entry, Route):
        return entry.dst
    return (entry.mac, entry.dst)


def test_the_routes_metric_counts_what_is_in_place():
    """skein_agent_routes after a reconcile: what was there, plus the adds and
    less the deletes that worked (a replaced route counts once)."""
    from cni_plugin.agent.daemon import routes_in_place

    old = desired_entries(select_peers(NODES, "n1").peers)
    moved = [NODES[0], node("n2", "10.99.0.42", "10.244.7.0/24")]
    new = desired_entries(select_peers(moved, "n1").peers)
    actions = diff(new, old)
    assert routes_in_place(old, actions, []) == {"10.244.7.0/24"}
    failed = [(a, "refused") for a in actions if a.op == "add" and isinstance(a.entry, Route)]
    assert routes_in_place(old, actions, failed) == set()
    assert routes_in_place(old, diff(old, old), []) == {"10.244.1.0/24", "10.244.2.0/24"}
