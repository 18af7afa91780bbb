"""The speaker's Prometheus metrics, served with `--metrics-address HOST:PORT`.

They live in prometheus_client's default registry, with the process and
platform collectors.  The L2 announcer's counts, read at each scrape
(L2Counters): skein_speaker_l2_replies_total{interface,family}: ARP replies and
Neighbor Advertisements sent; skein_speaker_l2_gratuitous_total;
skein_speaker_l2_rate_limited_total{interface}; skein_speaker_l2_conflicts_total
{interface,family}: frames in which another host claimed an address this node
announces.  Set from the daemon's event bus after every reconcile and every
second:

- skein_speaker_sessions_up{kind}: established BGP sessions (kind="bgp") and
  other speakers alive in the liveness protocol (kind="member");
- skein_speaker_prefixes_announced{mode}: addresses this node announces, by
  mechanism ("l2", "bgp").

And MetalLB's, with MetalLB's names, labels and meanings (MetalLBMetrics, set
from the daemon by the same listener mechanism):

- metallb_bgp_session_up{peer}: 1 while the session is Established;
- metallb_bgp_updates_total{peer}: UPDATE messages sent (when the BGP session
  counts them: `updates_out` of speaker.bgp.peer.Peer);
- metallb_bgp_announced_prefixes_total{peer}: prefixes advertised on the
  session (0 while it is down); metallb_bgp_pending_prefixes_total{peer}: the
  prefixes that should be;
- metallb_speaker_announced{protocol,service,node,ip}: 1 per Service address
  this node announces ("layer2" or "bgp").

`peer` is "ADDRESS:PORT" as MetalLB's native speaker writes it.  A session
removed loses its series, as in MetalLB.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from foundation import metrics as metrics_server
from speaker.api.events import Observation
from speaker.api.peer_status import BGP, MEMBER, PeerStatus
from speaker.l2.announcer import CONFLICTS, GRATUITOUS, RATE_LIMITED, REPLIES, L2Announcer
from speaker.plan import Announcement

if TYPE_CHECKING:
    from speaker.daemon import Announcer, Daemon

SESSIONS_UP = Gauge("skein_speaker_sessions_up", "BGP sessions established (kind=bgp) and "
                    "other speakers alive (kind=member)", ["kind"])
PREFIXES_ANNOUNCED = Gauge("skein_speaker_prefixes_announced", "Addresses this node "
                           "announces, by mechanism", ["mode"])


_L2_COUNTERS = {  # L2Announcer.counts' counters: help, label names
    REPLIES: ("ARP replies and Neighbor Advertisements sent in answer to requests",
              ("interface", "family")),
    GRATUITOUS: ("Gratuitous ARPs and unsolicited Neighbor Advertisements sent",
                 ("interface", "family")),
    RATE_LIMITED: ("Requests left unanswered by the per-source rate limit", ("interface",)),
    CONFLICTS: ("Frames in which another host claimed an address this node announces",
                ("interface", "family")),
}


class L2Counters(Collector):
    """An L2 announcer's counts, as counters read at each scrape."""

    def __init__(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        families = {name: CounterMetricFamily(f"skein_speaker_l2_{name}", text, labels=labels)
                    for name, (text, labels) in _L2_COUNTERS.items()}
        # A copy made in C, so whole under the GIL: the loop's thread counts on.
        for (name, interface, family), value in dict(self.counts).items():
            families[name].add_metric([interface, family] if family else [interface], value)
        yield from families.values()


class SpeakerMetrics:
    """Listener of the daemon's event bus: `daemon.events.listeners.append(metrics.observe)`."""

    def __init__(self, announcers: Iterable[Announcer]) -> None:
        announcers = list(announcers)
        self.modes = {a.kind for a in announcers}
        for announcer in announcers:
            if isinstance(announcer, L2Announcer):
                REGISTRY.register(L2Counters(announcer.counts))
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
        counts.update(obs.modes)
        self.modes |= counts.keys()
        for mode, count in counts.items():
            PREFIXES_ANNOUNCED.labels(mode).set(count)


def serve(address: str) -> tuple[str, int]:
    """Serve /metrics on `address` ("HOST:PORT", port 0: any free one); the bound address."""
    return metrics_server.serve(address)


# -- MetalLB's names and meanings, so its dashboards and alerts work unchanged --------------

# Per BGP session, labelled peer="ADDRESS:PORT" as MetalLB's native speaker does.
BGP_SESSION_UP = Gauge("metallb_bgp_session_up", "BGP session state (1 is up, 0 is down)",
                       ["peer"])
BGP_UPDATES = Counter("metallb_bgp_updates", "Number of BGP UPDATE messages sent", ["peer"])
BGP_ANNOUNCED = Gauge("metallb_bgp_announced_prefixes_total",
                      "Number of prefixes currently being advertised on the BGP session",
                      ["peer"])
BGP_PENDING = Gauge("metallb_bgp_pending_prefixes_total",
                    "Number of prefixes that should be advertised on the BGP session", ["peer"])
ANNOUNCED = Gauge("metallb_speaker_announced", "Services being announced from this node "
                  "(1), by protocol, service, node and address",
                  ["protocol", "service", "node", "ip"])
PROTOCOLS = {"l2": "layer2", "bgp": "bgp"}


def peer_label(status: PeerStatus) -> str:
    """MetalLB's: the peer's address and port joined by a colon (IPv6 unbracketed)."""
    return f"{status.name}:{status.peer_port}"


@dataclass(frozen=True)
class PeerSample:
    label: str
    up: bool
    prefixes: int  # in the Adj-RIB-Out: sent once the session is up
    updates_sent: int | None  # cumulative, None where the session does not count them


def peer_samples(statuses: Iterable[PeerStatus],
                 updates: Mapping[str, int | None]) -> list[PeerSample]:
    """The per-peer series of BGP sessions (`updates`: peer address -> UPDATEs sent)."""
    return [PeerSample(peer_label(s), s.up, s.prefixes_advertised, updates.get(s.name))
            for s in statuses if s.kind == BGP]


def announced_samples(node: str, desired: Iterable[Announcement]
                      ) -> set[tuple[str, str, str, str]]:
    """(protocol, service, node, ip) of every Service address this node announces."""
    return set(_labels(node, desired))


def _labels(node: str, entries: Iterable[Announcement]) -> Iterator[tuple[str, str, str, str]]:
    for a in entries:
        for service in a.services:
            yield PROTOCOLS.get(a.kind, a.kind), service, node, str(a.address)


Label = tuple[str, str, str, str]


class MetalLBMetrics:
    """Sets MetalLB's series from the daemon: `observe(daemon)` after every reconcile
    and every second (the event bus's listeners)."""

    def __init__(self) -> None:
        self._peers: dict[str, int] = {}  # label -> UPDATEs counted so far
        # How many plan entries give each announced series (one address may be
        # announced by several entries, as with per-peer BGP attributes).
        self._held: collections.Counter[Label] = collections.Counter()
        self._desired: object = None  # the plan `_held` was made from

    def observe(self, daemon: Daemon) -> None:
        from speaker.api.view import bgp_peers

        bgp = daemon.announcer("bgp")
        sessions = getattr(getattr(bgp, "speaker", None), "peers", None) or {}
        updates = {str(k): _updates_out(p) for k, p in dict(sessions).items()}
        self.record_peers(peer_samples(bgp_peers(daemon), updates))
        # Every second with the same plan: the address series are left as they are;
        # the daemon's change from the plan seen last: only the entries it moved.
        desired, change = daemon.desired, daemon.last_change
        if desired is self._desired:
            return
        if change is not None and change[0] is self._desired and change[1] is desired:
            self.changed(daemon.node, change[2], change[3])
        else:
            self._replace(collections.Counter(_labels(daemon.node, desired)))
        self._desired = desired

    def record(self, samples: Sequence[PeerSample], announced: set[Label]) -> None:
        self.record_peers(samples)
        self._replace(collections.Counter(announced))

    def record_peers(self, samples: Sequence[PeerSample]) -> None:
        seen = set()
        for s in samples:
            seen.add(s.label)
            BGP_SESSION_UP.labels(s.label).set(1 if s.up else 0)
            # As MetalLB: what the router holds from us, i.e. nothing while down.
            BGP_ANNOUNCED.labels(s.label).set(s.prefixes if s.up else 0)
            BGP_PENDING.labels(s.label).set(s.prefixes)
            counted = self._peers.setdefault(s.label, 0)
            if s.updates_sent is not None:
                # A session re-created starts from zero again: count on from there.
                more = s.updates_sent - counted if s.updates_sent >= counted else s.updates_sent
                if more:
                    BGP_UPDATES.labels(s.label).inc(more)
                self._peers[s.label] = s.updates_sent
        for label in set(self._peers) - seen:
            del self._peers[label]
            for metric in (BGP_SESSION_UP, BGP_UPDATES, BGP_ANNOUNCED, BGP_PENDING):
                with contextlib.suppress(KeyError):
                    metric.remove(label)

    def changed(self, node: str, added: Iterable[Announcement],
                removed: Iterable[Announcement]) -> None:
        """The series after these plan entries came and went."""
        held = self._held
        gone, fresh = set(), set()
        for label in _labels(node, removed):
            held[label] -= 1
            if held[label] <= 0:
                del held[label]
                gone.add(label)
        for label in _labels(node, added):
            if not held[label]:
                fresh.add(label)
            held[label] += 1
        self._show(gone - fresh, fresh - gone)

    def _replace(self, held: collections.Counter[Label]) -> None:
        before, self._held = self._held, held
        self._show(before.keys() - held.keys(), held.keys() - before.keys())

    @staticmethod
    def _show(gone: Iterable[Label], fresh: Iterable[Label]) -> None:
        for labels in gone:
            with contextlib.suppress(KeyError):
                ANNOUNCED.remove(*labels)
        # A series keeps its value until removed: only the new ones are set.
        for labels in fresh:
            ANNOUNCED.labels(*labels).set(1)


def _updates_out(peer: Any) -> int | None:
    value = getattr(peer, "updates_out", None)
    return value if isinstance(value, int) else None
