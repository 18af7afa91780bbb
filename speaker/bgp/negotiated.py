"""What both ends of a session agreed on in their OPENs (RFC 4271 §4.2, RFC 5492).

One object is handed to every encoder and decoder whose wire format depends on the
session (ExaBGP's `negotiated`): the AS number width of RFC 6793 today, whatever
comes next without a new boolean threaded through every call.  `ASSUMED` stands in
before the OPEN exchange and for codec use outside a session.
"""

from __future__ import annotations

from dataclasses import dataclass

from speaker.bgp.capabilities import GracefulRestart
from speaker.bgp.nlri import IPV4_UNICAST, IPV6_UNICAST, Family
from speaker.bgp.open import Open


@dataclass(frozen=True)
class Negotiated:
    four_octet_as: bool = True
    families: frozenset[Family] = frozenset({IPV4_UNICAST, IPV6_UNICAST})
    peer_as: int = 0
    peer_router_id: str = ""
    hold_time: int = 0
    keepalive_time: int = 0
    route_refresh: bool = False
    peer_graceful_restart: GracefulRestart | None = None
    peer_open: Open | None = None


ASSUMED = Negotiated()
TWO_OCTET_AS = Negotiated(four_octet_as=False)
