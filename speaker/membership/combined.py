"""Heartbeats and Leases together: the `Liveness` of cluster mode.

Each alone has a flaw in a cluster.  Leases (speaker.membership.lease) agree
everywhere but notice a dead node only when its Lease expires, whole seconds
later.  Heartbeats (speaker.membership.udp) notice in `dead_after` (0.2 s) but
a healthy speaker whose datagrams are dropped (7946/udp closed between nodes
by a network policy or a security group) looks dead, and two nodes then both
answer for its addresses, for as long as the drop lasts.

So both run, and per peer:
- heartbeats heard within `dead_after`: alive (a datagram is proof of life);
- never heard from (heartbeats do not flow to this node): its Lease decides,
  exactly as Lease liveness would;
- heard before, silent now (or "leaving"): dead at once, UNLESS its Lease was
  seen renewed more than `grace` after the last heartbeat.  A dead node cannot
  renew, so a node that dies is out after `dead_after`; a live node whose
  heartbeats stopped arriving renews within a renew interval, and from then
  on its Lease decides again.  Two owners are therefore possible for at most
  about `grace` + a renew interval after heartbeats start being lost, never
  for the duration of the loss.  `grace` (default: the renew interval)
  covers a renewal that was already in flight when the node died.

This speaker counts itself alive while its own Lease is fresh or it hears any
peer: a node cut off from the API server but not from its peers keeps its
addresses (its peers hear it, so they would not take them over); one that can
neither renew nor hear anyone stops answering, as with Leases alone.

Ready when both are: the Leases listed and ours written, and one heartbeat
detection window passed.  RBAC: the Lease liveness's; network: UDP `port`
between the nodes' InternalIPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from foundation.kube.model.fields import IPAddress
from foundation.kube.sources.kube import KubeClient
from speaker.membership import OnChange
from speaker.membership.lease import DEFAULT_NAMESPACE, LeaseLiveness, LeaseView
from speaker.membership.udp import DEFAULT_PORT, UdpMembership, View

log = logging.getLogger("speaker.membership")

HEARD, LEASE, LEASE_AFTER_SILENCE, SILENT, EXPIRED = (
    "heartbeats", "its Lease (no heartbeat heard)", "its Lease (renewed after its heartbeats "
    "stopped)", "heartbeats stopped, Lease not renewed since", "no heartbeat, Lease expired")


def peer_verdicts(heartbeats: View, leases: LeaseView, now: float,
                  grace: float) -> dict[str, tuple[bool, str]]:
    """Member -> (alive, why) for every member but this speaker; pure."""
    fresh = leases.live(now)
    renewed: dict[str, float] = {}  # holder -> when its Lease was last seen to change
    for record in leases.records.values():
        renewed[record.holder] = max(renewed.get(record.holder, 0.0), record.observed)
    out: dict[str, tuple[bool, str]] = {}
    for name in heartbeats.members - {heartbeats.me}:
        peer = heartbeats.peers.get(name)
        if peer is not None and peer.alive:
            out[name] = (True, HEARD)
        elif name not in fresh:
            out[name] = (False, SILENT if peer is not None else EXPIRED)
        elif peer is None:
            out[name] = (True, LEASE)
        elif renewed.get(name, 0.0) > peer.last_heard + grace:
            out[name] = (True, LEASE_AFTER_SILENCE)
        else:
            out[name] = (False, SILENT)
    return out


def combined_live(heartbeats: View, leases: LeaseView, now: float,
                  grace: float) -> frozenset[str]:
    """The live set (this speaker included when it is alive; see the module docstring)."""
    verdicts = peer_verdicts(heartbeats, leases, now, grace)
    live = {name for name, (alive, _) in verdicts.items() if alive}
    me = heartbeats.me
    if me in leases.live(now) or any(why == HEARD for _, why in verdicts.values()):
        live.add(me)
    return frozenset(live)


class CombinedLiveness:
    """UDP heartbeats for speed, Leases for agreement (see the module docstring)."""

    def __init__(self, me: str, client: KubeClient, *, namespace: str = DEFAULT_NAMESPACE,
                 duration: int = 4, renew_interval: float = 1.0, port: int = DEFAULT_PORT,
                 interval: float = 0.05, dead_after: float = 0.2,
                 grace: float | None = None, bind: str | None = None) -> None:
        self.me = me
        self.leases = LeaseLiveness(me, client, namespace=namespace, duration=duration,
                                    renew_interval=renew_interval)
        self.heartbeats = UdpMembership(me, port=port, interval=interval,
                                        dead_after=dead_after, bind=bind)
        self.grace = renew_interval if grace is None else grace
        self._live: frozenset[str] = frozenset()
        self._why: dict[str, str] = {}
        self._on_change: OnChange | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.leases.ready and self.heartbeats.ready

    def set_members(self, members: Mapping[str, tuple[IPAddress, ...]]) -> None:
        self.heartbeats.set_members(members)
        self.leases.set_members(members)
        self._update()

    def live(self) -> frozenset[str]:
        return self._live

    def verdicts(self) -> dict[str, tuple[bool, str]]:
        """Member -> (alive, why), for logs and status."""
        return peer_verdicts(self.heartbeats.view, self.leases.view, time.monotonic(),
                             self.grace)

    async def start(self, on_change: OnChange) -> None:
        self._on_change = on_change
        await self.heartbeats.start(lambda _joined, _left: self._update())
        await self.leases.start(lambda _joined, _left: self._update())
        self._ticker = asyncio.create_task(self._tick(), name="liveness")

    async def leave(self) -> None:
        # Heartbeats first: their "leaving" reaches the peers in a millisecond.
        await self.heartbeats.leave()
        await self.leases.leave()

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self.heartbeats.close()
        await self.leases.close()

    async def _tick(self) -> None:
        # Lease renewals seen for an already live member do not call back: a
        # silent peer's Lease renewed is noticed here.
        while True:
            await asyncio.sleep(0.1)
            self._update()

    def _update(self) -> None:
        now = time.monotonic()
        verdicts = peer_verdicts(self.heartbeats.view, self.leases.view, now, self.grace)
        before = self._live
        self._live = combined_live(self.heartbeats.view, self.leases.view, now, self.grace)
        for name, (alive, why) in sorted(verdicts.items()):
            if self._why.get(name) == why:
                continue
            if self.ready:  # before, every peer is "dead": nothing is known yet
                log.log(logging.INFO if alive else logging.WARNING, "member %s: %s (%s)",
                        name, "alive" if alive else "dead", why)
            self._why[name] = why
        for name in set(self._why) - verdicts.keys():
            del self._why[name]
        joined, left = self._live - before, before - self._live
        if (joined or left) and self._on_change is not None:
            self._on_change(frozenset(joined), frozenset(left))
