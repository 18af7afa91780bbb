"""The gRPC API server (skein.v1.Speaker), on the daemon's own event loop.

Transport:
  - a unix socket by default (`/run/skein/speaker.sock`): its directory is
    created 0700 when missing and the socket is 0600 from the moment it is
    bound, so only root (the daemon's user) can connect: the kernel refuses
    anyone else at connect().  gRPC's Python server does not expose the
    connection's file descriptor, so peer credentials (SO_PEERCRED) are not
    checked on top of that.  `PATH.lock` beside it, flock'ed while the server
    lives, tells a stale socket (replaced) from a live one (left alone: this
    speaker runs without the API, logged), with no race between two starts;
  - TCP only when asked (`tcp://HOST:PORT`), and then always with TLS; with a
    client CA, mutual TLS: a client without a certificate signed by it is
    refused in the handshake.

Calls run on the daemon's loop, so they read its state between two awaits of
the daemon: never a half-applied plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from foundation.kube.model.fields import unannounceable
from speaker.api import view
from speaker.api.events import Event
from speaker.api.peer_status import PeerStatus
from speaker.api.stubs import pb, rpc
from speaker.api.view import RouteView

if TYPE_CHECKING:
    from speaker.daemon import Daemon

log = logging.getLogger("speaker.api")

DEFAULT_SOCKET = "/run/skein/speaker.sock"
APPLY_TIMEOUT = 30.0

_EVENT_KINDS = {"announce": pb.Event.ANNOUNCE, "withdraw": pb.Event.WITHDRAW,
                "owner": pb.Event.OWNER, "peer": pb.Event.PEER, "synced": pb.Event.SYNCED,
                "conflict": pb.Event.CONFLICT}


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    client_ca: str | None = None  # set: mutual TLS

    def credentials(self) -> grpc.ServerCredentials:
        with open(self.key, "rb") as f:
            key = f.read()
        with open(self.cert, "rb") as f:
            cert = f.read()
        ca = None
        if self.client_ca is not None:
            with open(self.client_ca, "rb") as f:
                ca = f.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=ca is not None)


def peer_message(peer: PeerStatus) -> Any:
    """The API's `Peer` message; `PeerStatus.from_message` reads it back."""
    return pb.Peer(kind=peer.kind, name=peer.name, state=peer.state,
                   has_uptime=peer.uptime is not None, uptime_seconds=peer.uptime or 0.0,
                   peer_asn=peer.peer_asn, local_asn=peer.local_asn, last_error=peer.last_error,
                   prefixes_advertised=peer.prefixes_advertised,
                   addresses=list(peer.addresses))


def route_message(route: RouteView) -> Any:
    return pb.Announcement(address=route.address, mode=route.mode, owner=route.owner,
                           local=route.local, manual=route.manual, services=list(route.services),
                           interfaces=list(route.interfaces))


def event_message(event: Event, node: str) -> Any:
    msg = pb.Event(kind=_EVENT_KINDS[event.kind], time=event.time, node=node,
                   initial=event.initial, address=event.address, mode=event.mode,
                   owner=event.owner, previous_owner=event.previous_owner,
                   previous_state=event.previous_state, interface=event.interface,
                   mac=event.mac, detail=event.detail)
    if event.peer is not None:
        msg.peer.CopyFrom(peer_message(event.peer))
    return msg


class SpeakerService(rpc.SpeakerServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def ListPeers(self, request: Any, context: Any) -> Any:
        peers = view.peers(self.daemon, self.daemon.events.alive_since)
        return pb.ListPeersResponse(node=self.daemon.node, peers=[peer_message(p) for p in peers])

    async def ListAnnouncements(self, request: Any, context: Any) -> Any:
        return pb.ListAnnouncementsResponse(
            node=self.daemon.node,
            announcements=[route_message(r) for r in view.routes(self.daemon)])

    async def _address(self, text: str, context: Any) -> Any:
        try:
            return ipaddress.ip_address(text.strip())
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"not an IP address: {text!r}")

    async def _applied(self, generation: int, context: Any) -> None:
        try:
            async with asyncio.timeout(APPLY_TIMEOUT):
                await self.daemon.manual.wait_applied(generation)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                "recorded, but the daemon has not re-planned yet (is it "
                                "still starting?)")

    async def Announce(self, request: Any, context: Any) -> Any:
        address = await self._address(request.address, context)
        reason = unannounceable(address)
        if reason is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{address} is {reason}: it cannot be announced")
        log.info("announce %s by hand (API)", address)
        await self._applied(self.daemon.manual.add(address), context)
        mine = [r for r in view.routes(self.daemon) if r.address == str(address) and r.local]
        return pb.AnnounceResponse(announcements=[route_message(r) for r in mine])

    async def Withdraw(self, request: Any, context: Any) -> Any:
        address = await self._address(request.address, context)
        if address not in self.daemon.manual.addresses:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"{address} was not announced by hand; addresses of Services "
                                "follow the cluster state")
        log.info("withdraw %s by hand (API)", address)
        await self._applied(self.daemon.manual.remove(address), context)
        return pb.WithdrawResponse()

    async def WatchEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        bus, node = self.daemon.events, self.daemon.node
        sub = bus.subscribe(self.daemon)
        try:
            if request.initial_state:
                for event in bus.current(self.daemon):
                    yield event_message(event, node)
            yield event_message(Event("synced"), node)
            while True:
                next_event = await sub.get()
                if next_event is None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        f"fell more than {bus.queue_size} events behind; "
                                        "events were lost: watch again")
                    return
                yield event_message(next_event, node)
        finally:
            sub.close()


class ApiServer:
    def __init__(self, daemon: Daemon, socket_path: str | None = DEFAULT_SOCKET,
                 tcp_address: str | None = None, tls: TlsFiles | None = None) -> None:
        if tcp_address is not None and tls is None:
            raise ValueError("the TCP listener needs TLS (a certificate and its key)")
        self.daemon = daemon
        self.socket_path = socket_path
        self.tcp_address = tcp_address
        self.tls = tls
        self.endpoints: list[str] = []
        self._server: aio.Server | None = None
        self._socket_inode: int | None = None
        self._lock: int | None = None

    async def start(self) -> None:
        """Listen.  A unix socket that cannot be served (held by a live process, no
        permission) is logged and skipped; a TCP listener that fails raises OSError."""
        server = aio.server()
        rpc.add_SpeakerServicer_to_server(SpeakerService(self.daemon), server)
        if self.socket_path:
            self._bind_unix(server, self.socket_path)
        if self.tcp_address is not None and self.tls is not None:
            try:
                port = server.add_secure_port(self.tcp_address, self.tls.credentials())
            except RuntimeError as exc:  # grpc says only "Failed to bind"
                raise OSError(f"cannot listen on {self.tcp_address} for the API: {exc}") from exc
            host = self.tcp_address.rpartition(":")[0]
            self.endpoints.append(f"tcp://{host}:{port}")
        await server.start()
        self._server = server
        for endpoint in self.endpoints:
            log.info("API on %s%s", endpoint,
                     " (mutual TLS)" if endpoint.startswith("tcp") and self.tls
                     and self.tls.client_ca else "")

    def _bind_unix(self, server: aio.Server, path: str) -> None:
        try:
            self._claim_and_bind(server, os.path.abspath(path))
        except (OSError, RuntimeError) as exc:  # the daemon's job goes on without the API
            log.error("cannot serve the API on %s (%s); this speaker runs without it",
                      path, exc)

    def _claim_and_bind(self, server: aio.Server, path: str) -> None:
        """Bind `path` if no live process holds it: its lock file (`PATH.lock`, flock'ed
        while this server lives; the kernel drops it when the process dies) says who does,
        so a stale socket is replaced and a live one is never stolen."""
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise OSError("another process (another speaker?) serves it") from None
        self._lock = lock
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise OSError(f"{path} exists and is not a socket")
            os.unlink(path)
        old = os.umask(0o177)  # the socket is born 0600: no window for another user
        try:
            server.add_insecure_port(f"unix:{path}")
        finally:
            os.umask(old)
        self._socket_inode = os.stat(path).st_ino
        self.endpoints.append(f"unix:{path}")

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        path = self.socket_path and os.path.abspath(self.socket_path)
        if path and self._socket_inode is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == self._socket_inode:
                    os.unlink(path)
            self._socket_inode = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None
