"""What `skeinctl status` and `skeinctl diagram` know about a node: plain dataclasses.

Why a model of its own: the collector (collect.py) reads the live kernel, the CNI
files and the speaker, and the renderers (render.py) turn the result into a table,
JSON or a Graphviz picture.  Keeping the data in between pure lets the renderers be
tested without root, and makes `status -o json` exactly these fields, so a test can
hold it against `ip -j` output field by field.

Every collection is a tuple sorted by a natural key, so two collections of the same
kernel state compare (and serialise) equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from speaker.api.peer_status import PeerStatus

L2 = "l2"
BGP = "bgp"


@dataclass(frozen=True)
class CniInfo:
    """The node's CNI configuration as the runtime finds it: the first conflist in
    the conf dir, in the order a runtime picks (sorted by file name)."""

    path: str
    network: str
    cni_version: str
    plugins: tuple[str, ...]  # the plugin types of the chain, in order
    bridge: str = "cni0"
    pod_cidrs: tuple[str, ...] = ()  # the IPAM ranges' subnets
    data_dir: str = ""  # the IPAM dataDir (leases live in <data_dir>/<network>/)
    cluster_cidrs: tuple[str, ...] = ()  # ipMasqExclude: the cluster's pod network
    vxlan_device: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...] = ()  # CIDR notation, as `ip addr` shows them


@dataclass(frozen=True)
class Pod:
    """One pod attachment: the host-side veth on the bridge and what is at its far end.

    `container_id` comes from the IPAM lease holding the pod's address (None when no
    lease matches); `netns` is the named namespace whose interface is the veth's peer
    (None when the namespace is not named under /var/run/netns).
    """

    host_veth: str
    host_index: int
    ifname: str | None
    ips: tuple[str, ...]
    mac: str | None
    netns: str | None
    container_id: str | None
    name: str  # a label for humans: the namespace name, else the container ID, else the veth


@dataclass(frozen=True)
class Vxlan:
    name: str
    index: int
    vni: int | None
    port: int | None
    local: str | None  # the underlay source address (None: chosen by the route)
    underlay_device: str | None
    mac: str
    mtu: int
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One tunnel as the kernel holds it (entries of protocol 83 on the VXLAN device):
    route `pod_cidr` via `vtep_ip`, neighbour `vtep_ip` -> `vtep_mac`, FDB `vtep_mac`
    -> `underlay_ip`.  `node` is filled in when another collected node owns the
    underlay address."""

    pod_cidr: str
    vtep_ip: str
    vtep_mac: str | None
    underlay_ip: str | None
    node: str | None = None


@dataclass(frozen=True)
class LbAddress:
    """A LoadBalancer address this node's speaker announces."""

    address: str
    mode: str  # L2 or BGP
    services: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpeakerState:
    """What the node's speaker says it does; `source` names where that came from
    (or why nothing could be learnt, with `announcements` and `sessions` empty)."""

    source: str
    reachable: bool = True
    announcements: tuple[LbAddress, ...] = ()
    sessions: tuple[PeerStatus, ...] = ()  # kind "bgp" only


@dataclass(frozen=True)
class ProxyRule:
    """One Service address kube-proxy programmed on a node (its iptables or nftables
    rules): traffic for `address`:`port` (any node address for a NodePort: `address`
    None) goes to `endpoints` ("IP:port", DNAT).  `kind` is kube-proxy's own word:
    "cluster IP", "loadbalancer IP", "external IP" or "nodeport"."""

    service: str  # namespace/name, or namespace/name:port-name
    kind: str
    address: str | None
    port: int
    protocol: str
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeStatus:
    name: str
    netns: str | None = None  # the namespace it was read in (labs), None: the caller's
    cni: CniInfo | None = None
    service_cidrs: tuple[str, ...] = ()
    service_cidrs_source: str = "unknown"
    underlay: Interface | None = None
    bridge: Interface | None = None
    pods: tuple[Pod, ...] = ()
    vxlan: Vxlan | None = None
    peers: tuple[Peer, ...] = ()
    host_addresses: tuple[str, ...] = ()  # non-loopback addresses on lo (LB addresses)
    speaker: SpeakerState | None = None
    # What kube-proxy programmed here; `proxy_source` says where it was read
    # ("iptables", "nftables"), or "" when it could not be (no kube-proxy rules seen).
    proxy: tuple[ProxyRule, ...] = ()
    proxy_source: str = ""
    problems: tuple[str, ...] = ()

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        return self.cni.pod_cidrs if self.cni else ()


@dataclass(frozen=True)
class Router:
    """An external BGP router, as the nodes' sessions see it."""

    address: str
    asn: int
    sessions: tuple[tuple[str, str], ...]  # (node, state)


@dataclass(frozen=True)
class RouterRoutes:
    """What a router itself holds (a lab asks BIRD): prefix -> next hops.  Without
    it, the picture shows the routes the speakers say they announce."""

    address: str
    name: str = "BGP router"
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One backend of a Service, from its EndpointSlices."""

    address: str
    node: str | None = None
    ready: bool = True
    pod: str | None = None  # a name for humans, when the caller knows it


@dataclass(frozen=True)
class ServicePortView:
    port: int
    protocol: str = "TCP"
    name: str = ""
    node_port: int | None = None
    target_port: str = ""


@dataclass(frozen=True)
class ServiceView:
    """A Service as the API holds it (spec and status, and its EndpointSlices)."""

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePortView, ...] = ()
    ingress: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    external_traffic_policy: str = "Cluster"
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Client:
    """A client outside the cluster (a lab knows its own): where it is and how it
    reaches the LoadBalancer addresses."""

    name: str
    address: str
    via_router: str | None = None  # behind this router; None: on the underlay segment
    netns: str | None = None


@dataclass(frozen=True)
class AddressView:
    """One LoadBalancer address cluster-wide: who announces it, and how."""

    address: str
    mode: str
    nodes: tuple[str, ...]
    services: tuple[str, ...]


@dataclass(frozen=True)
class ClusterStatus:
    nodes: tuple[NodeStatus, ...] = field(default_factory=tuple)
    # From the cluster's objects (the API or a manifests file), not from a kernel.
    services: tuple[ServiceView, ...] = ()
    # What a lab knows beyond the cluster: its client and its router's own table.
    clients: tuple[Client, ...] = ()
    router_routes: tuple[RouterRoutes, ...] = ()

    @property
    def service_cidrs(self) -> tuple[str, ...]:
        return tuple(sorted({c for n in self.nodes for c in n.service_cidrs}))

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        return tuple(sorted({c for n in self.nodes for c in n.pod_cidrs}))

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        return tuple(sorted({c for n in self.nodes if n.cni for c in n.cni.cluster_cidrs}))

    def addresses(self) -> tuple[AddressView, ...]:
        """Every announced address with the nodes announcing it (for L2, one node
        when the election works; more than one is shown as it is)."""
        seen: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
        for node in self.nodes:
            for a in node.speaker.announcements if node.speaker else ():
                nodes, services = seen.setdefault((a.address, a.mode), (set(), set()))
                nodes.add(node.name)
                services.update(a.services)
        return tuple(AddressView(addr, mode, tuple(sorted(n)), tuple(sorted(s)))
                     for (addr, mode), (n, s) in sorted(seen.items()))

    def routers(self) -> tuple[Router, ...]:
        found: dict[tuple[str, int], dict[str, str]] = {}
        for node in self.nodes:
            for s in node.speaker.sessions if node.speaker else ():
                found.setdefault((s.name, s.peer_asn), {})[node.name] = s.state
        return tuple(Router(addr, asn, tuple(sorted(states.items())))
                     for (addr, asn), states in sorted(found.items()))


def with_peer_names(cluster: ClusterStatus) -> ClusterStatus:
    """Name each tunnel's far end after the collected node whose underlay holds its
    address (a pure join on the underlay IP)."""
    owner = {a.split("/")[0]: n.name for n in cluster.nodes if n.underlay
             for a in n.underlay.addresses}
    nodes = tuple(dataclasses.replace(n, peers=tuple(
        dataclasses.replace(p, node=owner.get(p.underlay_ip or "", p.node)) for p in n.peers))
        for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


def to_json(cluster: ClusterStatus) -> dict[str, Any]:
    """The JSON document of `status -o json`: the nodes as collected, plus the
    cluster-wide summaries a reader looks for first."""
    return {
        "podCIDRs": list(cluster.pod_cidrs),
        "clusterCIDRs": list(cluster.cluster_cidrs),
        "serviceCIDRs": list(cluster.service_cidrs),
        "loadBalancerAddresses": [dataclasses.asdict(a) for a in cluster.addresses()],
        "bgpRouters": [dataclasses.asdict(r) for r in cluster.routers()],
        "services": [dataclasses.asdict(s) for s in cluster.services],
        "clients": [dataclasses.asdict(c) for c in cluster.clients],
        "routerRoutes": [dataclasses.asdict(r) for r in cluster.router_routes],
        "nodes": [dataclasses.asdict(n) for n in cluster.nodes],
    }


def _build(cls: type, data: Any) -> Any:
    """A dataclass from its `asdict` form: nested dataclasses and tuples rebuilt from
    the field types (JSON lists become tuples, as the model keeps them)."""
    import typing

    if data is None:
        return None
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _value(hints[f.name], data[f.name])
    return cls(**kwargs)


def _value(hint: Any, value: Any) -> Any:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _value(args[0], value)
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_value(items[0], v) for v in value)
        return tuple(_value(a, v) for a, v in zip(items, value, strict=True))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value)
    return value


def from_json(doc: dict[str, Any]) -> ClusterStatus:
    """The inverse of `to_json` (its summaries are derived again, not read): so the
    status of each node, taken where it runs (`kubectl exec ... skeinctl status -o
    json`), can be drawn together elsewhere."""
    return ClusterStatus(
        nodes=tuple(_build(NodeStatus, n) for n in doc.get("nodes", [])),
        services=tuple(_build(ServiceView, s) for s in doc.get("services", [])),
        clients=tuple(_build(Client, c) for c in doc.get("clients", [])),
        router_routes=tuple(_build(RouterRoutes, r) for r in doc.get("routerRoutes", [])))


def merge(parts: Sequence[ClusterStatus]) -> ClusterStatus:
    """Several statuses as one cluster (each node once, by name; the services, clients
    and router tables of all of them), the tunnels' far ends named again."""
    nodes: dict[str, NodeStatus] = {}
    services: dict[str, ServiceView] = {}
    clients: dict[str, Client] = {}
    routers: dict[str, RouterRoutes] = {}
    for part in parts:
        nodes.update((n.name, n) for n in part.nodes)
        services.update((s.key, s) for s in part.services)
        clients.update((c.address, c) for c in part.clients)
        routers.update((r.address, r) for r in part.router_routes)
    return with_peer_names(ClusterStatus(
        tuple(nodes[k] for k in sorted(nodes)), tuple(services[k] for k in sorted(services)),
        tuple(clients[k] for k in sorted(clients)), tuple(routers[k] for k in sorted(routers))))
