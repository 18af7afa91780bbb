"""UDP heartbeat membership among speakers: fast, small, and self-healing.

Each speaker sends a heartbeat every `interval` (default 50 ms) to every other
Node's InternalIP on `port`; a peer not heard from for `dead_after` (default
200 ms, four heartbeats) is dead, and one heard from again is alive again.
That is the whole protocol, on purpose: MetalLB's memberlist adds indirect
probes and a suspicion phase, which is what makes its failovers take seconds.
Here detection costs `dead_after`, and a SIGTERM'd speaker sends "leaving" so
its peers re-elect at once.

What it gives up, knowingly: views are each speaker's own observation, so an
asymmetric partition (A hears B, B does not hear A) can briefly give two
owners or none.  When the partition heals every peer is heard again, the
daemon re-elects and the owners re-announce (gratuitous ARP), so the segment
converges on one MAC.  Heartbeats are not authenticated: a datagram counts
only if its source address is one of the named Node's InternalIPs, which stops
accidents, not an attacker on the segment (who could as well answer ARP).

Wire format (network order): magic "SKHB", version 1, kind (1 alive, 2
leaving), name length, incarnation (u64, the sender's start time in ns, so a
restarted speaker's messages supersede its old ones), sequence (u64), name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from foundation.kube.model.fields import IPAddress
from speaker.membership import OnChange

log = logging.getLogger("speaker.membership")

DEFAULT_PORT = 7946  # memberlist's port: the one a MetalLB user has already opened
MAGIC = b"SKHB"
VERSION = 1
ALIVE, LEAVING = 1, 2
_HEADER = struct.Struct("!4sBBHQQ")
MAX_NAME = 253  # a Kubernetes node name is a DNS subdomain


@dataclass(frozen=True)
class Message:
    kind: int
    name: str
    incarnation: int
    seq: int

    def encode(self) -> bytes:
        raw = self.name.encode()
        return _HEADER.pack(MAGIC, VERSION, self.kind, len(raw), self.incarnation,
                            self.seq) + raw

    @classmethod
    def decode(cls, data: bytes) -> Message | None:
        """None for anything that is not a well-formed message of ours."""
        if len(data) < _HEADER.size:
            return None
        magic, version, kind, length, incarnation, seq = _HEADER.unpack_from(data)
        if (magic != MAGIC or version != VERSION or kind not in (ALIVE, LEAVING)
                or length == 0 or length > MAX_NAME or len(data) != _HEADER.size + length):
            return None
        try:
            name = data[_HEADER.size:].decode()
        except UnicodeDecodeError:
            return None
        return cls(kind, name, incarnation, seq)


@dataclass
class _Peer:
    incarnation: int
    last_heard: float
    alive: bool
    left: bool = False


@dataclass
class View:
    """The live set as one speaker sees it; pure (the caller passes the time)."""

    me: str
    dead_after: float
    members: frozenset[str] = frozenset()
    peers: dict[str, _Peer] = field(default_factory=dict)

    def live(self) -> frozenset[str]:
        return frozenset({self.me} | {n for n, p in self.peers.items()
                                      if p.alive and n in self.members})

    def set_members(self, members: frozenset[str]) -> None:
        self.members = members
        for name in list(self.peers):
            if name not in members:
                del self.peers[name]

    def receive(self, msg: Message, now: float) -> bool:
        """Account for `msg`; True if the live set changed."""
        if msg.name == self.me or msg.name not in self.members:
            return False
        before = self.live()
        peer = self.peers.get(msg.name)
        if peer is not None and (msg.incarnation < peer.incarnation
                                 or (msg.incarnation == peer.incarnation and peer.left)):
            # A late datagram from before the peer restarted, or a heartbeat
            # still in flight after its "leaving".
            return False
        if msg.kind == LEAVING:
            self.peers[msg.name] = _Peer(msg.incarnation, now, alive=False, left=True)
        elif peer is not None and peer.incarnation == msg.incarnation:
            peer.last_heard, peer.alive = now, True
        else:
            self.peers[msg.name] = _Peer(msg.incarnation, now, alive=True)
        return self.live() != before

    def forgive(self, seconds: float) -> None:
        """This speaker was stalled for `seconds` (CPU starved, paused): the
        heartbeats that arrived meanwhile are still unread in the socket, so that
        time is not the peers' silence."""
        for peer in self.peers.values():
            if peer.alive:
                peer.last_heard += seconds

    def expire(self, now: float) -> frozenset[str]:
        """Mark peers silent for longer than dead_after as dead; returns them."""
        gone = set()
        for name, peer in self.peers.items():
            if peer.alive and now - peer.last_heard > self.dead_after:
                peer.alive = False
                gone.add(name)
        return frozenset(gone)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpMembership) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner._datagram(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer whose speaker is down: expected.
        log.debug("heartbeat socket: %s", exc)


class UdpMembership:
    """The `Liveness` of file mode (see the module docstring)."""

    def __init__(self, me: str, *, port: int = DEFAULT_PORT, interval: float = 0.05,
                 dead_after: float = 0.2, bind: str | None = None) -> None:
        if dead_after <= interval:
            raise ValueError(f"dead_after ({dead_after}s) must exceed the heartbeat interval "
                             f"({interval}s), or every peer flaps")
        self.me = me
        self.port = port
        self.interval = interval
        self.view = View(me, dead_after)
        self.bind = bind
        self.incarnation = time.time_ns()
        self._seq = 0
        self._addresses: dict[str, tuple[IPAddress, ...]] = {}
        self._targets: list[tuple[str, int]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_change: OnChange | None = None
        self._started_at = 0.0
        self._ignored = 0
        # Alone (nobody to tell, nobody alive to watch) the loops sleep on these
        # instead of waking 60 times a second for nothing.
        self._has_targets = asyncio.Event()
        self._someone_alive = asyncio.Event()

    # -- Liveness -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        # After one detection window every live peer has been heard, so the view
        # is as good as it gets; earlier, silence means nothing yet.
        return self._started_at > 0 and (
            time.monotonic() - self._started_at > self.view.dead_after
            or self.view.live() >= self.view.members)

    def set_members(self, members: Mapping[str, tuple[IPAddress, ...]]) -> None:
        before = self.view.live()
        self._addresses = {n: tuple(a) for n, a in members.items()}
        self.view.set_members(frozenset(members))
        targets = []
        for name, addresses in sorted(self._addresses.items()):
            if name == self.me or not addresses:
                continue
            # One address per peer: IPv4 preferred, as the node's primary IP.
            address = min(addresses, key=lambda a: a.version)
            targets.append((_socket_address(address), self.port))
        self._targets = targets
        if targets:
            self._has_targets.set()
        after = self.view.live()
        if after != before:
            self._notify(after - before, before - after)

    def live(self) -> frozenset[str]:
        return self.view.live()

    async def start(self, on_change: OnChange) -> None:
        self._on_change = on_change
        loop = asyncio.get_running_loop()
        sock = _dual_stack_socket(self.bind, self.port)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        self._started_at = time.monotonic()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="heartbeats"),
                       asyncio.create_task(self._expire_loop(), name="expiry")]

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Three copies, a millisecond apart: one lost datagram must not cost a
        # full detection timeout.
        for _ in range(3):
            self._send(LEAVING)
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- internals ------------------------------------------------------------------------

    def _send(self, kind: int) -> None:
        if self._transport is None:
            return
        self._seq += 1
        data = Message(kind, self.me, self.incarnation, self._seq).encode()
        for target in self._targets:
            self._transport.sendto(data, target)

    async def _heartbeat_loop(self) -> None:
        while True:
            if not self._targets:
                self._has_targets.clear()
                await self._has_targets.wait()
            self._send(ALIVE)
            await asyncio.sleep(self.interval)

    async def _expire_loop(self) -> None:
        # Twice per heartbeat: detection lags the deadline by at most half an interval.
        tick = self.interval / 2
        last = time.monotonic()
        while True:
            if not any(peer.alive for peer in self.view.peers.values()):
                self._someone_alive.clear()
                await self._someone_alive.wait()
                last = time.monotonic()  # asleep on purpose: not a stall to forgive
            await asyncio.sleep(tick)
            now = time.monotonic()
            late = now - last - tick
            last = now
            if late > tick:
                self.view.forgive(late)
            gone = self.view.expire(now)
            if gone:
                log.warning("peer%s %s silent for %.0f ms: considered dead",
                            "s" if len(gone) > 1 else "", ", ".join(sorted(gone)),
                            self.view.dead_after * 1000)
                self._notify(frozenset(), gone)

    def _datagram(self, data: bytes, source: str) -> None:
        msg = Message.decode(data)
        if msg is None:
            self._count_ignored(f"malformed heartbeat from {source}")
            return
        allowed = self._addresses.get(msg.name, ())
        if _normalise(source) not in {str(a) for a in allowed}:
            self._count_ignored(f"heartbeat naming {msg.name!r} from {source}, which is not "
                                f"one of that Node's InternalIPs")
            return
        before = self.view.live()
        changed = self.view.receive(msg, time.monotonic())
        self._someone_alive.set()
        if changed:
            after = self.view.live()
            joined, left = after - before, before - after
            if left:
                log.info("peer %s is leaving", ", ".join(sorted(left)))
            if joined:
                log.info("peer %s is alive", ", ".join(sorted(joined)))
            self._notify(joined, left)

    def _count_ignored(self, why: str) -> None:
        self._ignored += 1
        # Powers of two: the first few are seen, a flood does not fill the log.
        if self._ignored & (self._ignored - 1) == 0:
            log.warning("ignored %s (%d ignored so far)", why, self._ignored)

    def _notify(self, joined: frozenset[str], left: frozenset[str]) -> None:
        if self._on_change is not None:
            self._on_change(joined, left)


def _socket_address(address: IPAddress) -> str:
    # The socket is AF_INET6 when it can be; IPv4 peers are reached as mapped addresses.
    return str(address) if address.version == 6 else f"::ffff:{address}"


def _normalise(source: str) -> str:
    ip = ipaddress.ip_address(source.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _dual_stack_socket(bind: str | None, port: int) -> socket.socket:
    """One UDP socket for both families (IPv4 peers as mapped addresses)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind or "::", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
