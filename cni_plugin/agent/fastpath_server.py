"""skein-agent's side of the fast path: CNI requests over a unix socket.

`skein` forwards env + config here (see cni_plugin/fastpath.py) and prints
what comes back.  Each request runs in its own thread with the very same
plugin code as the executable, already imported, skein-ipam called
in-process; setns is per thread (cni_plugin/netns.py), so parallel ADDs run
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
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

from cni_plugin import attachment, fastpath, spec
from cni_plugin.skel import Plugin, dispatch, error_version
from cni_plugin.spec import CniError

log = logging.getLogger("skein.agent.fastpath")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# How long a request waits for another one on the same attachment to finish.
LOCK_TIMEOUT = 120.0


class FastPathServer:
    def __init__(self, path: str, plugin_factory: Callable[[], Plugin], workers: int = 32,
                 pause_before_reply: float = 0.0,
                 after_reply: Callable[[], None] | None = None) -> None:
        self.path = path
        self.plugin_factory = plugin_factory
        self.workers = workers
        self.pause_before_reply = pause_before_reply
        # Work no answer waits for (the next lease file), done once the answer is out.
        self.after_reply = after_reply
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        # The agent's own environment (PATH and the like) under each request's
        # CNI_* variables; read once, not per request.
        self._own_environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}

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
                conn.settimeout(30)
                self._serve_one(conn)
        except Exception as exc:  # noqa: BLE001 - one bad client never stops the server
            log.error("fast path request failed: %s: %s", type(exc).__name__, exc)

    def _serve_one(self, conn: socket.socket) -> None:
        _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     _PEERCRED.size))
        client_env, stdin = fastpath.recv_request(conn)
        if uid != 0:
            err = CniError(spec.ERR_INVALID_ENV, f"skein-agent serves only root, not uid {uid}",
                           "run the container runtime as root")
            log.warning("refused a fast path request from uid %d", uid)
            self._reply(conn, 1, json.dumps(err.to_dict(error_version(stdin))))
            return
        environ = dict(self._own_environ)
        environ.update({k: v for k, v in client_env.items() if k.startswith("CNI_")})
        code, out = self._run(environ, stdin)
        if self.pause_before_reply:
            time.sleep(self.pause_before_reply)  # fault injection for the tests
        self._reply(conn, code, out)
        if self.after_reply is not None:
            self.after_reply()

    def _run(self, environ: dict[str, str], stdin: bytes) -> tuple[int, str]:
        command = environ.get("CNI_COMMAND", "")
        container_id = environ.get("CNI_CONTAINERID", "")
        ifname = environ.get("CNI_IFNAME", "")
        lock = None
        if container_id and command in ("ADD", "DEL", "CHECK"):
            lock = attachment.lock(self.path, container_id, ifname, timeout=LOCK_TIMEOUT)
            if lock is None:
                err = CniError(spec.ERR_TRY_AGAIN_LATER,
                               f"another {command} of {container_id}/{ifname} has been running "
                               f"for {LOCK_TIMEOUT:g} s", "retry later")
                return 1, json.dumps(err.to_dict(error_version(stdin)))
        try:
            started = time.monotonic()
            code, out = dispatch(self.plugin_factory(), environ, stdin)
            log.debug("served %s %s in %.1f ms (exit %d)", command, container_id,
                      1000 * (time.monotonic() - started), code)
            return code, out
        finally:
            if lock is not None:
                attachment.unlock(lock)

    @staticmethod
    def _reply(conn: socket.socket, code: int, out: str) -> None:
        conn.sendall(fastpath.encode_reply(code, out))
