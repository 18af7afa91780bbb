"""Skein's object model: frozen dataclasses parsed and validated from Kubernetes objects.

Pure and standard-library only (no YAML, no I/O): the CNI node agent imports it
on its hot path, and the plan layers of every daemon are tested against it
without a cluster.  Sources (foundation.kube.sources) produce a `ClusterState`; the
daemons read it.  Every validation failure is a `ModelError` whose text names
the object and the field, e.g.
`Service default/web: spec.ports[0].port: expected an integer 1-65535, got "http"`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foundation.kube.model.calico import BGPConfiguration, parse_bgp_configuration
    from foundation.kube.model.cluster import (
        KINDS,
        ClusterState,
        ModelObject,
        expand_document,
        object_ref,
        parse_object,
        ref_of,
    )
    from foundation.kube.model.communities import (
        BGPCommunity,
        CommunityAliases,
        parse_community,
        parse_community_aliases,
    )
    from foundation.kube.model.durations import parse_go_duration
    from foundation.kube.model.endpoints import (
        Endpoint,
        EndpointPort,
        EndpointSlice,
        nodes_with_ready_endpoints,
        parse_endpoint_slice,
    )
    from foundation.kube.model.errors import ModelError, ObjectRef
    from foundation.kube.model.fields import IPAddress, IPNetwork
    from foundation.kube.model.meta import Namespace, parse_namespace
    from foundation.kube.model.metallb import (
        AddressRange,
        BFDProfile,
        BGPAdvertisement,
        BGPPeer,
        IPAddressPool,
        L2Advertisement,
        PoolSelection,
        PreferredNodeSelector,
        ServiceAllocation,
        parse_bfd_profile,
        parse_bgp_advertisement,
        parse_bgp_peer,
        parse_ip_address_pool,
        parse_l2_advertisement,
        range_networks,
        range_text,
    )
    from foundation.kube.model.node import VTEP_MAC_ANNOTATION, Node, parse_node, vtep_mac_for_ip
    from foundation.kube.model.secret import Secret, parse_secret
    from foundation.kube.model.selectors import (
        LabelSelector,
        Requirement,
        matches,
        matches_any,
        parse_label_selector,
    )
    from foundation.kube.model.service import Service, ServicePort, parse_service

# name -> submodule: resolved on first use (PEP 562), so that the CNI hot path
# paying for `import foundation.kube.model.node` does not also load every CRD parser.
_LAZY = {

    "AddressRange": "metallb",
    "BFDProfile": "metallb",
    "BGPAdvertisement": "metallb",
    "BGPCommunity": "communities",
    "BGPConfiguration": "calico",
    "BGPPeer": "metallb",
    "ClusterState": "cluster",
    "CommunityAliases": "communities",
    "Endpoint": "endpoints",
    "EndpointPort": "endpoints",
    "EndpointSlice": "endpoints",
    "IPAddress": "fields",
    "IPAddressPool": "metallb",
    "IPNetwork": "fields",
    "KINDS": "cluster",
    "L2Advertisement": "metallb",
    "LabelSelector": "selectors",
    "ModelError": "errors",
    "ModelObject": "cluster",
    "Namespace": "meta",
    "Node": "node",
    "ObjectRef": "errors",
    "PoolSelection": "metallb",
    "PreferredNodeSelector": "metallb",
    "Requirement": "selectors",
    "Secret": "secret",
    "Service": "service",
    "ServiceAllocation": "metallb",
    "ServicePort": "service",
    "VTEP_MAC_ANNOTATION": "node",
    "expand_document": "cluster",
    "matches": "selectors",
    "matches_any": "selectors",
    "nodes_with_ready_endpoints": "endpoints",
    "object_ref": "cluster",
    "parse_bfd_profile": "metallb",
    "parse_bgp_advertisement": "metallb",
    "parse_bgp_configuration": "calico",
    "parse_bgp_peer": "metallb",
    "parse_community": "communities",
    "parse_community_aliases": "communities",
    "parse_endpoint_slice": "endpoints",
    "parse_go_duration": "durations",
    "parse_ip_address_pool": "metallb",
    "parse_l2_advertisement": "metallb",
    "parse_label_selector": "selectors",
    "parse_namespace": "meta",
    "parse_node": "node",
    "parse_object": "cluster",
    "parse_secret": "secret",
    "parse_service": "service",
    "range_networks": "metallb",
    "range_text": "metallb",
    "ref_of": "cluster",
    "vtep_mac_for_ip": "node",
}

__all__ = [
    "AddressRange", "BFDProfile", "BGPAdvertisement", "BGPCommunity", "BGPConfiguration", "BGPPeer",
    "ClusterState", "CommunityAliases", "Endpoint", "EndpointPort", "EndpointSlice", "IPAddress",
    "IPAddressPool", "IPNetwork", "KINDS", "L2Advertisement", "LabelSelector", "ModelError",
    "ModelObject", "Namespace", "Node", "ObjectRef", "PoolSelection", "PreferredNodeSelector",
    "Requirement", "Secret", "Service",
    "ServiceAllocation", "ServicePort", "VTEP_MAC_ANNOTATION", "expand_document",
    "matches", "matches_any", "nodes_with_ready_endpoints", "object_ref",
    "parse_bfd_profile", "parse_bgp_advertisement", "parse_bgp_configuration", "parse_bgp_peer",
    "parse_community",
    "parse_community_aliases", "parse_endpoint_slice", "parse_go_duration",
    "parse_ip_address_pool", "parse_l2_advertisement", "parse_label_selector", "parse_namespace",
    "parse_node", "parse_object", "parse_secret", "parse_service", "range_networks",
    "range_text", "ref_of", "vtep_mac_for_ip",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
