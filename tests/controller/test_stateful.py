"""Hypothesis state machine: sequences of Service create/update/delete, pool
changes, lagging status writes and controller restarts against `reconcile`.

After every step it checks, against the current objects (not the allocator's
own memory):
- never double-assigned: services on one address all have the same non-empty
  sharing key, the same traffic policy and no (protocol, port) in common;
- every address is valid: usable in a current pool, of a wanted family, the
  requested one(s), from the named pool;
- never leaked: the allocator's users of every address in every pool are
  exactly the services whose desired status holds it; gone services hold none;
- no lazy failure: a service without an address has no free address of a
  wanted family in any pool it could use;
- no churn: a step that changes one service leaves the others' addresses
  alone; reconciling the same state twice changes nothing;
- restart: a fresh allocator fed the written statuses reproduces every
  assignment and wants no status write.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from foundation.addresses import IPAddress
from foundation.kube.model import ClusterState, IPAddressPool, Service
from ipam.pools import Allocator, Request, usable
from speaker.controller.controller import Controller
from speaker.controller.reconcile import Plan, is_ours, reconcile, request_for
from tests.controller.helpers import IP, pool, svc

POOL_SETS = {
    "base": (pool("a", "10.0.0.0/30", buggy=True), pool("b", "10.0.1.254-10.0.2.1"),
             pool("v6", "fd00::/127"), pool("manual", "10.0.3.0/31", auto=False)),
    # b avoids buggy addresses now, v6 is gone, a grows.
    "changed": (pool("a", "10.0.0.0/29", buggy=True), pool("b", "10.0.1.254-10.0.2.1", buggy=True),
                pool("manual", "10.0.3.0/31", auto=False)),
}
CANDIDATE_IPS = ("10.0.0.0", "10.0.0.1", "10.0.1.255", "10.0.2.0", "10.0.3.1", "fd00::1",
                 "192.0.2.1")
PORTS = ("80", "443", "53/UDP", "53")
FAMILIES = [((), None), (("IPv4",), None), (("IPv6",), None),
            (("IPv4", "IPv6"), "PreferDualStack"), (("IPv6", "IPv4"), "RequireDualStack")]

names = st.sampled_from([f"s{i}" for i in range(6)])
specs = st.fixed_dictionaries({
    "ports": st.lists(st.sampled_from(PORTS), max_size=3, unique=True),
    "type": st.sampled_from(["LoadBalancer"] * 6 + ["ClusterIP"]),
    "ips": st.one_of(st.just(()), st.tuples(st.sampled_from(CANDIDATE_IPS))),
    "pool_name": st.sampled_from([None, None, None, "a", "b", "v6", "manual", "nope"]),
    "share": st.sampled_from([None, "k1", "k1", "k2"]),
    "local": st.booleans(),
    "family": st.sampled_from(FAMILIES),
    "lb_class": st.sampled_from([None] * 8 + ["other.io/lb"]),
})


def make(name: str, spec: dict, status: tuple = ((), None)) -> Service:
    families, policy = spec["family"]
    ingress, from_pool = status
    return svc(name, *spec["ports"], type=spec["type"], ips=spec["ips"],
               pool_name=spec["pool_name"], share=spec["share"], local=spec["local"],
               families=families, policy=policy, lb_class=spec["lb_class"],
               ingress=tuple(map(str, ingress)), from_pool=from_pool)


def free_in(p: IPAddressPool, family: int, alloc: Allocator) -> bool:
    return any(usable(p, ip) and not alloc.users(ip)
               for r in p.addresses if r.version == family for ip in r.addresses())


def could_serve(p: IPAddressPool, request: Request, alloc: Allocator) -> bool:
    free = [free_in(p, f, alloc) for f in request.families]
    return all(free) if request.mode == "all" else any(free)


class Allocation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.specs: dict[str, dict] = {}
        self.statuses: dict[str, tuple] = {}  # what the "API" holds
        self.pools = POOL_SETS["base"]
        self.alloc = Allocator()
        self.plan = Plan()
        self.previous: dict[str, tuple] = {}

    # -- the world ------------------------------------------------------------

    def state(self) -> ClusterState:
        services = [make(n, s, self.statuses.get(f"default/{n}", ((), None)))
                    for n, s in self.specs.items()]
        return ClusterState.from_objects([*self.pools, *services])

    def step(self, unchanged: set[str]) -> None:
        before = dict(self.plan.desired)
        self.plan = reconcile(self.alloc, self.state())
        for key in unchanged:
            if before.get(key):
                assert self.plan.desired.get(key) == before[key], f"{key} moved"

    def write_statuses(self) -> None:
        for change in self.plan.changes:
            self.statuses[change.key] = (change.ingress, change.pool)

    # -- rules ----------------------------------------------------------------

    @rule(name=names, spec=specs, write=st.booleans())
    def put_service(self, name: str, spec: dict, write: bool) -> None:
        self.specs[name] = spec
        self.step({f"default/{n}" for n in self.specs if n != name})
        if write:
            self.write_statuses()

    @precondition(lambda self: bool(self.specs))
    @rule(data=st.data())
    def delete_service(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.specs)))
        del self.specs[name]
        self.statuses.pop(f"default/{name}", None)
        self.step({f"default/{n}" for n in self.specs})
        assert self.alloc.assignment(f"default/{name}") is None

    @rule(which=st.sampled_from(sorted(POOL_SETS)))
    def set_pools(self, which: str) -> None:
        self.pools = POOL_SETS[which]
        self.step(set())

    @rule()
    def write_back(self) -> None:
        self.write_statuses()
        self.step(set(self.plan.desired))

    @rule()
    def restart(self) -> None:
        self.write_statuses()
        self.step(set(self.plan.desired))
        assert not self.plan.changes, "statuses were just written"
        fresh = Allocator()
        plan = reconcile(fresh, self.state())
        assert plan.desired == self.plan.desired
        assert not plan.changes
        self.alloc, self.plan = fresh, plan

    # -- invariants -------------------------------------------------------------

    @invariant()
    def idempotent(self) -> None:
        again = reconcile(self.alloc, self.state())
        assert again.desired == self.plan.desired
        assert again.failures == self.plan.failures

    @invariant()
    def valid_and_not_double_assigned(self) -> None:
        state = self.state()
        services = {s.key: s for s in state.services if is_ours(s, None)}
        assert set(self.plan.desired) == set(services)
        holders: dict[IPAddress, list[str]] = {}
        for key, addresses in self.plan.desired.items():
            request = request_for(services[key], state)
            if request.requested:
                assert addresses == () or set(addresses) == set(request.requested)
            for ip in addresses:
                holders.setdefault(ip, []).append(key)
                assert ip.version in request.families
                pools = [p for p in state.ip_address_pools if usable(p, ip)]
                assert pools, f"{key} holds {ip}, in no pool"
                if request.pool:
                    assert request.pool in {p.name for p in pools}
        for ip, keys in holders.items():
            for i, one in enumerate(keys):
                for other in keys[i + 1:]:
                    a, b = services[one], services[other]
                    assert a.allow_shared_ip and a.allow_shared_ip == b.allow_shared_ip, ip
                    assert a.local_traffic_policy == b.local_traffic_policy, ip
                    ports_a = {(p.protocol, p.port) for p in a.ports}
                    assert not ports_a & {(p.protocol, p.port) for p in b.ports}, ip

    @invariant()
    def nothing_leaks(self) -> None:
        every = {ip for p in self.pools for r in p.addresses for ip in r.addresses()}
        every |= {IP(i) for i in CANDIDATE_IPS}
        every |= {ip for a in self.alloc.assignments().values() for ip in a}
        for ip in every:
            want = sorted(k for k, addrs in self.plan.desired.items() if ip in addrs)
            assert list(self.alloc.users(ip)) == want, ip
        assert {k for k, v in self.plan.desired.items() if v} == set(self.alloc.assignments())
        for p in self.pools:
            used = {ip for addrs in self.plan.desired.values() for ip in addrs if usable(p, ip)}
            assert self.alloc.in_use(p.name) == len(used)

    @invariant()
    def failures_are_real(self) -> None:
        state = self.state()
        for key, message in self.plan.failures.items():
            assert message and "\n" not in message
            service = next(s for s in state.services if s.key == key)
            request = request_for(service, state)
            if request.requested:
                continue
            names = (request.pool,) if request.pool else request.auto_pools
            for p in state.ip_address_pools:
                if p.name in names:
                    assert not could_serve(p, request, self.alloc), (key, message, p.name)


Allocation.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                        deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestAllocation = Allocation.TestCase



class Recorder:
    """A StatusWriter that keeps nothing: the machine writes statuses itself."""

    annotates = True

    def write(self, changes: object) -> bool:
        return True

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        pass


class IncrementalAllocation(Allocation):
    """The same world through `Controller.step`, which reconciles each state by the
    services that changed (plus failing and unconfirmed ones): after every step the
    result must be what a whole reconcile of the same allocator would give."""

    def __init__(self) -> None:
        super().__init__()
        self.controller = Controller(Recorder())
        self.alloc = self.controller.allocator

    def step(self, unchanged: set[str]) -> None:
        before = dict(self.plan.desired)
        plan, _written = self.controller.step(self.state())
        self.plan = Plan(dict(self.controller.desired), plan.changes,
                         dict(self.controller._reported))
        for key in unchanged:
            if before.get(key):
                assert self.plan.desired.get(key) == before[key], f"{key} moved"

    @rule()
    def restart(self) -> None:
        self.write_statuses()
        self.step(set(self.plan.desired))
        assert not self.plan.changes, "statuses were just written"
        desired = dict(self.plan.desired)
        self.controller = Controller(Recorder())
        self.alloc = self.controller.allocator
        self.step(set())
        assert self.plan.desired == desired
        assert not self.plan.changes

    @invariant()
    def idempotent(self) -> None:
        again = reconcile(copy.deepcopy(self.alloc), self.state())
        assert again.desired == self.plan.desired
        assert again.failures == self.plan.failures
        assert not {c.key for c in again.changes} - {c.key for c in self.plan.changes}


IncrementalAllocation.TestCase.settings = Allocation.TestCase.settings
TestIncrementalAllocation = IncrementalAllocation.TestCase
