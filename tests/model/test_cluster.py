"""parse_object dispatch, List expansion, ClusterState lookups and identity."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from foundation.kube.model import (
    ClusterState,
    ModelError,
    Namespace,
    Node,
    Service,
    expand_document,
    parse_object,
)
from foundation.kube.sources import parse_manifests

MANIFESTS = """
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {rack: r2}}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: r1}}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.2], nodeName: n1, conditions: {ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.244.2.2], nodeName: n2, conditions: {ready: false}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: metallb-system}
spec: {addresses: [192.168.50.0/28]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: tor, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 65112, peerAddress: 10.99.0.1,
       nodeSelectors: [{matchLabels: {rack: r1}}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512}
"""


@pytest.fixture
def state() -> ClusterState:
    parsed = parse_manifests(MANIFESTS)
    assert parsed.errors == [] and parsed.ignored == []
    return parsed.state


def test_lookups(state: ClusterState) -> None:
    assert [n.name for n in state.nodes] == ["n1", "n2"]  # sorted, whatever the file order
    n1 = state.node("n1")
    assert n1 is not None and str(n1.primary_ip) == "10.0.0.1"
    assert state.node("n3") is None
    web = state.service("shop", "web")
    assert web is not None and state.service("default", "web") is None
    assert state.load_balancer_services() == (web,)
    assert [s.name for s in state.endpoint_slices_for(web)] == ["web-1", "web-2"]
    assert state.ready_nodes(web) == {"n1"}
    lab = state.pool("lab")
    assert lab is not None and state.pool_of(ipaddress.ip_address("192.168.50.15")) is lab
    assert state.pool_of(ipaddress.ip_address("192.168.50.16")) is None
    assert [p.name for p in state.bgp_peers_for(n1)] == ["tor"]
    n2 = state.node("n2")
    assert n2 is not None and state.bgp_peers_for(n2) == ()
    assert state.namespace_labels("shop") == {"team": "a"}
    assert state.namespace_labels("other") == {}
    calico = state.calico_bgp_configuration()
    assert calico is not None and calico.as_number == 64512


def test_equality_ignores_document_order_and_revision(state: ClusterState) -> None:
    reordered = "\n---\n".join(reversed(MANIFESTS.split("\n---\n")))
    again = parse_manifests(reordered).state
    assert again == state
    assert ClusterState.from_objects(
        [*state.nodes, *state.services], revision=7) == ClusterState.from_objects(
        [*state.services, *state.nodes])
    assert again != ClusterState.from_objects(state.nodes)


def test_later_duplicate_wins_and_is_reported() -> None:
    text = MANIFESTS + """
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {rack: r9}}
"""
    parsed = parse_manifests(text, "m.yaml")
    node = parsed.state.node("n1")
    assert node is not None and node.labels == {"rack": "r9"}
    assert parsed.errors == [] and len(parsed.problems) == 1
    lines = text.splitlines()
    # A document's line is that of its first key (apiVersion), two above metadata.
    first = lines.index("metadata: {name: n1, labels: {rack: r1}}") - 1
    last = len(lines) - 2
    assert parsed.problems[0] == (f"m.yaml:{last}: Node n1: defined again (first at line {first}); "
                                  "the later definition is used")


def test_unknown_kinds_and_versions() -> None:
    assert parse_object({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "x"}}) is None
    # Calico's own BGPPeer shares a kind name with MetalLB's but not the group.
    assert parse_object({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                         "metadata": {"name": "x"}}) is None
    with pytest.raises(ModelError) as err:
        parse_object({"apiVersion": "metallb.io/v1", "kind": "BGPPeer",
                      "metadata": {"name": "p", "namespace": "metallb-system"}})
    assert str(err.value) == ('BGPPeer metallb-system/p: apiVersion: unsupported version of '
                              'BGPPeer: expected metallb.io/v1beta1 or metallb.io/v1beta2, '
                              'got "metallb.io/v1"')
    with pytest.raises(ModelError, match=r'^Node n: apiVersion: .*expected v1, got "v2"'):
        parse_object({"apiVersion": "v2", "kind": "Node", "metadata": {"name": "n"}})
    with pytest.raises(ModelError, match="^kind: required$"):
        parse_object({"apiVersion": "v1", "metadata": {"name": "n"}})
    with pytest.raises(ModelError, match="^expected a Kubernetes object .*got a list$"):
        parse_object([1])


def test_list_documents_are_expanded() -> None:
    kubectl_list: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}}]}
    api_list: dict[str, Any] = {"apiVersion": "v1", "kind": "NodeList", "items": [
        {"metadata": {"name": "b"}}]}
    objects = [parse_object(d) for d in expand_document(kubectl_list) + expand_document(api_list)]
    assert objects == [Node("a"), Node("b")]
    assert expand_document(None) == []


def test_from_objects_buckets_every_kind() -> None:
    state = ClusterState.from_objects([Namespace("x"), Service("ns", "s"), Node("n")])
    assert state.namespaces == (Namespace("x"),) and state.nodes == (Node("n"),)
    assert state.services == (Service("ns", "s"),)
