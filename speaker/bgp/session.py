"""One TCP connection carrying BGP: opening it (active side), framing what arrives,
and writing encoded messages.

Kept free of protocol decisions: the connection hands every decoded message or
codec error to a callback and reports when the stream ends; the peer object feeds
those into its FSM.  The socket is prepared before `connect()` because TCP MD5,
the TTL and the source address must be in place before the SYN leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from speaker.bgp import message
from speaker.bgp.errors import BgpError
from speaker.bgp.header import split_messages
from speaker.bgp.negotiated import ASSUMED, Negotiated
from speaker.bgp.sockopts import set_md5, set_ttl, unmap

log = logging.getLogger(__name__)

READ_SIZE = 65536


async def open_connection(peer_address: str, port: int, *, source_address: str | None,
                          password: str | None, ttl: int,
                          timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect with MD5, TTL and source binding applied before the SYN."""
    family = socket.AF_INET6 if ":" in peer_address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if password:
            set_md5(sock, peer_address, password)
        set_ttl(sock, ttl)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_address:
            sock.bind((source_address, 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (peer_address, port)), timeout)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


class Connection:
    """A connected BGP transport; `outgoing` tells who opened it (collision rule)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 outgoing: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.outgoing = outgoing
        sockname = writer.get_extra_info("sockname")
        peername = writer.get_extra_info("peername")
        # Only IP sockets have addresses (tests drive sessions over socketpairs).
        self.local_address = unmap(sockname[0]) if isinstance(sockname, tuple) else ""
        self.remote_address = unmap(peername[0]) if isinstance(peername, tuple) else ""
        self.negotiated: Negotiated = ASSUMED  # the OPEN exchange replaces it
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    def start_reading(self, on_message: Callable[[message.Message], None],
                      on_error: Callable[[BgpError], None],
                      on_closed: Callable[[str], None]) -> None:
        """Read until closed or until a message fails to decode (`on_error`): every
        error the codec raises needs a session reset; the ones RFC 7606 handles
        otherwise arrive inside the decoded UPDATE."""
        self._task = asyncio.get_running_loop().create_task(
            self._read_loop(on_message, on_error, on_closed))

    async def _read_loop(self, on_message: Callable[[message.Message], None],
                         on_error: Callable[[BgpError], None],
                         on_closed: Callable[[str], None]) -> None:
        buffer = bytearray()
        reason = "connection closed by peer"
        try:
            while not self.closed:
                chunk = await self.reader.read(READ_SIZE)
                if not chunk:
                    if buffer:
                        reason = f"connection closed in the middle of a message ({len(buffer)} " \
                                 "bytes pending)"
                    break
                buffer += chunk
                try:
                    raw_messages, used = split_messages(buffer)
                except BgpError as err:
                    on_error(err)
                    return
                del buffer[:used]
                for raw in raw_messages:
                    if self.closed:
                        return
                    try:
                        msg = message.decode(raw, self.negotiated)
                    except BgpError as err:
                        on_error(err)
                        return
                    on_message(msg)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            return
        if not self.closed:
            on_closed(reason)

    def send(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            return
        self.writer.write(data)

    async def drain(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()

    def close(self) -> None:
        """Close after the transport has flushed what was written (a NOTIFICATION sent
        just before must reach the peer)."""
        if self.closed:
            return
        self.closed = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.writer.close()

    async def wait_closed(self, timeout: float = 2.0) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
