"""Sessions against a scripted peer over a socketpair: no network at all, so these
run anywhere and can send exactly the malformed bytes a real router never would.

Each test checks the NOTIFICATION that comes back (code, subcode, data), that
only the offending session went down, and the routes/markers that are sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from speaker.bgp import message
from speaker.bgp.attributes import AsPath, Communities, LocalPref, NextHop, Origin
from speaker.bgp.capabilities import FourOctetAs, Multiprotocol
from speaker.bgp.capabilities import RouteRefresh as RouteRefreshCap
from speaker.bgp.header import split_messages
from speaker.bgp.keepalive import Keepalive
from speaker.bgp.notification import Notification
from speaker.bgp.open import Open
from speaker.bgp.peer import PeerConfig, RouteAttrs
from speaker.bgp.route_refresh import RouteRefresh
from speaker.bgp.session import Connection
from speaker.bgp.speaker import BgpSpeaker
from speaker.bgp.update import Update

ROUTER_ID = "10.0.0.1"
net = ipaddress.ip_network
PEER_OPEN = Open(65112, 90, "10.0.0.254", (Multiprotocol(1, 1), Multiprotocol(2, 1),
                                           RouteRefreshCap(), FourOctetAs(65112)))


class ScriptedPeer:
    """The far end of a socketpair: sends raw bytes, collects decoded messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.received: list[message.Message] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next(self, timeout: float = 10.0) -> message.Message:
        while not self.received:
            if self.closed:
                raise AssertionError("connection closed")
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                self.closed = True
                continue
            self.buffer += chunk
            raw, used = split_messages(self.buffer)
            del self.buffer[:used]
            self.received += [message.decode(r) for r in raw]
        return self.received.pop(0)

    async def expect(self, kind: type, timeout: float = 10.0) -> Any:
        msg = await self.next(timeout)
        assert isinstance(msg, kind), msg
        return msg

    async def until_closed(self, timeout: float = 10.0) -> list[message.Message]:
        """Everything sent until the speaker closes the connection."""
        out = []
        while True:
            try:
                out.append(await self.next(timeout))
            except AssertionError:
                return out

    async def establish(self, peer_open: Open = PEER_OPEN) -> Open:
        ours = await self.expect(Open)
        self.send(message.encode(peer_open))
        self.send(message.encode(Keepalive()))
        await self.expect(Keepalive)
        return ours


Connector = Callable[[str], Awaitable[ScriptedPeer]]


def run(scenario: Callable[[BgpSpeaker], Awaitable[None]]) -> None:
    """Run one scenario on a fresh loop with a started speaker, always shut down."""
    async def main() -> None:
        spk = BgpSpeaker(ROUTER_ID, listen_addresses=None, batch_delay=0.01)
        await spk.start()
        try:
            await asyncio.wait_for(scenario(spk), 60)
        finally:
            await spk.shutdown()

    asyncio.run(main())


def add_peer(spk: BgpSpeaker, address: str, **kw: Any) -> None:
    kw.setdefault("peer_asn", 65112)
    spk.add_peer(PeerConfig(peer_address=address, my_asn=64512, passive=True,
                            next_hop_ipv4="10.0.0.1", next_hop_ipv6="fd00::1", **kw))


async def connect(spk: BgpSpeaker, address: str) -> ScriptedPeer:
    """Hand the speaker one end of a socketpair as an incoming connection from `address`."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    spk.peers[address].accept(Connection(reader, writer, outgoing=False))
    far_reader, far_writer = await asyncio.open_connection(sock=theirs)
    return ScriptedPeer(far_reader, far_writer)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def state(spk: BgpSpeaker, address: str) -> str:
    return spk.peers[address].state.value


def test_established_session_gets_table_and_end_of_rib() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        speaker.set_routes("192.0.2.1", {net("198.51.100.7/32"): RouteAttrs(
            communities=(0xFDE80064,)), net("2001:db8::7/128"): RouteAttrs()})
        far = await connect(speaker, "192.0.2.1")
        ours = await far.establish()
        assert ours.asn == 64512 and ours.router_id == ROUTER_ID and ours.hold_time == 90
        v4 = await far.expect(Update)
        assert v4.nlri == (ipaddress.ip_network("198.51.100.7/32"),)
        assert v4.attributes == (Origin(0), AsPath.sequence(64512), NextHop("10.0.0.1"),
                                 Communities((0xFDE80064,)))
        v6 = await far.expect(Update)
        assert [str(n) for n in v6.announced()] == ["2001:db8::7/128"]
        eors = {(await far.expect(Update)).end_of_rib() for _ in range(2)}
        assert eors == {(1, 1), (2, 1)}
        await until(lambda: state(speaker, "192.0.2.1") == "Established")
        status = speaker.status()[0]
        assert status.hold_time == 90 and status.keepalive_time == 30
        assert status.uptime is not None and status.uptime >= 0

    run(scenario)


def test_announce_withdraw_batched_and_route_refresh() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1", peer_asn=64512)  # iBGP: empty AS_PATH, LOCAL_PREF
        far = await connect(speaker, "192.0.2.1")
        await far.establish(Open(64512, 90, "10.0.0.254", (FourOctetAs(64512),)))
        assert (await far.expect(Update)).end_of_rib() == (1, 1)  # no MP capability: IPv4 only
        table = {net(f"10.1.{i >> 8}.{i & 255}/32"): RouteAttrs() for i in range(2000)}
        change = speaker.set_routes("192.0.2.1", table)
        assert len(change.announced) == 2000 and not change.withdrawn
        updates = [await far.expect(Update) for _ in range(3)]  # 2000 * 5 bytes > 2 messages
        assert sum(len(u.nlri) for u in updates) == 2000
        assert updates[0].attributes == (Origin(0), AsPath(), NextHop("10.0.0.1"), LocalPref(100))
        del table[net("10.1.0.5/32")]
        change = speaker.set_routes("192.0.2.1", table)
        assert change.withdrawn == [net("10.1.0.5/32")] and not change.announced
        gone = await far.expect(Update)
        assert [str(n) for n in gone.withdrawn] == ["10.1.0.5/32"] and not gone.nlri
        far.send(message.encode(RouteRefresh(1, 1)))
        again = [await far.expect(Update) for _ in range(3)]
        assert sum(len(u.nlri) for u in again) == 1999
        listed = speaker.peers["192.0.2.1"].routes()
        assert len(listed) == 1999 and (net("10.1.0.5/32"), RouteAttrs()) not in listed
        assert (net("10.1.0.6/32"), RouteAttrs()) in listed

    run(scenario)


@pytest.mark.parametrize("peer_open, code, subcode, data", [
    (Open(65999, 90, "10.0.0.254", (FourOctetAs(65999),)), 2, 2, b""),
    (Open(65112, 1, "10.0.0.254"), 2, 6, b""),
    (Open(65112, 90, "0.0.0.0"), 2, 3, b""),
])
def test_bad_open_gets_notification_and_other_session_stays(
        peer_open: Open, code: int, subcode: int, data: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        add_peer(speaker, "192.0.2.2")
        good = await connect(speaker, "192.0.2.2")
        await good.establish()
        bad = await connect(speaker, "192.0.2.1")
        await bad.expect(Open)
        with caplog.at_level(logging.WARNING, logger="speaker.bgp"):
            bad.send(message.encode(peer_open))
            rest = await bad.until_closed()
        assert rest == [Notification(code, subcode, data)]
        assert state(speaker, "192.0.2.1") == "Idle"
        assert state(speaker, "192.0.2.2") == "Established"
        lines = [r.getMessage() for r in caplog.records if "192.0.2.1" in r.getMessage()]
        assert len(lines) == 1
        assert "OpenSent -> Idle: sent NOTIFICATION OPEN Message Error" in lines[0]

    run(scenario)


def _raw(length: int, msg_type: int, body: bytes = b"") -> bytes:
    return b"\xff" * 16 + length.to_bytes(2, "big") + bytes([msg_type]) + body


@pytest.mark.parametrize("garbage, code, subcode, data", [
    (b"\x00" * 19, 1, 1, b""),                               # not synchronized
    (_raw(5000, 2, b"\x00" * 100), 1, 2, (5000).to_bytes(2, "big")),  # oversized
    (_raw(25, 1, b"\x04\xfe\x58\x00\x5a\x0a"), 1, 2, (25).to_bytes(2, "big")),  # short OPEN
    (_raw(19, 7), 1, 3, b"\x07"),                            # unknown type
    # An UPDATE whose NLRI cannot be parsed (a /33): the one UPDATE error in this list
    # that RFC 7606 §3 (j) still answers with a reset.
    (_raw(19 + 4 + 14 + 5, 2, bytes.fromhex("0000000e" "40010100" "400200" "4003040a000001"
                                            "21c0000201")), 3, 10, b""),
])
def test_garbage_after_established(garbage: bytes, code: int, subcode: int, data: bytes) -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        add_peer(speaker, "192.0.2.2")
        good = await connect(speaker, "192.0.2.2")
        await good.establish()
        bad = await connect(speaker, "192.0.2.1")
        await bad.establish()
        bad.send(garbage)
        rest = await bad.until_closed()
        assert rest[-1] == Notification(code, subcode, data)
        assert state(speaker, "192.0.2.1") == "Idle"
        assert state(speaker, "192.0.2.2") == "Established"
        assert "NOTIFICATION" in speaker.peers["192.0.2.1"].fsm.last_error

    run(scenario)


def test_truncated_stream_closes_only_that_session() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        far = await connect(speaker, "192.0.2.1")
        await far.establish()
        far.send(_raw(60, 2, b"\x00\x00"))  # promises 60 bytes, then the peer goes away
        far.writer.close()
        await until(lambda: state(speaker, "192.0.2.1") == "Idle")
        assert "middle of a message" in speaker.peers["192.0.2.1"].fsm.last_error

    run(scenario)


def test_hold_timer_expiry_and_keepalives() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1", hold_time=3)
        far = await connect(speaker, "192.0.2.1")
        await far.establish(Open(65112, 3, "10.0.0.254", (FourOctetAs(65112),)))
        # Silent peer: we keep sending keepalives (every second) until the hold timer fires.
        rest = await far.until_closed()
        assert rest[-1] == Notification(4, 0)
        assert sum(1 for m in rest if isinstance(m, Keepalive)) >= 1
        assert "hold timer expired" in speaker.peers["192.0.2.1"].fsm.last_error

    run(scenario)


def test_shutdown_sends_cease_to_every_peer() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        peers = []
        for i in (1, 2, 3):
            add_peer(speaker, f"192.0.2.{i}")
            far = await connect(speaker, f"192.0.2.{i}")
            await far.establish()
            peers.append(far)
        await speaker.shutdown("node drain")
        for far in peers:
            rest = await far.until_closed()
            assert rest[-1] == Notification.shutdown("node drain")
        assert {p.state.value for p in speaker.peers.values()} == {"Idle"}

    run(scenario)


def test_collision_keeps_connection_of_higher_identifier() -> None:
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        first = await connect(speaker, "192.0.2.1")
        await first.establish()
        # Established always wins: a second connection is refused with Cease / collision.
        second = await connect(speaker, "192.0.2.1")
        assert await second.until_closed() == [Notification(6, 7)]
        assert state(speaker, "192.0.2.1") == "Established"

    run(scenario)


def _update(attrs_hex: str, nlri_hex: str = "18c00002") -> bytes:
    attrs, nlri = bytes.fromhex(attrs_hex), bytes.fromhex(nlri_hex)
    body = b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs + nlri
    return _raw(19 + len(body), 2, body)


MALFORMED_BUT_HANDLED = [
    _update("40010107" "400200" "4003040a000001"),    # ORIGIN 7
    _update("c0010100" "400200" "4003040a000001"),    # ORIGIN flagged optional
    _update("40010100" "400200"),                      # no NEXT_HOP
    _update("40010100" "4002030701ff" "4003040a000001"),  # AS_PATH segment type 7
    _update("40010100" "400200" "4003040a000001" "c00706fde90a000001"),  # AGGREGATOR short
]


def test_malformed_updates_are_handled_without_reset(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 7606 is the default: an UPDATE with a bad ORIGIN, no NEXT_HOP or a broken
    AS_PATH is treat-as-withdraw, a broken AGGREGATOR attribute discard; the session,
    and every route sent over it, stays.  Only what RFC 7606 still resets on does."""
    async def scenario(speaker: BgpSpeaker) -> None:
        add_peer(speaker, "192.0.2.1")
        speaker.set_routes("192.0.2.1", {net("198.51.100.7/32"): RouteAttrs()})
        far = await connect(speaker, "192.0.2.1")
        await far.establish()
        assert (await far.expect(Update)).nlri == (net("198.51.100.7/32"),)
        assert {(await far.expect(Update)).end_of_rib() for _ in range(2)} == {(1, 1), (2, 1)}
        peer = speaker.peers["192.0.2.1"]
        before = peer.messages_in
        with caplog.at_level(logging.WARNING, logger="speaker.bgp"):
            for raw in MALFORMED_BUT_HANDLED:
                far.send(raw)
            far.send(message.encode(Keepalive()))
            await until(lambda: peer.messages_in >= before + len(MALFORMED_BUT_HANDLED) + 1)
        assert state(speaker, "192.0.2.1") == "Established"
        assert peer.peer_end_of_rib == set()  # a withdrawn UPDATE is no End-of-RIB marker
        handled = [r.getMessage() for r in caplog.records if "RFC 7606" in r.getMessage()]
        assert len(handled) == len(MALFORMED_BUT_HANDLED), handled
        assert sum("treat-as-withdraw" in line for line in handled) == 4
        assert "attribute discard" in handled[-1]
        # The session still carries our routes both ways: a new one goes out.
        speaker.set_routes("192.0.2.1", {net("198.51.100.7/32"): RouteAttrs(),
                                         net("198.51.100.8/32"): RouteAttrs()})
        assert (await far.expect(Update)).nlri == (net("198.51.100.8/32"),)
        # An MP_REACH_NLRI marked transitive cannot be handled so: NOTIFICATION 3/4.
        far.send(_update("40010100" "400200" "400e03000201", ""))
        rest = await far.until_closed()
        assert rest[-1] == Notification(3, 4, bytes.fromhex("400e03000201"))
        assert state(speaker, "192.0.2.1") == "Idle"

    run(scenario)
