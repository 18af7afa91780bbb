"""Which other nodes this node tunnels to, from the cluster's Node objects.

Pure.  Bad peer data must never take the overlay down: an entry that cannot be
used (no InternalIP, no podCIDR, a subnet that overlaps ours or another
node's, an address two nodes claim) is reported as a problem and skipped, and
every other peer is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from foundation.addresses import IPNetwork
from foundation.kube.model.node import Node


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


def select_peers(nodes: Iterable[Node], self_name: str,
                 established: frozenset[tuple[str, str]] = frozenset()) -> Topology:
    """Peers for node `self_name`.  `established` holds the (pod subnet, VTEP
    MAC) pairs the kernel already tunnels to (read back from it, so it
    survives a restart)."""
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

    # Two peers that overlap or share an address: one of them is wrong.  The
    # one this agent already tunnels to keeps its place (a newcomer must not cut
    # a working node off); between two newcomers the first by name wins, so
    # every agent decides the same way.
    kept: list[Peer] = []
    def in_use(peer: Peer) -> bool:
        return any((str(cidr), peer.vtep_mac) in established for cidr in peer.pod_cidrs)

    for peer in sorted(candidates, key=lambda p: (not in_use(p), p.name)):
        rival = next((k for k in kept if _conflict(k, peer)), None)
        if rival is None:
            kept.append(peer)
        else:
            problems.append(f"node {peer.name}: podCIDR, InternalIP or VTEP MAC conflicts "
                            f"with node {rival.name}; skipped")
    return Topology(own, tuple(sorted(kept, key=lambda p: p.name)), tuple(problems))


def _conflict(a: Peer, b: Peer) -> bool:
    return (any(_overlaps(x, y) for x in a.pod_cidrs for y in b.pod_cidrs)
            or a.underlay_ip == b.underlay_ip or a.vtep_mac == b.vtep_mac)
