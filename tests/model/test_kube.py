"""Core Kubernetes kinds (Node, Service, EndpointSlice) and Calico's BGPConfiguration."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.kube.model import (
    ModelError,
    nodes_with_ready_endpoints,
    parse_bgp_configuration,
    parse_endpoint_slice,
    parse_node,
    parse_service,
    vtep_mac_for_ip,
)

NODE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1"},
                 "annotations": {"skein.io/vtep-mac": "0E:AA:BB:CC:DD:EE"}},
    "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    "status": {
        "addresses": [{"type": "Hostname", "address": "worker-1"},
                      {"type": "InternalIP", "address": "172.18.0.3"},
                      {"type": "InternalIP", "address": "fc00:f853:ccd:e793::3"},
                      {"type": "ExternalIP", "address": "203.0.113.3"}],
        "conditions": [{"type": "MemoryPressure", "status": "False"},
                       {"type": "Ready", "status": "True"}]},
}


def with_spec(doc: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {**doc, "spec": {**doc.get("spec", {}), **spec}}


def test_node_fields() -> None:
    node = parse_node(NODE)
    assert node.name == "worker-1" and node.ready is True
    assert [str(a) for a in node.internal_ips] == ["172.18.0.3", "fc00:f853:ccd:e793::3"]
    assert str(node.internal_ipv4) == "172.18.0.3"
    assert str(node.internal_ipv6) == "fc00:f853:ccd:e793::3"
    assert [str(c) for c in node.pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert node.vtep_mac == "0e:aa:bb:cc:dd:ee"
    assert not node.excluded_from_load_balancers


def test_node_minimal_derives_vtep_mac() -> None:
    node = parse_node({"kind": "Node", "metadata": {"name": "n1"}, "spec": {
        "podCIDR": "10.244.0.0/24"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"}]}})
    assert node.ready is None and node.published_vtep_mac is None
    assert node.vtep_mac == "0e:4b:0a:00:00:01"
    assert [str(c) for c in node.pod_cidrs] == ["10.244.0.0/24"]
    assert parse_node({"kind": "Node", "metadata": {"name": "bare"}}).vtep_mac is None


@given(st.ip_addresses())
def test_derived_vtep_mac_is_local_unicast_and_stable(address: Any) -> None:
    mac = vtep_mac_for_ip(address)
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert mac == vtep_mac_for_ip(str(address))


@given(st.lists(st.ip_addresses(v=4), min_size=2, max_size=20, unique=True))
def test_derived_vtep_macs_are_distinct_for_distinct_ipv4(addresses: list[Any]) -> None:
    assert len({vtep_mac_for_ip(a) for a in addresses}) == len(addresses)


def test_v4_and_v6_derived_macs_do_not_collide() -> None:
    assert vtep_mac_for_ip("10.0.0.1") != vtep_mac_for_ip("fd00::a00:1")


@pytest.mark.parametrize(("change", "message"), [
    ({"spec": {"podCIDR": "10.244.1.1/24"}},
     'Node worker-1: spec.podCIDR: expected a CIDR such as 10.0.0.0/24 or fd00::/64, '
     'got "10.244.1.1/24"'),
    ({"spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.1.0/24"]}},
     "Node worker-1: spec.podCIDRs: podCIDRs[0] 10.244.1.0/24 disagrees with podCIDR "
     "10.244.2.0/24"),
    ({"spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}},
     "Node worker-1: spec.podCIDRs: expected at most one CIDR per IP family"),
    ({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.300"}]}},
     'Node worker-1: status.addresses[0].address: expected an IPv4 or IPv6 address, '
     'got "10.0.0.300"'),
    ({"status": {"addresses": [{"type": "InternalIP"}]}},
     "Node worker-1: status.addresses[0].address: required"),
    ({"metadata": {"name": "worker-1", "annotations": {"skein.io/vtep-mac": "01:00:5e:00:00:01"}}},
     'Node worker-1: metadata.annotations.skein.io/vtep-mac: expected a unicast MAC'),
    ({"metadata": {"name": "worker-1", "annotations": {"skein.io/vtep-mac": "0e:aa"}}},
     'Node worker-1: metadata.annotations.skein.io/vtep-mac: expected a MAC such as'),
    ({"metadata": {"name": "Worker_1"}},
     'Node Worker_1: metadata.name: expected a lowercase DNS name, got "Worker_1"'),
    ({"metadata": {"labels": {"a": "b"}}}, "Node ?: metadata.name: required"),
    ({"metadata": {"name": "worker-1", "labels": ["a"]}},
     "Node worker-1: metadata.labels: expected a mapping, got a list"),
    # Control characters are escaped: a message is always one log line.
    ({"metadata": {"name": "worker-1", "labels": {"a\nb": 1}}},
     "Node worker-1: metadata.labels.a\\nb: expected a string, got 1"),
    ({"metadata": {"name": "bad\nname"}},
     'Node bad\\nname: metadata.name: expected a lowercase DNS name, got "bad\\nname"'),
])
def test_node_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as err:
        parse_node({**NODE, **change})
    assert str(err.value).startswith(message)


SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "annotations": {
        "metallb.universe.tf/address-pool": "first-pool",
        "metallb.io/allow-shared-ip": "key-to-share"}},
    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
             "clusterIPs": ["10.96.0.10", "fd00:96::10"], "ipFamilies": ["IPv4", "IPv6"],
             "ipFamilyPolicy": "PreferDualStack", "externalTrafficPolicy": "Local",
             "loadBalancerClass": "skein.io/lb", "externalIPs": ["198.51.100.7"],
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 31080},
                       {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "192.168.10.5"},
                                            {"hostname": "lb.example.com"}]}},
}


def test_service_fields() -> None:
    svc = parse_service(SERVICE)
    assert svc.key == "shop/web" and svc.is_load_balancer and svc.local_traffic_policy
    assert [str(a) for a in svc.cluster_ips] == ["10.96.0.10", "fd00:96::10"]
    assert [(p.name, p.protocol, p.port, p.node_port, p.target_port) for p in svc.ports] == [
        ("http", "TCP", 80, 31080, 8080), ("dns", "UDP", 53, None, "dns")]
    assert svc.address_pool == "first-pool" and svc.allow_shared_ip == "key-to-share"
    assert svc.load_balancer_class == "skein.io/lb"
    assert [str(a) for a in svc.ingress_ips] == ["192.168.10.5"]
    assert [str(a) for a in svc.external_ips] == ["198.51.100.7"]
    assert svc.ip_families == ("IPv4", "IPv6") and svc.ip_family_policy == "PreferDualStack"
    assert svc.requested_ips == ()


def test_service_defaults_and_headless() -> None:
    svc = parse_service({"kind": "Service", "metadata": {"name": "db"},
                         "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})
    assert (svc.namespace, svc.type, svc.external_traffic_policy) == (
        "default", "ClusterIP", "Cluster")
    assert svc.cluster_ips == () and svc.ports[0].protocol == "TCP"


@pytest.mark.parametrize("key", ["metallb.universe.tf/loadBalancerIPs",
                                 "metallb.io/loadBalancerIPs"])
def test_requested_ips_from_either_annotation(key: str) -> None:
    doc = {**SERVICE, "metadata": {"name": "web", "annotations": {
        key: "192.168.10.20, fc00:f853:ccd:e799::5"}}}
    assert [str(a) for a in parse_service(doc).requested_ips] == [
        "192.168.10.20", "fc00:f853:ccd:e799::5"]


def test_requested_ip_from_spec() -> None:
    svc = parse_service(with_spec(SERVICE, loadBalancerIP="192.168.10.21"))
    assert svc.requested_ips == (ipaddress.ip_address("192.168.10.21"),)


@pytest.mark.parametrize(("change", "message"), [
    ({"spec": {"ports": [{"name": "http", "port": "http"}]}},
     'Service default/web: spec.ports[0].port: expected an integer 1-65535, got "http"'),
    ({"spec": {"ports": [{"port": 80}, {"port": 0}]}},
     "Service default/web: spec.ports[1].port: expected an integer 1-65535, got 0"),
    ({"spec": {"ports": [{"port": 80, "protocol": "ICMP"}]}},
     'Service default/web: spec.ports[0].protocol: expected one of TCP, UDP, SCTP, got "ICMP"'),
    ({"spec": {"type": "Loadbalancer"}},
     "Service default/web: spec.type: expected one of ClusterIP, NodePort, LoadBalancer, "
     'ExternalName, got "Loadbalancer"'),
    ({"spec": {"externalTrafficPolicy": "local"}},
     'Service default/web: spec.externalTrafficPolicy: expected one of Cluster, Local, '
     'got "local"'),
    ({"spec": {"loadBalancerIP": "192.168.10.21"}, "metadata": {"name": "web", "annotations": {
        "metallb.universe.tf/loadBalancerIPs": "192.168.10.20"}}},
     "Service default/web: metadata.annotations.metallb.universe.tf/loadBalancerIPs: "
     "cannot be combined with spec.loadBalancerIP"),
    ({"metadata": {"name": "web", "annotations": {
        "metallb.io/loadBalancerIPs": "192.168.10.20,192.168.10.21"}}},
     "Service default/web: metadata.annotations.metallb.io/loadBalancerIPs: expected at most "
     "one address per IP family"),
    ({"metadata": {"name": "web", "annotations": {
        "metallb.io/loadBalancerIPs": "192.168.10.x"}}},
     'Service default/web: metadata.annotations.metallb.io/loadBalancerIPs: expected an IPv4 '
     'or IPv6 address, got "192.168.10.x"'),
    ({"metadata": {"name": "web", "annotations": {
        "metallb.io/address-pool": "a", "metallb.universe.tf/address-pool": "b"}}},
     'Service default/web: metadata.annotations.metallb.io/address-pool: disagrees with '
     'metallb.universe.tf/address-pool ("a" vs "b")'),
    ({"spec": {"clusterIPs": ["10.96.0.11"], "clusterIP": "10.96.0.10"}},
     "Service default/web: spec.clusterIPs: clusterIPs[0] 10.96.0.11 disagrees with clusterIP"),
    ({"spec": {"ipFamilies": ["IPv5"]}},
     'Service default/web: spec.ipFamilies[0]: expected one of IPv4, IPv6, got "IPv5"'),
])
def test_service_errors(change: dict[str, Any], message: str) -> None:
    doc = {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    with pytest.raises(ModelError) as err:
        parse_service({**doc, **change})
    assert str(err.value).startswith(message)


SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "web-abc12", "namespace": "shop",
                 "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    "endpoints": [
        {"addresses": ["10.244.1.5"], "conditions": {"ready": True}, "nodeName": "worker-1"},
        {"addresses": ["10.244.2.5"], "conditions": {"ready": False, "serving": True,
                                                     "terminating": True},
         "nodeName": "worker-2"},
        {"addresses": ["10.244.3.5"], "nodeName": "worker-3"},
        {"addresses": ["10.244.4.5"], "conditions": {"ready": True}},
    ],
}


def test_endpoint_slice_conditions_and_ready_nodes() -> None:
    eps = parse_endpoint_slice(SLICE)
    assert eps.service_name == "web" and eps.address_type == "IPv4"
    assert [(e.ready, e.serving, e.terminating) for e in eps.endpoints] == [
        (True, True, False), (False, True, True), (True, True, False), (True, True, False)]
    assert eps.ports[0].port == 8080
    # Absent `ready` counts as ready (the API's documented reading of nil).
    assert nodes_with_ready_endpoints([eps], "shop", "web") == {"worker-1", "worker-3"}
    assert nodes_with_ready_endpoints([eps], "default", "web") == frozenset()


def test_endpoint_slice_errors() -> None:
    bad = {**SLICE, "addressType": "IPv6"}
    with pytest.raises(ModelError) as err:
        parse_endpoint_slice(bad)
    assert str(err.value) == ("EndpointSlice shop/web-abc12: endpoints[0].addresses[0]: "
                              "expected an IPv6 address (addressType), got 10.244.1.5")
    bad = {**SLICE, "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]}
    with pytest.raises(ModelError, match=r"endpoints\[0\]\.conditions\.ready: expected true or "
                                         r'false, got "yes"'):
        parse_endpoint_slice(bad)
    with pytest.raises(ModelError, match=r"addressType: required"):
        parse_endpoint_slice({k: v for k, v in SLICE.items() if k != "addressType"})


def test_calico_bgp_configuration() -> None:
    conf = parse_bgp_configuration({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"logSeverityScreen": "Info", "nodeToNodeMeshEnabled": False,
                 "asNumber": 63400,
                 "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/112"}],
                 "serviceExternalIPs": [{"cidr": "104.244.42.129/32"}],
                 "serviceLoadBalancerIPs": [{"cidr": "192.168.10.0/24"}]}})
    assert conf.as_number == 63400 and not conf.node_to_node_mesh_enabled
    assert [str(c) for c in conf.service_cluster_ips] == ["10.96.0.0/12", "fd00:96::/112"]
    assert [str(c) for c in conf.service_external_ips] == ["104.244.42.129/32"]
    assert [str(c) for c in conf.service_load_balancer_ips] == ["192.168.10.0/24"]
    with pytest.raises(ModelError) as err:
        parse_bgp_configuration({"kind": "BGPConfiguration", "metadata": {"name": "default"},
                                 "spec": {"serviceLoadBalancerIPs": [{"cidr": "192.168.10/24"}]}})
    assert str(err.value) == ('BGPConfiguration default: spec.serviceLoadBalancerIPs[0].cidr: '
                              'expected a CIDR such as 10.0.0.0/24 or fd00::/64, '
                              'got "192.168.10/24"')
