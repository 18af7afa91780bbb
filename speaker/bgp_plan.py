"""What this node says over BGP, and to whom: a pure function of the cluster state.

`plan_bgp(state, me, ...)` returns a `BgpPlan`:
  - `sessions`: one `PeerConfig` per MetalLB BGPPeer whose nodeSelectors select
    this node (router ID: the peer's `routerID`, else the node's IPv4
    InternalIP; the next hop of the other address family: the node's
    InternalIP of that family, so an IPv4 session can carry IPv6 routes);
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
restricts the advertisement to those BGPPeers.  Where several advertisements
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
from foundation.kube.model.metallb import BGPAdvertisement, BGPPeer
from foundation.kube.model.node import Node
from speaker.bgp.nlri import IPV4_UNICAST, IPV6_UNICAST, Family
from speaker.bgp.peer import PeerConfig
from speaker.plan import BGP, Announcement, node_can_announce, serves


@dataclass(frozen=True)
class BgpSession:
    """A BGPPeer as this node runs it: `name` is what BGPAdvertisement.peers names."""

    name: str
    config: PeerConfig


@dataclass(frozen=True)
class BgpPlan:
    sessions: tuple[BgpSession, ...] = ()
    routes: tuple[Announcement, ...] = ()
    problems: tuple[str, ...] = ()


GRACEFUL_RESTART_TIME = 120  # seconds, when a BGPPeer enables graceful restart


def session_for(peer: BGPPeer, node: Node) -> BgpSession | str:
    """The session this node opens to `peer`, or why it cannot."""
    where = f"BGPPeer {peer.namespace}/{peer.name}"
    if peer.peer_asn is None:
        return f"{where}: spec.dynamicASN is not supported; set spec.peerASN"
    if peer.password_secret is not None:
        return (f"{where}: spec.passwordSecret is not read by this speaker; "
                "set spec.password")
    router_id = peer.router_id or node.internal_ipv4
    if router_id is None:
        return (f"{where}: node {node.name} has no IPv4 InternalIP to use as router ID; "
                "set spec.routerID")
    v4 = peer.peer_address.version == 4
    families: tuple[Family, ...] = (IPV4_UNICAST, IPV6_UNICAST)
    if peer.disable_mp:
        # MetalLB's disableMP: each session carries its own family only.
        families = (IPV4_UNICAST,) if v4 else (IPV6_UNICAST,)
    other_v4, other_v6 = node.internal_ipv4, node.internal_ipv6
    hold = int(peer.hold_time)
    return BgpSession(peer.name, PeerConfig(
        peer_address=str(peer.peer_address),
        peer_asn=peer.peer_asn,
        my_asn=peer.my_asn,
        router_id=str(router_id),
        peer_port=peer.peer_port,
        hold_time=hold,
        keepalive_time=int(peer.keepalive_time) if hold else None,
        source_address=str(peer.source_address) if peer.source_address else None,
        password=peer.password or None,
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
    ))


def plan_sessions(state: ClusterState, node: Node) -> tuple[list[BgpSession], list[str]]:
    sessions: list[BgpSession] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for peer in state.bgp_peers_for(node):
        if peer.vrf:
            problems.append(f"BGPPeer {peer.namespace}/{peer.name}: spec.vrf is not "
                            "supported; the session uses the default VRF")
        if peer.bfd_profile:
            problems.append(f"BGPPeer {peer.namespace}/{peer.name}: spec.bfdProfile is not "
                            "supported; ignored")
        planned = session_for(peer, node)
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
    length = adv.aggregation_length if address.version == 4 else adv.aggregation_length_v6
    return ipaddress.ip_network(f"{address}/{length}", strict=False)


def _service_routes(state: ClusterState, node: Node, peer_names: tuple[str, ...],
                    lb_class: str | None, problems: list[str]) -> list[Announcement]:
    # (address, prefix, peer) -> services; (prefix, peer) -> merged attributes
    served: dict[tuple[IPAddress, IPNetwork, str], set[str]] = {}
    attrs: dict[tuple[IPNetwork, str], _Route] = {}
    bad_ads: set[str] = set()
    for service in state.services:
        if not serves(service, lb_class):
            continue
        local = service.local_traffic_policy
        if local and node.name not in state.ready_nodes(service):
            continue
        for address in dict.fromkeys(service.ingress_ips):
            pool = state.pool_of(address)
            if pool is None:
                continue
            for adv in state.bgp_advertisements_for(pool, node):
                try:
                    communities = state.communities_for(adv)
                except ModelError as exc:
                    # Dropping the advertisement rather than the alias: a route
                    # without its no-export could leak further than intended.
                    if adv.name not in bad_ads:
                        bad_ads.add(adv.name)
                        problems.append(f"{exc}; BGPAdvertisement {adv.name} is not announced")
                    continue
                prefix = aggregate(address, adv)
                for peer in peer_names:
                    if not adv.selects_peer(peer):
                        continue
                    served.setdefault((address, prefix, peer), set()).add(service.key)
                    attrs.setdefault((prefix, peer), _Route()).merge(adv.local_pref,
                                                                     communities)
    for (prefix, peer), route in sorted(attrs.items(), key=lambda kv: (
            kv[0][0].version, int(kv[0][0].network_address), kv[0][0].prefixlen, kv[0][1])):
        if route.conflict:
            problems.append(f"BGPAdvertisements give {prefix} different localPref towards "
                            f"BGPPeer {peer}; sending the highest, {route.local_pref}")
    # Group peers that get the same (address, prefix, services, attributes).
    grouped: dict[tuple[IPAddress, IPNetwork, tuple[str, ...], int | None,
                        tuple[BGPCommunity, ...]], list[str]] = {}
    for (address, prefix, peer), services in served.items():
        route = attrs[(prefix, peer)]
        key = (address, prefix, tuple(sorted(services)), route.local_pref,
               tuple(sorted(route.communities)))
        grouped.setdefault(key, []).append(peer)
    return [Announcement(address, BGP, services=services, prefix=prefix, local_pref=pref,
                         communities=communities, peers=tuple(sorted(peers)))
            for (address, prefix, services, pref, communities), peers in grouped.items()]


def _range_routes(cidrs: Iterable[IPNetwork], peer_names: tuple[str, ...]) -> list[Announcement]:
    return [Announcement(cidr.network_address, BGP, prefix=cidr, peers=peer_names)
            for cidr in dict.fromkeys(cidrs)]


def plan_bgp(state: ClusterState, me: str, lb_class: str | None = None, *,
             advertise_pod_cidrs: bool = False) -> BgpPlan:
    """Sessions and routes of node `me` (nothing if no Node object has that name)."""
    node = state.node(me)
    if node is None:
        return BgpPlan()
    sessions, problems = plan_sessions(state, node)
    if not sessions:
        return BgpPlan((), (), tuple(problems))
    names = tuple(sorted(s.name for s in sessions))
    routes: list[Announcement] = []
    if node_can_announce(node):
        routes += _service_routes(state, node, names, lb_class, problems)
    if advertise_pod_cidrs:
        routes += _range_routes(node.pod_cidrs, names)
    calico = state.calico_bgp_configuration()
    if calico is not None:
        routes += _range_routes((*calico.service_cluster_ips, *calico.service_external_ips,
                                 *calico.service_load_balancer_ips), names)
    return BgpPlan(tuple(sessions), tuple(sorted(routes, key=lambda a: a.sort_key)),
                   tuple(problems))
