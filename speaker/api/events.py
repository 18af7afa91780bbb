"""The daemon's event bus: what changed, for `WatchEvents` and the metrics.

The daemon calls `observe(daemon)` after every reconcile (and the API calls it
every second, for BGP session changes, which do not wake the daemon).  It
compares what it sees with the last observation and publishes:

    announce / withdraw  this node started / stopped announcing an address
    owner                an L2 address's elected owner changed
    peer                 a BGP session or a member speaker changed state
    conflict             another host claimed an address this node announces
                         (published by the daemon as it happens, not observed)

Owners, and the set of announced addresses, are worked out only while someone
watches (each costs a plan's worth of work); listeners (the metrics) get every
`Observation` regardless, with the announced addresses counted per mode.  A
subscriber that does not keep up (`queue_size` events behind) is dropped with
`lost` set, rather than holding memory or blocking the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from foundation.sequences import identity_delta
from speaker.api import view
from speaker.api.peer_status import PeerStatus
from speaker.api.view import RouteView

if TYPE_CHECKING:
    from speaker.daemon import Daemon
    from speaker.plan import Announcement

log = logging.getLogger("speaker.api")

ANNOUNCE, WITHDRAW, OWNER, PEER, SYNCED = "announce", "withdraw", "owner", "peer", "synced"
CONFLICT = "conflict"


@dataclass(frozen=True)
class Event:
    kind: str
    time: float = field(default_factory=time.time)
    address: str = ""
    mode: str = ""
    owner: str = ""
    previous_owner: str = ""
    peer: PeerStatus | None = None
    previous_state: str = ""
    initial: bool = False
    interface: str = ""  # conflict: where the claim was seen
    mac: str = ""  # conflict: the claimant's MAC
    detail: str = ""  # conflict: the kind of frame


@dataclass(frozen=True)
class Observation:
    peers: dict[tuple[str, str], PeerStatus]
    # (address, mode) announced by this node; None when nobody watches (a set of
    # every announced address for each change costs a plan's worth at scale).
    local: frozenset[tuple[str, str]] | None
    owners: dict[str, str] | None  # L2 address -> owner; None when nobody watches
    modes: dict[str, int] = field(default_factory=dict)  # announced addresses per mode


class Subscription:
    def __init__(self, bus: EventBus, queue_size: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)
        self.lost = False

    def put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost = True
            self._bus.unsubscribe(self)
            self.queue.get_nowait()  # room for the end marker
            self.queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event; None once dropped for falling behind."""
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, queue_size: int = 4096) -> None:
        self.queue_size = queue_size
        self.listeners: list[Callable[[Observation], None]] = []
        self.alive_since: dict[str, float] = {}  # member speaker -> monotonic time seen alive
        self._subscribers: set[Subscription] = set()
        self._last: Observation | None = None
        # What `local` was made from, to update it by the entries that changed.
        self._desired: Sequence[Announcement] = ()
        self._counts: dict[tuple[str, str], int] = {}
        self._modes: dict[str, int] = {}  # distinct (address, mode) keys per mode
        self._local: frozenset[tuple[str, str]] | None = frozenset()  # None: not made yet

    def subscribe(self, daemon: Daemon) -> Subscription:
        sub = Subscription(self, self.queue_size)
        if not self._subscribers:
            self._last = self._observe(daemon, watched=True)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.put(event)

    def current(self, daemon: Daemon) -> Iterator[Event]:
        """The present state as events (initial=True): members, sessions, owners, announcements."""
        obs = self._observe(daemon, watched=True)
        for peer in obs.peers.values():
            yield Event(PEER, peer=peer, initial=True)
        for address, owner in (obs.owners or {}).items():
            yield Event(OWNER, address=address, mode="l2", owner=owner, initial=True)
        for address, mode in sorted(obs.local or ()):
            yield Event(ANNOUNCE, address=address, mode=mode, owner=daemon.node, initial=True)

    def observe(self, daemon: Daemon) -> None:
        """Publish what changed since the last call; never raises (the daemon's loop calls it)."""
        try:
            self._publish_changes(daemon)
        except Exception:  # noqa: BLE001 - events must not stop announcing
            log.exception("event bus: cannot observe the daemon")

    def _publish_changes(self, daemon: Daemon) -> None:
        obs = self._observe(daemon, watched=bool(self._subscribers))
        if self._subscribers and self._last is not None:
            for event in diff(self._last, obs, daemon.node):
                self.publish(event)
        self._last = obs
        for listener in self.listeners:
            listener(obs)

    def _observe(self, daemon: Daemon, watched: bool) -> Observation:
        """What the daemon does now; owners and the announced set only when `watched`."""
        alive = view.live(daemon) - {daemon.node}
        now = time.monotonic()
        for name in alive - self.alive_since.keys():
            self.alive_since[name] = now
        for name in self.alive_since.keys() - alive:
            del self.alive_since[name]
        peers = {p.key: p for p in view.peers(daemon, self.alive_since)}
        routes: list[RouteView] | None = view.routes(daemon) if watched else None
        self._follow(daemon.desired, daemon.last_change)
        return Observation(peers, self._local_announcements() if watched else None,
                           None if routes is None else view.owners(routes), dict(self._modes))

    def _follow(self, desired: Sequence[Announcement],
                change: tuple[Sequence[Announcement], Sequence[Announcement],
                              Sequence[Announcement], Sequence[Announcement]]
                | None = None) -> None:
        """Count what `desired` announces, updated by the entries that changed since
        the last call (the daemon's plans keep unchanged entries as the same
        objects): this runs every second, and converting every address to text
        would cost a plan's worth.  `change` (before, after, added, removed), the
        daemon's last, is used when it leads from the list seen last to `desired`;
        else the two lists are compared."""
        if desired is self._desired:
            return
        if change is not None and change[0] is self._desired and change[1] is desired:
            added, removed = change[2], change[3]
        else:
            added, removed = identity_delta(self._desired, desired)
        counts, modes = self._counts, self._modes
        for sign, entries in ((1, added), (-1, removed)):
            for a in entries:
                key = (str(a.address), a.kind)
                count = counts.get(key, 0) + sign
                if count:
                    counts[key] = count
                else:
                    del counts[key]
                if count == (1 if sign > 0 else 0):  # the key came or went
                    modes[a.kind] = modes.get(a.kind, 0) + sign
                    if not modes[a.kind]:
                        del modes[a.kind]
        self._desired = desired
        self._local = None

    def _local_announcements(self) -> frozenset[tuple[str, str]]:
        """view.local_announcements: the keys counted, as a set made once per change."""
        if self._local is None:
            self._local = frozenset(self._counts)
        return self._local


def diff(old: Observation, new: Observation, node: str) -> list[Event]:
    events = []
    for key, peer in new.peers.items():
        before = old.peers.get(key)
        if before is None or before.state != peer.state:
            events.append(Event(PEER, peer=peer, previous_state=before.state if before else ""))
    for key, peer in old.peers.items():
        if key not in new.peers:
            events.append(Event(PEER, peer=PeerStatus(peer.kind, peer.name, "removed"),
                                previous_state=peer.state))
    if old.owners is not None and new.owners is not None:
        for address in sorted(old.owners.keys() | new.owners.keys()):
            was, now = old.owners.get(address, ""), new.owners.get(address, "")
            if was != now:
                events.append(Event(OWNER, address=address, mode="l2", owner=now,
                                    previous_owner=was))
    if old.local is not None and new.local is not None:
        for address, mode in sorted(old.local - new.local):
            events.append(Event(WITHDRAW, address=address, mode=mode, owner=node))
        for address, mode in sorted(new.local - old.local):
            events.append(Event(ANNOUNCE, address=address, mode=mode, owner=node))
    return events
