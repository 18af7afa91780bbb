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
class AddressView:
    """One LoadBalancer address cluster-wide: who announces it, and how."""

    address: str
    mode: str
    nodes: tuple[str, ...]
    services: tuple[str, ...]


@dataclass(frozen=True)
class ClusterStatus:
    nodes: tuple[NodeStatus, ...] = field(default_factory=tuple)

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
    return ClusterStatus(nodes)


def to_json(cluster: ClusterStatus) -> dict[str, Any]:
    """The JSON document of `status -o json`: the nodes as collected, plus the
    cluster-wide summaries a reader looks for first."""
    return {
        "podCIDRs": list(cluster.pod_cidrs),
        "clusterCIDRs": list(cluster.cluster_cidrs),
        "serviceCIDRs": list(cluster.service_cidrs),
        "loadBalancerAddresses": [dataclasses.asdict(a) for a in cluster.addresses()],
        "bgpRouters": [dataclasses.asdict(r) for r in cluster.routers()],
        "nodes": [dataclasses.asdict(n) for n in cluster.nodes],
    }
