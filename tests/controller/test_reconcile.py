"""MetalLB's allocation semantics, through `reconcile` as the controller runs it."""

from __future__ import annotations

from foundation.kube.model import ClusterState, Namespace
from foundation.kube.model.metallb import ServiceAllocation
from foundation.kube.model.selectors import LabelSelector
from ipam.pools import Allocator, capacity
from speaker.controller.reconcile import Plan, reconcile
from tests.controller.helpers import IP, pool, state, svc

LAB = pool("lab", "10.0.0.0/30")


def run(*objects, allocator: Allocator | None = None, lb_class: str | None = None) -> Plan:
    return reconcile(allocator or Allocator(), state(*objects), lb_class)


def ips(plan: Plan, key: str) -> list[str]:
    return [str(ip) for ip in plan.desired[key]]


def test_first_free_address_in_pool_order_and_status_changes() -> None:
    plan = run(LAB, svc("a", "80"), svc("b", "80"))
    assert ips(plan, "default/a") == ["10.0.0.0"] and ips(plan, "default/b") == ["10.0.0.1"]
    assert {(c.key, tuple(map(str, c.ingress))) for c in plan.changes} == {
        ("default/a", ("10.0.0.0",)), ("default/b", ("10.0.0.1",))}
    assert not plan.failures


def test_avoid_buggy_ips_skips_dot_zero_and_dot_255() -> None:
    buggy = pool("p", "10.0.0.255-10.0.1.1", buggy=True)
    plan = run(buggy, svc("a", "80"), svc("b", "80"))
    assert ips(plan, "default/a") == ["10.0.1.1"]
    assert plan.failures == {"default/b": "no available IPs in pool p"}
    assert capacity(buggy) == 1
    # A /16 counted without walking it: 256 .0 and 256 .255 addresses.
    assert capacity(pool("big", "10.1.0.0/16", buggy=True)) == 65536 - 512


def test_exhaustion_is_a_clear_failure_and_clears_nothing_else() -> None:
    services = [svc(f"s{i}", "80") for i in range(5)]
    plan = run(LAB, *services)
    assert sorted(plan.failures) == ["default/s4"]
    assert plan.failures["default/s4"] == "no available IPs in pool lab"
    assert plan.desired["default/s4"] == ()


def test_requested_address_must_be_in_a_pool() -> None:
    manual = pool("manual", "10.0.9.0/24", auto=False)
    plan = run(LAB, manual, svc("a", "80", ips=("10.0.9.7",)), svc("b", "80", ips=("10.9.9.9",)),
               svc("c", "80", ips=("10.0.9.7",), pool_name="lab"))
    assert ips(plan, "default/a") == ["10.0.9.7"]  # autoAssign does not matter when named
    assert plan.failures["default/b"] == "10.9.9.9 is not in any pool"
    assert plan.failures["default/c"] == "10.0.9.7 is not in pool lab"


def test_requested_buggy_address_is_refused() -> None:
    plan = run(pool("p", "10.0.0.0/24", buggy=True), svc("a", "80", ips=("10.0.0.255",)))
    assert plan.failures["default/a"] == "10.0.0.255 is avoided by pool p (avoidBuggyIPs)"


def test_specific_requests_are_served_before_automatic_ones() -> None:
    # "a" sorts first and would take 10.0.0.0 if served first.
    plan = run(LAB, svc("a", "80"), svc("z", "80", ips=("10.0.0.0",)))
    assert ips(plan, "default/z") == ["10.0.0.0"] and ips(plan, "default/a") == ["10.0.0.1"]


def test_address_pool_annotation_and_auto_assign() -> None:
    manual = pool("manual", "10.0.9.0/30", auto=False)
    plan = run(manual, svc("auto", "80"), svc("named", "80", pool_name="manual"),
               svc("nowhere", "80", pool_name="missing"))
    assert plan.failures["default/auto"] == ("no IPAddressPool is available for automatic "
                                             "assignment to this service")
    assert ips(plan, "default/named") == ["10.0.9.0"]
    assert plan.failures["default/nowhere"] == "pool missing does not exist"


def test_sharing_needs_same_key_and_disjoint_ports() -> None:
    plan = run(LAB, svc("web", "80", "443", share="k"), svc("dns", "53/UDP", share="k"),
               svc("web2", "80", share="k"), svc("other", "22", share="x"), svc("plain", "25"))
    assert ips(plan, "default/dns") == ips(plan, "default/web") == ["10.0.0.0"]
    # In key order: dns .0, other .1, plain .2, web shares .0, web2 finds TCP/80 taken on .0.
    assert ips(plan, "default/web2") == ["10.0.0.3"]
    assert len({plan.desired[k] for k in plan.desired}) == 4


def test_same_port_number_different_protocol_shares() -> None:
    plan = run(LAB, svc("tcp", "53", share="k"), svc("udp", "53/UDP", share="k"))
    assert plan.desired["default/tcp"] == plan.desired["default/udp"]


def test_requested_shared_address_conflicts_are_named() -> None:
    plan = run(LAB, svc("a", "80", share="k", ips=("10.0.0.1",)),
               svc("b", "80", share="k", ips=("10.0.0.1",)),
               svc("c", "81", ips=("10.0.0.1",)),
               svc("d", "82", share="other", ips=("10.0.0.1",)))
    assert ips(plan, "default/a") == ["10.0.0.1"]
    assert plan.failures["default/b"] == ("10.0.0.1 cannot be used: port TCP/80 is already "
                                          "used on it by default/a")
    assert plan.failures["default/c"] == ("10.0.0.1 cannot be used: it is in use by default/a "
                                          "and sharing needs allow-shared-ip on both")
    assert "allow-shared-ip 'k', not 'other'" in plan.failures["default/d"]


def test_local_and_cluster_policies_do_not_share() -> None:
    plan = run(LAB, svc("cluster", "80", share="k"), svc("local", "81", share="k", local=True),
               svc("local2", "82", share="k", local=True))
    assert plan.desired["default/cluster"] != plan.desired["default/local"]
    assert plan.desired["default/local"] == plan.desired["default/local2"]


def test_dual_stack() -> None:
    v6 = pool("v6", "fd00::/126")
    both = pool("both", "10.0.5.0/30", "fd00:5::/126")
    plan = run(both, svc("req", "80", families=("IPv4", "IPv6"), policy="RequireDualStack"),
               svc("v6first", "80", families=("IPv6", "IPv4"), policy="PreferDualStack"),
               svc("single6", "80", families=("IPv6",)))
    assert ips(plan, "default/req") == ["10.0.5.0", "fd00:5::"]
    assert ips(plan, "default/v6first") == ["fd00:5::2", "10.0.5.1"]
    assert ips(plan, "default/single6") == ["fd00:5::1"]
    only4 = run(LAB, svc("req", "80", policy="RequireDualStack"),
                svc("pref", "80", families=("IPv4", "IPv6"), policy="PreferDualStack"))
    assert only4.failures["default/req"] == "no available IPv4 and IPv6 addresses in pool lab"
    assert ips(only4, "default/pref") == ["10.0.0.0"]
    # No ipFamilies and no cluster IPs (a lab manifest): IPv4 preferred, IPv6 if that is all.
    assert ips(run(LAB, v6, svc("x", "80")), "default/x") == ["10.0.0.0"]
    assert ips(run(v6, svc("x", "80")), "default/x") == ["fd00::"]
    wrong = run(LAB, v6, svc("x", "80", families=("IPv4",), ips=("fd00::1",)))
    assert "fd00::1 is not an IPv4 address" in wrong.failures["default/x"]


def test_other_load_balancer_class_is_left_alone() -> None:
    theirs = svc("theirs", "80", lb_class="other.io/lb", ingress=("10.0.0.0",),
                 from_pool="lab")
    plan = run(LAB, theirs, svc("mine", "80"))
    assert "default/theirs" not in plan.desired and not plan.failures
    assert [c.key for c in plan.changes] == ["default/mine"]
    classed = run(LAB, theirs, svc("mine", "80"), lb_class="other.io/lb")
    assert list(classed.desired) == ["default/theirs"] and not classed.changes


def test_release_on_delete_and_on_type_change() -> None:
    alloc = Allocator()
    first = run(LAB, svc("a", "80"), svc("b", "80"), allocator=alloc)
    assert ips(first, "default/a") == ["10.0.0.0"]
    # a is deleted: its address goes to the next newcomer.
    second = run(LAB, svc("b", "80", ingress=("10.0.0.1",)), svc("c", "80"), allocator=alloc)
    assert ips(second, "default/c") == ["10.0.0.0"]
    # c becomes a ClusterIP service: status withdrawn, address free again.
    third = run(LAB, svc("b", "80", ingress=("10.0.0.1",)),
                svc("c", "80", type="ClusterIP", ingress=("10.0.0.0",)),
                svc("d", "80"), allocator=alloc)
    assert [(c.key, c.ingress) for c in third.changes if c.key == "default/c"] == [
        ("default/c", ())]
    assert ips(third, "default/d") == ["10.0.0.0"]
    assert set(alloc.assignments()) == {"default/b", "default/d"}


def test_restart_adopts_statuses_before_allocating() -> None:
    # After a restart the new service "a" (sorting first) must not take b's address.
    plan = run(LAB, svc("a", "80"), svc("b", "80", ingress=("10.0.0.0",), from_pool="lab"))
    assert ips(plan, "default/b") == ["10.0.0.0"] and ips(plan, "default/a") == ["10.0.0.1"]
    assert [c.key for c in plan.changes] == ["default/a"]


def test_restart_with_conflicting_or_invalid_statuses() -> None:
    plan = run(LAB, svc("a", "80", ingress=("10.0.0.0",)), svc("b", "80", ingress=("10.0.0.0",)),
               svc("c", "80", ingress=("192.0.2.1",)))
    assert ips(plan, "default/a") == ["10.0.0.0"]
    assert ips(plan, "default/b") == ["10.0.0.1"] and ips(plan, "default/c") == ["10.0.0.2"]


def test_updates_keep_the_address_when_still_valid() -> None:
    alloc = Allocator()
    run(LAB, svc("a", "80", share="k"), svc("b", "81", share="k"), allocator=alloc)
    assert alloc.assignments()["default/a"] == alloc.assignments()["default/b"]
    # b now wants port 80 too: it must move, a stays.
    plan = run(LAB, svc("a", "80", share="k"), svc("b", "80", share="k"), allocator=alloc)
    assert ips(plan, "default/a") == ["10.0.0.0"] and ips(plan, "default/b") == ["10.0.0.1"]
    # a changes its ports compatibly: it stays, and the new ports are what others see.
    run(LAB, svc("a", "8080", share="k"), svc("b", "80", share="k"), allocator=alloc)
    plan = run(LAB, svc("a", "8080", share="k"), svc("b", "80", share="k"),
               svc("c", "8080", share="k"), allocator=alloc)
    assert ips(plan, "default/a") == ["10.0.0.0"]
    assert ips(plan, "default/c") == ["10.0.0.1"]  # shares with b, not with a (8080 taken)


def test_pool_changes_move_or_withdraw_addresses() -> None:
    alloc = Allocator()
    run(pool("p", "10.0.0.254-10.0.1.0"), svc("a", "80", ips=()), svc("b", "80"),
        allocator=alloc)
    assert [str(v[0]) for v in alloc.assignments().values()] == ["10.0.0.254", "10.0.0.255"]
    plan = run(pool("p", "10.0.0.254-10.0.1.1", buggy=True), svc("a", "80"), svc("b", "80"),
               allocator=alloc)
    assert ips(plan, "default/a") == ["10.0.0.254"] and ips(plan, "default/b") == ["10.0.1.1"]
    gone = run(LAB, svc("a", "80"), svc("b", "80"), allocator=alloc)
    assert ips(gone, "default/a") == ["10.0.0.0"] and ips(gone, "default/b") == ["10.0.0.1"]
    empty = run(svc("a", "80", ingress=("10.0.0.0",)), allocator=alloc)
    assert empty.desired == {"default/a": ()}
    assert [(c.key, c.ingress) for c in empty.changes] == [("default/a", ())]


def test_service_allocation_namespaces_selectors_and_priority() -> None:
    team = ServiceAllocation(priority=10, namespaces=("team",))
    labelled = ServiceAllocation(priority=5, namespace_selectors=(
        LabelSelector({"tier": "gold"}),))
    pools = (pool("general", "10.0.0.0/30"), pool("team", "10.0.1.0/30", allocation=team),
             pool("gold", "10.0.2.0/30", allocation=labelled))
    objects = (*pools, Namespace("vip", {"tier": "gold"}), Namespace("team", {}))
    plan = reconcile(Allocator(), ClusterState.from_objects((
        *objects, svc("a", "80"), svc("b", "80", namespace="team"),
        svc("c", "80", namespace="vip"))))
    assert [str(plan.desired[k][0]) for k in ("default/a", "team/b", "vip/c")] == [
        "10.0.0.0", "10.0.1.0", "10.0.2.0"]


def test_pool_annotation_follows_the_address() -> None:
    """MetalLB's metallb.io/ip-allocated-from-pool names the pool of the address,
    on a new assignment and on an adopted one; it goes with the address."""
    other = pool("other", "10.0.1.0/30")
    plan = run(LAB, other, svc("a", "80"), svc("b", "80", pool_name="other"),
               svc("c", "80", ingress=("10.0.0.2",)))
    assert {c.key: (c.pool, [str(i) for i in c.ingress]) for c in plan.changes} == {
        "default/a": ("lab", ["10.0.0.0"]), "default/b": ("other", ["10.0.1.0"]),
        "default/c": ("lab", ["10.0.0.2"])}
    settled = run(LAB, other, svc("c", "80", ingress=("10.0.0.2",), from_pool="lab"))
    assert not settled.changes
    gone = run(LAB, svc("c", "80", type="ClusterIP", ingress=("10.0.0.2",), from_pool="lab"))
    assert [(c.key, c.ingress, c.pool) for c in gone.changes] == [("default/c", (), None)]


def test_by_keys_looks_at_those_services_only() -> None:
    alloc = Allocator()
    first = state(LAB, svc("a", "80"), svc("b", "80"))
    assert ips(reconcile(alloc, first), "default/b") == ["10.0.0.1"]
    # b is deleted, c added: only they are looked at; a keeps its address and c takes b's.
    plan = reconcile(alloc, state(LAB, svc("a", "80"), svc("c", "80")),
                     keys={"default/b", "default/c"})
    assert plan.desired == {"default/c": (IP("10.0.0.1"),)}
    assert [c.key for c in plan.changes] == ["default/c"]
    assert alloc.assignments() == {"default/a": (IP("10.0.0.0"),),
                                   "default/c": (IP("10.0.0.1"),)}
