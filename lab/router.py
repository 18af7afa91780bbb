"""An external router for the lab: BIRD 2 in its own namespace on the underlay,
and a client namespace behind it (outside the cluster).

    client (10.98.0.2) ── router (10.98.0.1 | 10.99.0.1 on the underlay) ── nodes

BIRD peers passively with every node of the underlay range (`neighbor range`
accepts a session from any address of the range) and exports what it learns into the router's kernel
table with `merge paths`, so a LoadBalancer address announced by three nodes
becomes one ECMP route and the client reaches it through the router.  The
nodes' default route already points at .1, so return traffic comes back here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any

from lab.cluster import Lab, LabError
from lab.netns import Netns

ROUTER_ASN = 65112
NODES_ASN = 64512
CLIENT_NET = "10.98.0.0/24"

BIRD_CONF = """\
router id {router_ip};
protocol device {{ }}
protocol kernel {{
  ipv4 {{ import none; export all; }};
  merge paths on;
}}
protocol bgp nodes {{
  local {router_ip} as {router_asn};
  neighbor range {underlay} as {nodes_asn};
  ipv4 {{ import all; export none; }};
}}
"""


class BirdRouter:
    def __init__(self, lab: Lab, index: int = 1, router_asn: int = ROUTER_ASN,
                 nodes_asn: int = NODES_ASN) -> None:
        self.lab = lab
        self.ip = lab.host(index)
        self.router_asn, self.nodes_asn = router_asn, nodes_asn
        self.ns = lab.add_client("r", index)
        self.workdir = os.path.join(lab.workdir, "router")
        os.makedirs(self.workdir, exist_ok=True)
        self.control = os.path.join(self.workdir, "bird.ctl")
        self.client: Netns | None = None
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.ns.sysctl("net.ipv4.ip_forward", "1")
        conf = os.path.join(self.workdir, "bird.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(BIRD_CONF.format(router_ip=self.ip, router_asn=self.router_asn,
                                     nodes_asn=self.nodes_asn, underlay=self.lab.underlay_net))
        self.proc = self.lab.spawn(self.ns, "bird", "-f", "-c", conf, "-s", self.control,
                                   log=os.path.join(self.workdir, "bird.log"))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.control):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("BIRD did not start; see " + os.path.join(self.workdir,
                                                                          "bird.log"))
            time.sleep(0.05)

    def add_client(self) -> Netns:
        """A client namespace behind the router (its only way into the cluster)."""
        client = self.lab.add_namespace("cl")
        self.ns.ip("link", "add", "down0", "type", "veth", "peer", "name", "eth0",
                   "netns", client.name)
        self.ns.ip("addr", "add", "10.98.0.1/24", "dev", "down0")
        self.ns.ip("link", "set", "down0", "up")
        client.ip("addr", "add", "10.98.0.2/24", "dev", "eth0")
        client.ip("link", "set", "eth0", "up")
        client.ip("route", "add", "default", "via", "10.98.0.1")
        self.client = client
        return client

    def birdc(self, command: str) -> str:
        """One birdc command over the control socket (no birdc binary needed)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.control)
            sock.recv(4096)  # greeting
            sock.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
                # A reply ends with a line whose code has no continuation dash.
                last = out.rstrip(b"\n").rsplit(b"\n", 1)[-1]
                if len(last) >= 5 and last[:4].isdigit() and last[4:5] == b" ":
                    break
        lines = []
        for line in out.decode(errors="replace").splitlines():
            # birdc's reply lines carry a 4-digit code and - or space; strip it.
            # A continuation line starts with one space instead.
            lines.append(line[5:] if len(line) >= 5 and line[:4].isdigit() else line[1:])
        return "\n".join(lines)

    def established(self) -> int:
        return sum("Established" in line for line in self.birdc("show protocols").splitlines())

    def kernel_route(self, address: str) -> str:
        return self.ns.ip("route", "show", address).stdout.strip()
