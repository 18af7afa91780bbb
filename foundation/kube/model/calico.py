"""Calico's BGPConfiguration (projectcalico.org/v3), for users coming from Calico.

Calico announces service ranges as whole CIDRs from every node rather than
per-address; a Calico user's `serviceLoadBalancerIPs` etc. are read here so the
speaker can offer the same behaviour.  Only the fields that mean something to
Skein are kept; the rest of the spec is ignored, not rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foundation.kube.model.fields import Cursor, IPNetwork
from foundation.kube.model.meta import open_object

# Calico applies the object with this name cluster-wide; others are per-node.
DEFAULT_NAME = "default"


@dataclass(frozen=True, slots=True)
class BGPConfiguration:
    name: str
    as_number: int | None = None
    node_to_node_mesh_enabled: bool = True
    service_cluster_ips: tuple[IPNetwork, ...] = ()
    service_external_ips: tuple[IPNetwork, ...] = ()
    service_load_balancer_ips: tuple[IPNetwork, ...] = ()


def _cidrs(cur: Cursor) -> tuple[IPNetwork, ...]:
    return tuple(cur.parse(lambda c: c.at("cidr").network()))


def parse_bgp_configuration(doc: Any) -> BGPConfiguration:
    obj, meta = open_object(doc, "BGPConfiguration", namespaced=False)
    spec = obj.at("spec")
    return BGPConfiguration(
        name=meta.name,
        as_number=spec.at("asNumber").opt_integer(1, 2**32 - 1),
        node_to_node_mesh_enabled=spec.at("nodeToNodeMeshEnabled").boolean(True),
        service_cluster_ips=_cidrs(spec.at("serviceClusterIPs")),
        service_external_ips=_cidrs(spec.at("serviceExternalIPs")),
        service_load_balancer_ips=_cidrs(spec.at("serviceLoadBalancerIPs")),
    )
