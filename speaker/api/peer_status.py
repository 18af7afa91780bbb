"""The status of one peer of a speaker: the one type behind `skeinctl peers`, the
API's `Peer` message, its events and the metrics, and what a BGP session reports
about itself (`speaker.bgp.peer.Peer.status`).

Kind "bgp" is a BGP session (`name`: the peer address); kind "member" is another
speaker of the liveness protocol (`name`: its node).  The fields up to `addresses`
are what the API carries (speaker/api/skein.proto); the rest are known only where
the session runs (the BGP runner's `status`, the daemon's logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BGP, MEMBER = "bgp", "member"
ESTABLISHED, ALIVE, DEAD = "Established", "alive", "dead"


@dataclass(frozen=True)
class PeerStatus:
    kind: str
    name: str
    state: str
    uptime: float | None = None  # in the current up state
    peer_asn: int = 0
    local_asn: int = 0
    last_error: str = ""
    prefixes_advertised: int = 0
    addresses: tuple[str, ...] = ()  # member: the node's InternalIPs
    peer_port: int = 179
    local_address: str | None = None
    peer_router_id: str | None = None
    hold_time: int | None = None
    keepalive_time: int | None = None
    established_since: float | None = None  # time.time() of the last Established
    families: tuple[str, ...] = ()
    peer_capabilities: tuple[str, ...] = ()
    messages_in: int = 0
    messages_out: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def up(self) -> bool:
        return self.state in (ALIVE, ESTABLISHED)

    @classmethod
    def from_message(cls, msg: Any) -> PeerStatus:
        """From the API's `Peer` message; reads attributes only, so plain objects do."""
        return cls(msg.kind, msg.name, msg.state,
                   float(msg.uptime_seconds) if msg.has_uptime else None,
                   int(msg.peer_asn), int(msg.local_asn), msg.last_error,
                   int(msg.prefixes_advertised), tuple(msg.addresses))
