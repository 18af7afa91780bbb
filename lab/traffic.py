"""Real traffic for the lab: ping and a one-shot TCP exchange between namespaces.

The TCP check reports the source address the server saw, which is how the
tests show that pod-to-pod traffic is not NATed.
"""

from __future__ import annotations

import subprocess
import sys
import time

from lab.netns import Netns

_SERVER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("listening", flush=True)
srv.settimeout(float(sys.argv[3]))
conn, peer = srv.accept()
conn.sendall(peer[0].encode() + b"\n")
conn.close()
"""

_CLIENT = r"""
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
print(conn.recv(256).decode().strip())
"""


def ping(ns: Netns, address: str, count: int = 1, wait: int = 3) -> bool:
    family = "-6" if ":" in address else "-4"
    proc = ns.run("ping", family, "-n", "-c", str(count), "-W", str(wait), "-i", "0.2",
                  address, check=False, timeout=count * 1 + wait + 10)
    return proc.returncode == 0


def tcp_source_seen(server: Netns, listen: str, client: Netns, connect: str,
                    port: int = 8080, timeout: float = 10.0) -> str:
    """Connect from `client` to `connect`:`port` served in `server` on `listen`;
    return the source address the server saw.  Raises on failure."""
    srv = server.popen(sys.executable, "-c", _SERVER, listen, str(port), str(timeout),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"TCP server in {server.name} did not start: "
                               f"{srv.stderr.read() if srv.stderr else ''}")
        cli = client.run(sys.executable, "-c", _CLIENT, connect, str(port), str(timeout),
                         check=False, timeout=timeout + 5)
        if cli.returncode != 0:
            raise RuntimeError(f"TCP {client.name} -> {connect}:{port} failed: {cli.stderr}")
        return cli.stdout.strip()
    finally:
        deadline = time.monotonic() + 2
        while srv.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if srv.poll() is None:
            srv.kill()
        srv.wait()


# A server that keeps accepting: every connection gets `name` and is closed.
# On "::" it is dual stack, so it serves whichever address a packet arrives for.
_NAME_SERVER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    try:
        conn.sendall(sys.argv[3].encode() + b"\n")
    finally:
        conn.close()
"""


def start_name_server(ns: Netns, name: str, port: int = 8080,
                      listen: str = "::") -> subprocess.Popen[str]:
    """A TCP server in `ns` that answers every connection with `name`: how the
    lab tells which pod or node served a request.  The caller owns the process."""
    proc = ns.popen(sys.executable, "-c", _NAME_SERVER, listen, str(port), name,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    if "listening" not in proc.stdout.readline():
        proc.kill()
        raise RuntimeError(f"name server {name} in {ns.name} did not start")
    return proc


def tcp_read(client: Netns, address: str, port: int, timeout: float = 3.0) -> str | None:
    """What the server at address:port says first, or None without a connection."""
    code = ("import socket,sys\n"
            "a,p,t=sys.argv[1],int(sys.argv[2]),float(sys.argv[3])\n"
            "try:\n"
            " c=socket.create_connection((a,p),timeout=t)\n"
            " print(c.recv(256).decode().strip())\n"
            "except OSError:\n"
            " sys.exit(1)\n")
    proc = client.run(sys.executable, "-c", code, address, str(port), str(timeout),
                      check=False, timeout=timeout + 10)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None
