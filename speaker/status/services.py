"""Services two ways: as the API holds them, and as kube-proxy programmed them.

Why both: a Service's ClusterIP, NodePort and LoadBalancer address are promises in
the API; what makes them work on a node is the DNAT rules kube-proxy writes there.
`skeinctl status` shows the first (from a manifests file or `kubectl get services,
endpointslices -A -o yaml`) beside the second (read from each node's kernel), so a
Service that the API has and a node lacks stands out.

kube-proxy's iptables mode (its default) is read from `iptables-save -t nat`, where
every rule it writes carries a comment naming the Service:

    -A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns
       cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
    -A KUBE-SERVICES -d 10.99.0.200/32 -p tcp -m comment --comment "default/web:http
       loadbalancer IP" -m tcp --dport 80 -j KUBE-EXT-...
    -A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080
       -j KUBE-EXT-...
    -A KUBE-SEP-... -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT
       --to-destination 10.244.1.3:8080

Each entry point of KUBE-SERVICES and KUBE-NODEPORTS is followed through the
KUBE-EXT-/KUBE-SVC-/KUBE-SVL-/KUBE-FW- chains to the DNAT targets of its KUBE-SEP-
chains: those are the endpoints this node sends the traffic to (for
`externalTrafficPolicy: Local`, only the node's own).  Pure functions; the collector
runs the command.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from foundation.kube.model.cluster import ClusterState
from speaker.status.model import (
    ClusterStatus,
    Endpoint,
    ProxyRule,
    ServicePortView,
    ServiceView,
)

ENTRY_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS")
_KINDS = ("cluster IP", "loadbalancer IP", "external IP")


def service_views(state: ClusterState,
                  pod_names: Mapping[str, str] | None = None) -> tuple[ServiceView, ...]:
    """Every Service of `state` with its endpoints (ready or not) from its
    EndpointSlices; `pod_names` (address -> name) names the endpoints' pods."""
    names = pod_names or {}
    out = []
    for svc in state.services:
        if svc.type == "ExternalName":
            continue
        endpoints: dict[str, Endpoint] = {}
        for s in state.endpoint_slices:
            if s.namespace != svc.namespace or s.service_name != svc.name:
                continue
            for e in s.endpoints:
                for address in e.addresses:
                    endpoints[address] = Endpoint(address, e.node_name, e.ready,
                                                  names.get(address))
        out.append(ServiceView(
            namespace=svc.namespace, name=svc.name, type=svc.type,
            cluster_ips=tuple(str(ip) for ip in svc.cluster_ips),
            ports=tuple(ServicePortView(p.port, p.protocol, p.name, p.node_port,
                                        "" if p.target_port is None else str(p.target_port))
                        for p in svc.ports),
            ingress=tuple(str(ip) for ip in svc.ingress_ips),
            external_ips=tuple(str(ip) for ip in svc.external_ips),
            external_traffic_policy=svc.external_traffic_policy,
            endpoints=tuple(sorted(endpoints.values(), key=lambda e: _ip_key(e.address)))))
    return tuple(sorted(out, key=lambda s: (s.namespace, s.name)))


def pod_names(docs: Sequence[Any]) -> dict[str, str]:
    """Pod address -> "namespace/name", from the Pods (status.podIPs) and the
    EndpointSlices' targetRefs among `docs` (plain Kubernetes objects)."""
    names: dict[str, str] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Pod" and not (doc.get("spec") or {}).get("hostNetwork"):
            status = doc.get("status") or {}
            ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
            for ip in ips or [status.get("podIP")]:
                if ip:
                    names[str(ip)] = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        elif doc.get("kind") == "EndpointSlice":
            for e in doc.get("endpoints") or []:
                ref = e.get("targetRef") or {} if isinstance(e, dict) else {}
                if ref.get("kind") != "Pod" or not ref.get("name"):
                    continue
                for ip in e.get("addresses") or []:
                    names.setdefault(str(ip), f"{ref.get('namespace') or meta.get('namespace')}"
                                              f"/{ref['name']}")
    return names


def name_pods(cluster: ClusterStatus, names: Mapping[str, str]) -> ClusterStatus:
    """The pods named after the Kubernetes pod holding their address (a node knows
    its pods by network namespace only); the others keep their names."""
    if not names:
        return cluster
    nodes = tuple(dataclasses.replace(n, pods=tuple(
        dataclasses.replace(p, name=next((names[ip] for ip in p.ips if ip in names), p.name))
        for p in n.pods)) for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


def _ip_key(text: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


# -- kube-proxy, iptables mode ---------------------------------------------------------------

def _rules(text: str) -> dict[str, list[list[str]]]:
    """Chain -> its rules (argv after `-A CHAIN`), in order, from iptables-save output."""
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if not line.startswith("-A "):
            continue
        try:
            argv = shlex.split(line)
        except ValueError:
            continue
        if len(argv) >= 2:
            chains.setdefault(argv[1], []).append(argv[2:])
    return chains


def _opt(argv: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in flags:
            return argv[i + 1]
    return None


def _destinations(chains: Mapping[str, list[list[str]]], chain: str,
                  seen: frozenset[str] = frozenset()) -> list[str]:
    """The DNAT targets reached from `chain` (jumps followed, loops cut)."""
    if chain in seen:
        return []
    out: list[str] = []
    for argv in chains.get(chain, []):
        target = _opt(argv, "-j", "--jump")
        if target == "DNAT":
            to = _opt(argv, "--to-destination")
            if to:
                out.append(to)
        elif target and target.startswith("KUBE-") and target != "KUBE-MARK-MASQ":
            out += _destinations(chains, target, seen | {chain})
    return out


def parse_iptables(text: str) -> tuple[ProxyRule, ...]:
    """kube-proxy's Service rules from `iptables-save -t nat` output."""
    chains = _rules(text)
    rules = []
    for entry in ENTRY_CHAINS:
        for argv in chains.get(entry, []):
            target = _opt(argv, "-j", "--jump")
            comment = _opt(argv, "--comment")
            port = _opt(argv, "--dport", "--destination-port")
            if not (target and comment and port and port.isdigit()):
                continue
            if not target.startswith(("KUBE-SVC-", "KUBE-EXT-", "KUBE-SVL-", "KUBE-FW-")):
                continue
            if entry == "KUBE-NODEPORTS":
                kind, service, address = "nodeport", comment, None
            else:
                kind = next((k for k in _KINDS if comment.endswith(" " + k)), "")
                if not kind:
                    continue
                service = comment[: -len(kind) - 1]
                address = (_opt(argv, "-d", "--destination") or "").split("/")[0] or None
            protocol = (_opt(argv, "-p", "--protocol") or "tcp").upper()
            endpoints = tuple(sorted(set(_destinations(chains, target)),
                                     key=lambda d: _ip_key(d.rsplit(":", 1)[0])))
            rules.append(ProxyRule(service, kind, address, int(port), protocol, endpoints))
    return tuple(sorted(set(rules), key=_rule_key))


def _rule_key(r: ProxyRule) -> tuple[str, int, str, str, int]:
    order = ("cluster IP", "nodeport", "external IP", "loadbalancer IP")
    kind = order.index(r.kind) if r.kind in order else 9
    return (r.service, kind, r.address or "", r.protocol, r.port)


def service_of(rule: ProxyRule) -> str:
    """namespace/name of a rule's Service (kube-proxy adds ":port-name" when named)."""
    return rule.service.split(":", 1)[0]


def programmed(rules: Iterable[ProxyRule], service: str) -> list[ProxyRule]:
    return [r for r in rules if service_of(r) == service]
