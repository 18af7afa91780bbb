"""The part of kube-proxy the netns lab needs, written as kube-proxy writes it.

In a cluster, kube-proxy (iptables mode, its default) turns every Service into NAT
rules on every node: a ClusterIP, a NodePort and a LoadBalancer address each jump to
a chain that DNATs to one of the Service's endpoints.  The lab has no kube-proxy, so
`program` writes the same chains with the same comments (KUBE-SERVICES,
KUBE-NODEPORTS, KUBE-EXT-/KUBE-SVC-/KUBE-SVL-/KUBE-SEP-, "ns/name:port cluster IP",
...) with iptables-restore in each node's namespace.  That is what `skeinctl
status` reads back on a real node too (speaker/status/services.py).

Semantics kept: a ClusterIP goes to any endpoint (random, as kube-proxy's
statistic rules); with `externalTrafficPolicy: Local`, a NodePort or LoadBalancer
address goes to the node's own endpoints only (no second hop, no SNAT: the pod sees
the client's address).  Not kept: the masquerade marks for hairpin traffic and
for `Cluster` policy, session affinity, the filter table's REJECT for Services
without endpoints.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from lab.cluster import Node


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with its endpoints (pod IP, node name)."""

    namespace: str
    name: str
    port_name: str
    port: int
    target_port: int
    cluster_ip: str
    node_port: int | None
    load_balancer_ips: tuple[str, ...]
    endpoints: tuple[tuple[str, str], ...]
    local_policy: bool = True
    protocol: str = "tcp"

    @property
    def key(self) -> str:
        """kube-proxy's name for it: namespace/name:port-name (no ":" for an unnamed
        port)."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name
                                                   else "")


def _chain(prefix: str, *parts: str) -> str:
    """kube-proxy's chain names: a prefix and 16 base32 characters of a sha256."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def rules(node: str, services: Sequence[ServicePort]) -> str:
    """iptables-restore input (nat table) for `node`."""
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS"]
    lines = ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    tail = []
    for sp in services:
        p = sp.protocol
        svc = _chain("KUBE-SVC-", sp.key, p)
        svl = _chain("KUBE-SVL-", sp.key, p)
        ext = _chain("KUBE-EXT-", sp.key, p)
        chains += [svc, ext, svl]
        lines.append(f'-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {p} -m comment --comment '
                     f'"{sp.key} cluster IP" -m {p} --dport {sp.port} -j {svc}')
        for ip in sp.load_balancer_ips:
            lines.append(f'-A KUBE-SERVICES -d {ip}/32 -p {p} -m comment --comment '
                         f'"{sp.key} loadbalancer IP" -m {p} --dport {sp.port} -j {ext}')
        if sp.node_port:
            lines.append(f'-A KUBE-NODEPORTS -p {p} -m comment --comment "{sp.key}" -m {p} '
                         f'--dport {sp.node_port} -j {ext}')
        lines.append(f"-A {ext} -j {svl if sp.local_policy else svc}")
        local = [e for e in sp.endpoints if e[1] == node]
        for chain, chosen in ((svc, sp.endpoints), (svl, local)):
            for i, (ip, _) in enumerate(chosen):
                sep = _chain("KUBE-SEP-", sp.key, p, ip)
                if sep not in chains:
                    chains.append(sep)
                    tail.append(f'-A {sep} -p {p} -m comment --comment "{sp.key}" -m {p} '
                                f'-j DNAT --to-destination {ip}:{sp.target_port}')
                left = len(chosen) - i
                pick = (f"-m statistic --mode random --probability {1 / left:.11f} "
                        if left > 1 else "")
                lines.append(f'-A {chain} -m comment --comment "{sp.key} -> '
                             f'{ip}:{sp.target_port}" {pick}-j {sep}')
    lines.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                 'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 '-j KUBE-NODEPORTS')
    head = ["*nat"] + [f":{c} - [0:0]" for c in chains]
    return "\n".join(head + lines + tail + ["COMMIT", ""])


def program(node: Node, services: Sequence[ServicePort]) -> None:
    """Replace the node's nat table with kube-proxy's rules for `services`."""
    node.ns.run("iptables-restore", input=rules(node.name, services))
