"""Interop lab: a router namespace (BIRD or GoBGP) and node namespaces running our
speaker, all created through `netns_factory` so every name carries the random tag
and everything is deleted at teardown.

Wiring: a bridge inside the ROUTER namespace (never the root namespace) with one
veth pair per node; router 10.99.0.1/24 + fd99::1/64, node i 10.99.0.(i+1) +
fd99::(i+1).  Daemons' configs and control sockets live in pytest's tmp_path.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.netns import Netns, veth_between

REPO = Path(__file__).resolve().parents[2]
ROUTER_V4 = "10.99.0.1"
ROUTER_V6 = "fd99::1"


def node_v4(i: int) -> str:
    return f"10.99.0.{i + 2}"


def node_v6(i: int) -> str:
    return f"fd99::{i + 2}"


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll until `check()` is truthy; convergence, not timing, is what tests assert."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@dataclass
class Lab:
    router: Netns
    nodes: list[Netns]
    tmp: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def build_lab(netns_factory: Callable[[str], Netns], tmp: Path, nodes: int = 3) -> Lab:
    router = netns_factory("r")
    router.ip("link", "add", "br0", "type", "bridge")
    router.ip("link", "set", "br0", "up")
    router.ip("addr", "add", f"{ROUTER_V4}/24", "dev", "br0")
    router.ip("addr", "add", f"{ROUTER_V6}/64", "dev", "br0", "nodad")
    node_list = []
    for i in range(nodes):
        node = netns_factory(f"n{i}")
        veth_between(router, f"rv{i}", node, "eth0")
        router.ip("link", "set", f"rv{i}", "master", "br0")
        node.ip("addr", "add", f"{node_v4(i)}/24", "dev", "eth0")
        node.ip("addr", "add", f"{node_v6(i)}/64", "dev", "eth0", "nodad")
        node_list.append(node)
    return Lab(router, node_list, tmp)


# --- our speaker -----------------------------------------------------------------------------

class SpeakerProc:
    """`python -m speaker.bgp.runner` inside a node namespace, driven over stdin/stdout."""

    def __init__(self, lab: Lab, node: Netns, config: dict[str, Any], name: str) -> None:
        self.log_path = lab.tmp / f"speaker-{name}.log"
        cfg_path = lab.tmp / f"speaker-{name}.json"
        cfg_path.write_text(json.dumps(config))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = node.popen(sys.executable, "-m", "speaker.bgp.runner", str(cfg_path),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                               text=True, env=env, cwd=str(REPO))
        lab.procs.append(self.proc)

    def cmd(self, timeout: float = 30.0, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"speaker did not answer {command['cmd']}: {self.logs()}")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"speaker exited: {self.logs()}")
        reply: dict[str, Any] = json.loads(line)
        assert reply["ok"], reply
        return reply

    def status(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.cmd(cmd="status")["peers"]}

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


def speaker_config(i: int, peers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"router_id": node_v4(i), "listen": None, "peers": peers, **extra}


# --- BIRD ------------------------------------------------------------------------------------

class Bird:
    def __init__(self, lab: Lab, config: str) -> None:
        self.lab = lab
        self.sock = str(lab.tmp / "bird.ctl")
        cfg = lab.tmp / "bird.conf"
        cfg.write_text(config)
        self.log = open(lab.tmp / "bird.log", "w")  # noqa: SIM115 - closed with the lab
        self.proc = lab.router.popen("bird", "-f", "-c", str(cfg), "-s", self.sock,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        lab.procs.append(self.proc)
        wait_for(lambda: os.path.exists(self.sock) and "ready" in self.birdc("show status"),
                 what="BIRD control socket")

    def birdc(self, command: str) -> str:
        proc = subprocess.run(["birdc", "-s", self.sock, *command.split()],
                              capture_output=True, text=True, timeout=20, check=False)
        return proc.stdout

    def protocols(self) -> dict[str, str]:
        """name -> 'up/Established' style state, for the bgp protocols."""
        out = {}
        for line in self.birdc("show protocols").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "BGP":
                out[parts[0]] = f"{parts[3]}/{parts[5]}"
        return out

    def established(self) -> int:
        return sum(1 for state in self.protocols().values() if state.endswith("Established"))

    def route_count(self, table: str = "master4") -> int:
        text = self.birdc(f"show route count table {table}")
        for line in text.splitlines():
            if "of" in line and "routes" in line:
                return int(line.split()[0])
        return 0


def bird_config(*, local_as: int = 65112, node_as: int | str = 64512, extra: str = "",
                password: str | None = None, hold: int | None = None,
                ipv6: bool = False) -> str:
    auth = f'password "{password}";' if password else ""
    hold_line = f"hold time {hold};" if hold else ""
    v6 = ""
    if ipv6:
        v6 = f"""
protocol kernel k6 {{ ipv6 {{ import none; export all; }}; merge paths on; }}
protocol bgp nodes6 {{ local {ROUTER_V6} as {local_as}; neighbor range fd99::/64 as {node_as};
                      {auth} {hold_line} ipv6 {{ import all; export none; }}; }}
"""
    return f"""
log stderr all;
router id {ROUTER_V4};
protocol device {{ }}
protocol kernel k4 {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol bgp nodes {{ local {ROUTER_V4} as {local_as}; neighbor range 10.99.0.0/24 as {node_as};
                     {auth} {hold_line} ipv4 {{ import all; export none; }}; }}
{v6}
{extra}
"""


# --- GoBGP -----------------------------------------------------------------------------------

class GoBgp:
    def __init__(self, lab: Lab, config: str, api_port: int = 50052) -> None:
        self.lab = lab
        self.port = str(api_port)
        cfg = lab.tmp / "gobgp.toml"
        cfg.write_text(config)
        self.log = open(lab.tmp / "gobgp.log", "w")  # noqa: SIM115 - closed with the lab
        self.proc = lab.router.popen("gobgpd", "-f", str(cfg), "--api-hosts",
                                     f"127.0.0.1:{api_port}", stdout=self.log,
                                     stderr=subprocess.STDOUT)
        lab.procs.append(self.proc)
        wait_for(lambda: self.gobgp("global").returncode == 0, what="gobgpd API")

    def gobgp(self, *args: str) -> subprocess.CompletedProcess[str]:
        # The CLI talks to the API inside the router namespace (127.0.0.1 there).
        return self.lab.router.run("gobgp", "-p", self.port, *args, check=False, timeout=20)

    def neighbors(self) -> dict[str, dict[str, Any]]:
        proc = self.gobgp("neighbor", "-j")
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        return {n["state"]["neighbor_address"]: n for n in json.loads(proc.stdout)}

    def neighbor_state(self, address: str) -> str:
        info = self.neighbors().get(address, {})
        return str(info.get("state", {}).get("session_state", ""))

    def rib(self, family: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        proc = self.gobgp("global", "rib", "-a", family, "-j")
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        data: dict[str, list[dict[str, Any]]] = json.loads(proc.stdout)
        return data


def gobgp_config(neighbors: list[tuple[str, int, int | None]], *, local_as: int = 65112,
                 router_id: str = ROUTER_V4, passive: bool = True, ipv6: bool = False,
                 passwords: dict[str, str] | None = None) -> str:
    """neighbors: (address, peer AS, hold time or None for GoBGP's default)."""
    blocks = [f'[global.config]\n  as = {local_as}\n  router-id = "{router_id}"\n']
    for address, asn, hold in neighbors:
        block = (f'[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "{address}"\n'
                 f"    peer-as = {asn}\n"
                 + (f'    auth-password = "{passwords[address]}"\n'
                    if passwords and address in passwords else "")
                 + f"  [neighbors.transport.config]\n    passive-mode = {str(passive).lower()}\n"
                 "  [neighbors.timers.config]\n    connect-retry = 1\n")
        if hold:
            block += f"    hold-time = {hold}\n    keepalive-interval = {max(1, hold // 3)}\n"
        families = ["ipv4-unicast"] + (["ipv6-unicast"] if ipv6 else [])
        for fam in families:
            block += ('  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n'
                      f'      afi-safi-name = "{fam}"\n')
        blocks.append(block)
    return "\n".join(blocks)
