#!/usr/bin/env python3
"""Overlay throughput and convergence, in a two-node netns lab.

1. iperf3 TCP throughput pod-to-pod across the two nodes over VXLAN, and in
   the same run node-to-node directly over the underlay; prints both and the
   ratio overlay/underlay.
2. Convergence: time from a node appearing in the manifests file to the first
   successful ping from a pod on the other node (median of 5), and from a node
   leaving the file to its route being gone on the other node (median of 5,
   against the 2 s the overlay issue asks for).

Run as root: `python3 bench/overlay.py [--seconds 5]`.  Everything lives in
namespaces named with a random tag and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.cluster import Lab, Node  # noqa: E402
from lab.netns import Netns  # noqa: E402


def iperf(server: Netns, client: Netns, address: str, seconds: int) -> float:
    """Gbit/s received by `server` from `client`."""
    srv = server.popen("iperf3", "-s", "-1", "-B", address, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = client.run("iperf3", "-c", address, "-t", str(seconds), "-J",
                         timeout=seconds + 30).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.kill()
        srv.wait()


def ping_once(ns: Netns, address: str) -> bool:
    return ns.run("ping", "-n", "-c", "1", "-W", "1", address, check=False).returncode == 0


def time_join(lab: Lab, n1: Node, n2: Node, src: Netns, dst_addr: str) -> float:
    lab.write_manifests([n1])
    deadline = time.monotonic() + 15
    while ping_once(src, dst_addr):
        if time.monotonic() > deadline:
            raise SystemExit("node2 never left")
    time.sleep(0.5)
    start = time.monotonic()
    lab.write_manifests([n1, n2])
    # One ping process probing every 20 ms until the first reply (or 15 s).
    if src.run("ping", "-n", "-q", "-c", "1", "-i", "0.02", "-w", "15", dst_addr,
               check=False).returncode != 0:
        raise SystemExit("node2 never became reachable")
    return time.monotonic() - start


def time_leave(lab: Lab, n1: Node, n2: Node) -> float:
    lab.write_manifests([n1, n2])
    while n2.pod_cidr not in n1.ns.ip("route", "show", "proto", "83").stdout:
        time.sleep(0.01)
    start = time.monotonic()
    lab.write_manifests([n1])
    while n2.pod_cidr in n1.ns.ip("route", "show", "proto", "83").stdout:
        if time.monotonic() - start > 15:
            raise SystemExit("node2's route never went away")
        time.sleep(0.01)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with Lab(nodes=2) as lab:
        lab.start_agents()
        n1, n2 = lab.nodes["node1"], lab.nodes["node2"]
        a, b = lab.add_pod(n1, "a"), lab.add_pod(n2, "b")
        if not ping_once(a.ns, b.address()):
            raise SystemExit("pods cannot reach each other; see the agent logs")
        overlay = iperf(b.ns, a.ns, b.address(), args.seconds)
        underlay = iperf(n2.ns, n1.ns, n2.underlay_ip, args.seconds)
        print(f"iperf3 TCP, {args.seconds} s each")
        print(f"  pod-to-pod over VXLAN      {overlay:6.2f} Gbit/s")
        print(f"  node-to-node over underlay {underlay:6.2f} Gbit/s")
        print(f"  ratio overlay/underlay     {overlay / underlay:6.2f}")
        joins = [time_join(lab, n1, n2, a.ns, b.address()) for _ in range(args.rounds)]
        leaves = [time_leave(lab, n1, n2) for _ in range(args.rounds)]
        print(f"peer appears in the manifests -> first ping across: median "
              f"{statistics.median(joins):.2f} s (max {max(joins):.2f} s, n={len(joins)})")
        print(f"peer leaves the manifests -> its route gone: median "
              f"{statistics.median(leaves):.2f} s (max {max(leaves):.2f} s; bar 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
