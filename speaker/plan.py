"""Which LoadBalancer addresses this node announces, and where: a pure function.

Given a `ClusterState`, the set of live speakers (from whatever liveness the
daemon runs: UDP membership in file mode, Leases in a cluster) and this node's
name, `plan_node` returns the announcements this node must make.  No I/O, no
clock: the same inputs give the same answer on every node, which is what makes
the election work without any coordination beyond agreeing on who is alive.

Layer 2 election follows MetalLB's (speaker/layer2_controller.go) so that a
MetalLB user sees the same owner for the same address:
  - eligible nodes for an address are the nodes that exist as Node objects,
    are not labelled `node.kubernetes.io/exclude-from-external-load-balancers`,
    are not NotReady, are selected (nodeSelectors) by an L2Advertisement that
    selects the address's IPAddressPool, and, with
    `externalTrafficPolicy: Local`, host a ready endpoint of the service;
  - an L2Advertisement with serviceSelectors counts only for the Services
    whose labels match one of them;
  - among the eligible nodes that are live, the owner is the one with the
    highest preferredNodeSelectors score (the weights of the matching
    preferences, added up over the advertisements that cover the Service and
    select the node), then the one whose sha256(node name + "#" + address)
    sorts first.
An address in no IPAddressPool, or in a pool no L2Advertisement selects, is
not announced at all (MetalLB does the same: it is someone else's address),
nor is one that can never be a LoadBalancer address (multicast, loopback, ...:
`foundation.kube.model.fields.unannounceable`).  `service_problems` says why, one
line each, for the daemon's log: a Service whose address goes unannounced
must not be a silent mystery.

Addresses shared between services (`allow-shared-ip`) get one owner: the
eligible set is the nodes eligible for every sharing service, so the owner can
serve all of them; if none can (Local services whose endpoints live on
different nodes), any node eligible for one of them is used, so at least one
service stays reachable rather than none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from foundation.addresses import address_order
from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.communities import BGPCommunity
from foundation.kube.model.fields import IPAddress, IPNetwork, unannounceable
from foundation.kube.model.metallb import BGPAdvertisement, L2Advertisement
from foundation.kube.model.node import Node
from foundation.kube.model.service import Service

L2 = "l2"
BGP = "bgp"  # planned by speaker.bgp_plan: every eligible node announces, no election


@dataclass(frozen=True)
class Announcement:
    """One address this node must make reachable, by one mechanism (`kind`).

    `interfaces` empty means "the interface holding the route to the address",
    resolved by the announcer at apply time (the plan does not see the kernel).
    `services` are the namespace/name keys served through the address, for logs;
    an entry without services is a range route (pod CIDR, Calico service CIDR),
    not an address this node must accept traffic for.

    BGP entries also carry the route: `prefix` (the address aggregated to the
    advertisement's length, or the whole range), its attributes, and `peers`,
    the names of the BGPPeers it is sent to (never empty: resolved by the plan).
    Every entry for one (prefix, peer) carries the same attributes.
    """

    address: IPAddress
    kind: str = L2
    interfaces: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    prefix: IPNetwork | None = None
    local_pref: int | None = None
    communities: tuple[BGPCommunity, ...] = ()
    peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Made once: a plan sorts and bisects by it several times per entry.
        address = self.address
        length = address.max_prefixlen if self.prefix is None else self.prefix.prefixlen
        object.__setattr__(self, "_sort_key", (self.kind, address.version, int(address),
                                               length, self.peers))

    @property
    def sort_key(self) -> tuple[str, int, int, int, tuple[str, ...]]:
        return self._sort_key  # type: ignore[attr-defined]

    def describe(self) -> str:
        """For logs: "192.0.2.1 (l2)", "192.0.2.0/24 for 192.0.2.1 (bgp to tor-a)"."""
        if self.prefix is None:
            return f"{self.address} ({self.kind})"
        route = str(self.prefix)
        if self.services and self.prefix.num_addresses > 1:
            route += f" for {self.address}"  # an aggregated LoadBalancer address
        return f"{route} ({self.kind} to {', '.join(self.peers)})"


def distinct(addresses: tuple[IPAddress, ...]) -> Iterable[IPAddress]:
    """`addresses` without repeats, in order; one address (the common case) as it is,
    without hashing it (an ipaddress hashes through a hex string)."""
    return addresses if len(addresses) < 2 else dict.fromkeys(addresses)


def election_key(node: str, address: IPAddress) -> bytes:
    """MetalLB's ordering key: sha256 of "<node>#<address>"."""
    return hashlib.sha256(f"{node}#{address}".encode()).digest()


def elect(address: IPAddress, candidates: Iterable[str],
          scores: Mapping[str, int] | None = None) -> str | None:
    """The owner of `address` among `candidates` (None if there are none): the
    highest preference score (none given: all equal), then MetalLB's hash order."""
    score = scores or {}
    return min(candidates, key=lambda n: (-score.get(n, 0), election_key(n, address), n),
               default=None)


def serves(service: Service, lb_class: str | None) -> bool:
    """Whether this speaker announces `service`'s addresses at all."""
    # MetalLB leaves services of another load balancer class alone.
    return service.is_load_balancer and service.load_balancer_class == lb_class


def node_can_announce(node: Node) -> bool:
    """Not excluded from load balancers by label, and not NotReady (L2 and BGP alike)."""
    return not node.excluded_from_load_balancers and node.ready is not False


def l2_candidates(state: ClusterState, service: Service, address: IPAddress
                  ) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Nodes that may announce `address` for `service` by L2 -> their interfaces
    (empty tuple: the interface routing to the address), and the nodes with a
    non-zero preferredNodeSelectors score -> that score."""
    pool = state.pool_of(address)
    if pool is None:
        return {}, {}
    ready = state.ready_nodes(service) if service.local_traffic_policy else None
    out: dict[str, tuple[str, ...]] = {}
    scores: dict[str, int] = {}
    for node in state.nodes:
        if not node_can_announce(node) or (ready is not None and node.name not in ready):
            continue
        ads = state.l2_advertisements_for(pool, node, service)
        if not ads:
            continue
        # An advertisement without `interfaces` means "no restriction"; it wins
        # over others that name some, as the union of "all" and "some" is "all".
        if any(not a.interfaces for a in ads):
            out[node.name] = ()
        else:
            out[node.name] = tuple(sorted({i for a in ads for i in a.interfaces}))
        score = sum(a.preference(node.labels) for a in ads)
        if score:
            scores[node.name] = score
    return out, scores


def l2_eligible(state: ClusterState, service: Service,
                address: IPAddress) -> dict[str, tuple[str, ...]]:
    """Nodes that may announce `address` for `service` by L2 -> their interfaces."""
    return l2_candidates(state, service, address)[0]


@dataclass(frozen=True)
class AddressView:
    """Everything the election needs about one address."""

    address: IPAddress
    services: tuple[str, ...]
    eligible: Mapping[str, tuple[str, ...]]
    scores: Mapping[str, int] = field(default_factory=dict)  # preferredNodeSelectors

    def owner(self, live: Iterable[str]) -> str | None:
        """The node announcing the address when `live` are the live speakers."""
        alive = set(live)
        return elect(self.address, (n for n in self.eligible if n in alive), self.scores)


def l2_addresses(state: ClusterState, lb_class: str | None = None, *,
                 electable_only: bool = False) -> list[AddressView]:
    """Every L2-announceable address with its services and eligible nodes; with
    `electable_only`, only those whose pool some L2Advertisement selects (the others
    have no eligible node, hence no owner: what plan_node needs)."""
    per_address: dict[IPAddress, list[tuple[str, dict[str, tuple[str, ...]]]]] = {}
    per_score: dict[IPAddress, dict[str, int]] = {}
    if electable_only and not state.l2_advertisements:
        return []
    selected: dict[int, bool] = {}  # id(pool) -> some L2Advertisement selects it
    for service in state.services:
        if not serves(service, lb_class):
            continue
        for address in distinct(service.ingress_ips):
            pool = state.pool_of(address)
            if pool is None or unannounceable(address):
                continue
            if electable_only:
                # Every Service of one address has its pool: all or none are skipped.
                electable = selected.get(id(pool))
                if electable is None:
                    electable = selected[id(pool)] = any(
                        a.selects_pool(pool) for a in state.l2_advertisements)
                if not electable:
                    continue
            eligible, scores = l2_candidates(state, service, address)
            per_address.setdefault(address, []).append((service.key, eligible))
            # Sharing Services may weigh a node differently (serviceSelectors):
            # the node keeps its best score, so one owner serves them all.
            best = per_score.setdefault(address, {})
            for name, score in scores.items():
                best[name] = max(score, best.get(name, 0))
    views = []
    for address, entries in per_address.items():
        sets = [set(e) for _, e in entries]
        common = set.intersection(*sets)
        chosen = common or set.union(*sets)
        merged: dict[str, tuple[str, ...]] = {}
        for _, eligible in entries:
            for name, ifaces in eligible.items():
                if name in chosen:
                    # "()" (auto) absorbs any explicit list, as in l2_eligible.
                    old = merged.get(name)
                    merged[name] = () if old == () or not ifaces else tuple(
                        sorted(set(old or ()) | set(ifaces)))
        scores = {n: v for n, v in per_score.get(address, {}).items() if n in merged}
        views.append(AddressView(address, tuple(sorted(k for k, _ in entries)), merged,
                                 scores))
    views.sort(key=lambda v: address_order(v.address))
    return views


def l2_owners(state: ClusterState, live: Iterable[str],
              lb_class: str | None = None) -> dict[IPAddress, str | None]:
    """address -> the node that announces it (None: no live eligible node)."""
    alive = set(live)
    return {v.address: v.owner(alive) for v in l2_addresses(state, lb_class)}


def plan_node(state: ClusterState, me: str, live: Iterable[str],
              lb_class: str | None = None) -> tuple[Announcement, ...]:
    """The announcements `me` must make, sorted; `live` should include `me`
    when this speaker is up (a node never announces while it thinks itself dead)."""
    alive = set(live)
    out = []
    for view in l2_addresses(state, lb_class, electable_only=True):
        if view.owner(alive) == me:
            out.append(Announcement(view.address, L2, view.eligible[me], view.services))
    return tuple(sorted(out, key=lambda a: a.sort_key))


def service_problems(state: ClusterState, lb_class: str | None = None) -> tuple[str, ...]:
    """One line per Service address this speaker will not announce, and per
    address that Services share without MetalLB's consent: the reasons the
    plans above drop or merge them silently.  Same inputs, same lines, so the
    daemon can log them once per change."""
    out: list[str] = []
    # (version, value) -> the address and its Services: integers hash cheaply.
    users: dict[tuple[int, int], tuple[IPAddress, list[Service]]] = {}
    ads: tuple[L2Advertisement | BGPAdvertisement, ...] = (*state.l2_advertisements,
                                                            *state.bgp_advertisements)
    # Per pool (the state holds its pools: no id is reused): the advertisements
    # selecting it, and whether one of them has serviceSelectors at all.
    of_pool: dict[int, tuple[tuple[L2Advertisement | BGPAdvertisement, ...], bool]] = {}
    for service in state.services:
        if not serves(service, lb_class):
            continue
        for address in distinct(service.ingress_ips):
            pool = state.pool_of(address)
            reason = unannounceable(address)
            if reason is None and pool is not None:
                known = of_pool.get(id(pool))
                if known is None:
                    selecting = tuple(a for a in ads if a.selects_pool(pool))
                    known = of_pool[id(pool)] = (selecting, any(
                        a.selection.service_selectors for a in selecting))
                selecting, selective = known
            if reason is not None:
                out.append(f"Service {service.key}: {address} is {reason}: not announced")
            elif pool is None:
                out.append(f"Service {service.key}: {address} is in no IPAddressPool: not "
                           "announced (only addresses of a pool are)")
            elif not selecting:
                out.append(f"Service {service.key}: {address} is in IPAddressPool {pool.name}, "
                           "which no L2Advertisement or BGPAdvertisement selects: not announced")
            elif selective and not any(a.selects_service(service.labels) for a in selecting):
                out.append(f"Service {service.key}: {address} is in IPAddressPool {pool.name}, "
                           "whose advertisements' spec.serviceSelectors do not select this "
                           "Service's labels: not announced")
            else:
                users.setdefault((address.version, int(address)),
                                 (address, []))[1].append(service)
    for address, services in users.values():
        if len(services) > 1:
            out.extend(_sharing_problem(address, services))
    return tuple(out)


def _sharing_problem(address: IPAddress, services: list[Service]) -> list[str]:
    """MetalLB's rule for one address: every Service names the same
    allow-shared-ip key, and no two use the same port and protocol."""
    names = ", ".join(s.key for s in services)
    keys = {s.allow_shared_ip for s in services}
    if None in keys or len(keys) > 1:
        return [f"{address} is the address of Services {names}, which do not share one "
                "metallb.io/allow-shared-ip key: announced for all of them, but which one "
                "gets a connection is up to the node's forwarding"]
    seen: dict[tuple[int, str], str] = {}
    for service in services:
        for port in service.ports:
            other = seen.setdefault((port.port, port.protocol), service.key)
            if other != service.key:
                return [f"{address}: Services {other} and {service.key} share it and both use "
                        f"port {port.port}/{port.protocol}: which one gets a connection is up "
                        "to the node's forwarding"]
    return []
