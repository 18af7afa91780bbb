"""The `skein` side of the fast path: hand the CNI request to skein-agent.

A plugin process that imports and sets up everything an ADD needs pays for it
on every exec, before it touches the kernel.  When the node agent runs, it
keeps that state warm, so `skein` only forwards the request (environment +
config) over the agent's unix socket and prints the answer.  This module's
own start-up is paid per pod, so it imports almost nothing: no `json` (its
decoder pulls in `re`), no `socket` (which pulls in `enum`); `_socket` and a
byte search for the `agentSocket` key do the job.  The wire format is a few
length-prefixed byte strings for the same reason.  Under `python3 -S` not even
`os` is loaded yet (it brings `_collections_abc`), so the client side uses
`posix`, which is; nor is `__future__`: the annotations are evaluated, and
those naming what is not imported are strings.  bench/cni_add.py measures
what this saves.

The socket is named by the network config's `agentSocket` (the agent writes
it into the conflist), so a config without it never leaves the process.

On a node this module is more than imported: install/build_zipapps.py inlines
its source, verbatim, into the `skein` launcher script, which calls
`run_client` before it has loaded anything from the `skein.pyz` archive.  So
it must stay a single self-contained module: standard library only, and
nothing imported at module level that `python3 -I -S` has not already loaded
(`_socket` is the exception, on purpose).

Failure modes, and why each is safe:
- no socket, or nobody accepts within CONNECT_TIMEOUT: the agent is not
  there; `skein` does the work itself, as without an agent (`forward` -> None).
- the agent does not say it took the request (ACK) within ACCEPT_TIMEOUT
  (stopped, as by SIGSTOP, or every worker busy), or gives no answer within
  REPLY_TIMEOUT after that, or died: `forward` -> PARTIAL.  The caller takes
  the attachment's lock (cni_plugin/attachment.py: the agent holds it while
  working, and the kernel releases it when the agent dies), undoes whatever
  may have been done (DEL is idempotent) and does the command itself.  The
  agent acts on a request only while it holds that lock and after checking,
  once it holds it, that the client is still connected, and the client closes
  its connection before it takes the lock: so a request whose client has gone
  is never applied late (an agent that resumes after SIGCONT drops the stale
  requests queued meanwhile), and nothing is done twice.
- the whole of it fits kubelet's runtime timeout (2 min by default): at most
  CONNECT_TIMEOUT + ACCEPT_TIMEOUT + REPLY_TIMEOUT here, then the fallback's
  own bounded wait for the lock (cni_plugin/fallback.py) and the work.

Wire format (all integers big-endian u32; MAGIC names the version, an agent of
another version closes the connection, which ends in the fallback):
  request  MAGIC, len(env) env, len(stdin) stdin    env = b"K=V\\0K=V\\0..."
  ack      ACK (one byte: the agent read the request and works on it)
  reply    exit code, len(stdout) stdout
A request larger than MAX_ENV / MAX_STDIN is not sent: the agent would refuse
it, and a real network config is a few kilobytes.
"""

import _socket
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

CONNECT_TIMEOUT = 0.5
ACCEPT_TIMEOUT = 3.0
REPLY_TIMEOUT = 45.0
MAX_ENV = 64 * 1024
MAX_STDIN = 1024 * 1024
MAX_FRAME = MAX_STDIN  # a reply's stdout
PARTIAL = "partial"
MAGIC = b"SKN2"
ACK = b"\xac"  # never the first byte of a reply (an exit code's high byte)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    blob = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    return MAGIC + u32(len(blob)) + blob + u32(len(stdin)) + stdin


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    if data[:4] != MAGIC:
        raise ValueError("not a skein fast path request")
    size = int.from_bytes(data[4:8], "big")
    blob, rest = data[8:8 + size], data[8 + size:]
    env = {}
    for item in blob.split(b"\0"):
        if item:
            key, _, value = item.decode().partition("=")
            env[key] = value
    stdin_size = int.from_bytes(rest[:4], "big")
    if len(rest) != 4 + stdin_size:
        raise ValueError("truncated fast path request")
    return env, rest[4:]


def encode_reply(code: int, stdout: str) -> bytes:
    out = stdout.encode()
    return u32(code) + u32(len(out)) + out


def recv_exact(sock: _socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_request(sock: _socket.socket) -> tuple[dict[str, str], bytes]:
    """One request; the client sends it whole, so one recv(2) mostly suffices.
    ValueError for one that is not a request or larger than the limits (told
    as soon as its header says so, before the rest is read)."""
    data = sock.recv(65536)

    def upto(size: int) -> bytes:
        return data if len(data) >= size else data + recv_exact(sock, size - len(data))

    data = upto(8)
    if data[:4] != MAGIC:
        raise ValueError("not a skein fast path request (or another version's)")
    env_size = int.from_bytes(data[4:8], "big")
    if env_size > MAX_ENV:
        raise ValueError("request too large")
    data = upto(8 + env_size + 4)
    stdin_size = int.from_bytes(data[8 + env_size:12 + env_size], "big")
    if stdin_size > MAX_STDIN:
        raise ValueError("request too large")
    data = upto(12 + env_size + stdin_size)
    return decode_request(data)


def recv_reply(sock: _socket.socket) -> tuple[int, str]:
    """(exit code, stdout): the ACK within ACCEPT_TIMEOUT, then the reply within
    REPLY_TIMEOUT.  A reply without an ACK before it is taken as well (an agent
    that refuses at once, as one does a caller that is not root)."""
    sock.settimeout(ACCEPT_TIMEOUT)
    first = recv_exact(sock, 1)
    sock.settimeout(REPLY_TIMEOUT)
    head = recv_exact(sock, 8) if first == ACK else first + recv_exact(sock, 7)
    size = int.from_bytes(head[4:], "big")
    if size > MAX_FRAME:
        raise ValueError("reply too large")
    return int.from_bytes(head[:4], "big"), recv_exact(sock, size).decode()


def config_string(stdin: bytes, key: bytes) -> str | None:
    """The string value of `key` in the network config, found without a JSON
    parser: the first `"key": "value"` in the bytes, None when there is none
    or its value holds an escape (the values looked for here need none)."""
    quoted = b'"' + key + b'"'
    at = stdin.find(quoted)
    if at < 0:
        return None
    rest = stdin[at + len(quoted):].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    if not rest.startswith(b'"'):
        return None
    end = rest.find(b'"', 1)
    value = rest[1:end] if end > 0 else b""
    if b"\\" in value:
        return None
    return value.decode(errors="replace")


def agent_socket(stdin: bytes) -> str | None:
    """The `agentSocket` path of the config (anything unusual just means no
    fast path)."""
    path = config_string(stdin, b"agentSocket")
    return path if path and path.startswith("/") else None


def forward(environ: "Mapping[str, str]", stdin: bytes) -> tuple[int, str] | str | None:
    """(exit code, stdout) from the agent; None when there is no agent to ask;
    PARTIAL when the agent took the request but gave no answer."""
    if environ.get("CNI_COMMAND") in (None, "", "VERSION"):
        return None
    path = agent_socket(stdin)
    if path is None or len(stdin) > MAX_STDIN:
        return None
    env = {k: v for k, v in environ.items() if k.startswith("CNI_")}
    request = encode_request(env, stdin)
    if len(request) - len(stdin) - 12 > MAX_ENV:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
            sock.sendall(request)
        except OSError:
            return None  # the agent has no whole request: it never acts on part of one
        try:
            return recv_reply(sock)
        except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
            return PARTIAL
    finally:
        sock.close()  # before any fallback: the agent sees the client gone


def cni_environ() -> dict[str, str]:
    """The CNI_* variables, decoded as `os.environ` decodes them."""
    encoding = sys.getfilesystemencoding()
    return {k.decode(encoding, "surrogateescape"): v.decode(encoding, "surrogateescape")
            for k, v in posix.environ.items() if k.startswith(b"CNI_")}


def run_client(in_process: "Callable[[bytes, str | None], object]") -> None:
    """What `skein` does: read the request, let the agent answer it (print the
    answer, exit with its code), else `in_process(stdin, answer)` with the
    answer None (no agent) or PARTIAL (see `forward`)."""
    environ = cni_environ()
    tty = environ.get("CNI_COMMAND", "") == "VERSION" and sys.stdin.isatty()
    stdin = b"" if tty else sys.stdin.buffer.read()
    answer = forward(environ, stdin)
    if isinstance(answer, tuple):
        code, out = answer
        if out:
            posix.write(1, out.encode() + b"\n")
        # _exit: the interpreter's finalization has nothing to do (the answer
        # went out by write(2), no atexit handler is ours), so it is skipped.
        sys.stdout.flush()
        sys.stderr.flush()
        posix._exit(code & 0xFF)
    in_process(stdin, answer)
