"""From cluster state to the Service statuses the controller wants: pure, no I/O.

Why pure: every decision (which services are ours, what they ask for, which
pools may serve them, in which order services are served) is here and is
tested without a file or an API server; `speaker.controller.main` only feeds
states in and writes the resulting changes out.

The allocator (`ipam.pools.Allocator`) is the controller's memory.  Each
`reconcile` call:
1. hands it the current pools and releases services that are gone, are no
   longer of type LoadBalancer, or now belong to another loadBalancerClass;
2. releases every assignment that no longer satisfies its service's request
   (so the whole pass can use what it frees), then adopts the addresses in the
   status of every service it holds nothing for (after a restart: all of them),
   when they are still valid for the service's request -- before anything new
   is allocated, so a new service can never take the address of one that
   already had it;
3. serves services asking for specific addresses, then the others, each in key
   order: a still-valid assignment is kept, anything else is chosen anew;
4. returns the status changes: the desired ingress of every service of ours that
   differs from what its status shows, and failures (one message per service).

Mapping from the Service model to an `ipam.pools.Request`:
- families from spec.ipFamilies, else from the cluster IPs; with neither (a
  hand-written lab manifest) IPv4 is preferred and IPv6 taken if only it is
  available; PreferDualStack with two families asks one per family if the pool
  can, RequireDualStack one per family or nothing;
- auto pools: pools with autoAssign whose serviceAllocation (if any) selects
  the service's namespace (by name or namespace labels) and labels, ordered by
  serviceAllocation.priority (lower first; pools without one after), then name;
- the backend key: MetalLB lets services with externalTrafficPolicy Local
  share an address only if they select the same pods.  The model does not carry
  spec.selector, so this controller is stricter in one way and looser in
  another: Local services share only with Local services (never with Cluster
  ones), and two Local services with the same sharing key are trusted to select
  the same pods.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.fields import IPAddress
from foundation.kube.model.meta import Namespace
from foundation.kube.model.metallb import IPAddressPool
from foundation.kube.model.service import Service
from ipam.pools import AllocationError, Allocator, Mode, Request

FAMILY = {"IPv4": 4, "IPv6": 6}


# MetalLB's controller names the pool a Service's address came from in this
# annotation, and removes it with the address.
POOL_ANNOTATION = "metallb.io/ip-allocated-from-pool"


@dataclass(frozen=True)
class StatusChange:
    namespace: str
    name: str
    ingress: tuple[IPAddress, ...]
    # The POOL_ANNOTATION value wanted (None: no annotation).
    pool: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Plan:
    """What one reconcile decided."""

    # Desired ingress of every service of ours (empty when it failed).
    desired: dict[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    # Status writes needed: desired differs from the observed status.
    changes: list[StatusChange] = field(default_factory=list)
    # service key -> why it has no address.
    failures: dict[str, str] = field(default_factory=dict)


def is_ours(service: Service, lb_class: str | None) -> bool:
    return service.is_load_balancer and service.load_balancer_class == lb_class


def _families(service: Service) -> tuple[tuple[int, ...], Mode]:
    versions = () if service.ip_families else tuple(ip.version for ip in service.cluster_ips)
    return _family_mode(service.ip_families, versions, service.ip_family_policy)


@lru_cache(maxsize=64)
def _family_mode(names: tuple[str, ...], versions: tuple[int, ...],
                 policy: str | None) -> tuple[tuple[int, ...], Mode]:
    """_families by the few fields it reads (a handful of combinations in a cluster)."""
    families = tuple(dict.fromkeys(FAMILY[f] for f in names))
    if not families:
        families = tuple(dict.fromkeys(versions))
    both = families + tuple(f for f in (4, 6) if f not in families)
    if policy == "RequireDualStack":
        return both, "all"
    if policy == "PreferDualStack" and len(families) != 1:
        return both, "prefer-all"
    if len(families) == 2 and policy is None:
        return families, "prefer-all"
    if not families:
        return (4, 6), "one"
    return families[:1], "one"


def _priority(pool: IPAddressPool) -> tuple[int, int, str]:
    priority = pool.service_allocation.priority if pool.service_allocation else None
    return (0, priority, pool.name) if priority is not None else (1, 0, pool.name)


def auto_pools(service: Service, state: ClusterState) -> tuple[str, ...]:
    """The pools that may serve `service` without being named, best first."""
    namespace_labels = state.namespace_labels(service.namespace)
    eligible = [p for p in state.ip_address_pools if p.auto_assign and (
        p.service_allocation is None or p.service_allocation.selects(
            service.namespace, namespace_labels, service.labels))]
    return tuple(p.name for p in sorted(eligible, key=_priority))


def request_for(service: Service, state: ClusterState,
                pools: tuple[str, ...] | None = None) -> Request:
    """What `service` asks of the allocator (`pools`: its auto_pools, when known)."""
    families, mode = _families(service)
    return Request(
        families=families,
        mode=mode,
        requested=service.requested_ips,
        pool=service.address_pool,
        auto_pools=auto_pools(service, state) if pools is None else pools,
        sharing_key=service.allow_shared_ip,
        backend_key="Local" if service.local_traffic_policy else "",
        ports=frozenset((p.protocol, p.port) for p in service.ports),
    )


class Requests:
    """`request_for`, remembered per Service object while the pools and namespaces
    stay as they were: a source keeps an unchanged Service as the same object, so
    a resync, or a state with a few changed Services, asks again only for those."""

    def __init__(self) -> None:
        self._pools: tuple[IPAddressPool, ...] | None = None
        self._namespaces: tuple[Namespace, ...] | None = None
        self._by_key: dict[str, tuple[Service, Request]] = {}
        # Every service's auto_pools, when no pool selects services (the same for all).
        self._auto: tuple[str, ...] | None = None

    def _follow(self, state: ClusterState) -> None:
        if state.ip_address_pools is self._pools and state.namespaces is self._namespaces:
            return
        if state.ip_address_pools != self._pools or state.namespaces != self._namespaces:
            self._by_key.clear()
            self._auto = None
            if not any(p.service_allocation for p in state.ip_address_pools):
                self._auto = auto_pools(Service("", ""), state)
        self._pools, self._namespaces = state.ip_address_pools, state.namespaces

    def get(self, service: Service, state: ClusterState) -> Request:
        self._follow(state)
        hit = self._by_key.get(service.key)
        if hit is not None and hit[0] is service:
            return hit[1]
        request = request_for(service, state, self._auto)
        self._by_key[service.key] = (service, request)
        return request

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)

    def keep_only(self, keys: Collection[str]) -> None:
        """Forget every Service but these (a whole reconcile: the ones there are)."""
        if len(self._by_key) > len(keys):
            self._by_key = {k: v for k, v in self._by_key.items() if k in keys}


def reconcile(allocator: Allocator, state: ClusterState, lb_class: str | None = None,
              keys: Collection[str] | Mapping[str, Service | None] | None = None,
              annotate: bool = True, requests: Requests | None = None) -> Plan:
    """Bring `allocator` in line with `state`; the statuses to write (see module doc).

    With `keys` (service keys "namespace/name"), only those services are looked
    at: the caller knows every other service and the pools are as they were in
    the last call, so their assignments and statuses still stand.  The plan
    then holds those services alone.  `keys` may map each key to its Service in
    `state` (None: not there), which spares looking them up.  `annotate`: a
    Service whose pool annotation (POOL_ANNOTATION) differs from its address's
    pool needs a write too.  `requests`: a cache of `request_for` kept by the
    caller across calls.
    """
    allocator.set_pools(state.ip_address_pools)
    cache = requests if requests is not None else Requests()
    if keys is None:
        services: list[Service] = list(state.services)
    elif isinstance(keys, Mapping):
        services = [svc for svc in keys.values() if svc is not None]
    else:
        services = [svc for key in keys
                    if (svc := state.service(*_split(key))) is not None]
    ours: dict[str, Service] = {s.key: s for s in services if is_ours(s, lb_class)}
    for key in list(allocator.assignments() if keys is None else keys):
        if key not in ours:
            allocator.release(key)
            cache.forget(key)
    order = sorted(ours)
    wants = {key: cache.get(ours[key], state) for key in order}
    if keys is None:
        cache.keep_only(ours)
    # Release what no longer fits first, so that the whole pass can use it.
    # Each kept assignment is re-recorded with the current request, so later
    # checks are against what every service asks now.
    previous: dict[str, tuple[IPAddress, ...]] = {}
    for key in order:
        held = allocator.assignment(key)
        if held is not None and allocator.check(key, wants[key]) is not None:
            previous[key] = held.addresses
            allocator.release(key)
    for key in order:
        svc = ours[key]
        if svc.ingress_ips and key not in previous and allocator.assignment(key) is None:
            try:
                allocator.adopt(key, svc.ingress_ips, wants[key])
            except AllocationError:
                pass  # served anew below; the failure, if any, is reported there
    plan = Plan()
    pools: dict[str, str | None] = {}
    # Specific requests first: an automatic choice must not take what someone named.
    named = [key for key in order if wants[key].requested]
    for key in [*named, *(key for key in order if not wants[key].requested)]:
        try:
            plan.desired[key] = allocator.assign(key, wants[key], previous.get(key, ()))
            asg = allocator.assignment(key)
            if asg is not None:
                pools[key] = next(filter(None, asg.pools), None)
        except AllocationError as exc:
            plan.failures[key] = str(exc)
            plan.desired[key] = ()
    for svc in services:
        if svc.key in plan.desired:
            want = plan.desired[svc.key]
        elif (svc.ingress_ips and not svc.is_load_balancer
              and any(state.pool_of(ip) for ip in svc.ingress_ips)):
            want = ()  # no longer a LoadBalancer: withdraw the address we gave it
        else:
            continue
        pool = pools.get(svc.key)
        if tuple(svc.ingress_ips) != want or (
                annotate and svc.annotations.get(POOL_ANNOTATION) != pool):
            plan.changes.append(StatusChange(svc.namespace, svc.name, want, pool))
    return plan


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name
