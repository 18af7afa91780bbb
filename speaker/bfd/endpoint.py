"""The asyncio UDP layer of BFD: sockets, timers and demultiplexing around the pure
session machine (`speaker.bfd.session`).

One `BfdEndpoint` per speaker.  It listens on UDP 3784 (single hop, RFC 5881) and
4784 (multihop, RFC 5883), opened for each address family when a session first
needs it, and reads each datagram's TTL (hop limit) from ancillary data:
  - single hop: only TTL 255 is accepted (RFC 5881 §5, the GTSM check), so a
    packet from off-link cannot reach a session;
  - multihop: the TTL must be at least the session's minimum TTL (the profile's
    `minimumTtl`).
A packet goes to the session its Your Discriminator names, or with 0 there, to the
session for its source address.

Each session sends from its own socket: bound to the configured source address
(if any) and to one port of 49152-65535 for its whole life, TTL 255 (RFC 5881 §4,
RFC 5883 §2).  Packets go out with `sendto` from the event loop; a failure (the
link is down) is logged once per session and otherwise ignored, as the peer's
silence is what detection is about.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from speaker.bfd import session as machine
from speaker.bfd.packet import BfdDecodeError, Diag, State, decode
from speaker.bfd.session import Params, Vars

log = logging.getLogger("speaker.bfd")

SINGLE_HOP_PORT = 3784
MULTIHOP_PORT = 4784
SOURCE_PORTS = range(49152, 65536)
GTSM_TTL = 255
_IP_RECVTTL = 12  # Linux; Python's socket module has no name for it
_CMSG_SPACE = socket.CMSG_SPACE(4)

StateCallback = Callable[[State, State, Diag], None]


@dataclass(frozen=True)
class BfdConfig:
    """A session as a BGP session asks for it."""

    params: Params = Params()
    multihop: bool = False
    minimum_ttl: int = 254  # multihop only


@dataclass
class BfdSession:
    peer: str
    local: str | None
    config: BfdConfig
    vars: Vars
    on_change: StateCallback | None = None
    sock: socket.socket | None = None
    _tx: asyncio.TimerHandle | None = None
    _detect: asyncio.TimerHandle | None = None
    _tx_interval: float = 0.0
    _send_failed: bool = False
    _decode_warned: set[str] = field(default_factory=set)
    packets_in: int = 0
    packets_out: int = 0

    @property
    def state(self) -> State:
        return self.vars.state

    @property
    def key(self) -> tuple[str, bool]:
        return (self.peer, self.config.multihop)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _ttl_of(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL),
                             (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)) and len(data) >= 4:
            return int(struct.unpack("=i", data[:4])[0])
    return None


class BfdEndpoint:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, bool], BfdSession] = {}
        self._by_discr: dict[int, BfdSession] = {}
        self._listeners: dict[tuple[socket.AddressFamily, bool], socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ttl_warned: set[tuple[str, int]] = set()

    # -- sessions ---------------------------------------------------------------------------

    def add(self, peer: str, config: BfdConfig, *, local: str | None = None,
            on_change: StateCallback | None = None) -> BfdSession:
        """Start a session with `peer` (in state Down; it sends at once unless passive)."""
        self._loop = asyncio.get_running_loop()
        key = (peer, config.multihop)
        if key in self.sessions:
            raise ValueError(f"a BFD session with {peer} already exists")
        self._listen(_family(peer), config.multihop)
        discr = random.randint(1, 0xFFFFFFFF)
        while discr in self._by_discr:
            discr = random.randint(1, 0xFFFFFFFF)
        sess = BfdSession(peer, local, config, Vars(local_discr=discr, params=config.params),
                          on_change, sock=self._sender(peer, local))
        self.sessions[key] = sess
        self._by_discr[discr] = sess
        log.info("BFD peer %s: session started (%s, tx %d ms, rx %d ms, multiplier %d%s)",
                 peer, "multihop" if config.multihop else "single hop",
                 config.params.desired_min_tx_us // 1000,
                 config.params.required_min_rx_us // 1000, config.params.detect_mult,
                 ", passive" if config.params.passive else "")
        self._schedule_tx(sess, first=True)
        return sess

    def reconfigure(self, sess: BfdSession, config: BfdConfig) -> None:
        """New parameters for a running session, without tearing it down: the peer
        learns new intervals through a Poll Sequence.  Single hop vs multihop is the
        session's identity (its port): changing it takes remove() and add()."""
        if config.multihop != sess.config.multihop:
            raise ValueError(f"BFD peer {sess.peer}: cannot switch single hop / multihop "
                             "in place")
        if self.sessions.get(sess.key) is not sess or config == sess.config:
            return
        sess.config = config
        p = config.params
        log.info("BFD peer %s: parameters changed (tx %d ms, rx %d ms, multiplier %d%s)%s",
                 sess.peer, p.desired_min_tx_us // 1000, p.required_min_rx_us // 1000,
                 p.detect_mult, ", passive" if p.passive else "",
                 ", polling the peer" if sess.state == State.UP else "")
        self._handle(sess, machine.Reconfigure(p))

    def remove(self, sess: BfdSession) -> None:
        """AdminDown to the peer (so it does not take our stopping for a failure),
        then the session is gone."""
        if self.sessions.get(sess.key) is not sess:
            return
        sess.on_change = None  # the owner is removing it: no callbacks any more
        self._handle(sess, machine.AdminStop())
        for handle in (sess._tx, sess._detect):
            if handle is not None:
                handle.cancel()
        del self.sessions[sess.key]
        self._by_discr.pop(sess.vars.local_discr, None)
        if sess.sock is not None:
            sess.sock.close()
            sess.sock = None

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self.remove(sess)
        for sock in self._listeners.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()

    # -- sockets ----------------------------------------------------------------------------

    def _listen(self, family: socket.AddressFamily, multihop: bool) -> None:
        if (family, multihop) in self._listeners:
            return
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0",
                       MULTIHOP_PORT if multihop else SINGLE_HOP_PORT))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners[(family, multihop)] = sock
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._readable, sock, multihop)

    def _sender(self, peer: str, local: str | None) -> socket.socket:
        family = _family(peer)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, GTSM_TTL)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, GTSM_TTL)
            for port in random.sample(SOURCE_PORTS, 64):
                try:
                    sock.bind((local or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                               port))
                    break
                except OSError:
                    continue
            else:
                raise OSError(f"no free UDP source port in 49152-65535 for BFD to {peer}")
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _readable(self, sock: socket.socket, multihop: bool) -> None:
        for _ in range(64):  # drain a burst, then let others run
            try:
                data, ancdata, _flags, addr = sock.recvmsg(512, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("BFD: receive failed: %s", exc)
                return
            self._datagram(data, _ttl_of(ancdata), addr[0].split("%", 1)[0], multihop)

    def _datagram(self, data: bytes, ttl: int | None, source: str, multihop: bool) -> None:
        if source.startswith("::ffff:"):
            source = source[7:]
        try:
            pkt = decode(data)
        except BfdDecodeError as exc:
            sess = self.sessions.get((source, multihop))
            if sess is not None and str(exc) not in sess._decode_warned:
                sess._decode_warned.add(str(exc))
                log.warning("BFD peer %s: discarding packet: %s", source, exc)
            return
        sess = (self._by_discr.get(pkt.your_discriminator) if pkt.your_discriminator
                else self.sessions.get((source, multihop)))
        if sess is None or sess.peer != source or sess.config.multihop != multihop:
            return
        least = sess.config.minimum_ttl if multihop else GTSM_TTL
        if ttl is None or ttl < least:
            if (source, ttl or 0) not in self._ttl_warned:
                self._ttl_warned.add((source, ttl or 0))
                log.warning("BFD peer %s: discarding packets with TTL %s (need %s %d)",
                            source, ttl, "at least" if multihop else "exactly", least)
            return
        sess.packets_in += 1
        self._handle(sess, machine.Received(pkt))

    # -- the machine ------------------------------------------------------------------------

    def _handle(self, sess: BfdSession, event: machine.Event) -> None:
        sess.vars, actions = machine.handle(sess.vars, event)
        for action in actions:
            if isinstance(action, machine.Send):
                self._send(sess, action.packet.encode())
            elif isinstance(action, machine.ArmDetection):
                if sess._detect is not None:
                    sess._detect.cancel()
                assert self._loop is not None
                sess._detect = self._loop.call_later(action.seconds, self._expired, sess)
            elif isinstance(action, machine.DisarmDetection):
                if sess._detect is not None:
                    sess._detect.cancel()
                    sess._detect = None
            elif isinstance(action, machine.StateChanged):
                self._changed(sess, action)
        if sess.key in self.sessions and machine.tx_interval(sess.vars) != sess._tx_interval:
            # A faster pace takes effect now (the peer's detection time already follows
            # the Desired Min TX we just sent); a slower one as well, being safe.
            self._schedule_tx(sess)

    def _changed(self, sess: BfdSession, change: machine.StateChanged) -> None:
        level = logging.WARNING if change.old == State.UP else logging.INFO
        log.log(level, "BFD peer %s: %s -> %s%s", sess.peer, change.old.text, change.new.text,
                f" ({change.diag.text})" if change.diag != Diag.NONE else "")
        if sess.on_change is not None:
            try:
                sess.on_change(change.old, change.new, change.diag)
            except Exception:  # the owner's bug must not stop BFD
                log.exception("BFD peer %s: state change handler failed", sess.peer)

    def _expired(self, sess: BfdSession) -> None:
        sess._detect = None
        if self.sessions.get(sess.key) is sess:
            self._handle(sess, machine.DetectionExpired())

    def _schedule_tx(self, sess: BfdSession, first: bool = False) -> None:
        if sess._tx is not None:
            sess._tx.cancel()
        sess._tx_interval = machine.tx_interval(sess.vars)
        delay = machine.jittered(sess._tx_interval, sess.config.params.detect_mult,
                                 random.random())
        assert self._loop is not None
        # The first packet goes out at once, not after a (slow) interval.
        sess._tx = self._loop.call_later(0 if first else delay, self._tick, sess)

    def _tick(self, sess: BfdSession) -> None:
        if self.sessions.get(sess.key) is not sess:
            return
        self._handle(sess, machine.TransmitDue())
        self._schedule_tx(sess)

    def _send(self, sess: BfdSession, data: bytes) -> None:
        if sess.sock is None:
            return
        port = MULTIHOP_PORT if sess.config.multihop else SINGLE_HOP_PORT
        try:
            sess.sock.sendto(data, (sess.peer, port))
        except OSError as exc:
            if not sess._send_failed:
                sess._send_failed = True
                log.warning("BFD peer %s: send failed: %s", sess.peer, exc.strerror or exc)
            return
        sess._send_failed = False
        sess.packets_out += 1
