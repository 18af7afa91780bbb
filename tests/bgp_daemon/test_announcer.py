"""BgpAnnouncer without a router: every apply hands each peer its whole desired table
as `ipaddress` networks, and the peer alone works out what changed.  The peers are
passive and nothing listens, so no packet leaves the process."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random

import pytest

from foundation.kube.model.communities import BGPCommunity
from foundation.kube.model.metallb import BFDProfile
from speaker.bgp.nlri import Network
from speaker.bgp.peer import PeerConfig, RouteAttrs
from speaker.bgp_announcer import BgpAnnouncer
from speaker.bgp_plan import BgpSession
from speaker.plan import BGP, Announcement

net = ipaddress.ip_network
A4, A6 = ipaddress.ip_address("198.51.100.10"), ipaddress.ip_address("2001:db8::10")


def session(name: str, address: str) -> BgpSession:
    return BgpSession(name, PeerConfig(peer_address=address, peer_asn=65112, my_asn=64512,
                                       router_id="10.0.0.1", passive=True))


def route(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: str,
          *peers: str, communities: tuple[BGPCommunity, ...] = ()) -> Announcement:
    return Announcement(address, BGP, services=("default/web",), prefix=net(prefix),
                        communities=communities, peers=peers)


def test_apply_sets_whole_tables_and_logs_what_the_peer_changed(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        announcer = BgpAnnouncer()
        try:
            await announcer.set_sessions([session("tor-a", "192.0.2.1"),
                                          session("tor-b", "192.0.2.2")])
            with caplog.at_level(logging.INFO, logger="speaker.bgp"):
                await announcer.apply([
                    route(A4, "198.51.100.10/32", "tor-a", "tor-b"),
                    route(A6, "2001:db8::10/128", "tor-a"),
                    # The same prefix twice towards tor-a: one route, communities merged.
                    route(A4, "198.51.100.10/32", "tor-a",
                          communities=(BGPCommunity((64512, 100)),)),
                ])
            assert announcer.advertised() == {
                "192.0.2.1": [net("198.51.100.10/32"), net("2001:db8::10/128")],
                "192.0.2.2": [net("198.51.100.10/32")]}
            rib = announcer.speaker.peers["192.0.2.1"].rib
            assert all(isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network)
                       for prefix in rib)
            assert rib[net("198.51.100.10/32")] == RouteAttrs(communities=((64512 << 16) | 100,))
            lines = [r.getMessage() for r in caplog.records]
            assert "BGP peer 192.0.2.2: announcing 198.51.100.10/32" in lines

            caplog.clear()
            with caplog.at_level(logging.INFO, logger="speaker.bgp"):
                await announcer.apply([route(A4, "198.51.100.10/32", "tor-a", "tor-b")])
                await announcer.apply([route(A4, "198.51.100.10/32", "tor-a", "tor-b")])
            lines = [r.getMessage() for r in caplog.records]
            # Only the changes, once: the IPv6 route goes, the IPv4 one loses its community.
            assert lines == ["BGP peer 192.0.2.1: withdrawing 2001:db8::10/128",
                             "BGP peer 192.0.2.1: announcing 198.51.100.10/32"]
            assert announcer.advertised()["192.0.2.1"] == [net("198.51.100.10/32")]
        finally:
            await announcer.close()

    asyncio.run(scenario())


def test_bfd_profile_starts_changes_and_stops_a_bfd_session() -> None:
    """A session's BFDProfile runs a BFD session beside it; a changed profile is renegotiated in
    place (the BGP session stays), a removed peer takes its BFD session along.  Passive: nothing is
    sent before the (absent) peer speaks, so no packet leaves the process."""
    slow = BFDProfile(namespace="metallb-system", name="slow", receive_interval_ms=500,
                      transmit_interval_ms=500, passive_mode=True)
    fast = dataclasses.replace(slow, name="fast", transmit_interval_ms=100,
                               receive_interval_ms=100, detect_multiplier=5)

    def with_bfd(name: str, address: str, profile: BFDProfile | None) -> BgpSession:
        return dataclasses.replace(session(name, address), bfd=profile)

    async def scenario() -> None:
        announcer = BgpAnnouncer()
        try:
            await announcer.set_sessions([with_bfd("tor-a", "192.0.2.1", slow),
                                          with_bfd("tor-b", "192.0.2.2", None)])
            bfd = announcer.speaker.bfd_sessions
            assert set(bfd) == {"192.0.2.1"}
            first = bfd["192.0.2.1"]
            peer = announcer.speaker.peers["192.0.2.1"]
            assert (first.config.params.desired_min_tx_us, first.config.multihop) == (
                500_000, False)
            await asyncio.sleep(0.05)
            assert first.state.text == "Down" and first.packets_out == 0  # passive
            await announcer.set_sessions([with_bfd("tor-a", "192.0.2.1", fast),
                                          with_bfd("tor-b", "192.0.2.2", None)])
            # Only the profile changed: the same BFD session renegotiates (a Poll
            # Sequence), the BGP peer is left alone.
            assert bfd["192.0.2.1"] is first and announcer.speaker.peers["192.0.2.1"] is peer
            assert first.config.params.detect_mult == 5
            assert first.vars.params.desired_min_tx_us == 100_000
            await announcer.set_sessions([with_bfd("tor-b", "192.0.2.2", None)])
            assert bfd == {} and announcer.speaker.bfd.sessions == {}
        finally:
            await announcer.close()

    asyncio.run(scenario())


def test_changes_applied_by_delta_give_the_tables_of_whole_applies(
        caplog: pytest.LogCaptureFixture) -> None:
    """A random sequence of plans, each keeping most entries of the one before (as the
    daemon's planner does), dropping some, adding some and making some anew equal:
    after every apply each peer's table is what a fresh announcer, handed the plan
    whole, gives; and a reassert (every table handed whole to its peer) finds
    nothing to change.  Aggregates (many entries, one prefix), one prefix wanted
    with different attributes (merged), range entries and a peer with no session
    are in the mix; a session added midway goes through the whole-table path."""
    rng = random.Random(21)
    communities = [(), (BGPCommunity((64512, 100)),), (BGPCommunity((64512, 7, 9)),),
                   (BGPCommunity((64512, 100)), BGPCommunity((65000, 1)))]

    def entry() -> Announcement:
        i = rng.randrange(64)
        address = ipaddress.ip_address(f"198.51.100.{i}")
        prefix = rng.choice([f"198.51.100.{i}/32", "198.51.100.0/26", "198.51.100.0/24"])
        return Announcement(address, BGP, services=(f"default/s{i}",) if i % 9 else (),
                            prefix=net(prefix), local_pref=rng.choice([None, 100, 300]),
                            communities=rng.choice(communities),
                            peers=tuple(rng.sample(["tor-a", "tor-b", "tor-c", "tor-x"],
                                                   rng.randint(1, 3))))

    async def whole_tables(sessions: list[BgpSession], plan: list[Announcement]
                           ) -> dict[str, dict[Network, RouteAttrs]]:
        fresh = BgpAnnouncer()
        try:
            await fresh.set_sessions(sessions)
            await fresh.apply(plan)
            return {key: dict(p.rib) for key, p in fresh.speaker.peers.items()}
        finally:
            await fresh.close()

    async def scenario() -> None:
        announcer = BgpAnnouncer()
        sessions = [session("tor-a", "192.0.2.1"), session("tor-b", "192.0.2.2")]
        try:
            await announcer.set_sessions(sessions)
            plan = [entry() for _ in range(30)]
            await announcer.apply([*plan, Announcement(A4, kind="l2")])
            for step in range(40):
                if step == 20:
                    sessions.append(session("tor-c", "192.0.2.3"))
                    await announcer.set_sessions(sessions)
                kept = rng.sample(plan, len(plan) - rng.randint(0, 4))
                remade = [dataclasses.replace(a) for a in rng.sample(kept, rng.randint(0, 3))]
                plan = [a for a in kept if a not in remade] + remade
                plan += [entry() for _ in range(rng.randint(0, 4))]
                rng.shuffle(plan)
                await announcer.apply(plan)
                tables = {key: dict(p.rib) for key, p in announcer.speaker.peers.items()}
                assert tables == await whole_tables(sessions, plan), step
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="speaker.bgp"):
                    await announcer.reassert()
                assert not caplog.records, step
            assert any(len(t) > 3 for t in tables.values())
        finally:
            await announcer.close()

    asyncio.run(scenario())
