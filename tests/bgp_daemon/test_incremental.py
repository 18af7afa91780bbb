"""A change costs its size: the daemon hands announcers (and the event bus) the entries
that came and went, and what they make of that is what the whole plan would give."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.sources.file import ManifestParser
from foundation.sequences import identity_delta
from speaker.bgp.nlri import Network
from speaker.bgp.peer import RouteAttrs
from speaker.bgp_announcer import BgpAnnouncer
from speaker.bgp_plan import BgpSession
from speaker.daemon import Daemon, Incremental
from speaker.plan import BGP, L2, Announcement
from tests.api.test_units import _config, _state, service_specs
from tests.bgp_daemon.test_announcer import session

net = ipaddress.ip_network


def naive_delta(before: Sequence[object], after: Sequence[object]
                ) -> tuple[set[int], set[int]]:
    old, new = set(map(id, before)), set(map(id, after))
    return new - old, old - new


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.lists(st.tuples(st.sampled_from(["drop", "add", "copy", "move"]),
                                              st.integers(0, 1000)), max_size=8))
def test_identity_delta_is_the_difference_by_identity(size: int,
                                                      edits: list[tuple[str, int]]) -> None:
    """Whatever the edits (in the middle, at either end, an equal copy, a move), the
    result is exactly the objects only in one list, as a plain set difference of ids."""
    before = [[i] for i in range(size)]  # equal lists are distinct objects
    after = list(before)
    for edit, at in edits:
        i = at % (len(after) + 1)
        if edit == "add":
            after.insert(i, [at])
        elif after and edit == "drop":
            del after[i % len(after)]
        elif after and edit == "copy":
            after[i % len(after)] = list(after[i % len(after)])
        elif after and edit == "move":
            after.insert(i, after.pop(at % len(after)))
    for old, new in ((before, after), (after, before), (tuple(before), tuple(after))):
        added, removed = identity_delta(old, new)
        assert (set(map(id, added)), set(map(id, removed))) == naive_delta(old, new)
        assert len(added) == len(set(map(id, added)))
        assert len(removed) == len(set(map(id, removed)))
    assert identity_delta(after, after) == ([], [])


def test_apply_change_gives_the_tables_of_whole_applies() -> None:
    """Random plans, each keeping most entries of the one before, some dropped, some
    added, some made anew equal; the announcer told the change (and now and then a
    change from a list it never applied, which it must not trust) ends with each
    peer's table as a fresh announcer handed the plan whole."""
    rng = random.Random(2121)

    def entry() -> Announcement:
        i = rng.randrange(48)
        address = ipaddress.ip_address(f"198.51.100.{i}")
        prefix = rng.choice([f"198.51.100.{i}/32", "198.51.100.0/26"])
        return Announcement(address, BGP, services=(f"default/s{i}",) if i % 7 else (),
                            prefix=net(prefix), local_pref=rng.choice([None, 100]),
                            peers=tuple(rng.sample(["tor-a", "tor-b", "tor-x"],
                                                   rng.randint(1, 2))))

    async def tables_of(announcer: BgpAnnouncer) -> dict[str, dict[Network, RouteAttrs]]:
        return {key: dict(p.rib) for key, p in announcer.speaker.peers.items()}

    async def whole(sessions: list[BgpSession], plan: list[Announcement]
                    ) -> dict[str, dict[Network, RouteAttrs]]:
        fresh = BgpAnnouncer()
        try:
            await fresh.set_sessions(sessions)
            await fresh.apply(plan)
            return await tables_of(fresh)
        finally:
            await fresh.close()

    async def scenario() -> None:
        announcer = BgpAnnouncer()
        sessions = [session("tor-a", "192.0.2.1"), session("tor-b", "192.0.2.2")]
        try:
            await announcer.set_sessions(sessions)
            plan = [entry() for _ in range(24)] + [Announcement(ipaddress.ip_address(
                "192.0.2.77"), L2)]
            await announcer.apply_change(plan, [], plan, [])  # nothing applied yet: whole
            assert await tables_of(announcer) == await whole(sessions, plan)
            for step in range(60):
                kept = rng.sample(plan, len(plan) - rng.randint(0, 3))
                remade = [dataclasses.replace(a) for a in rng.sample(kept, rng.randint(0, 2))]
                new = [a for a in kept if all(a is not r for r in remade)] + remade
                new += [entry() for _ in range(rng.randint(0, 3))]
                rng.shuffle(new)
                added = [a for a in new if all(a is not b for b in plan)]
                removed = [a for a in plan if all(a is not b for b in new)]
                before: list[Announcement] = plan
                if step % 10 == 9:
                    before = list(plan)  # equal, but not the list it applied
                    added, removed = [], []  # and a change that would be wrong
                await announcer.apply_change(new, before, added, removed)
                plan = new
                assert await tables_of(announcer) == await whole(sessions, plan), step
        finally:
            await announcer.close()

    asyncio.run(scenario())


class ChangeFollower:
    """An Incremental announcer that keeps only what the changes tell it."""

    kind = BGP
    assign_to_lo = True  # never skipped by the resync

    def __init__(self) -> None:
        self.held: dict[int, Announcement] = {}
        self.last: Sequence[Announcement] | None = None
        self.whole = self.changes = 0

    async def apply(self, desired: Sequence[Announcement]) -> None:
        self.whole += 1
        self.held = {id(a): a for a in desired}
        self.last = desired

    async def apply_change(self, desired: Sequence[Announcement],
                           before: Sequence[Announcement], added: Sequence[Announcement],
                           removed: Sequence[Announcement]) -> None:
        if self.last is None:  # nothing applied yet: as an announcer must, whole
            await self.apply(desired)
            return
        self.changes += 1
        assert before is self.last  # the change is from what it was given last
        for a in removed:
            del self.held[id(a)]
        for a in added:
            assert id(a) not in self.held
            self.held[id(a)] = a
        self.last = desired

    async def reassert(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Live:
    ready = True

    def live(self) -> frozenset[str]:
        return frozenset({"n1", "n2"})

    def set_members(self, members: Any) -> None:
        pass


class NoSource:
    def close(self) -> None:
        pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3", "s4", "resync", "config",
                                           "manual"]),
                          st.one_of(st.none(), service_specs)), min_size=1, max_size=12))
def test_the_daemon_hands_each_change_to_announcers_and_the_bus(
        steps: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Services coming, going and changing (re-planned by change), configuration
    changes (planned whole), addresses announced by hand (merged anew each time) and
    resyncs: an Incremental announcer following only the changes holds the daemon's
    plan after every reconcile, is given the whole plan when nothing changed, and the
    event bus's announced set is the plan's."""
    follower = ChangeFollower()
    assert isinstance(follower, Incremental)
    daemon = Daemon("n1", NoSource(), Live(), [follower])  # type: ignore[arg-type]
    parser = ManifestParser()
    services: dict[str, dict[str, Any]] = {}
    aggregate = False

    async def run() -> None:
        nonlocal aggregate
        for name, spec in steps:
            wholes, changes, had = follower.whole, follower.changes, follower.last is not None
            if name == "config":
                aggregate = not aggregate
            elif name == "manual":
                daemon.manual.add(ipaddress.ip_address("203.0.113.9"))
            elif name != "resync":
                if spec is None:
                    services.pop(name, None)
                else:
                    services[name] = spec
            before = daemon.desired
            daemon.state = _state(_config(aggregate), services, parser)
            await daemon.reconcile()
            assert follower.last is daemon.desired
            assert set(follower.held) == set(map(id, daemon.desired))
            if daemon.desired is before:  # nothing new: handed whole, as a resync must
                assert follower.whole == wholes + 1
            elif had:  # a change: handed as one
                assert (follower.whole, follower.changes) == (wholes, changes + 1)
            local = frozenset((str(a.address), a.kind) for a in daemon.desired)
            assert daemon.events._local_announcements() == local
            assert daemon.events._modes == Counter(kind for _, kind in local)

    asyncio.run(run())
