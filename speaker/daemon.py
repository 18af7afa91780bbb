"""The speaker daemon: cluster state + liveness -> plan -> announcers, on one asyncio loop.

    Source ──changes()──┐
                        ├─▶ plan_node (L2) + plan_bgp ─▶ for each Announcer: apply(desired)
    Liveness ─on_change─┘

The seam for announcement mechanisms is `Announcer`: anything with a `kind`,
`apply(announcements)`, `reassert()` and `close()`.  `apply` receives the
node's whole desired list (idempotent, the announcer diffs) and takes the
entries of its own `kind`.  When the plan changed, an announcer that also
implements `Incremental.apply_change` gets the change instead: the entries
added and removed (by identity) since the list it was given last, so that a
change of one Service costs its size, not the plan's; with nothing new (a
resync), `apply` runs with the whole list, for the announcer to repair what
changed under it:
  - "l2": `speaker.l2.announcer.L2Announcer`, one elected owner per address
    (speaker.plan);
  - "bgp": `speaker.bgp_announcer.BgpAnnouncer`, every eligible node announces
    (speaker.bgp_plan).  An announcer that also runs sessions implements
    `Peering.set_sessions`, which the daemon calls with the planned BGP
    sessions before every `apply`.

Re-planning happens on every state change and every liveness change, and
the announcers are applied again every `resync` seconds regardless (an
interface that appeared, a route that changed), except a BGP announcer whose
plan, sessions and members are exactly what it last applied (`_unchanged_for`).
`Planner` keeps the last plan: a state with nothing new is not planned again,
and a change of a few Services re-plans the addresses they touch, not all of
them (see its docstring for when that is exact, and when everything is
planned).  A plan change is logged as what it adds and removes, and handed to
the event bus the same way (`last_change`).  When a peer
comes back (a restart, or a healed partition) the announcers `reassert()`:
whoever owns an address now says so again, so neighbours that followed the
other side of a partition come back.

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
import gc
import heapq
import logging
import signal
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_address
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from foundation.kube.model.cluster import ClusterState
from foundation.kube.model.endpoints import EndpointSlice
from foundation.kube.model.fields import IPAddress, unannounceable
from foundation.kube.model.service import Service
from foundation.kube.sources.base import Source, changes
from foundation.sequences import identity_delta
from speaker.api.events import CONFLICT, Event, EventBus
from speaker.api.manual import ManualAddresses
from speaker.bgp_plan import BgpSession, plan_bgp
from speaker.membership import Liveness
from speaker.plan import (
    BGP,
    L2,
    Announcement,
    l2_owners,
    plan_node,
    service_problems,
)

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
class Incremental(Protocol):
    async def apply_change(self, desired: Sequence[Announcement],
                           before: Sequence[Announcement], added: Sequence[Announcement],
                           removed: Sequence[Announcement]) -> None:
        """`apply(desired)`, told that `desired` is `before` (the list the daemon gave
        last) with `removed` taken out and `added` put in, entries told apart by
        identity.  An announcer that last applied `before` works from the change alone
        (a change costs its size, not the plan's); otherwise it applies `desired`."""


@runtime_checkable
class Members(Protocol):
    def set_members(self, members: Mapping[str, Sequence[IPAddress]]) -> None:
        """The other speakers, node -> InternalIPs (called before each `apply`)."""


def members_of(state: ClusterState) -> dict[str, tuple[IPAddress, ...]]:
    """Node name -> InternalIPs: who the liveness protocol talks to."""
    return {n.name: n.internal_ips for n in state.nodes}


# A plan change is logged as what it adds and removes, at most this many of each.
LOGGED_CHANGES = 20


def log_plan_change(before: Sequence[Announcement], after: Sequence[Announcement],
                    delta: tuple[Sequence[Announcement], Sequence[Announcement]] | None = None
                    ) -> None:
    """One line: the entries added and removed (not the whole plan, which may be
    thousands of addresses; the first in plan order): `delta` (added, removed) when
    the caller knows it, else found by identity first (a plan keeps unchanged entries
    as the same objects), then by value."""
    if delta is not None:
        added, removed = list(delta[0]), list(delta[1])
    else:
        added, removed = identity_delta(before, after)
    if added and removed:
        # An entry made anew but equal is no change.  Compared within one sort key
        # (hashing whole entries, addresses and all, costs more than comparing).
        added_at: dict[object, list[Announcement]] = {}
        removed_at: dict[object, list[Announcement]] = {}
        for a in added:
            added_at.setdefault(a.sort_key, []).append(a)
        for a in removed:
            removed_at.setdefault(a.sort_key, []).append(a)
        added = [a for a in added if a not in removed_at.get(a.sort_key, ())]
        removed = [a for a in removed if a not in added_at.get(a.sort_key, ())]
    if not added and not removed:
        return

    def some(entries: list[Announcement], sign: str) -> str:
        first = heapq.nsmallest(LOGGED_CHANGES, entries, key=lambda a: a.sort_key)
        shown = ", ".join(sign + a.describe() for a in first)
        more = len(entries) - LOGGED_CHANGES
        return shown + (f" and {more} more" if more > 0 else "")

    parts = [some(added, "+") if added else "", some(removed, "-") if removed else ""]
    log.info("plan: %d entries (%s)%s", len(after), ", ".join(p for p in parts if p),
             "" if after else ": nothing to announce")


@dataclass(frozen=True)
class Planned:
    desired: tuple[Announcement, ...] = ()
    sessions: tuple[BgpSession, ...] = ()
    problems: tuple[str, ...] = ()
    # The entries added and removed since the plan before, when planned by change.
    delta: tuple[tuple[Announcement, ...], tuple[Announcement, ...]] | None = None


def _announceable(entry: Announcement) -> bool:
    """A Service's address that can never be announced (multicast, loopback, ...) is
    dropped from every plan, whatever mechanism planned it."""
    return not (entry.services and unannounceable(entry.address))


def _problem_address(line: str) -> IPAddress | None:
    """The address a plan problem is about ("Service K: ADDR ...", "ADDR: ..."), if any."""
    text = line.removeprefix("BGP: ")
    if text.startswith("Service "):
        text = text.partition(": ")[2]
    token = text.split(" ", 1)[0].removesuffix(":")
    try:
        return ip_address(token)
    except ValueError:
        return None


def _slice_order(sl: EndpointSlice) -> tuple[str, str]:
    return (sl.namespace, sl.name)


class Planner:
    """`plan_node` + `plan_bgp` + `service_problems` of a state, re-planning only the
    Services that changed when that is sure to give the same result.

    Why it is sound: when nothing but Services and EndpointSlices changed (the
    same Nodes, pools, advertisements, peers, ... and the same live speakers),
    and no BGPAdvertisement aggregates (so every route and every L2 election is
    about one address, and its attributes about that address alone), each
    address's announcements and problems depend only on the Services holding
    that address.  So the plans are computed for a state holding just the
    Services on the addresses a change touched (old and new addresses), and
    their entries replace those of these addresses.  A liveness change alone
    moves only layer 2 owners (`plan_bgp` does not depend on who is alive):
    the L2 entries are planned again and the BGP routes kept.  Anything else
    (the first state, a configuration change, aggregation) plans everything.
    """

    def __init__(self, node: str, lb_class: str | None, advertise_pod_cidrs: bool) -> None:
        self.node = node
        self.lb_class = lb_class
        self.advertise_pod_cidrs = advertise_pod_cidrs
        self._state: ClusterState | None = None
        self._context: ClusterState | None = None
        self._live: frozenset[str] = frozenset()
        self._holders: dict[IPAddress, set[str]] = {}  # address -> keys of its Services
        # The last state's Services and EndpointSlices by Service key, kept up to date
        # by the changes: a state's own indexes would be built anew for each state.
        self._by_key: dict[str, Service] = {}
        self._slices_of: dict[str, list[EndpointSlice]] = {}
        self._entries: dict[IPAddress, list[Announcement]] = {}  # Service entries by address
        self._problems: dict[IPAddress | None, list[str]] = {}
        self._keys: list[tuple[object, ...]] = []  # sort keys of `_sorted`, in order
        self._sorted: list[Announcement] = []
        self._result = Planned()

    def plan(self, state: ClusterState, live: frozenset[str]) -> Planned:
        if state is self._state and live == self._live:
            return self._result  # a resync with nothing new
        context = replace(state, services=(), endpoint_slices=())
        if (self._state is None or context != self._context
                or any(a.aggregation_length != 32 or a.aggregation_length_v6 != 128
                       for a in state.bgp_advertisements)):
            self._plan_all(state, live)
        elif live != self._live:
            # A heartbeat that lapsed under load must not cost a plan of every
            # Service: the changed Services as usual, then the L2 owners.
            self._live = live
            self._plan_changed(state)
            self._plan_layer2(state)
        else:
            self._plan_changed(state)
        self._state, self._context, self._live = state, context, live
        return self._result

    # -- everything ------------------------------------------------------------------

    def _plan_all(self, state: ClusterState, live: frozenset[str]) -> None:
        bgp = plan_bgp(state, self.node, self.lb_class,
                       advertise_pod_cidrs=self.advertise_pod_cidrs)
        desired = self._adopt(a for a in (*plan_node(state, self.node, live, self.lb_class),
                                          *bgp.routes) if _announceable(a))
        problems = (*service_problems(state, self.lb_class),
                    *(f"BGP: {p}" for p in bgp.problems))
        self._holders = {}
        for service in state.services:
            for address in service.ingress_ips:
                self._holders.setdefault(address, set()).add(service.key)
        self._by_key = {s.key: s for s in state.services}
        self._slices_of = {}
        self._follow_slices(state.endpoint_slices, ())
        self._problems = {}
        for line in problems:
            self._problems.setdefault(_problem_address(line), []).append(line)
        self._result = Planned(tuple(desired), bgp.sessions, problems)

    def _adopt(self, entries: Iterable[Announcement]) -> list[Announcement]:
        """`entries` sorted as the whole plan, with its indexes by address and key."""
        desired = sorted(entries, key=lambda a: a.sort_key)
        self._entries = {}
        for a in desired:
            if a.services:
                self._entries.setdefault(a.address, []).append(a)
        self._sorted = desired
        self._keys = [a.sort_key for a in desired]
        return desired

    # -- the L2 owners, after a liveness change ---------------------------------------------

    def _plan_layer2(self, state: ClusterState) -> None:
        l2 = [a for a in plan_node(state, self.node, self._live, self.lb_class)
              if _announceable(a)]
        if l2 == [a for a in self._sorted if a.kind == L2]:
            # The same owners (a heartbeat that lapsed and came back, or no layer 2
            # here): the plan stays the same object, which everything downstream
            # takes as nothing new without looking at all N.
            return
        # The sort key starts with the kind: BGP and L2 entries never tie, so this
        # is the order a whole plan gives.
        desired = self._adopt((*(a for a in self._sorted if a.kind != L2), *l2))
        self._result = Planned(tuple(desired), self._result.sessions, self._result.problems)

    # -- the Services that changed -----------------------------------------------------

    def _plan_changed(self, state: ClusterState) -> None:
        assert self._state is not None
        # Sources keep an unchanged object as the same object: what is new or gone by
        # identity is what may have changed (an equal copy is merely re-planned).
        old: dict[str, Service] = {}
        services: dict[str, Service] = {}
        if state.services is not self._state.services:
            came, went = state.services_since(self._state)
            old = {s.key: s for s in went}
            services = {s.key: s for s in came}
            for key in old.keys() - services.keys():
                self._by_key.pop(key, None)
            self._by_key.update(services)
        changed = {key for key in (*old, *services) if old.get(key) != services.get(key)}
        if state.endpoint_slices is not self._state.endpoint_slices:
            # As for Services: only the slices that are not the same objects are looked
            # at (a Python loop over every slice was O(N) per change in a cluster).
            came_slices, went_slices = identity_delta(self._state.endpoint_slices,
                                                      state.endpoint_slices)
            self._follow_slices(came_slices, went_slices)
            earlier = {(s.namespace, s.name): s for s in went_slices}
            moved: list[EndpointSlice] = []
            for sl in came_slices:
                was = earlier.pop((sl.namespace, sl.name), None)
                if was is None or was != sl:
                    moved.append(sl)
                    if was is not None:
                        moved.append(was)
            moved.extend(earlier.values())
            changed.update(filter(None, (sl.service_key for sl in moved)))
        if not changed:
            return
        addresses: set[IPAddress] = set()
        for key in changed:
            versions: tuple[Service | None, ...]
            if key in old or key in services:
                versions = (old.get(key), services.get(key))
            else:  # the same Service, its EndpointSlices changed
                versions = (self._by_key.get(key),)
            for svc in versions:
                if svc is not None:
                    addresses.update(svc.ingress_ips)
        # The holders of those addresses, with the changed Services where they are now.
        for key in changed:
            before = old.get(key)
            for address in before.ingress_ips if before is not None else ():
                holders = self._holders.get(address)
                if holders is not None:
                    holders.discard(key)
                    if not holders:
                        del self._holders[address]
            after = services.get(key)
            for address in after.ingress_ips if after is not None else ():
                self._holders.setdefault(address, set()).add(key)
        keys = sorted({k for a in addresses for k in self._holders.get(a, ())})
        subset = [svc for k in keys if (svc := services.get(k) or self._by_key.get(k))]
        slices = tuple(sl for svc in subset for sl in self._slices_of.get(svc.key, ()))
        sub = replace(state, services=tuple(subset), endpoint_slices=slices)
        live = self._live
        bgp = plan_bgp(sub, self.node, self.lb_class,
                       advertise_pod_cidrs=self.advertise_pod_cidrs)
        fresh: dict[IPAddress, list[Announcement]] = {}
        for a in (*plan_node(sub, self.node, live, self.lb_class), *bgp.routes):
            if a.services and a.address in addresses and _announceable(a):
                fresh.setdefault(a.address, []).append(a)
        added: list[Announcement] = []
        removed: list[Announcement] = []
        for address in addresses:
            new = sorted(fresh.get(address, ()), key=lambda a: a.sort_key)
            if new == self._entries.get(address, []):
                # Planned the same (an annotation, an endpoint that did not change
                # readiness): the entries stay the very same objects.
                continue
            for a in self._entries.pop(address, ()):
                self._remove(a)
                removed.append(a)
            for a in new:
                self._insert(a)
                added.append(a)
            if new:
                self._entries[address] = new
        lines: dict[IPAddress | None, list[str]] = {}
        for line in (*service_problems(sub, self.lb_class), *(f"BGP: {p}" for p in bgp.problems)):
            lines.setdefault(_problem_address(line), []).append(line)
        for address in addresses:
            self._problems.pop(address, None)
            if address in lines:
                self._problems[address] = lines[address]
        problems = tuple(line for group in self._problems.values() for line in group)
        if not added and not removed and problems == self._result.problems:
            return  # the same plan object: nothing downstream looks at it again
        self._result = Planned(tuple(self._sorted), self._result.sessions, problems,
                               (tuple(added), tuple(removed)))

    def _follow_slices(self, came: Sequence[EndpointSlice],
                       went: Sequence[EndpointSlice]) -> None:
        """`_slices_of` after these slices came and went (each Service's in the
        state's order, as ClusterState.endpoint_slices_for gives them)."""
        touched: set[str] = set()
        for sl in went:
            if key := sl.service_key:
                self._slices_of[key] = [s for s in self._slices_of.get(key, ()) if s is not sl]
                touched.add(key)
        for sl in came:
            if key := sl.service_key:
                self._slices_of.setdefault(key, []).append(sl)
                touched.add(key)
        for key in touched:
            if self._slices_of[key]:
                self._slices_of[key].sort(key=_slice_order)
            else:
                del self._slices_of[key]

    def _remove(self, entry: Announcement) -> None:
        key = entry.sort_key
        i = bisect_left(self._keys, key)
        while i < len(self._sorted) and self._keys[i] == key:
            if self._sorted[i] is entry or self._sorted[i] == entry:
                del self._keys[i]
                del self._sorted[i]
                return
            i += 1

    def _insert(self, entry: Announcement) -> None:
        key = entry.sort_key
        i = bisect_right(self._keys, key)
        self._keys.insert(i, key)
        self._sorted.insert(i, entry)


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
        # Set once the first plan made with the liveness ready has been applied (one
        # made before elects no layer 2 owner): what may wait (the API) waits for it.
        self.first_applied = asyncio.Event()
        self._warned_not_a_node = False
        # For speaker.api: addresses announced by hand (merged into the plan), and the
        # event bus told after every reconcile.
        self.manual = ManualAddresses(self._wake.set)
        self.events = EventBus()
        self._planner = Planner(node, lb_class, advertise_pod_cidrs)
        # The plan `desired` came from (whose delta the planner knows), and the change
        # from the `desired` before: (before, after, added, removed), entries by identity.
        self._planner_before: tuple[Announcement, ...] = ()
        self.last_change: tuple[Sequence[Announcement], Sequence[Announcement],
                                Sequence[Announcement], Sequence[Announcement]] | None = None
        # The other speakers, and the Nodes they were read from.
        self._members: dict[str, tuple[IPAddress, ...]] = {}
        self._members_of: object = None
        # What each announcer (by id) last applied without error.
        self._applied: dict[int, tuple[object, ...]] = {}
        for announcer in self.announcers:  # foreign claims to our addresses: events
            listeners = getattr(announcer, "conflict_listeners", None)
            if isinstance(listeners, list):
                listeners.append(self._on_conflict)

    def _unchanged_for(self, announcer: Announcer, inputs: tuple[object, ...]) -> bool:
        """Whether applying `inputs` again to `announcer` can change nothing, so a resync
        may skip it: a BGP announcer that last applied exactly these (its sessions
        keep their routes, and a new session gets the whole table from the speaker),
        unless it also keeps addresses on lo (which the resync repairs).  Layer 2 is
        always applied again: an interface may have appeared."""
        if announcer.kind != BGP or getattr(announcer, "assign_to_lo", True):
            return False
        last = self._applied.get(id(announcer))
        return last is not None and all(
            a is b or a == b for a, b in zip(last, inputs, strict=True))

    # -- read access (for an API) ----------------------------------------------------------

    def announcer(self, kind: str) -> Announcer | None:
        return next((a for a in self.announcers if a.kind == kind), None)

    @property
    def problems(self) -> tuple[str, ...]:
        """What the last plan could not do, one line each (also logged once)."""
        return self._problems

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
        planned = self._planner.plan(self.state, live)
        bgp_sessions = planned.sessions
        desired = self.manual.merge(planned.desired, self.announcers,
                                    [s.name for s in bgp_sessions])
        problems = planned.problems
        if problems != self._problems:
            known = set(self._problems)
            for problem in problems:
                if problem not in known:
                    log.warning("%s", problem)
            self._problems = problems
        previous = self.desired
        added: Sequence[Announcement] = ()
        removed: Sequence[Announcement] = ()
        if desired is not previous:
            # The planner's delta holds while the plan before is what was given last.
            if (planned.delta is not None and desired is planned.desired
                    and previous is self._planner_before):
                added, removed = planned.delta
            else:
                added, removed = identity_delta(previous, desired)
            log_plan_change(previous, desired, (added, removed))
            self.desired = desired
            self.last_change = (previous, desired, added, removed)
        self._planner_before = planned.desired
        self.bgp_sessions = bgp_sessions
        reassert, self._reassert = self._reassert, False
        if self.state.nodes is not self._members_of:
            self._members_of = self.state.nodes
            self._members = {name: ips for name, ips in members_of(self.state).items()
                             if name != self.node}
        members = self._members
        for announcer in self.announcers:
            inputs = (desired, bgp_sessions, members)
            # A new plan is a change: comparing it with the last would only cost.
            if not reassert and desired is previous and self._unchanged_for(announcer, inputs):
                continue
            try:
                if isinstance(announcer, Members):
                    announcer.set_members(members)
                if isinstance(announcer, Peering):
                    await announcer.set_sessions(bgp_sessions)
                if desired is not previous and isinstance(announcer, Incremental):
                    await announcer.apply_change(desired, previous, added, removed)
                else:
                    # Nothing new (a resync: an interface that appeared, lo to repair),
                    # or an announcer that diffs the whole list itself.
                    await announcer.apply(desired)
                if reassert:
                    await announcer.reassert()
                self._applied[id(announcer)] = inputs
            except Exception as exc:  # noqa: BLE001 - one announcer must not stop the rest
                self._applied.pop(id(announcer), None)
                log.exception("%s announcer failed (%s); retrying on the next change",
                              announcer.kind, exc)
        self.manual.applied()
        self.events.observe(self)

    async def run(self) -> None:
        """Until `stop()` (or SIGTERM / SIGINT when installed via `install_signals`)."""
        # Until the first plan is applied the collector is off: the first state and
        # plan are many thousand objects made at once and kept, which it would
        # traverse again and again as they grow (a tenth of a start at 10,000
        # Services).  `_serve` then freezes them out of its way and turns it on.
        gc.disable()
        try:
            # A Kubernetes source lists every kind before returning: not on the loop.
            await asyncio.to_thread(self.source.start)
            await self.liveness.start(self._on_liveness)
            self.state = self.source.snapshot()
            self.liveness.set_members(members_of(self.state))
            tasks = [asyncio.create_task(c) for c in
                     (self._follow_source(), self._ticker(), self._wait_ready())]
            try:
                await self._serve()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self._shutdown()
        finally:
            gc.enable()

    async def _serve(self) -> None:
        first = True
        while not self._stopping.is_set():
            waiter = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._stopping.is_set():
                break
            self._wake.clear()
            ready = self.liveness.ready
            await self.reconcile()
            if ready:
                self.first_applied.set()
            if first:
                # The first state and plan live until they change: frozen, full
                # collections then and on each change do not traverse them again.
                # They are freed as usual once unused; only a reference cycle among
                # them would stay.
                gc.freeze()
                gc.enable()
                first = False

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
