"""What the API shows about a running speaker, read from its `Daemon` (no gRPC here).

Peers, each a `speaker.api.peer_status.PeerStatus`, are of two kinds:
  - "bgp": the BGP sessions of any announcer that reports them, i.e. one with a
    `status()` method returning them (as `BgpSpeaker.status()` does) or a
    `speaker` attribute that has one;
  - "member": the other speakers of the liveness protocol (the Node objects'
    names), "alive" or "dead", with the time this speaker has seen them alive.

Announcements ("routes") are every L2 address of the cluster with its elected
owner (the same election every speaker runs, so any node answers alike), plus
whatever else this node announces (BGP, addresses announced by hand).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from speaker.api.peer_status import ALIVE, DEAD, MEMBER, PeerStatus
from speaker.plan import L2, l2_addresses

if TYPE_CHECKING:
    from speaker.daemon import Daemon


@dataclass(frozen=True)
class RouteView:
    address: str
    mode: str
    owner: str  # "" when no live node may announce it
    local: bool
    manual: bool = False
    services: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()


def live(daemon: Daemon) -> frozenset[str]:
    """The live speakers as the daemon's election sees them (nobody before the first view)."""
    return daemon.liveness.live() if daemon.liveness.ready else frozenset()


def member_peers(daemon: Daemon, alive_since: Mapping[str, float]) -> list[PeerStatus]:
    """The other speakers; `alive_since`: name -> time.monotonic() they were first seen alive."""
    now = time.monotonic()
    out = []
    for node in sorted(daemon.state.nodes, key=lambda n: n.name):
        if node.name == daemon.node:
            continue
        since = alive_since.get(node.name)
        out.append(PeerStatus(MEMBER, node.name, DEAD if since is None else ALIVE,
                              None if since is None else now - since,
                              addresses=tuple(str(a) for a in node.internal_ips)))
    return out


def bgp_peers(daemon: Daemon) -> list[PeerStatus]:
    out: list[PeerStatus] = []
    for announcer in daemon.announcers:
        source: Any = announcer
        if not callable(getattr(source, "status", None)):
            source = getattr(announcer, "speaker", None)
        if source is not None and callable(getattr(source, "status", None)):
            out.extend(source.status())
    return out


def peers(daemon: Daemon, alive_since: Mapping[str, float]) -> list[PeerStatus]:
    return [*bgp_peers(daemon), *member_peers(daemon, alive_since)]


def local_announcements(daemon: Daemon) -> frozenset[tuple[str, str]]:
    """(address, mode) of everything this node announces now."""
    return frozenset((str(a.address), a.kind) for a in daemon.desired)


def routes(daemon: Daemon) -> list[RouteView]:
    """Every L2 address with its owner, then what else this node announces."""
    alive = live(daemon)
    manual = {str(a) for a in daemon.manual.addresses}
    local = local_announcements(daemon)
    out: list[RouteView] = []
    seen: set[tuple[str, str]] = set()
    for view in l2_addresses(daemon.state, daemon.lb_class):
        owner = view.owner(alive) or ""
        key = (str(view.address), L2)
        seen.add(key)
        out.append(RouteView(key[0], L2, owner, key in local, key[0] in manual, view.services,
                             tuple(view.eligible.get(owner, ()))))
    for ann in daemon.desired:
        key = (str(ann.address), ann.kind)
        if key not in seen:
            out.append(RouteView(key[0], ann.kind, daemon.node, True, key[0] in manual,
                                 ann.services, ann.interfaces))
    return out


def owners(routes: Iterable[RouteView]) -> dict[str, str]:
    """L2 address -> owner ("" for none)."""
    return {r.address: r.owner for r in routes if r.mode == L2}
