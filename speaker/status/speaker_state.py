"""The speaker's account of itself (its gRPC API) as a `SpeakerState`.

Why separate from collect.py: the kernel cannot tell which LoadBalancer addresses a
node answers ARP for (the speaker answers from user space) nor what a BGP session is
doing; only the speaker knows.  `from_api` converts the API's two list responses
(speaker/api/skein.proto: ListPeers, ListAnnouncements); it reads attributes only,
so it is tested with plain objects and used with the generated messages alike.
"""

from __future__ import annotations

from typing import Any

from speaker.status.model import BgpSession, LbAddress, SpeakerState


def from_api(source: str, peers: Any, announcements: Any) -> SpeakerState:
    """This node's announcements (those with `local` set) and its BGP sessions
    (peers of kind "bgp"; the liveness members are not sessions)."""
    local = sorted((a for a in announcements.announcements if a.local),
                   key=lambda a: (a.mode, a.address))
    sessions = sorted((p for p in peers.peers if p.kind == "bgp"), key=lambda p: p.name)
    return SpeakerState(
        source=source,
        announcements=tuple(LbAddress(a.address, a.mode, tuple(a.services),
                                      tuple(a.interfaces)) for a in local),
        sessions=tuple(BgpSession(p.name, int(p.peer_asn), int(p.local_asn), p.state,
                                  float(p.uptime_seconds) if p.has_uptime else None,
                                  int(p.prefixes_advertised)) for p in sessions))


def unreachable(source: str, reason: str) -> SpeakerState:
    return SpeakerState(source=f"{source}: {reason}", reachable=False)
