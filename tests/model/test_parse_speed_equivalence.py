"""The quick parse paths build exactly what the checked paths build.

Services, EndpointSlices, Nodes and Namespaces are parsed first by a quick path
over plain dicts that gives up (fields.Irregular) on anything unusual; the
checked path, with its cursors and messages, then decides.  Here every
document, well-formed, unusual or broken, is parsed both ways and must give
the same object (same fields, same types) or the same ModelError.  The model
objects carry no __dict__ (slots), which is most of what 10,000 Services cost.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.model import (
    ClusterState,
    ModelError,
    cluster,
    endpoints,
    expand_document,
    fields,
    meta,
    node,
    parse_object,
    service,
)
from foundation.kube.sources import yaml_documents
from tests.model.metallb_samples import samples
from tests.model.test_kube import NODE, SERVICE, SLICE

DATA = Path(__file__).parent / "data" / "metallb.yaml"

# Each quick path, by module: disabling them all leaves only the checked paths.
QUICK = [(cluster, "_quick_kind"), (service, "_quick_service"),
         (endpoints, "_quick_endpoint_slice"), (node, "_quick_node"),
         (meta, "_quick_namespace")]


def _give_up(*_: Any) -> Any:
    raise fields.Irregular


@contextmanager
def checked_only() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for module, name in QUICK:
            stack.enter_context(mock.patch.object(module, name, _give_up))
        yield


def outcome(doc: Any) -> tuple[Any, ...]:
    """What parse_object makes of `doc`: the object (and its repr, which tells an
    int from a str and an address from its text), or the error."""
    try:
        obj = parse_object(doc)
    except ModelError as exc:
        return ("error", str(exc), exc.ref, exc.path, exc.message)
    return ("ok", obj, repr(obj), type(obj))


def assert_same(doc: Any) -> None:
    before = copy.deepcopy(doc)
    quick = outcome(doc)
    with checked_only():
        checked = outcome(doc)
    assert quick == checked, doc
    assert doc == before  # neither path touches the document


def service_doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"}, "spec": spec}


def with_meta(doc: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], **metadata}}


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "shop", "labels": {"team": "a"}}}


def slice_doc(address_type: str, *addresses: Any) -> dict[str, Any]:
    return {**SLICE, "addressType": address_type,
            "endpoints": [{"addresses": list(addresses), "nodeName": "worker-1"}]}


V4_TEXTS = ["10.0.0.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "010.0.0.1", "10.0.0",
            " 10.0.0.1 ", "10.0.0.1\n", "1.2.3.4.5", "١٠.0.0.1", "10.0.0.1/32", "", "None"]
V6_TEXTS = ["fd00::1", "FD00::0001", "::ffff:10.0.0.1", "fe80::1%eth0", "fd00:::1", " ::1"]

HAND_WRITTEN: list[Any] = [
    service_doc(),
    service_doc(type="LoadBalancer", ports=[{"port": 80}], loadBalancerIP="192.168.10.7"),
    service_doc(type="", externalTrafficPolicy="", ports=[{"port": 80, "protocol": ""}]),
    service_doc(type="loadbalancer"),
    service_doc(clusterIP="None"),
    service_doc(clusterIP="", clusterIPs=["", "None"]),
    service_doc(clusterIP=None, clusterIPs=None),
    service_doc(clusterIP="10.96.0.1", clusterIPs=["10.96.0.2"]),
    service_doc(clusterIP="10.96.0.1", clusterIPs=[]),
    service_doc(clusterIP="None", clusterIPs=["None", "10.96.0.1"]),
    service_doc(clusterIP="10.96.0.1", clusterIPs=["None", "10.96.0.1"]),
    service_doc(clusterIP="10.96.0.2", clusterIPs=["", "10.96.0.1"]),
    service_doc(clusterIP="010.96.0.1", clusterIPs=["010.96.0.1"]),
    service_doc(clusterIPs=["10.96.0.1", None]),
    service_doc(ports=[{"port": 80, "targetPort": ""}]),
    service_doc(ports=[{"port": 80, "targetPort": 0}]),
    service_doc(ports=[{"port": 80, "targetPort": True}]),
    service_doc(ports=[{"port": 80, "targetPort": "http", "nodePort": 30080, "name": None}]),
    service_doc(ports=[{"port": "80"}]),
    service_doc(ports=[{"port": 65536}]),
    service_doc(ports=[None]),
    service_doc(ports=[{"port": 80}, {"port": 80, "protocol": "UDP", "name": "dns"}]),
    service_doc(ports={"port": 80}),
    service_doc(ipFamilies=["IPv4", ""], ipFamilyPolicy="SingleStack"),
    service_doc(ipFamilyPolicy=""),
    service_doc(externalIPs=["198.51.100.1", ""]),
    service_doc(externalIPs=[" 198.51.100.1"]),
    service_doc(loadBalancerClass=""),
    service_doc(loadBalancerClass=7),
    {**service_doc(), "spec": None, "status": {"loadBalancer": None}},
    {**service_doc(), "status": {"loadBalancer": {"ingress": [None, {"hostname": "x"},
                                                              {"ip": ""}, {"ip": "10.1.1.1"}]}}},
    {**service_doc(), "status": {"loadBalancer": {"ingress": [{"ip": 10}]}}},
    {**service_doc(), "status": {"loadBalancer": {"ingress": {"ip": "10.1.1.1"}}}},
    {**service_doc(), "status": []},
    with_meta(service_doc(), namespace=None),
    with_meta(service_doc(), namespace=""),
    with_meta(service_doc(), namespace=3),
    with_meta(service_doc(), name="Web"),
    with_meta(service_doc(), name="a" * 254),
    with_meta(service_doc(), name=""),
    with_meta(service_doc(), labels={"app": "web", "empty": None}),
    with_meta(service_doc(), labels={1: "one", "2": 2}),
    with_meta(service_doc(), labels={1: "one"}),
    with_meta(service_doc(), labels={}, annotations=[]),
    with_meta(service_doc(), labels="app=web"),
    {**service_doc(), "metadata": None},
    {**service_doc(), "metadata": []},
    {**service_doc(), "apiVersion": "v2"},
    {**service_doc(), "apiVersion": "core/v1"},
    {**service_doc(), "apiVersion": ""},
    {**service_doc(), "kind": ""},
    {**service_doc(), "kind": None},
    {"kind": "Widget", "apiVersion": "example.com/v1"},
    {"kind": "Widget", "apiVersion": 1},
    ["not", "a", "mapping"],
    None,
    "text",
]

for key in ("metallb.io/", "metallb.universe.tf/"):
    for value in ("10.0.0.5", " 10.0.0.5, fd00::5 ", "10.0.0.5,10.0.0.6", "10.0.0.5,,", "",
                  "not-an-ip", " "):
        HAND_WRITTEN.append(with_meta(service_doc(), annotations={key + "loadBalancerIPs": value}))
    HAND_WRITTEN.append(with_meta(service_doc(loadBalancerIP="10.0.0.5"),
                                  annotations={key + "loadBalancerIPs": "10.0.0.5"}))
    HAND_WRITTEN.append(with_meta(service_doc(loadBalancerIP=""),
                                  annotations={key + "loadBalancerIPs": "10.0.0.5"}))
for suffix in ("address-pool", "allow-shared-ip", "loadBalancerIPs"):
    for new, old in (("a", "a"), ("a ", " a"), ("a", "b"), ("", "a"), ("a", ""), (None, None)):
        HAND_WRITTEN.append(with_meta(service_doc(), annotations={
            "metallb.io/" + suffix: new, "metallb.universe.tf/" + suffix: old}))
for text in V4_TEXTS + V6_TEXTS:
    HAND_WRITTEN += [slice_doc("IPv4", text), slice_doc("IPv6", text), slice_doc("FQDN", text),
                     service_doc(loadBalancerIP=text), service_doc(externalIPs=[text]),
                     service_doc(clusterIP=text),
                     {**NODE, "status": {"addresses": [{"type": "InternalIP", "address": text}]}}]
HAND_WRITTEN += [
    slice_doc("IPv4"),
    slice_doc("IPv4", "10.0.0.1", "10.0.0.1"),
    slice_doc("FQDN", "a.example", 7),
    slice_doc(""),
    {**SLICE, "endpoints": None, "ports": None},
    {**SLICE, "endpoints": [None]},
    {**SLICE, "endpoints": [{"addresses": ["10.0.0.1"], "conditions": None, "nodeName": ""}]},
    {**SLICE, "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"serving": False}}]},
    {**SLICE, "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": 1}}]},
    {**SLICE, "ports": [None, {}, {"port": None, "protocol": "SCTP", "name": "x"}]},
    {**SLICE, "ports": [{"port": 0}]},
    with_meta(SLICE, labels={"kubernetes.io/service-name": ""}),
    with_meta(SLICE, labels={"kubernetes.io/service-name": None}),
    {**NODE, "spec": {"podCIDR": "10.244.1.0/24"}},
    {**NODE, "spec": {"podCIDR": "10.244.1.1/24"}},
    {**NODE, "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.1.0/24"]}},
    {**NODE, "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}},
    {**NODE, "spec": {"podCIDR": ""}},
    {**NODE, "spec": {"podCIDR": None, "podCIDRs": None}},
    {**NODE, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                      {"type": "InternalIP", "address": "10.0.0.1"}]}},
    {**NODE, "status": {"addresses": [{"type": "", "address": "10.0.0.1"}]}},
    {**NODE, "status": {"addresses": [None]}},
    {**NODE, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
    {**NODE, "status": {"conditions": [{"type": "Ready", "status": "true"}]}},
    {**NODE, "status": {"conditions": [{"type": "Ready"}]}},
    with_meta(NODE, annotations={"skein.io/vtep-mac": " 0e:00:00:00:00:01 "}),
    with_meta(NODE, annotations={"skein.io/vtep-mac": "01:00:00:00:00:01"}),
    with_meta(NODE, annotations={"skein.io/vtep-mac": "0e-00-00-00-00-01"}),
    with_meta(NODE, annotations={"skein.io/vtep-mac": None}),
    with_meta(NODE, namespace="ignored"),
    NAMESPACE,
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": None}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Shop"}},
    {"apiVersion": "v1", "kind": "Namespace"},
]

GOOD = ([doc for _, doc in yaml_documents(DATA.read_text())] + [NODE, SERVICE, SLICE]
        + [s.doc for s in samples()])
CORPUS = GOOD + HAND_WRITTEN


@pytest.mark.parametrize("doc", CORPUS)
def test_quick_and_checked_paths_agree(doc: Any) -> None:
    assert_same(doc)


@pytest.mark.parametrize(("quick", "doc"), [
    (service._quick_service, SERVICE), (endpoints._quick_endpoint_slice, SLICE),
    (node._quick_node, NODE), (service._quick_service, HAND_WRITTEN[1]),
    (meta._quick_namespace, NAMESPACE)])
def test_well_formed_documents_take_the_quick_path(quick: Any, doc: Any) -> None:
    with checked_only():
        checked = parse_object(doc)
    assert quick(doc) == checked
    assert cluster._quick_kind(doc) is not None


NEAR_MISSES = st.sampled_from(
    [None, "", "None", "0", "80", 80, 0, -1, 65536, True, False, 1.5, [], {}, [None], [""],
     ["10.0.0.1"], {"ip": "10.0.0.1"}, "TCP", "tcp", "IPv4", "IPv6", "FQDN", "Local",
     "LoadBalancer", "True", "Ready", "InternalIP", "10.244.1.0/24", *V4_TEXTS, *V6_TEXTS])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                    st.text(max_size=12), NEAR_MISSES)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, child in doc.items():
            out += paths(child, (*prefix, key))
    elif isinstance(doc, list):
        for i, child in enumerate(doc):
            out += paths(child, (*prefix, i))
    return out


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_mutated_documents_agree(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(
        [NODE, SERVICE, SLICE, *HAND_WRITTEN[:2], *GOOD[:8]])))
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(paths(doc)[1:]))
        target = doc
        for key in path[:-1]:
            target = target[key]
        # Copied: a drawn [] or {} of NEAR_MISSES is the one object every example
        # draws, and a second mutation may write into it.
        if isinstance(target, dict) and data.draw(st.booleans()):
            target[data.draw(st.sampled_from([path[-1], "clusterIP", "podCIDR", "ready"]))] = (
                copy.deepcopy(data.draw(values)))
        else:
            target[path[-1]] = copy.deepcopy(data.draw(values))
    assert_same(doc)


def test_lists_of_objects_agree() -> None:
    listing = {"apiVersion": "v1", "kind": "ServiceList",
               "items": [{k: v for k, v in SERVICE.items() if k not in ("kind", "apiVersion")},
                         HAND_WRITTEN[1]]}
    for doc in expand_document(listing):
        assert_same(doc)


def test_model_objects_have_no_instance_dict() -> None:
    """Slots: per-object attribute dicts were a large part of a big cluster's model."""
    objects = [o for o in map(parse_object, GOOD) if o is not None]
    assert {type(o).__name__ for o in objects} >= {
        "Service", "EndpointSlice", "Node", "IPAddressPool", "BGPPeer", "L2Advertisement",
        "BGPAdvertisement"}
    for obj in objects:
        assert not hasattr(obj, "__dict__"), type(obj)
        assert pickle.loads(pickle.dumps(obj)) == obj
        assert copy.deepcopy(obj) == obj
    state = ClusterState.from_objects(objects)
    assert ClusterState.from_objects(copy.deepcopy(objects)) == state


def test_service_key_is_kept_but_not_a_field() -> None:
    svc = parse_object(SERVICE)
    assert isinstance(svc, service.Service)
    assert svc.key == "shop/web" and svc.key is svc.key
    assert "shop/web" not in repr(svc)
    assert "_key" not in {f.name for f in dataclasses.fields(svc)}
    moved = dataclasses.replace(svc, namespace="other")
    assert moved.key == "other/web" and moved != svc
    again = pickle.loads(pickle.dumps(svc))
    assert again == svc and again.key == "shop/web"
    with pytest.raises(dataclasses.FrozenInstanceError):
        svc.name = "x"  # type: ignore[misc]


def test_objects_share_what_they_repeat_but_not_the_document() -> None:
    doc = with_meta(service_doc(type="LoadBalancer", ports=[{"port": 80}]), labels={"app": "a"})
    first, second = parse_object(doc), parse_object(copy.deepcopy(doc))
    assert isinstance(first, service.Service) and isinstance(second, service.Service)
    assert first.ports is second.ports and first.type is service.SERVICE_TYPES[2]
    # The labels are the model's own: writers edit the document in place.
    doc["metadata"]["labels"]["app"] = "changed"
    assert first.labels == {"app": "a"}
    # Objects without annotations share one empty mapping, which refuses changes.
    assert first.annotations == {} and first.annotations is second.annotations
    with pytest.raises(TypeError):
        first.annotations["x"] = "y"  # type: ignore[index]
    assert second.annotations == {} and repr(first).endswith("annotations={})")


def test_bounded_caches_stay_bounded() -> None:
    for i in range(fields.SHARED_MAX + 10):
        parse_object(service_doc(ports=[{"port": 80, "nodePort": 30000 + i % 30000}],
                                 loadBalancerIP=f"10.0.{i >> 8 & 255}.{i & 255}"))
    assert len(service._PORTS) <= fields.SHARED_MAX
    for i in range(fields.SHARED_MAX + 10):
        parse_object(with_meta(service_doc(), namespace=f"ns{i}"))
    assert len(fields._SHARED) <= fields.SHARED_MAX
