"""The controller's shortcuts at scale change no decision: the allocator trusting an
assignment recorded under the same pools for the same request, the request cache
per Service object, and the diff of two states by their common start and end.
Each is run beside the plain computation over random histories of Service
adds, updates and deletes, pool resizes, status write-backs and restarts."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.addresses import IPAddress
from foundation.kube.model import ClusterState, Namespace, Service
from foundation.kube.model.metallb import ServiceAllocation
from foundation.kube.model.selectors import LabelSelector
from ipam.pools import Allocator, Assignment, Request
from speaker.controller.controller import Controller
from speaker.controller.reconcile import Requests, StatusChange, reconcile, request_for
from tests.controller.helpers import pool, svc
from tests.controller.test_stateful import make, specs

# Pool "a" resized (grown, shrunk, moved) with the same pools around it (so that
# every request stays the same), and pools coming and going.
B = pool("b", "10.0.1.0/31")
POOLS = {
    "small": (pool("a", "10.0.0.0/30"), B),
    "grown": (pool("a", "10.0.0.0/29"), B),
    "shrunk": (pool("a", "10.0.0.0/31"), B),
    "moved": (pool("a", "10.0.0.4/30", "10.0.0.0/31", buggy=True), B),
    "other": (pool("a", "10.0.0.0/30"), pool("v6", "fd00::/126")),
}
NAMES = [f"s{i}" for i in range(8)]


class PlainAllocator(Allocator):
    """Validates every assignment every time, as before the shortcut."""

    def _still_valid(self, service: str, asg: Assignment, request: Request) -> bool:
        return False


class PlainRequests(Requests):
    def get(self, service: Service, state: ClusterState) -> Request:
        return request_for(service, state)


class Recorder:
    annotates = True

    def __init__(self) -> None:
        self.written: list[StatusChange] = []

    def write(self, changes: list[StatusChange]) -> bool:
        self.written += changes
        return True

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        pass


def plain_controller() -> Controller:
    ctl = Controller(Recorder())
    ctl.allocator, ctl.requests = PlainAllocator(), PlainRequests()
    return ctl


put = st.tuples(st.just("put"), st.sampled_from(NAMES), specs)
ops = st.lists(st.one_of(
    put, put, put,
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("pools"), st.sampled_from(sorted(POOLS))),
    st.tuples(st.just("write"), st.booleans()),
    st.tuples(st.just("resync")),
    st.tuples(st.just("restart")),
), max_size=40)


def holders(desired: dict[str, tuple[IPAddress, ...]]) -> dict[IPAddress, list[str]]:
    out: dict[IPAddress, list[str]] = {}
    for key, addresses in desired.items():
        for ip in addresses:
            out.setdefault(ip, []).append(key)
    return out


@settings(max_examples=200, deadline=None)
@given(ops)
def test_shortcuts_decide_as_the_plain_computation(steps: list[tuple]) -> None:
    pools = POOLS["small"]
    spec_of: dict[str, dict] = {}
    statuses: dict[str, tuple] = {}
    objects: dict[str, Service] = {}  # unchanged Services stay the same objects
    fast, plain = Controller(Recorder()), plain_controller()

    def state() -> ClusterState:
        for name, spec in spec_of.items():
            want = make(name, spec, statuses.get(f"default/{name}", ((), None)))
            if objects.get(name) != want:
                objects[name] = want
        for name in set(objects) - set(spec_of):
            del objects[name]
        return ClusterState.from_objects([*pools, *objects.values()])

    def step(full: bool = False) -> None:
        now = state()
        got, _ = fast.step(now, full)
        want, _ = plain.step(now, full)
        assert fast.desired == plain.desired
        assert fast._reported == plain._reported
        assert sorted(got.changes, key=repr) == sorted(want.changes, key=repr)
        assert fast.allocator.assignments() == plain.allocator.assignments()
        services = {s.key: s for s in now.services}
        for ip, keys in holders(fast.desired).items():
            if len(keys) > 1:  # only services that may share an address hold one together
                shares = {services[k].allow_shared_ip for k in keys}
                assert len(shares) == 1 and None not in shares, (ip, keys)

    for op in steps:
        if op[0] == "put":
            spec_of[op[1]] = op[2]
            step()
        elif op[0] == "delete":
            spec_of.pop(op[1], None)
            statuses.pop(f"default/{op[1]}", None)
            step()
        elif op[0] == "pools":
            pools = POOLS[op[1]]
            step()
        elif op[0] == "write":
            for change in (fast.writer.written if op[1] else fast.writer.written[-1:]):
                statuses[change.key] = (change.ingress, change.pool)
            fast.writer.written.clear()
            plain.writer.written.clear()
            step()
        elif op[0] == "resync":
            step(full=True)
        else:
            # A restart reads the statuses back: the same decisions from scratch.
            for change in fast.writer.written:
                statuses[change.key] = (change.ingress, change.pool)
            step()
            desired = dict(fast.desired)
            fast, plain = Controller(Recorder()), plain_controller()
            step()
            assert fast.desired == desired


def test_a_resync_of_an_unchanged_state_validates_nothing_again() -> None:
    validated: list[str] = []

    class Counting(Allocator):
        def _validate(self, service: str, addresses: tuple[IPAddress, ...],
                      request: Request) -> str | None:
            validated.append(service)
            return super()._validate(service, addresses, request)

    ctl = Controller(Recorder())
    ctl.allocator = Counting()
    services = [svc(f"s{i}", "80", ingress=(f"10.0.0.{i}",)) for i in range(3)]
    now = ClusterState.from_objects([pool("a", "10.0.0.0/29"), *services])
    ctl.step(now, full=True)
    assert sorted(validated) == ["default/s0", "default/s1", "default/s2"]  # adopted
    validated.clear()
    ctl.step(dataclasses.replace(now), full=True)
    assert validated == []
    # A pool change does validate every assignment again (and s2 no longer fits).
    ctl.step(ClusterState.from_objects([pool("a", "10.0.0.0/31"), *services]), full=True)
    assert sorted(validated) == ["default/s0", "default/s1", "default/s2"]
    assert ctl.desired["default/s2"] == ()


def test_cached_requests_follow_pool_and_namespace_changes() -> None:
    web = svc("web", "80", namespace="shop")
    selected = pool("p", "10.0.0.0/30", allocation=ServiceAllocation(
        namespace_selectors=(LabelSelector({"team": "shop"}),)))
    requests = Requests()
    alloc = Allocator()
    before = ClusterState.from_objects([selected, Namespace("shop"), web])
    assert reconcile(alloc, before, requests=requests).failures == {
        "shop/web": "no IPAddressPool is available for automatic assignment to this service"}
    # The same Service object; its namespace now has the label the pool selects.
    after = ClusterState.from_objects([selected, Namespace("shop", {"team": "shop"}), web])
    plan = reconcile(alloc, after, requests=requests)
    assert not plan.failures and plan.desired["shop/web"]
    # A new pool that selects every namespace, the old one gone.
    anyone = pool("q", "10.0.1.0/30")
    plan = reconcile(alloc, ClusterState.from_objects([anyone, Namespace("shop"), web]),
                     requests=requests)
    assert [str(ip) for ip in plan.desired["shop/web"]] == ["10.0.1.0"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["same", "changed", "gone", "copy"]), max_size=30),
       st.lists(st.integers(0, 40), max_size=4))
def test_the_services_looked_at_are_those_that_differ_by_identity_and_value(
        fates: list[str], added: list[int]) -> None:
    before = tuple(svc(f"s{i:02}", "80") for i in range(len(fates)))
    after_list = []
    for service, fate in zip(before, fates, strict=True):
        if fate == "same":
            after_list.append(service)
        elif fate == "copy":  # an equal copy is no change
            after_list.append(dataclasses.replace(service))
        elif fate == "changed":
            after_list.append(dataclasses.replace(service, allow_shared_ip="k"))
    after_list += [svc(f"s{i:02}x", "80") for i in set(added)]
    after = tuple(sorted(after_list, key=lambda s: s.name))
    ctl = Controller(Recorder())
    ctl._last = ClusterState(services=before)
    touched = ctl._touched(ClusterState(services=after))
    assert touched is not None
    found = set(touched)
    ids_before, ids_after = set(map(id, before)), set(map(id, after))
    o = {s.key: s for s in before if id(s) not in ids_after}
    n = {s.key: s for s in after if id(s) not in ids_before}
    assert found == {k for k in (*o, *n) if o.get(k) != n.get(k)}


def test_only_the_changed_service_is_looked_at() -> None:
    ctl = Controller(Recorder())
    lab = pool("a", "10.0.0.0/24")
    ctl.step(ClusterState.from_objects([lab, *(svc(f"s{i}", "80") for i in range(50))]),
             full=True)
    # The statuses written are read back (new objects): all looked at, none changes.
    written = {c.key: c for c in ctl.writer.written}
    services = [svc(f"s{i}", "80", ingress=tuple(map(str, written[f"default/s{i}"].ingress)),
                    from_pool="a") for i in range(50)]
    plan, _ = ctl.step(ClusterState.from_objects([lab, *services]))
    assert len(plan.desired) == 50 and not plan.changes
    moved = dataclasses.replace(services[20], ports=())
    plan, _ = ctl.step(ClusterState.from_objects([lab, *services[:20], moved, *services[21:]]))
    assert set(plan.desired) == {"default/s20"} and not plan.changes
