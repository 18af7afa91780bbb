"""BFD interop helpers on top of tests/bgp's namespace lab: BIRD 2 with `protocol bfd`
and `bfd on`, and FRR (zebra + bgpd + bfdd) in a second router namespace on the same
segment, each read through its own CLI inside its namespace."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.netns import Netns, veth_between
from tests.bgp.lab import ROUTER_V4, Bird, Lab, bird_config, wait_for

ROUTER_AS, NODE_AS = 65112, 64512
FRR_V4 = "10.99.0.250"
FRR_DIR = Path("/usr/lib/frr")


def bird_bfd_config(*, hold: int = 90, interval_ms: int = 300, multiplier: int = 3) -> str:
    """BIRD's passive range protocol with BFD on every session it spawns."""
    return bird_config(hold=hold, extra=f"""
protocol bfd {{
  interface "*" {{ min rx interval {interval_ms} ms; min tx interval {interval_ms} ms;
                  multiplier {multiplier}; }};
}}
""").replace("ipv4 { import all; export none; }; }",
             "bfd on; ipv4 { import all; export none; }; }")


def bird_bfd_sessions(bird: Bird) -> dict[str, str]:
    """Neighbour address -> state, from `show bfd sessions`."""
    out = {}
    for line in bird.birdc("show bfd sessions").splitlines():
        parts = line.split()
        if len(parts) >= 3 and re.match(r"^\d+\.\d+\.\d+\.\d+$", parts[0]):
            out[parts[0]] = parts[2]
    return out


def bird_next_hops(bird: Bird, prefix: str) -> set[str]:
    text = bird.birdc(f"show route for {prefix} all")
    if "Network not found" in text:
        return set()
    return set(re.findall(r"BGP\.next_hop: (\S+)", text))


class Frr:
    """zebra, bgpd and bfdd in their own namespace `ns`, sockets and logs in `tmp`;
    the processes join the lab's, so they are killed with it."""

    def __init__(self, lab: Lab, ns: Netns, directory: Path, config: str) -> None:
        """`directory`: owned by the frr user (FRR's daemons refuse to run as root
        unless root is in its vty group), outside pytest's root-only tmp tree."""
        self.ns = ns
        self.dir = directory
        (self.dir / "frr.conf").write_text(config)
        zsock = str(self.dir / "zserv.api")
        common = ["-u", "frr", "-g", "frr", "--vty_socket", str(self.dir), "-z", zsock]
        for daemon, extra in (("zebra", []), ("bfdd", ["--bfdctl", str(self.dir / "bfdd.sock")]),
                              ("bgpd", ["-p", "179"])):
            log = self.dir / f"{daemon}.log"
            argv = [str(FRR_DIR / daemon), *common, *extra, "-f", "/dev/null",
                    "-i", str(self.dir / f"{daemon}.pid"), "-P", "0",
                    "--log", f"file:{log}"]
            lab.procs.append(ns.popen(*argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
            if daemon == "zebra":
                wait_for(lambda: Path(zsock).exists(), what="zebra's socket")
        wait_for(lambda: all((self.dir / f"{d}.vty").exists() for d in ("zebra", "bfdd",
                                                                          "bgpd")),
                 what="FRR's vty sockets")
        done = self.vtysh("-f", str(self.dir / "frr.conf"))
        if done.returncode != 0:
            raise AssertionError(f"FRR config refused: {done.stdout}{done.stderr}")

    def vtysh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ns.run("vtysh", "--vty_socket", str(self.dir), *args, check=False,
                           timeout=20)

    def show(self, command: str) -> Any:
        out = self.vtysh("-c", command).stdout
        return json.loads(out) if out.strip() else {}

    def bfd_peers(self) -> dict[str, str]:
        """Peer address -> status, from `show bfd peers json`."""
        peers = self.show("show bfd peers json")
        return {p["peer"]: p["status"] for p in peers} if isinstance(peers, list) else {}

    def next_hops(self, prefix: str) -> set[str]:
        route = self.show(f"show bgp ipv4 unicast {prefix} json")
        return {hop["ip"] for path in route.get("paths", [])
                for hop in path.get("nexthops", [])}

    def established(self) -> int:
        summary = self.show("show bgp ipv4 unicast summary json")
        return sum(1 for p in summary.get("peers", {}).values() if p.get("state") ==
                   "Established")


def frr_config(neighbors: list[str], *, hold: int = 90, interval_ms: int = 300,
               multiplier: int = 3) -> str:
    lines = [f"bfd\n profile lab\n  receive-interval {interval_ms}\n"
             f"  transmit-interval {interval_ms}\n  detect-multiplier {multiplier}\n",
             f"router bgp {ROUTER_AS}\n bgp router-id {FRR_V4}\n no bgp ebgp-requires-policy\n"
             f" timers bgp {hold // 3} {hold}"]
    for address in neighbors:
        lines.append(f" neighbor {address} remote-as {NODE_AS}\n"
                     f" neighbor {address} passive\n"
                     # Without a known source, bgpd registers the BFD session again once
                     # TCP is up (now with the local address); bfdd replaces it by a new
                     # one, whose Down takes the fresh session down once.
                     f" neighbor {address} update-source {FRR_V4}\n"
                     f" neighbor {address} bfd profile lab")
    return "\n".join(lines) + "\n"


def add_frr_router(lab: Lab, make: Callable[[str], Netns]) -> Netns:
    """A second router namespace on the lab's segment (a port of the bridge)."""
    ns = make("f")
    veth_between(lab.router, "rvf", ns, "eth0")
    lab.router.ip("link", "set", "rvf", "master", "br0")
    ns.ip("addr", "add", f"{FRR_V4}/24", "dev", "eth0")
    return ns


__all__ = ["ROUTER_V4"]
