"""Node: what the overlay and the speaker need to know about a machine.

The CNI node agent imports this on its hot path, so it depends on the standard
library only (ipaddress, dataclasses, re) and does no I/O.

The overlay needs each peer's underlay address (status.addresses InternalIP),
its pod CIDRs (spec.podCIDR / spec.podCIDRs) and its VTEP MAC.  The MAC is
derived from the node's address (`vtep_mac_for_ip`) so nothing has to be
published; a node that must use another MAC announces it in the
`skein.io/vtep-mac` annotation, which then wins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import (
    IPAddress,
    IPNetwork,
    Irregular,
    quick_choice,
    quick_ip,
    quick_list,
    quick_mapping,
    quick_network,
    quick_string,
    show,
)
from foundation.kube.model.meta import open_object, quick_meta

VTEP_MAC_ANNOTATION = "skein.io/vtep-mac"
# Kubernetes' well-known label: the node must not carry LoadBalancer traffic.
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def vtep_mac_for_ip(address: IPAddress | str) -> str:
    """foundation.netlink.mac.vtep_mac_for_ip, imported at the first call: the netlink
    package is the datapath's, which most daemons reading Nodes never touch."""
    from foundation.netlink.mac import vtep_mac_for_ip as derive

    return derive(address)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    internal_ips: tuple[IPAddress, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()
    # From the annotation, normalised to lowercase; None when not published.
    published_vtep_mac: str | None = None
    # status.conditions Ready; None when the object has no such condition
    # (as in hand-written manifests), which callers treat as ready.
    ready: bool | None = None

    @property
    def internal_ipv4(self) -> ipaddress.IPv4Address | None:
        return next((a for a in self.internal_ips if isinstance(a, ipaddress.IPv4Address)), None)

    @property
    def internal_ipv6(self) -> ipaddress.IPv6Address | None:
        return next((a for a in self.internal_ips if isinstance(a, ipaddress.IPv6Address)), None)

    @property
    def primary_ip(self) -> IPAddress | None:
        """The underlay address for the overlay: the first InternalIP, IPv4 preferred."""
        return self.internal_ipv4 or self.internal_ipv6

    @property
    def vtep_mac(self) -> str | None:
        """The published MAC, else one derived from the primary IP; None without either."""
        if self.published_vtep_mac:
            return self.published_vtep_mac
        primary = self.primary_ip
        return vtep_mac_for_ip(primary) if primary else None

    @property
    def excluded_from_load_balancers(self) -> bool:
        return EXCLUDE_LB_LABEL in self.labels


def parse_node(doc: Any) -> Node:
    try:
        return _quick_node(doc)
    except Irregular:
        return _checked_node(doc)


def _checked_node(doc: Any) -> Node:
    obj, meta = open_object(doc, "Node", namespaced=False)
    spec, status = obj.at("spec"), obj.at("status")

    internal: list[IPAddress] = []
    for entry in status.at("addresses").items():
        if entry.at("type").string() == "InternalIP":
            address = entry.at("address").ip()
            if address not in internal:
                internal.append(address)

    cidrs_cur = spec.at("podCIDRs")
    cidrs = cidrs_cur.parse(lambda c: c.network())
    single = spec.at("podCIDR")
    if not single.missing:
        first = single.network()
        # The API server keeps podCIDR == podCIDRs[0]; disagreement means a
        # hand-edited object, and guessing which one is meant would be worse.
        if cidrs and cidrs[0] != first:
            cidrs_cur.fail(f"podCIDRs[0] {cidrs[0]} disagrees with podCIDR {first}")
        cidrs = cidrs or [first]
    if len({c.version for c in cidrs}) != len(cidrs):
        cidrs_cur.fail("expected at most one CIDR per IP family")

    mac: str | None = None
    if VTEP_MAC_ANNOTATION in meta.annotations:
        mac_cur = obj.at("metadata").at("annotations").at(VTEP_MAC_ANNOTATION)
        mac = meta.annotations[VTEP_MAC_ANNOTATION].strip().lower()
        if not _MAC.fullmatch(mac):
            mac_cur.fail(f"expected a MAC such as 0e:4b:0a:00:00:01, got {show(mac)}")
        if int(mac[:2], 16) & 1:
            mac_cur.fail(f"expected a unicast MAC, got multicast {mac}")

    ready: bool | None = None
    for cond in status.at("conditions").items():
        if cond.at("type").string() == "Ready":
            ready = cond.at("status").choice(("True", "False", "Unknown")) == "True"

    return Node(meta.name, meta.labels, meta.annotations, tuple(internal), tuple(cidrs),
                mac, ready)


# -- the quick path (see fields.Irregular) -----------------------------------------

_CONDITION_STATUS = {s: s for s in ("True", "False", "Unknown")}


def _quick_node(doc: Any) -> Node:
    meta = quick_meta(doc, namespaced=False)
    spec, status = quick_mapping(doc.get("spec")), quick_mapping(doc.get("status"))

    internal: list[IPAddress] = []
    for entry in map(quick_mapping, quick_list(status.get("addresses"))):
        if quick_string(entry.get("type")) == "InternalIP":
            address = quick_ip(entry.get("address"))
            if address not in internal:
                internal.append(address)

    cidrs = [quick_network(v) for v in quick_list(spec.get("podCIDRs"))]
    single = spec.get("podCIDR")
    if single is not None:
        first = quick_network(single)
        if cidrs and cidrs[0] != first:
            raise Irregular
        cidrs = cidrs or [first]
    if len({c.version for c in cidrs}) != len(cidrs):
        raise Irregular

    mac: str | None = None
    if VTEP_MAC_ANNOTATION in meta.annotations:
        mac = meta.annotations[VTEP_MAC_ANNOTATION].strip().lower()
        if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
            raise Irregular

    ready: bool | None = None
    for cond in map(quick_mapping, quick_list(status.get("conditions"))):
        if quick_string(cond.get("type")) == "Ready":
            ready = quick_choice(cond.get("status"), _CONDITION_STATUS) == "True"

    return Node(meta.name, meta.labels, meta.annotations, tuple(internal), tuple(cidrs),
                mac, ready)
