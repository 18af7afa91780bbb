"""The `skein` side of the fast path: hand the CNI request to skein-agent.

A Python plugin that imports pyroute2 on every exec spends ~150 ms before it
touches the kernel.  When the node agent runs, it keeps that state warm, so
`skein` only forwards the request (environment + config) over the agent's
unix socket and prints the answer.  This module therefore imports nothing but
the standard library, and nothing at all from the rest of the package.

The socket is named by the network config's `agentSocket` (the agent writes
it into the conflist), so a config without it never leaves the process.

Failure modes, and why each is safe:
- no socket, or nobody accepts within CONNECT_TIMEOUT: the agent is not
  there; `skein` does the work itself exactly as before (`forward` -> None).
- the agent accepted the request and then died or went silent: it may have
  done part of an ADD.  `forward` -> PARTIAL; the caller takes the
  attachment's lock (which the agent held while working, and which the kernel
  released when it died), undoes whatever was done (DEL is idempotent) and
  does the command itself.  Nothing is leaked and nothing is done twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Mapping

CONNECT_TIMEOUT = 0.5
REPLY_TIMEOUT = 120.0
MAX_FRAME = 16 * 1024 * 1024
PARTIAL = "partial"
_HEADER = struct.Struct("!I")


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = _HEADER.unpack(recv_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return recv_exact(sock, size)


def agent_socket(stdin: bytes) -> str | None:
    """The agent socket named by the config, or None."""
    try:
        conf = json.loads(stdin)
    except ValueError:
        return None
    path = conf.get("agentSocket") if isinstance(conf, dict) else None
    return path if isinstance(path, str) and path else None


def attachment_lock_path(socket_path: str, container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:32]
    return os.path.join(os.path.dirname(socket_path), "attachments", digest + ".lock")


def lock_attachment(socket_path: str, container_id: str, ifname: str,
                    timeout: float = 60.0) -> int | None:
    """flock the attachment's lock file; the fd (closing it unlocks), or None
    when it could not be had in time."""
    path = attachment_lock_path(socket_path, container_id, ifname)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def forward(environ: Mapping[str, str], stdin: bytes) -> tuple[int, str] | str | None:
    """(exit code, stdout) from the agent; None when there is no agent to ask;
    PARTIAL when the agent took the request but gave no answer."""
    if environ.get("CNI_COMMAND") in (None, "", "VERSION"):
        return None
    path = agent_socket(stdin)
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
            env = {k: v for k, v in environ.items() if k.startswith("CNI_")}
            send_frame(sock, json.dumps({"env": env, "stdin": stdin.decode("utf-8")}).encode())
        except (OSError, UnicodeDecodeError):
            return None
        try:
            sock.settimeout(REPLY_TIMEOUT)
            reply = json.loads(recv_frame(sock))
            return int(reply["code"]), str(reply["stdout"])
        except (OSError, ValueError, KeyError, TypeError):
            return PARTIAL
    finally:
        sock.close()
