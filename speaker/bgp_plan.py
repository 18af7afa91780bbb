"""What this node says over BGP, and to whom: a pure function of the cluster state.

`plan_bgp(state, me, ...)` returns a `BgpPlan`:
  - `sessions`: one `PeerConfig` per MetalLB BGPPeer whose nodeSelectors select
    this node (router ID: the peer's `routerID`, else the node's IPv4
    InternalIP), with its `bfdProfile` resolved to a BFDProfile, its
    `passwordSecret` to the password of that Secret, `dynamicASN` as peer AS 0
    plus the expected kind, and `localASN` as the AS this session shows (what
    FRR's "local-as X no-prepend replace-as" shows the peer).  As in MetalLB
    0.15+, a session carries the address family of its peer address only;
    `dualStackAddressFamily: true` adds the other one, with the node's
    InternalIP of that family as its next hop.  A BGPPeer naming a missing
    BFDProfile or Secret, or a `vrf` (served only by MetalLB's FRR mode), runs
    no session: a problem names the field;
  - `routes`: `Announcement`s of kind "bgp", one per (address, attribute set),
    each naming its prefix, attributes and peers;
  - `problems`: one line per thing it had to leave out, for the daemon's log.

MetalLB's BGP semantics (speaker/bgp_controller.go): no election, every
eligible node announces, so the router gets one path per node (ECMP).  A node
is eligible for an address when it exists, is not labelled
`node.kubernetes.io/exclude-from-external-load-balancers`, is not NotReady, is
selected by a BGPAdvertisement (nodeSelectors) that selects the address's
pool, and, with `externalTrafficPolicy: Local`, hosts a ready endpoint.  The
prefix is the address aggregated to `aggregationLength` / `aggregationLengthV6`
(default /32, /128); `localPref` is sent to iBGP peers only (the speaker's
export rule); `communities` resolve aliases through Community objects; `peers`
restricts the advertisement to those BGPPeers, `serviceSelectors` to the
Services whose labels match.  A route goes only to sessions that carry its
address family.  Where several advertisements
put the same prefix towards the same peer, their communities are merged and
the highest localPref wins (MetalLB refuses differing localPrefs outright; a
route must still go out, so the plan picks one and says so).

Calico's extras, for users coming from Calico: the node's pod CIDR(s) when
`advertise_pod_cidrs` (the speaker's `--advertise-pod-cidr`; an explicit
switch, because with Skein's VXLAN overlay pods are reachable without it and
announcing them changes who can reach pods from outside), and the CIDRs of the
"default" `BGPConfiguration`'s serviceClusterIPs / serviceExternalIPs /
serviceLoadBalancerIPs from every node with BGP sessions, to every peer.

No I/O and no clock: the same state gives the same plan, which is what makes
it testable without a router.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.communities import BGPCommunity
from foundation.kube.model.errors import ModelError
from foundation.kube.model.fields import IPAddress, IPNetwork
from foundation.kube.model.metallb import BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool
from foundation.kube.model.node import Node
from foundation.kube.model.secret import BASIC_AUTH
from foundation.kube.model.service import Service
from speaker.bgp.nlri import IPV4_UNICAST, IPV6_UNICAST, Family
from speaker.bgp.peer import PeerConfig
from speaker.plan import BGP, Announcement, distinct, node_can_announce, serves


@dataclass(frozen=True)
class BgpSession:
    """A BGPPeer as this node runs it: `name` is what BGPAdvertisement.peers names."""

    name: str
    config: PeerConfig
    bfd: BFDProfile | None = None  # the BGPPeer's bfdProfile, resolved


@dataclass(frozen=True)
class BgpPlan:
    sessions: tuple[BgpSession, ...] = ()
    routes: tuple[Announcement, ...] = ()
    problems: tuple[str, ...] = ()


GRACEFUL_RESTART_TIME = 120  # seconds, when a BGPPeer enables graceful restart


def _password(peer: BGPPeer, state: ClusterState | None) -> str | None:
    """The TCP MD5 password, from spec.password or the Secret spec.passwordSecret
    names; raises ValueError (naming the field, never the value) when unusable."""
    if peer.password_secret is None:
        return peer.password or None
    namespace, _, name = peer.password_secret.partition("/")
    secret = state.secret(namespace, name) if state is not None else None
    if secret is None:
        raise ValueError(f"spec.passwordSecret: no Secret {peer.password_secret} (the "
                         "speaker reads Secrets in its own namespace only)")
    if secret.type != BASIC_AUTH:
        raise ValueError(f"spec.passwordSecret: Secret {peer.password_secret} is of type "
                         f"{secret.type}; expected {BASIC_AUTH}")
    if not secret.password:
        raise ValueError(f"spec.passwordSecret: Secret {peer.password_secret} has no "
                         "password key")
    return secret.password


def families_of(peer: BGPPeer) -> tuple[Family, ...]:
    """MetalLB 0.15+: the peer address's family, both with dualStackAddressFamily."""
    own = IPV4_UNICAST if peer.peer_address.version == 4 else IPV6_UNICAST
    if peer.dual_stack_address_family:
        return (IPV4_UNICAST, IPV6_UNICAST)
    return (own,)


def session_for(peer: BGPPeer, node: Node,
                state: ClusterState | None = None) -> BgpSession | str:
    """The session this node opens to `peer`, or why it cannot.  `state` resolves
    spec.bfdProfile and spec.passwordSecret (without it, both are missing)."""
    where = f"BGPPeer {peer.namespace}/{peer.name}"
    if peer.vrf:
        return (f"{where}: spec.vrf: VRFs are served only by MetalLB's FRR mode, not by "
                "this speaker; no session (remove spec.vrf to peer from the default VRF)")
    bfd = None
    if peer.bfd_profile:
        bfd = state.bfd_profile(peer.bfd_profile) if state is not None else None
        if bfd is None:
            return (f"{where}: spec.bfdProfile: no BFDProfile is named "
                    f"{peer.bfd_profile!r}; no session until it exists")
    try:
        password = _password(peer, state)
    except ValueError as exc:
        return f"{where}: {exc}; no session"
    router_id = peer.router_id or node.internal_ipv4
    if router_id is None:
        return (f"{where}: node {node.name} has no IPv4 InternalIP to use as router ID; "
                "set spec.routerID")
    v4 = peer.peer_address.version == 4
    families = families_of(peer)
    other_v4, other_v6 = node.internal_ipv4, node.internal_ipv6
    hold = int(peer.hold_time)
    return BgpSession(peer.name, PeerConfig(
        peer_address=str(peer.peer_address),
        # dynamicASN: AS 0 stands for "whatever the peer's OPEN says", checked
        # against the kind the BGPPeer expects.
        peer_asn=peer.peer_asn if peer.peer_asn is not None else 0,
        dynamic_asn=peer.dynamic_asn if peer.peer_asn is None else None,
        my_asn=peer.local_asn or peer.my_asn,
        router_id=str(router_id),
        peer_port=peer.peer_port,
        hold_time=hold,
        keepalive_time=int(peer.keepalive_time) if hold else None,
        source_address=str(peer.source_address) if peer.source_address else None,
        password=password,
        ebgp_multihop=peer.ebgp_multihop,
        connect_retry_time=peer.connect_time or 5.0,
        families=families,
        # Advertise graceful restart only when the BGPPeer asks (MetalLB's
        # enableGracefulRestart): otherwise a router that honours it keeps a
        # killed node's routes, stale but used, for the whole restart time.
        graceful_restart_time=GRACEFUL_RESTART_TIME if peer.enable_graceful_restart else None,
        # The session's own family uses its local address (next hop self).
        next_hop_ipv4=None if v4 or other_v4 is None else str(other_v4),
        next_hop_ipv6=None if not v4 or other_v6 is None else str(other_v6),
    ), bfd)


def plan_sessions(state: ClusterState, node: Node) -> tuple[list[BgpSession], list[str]]:
    sessions: list[BgpSession] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for peer in state.bgp_peers_for(node):
        planned = session_for(peer, node, state)
        if isinstance(planned, str):
            problems.append(planned)
            continue
        key = planned.config.peer_address
        if key in seen:
            problems.append(f"BGPPeer {peer.namespace}/{peer.name}: same peerAddress as "
                            f"BGPPeer {seen[key]}; only that one is used")
            continue
        seen[key] = peer.name
        sessions.append(planned)
    return sessions, problems


@dataclass
class _Route:
    """Attributes of one prefix towards one peer, merged over advertisements."""

    local_pref: int | None = None
    communities: frozenset[BGPCommunity] = frozenset()
    conflict: bool = False

    def merge(self, local_pref: int | None, communities: Iterable[BGPCommunity]) -> None:
        if local_pref is not None:
            if self.local_pref is not None and self.local_pref != local_pref:
                self.conflict = True
            self.local_pref = max(local_pref, self.local_pref or 0)
        self.communities |= frozenset(communities)


def aggregate(address: IPAddress, adv: BGPAdvertisement) -> IPNetwork:
    """`address` in the network of the advertisement's aggregation length.  Built from
    integers: parsing "address/length" text dominates a plan of many Services."""
    v4 = address.version == 4
    length = adv.aggregation_length if v4 else adv.aggregation_length_v6
    host_bits = address.max_prefixlen - length
    value = int(address) >> host_bits << host_bits
    if v4:
        return ipaddress.IPv4Network((value, length))
    return ipaddress.IPv6Network((value, length))


def _carrying(sessions: Iterable[BgpSession], version: int) -> tuple[str, ...]:
    family = IPV4_UNICAST if version == 4 else IPV6_UNICAST
    return tuple(sorted(s.name for s in sessions if family in s.config.families))


def _service_routes(state: ClusterState, node: Node, sessions: list[BgpSession],
                    lb_class: str | None, problems: list[str]) -> list[Announcement]:
    peers_of = {4: _carrying(sessions, 4), 6: _carrying(sessions, 6)}
    # Addresses and prefixes are keyed by integers here (an ipaddress object hashes
    # through a hex string, which dominates a plan of many Services): an address is
    # (version, value), a prefix (version, network value, length), each object kept
    # once beside.
    # (address, prefix, peer) -> services; (prefix, peer) -> merged attributes
    served: dict[tuple[tuple[int, int], tuple[int, int, int], str], set[str]] = {}
    attrs: dict[tuple[tuple[int, int, int], str], _Route] = {}
    addresses: dict[tuple[int, int], IPAddress] = {}
    networks: dict[tuple[int, int, int], IPNetwork] = {}
    bad_ads: set[str] = set()
    # Within one plan the advertisements depend on the pool and, only through
    # serviceSelectors, on the Service's labels; the communities on the advertisement.
    ads_of: dict[tuple[int, tuple[tuple[str, str], ...]],
                 tuple[BGPAdvertisement, ...]] = {}
    pool_ads: dict[int, tuple[tuple[BGPAdvertisement, ...], bool]] = {}
    communities_of: dict[int, tuple[BGPCommunity, ...] | None] = {}
    for service in state.services:
        if not serves(service, lb_class):
            continue
        local = service.local_traffic_policy
        if local and node.name not in state.ready_nodes(service):
            continue
        for address in distinct(service.ingress_ips):
            pool = state.pool_of(address)
            if pool is None:
                continue
            version: int = address.version
            peer_names = peers_of[version]
            ads = _advertisements(state, pool, node, service, pool_ads, ads_of)
            if ads and not peer_names:
                problems.append(f"Service {service.key}: {address}: no BGP session of this node "
                                f"carries IPv{version} (set "
                                "spec.dualStackAddressFamily: true on a BGPPeer, or add a "
                                f"BGPPeer with an IPv{version} peerAddress)")
                continue
            value = int(address)
            akey = (version, value)
            addresses[akey] = address
            for adv in ads:
                if id(adv) not in communities_of:
                    try:
                        communities_of[id(adv)] = state.communities_for(adv)
                    except ModelError as exc:
                        # Dropping the advertisement rather than the alias: a route
                        # without its no-export could leak further than intended.
                        communities_of[id(adv)] = None
                        if adv.name not in bad_ads:
                            bad_ads.add(adv.name)
                            problems.append(f"{exc}; BGPAdvertisement {adv.name} is not "
                                            "announced")
                communities = communities_of[id(adv)]
                if communities is None:
                    continue
                length = adv.aggregation_length if version == 4 else adv.aggregation_length_v6
                host_bits = address.max_prefixlen - length
                pkey = (version, value >> host_bits << host_bits, length)
                if pkey not in networks:
                    networks[pkey] = aggregate(address, adv)
                for peer in peer_names:
                    if not adv.selects_peer(peer):
                        continue
                    key = (akey, pkey, peer)
                    keys = served.get(key)
                    if keys is None:
                        keys = served[key] = set()
                    keys.add(service.key)
                    route = attrs.get((pkey, peer))
                    if route is None:
                        route = attrs[(pkey, peer)] = _Route()
                    route.merge(adv.local_pref, communities)
    # Sorted as (version, network value, length, peer): prefix order, then the peer.
    for (pkey, peer), route in sorted(attrs.items(), key=lambda kv: kv[0]):
        if route.conflict:
            problems.append(f"BGPAdvertisements give {networks[pkey]} different localPref "
                            f"towards BGPPeer {peer}; sending the highest, {route.local_pref}")
    # Group peers that get the same (address, prefix, services, attributes).
    grouped: dict[tuple[tuple[int, int], tuple[int, int, int], tuple[str, ...], int | None,
                        tuple[BGPCommunity, ...]], list[str]] = {}
    for (akey, pkey, peer), services in served.items():
        route = attrs[(pkey, peer)]
        group = (akey, pkey,
                 tuple(services) if len(services) == 1 else tuple(sorted(services)),
                 route.local_pref,
                 tuple(sorted(route.communities)) if route.communities else ())
        grouped.setdefault(group, []).append(peer)
    return [Announcement(addresses[akey], BGP, services=services, prefix=networks[pkey],
                         local_pref=pref, communities=communities,
                         peers=tuple(peers) if len(peers) == 1 else tuple(sorted(peers)))
            for (akey, pkey, services, pref, communities), peers in grouped.items()]


def _advertisements(state: ClusterState, pool: IPAddressPool, node: Node, service: Service,
                    pool_ads: dict[int, tuple[tuple[BGPAdvertisement, ...], bool]],
                    ads_of: dict[tuple[int, tuple[tuple[str, str], ...]],
                                 tuple[BGPAdvertisement, ...]]
                    ) -> tuple[BGPAdvertisement, ...]:
    """`state.bgp_advertisements_for(pool, node, service)`, remembered in the two
    dicts for one plan (one node): per pool, and per (pool, labels) only when some
    advertisement of the pool has serviceSelectors."""
    known = pool_ads.get(id(pool))  # the state holds its pools: no id is reused
    if known is None:
        found = state.bgp_advertisements_for(pool, node)
        known = pool_ads[id(pool)] = (found, any(a.selection.service_selectors
                                                 for a in found))
    base, selective = known
    if not selective:
        return base
    key = (id(pool), tuple(sorted(service.labels.items())))
    ads = ads_of.get(key)
    if ads is None:
        ads = ads_of[key] = tuple(a for a in base if a.selects_service(service.labels))
    return ads


def _range_routes(cidrs: Iterable[IPNetwork], sessions: list[BgpSession]) -> list[Announcement]:
    peers_of = {4: _carrying(sessions, 4), 6: _carrying(sessions, 6)}
    return [Announcement(cidr.network_address, BGP, prefix=cidr, peers=peers_of[cidr.version])
            for cidr in dict.fromkeys(cidrs) if peers_of[cidr.version]]


def plan_bgp(state: ClusterState, me: str, lb_class: str | None = None, *,
             advertise_pod_cidrs: bool = False) -> BgpPlan:
    """Sessions and routes of node `me` (nothing if no Node object has that name)."""
    node = state.node(me)
    if node is None:
        return BgpPlan()
    sessions, problems = plan_sessions(state, node)
    if not sessions:
        return BgpPlan((), (), tuple(problems))
    routes: list[Announcement] = []
    if node_can_announce(node):
        routes += _service_routes(state, node, sessions, lb_class, problems)
    if advertise_pod_cidrs:
        routes += _range_routes(node.pod_cidrs, sessions)
    calico = state.calico_bgp_configuration()
    if calico is not None:
        routes += _range_routes((*calico.service_cluster_ips, *calico.service_external_ips,
                                 *calico.service_load_balancer_ips), sessions)
    return BgpPlan(tuple(sessions), tuple(sorted(routes, key=lambda a: a.sort_key)),
                   tuple(problems))
