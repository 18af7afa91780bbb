"""EndpointSlice (discovery.k8s.io/v1): where a service's backends run.

The speaker needs this for `externalTrafficPolicy: Local`: only nodes that host
a ready endpoint may announce the address, or traffic would be dropped.
Conditions follow the API's documented defaults: an absent `ready` is ready,
an absent `serving` is whatever `ready` is, an absent `terminating` is false.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import (
    Cursor,
    Irregular,
    choices,
    ip_address,
    is_dotted_quad,
    parse_ip,
    quick_boolean,
    quick_choice,
    quick_list,
    quick_mapping,
    quick_opt_integer,
    quick_opt_string,
    shared,
    shared_value,
)
from foundation.kube.model.meta import open_object, quick_meta

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True, slots=True)
class Endpoint:
    # Normalised text (IPs in canonical form); FQDN slices keep names.
    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointPort:
    port: int | None
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str | None
    address_type: str
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def ready_nodes(self) -> frozenset[str]:
        return frozenset(e.node_name for e in self.endpoints if e.ready and e.node_name)

    @property
    def service_key(self) -> str | None:
        """namespace/name of the Service it belongs to (Service.key), if labelled."""
        return f"{self.namespace}/{self.service_name}" if self.service_name else None


def nodes_with_ready_endpoints(slices: Iterable[EndpointSlice], namespace: str,
                               service_name: str) -> frozenset[str]:
    """Names of nodes hosting at least one ready endpoint of the service."""
    nodes: set[str] = set()
    for s in slices:
        if s.namespace == namespace and s.service_name == service_name:
            nodes |= s.ready_nodes()
    return frozenset(nodes)


def _parse_endpoint(cur: Cursor, address_type: str) -> Endpoint:
    addresses_cur = cur.at("addresses")
    texts = addresses_cur.strings()
    if not texts:
        addresses_cur.fail("expected at least one address")
    if address_type != "FQDN":
        version = 4 if address_type == "IPv4" else 6
        parsed = []
        for item, text in zip(addresses_cur.items(), texts, strict=True):
            address = ip_address(item, text)
            if address.version != version:
                item.fail(f"expected an {address_type} address (addressType), got {text}")
            parsed.append(str(address))
        texts = tuple(parsed)
    conditions = cur.at("conditions")
    ready = conditions.at("ready").boolean(True)
    return Endpoint(
        addresses=texts,
        ready=ready,
        serving=conditions.at("serving").boolean(ready),
        terminating=conditions.at("terminating").boolean(False),
        node_name=cur.at("nodeName").opt_string() or None,
    )


def _parse_port(cur: Cursor) -> EndpointPort:
    return EndpointPort(cur.at("port").opt_integer(1, 65535),
                        cur.at("protocol").choice(("TCP", "UDP", "SCTP"), "TCP"),
                        cur.at("name").opt_string() or "")


def parse_endpoint_slice(doc: Any) -> EndpointSlice:
    try:
        return _quick_endpoint_slice(doc)
    except Irregular:
        return _checked_endpoint_slice(doc)


def _checked_endpoint_slice(doc: Any) -> EndpointSlice:
    obj, meta = open_object(doc, "EndpointSlice", namespaced=True)
    address_type = obj.at("addressType").choice(ADDRESS_TYPES)
    return EndpointSlice(
        namespace=meta.namespace,
        name=meta.name,
        service_name=meta.labels.get(SERVICE_NAME_LABEL) or None,
        address_type=address_type,
        endpoints=tuple(obj.at("endpoints").parse(lambda c: _parse_endpoint(c, address_type))),
        ports=tuple(obj.at("ports").parse(_parse_port)),
        labels=meta.labels,
    )


# -- the quick path (see fields.Irregular) -----------------------------------------

_ADDRESS_TYPES = choices(ADDRESS_TYPES)
_PROTOCOLS = choices(("TCP", "UDP", "SCTP"))

# Ports as written -> the EndpointPorts, shared (see service._PORTS).
_PORTS: dict[tuple[Any, ...], tuple[EndpointPort, ...]] = {}


def _quick_addresses(value: Any, address_type: str) -> tuple[str, ...]:
    texts = quick_list(value)
    if not texts:
        raise Irregular
    for text in texts:
        if type(text) is not str or not text:
            raise Irregular
    if address_type == "FQDN":
        return tuple(texts)
    version = 4 if address_type == "IPv4" else 6
    out = []
    for text in texts:
        # A plain dotted quad is already the canonical text of its address.
        if version == 4 and is_dotted_quad(text):
            out.append(text)
            continue
        try:
            address = parse_ip(text)
        except ValueError:
            raise Irregular from None
        if address.version != version:
            raise Irregular
        out.append(str(address))
    return tuple(out)


def _quick_endpoint(value: Any, address_type: str) -> Endpoint:
    endpoint = quick_mapping(value)
    addresses = _quick_addresses(endpoint.get("addresses"), address_type)
    conditions = quick_mapping(endpoint.get("conditions"))
    ready = quick_boolean(conditions.get("ready"), True)
    node_name = quick_opt_string(endpoint.get("nodeName"))
    return Endpoint(addresses, ready, quick_boolean(conditions.get("serving"), ready),
                    quick_boolean(conditions.get("terminating"), False),
                    shared(node_name) if node_name else None)


def _quick_ports(value: Any) -> tuple[EndpointPort, ...]:
    items = quick_list(value)
    if not items:
        return ()
    written = tuple((quick_opt_integer(p.get("port"), 1, 65535),
                     quick_choice(p.get("protocol"), _PROTOCOLS, "TCP"),
                     quick_opt_string(p.get("name")) or "")
                    for p in map(quick_mapping, items))
    return shared_value(_PORTS, written, lambda: tuple(EndpointPort(*p) for p in written))


def _quick_endpoint_slice(doc: Any) -> EndpointSlice:
    meta = quick_meta(doc, namespaced=True)
    address_type = quick_choice(doc.get("addressType"), _ADDRESS_TYPES)
    return EndpointSlice(
        namespace=meta.namespace,
        name=meta.name,
        service_name=meta.labels.get(SERVICE_NAME_LABEL) or None,
        address_type=address_type,
        endpoints=tuple(_quick_endpoint(e, address_type)
                        for e in quick_list(doc.get("endpoints"))),
        ports=_quick_ports(doc.get("ports")),
        labels=meta.labels,
    )
