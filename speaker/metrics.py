"""The speaker's Prometheus metrics, served with `--metrics-address HOST:PORT`.

They live in prometheus_client's default registry, where the L2 announcer's
counters already are (skein_speaker_l2_replies_total{interface,family}: ARP
replies and Neighbor Advertisements sent; skein_speaker_l2_gratuitous_total;
skein_speaker_l2_rate_limited_total; skein_speaker_l2_conflicts_total
{interface,family}: frames in which another host claimed an address this node
announces), with the process and platform collectors.  Added here, set from
the daemon's event bus after every reconcile and every second:

- skein_speaker_sessions_up{kind}: established BGP sessions (kind="bgp") and
  other speakers alive in the liveness protocol (kind="member");
- skein_speaker_prefixes_announced{mode}: addresses this node announces, by
  mechanism ("l2", "bgp").
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Gauge, start_http_server

from speaker.api.events import Observation
from speaker.api.peer_status import BGP, MEMBER
from speaker.controller.metrics import parse_listen_address

SESSIONS_UP = Gauge("skein_speaker_sessions_up", "BGP sessions established (kind=bgp) and "
                    "other speakers alive (kind=member)", ["kind"])
PREFIXES_ANNOUNCED = Gauge("skein_speaker_prefixes_announced", "Addresses this node "
                           "announces, by mechanism", ["mode"])


class SpeakerMetrics:
    """Listener of the daemon's event bus: `daemon.events.listeners.append(metrics.observe)`."""

    def __init__(self, modes: Iterable[str]) -> None:
        self.modes = set(modes)
        for kind in (BGP, MEMBER):
            SESSIONS_UP.labels(kind).set(0)
        for mode in self.modes:
            PREFIXES_ANNOUNCED.labels(mode).set(0)

    def observe(self, obs: Observation) -> None:
        up = {BGP: 0, MEMBER: 0}
        for peer in obs.peers.values():
            up[peer.kind] = up.get(peer.kind, 0) + peer.up
        for kind, count in up.items():
            SESSIONS_UP.labels(kind).set(count)
        counts = dict.fromkeys(self.modes, 0)
        for _address, mode in obs.local:
            counts[mode] = counts.get(mode, 0) + 1
        self.modes |= counts.keys()
        for mode, count in counts.items():
            PREFIXES_ANNOUNCED.labels(mode).set(count)


def serve(address: str) -> tuple[str, int]:
    """Serve /metrics on `address` ("HOST:PORT", port 0: any free one); the bound address."""
    host, port = parse_listen_address(address)
    server, _thread = start_http_server(port, host)
    bound = server.server_address
    return str(bound[0]), int(bound[1])
