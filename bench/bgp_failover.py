#!/usr/bin/env python3
"""BGP failover: how long a router keeps a dead node's path, with and without BFD.

Two node namespaces run `skein-speaker`, the daemon users run, following a
manifests file of MetalLB objects: the Nodes, an IPAddressPool, a BGPAdvertisement,
a BGPPeer (holdTime as the case says, `bfdProfile: default` where BFD is on), a
BFDProfile "default" with MetalLB's defaults (300 ms x 3) and a LoadBalancer
Service whose status holds 198.51.100.10.  Each speaker runs with
`--assign-to-lo` (the address on its `lo`, where a TCP server answers the node's
name) and announces the /32 over eBGP to BIRD 2 in a router namespace, which
installs the paths into its kernel as one ECMP route (`merge paths on`).  A client
namespace behind the router connects to the address in a loop, always from the
same source port (IPv4 multipath hashes on addresses, so the client's flow sticks to
one node); the node it lands on is the one that fails.

Each case starts everything afresh, waits for both paths (and BFD Up where
configured), then fails that node and measures on the monotonic clock:
  router   until BIRD no longer holds the node's path (read from BIRD's control
           socket every ~5 ms)
  client   until the client's first answer from the other node

Failures:
  sigkill  the speaker process SIGKILLed.  The kernel then closes its TCP session,
           so BIRD drops the path at once, with or without BFD: this is not what BFD
           is for, and it is shown as measured.
  sigstop  the speaker frozen (SIGSTOP): TCP stays open, nothing is sent any more.
  cut      the node's only link set down inside the node: the node is gone as far
           as the router can tell, and no TCP reset reaches anyone.
The last two are where, without BFD, the router waits for the hold time (MetalLB's
default: 90 s).  With graceful restart negotiated (BGPPeer enableGracefulRestart),
BIRD keeps a SIGKILLed speaker's paths as stale for the restart time (120 s) unless
BFD reports the node down.  Every case is printed with its ratio to the hold-time
case of the same failure kind (node cut) measured in the same run.

A last line, labelled "runner", repeats the BFD node-cut case with the BGP library
alone (`python -m speaker.bgp.runner`, configured by JSON rather than MetalLB
objects), to tell the daemon's share from the library's.

Everything lives in the lab's namespaces (sk<tag>...); all processes are killed and
the namespaces deleted at the end of each case, on Ctrl-C or failure too.  Run as
root: `python3 bench/bgp_failover.py [--quick]` (--quick: skip the 90 s hold-time
case).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.cluster import Lab  # noqa: E402
from lab.netns import Netns, veth_between  # noqa: E402
from lab.speakers import (  # noqa: E402
    address_pool,
    bgp_advertisement,
    bgp_peer,
    lb_service,
    speaker_log,
    start_name_server,
    start_speaker,
)

ROUTER, CLIENT, GATEWAY = "10.99.0.1", "172.31.0.2", "172.31.0.1"
NODES = ("10.99.0.11", "10.99.0.12")  # the lab's node1, node2
LB = "198.51.100.10"
ROUTER_AS, NODE_AS = 65112, 64512
PROFILE = "default"  # the BFDProfile the BGPPeer names: MetalLB's defaults

CLIENT_LOOP = r"""
import socket, struct, sys, time
address, port = sys.argv[1], 8080
while True:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(0.1)
    name = "-"
    try:
        s.bind(("0.0.0.0", 40000))
        s.connect((address, port))
        name = s.recv(64).decode().strip() or "-"
    except OSError:
        pass
    finally:
        s.close()
    print(f"{time.monotonic():.6f} {name}", flush=True)
    time.sleep(0.005)
"""


@dataclass(frozen=True)
class Case:
    name: str
    failure: str  # sigkill | sigstop | cut
    bfd: bool
    hold: int
    graceful_restart: bool = False
    runner: bool = False  # speaker.bgp.runner instead of the skein-speaker daemon


@dataclass
class Result:
    case: Case
    router: float | None  # None: still held when the wait ended (`waited` seconds)
    client: float | None
    waited: float = 0.0


def bird_config(case: Case) -> str:
    bfd = ("""
protocol bfd { interface "*" { min rx interval 300 ms; min tx interval 300 ms;
                               multiplier 3; }; }
""" if case.bfd else "")
    return f"""
router id {ROUTER};
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
{bfd}
protocol bgp nodes {{ local {ROUTER} as {ROUTER_AS}; neighbor range 10.99.0.0/24 as {NODE_AS};
  hold time {case.hold}; {"bfd on;" if case.bfd else ""}
  ipv4 {{ import all; export none; }}; }}
"""


def bird_next_hops(sock_path: str) -> set[str]:
    """Next hops BIRD holds for the LB /32, straight from its control socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        f = s.makefile("rwb")
        f.readline()  # banner
        f.write(f"show route for {LB}/32 all\n".encode())
        f.flush()
        text = []
        while True:
            line = f.readline().decode()
            text.append(line)
            if not line or re.match(r"^\d{4} ", line):
                break
    return set(re.findall(r"BGP\.next_hop: (\S+)", "".join(text)))


def manifests(case: Case) -> list[dict[str, Any]]:
    """The MetalLB objects the daemons follow (besides the Nodes)."""
    peer: dict[str, Any] = {"holdTime": f"{case.hold}s"}
    if case.bfd:
        peer["bfdProfile"] = PROFILE
    if case.graceful_restart:
        peer["enableGracefulRestart"] = True
    objects = [address_pool("bench", "198.51.100.0/26"),
               bgp_peer("router", ROUTER, ROUTER_AS, NODE_AS, **peer),
               bgp_advertisement("bench", ["bench"]), lb_service("web", LB)]
    if case.bfd:
        objects.append({"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
                        "metadata": {"name": PROFILE, "namespace": "metallb-system"},
                        "spec": {}})
    return objects


@dataclass
class Topology:
    lab: Lab
    router: Netns
    client: Netns
    tmp: Path
    client_lines: list[tuple[float, str]] = field(default_factory=list)


@contextmanager
def topology() -> Iterator[Topology]:
    """Two lab nodes on the underlay segment, the router (10.99.0.1, the nodes'
    default gateway) on it too, and the client behind the router."""
    with Lab(nodes=2) as lab:
        router = lab.add_client("r", 1)
        router.sysctl("net.ipv4.ip_forward", "1")
        client = lab.add_namespace("cl")
        veth_between(router, "rcl", client, "eth0")
        router.ip("addr", "add", f"{GATEWAY}/24", "dev", "rcl")
        client.ip("addr", "add", f"{CLIENT}/24", "dev", "eth0")
        client.ip("route", "add", "default", "via", GATEWAY)
        for node in lab.nodes.values():
            start_name_server(lab, node, 8080, "0.0.0.0")
        yield Topology(lab, router, client, Path(lab.workdir))


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic()
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_daemons(topo: Topology, case: Case) -> list[subprocess.Popen[Any]]:
    lab = topo.lab
    lab.write_manifests(extra=manifests(case))
    return [start_speaker(lab, node, "--assign-to-lo") for node in lab.nodes.values()]


def start_runners(topo: Topology, case: Case) -> list[subprocess.Popen[Any]]:
    """The BGP library alone: one `speaker.bgp.runner` per node, the same peer and
    timers as JSON, the address put on `lo` by hand."""
    speakers = []
    for i, node in enumerate(topo.lab.nodes.values()):
        node.ns.ip("addr", "add", f"{LB}/32", "dev", "lo")
        peer: dict[str, Any] = {
            "peer_address": ROUTER, "peer_asn": ROUTER_AS, "my_asn": NODE_AS,
            "hold_time": case.hold, "connect_retry_time": 1,
            "graceful_restart_time": 120 if case.graceful_restart else None,
            "families": ["ipv4-unicast"]}
        if case.bfd:
            peer["bfd"] = {"transmit_interval_ms": 300, "receive_interval_ms": 300,
                           "detect_multiplier": 3}
        cfg = topo.tmp / f"runner{i}.json"
        cfg.write_text(json.dumps({"router_id": NODES[i], "listen": None, "peers": [peer]}))
        err = open(topo.tmp / f"runner{i}.log", "w")  # noqa: SIM115 - the lab's workdir goes
        proc = node.ns.popen(sys.executable, "-m", "speaker.bgp.runner", str(cfg),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             text=True, cwd=str(REPO),
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        topo.lab.processes.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"cmd": "announce", "prefixes": [f"{LB}/32"]}) + "\n")
        proc.stdin.flush()
        proc.stdout.readline()
        speakers.append(proc)
    return speakers


def run_case(case: Case) -> Result:
    with topology() as topo:
        sock = str(topo.tmp / "bird.ctl")
        (topo.tmp / "bird.conf").write_text(bird_config(case))
        log = open(topo.tmp / "bird.log", "w")  # noqa: SIM115 - the lab's workdir goes
        topo.lab.processes.append(topo.router.popen(
            "bird", "-f", "-c", str(topo.tmp / "bird.conf"), "-s", sock, stdout=log,
            stderr=subprocess.STDOUT))
        wait(lambda: os.path.exists(sock), 10, "BIRD's control socket")
        speakers = start_runners(topo, case) if case.runner else start_daemons(topo, case)
        try:
            wait(lambda: bird_next_hops(sock) == set(NODES), 60, "both paths at BIRD", 0.05)
            if case.bfd:
                def bfd_up() -> bool:
                    out = topo.router.run("birdc", "-s", sock, "show", "bfd", "sessions",
                                          check=False).stdout
                    return out.count(" Up ") == 2
                wait(bfd_up, 30, "both BFD sessions Up", 0.1)
        except RuntimeError:
            for node in topo.lab.nodes.values():
                print(f"--- {node.name}\n{speaker_log(node)}", file=sys.stderr)
            raise
        client = topo.client.popen(sys.executable, "-c", CLIENT_LOOP, LB,
                                   stdout=subprocess.PIPE, text=True)
        topo.lab.processes.append(client)

        def read_client() -> None:
            assert client.stdout is not None
            for line in client.stdout:
                stamp, name = line.split()
                topo.client_lines.append((float(stamp), name))

        threading.Thread(target=read_client, daemon=True).start()
        wait(lambda: any(n != "-" for _, n in topo.client_lines[-3:]), 10, "client answers")
        names = list(topo.lab.nodes)
        answered_by = next(n for _, n in reversed(topo.client_lines) if n != "-")
        victim = names.index(answered_by)
        other = names[1 - victim]
        time.sleep(1.0)  # steady state

        start = time.monotonic()
        if case.failure == "sigkill":
            speakers[victim].send_signal(signal.SIGKILL)
        elif case.failure == "sigstop":
            speakers[victim].send_signal(signal.SIGSTOP)
        else:
            topo.lab.nodes[answered_by].ns.ip("link", "set", "eth0", "down")
        limit = case.hold + 15
        try:
            gone = wait(lambda: NODES[victim] not in bird_next_hops(sock), limit,
                        "BIRD to drop the path")
            router = gone - start
        except RuntimeError:
            router = None
        client_time = None
        try:
            answered = wait(lambda: any(t > start and n == other
                                        for t, n in topo.client_lines[-5:]), 10,
                            "the client to reach the other node")
            first = min(t for t, n in topo.client_lines if t > start and n == other)
            client_time = min(first, answered) - start
        except RuntimeError:
            pass
        # A stopped process must run again to die of the lab's SIGKILL promptly.
        for proc in speakers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        return Result(case, router, client_time, limit)


def fmt(value: float | None, waited: float) -> str:
    return f"still held at {waited:.0f} s" if value is None else f"{value * 1000:9.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 90 s hold-time cases")
    parser.add_argument("--short-hold", type=int, default=9)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    short = args.short_hold
    bfd = "BFD default profile 300ms x3"
    cases = [
        Case(f"{bfd}, SIGKILL", "sigkill", True, 90),
        Case("no BFD, hold 90 s, SIGKILL", "sigkill", False, 90),
        Case(f"{bfd} + graceful restart, SIGKILL", "sigkill", True, 90, True),
        Case(f"no BFD + graceful restart, hold {short} s, SIGKILL", "sigkill", False, short,
             True),
        Case(f"{bfd}, speaker SIGSTOP", "sigstop", True, 90),
        Case(f"no BFD, hold {short} s, speaker SIGSTOP", "sigstop", False, short),
        Case(f"{bfd}, node link cut", "cut", True, 90),
        Case(f"no BFD, hold {short} s, node link cut", "cut", False, short),
    ]
    if not args.quick:
        cases.append(Case("no BFD, hold 90 s (MetalLB default), node link cut", "cut",
                          False, 90))
    cases.append(Case("runner: BFD 300ms x3, node link cut", "cut", True, 90, runner=True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results = []
    for case in cases:
        print(f"running: {case.name} ...", file=sys.stderr, flush=True)
        results.append(run_case(case))
    daemon = [r for r in results if not r.case.runner]
    ref_short = next(r for r in daemon if not r.case.bfd and r.case.failure == "cut"
                     and r.case.hold == short)
    ref_90 = next((r for r in daemon if not r.case.bfd and r.case.failure == "cut"
                   and r.case.hold == 90), None)
    width = max(len(r.case.name) for r in results)
    print(f"\n{'case':{width}} {'router drops path':>18} {'client via other':>17}  ratio to "
          f"no-BFD node cut (hold {short} s / 90 s, router)")
    print("skein-speaker daemon (MetalLB BGPPeer + BFDProfile in its manifests):")
    for r in results:
        if r.case.runner:
            print("the BGP library alone (python -m speaker.bgp.runner, JSON config):")
        ratios = []
        for ref in (ref_short, ref_90):
            if ref is not None and ref.router and r.router is not None:
                ratios.append(f"{r.router / ref.router:.3f}")
            else:
                ratios.append("-")
        print(f"{r.case.name:{width}} {fmt(r.router, r.waited):>18} {fmt(r.client, 10):>17}  "
              f"{' / '.join(ratios)}")
    bfd_cut = next(r for r in daemon if r.case.bfd and r.case.failure == "cut")
    goal = bfd_cut.router is not None and bfd_cut.router <= 1.0
    print(f"\ngoal (skein-speaker, node cut, {bfd}, router drops the path in <= 1 s): "
          f"{'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
