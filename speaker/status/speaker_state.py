"""The speaker's account of itself (its gRPC API) as a `SpeakerState`.

Why separate from collect.py: the kernel cannot tell which LoadBalancer addresses a
node answers ARP for (the speaker answers from user space) nor what a BGP session is
doing; only the speaker knows.  `from_api` converts the API's two list responses
(speaker/api/skein.proto: ListPeers, ListAnnouncements); it reads attributes only,
so it is tested with plain objects and used with the generated messages alike.
"""

from __future__ import annotations

import os
from typing import Any

from speaker.api.client import Endpoint
from speaker.api.peer_status import BGP, PeerStatus
from speaker.status.model import LbAddress, SpeakerState


def from_api(source: str, peers: Any, announcements: Any) -> SpeakerState:
    """This node's announcements (those with `local` set) and its BGP sessions
    (peers of kind "bgp"; the liveness members are not sessions)."""
    local = sorted((a for a in announcements.announcements if a.local),
                   key=lambda a: (a.mode, a.address))
    sessions = sorted((PeerStatus.from_message(p) for p in peers.peers if p.kind == BGP),
                      key=lambda p: p.name)
    return SpeakerState(
        source=source,
        announcements=tuple(LbAddress(a.address, a.mode, tuple(a.services),
                                      tuple(a.interfaces)) for a in local),
        sessions=tuple(sessions))


IN_CLUSTER_HINT = ("in a cluster, run skeinctl in the node's skein-node pod: kubectl -n "
                   "skein-system exec POD -c skein-agent -- skeinctl ...")


def unreachable_reason(details: str | None) -> str:
    """gRPC's account of a failed connection, as the one fact a person needs:
    "failed to connect to all addresses; last error: UNKNOWN: unix:/run/s.sock: No such
    file or directory" -> "No such file or directory"."""
    text = " ".join(str(details or "").split())
    if "last error:" in text:
        text = text.rsplit("last error:", 1)[1]
    parts = [p.strip() for p in text.split(": ") if p.strip()]
    while len(parts) > 1 and (parts[0].isupper() or parts[0].startswith(
            ("unix:", "ipv4:", "ipv6:", "dns:", "Failed to connect"))):
        parts.pop(0)
    return ": ".join(parts) or "no answer"


def unreachable_message(endpoint: Endpoint, details: str | None) -> str:
    """One line: where, why, and what to try."""
    where = endpoint.address or f"unix:{endpoint.socket}"
    reason = unreachable_reason(details)
    hint = ""
    if endpoint.address is None:
        try:
            os.stat(endpoint.socket)
        except PermissionError:
            reason = "Permission denied"  # a directory on the way is closed to us
        except OSError:
            reason = "No such file or directory"
        if reason == "No such file or directory":
            hint = ("; is skein-speaker running on this node? Its socket: --socket PATH; "
                    f"{IN_CLUSTER_HINT}")
        elif "permission denied" in reason.lower():
            hint = " (the socket is for root only)"
        elif "refused" in reason.lower():
            hint = "; nothing listens there: has skein-speaker stopped?"
    return f"cannot reach the speaker at {where}: {reason}{hint}"


def unreachable(source: str, reason: str) -> SpeakerState:
    return SpeakerState(source=f"{source}: {reason}", reachable=False)


def fetch(endpoint: Any, node: str | None = None, timeout: float = 5.0) -> SpeakerState:
    """Ask the speaker at `endpoint` (a speaker.api.client.Endpoint); a speaker that
    cannot be reached, or that answers for another node than `node`, is reported as
    such rather than failing the whole status."""
    import grpc

    from speaker.api.client import connect
    from speaker.api.stubs import pb

    where = endpoint.address or f"unix:{endpoint.socket}"
    try:
        with connect(endpoint) as stub:
            peers = stub.ListPeers(pb.ListPeersRequest(), timeout=timeout)
            announcements = stub.ListAnnouncements(pb.ListAnnouncementsRequest(),
                                                   timeout=timeout)
    except grpc.RpcError as exc:
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return unreachable(where, f"no answer within {timeout:g} s")
        message = unreachable_message(endpoint, details)
        return unreachable(where, message.split(f"{where}: ", 1)[-1])
    except (OSError, ValueError) as exc:
        return unreachable(where, str(exc))
    if node is not None and peers.node != node:
        return unreachable(where, f"this speaker is node {peers.node}'s, not {node}'s")
    return from_api(f"speaker API {where}", peers, announcements)
