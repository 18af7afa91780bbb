"""`Peer.update` (a delta) against `Peer.set` (the whole table): one speaker, two
peers with the same configuration, each with a scripted far end over a
socketpair.  The same random sequence of changes goes to one as whole tables and
to the other as deltas; after every step both report the same change, hold the
same Adj-RIB-Out and put the same routes on the wire."""

from __future__ import annotations

import ipaddress
import random

from speaker.bgp.attributes import Attribute, MpReachNlri
from speaker.bgp.nlri import Network
from speaker.bgp.peer import RibChange, RouteAttrs
from speaker.bgp.speaker import BgpSpeaker
from speaker.bgp.update import Update
from tests.bgp.test_peer import ScriptedPeer, add_peer, connect, run

WHOLE, DELTA = "192.0.2.1", "192.0.2.2"
PREFIXES = ([ipaddress.ip_network(f"198.51.100.{i}/32") for i in range(40)]
            + [ipaddress.ip_network(f"2001:db8::{i:x}/128") for i in range(20)]
            + [ipaddress.ip_network("203.0.113.0/24")])
ATTRS = [RouteAttrs(), RouteAttrs(communities=(0xFDE80064,)),
         RouteAttrs(local_pref=200, large_communities=((64512, 1, 2),)), RouteAttrs(med=5)]

Sent = tuple[dict[Network, tuple[Attribute, ...]], set[Network]]


async def sent(far: ScriptedPeer, change: RibChange) -> Sent:
    """The routes the far end receives for one change: announced (prefix -> its path
    attributes, the next hop of MP_REACH_NLRI kept, its NLRI left out) and withdrawn."""
    announced: dict[Network, tuple[Attribute, ...]] = {}
    withdrawn: set[Network] = set()
    while len(announced) + len(withdrawn) < len(change.announced) + len(change.withdrawn):
        msg = await far.expect(Update)
        attributes = tuple(MpReachNlri(a.afi, a.safi, a.next_hops, ()) if isinstance(
            a, MpReachNlri) else a for a in msg.attributes)
        for prefix in msg.announced():
            assert prefix not in announced, f"{prefix} announced twice in one flush"
            announced[prefix] = attributes
        withdrawn.update(msg.withdrawals())
    return announced, withdrawn


def test_deltas_give_the_rib_and_updates_of_whole_tables() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        rng = random.Random(21)
        far = {}
        for address in (WHOLE, DELTA):
            add_peer(speaker, address)
            far[address] = await connect(speaker, address)
            await far[address].establish()
            for _ in range(2):  # End-of-RIB for IPv4 and IPv6: the tables are empty
                assert (await far[address].expect(Update)).end_of_rib() is not None
        table: dict[Network, RouteAttrs] = {}
        for step in range(60):
            announce = {p: rng.choice(ATTRS) for p in rng.sample(PREFIXES, rng.randint(0, 12))}
            # Withdrawals of present and absent prefixes, some also announced (announce wins).
            withdraw = rng.sample(PREFIXES, rng.randint(0, 10)) if step % 7 else list(table)
            for prefix in withdraw:
                if prefix not in announce:
                    table.pop(prefix, None)
            table.update(announce)
            whole = speaker.set_routes(WHOLE, dict(table))
            delta = speaker.update_routes(DELTA, announce, withdraw)
            assert delta.announced == whole.announced, step
            assert sorted(map(str, delta.withdrawn)) == sorted(map(str, whole.withdrawn)), step
            assert speaker.peers[DELTA].rib == speaker.peers[WHOLE].rib == table, step
            if whole.announced or whole.withdrawn:
                assert await sent(far[DELTA], delta) == await sent(far[WHOLE], whole), step
        assert len(table) > 5  # the sequence ended with routes in the table

    run(scenario)
