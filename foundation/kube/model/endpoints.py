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

from foundation.kube.model.fields import Cursor, ip_address
from foundation.kube.model.meta import open_object

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True)
class Endpoint:
    # Normalised text (IPs in canonical form); FQDN slices keep names.
    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None


@dataclass(frozen=True)
class EndpointPort:
    port: int | None
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
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
