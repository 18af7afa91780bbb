"""From peers to kernel entries, and from kernel entries to the changes needed.

Pure.  For every peer and each of its pod subnets the overlay needs, as in
flannel's vxlan backend:

  neighbour  peer VTEP address (subnet's .0) -> peer VTEP MAC   on the vxlan device
  FDB        peer VTEP MAC -> peer underlay IP                    on the vxlan device
  route      peer subnet via peer VTEP address, onlink           on the vxlan device

Ownership: routes and neighbour entries the agent writes carry its protocol
number (RTPROT_SKEIN); an FDB entry cannot carry one, so an FDB entry is the
agent's when its MAC is the MAC of one of its neighbour entries.  Only owned
entries are ever removed.  Changes are ordered so that an agent killed between
any two of them leaves entries it will still recognise as its own: add
neighbour, then FDB, then route; remove route, then FDB, then neighbour.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cni_plugin.agent.peers import Peer


@dataclass(frozen=True, order=True)
class Neigh:
    address: str
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    mac: str
    dst: str


@dataclass(frozen=True, order=True)
class Route:
    dst: str
    via: str


@dataclass(frozen=True)
class Entries:
    neighs: frozenset[Neigh] = frozenset()
    fdbs: frozenset[Fdb] = frozenset()
    routes: frozenset[Route] = frozenset()


@dataclass(frozen=True)
class Action:
    op: str  # "add" (add or replace) or "del"
    entry: Neigh | Fdb | Route


def vtep_address(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A node's VTEP address: the network address of its pod subnet (as flannel
    does), so routes to a peer's subnet go 'via' its .0."""
    return str(cidr.network_address)


def desired_entries(peers: Iterable[Peer]) -> Entries:
    neighs, fdbs, routes = set(), set(), set()
    for peer in peers:
        fdbs.add(Fdb(peer.vtep_mac, peer.underlay_ip))
        for cidr in peer.pod_cidrs:
            neighs.add(Neigh(vtep_address(cidr), peer.vtep_mac))
            routes.add(Route(str(cidr), vtep_address(cidr)))
    return Entries(frozenset(neighs), frozenset(fdbs), frozenset(routes))


def owned_fdbs(fdbs: Iterable[Fdb], owned_neighs: Iterable[Neigh],
               desired: Entries) -> frozenset[Fdb]:
    """FDB entries that are ours: their MAC is one of our neighbour entries'
    (or one we are about to program, so a wrong `dst` gets corrected)."""
    macs = {n.mac for n in owned_neighs} | {f.mac for f in desired.fdbs}
    return frozenset(f for f in fdbs if f.mac in macs)


def diff(desired: Entries, observed: Entries) -> list[Action]:
    """The ordered changes that turn `observed` (our entries only) into `desired`."""
    actions: list[Action] = []
    # A route or neighbour whose key stays desired is replaced in place by its
    # "add" below, never deleted first: that would drop packets in between.
    for route in sorted(observed.routes - desired.routes):
        if route.dst not in {r.dst for r in desired.routes}:
            actions.append(Action("del", route))
    for fdb in sorted(observed.fdbs - desired.fdbs):
        actions.append(Action("del", fdb))
    for neigh in sorted(observed.neighs - desired.neighs):
        if neigh.address not in {n.address for n in desired.neighs}:
            actions.append(Action("del", neigh))
    for neigh in sorted(desired.neighs - observed.neighs):
        actions.append(Action("add", neigh))
    for fdb in sorted(desired.fdbs - observed.fdbs):
        actions.append(Action("add", fdb))
    for route in sorted(desired.routes - observed.routes):
        actions.append(Action("add", route))
    return actions
