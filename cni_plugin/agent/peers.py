"""Which other nodes this node tunnels to, from the cluster's Node objects.

Pure.  Bad peer data must never take the overlay down: an entry that cannot be
used (no InternalIP, no podCIDR, a subnet that overlaps ours or another
node's, an address two nodes claim) is reported as a problem and skipped, and
every other peer is kept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from speaker.model.node import Node

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    name: str
    underlay_ip: str
    vtep_mac: str
    pod_cidrs: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Topology:
    """This node's own subnets and its usable peers, plus what was skipped and why."""

    own_cidrs: tuple[IPNetwork, ...]
    peers: tuple[Peer, ...]
    problems: tuple[str, ...]


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


def select_peers(nodes: Iterable[Node], self_name: str) -> Topology:
    nodes = sorted(nodes, key=lambda n: n.name)
    me = next((n for n in nodes if n.name == self_name), None)
    problems: list[str] = []
    own: tuple[IPNetwork, ...] = me.pod_cidrs if me else ()
    if me is None:
        problems.append(f"node {self_name}: not found among the Node objects; "
                        "no own pod subnet (check --node)")
    candidates: list[Peer] = []
    for node in nodes:
        if node.name == self_name:
            continue
        underlay = node.internal_ipv4
        if underlay is None:
            problems.append(f"node {node.name}: no IPv4 InternalIP in status.addresses; skipped")
            continue
        if not node.pod_cidrs:
            problems.append(f"node {node.name}: no spec.podCIDR; skipped")
            continue
        clash = [str(c) for c in node.pod_cidrs for o in own if _overlaps(c, o)]
        if clash:
            problems.append(f"node {node.name}: podCIDR {', '.join(clash)} overlaps this node's "
                            "own subnet; skipped")
            continue
        if me is not None and me.internal_ipv4 == underlay:
            problems.append(f"node {node.name}: InternalIP {underlay} is this node's own; skipped")
            continue
        mac = node.vtep_mac
        assert mac is not None  # an IPv4 InternalIP always yields a derived MAC
        candidates.append(Peer(node.name, str(underlay), mac, node.pod_cidrs))

    # Two peers that overlap or share an address: neither can be trusted.
    bad: set[str] = set()
    for i, a in enumerate(candidates):
        for b in candidates[i + 1:]:
            if any(_overlaps(x, y) for x in a.pod_cidrs for y in b.pod_cidrs):
                problems.append(f"nodes {a.name} and {b.name}: overlapping podCIDRs; "
                                "both skipped")
                bad |= {a.name, b.name}
            elif a.underlay_ip == b.underlay_ip or a.vtep_mac == b.vtep_mac:
                problems.append(f"nodes {a.name} and {b.name}: same InternalIP or VTEP MAC; "
                                "both skipped")
                bad |= {a.name, b.name}
    peers = tuple(p for p in candidates if p.name not in bad)
    return Topology(own, peers, tuple(problems))
