"""skein-agent's side of the fast path: CNI requests over a unix socket.

`skein` forwards env + config here (see cni_plugin/fastpath.py) and prints
what comes back.  Each request runs in its own thread with the very same
plugin code as the executable, already imported, skein-ipam called
in-process; setns is per thread (foundation/netlink/netns.py), so parallel ADDs run
concurrently and safely.  Every worker thread blocks in accept(2) on the
listening socket itself: the kernel hands each connection to one waiting
thread, which serves it, so no request waits for a hand-over between an
accepting thread and a pool.

While it works on an attachment the agent holds that attachment's lock:
a plugin whose agent died mid-request waits for the kernel to drop the lock,
then undoes and redoes the work itself.  Only root may talk to the socket:
the directory is 0700, the socket 0600, and the peer's uid is checked with
SO_PEERCRED as well (a socket handed over a bind mount keeps its mode, not
its directory's).

A worker holds a connection only as long as the caller deserves: the uid is
checked before a byte is read (anyone else is answered at once, unread), the
request must arrive whole within READ_DEADLINE and within the size limits
(a real one is a few kilobytes, sent in one write right after connecting), so
idle or oversized connections cannot keep the workers from real requests for
long; a client that still waits then falls back to doing the work itself.
Once read, the request is acknowledged (fastpath.ACK); it is acted on only
while its attachment's lock is held and its client is still connected, checked
once the lock is held: a client that gave up (its agent was stopped, say, and
resumed later) may already be doing the work itself, so its request is
dropped, never applied late.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cni_plugin import attachment, fastpath
from foundation.cni import spec
from foundation.cni.skel import Plugin, dispatch, error_reply
from foundation.cni.spec import CniError

if TYPE_CHECKING:
    from cni_plugin.agent.metrics import AgentMetrics

log = logging.getLogger("skein.agent.fastpath")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# How long a request waits for another one on the same attachment to finish:
# less than the client waits for the reply, so the client hears why.
LOCK_TIMEOUT = fastpath.REPLY_TIMEOUT - 5.0
LOCK_SLICE = 0.25  # between two looks at whether the waiting client is still there
# The whole request, from accept: the client sends it at once, in one write.
READ_DEADLINE = 1.0
SEND_TIMEOUT = 5.0
REFUSAL_LOG_INTERVAL = 60.0  # one warning per this many seconds about callers not root


class ClientGone(Exception):
    """The caller closed its end: it no longer waits for this request."""


class FastPathServer:
    def __init__(self, path: str, plugin_factory: Callable[[], Plugin], workers: int = 32,
                 pause_before_reply: float = 0.0,
                 after_reply: Callable[[], None] | None = None,
                 metrics: AgentMetrics | None = None) -> None:
        self.path = path
        self.plugin_factory = plugin_factory
        self.workers = workers
        self.pause_before_reply = pause_before_reply
        # Work no answer waits for (the next lease file), done once the answer is out.
        self.after_reply = after_reply
        self.metrics = metrics
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        # The agent's own environment (PATH and the like) under each request's
        # CNI_* variables; read once, not per request.
        self._own_environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        self._refusals = 0
        self._last_refusal_log = -REFUSAL_LOG_INTERVAL

    def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a previous agent's; connecting to it fails anyway
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(256)
        self._sock = sock
        for n in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(sock,), name=f"cni-{n}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("fast path listening on %s", self.path)

    def close(self) -> None:
        """Stop accepting, let the requests in progress finish, then return."""
        self._closing.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes every accept(2)
            except OSError:
                pass
            self._sock.close()
        for thread in self._threads:
            thread.join()

    def _worker(self, sock: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.01)  # EMFILE and the like: let it pass, keep serving
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(SEND_TIMEOUT)
                self._serve_one(conn)
        except ClientGone as gone:
            log.warning("dropped %s: its client has gone, it may be doing the work itself",
                        gone)
            if self.metrics is not None:
                self.metrics.fell_back("client_gone")
        except Exception as exc:  # noqa: BLE001 - one bad client never stops the server
            log.error("fast path request failed: %s: %s", type(exc).__name__, exc)

    def _serve_one(self, conn: socket.socket) -> None:
        _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     _PEERCRED.size))
        if uid != 0:
            self._refuse(conn, uid)
            return
        client_env, stdin = read_request(conn, time.monotonic() + READ_DEADLINE)
        conn.settimeout(SEND_TIMEOUT)
        try:
            conn.sendall(fastpath.ACK)
        except OSError:
            raise ClientGone(_describe(client_env)) from None
        environ = dict(self._own_environ)
        environ.update({k: v for k, v in client_env.items() if k.startswith("CNI_")})
        started = time.monotonic()
        code, out = self._run(conn, environ, stdin)
        if self.pause_before_reply:
            time.sleep(self.pause_before_reply)  # fault injection for the tests
        try:
            self._reply(conn, code, out)
        except OSError:
            if self.metrics is not None:
                self.metrics.fell_back("reply_lost")
            raise
        if self.metrics is not None:
            self.metrics.served(environ.get("CNI_COMMAND", ""), code,
                                time.monotonic() - started)
        if self.after_reply is not None:
            self.after_reply()

    def _refuse(self, conn: socket.socket, uid: int) -> None:
        """Answer a caller that is not root without reading its request (its
        cniVersion is unknown: the newest is used)."""
        err = CniError(spec.ERR_INVALID_ENV, f"skein-agent serves only root, not uid {uid}",
                       "run the container runtime as root")
        self._refusals += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
            self._last_refusal_log = now
            log.warning("refused a fast path request from uid %d (%d refused so far)", uid,
                        self._refusals)
        try:
            self._reply(conn, *error_reply(err, b""))
        except OSError:
            pass  # it did not wait for the answer: said in the warning above

    def _run(self, conn: socket.socket, environ: dict[str, str],
             stdin: bytes) -> tuple[int, str]:
        command = environ.get("CNI_COMMAND", "")
        container_id = environ.get("CNI_CONTAINERID", "")
        ifname = environ.get("CNI_IFNAME", "")
        lock = None
        if container_id and command in ("ADD", "DEL", "CHECK"):
            lock = self._lock(conn, environ, container_id, ifname)
            if lock is None:
                err = CniError(spec.ERR_TRY_AGAIN_LATER,
                               f"another {command} of {container_id}/{ifname} has been running "
                               f"for {LOCK_TIMEOUT:g} s", "retry later")
                return error_reply(err, stdin)
        try:
            # Checked with the lock held: a client that has gone may be doing the
            # work itself (cni_plugin/fallback.py takes the same lock first).
            if client_gone(conn):
                raise ClientGone(_describe(environ))
            started = time.monotonic()
            code, out = dispatch(self.plugin_factory(), environ, stdin)
            log.debug("served %s %s in %.1f ms (exit %d)", command, container_id,
                      1000 * (time.monotonic() - started), code)
            return code, out
        finally:
            if lock is not None:
                attachment.unlock(lock)

    def _lock(self, conn: socket.socket, environ: dict[str, str], container_id: str,
              ifname: str) -> int | None:
        """The attachment's lock, waited for while the client waits too."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            lock = attachment.lock(self.path, container_id, ifname,
                                   timeout=min(LOCK_SLICE, max(0.0, deadline - time.monotonic())))
            if lock is not None:
                return lock
            if client_gone(conn):
                raise ClientGone(_describe(environ))
            if time.monotonic() >= deadline:
                return None

    @staticmethod
    def _reply(conn: socket.socket, code: int, out: str) -> None:
        conn.sendall(fastpath.encode_reply(code, out))


def read_request(conn: socket.socket, deadline: float) -> tuple[dict[str, str], bytes]:
    """One whole request by `deadline` (time.monotonic()); ValueError for one
    that is malformed or over the limits (said as soon as its header shows
    it), TimeoutError past the deadline, ConnectionError if the client hangs up."""
    data = bytearray()

    def need(size: int) -> None:
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole request within {READ_DEADLINE:g} s")
            conn.settimeout(left)
            try:
                chunk = conn.recv(max(size - len(data), 65536))
            except TimeoutError:
                raise TimeoutError(f"no whole request within {READ_DEADLINE:g} s") from None
            if not chunk:
                raise ConnectionError("connection closed before a whole request")
            data.extend(chunk)

    need(8)
    if data[:4] != fastpath.MAGIC:
        raise ValueError("not a skein fast path request (or another version's)")
    env_size = int.from_bytes(data[4:8], "big")
    if env_size > fastpath.MAX_ENV:
        raise ValueError(f"request too large (environment of {env_size} bytes)")
    need(12 + env_size)
    stdin_size = int.from_bytes(data[8 + env_size:12 + env_size], "big")
    if stdin_size > fastpath.MAX_STDIN:
        raise ValueError(f"request too large (config of {stdin_size} bytes)")
    need(12 + env_size + stdin_size)
    return fastpath.decode_request(bytes(data))


def client_gone(conn: socket.socket) -> bool:
    """Whether the caller has closed its end (it sends nothing after its request)."""
    timeout = conn.gettimeout()
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: gone as well
        return True
    finally:
        conn.settimeout(timeout)


def _describe(environ: dict[str, str]) -> str:
    return " ".join(filter(None, (environ.get("CNI_COMMAND"), environ.get("CNI_CONTAINERID"),
                                  environ.get("CNI_IFNAME"))))
