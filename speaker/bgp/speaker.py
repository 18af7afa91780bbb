"""The BGP speaker: a set of peers, the listening sockets, and the route API.

How a daemon drives it (all on one asyncio loop):

    speaker = BgpSpeaker(router_id="10.0.0.5")
    speaker.add_peer(PeerConfig(peer_address="10.0.0.1", peer_asn=65112, my_asn=64512))
    await speaker.start()                     # listen (port 179) and connect out
    speaker.set_routes("10.0.0.1", {ip_network("192.0.2.10/32"): RouteAttrs()})
    speaker.set_routes("10.0.0.1", {})        # withdraws it
    speaker.status()                          # per-peer state, uptime, counters
    await speaker.shutdown("node drain")      # Cease / Administrative Shutdown to all

`set_routes` hands a peer its whole desired set (MetalLB's `Set(advs...)`); the
peer diffs, returns the change and edits its table at once; each established
session's sender task flushes the changes after `batch_delay` (20 ms), packed
into as few UPDATEs as the attribute sets allow, so a burst of calls reaches the
wire in one go rather than as an UPDATE per call (bench/bgp_scale.py measures
large tables).  `update_routes(address, announce, withdraw)` changes the table
by a delta instead, at the cost of the delta: for a caller that knows what
changed (the daemon's announcer, between whole-set resyncs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable, Mapping

from speaker.api.peer_status import PeerStatus
from speaker.bfd.endpoint import BfdConfig, BfdEndpoint, BfdSession
from speaker.bfd.packet import Diag
from speaker.bfd.packet import State as BfdState
from speaker.bgp.nlri import Network
from speaker.bgp.peer import Peer, PeerConfig, RibChange, RouteAttrs
from speaker.bgp.session import Connection
from speaker.bgp.sockopts import set_md5, set_ttl, unmap

log = logging.getLogger("speaker.bgp")

DEFAULT_LISTEN = ("0.0.0.0", "::")


class BgpSpeaker:
    def __init__(self, router_id: str, *, listen_addresses: Iterable[str] | None = DEFAULT_LISTEN,
                 listen_port: int = 179, batch_delay: float = 0.02) -> None:
        """listen_addresses None (or empty) means connect out only, never listen."""
        self.router_id = router_id
        self.listen_addresses = tuple(listen_addresses or ())
        self.listen_port = listen_port
        self.batch_delay = batch_delay
        self.peers: dict[str, Peer] = {}
        self._servers: list[asyncio.Server] = []
        self._listen_socks: list[socket.socket] = []
        self._running = False
        self.bfd = BfdEndpoint()
        self._bfd_configs: dict[str, BfdConfig] = {}  # peer key -> its BFD session's config
        self.bfd_sessions: dict[str, BfdSession] = {}  # peer key -> running BFD session

    # -- peers -----------------------------------------------------------------------------

    def add_peer(self, config: PeerConfig, bfd: BfdConfig | None = None) -> Peer:
        """With `bfd`, a BFD session runs alongside, and its failure (Up -> Down)
        takes the BGP session down at once."""
        key = unmap(config.peer_address)
        if key in self.peers:
            raise ValueError(f"peer {key} is already configured")
        peer = Peer(config, self.router_id, self.batch_delay)
        self.peers[key] = peer
        if bfd is not None:
            self._bfd_configs[key] = bfd
        for sock in self._listen_socks:
            self._install_md5(sock, config)
        if self._running:
            self._start_bfd(key)
            peer.start()
        return peer

    async def remove_peer(self, address: str, reason: str = "peer de-configured") -> None:
        key = unmap(address)
        peer = self.peers.pop(key)
        await peer.stop(reason)
        self._stop_bfd(key)
        self._bfd_configs.pop(key, None)

    def set_bfd(self, address: str, bfd: BfdConfig | None) -> None:
        """Give a configured peer BFD, new BFD parameters, or none, leaving its BGP
        session alone (a running BFD session renegotiates its intervals in place)."""
        key = unmap(address)
        if key not in self.peers:
            raise KeyError(f"peer {key} is not configured")
        sess = self.bfd_sessions.get(key)
        if bfd is None:
            self._stop_bfd(key)
            self._bfd_configs.pop(key, None)
            return
        self._bfd_configs[key] = bfd
        if sess is not None and sess.config.multihop == bfd.multihop:
            self.bfd.reconfigure(sess, bfd)
            return
        self._stop_bfd(key)
        if self._running:
            self._start_bfd(key)

    def _start_bfd(self, key: str) -> None:
        config = self._bfd_configs.get(key)
        if config is None or key in self.bfd_sessions:
            return
        peer = self.peers[key]

        def changed(old: BfdState, new: BfdState, diag: Diag) -> None:
            sess = self.bfd_sessions.get(key)
            # The peer's AdminDown is not a failure (RFC 5882 §3.2): keep the session.
            if (old == BfdState.UP and sess is not None
                    and sess.vars.remote_state != BfdState.ADMIN_DOWN):
                peer.bfd_down(diag.text)

        try:
            self.bfd_sessions[key] = self.bfd.add(key, config,
                                                  local=peer.config.source_address,
                                                  on_change=changed)
        except (OSError, ValueError) as exc:
            log.error("BGP peer %s: cannot start BFD (%s); the session runs without it",
                      peer.name, exc)

    def _stop_bfd(self, key: str) -> None:
        sess = self.bfd_sessions.pop(key, None)
        if sess is not None:
            self.bfd.remove(sess)

    def _install_md5(self, sock: socket.socket, config: PeerConfig) -> None:
        if not config.password:
            return
        v6_peer = ":" in config.peer_address
        if (sock.family == socket.AF_INET6) == v6_peer:
            set_md5(sock, config.peer_address, config.password)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for address in self.listen_addresses:
            await self._listen(address)
        self._running = True
        for key, peer in self.peers.items():
            self._start_bfd(key)
            peer.start()

    async def _listen(self, address: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for peer in self.peers.values():
                self._install_md5(sock, peer.config)
            sock.bind((address, self.listen_port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listen_socks.append(sock)
        self._servers.append(await asyncio.start_server(self._incoming, sock=sock))

    async def _incoming(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, outgoing=False)
        peer = self.peers.get(conn.remote_address)
        if peer is None or not self._running:
            log.warning("BGP: refusing connection from unconfigured address %s",
                        conn.remote_address)
            conn.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                set_ttl(sock, peer.config.ttl)
        peer.accept(conn)

    async def shutdown(self, reason: str = "") -> None:
        """Send Cease / Administrative Shutdown to every peer and close all sockets."""
        self._running = False
        for server in self._servers:
            server.close()
        await asyncio.gather(*(peer.stop(reason) for peer in self.peers.values()))
        for key in list(self.bfd_sessions):
            self._stop_bfd(key)
        self.bfd.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self._listen_socks.clear()

    # -- routes ----------------------------------------------------------------------------

    def set_routes(self, address: str, routes: Mapping[Network, RouteAttrs]) -> RibChange:
        """Make what peer `address` is sent exactly `routes`."""
        return self.peers[unmap(address)].set(routes)

    def update_routes(self, address: str, announce: Mapping[Network, RouteAttrs],
                      withdraw: Iterable[Network] = ()) -> RibChange:
        """Change what peer `address` is sent by a delta (`Peer.update`)."""
        return self.peers[unmap(address)].update(announce, withdraw)

    # -- queries ---------------------------------------------------------------------------

    def status(self) -> list[PeerStatus]:
        return [peer.status() for peer in self.peers.values()]
