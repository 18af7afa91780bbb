"""The speaker daemon: cluster state + liveness -> plan -> announcers, on one asyncio loop.

    Source ──changes()──┐
                        ├─▶ plan_node (L2) + plan_bgp ─▶ for each Announcer: apply(desired)
    Liveness ─on_change─┘

The seam for announcement mechanisms is `Announcer`: anything with a `kind`,
`apply(announcements)`, `reassert()` and `close()`.  `apply` receives the
node's whole desired list every time (idempotent, the announcer diffs) and
takes the entries of its own `kind`:
  - "l2": `speaker.l2.announcer.L2Announcer`, one elected owner per address
    (speaker.plan);
  - "bgp": `speaker.bgp_announcer.BgpAnnouncer`, every eligible node announces
    (speaker.bgp_plan).  An announcer that also runs sessions implements
    `Peering.set_sessions`, which the daemon calls with the planned BGP
    sessions before every `apply`.

Re-planning happens on every state change and every liveness change, and
every `resync` seconds regardless (an interface that appeared, a route that
changed).  When a peer comes back (a restart, or a healed partition) the
announcers `reassert()`: whoever owns an address now says so again, so
neighbours that followed the other side of a partition come back.

Errors never stop the daemon: an exception in one announcer is logged as one
line with the announcer's name and the next change retries.  Plan problems
(a Service address in no pool or shared without a sharing key, a BGPPeer that
cannot be run, an undefined community alias) are logged once each time the
set of problems changes.

Read access for an API server (all on the daemon's event loop):
  - `daemon.desired`: the current plan, a sorted tuple of `Announcement`
    (`kind` "l2" or "bgp", `address`, `prefix`, `peers`, `services`);
  - `daemon.owners()`: for L2 addresses, the elected owner of each;
  - `daemon.announcers`: the announcers; `daemon.announcer("bgp")` is the
    BgpAnnouncer, whose `.speaker` is the `BgpSpeaker` (`.status()` per peer,
    `.peers[address].routes()`), `.peer_names` (BGPPeer name -> address) and
    `.advertised()` (peer -> prefixes);
  - `daemon.bgp_sessions`: the planned sessions (BGPPeer name + PeerConfig).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.fields import IPAddress, unannounceable
from foundation.kube.sources.base import Source, changes
from speaker.api.events import CONFLICT, Event, EventBus
from speaker.api.manual import ManualAddresses
from speaker.bgp_plan import BgpSession, plan_bgp
from speaker.membership import Liveness
from speaker.plan import L2, Announcement, l2_owners, plan_node, service_problems

if TYPE_CHECKING:
    from speaker.l2.announcer import Conflict

log = logging.getLogger("speaker")


class Announcer(Protocol):
    kind: str

    async def apply(self, desired: Sequence[Announcement]) -> None:
        """Make exactly the entries of `desired` whose kind is `self.kind` true."""

    async def reassert(self) -> None:
        """Say again what is announced (gratuitous ARP, or nothing for BGP)."""

    async def close(self) -> None:
        """Withdraw everything and release sockets."""


@runtime_checkable
class Peering(Protocol):
    async def set_sessions(self, sessions: Sequence[BgpSession]) -> None:
        """Make the running sessions exactly `sessions` (called before each `apply`)."""


@runtime_checkable
class Members(Protocol):
    def set_members(self, members: Mapping[str, Sequence[IPAddress]]) -> None:
        """The other speakers, node -> InternalIPs (called before each `apply`)."""


def members_of(state: ClusterState) -> dict[str, tuple[IPAddress, ...]]:
    """Node name -> InternalIPs: who the liveness protocol talks to."""
    return {n.name: n.internal_ips for n in state.nodes}


class Daemon:
    def __init__(self, node: str, source: Source, liveness: Liveness,
                 announcers: Sequence[Announcer], *, resync: float = 5.0,
                 lb_class: str | None = None, advertise_pod_cidrs: bool = False) -> None:
        self.node = node
        self.source = source
        self.liveness = liveness
        self.announcers = list(announcers)
        self.resync = resync
        self.lb_class = lb_class
        self.advertise_pod_cidrs = advertise_pod_cidrs
        self.state = ClusterState()
        self.desired: tuple[Announcement, ...] = ()
        self.bgp_sessions: tuple[BgpSession, ...] = ()
        self._problems: tuple[str, ...] = ()
        self._wake = asyncio.Event()
        self._reassert = False
        self._stopping = asyncio.Event()
        self._warned_not_a_node = False
        # For speaker.api: addresses announced by hand (merged into the plan), and the
        # event bus told after every reconcile.
        self.manual = ManualAddresses(self._wake.set)
        self.events = EventBus()
        for announcer in self.announcers:  # foreign claims to our addresses: events
            listeners = getattr(announcer, "conflict_listeners", None)
            if isinstance(listeners, list):
                listeners.append(self._on_conflict)

    # -- read access (for an API) ----------------------------------------------------------

    def announcer(self, kind: str) -> Announcer | None:
        return next((a for a in self.announcers if a.kind == kind), None)

    def owners(self) -> dict[IPAddress, str | None]:
        """L2 address -> the live node elected to announce it (None: nobody can)."""
        live = self.liveness.live() if self.liveness.ready else frozenset()
        return l2_owners(self.state, live, self.lb_class)

    # -- wiring ---------------------------------------------------------------------------

    def _on_liveness(self, joined: frozenset[str], left: frozenset[str]) -> None:
        if joined:
            self._reassert = True
        self._wake.set()

    def _on_conflict(self, conflict: Conflict) -> None:
        self.events.publish(Event(CONFLICT, address=str(conflict.address), mode=L2,
                                  owner=self.node, interface=conflict.interface,
                                  mac=conflict.mac, detail=conflict.how))

    async def _follow_source(self) -> None:
        async for state in changes(self.source):
            self.state = state
            self.liveness.set_members(members_of(state))
            self._wake.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            self._wake.set()

    async def _wait_ready(self) -> None:
        while not self.liveness.ready:
            await asyncio.sleep(0.01)
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------

    async def reconcile(self) -> None:
        if self.state.node(self.node) is None and self.state.revision > 0:
            if not self._warned_not_a_node:
                log.warning("no Node object is named %r: this speaker announces nothing; "
                            "check --node against the Nodes' metadata.name", self.node)
                self._warned_not_a_node = True
        else:
            self._warned_not_a_node = False
        live = self.liveness.live() if self.liveness.ready else frozenset()
        bgp = plan_bgp(self.state, self.node, self.lb_class,
                       advertise_pod_cidrs=self.advertise_pod_cidrs)
        # A Service's address that can never be announced (multicast, loopback, ...)
        # is dropped here for every mechanism, whatever planned it.
        desired = tuple(sorted((a for a in (*plan_node(self.state, self.node, live, self.lb_class),
                                            *bgp.routes)
                                if not (a.services and unannounceable(a.address))),
                               key=lambda a: a.sort_key))
        desired = self.manual.merge(desired, self.announcers, [s.name for s in bgp.sessions])
        problems = (*service_problems(self.state, self.lb_class),
                    *(f"BGP: {p}" for p in bgp.problems))
        if problems != self._problems:
            for problem in problems:
                log.warning("%s", problem)
            self._problems = problems
        if desired != self.desired:
            log.info("plan: %s", ", ".join(a.describe() for a in desired)
                     or "nothing to announce")
        self.desired = desired
        self.bgp_sessions = bgp.sessions
        reassert, self._reassert = self._reassert, False
        members = {name: ips for name, ips in members_of(self.state).items() if name != self.node}
        for announcer in self.announcers:
            try:
                if isinstance(announcer, Members):
                    announcer.set_members(members)
                if isinstance(announcer, Peering):
                    await announcer.set_sessions(bgp.sessions)
                await announcer.apply(desired)
                if reassert:
                    await announcer.reassert()
            except Exception as exc:  # noqa: BLE001 - one announcer must not stop the rest
                log.exception("%s announcer failed (%s); retrying on the next change",
                              announcer.kind, exc)
        self.manual.applied()
        self.events.observe(self)

    async def run(self) -> None:
        """Until `stop()` (or SIGTERM / SIGINT when installed via `install_signals`)."""
        # A Kubernetes source lists every kind before returning: not on the loop.
        await asyncio.to_thread(self.source.start)
        await self.liveness.start(self._on_liveness)
        self.state = self.source.snapshot()
        self.liveness.set_members(members_of(self.state))
        tasks = [asyncio.create_task(c) for c in
                 (self._follow_source(), self._ticker(), self._wait_ready())]
        try:
            while not self._stopping.is_set():
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(self._stopping.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if self._stopping.is_set():
                    break
                self._wake.clear()
                await self.reconcile()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._shutdown()

    async def _shutdown(self) -> None:
        # Withdraw first, then tell the peers: by the time they send their
        # gratuitous ARPs nobody here answers for the address any more.
        for announcer in self.announcers:
            try:
                await announcer.close()
            except Exception:  # noqa: BLE001 - shutting down regardless
                log.exception("%s announcer failed to close", announcer.kind)
        await self.liveness.leave()
        await self.liveness.close()
        self.source.close()
        log.info("stopped")

    def stop(self) -> None:
        self._stopping.set()

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
