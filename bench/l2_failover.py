#!/usr/bin/env python3
"""L2 failover: time from an owner node's death to the client's first successful
TCP reconnection, skein-speaker against keepalived, in the same lab, same run.

A node "dies" the way a machine does: its underlay port goes down (nothing it
sends arrives any more, nothing sent to it is answered) and its daemon is
killed with SIGKILL.  Killing the daemon alone would prove nothing: the dead
node's kernel would go on serving the address it holds.  A prober in the client
namespace connects to VIP:8080 every 20 ms (each attempt a fresh connection
with a 20 ms timeout) and reports which node answered; the failover time is
from the moment before the port goes down to the first answer from another node.

- skein-speaker: defaults (heartbeat 50 ms, dead after 200 ms), `--assign-to-lo`.
- keepalived: VRRPv3, `advert_int 0.1`, the VIP on eth0, one instance per node,
  priorities 150/140/130 (the anchor measured 0.30 s here).

Between rounds the dead node comes back (port up, daemon restarted) and the
cluster settles.  Prints each round, the medians (of 5 by default) and the ratio.
Run as root: `python3 bench/l2_failover.py [--rounds 5]`.  Everything lives in
namespaces named with a random tag and is removed at the end.

`--mode kube`: the same in a real cluster (lab.kube: kubelet, containerd, the
API server), Skein installed from install/manifests/ with its defaults
(heartbeats + Leases), a LoadBalancer Service of install/examples' L2 pool in
front of a web server on every node (externalTrafficPolicy Local, so the new
owner serves it itself).  The owner's node is killed the lab's way (every
process of it, its underlay port down); the time is from the kill to the first
TCP connection from the client that succeeds (a fresh connection every 20 ms,
20 ms timeout), then checked to have gone through another node's MAC.  A killed
node does not come back, so a cluster of N nodes gives N-1 rounds
(`--kube-nodes`, default 4).  The netns lab's heartbeat mode runs in the same
invocation, and the ratio kube/netns is printed.  `--kube-workdir DIR` uses a
cluster already up there (its nodes are killed: take it down afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from foundation.kube.sources import read_manifests  # noqa: E402
from lab.cluster import Lab, Node  # noqa: E402
from lab.netns import Netns  # noqa: E402
from lab.speakers import (  # noqa: E402
    address_pool,
    l2_advertisement,
    lb_service,
    start_name_server,
    start_speaker,
)
from speaker.plan import l2_owners  # noqa: E402

VIP = "10.99.0.200"

_PROBER = r"""
import socket, sys, time
last = None
while True:
    s = socket.socket()
    s.settimeout(0.02)
    try:
        s.connect((sys.argv[1], 8080))
        name = s.recv(64).decode().strip() or None
    except OSError:
        name = None
    finally:
        s.close()
    if name != last:
        print(f"{time.monotonic():.6f} {name}", flush=True)
        last = name
    if name is None:
        time.sleep(0.002)
    else:
        time.sleep(0.02)
"""


class Prober:
    """Follows which node serves VIP:8080, as seen from the client."""

    def __init__(self, client: Netns, script: str = _PROBER, target: str = VIP) -> None:
        self.proc = client.popen(sys.executable, "-u", "-c", script, target,
                                 stdout=subprocess.PIPE, text=True)
        self.current: str | None = None
        # A thread, not select(): a buffered readline may hold lines select cannot see.
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, accept: Callable[[str | None, float], bool], timeout: float) -> float:
        """Time of the first transition accepted by `accept(name, time)`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            stamp, name = line.split()
            self.current = None if name == "None" else name
            if accept(self.current, float(stamp)):
                return float(stamp)
        raise RuntimeError(f"no accepted transition within {timeout}s (last: {self.current})")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def serving(name: str) -> Callable[[str | None, float], bool]:
    return lambda current, _t: current == name


def taken_over(dead: str, since: float) -> Callable[[str | None, float], bool]:
    return lambda current, t: current not in (None, dead) and t > since


def port_of(lab: Lab, node: Node) -> str:
    return f"n{list(lab.nodes).index(node.name) + 1}"


def rounds_of(lab: Lab, client: Netns, rounds: int, start: Callable[[Node], None],
              kill: Callable[[Node], None], owner_of: Callable[[], Node],
              procs: dict[str, subprocess.Popen[Any]]) -> list[float]:
    """`start(node)` runs the node's daemon (into `procs`); `kill(node)` SIGKILLs
    all of it and reaps it.  The daemons still running at the end are stopped
    with SIGTERM, so the next implementation starts on a quiet segment."""
    prober = Prober(client)
    times = []
    try:
        for node in lab.nodes.values():
            start(node)
        for _ in range(rounds):
            owner = owner_of()
            prober.wait_for(serving(owner.name), 30)
            time.sleep(1.0)  # settled: every daemon has seen every other for a while
            t0 = time.monotonic()
            lab.underlay.ip("link", "set", port_of(lab, owner), "down")
            kill(owner)
            t1 = prober.wait_for(taken_over(owner.name, t0), 30)
            times.append(t1 - t0)
            print(f"    {owner.name} died; {prober.current} serving after {t1 - t0:.3f} s",
                  flush=True)
            lab.underlay.ip("link", "set", port_of(lab, owner), "up")
            start(owner)
            time.sleep(1.5)
    finally:
        prober.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    return times


def skein(lab: Lab, client: Netns, rounds: int) -> list[float]:
    lab.write_manifests(extra=[address_pool("lab", "10.99.0.200-10.99.0.210"),
                               l2_advertisement("l2"), lb_service("web", VIP)])
    procs: dict[str, subprocess.Popen[Any]] = {}

    def start(node: Node) -> None:
        procs[node.name] = start_speaker(lab, node, "--assign-to-lo")

    def kill(node: Node) -> None:
        procs[node.name].send_signal(signal.SIGKILL)
        procs[node.name].wait()

    def owner() -> Node:
        # Between rounds every speaker is live: the planner says who owns the VIP.
        state = read_manifests(lab.manifests_path).state
        name = l2_owners(state, lab.nodes)[ipaddress.ip_address(VIP)]
        assert name is not None
        return lab.nodes[name]

    return rounds_of(lab, client, rounds, start, kill, owner, procs)


KEEPALIVED_CONF = """global_defs {{
    router_id {name}
    vrrp_version 3
    script_user root
}}
vrrp_instance skein {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 0.1
    virtual_ipaddress {{
        {vip}/24 dev eth0
    }}
}}
"""


def keepalived(lab: Lab, client: Netns, rounds: int) -> list[float]:
    procs: dict[str, subprocess.Popen[Any]] = {}
    priority = {n: 150 - 10 * i for i, n in enumerate(lab.nodes)}

    def pidfiles(node: Node) -> list[str]:
        return [os.path.join(node.workdir, f) for f in ("k.pid", "v.pid")]

    def start(node: Node) -> None:
        conf = os.path.join(node.workdir, "keepalived.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(KEEPALIVED_CONF.format(name=node.name, priority=priority[node.name], vip=VIP))
        # --vrrp: no health-checker child; the VRRP child still exists (v.pid).
        main_pid, vrrp_pid = pidfiles(node)
        procs[node.name] = lab.spawn(
            node.ns, "keepalived", "--dont-fork", "--vrrp", "--log-console", "-f", conf,
            "-p", main_pid, "-r", vrrp_pid, log=os.path.join(node.workdir, "keepalived.log"))

    def kill(node: Node) -> None:
        # The parent and its VRRP child: a crashed machine takes both.
        for path in reversed(pidfiles(node)):
            try:
                with open(path, encoding="ascii") as f:
                    os.kill(int(f.read().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        procs[node.name].kill()
        procs[node.name].wait()
        for path in pidfiles(node):  # stale now; a restart refuses to run beside them
            with contextlib.suppress(OSError):
                os.unlink(path)

    def owner() -> Node:
        # Preemption: the highest priority among the live (all, between rounds).
        return lab.nodes[max(priority, key=lambda n: priority[n])]

    try:
        return rounds_of(lab, client, rounds, start, kill, owner, procs)
    finally:
        for node in lab.nodes.values():
            node.ns.ip("addr", "del", f"{VIP}/24", "dev", "eth0", check=False)


KUBE_NS = "l2-failover"
KUBE_APP_TEXT = ("mkdir -p /w && echo ok > /w/index.html && exec httpd -f -p 8080 -h /w")


def kube_app() -> str:
    """A web server on every node, Ready once it listens, behind an L2 Service
    with externalTrafficPolicy Local (the owner must be a node with a pod)."""
    from lab.kube.workloads import daemonset, documents, lb_service, namespace

    return documents(namespace(KUBE_NS),
                     daemonset(KUBE_NS, "web", ["sh", "-c", KUBE_APP_TEXT], ready_on_port=True),
                     lb_service(KUBE_NS, "web", "l2-pool", "web", local=True))

_CONNECTOR = r"""
import socket, sys, time
ok = None
while True:
    t = time.monotonic()
    s = socket.socket()
    s.settimeout(0.05)
    try:
        # An answer from the web server, not only a handshake: a node's kernel
        # completes handshakes for a pod that no longer runs.
        s.connect((sys.argv[1], 80))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        now = s.recv(64).startswith(b"HTTP/")
    except OSError:
        now = False
    finally:
        s.close()
    if now != ok:
        print(f"{t:.6f} {now}", flush=True)
        ok = now
    time.sleep(0.02 if now else 0.002)
"""


def kube_rounds(workdir: str | None, nodes: int) -> list[float]:
    import json

    from lab.kube.cluster import KubeLab

    owned = workdir is None
    if owned:
        from lab.kube.build import ensure_kubernetes
        from lab.kube.image import ensure_images

        bin_dir = ensure_kubernetes()
        images = ensure_images(bin_dir=bin_dir)
        kube = KubeLab(Path(f"/var/tmp/skein-lab/bench-{os.getpid()}"), nodes=nodes)
        kube.up(images, bin_dir)
    else:
        kube = KubeLab(Path(str(workdir)))
    times: list[float] = []
    try:
        kube.kubectl("apply", "-f", "-", input=kube_app())
        address = _wait(lambda: (kube.kubectl_json("-n", KUBE_NS, "get", "service", "web")
                                 ["status"].get("loadBalancer", {}).get("ingress")
                                 or [{}])[0].get("ip"), 120, "a LoadBalancer address")
        macs = {json.loads(Netns(n.netns).ip("-j", "link", "show", "eth0").stdout)[0]
                ["address"]: n for n in kube.node_specs()}

        def owner_now() -> Any:
            out = kube.client_ns.ip("neigh", "show", address).stdout.split()
            mac = out[out.index("lladdr") + 1] if "lladdr" in out else None
            return macs.get(mac) if mac else None

        alive = list(kube.node_specs())
        for _ in range(len(alive) - 1):
            prober = Prober(kube.client_ns, _CONNECTOR, address)
            names = {n.name for n in alive}
            try:
                prober.wait_for(lambda name, _t: name == "True", 120)
                owner = _wait(owner_now, 60, "the owner's MAC at the client")
                # Settled: every speaker of the node set has heard every other a while.
                _wait(functools.partial(speakers_ready, kube, names), 120,
                      "the speakers of the live nodes ready")
                time.sleep(3.0)
                t0 = time.monotonic()
                kube.kill_node(owner)
                t1 = prober.wait_for(functools.partial(connected_after, t0), 60)
            finally:
                prober.close()
            successor = _wait(owner_now, 10, "the new owner's MAC")
            assert successor.name != owner.name, "the dead node answered"
            alive = [n for n in alive if n.name != owner.name]
            times.append(t1 - t0)
            print(f"    {owner.name} killed; TCP through {successor.name} after "
                  f"{t1 - t0:.3f} s", flush=True)
    finally:
        if owned:
            kube.down()
    return times


def connected_after(since: float, state: str | None, when: float) -> bool:
    return state == "True" and when > since


def speakers_ready(kube: Any, nodes: set[str]) -> bool:
    pods = kube.kubectl_json("-n", "skein-system", "get", "pods", "-l",
                             "app.kubernetes.io/name=skein-speaker")["items"]
    ready = {p["spec"]["nodeName"] for p in pods
             if all(c.get("ready") for c in p["status"].get("containerStatuses", []))}
    return nodes <= ready


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (RuntimeError, ValueError, KeyError, IndexError, subprocess.SubprocessError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s: {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("netns", "kube"), default="netns",
                        help="netns: skein-speaker against keepalived in the netns lab; "
                             "kube: the shipped manifests in the kube lab, against the "
                             "netns lab's heartbeat mode")
    parser.add_argument("--kube-nodes", type=int, default=4)
    parser.add_argument("--kube-workdir", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default=None,
                        help="keep the daemons' logs and configs here (default: a temporary "
                             "directory, removed)")
    args = parser.parse_args()
    if args.mode == "kube":
        print("kube lab, shipped manifests (heartbeats + Leases), owner's node killed:",
              flush=True)
        kube = kube_rounds(args.kube_workdir, args.kube_nodes)
        with Lab(nodes=3, workdir=args.workdir) as lab:
            client = lab.add_client("cl", 100)
            for node in lab.nodes.values():
                start_name_server(lab, node)
            print("netns lab, skein-speaker (heartbeat 50 ms, dead after 200 ms):", flush=True)
            netns = skein(lab, client, args.rounds)
        kube_med, netns_med = statistics.median(kube), statistics.median(netns)
        print(f"kill -> first TCP reconnection, medians ({len(kube)} and {len(netns)} rounds):")
        print(f"  kube lab {kube_med:.3f} s   netns lab {netns_med:.3f} s   "
              f"ratio kube/netns {kube_med / netns_med:.2f}")
        return 0
    if shutil.which("keepalived") is None:
        print("l2_failover: keepalived is not installed (apt-get install keepalived)",
              file=sys.stderr)
        return 2
    with Lab(nodes=3, workdir=args.workdir) as lab:
        client = lab.add_client("cl", 100)
        for node in lab.nodes.values():
            start_name_server(lab, node)
        print("skein-speaker (heartbeat 50 ms, dead after 200 ms):", flush=True)
        ours = skein(lab, client, args.rounds)
        print("keepalived (VRRPv3, advert_int 0.1):", flush=True)
        theirs = keepalived(lab, client, args.rounds)
    ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)
    print(f"kill -> first TCP reconnection, median of {args.rounds}:")
    print(f"  skein-speaker {ours_med:.3f} s   keepalived {theirs_med:.3f} s   "
          f"ratio skein/keepalived {ours_med / theirs_med:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
