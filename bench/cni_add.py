#!/usr/bin/env python3
"""Pod ADD/DEL wall time: Skein against the reference Go plugins, same run.

Two comparisons, measured in one run; every implementation has a fresh node
namespace of its own.

1. The configuration a node runs (the first table).  Every call is the whole
   chain a runtime runs: each plugin of the conflist in turn, the next one
   getting the previous one's result as prevResult (DEL in reverse order), with
   the `runtimeConfig` containerd passes (`portMappings`, empty).

     flannel     flannel's reference configuration: its conflist
                 ({"type": "flannel", "delegate": {"hairpinMode": true,
                 "isDefaultGateway": true}} + portmap) as the flannel plugin
                 hands it on: /usr/lib/cni/bridge + host-local with hairpinMode,
                 isDefaultGateway, ipMasq off (flanneld masquerades once per
                 node), the VXLAN MTU and a route to the cluster network; then
                 the reference portmap
     agent       the conflist skein-agent writes (cni_plugin.conflist.node_conflist:
                 skein with vxlan, hairpinMode, agentSocket, then portmap), with the
                 agent running in the node namespace as on a node (`--manifests`
                 holding this node's Node object: it makes the VXLAN device, keeps
                 the node's masquerade rule set, writes the conflist, serves the
                 fast path)
     in-process  the same conflist with nobody listening on its agentSocket:
                 `skein` does the work itself

   Then the ADD median of agent and flannel on a node that holds 0 and
   `--existing` (1000) other pods' attachments: probe pods added and deleted
   one at a time, so every probe sees exactly that many.

2. The bench configuration (the second table, the comparison this bench made
   first): one plugin, ipMasq off, no vxlan, no portmap; /usr/lib/cni/bridge +
   host-local against skein via skein-agent `--no-overlay`, on the same config.

`skein` and `skein-ipam` are the node executables built by
install/build_zipapps.py, with the shebang install_cni.py writes (what the
installer puts into /opt/cni/bin), built into a temporary directory at the
start; `--console` uses pip's console scripts instead.

Prints, per implementation: sequential ADD and DEL median and p90 (ms per
chain; each plugin call less what the same call costs with `true` in the
plugin's place: `nsenter --net`, spawn, pipes, one median for all of them,
taken between the timed calls), and the wall time of a burst of 64 parallel
ADDs (median of 3 rounds); then the ratios against the reference,
ADD and DEL with a 90 % bootstrap interval (see `median_ratio_interval`).  The
implementations take turns, pod by pod and burst by burst, so a machine whose
speed drifts during the run favours none of them.  Run as root:
`python3 bench/cni_add.py [--pods 30] [--burst 64] [--rounds 3] [--existing 1000]`.
Everything lives in namespaces named with a random tag and is removed at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "install")]

import build_zipapps  # type: ignore[import-not-found]  # noqa: E402

from cni_plugin.conflist import CONFLIST_NAME  # noqa: E402
from lab.cluster import REFERENCE_CNI_DIR, scripts_dir  # noqa: E402
from lab.netns import Netns, new_tag  # noqa: E402

# A container runtime execs plugins with the node's PATH (containerd:
# /usr/local/sbin:...:/usr/bin:...), and install_cni.py names the python3 found
# there in the executables' shebang (`#!/usr/bin/python3 -IS`), so a node runs
# them with its system python3.  The bench does the same; --python-dir names
# another directory to find python3 in (this interpreter's, say).
NODE_PATH = os.pathsep.join(build_zipapps.RUNTIME_PATH)

# The node: its pod subnet holds the pods of --existing and of a burst at once.
CLUSTER_CIDR = "10.88.0.0/16"
POD_CIDR = "10.88.0.0/20"
UNDERLAY_IP, UNDERLAY_GATEWAY = "10.99.0.2", "10.99.0.1"
# What containerd passes for a pod without hostPorts (libcni injects a
# capability's runtimeConfig whenever the runtime has the argument).
RUNTIME_CONFIG: dict[str, list[Any]] = {"portMappings": []}
# A Linux bridge has at most 1024 ports.
BRIDGE_PORTS = 1024

Chain = list[tuple[str, dict[str, Any]]]  # (executable, network config) per plugin


def bench_config(plugin: str, ipam: str, data_dir: str, agent_socket: str | None
                 ) -> dict[str, Any]:
    """The bench configuration: one plugin, as this bench measured first."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "bench", "type": plugin, "bridge": "cni0",
        "isGateway": True, "isDefaultGateway": True, "ipMasq": False,
        "ipam": {"type": ipam, "ranges": [[{"subnet": "10.88.0.0/16"}]], "dataDir": data_dir}}
    if agent_socket:
        conf["agentSocket"] = agent_socket
    return conf


def flannel_conflist(data_dir: str, mtu: int) -> dict[str, Any]:
    """kube-flannel's cni-conf.json after the flannel plugin made its delegate
    (flannel-cni-plugin: type bridge, ipMasq = !FLANNEL_IPMASQ, the MTU of
    subnet.env, isGateway, host-local with the node's subnet and a route to the
    cluster network)."""
    bridge = {"type": "bridge", "hairpinMode": True, "isDefaultGateway": True,
              "ipMasq": False, "isGateway": True, "mtu": mtu,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                       "routes": [{"dst": CLUSTER_CIDR}], "dataDir": data_dir}}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    return {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [bridge, portmap]}


def chain_of(conflist: dict[str, Any], bin_dirs: Iterable[str]) -> Chain:
    """A conflist as a runtime sees it: each plugin's executable and config."""
    chain = []
    for plugin in conflist["plugins"]:
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if plugin.get("capabilities", {}).get("portMappings"):
            conf["runtimeConfig"] = RUNTIME_CONFIG
        binary = next(os.path.join(d, plugin["type"]) for d in bin_dirs
                      if os.access(os.path.join(d, plugin["type"]), os.X_OK))
        chain.append((binary, conf))
    return chain


def build_executables(out: str, python: str) -> str:
    """Build into `out` with the shebang install_cni.py --python would write
    for `python`; returns that interpreter line."""
    interpreter = build_zipapps.direct_interpreter(python)
    for app in build_zipapps.APPS:
        build_zipapps.build(app, Path(out), interpreter)
    return str(interpreter)


def make_namespaces(names: list[str]) -> list[Netns]:
    """Many pod namespaces with one `ip` process (lo stays down: no CNI
    plugin needs it)."""
    spaces = [Netns(name) for name in names]
    if names:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names),
                       text=True, check=True, capture_output=True)
    return spaces


def delete_namespaces(spaces: list[Netns]) -> None:
    existing = [ns.name for ns in spaces if ns.exists()]
    if existing:
        subprocess.run(["ip", "-force", "-batch", "-"],
                       input="".join(f"netns delete {n}\n" for n in existing),
                       text=True, check=False, capture_output=True)


def plug_underlay(node: Netns) -> None:
    """An uplink inside the node namespace (both ends of a veth pair there: no
    packet leaves it) with the node's address and default route, for the
    VXLAN device to sit on."""
    node.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    node.ip("addr", "add", f"{UNDERLAY_IP}/24", "dev", "eth0")
    node.ip("link", "set", "eth0peer", "up")
    node.ip("link", "set", "eth0", "up")
    node.ip("route", "add", "default", "via", UNDERLAY_GATEWAY)


class Runner:
    """One implementation on a node namespace of its own.  `setup` runs once
    the namespace and the workdir exist and returns the chain to call."""

    def __init__(self, label: str, tag: str, cni_path: str, path: str, setup: Any) -> None:
        self.label, self.cni_path, self.path = label, cni_path, path
        self.node = Netns(f"sk{tag}{label[:4]}").create()
        self.workdir = tempfile.mkdtemp(prefix=f"skein-bench-{label}-")
        self.agent: subprocess.Popen[bytes] | None = None
        try:
            self.chain: Chain = setup(self)
        except BaseException:
            self.close()  # the node namespace, the agent if it started, the workdir
            raise

    def start_agent(self, *args: str) -> str:
        """skein-agent in the node namespace; returns its socket once it listens."""
        socket_path = os.path.join(self.workdir, "run", "agent.sock")
        log = open(os.path.join(self.workdir, "agent.log"), "ab")  # noqa: SIM115
        self.agent = self.node.popen(os.path.join(scripts_dir(), "skein-agent"), "--node",
                                     "bench", "--socket", socket_path, "--log-level",
                                     "WARNING", *args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(socket_path, self.agent, "skein-agent did not start", self.workdir)
        return socket_path

    def call_true(self) -> float:
        """One call with `true` for the plugin, through `_popen` as the timed
        calls: what `nsenter`, the spawn and the pipes cost."""
        stdin = json.dumps(self.chain[0][1]).encode()
        start = time.perf_counter()
        self._popen("true", {"PATH": self.path}).communicate(stdin)
        return time.perf_counter() - start

    def _popen(self, binary: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # nsenter --net, not `ip netns exec`: that one also makes a mount
        # namespace, a copy of every mount, /run/netns/* included, so its cost
        # would grow with the pods of the run.  A runtime execs plugins from
        # the node's namespace, with no mount namespace of their own.
        return subprocess.Popen(["nsenter", f"--net={self.node.path}", binary],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)

    def _exec(self, binary: str, stdin: bytes, command: str, container_id: str,
              netns: str) -> tuple[float, bytes]:
        env = {"PATH": self.path, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_path}
        start = time.perf_counter()
        proc = self._popen(binary, env)
        out, err = proc.communicate(stdin)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{self.label}: {os.path.basename(binary)} {command} failed: "
                             f"{out.decode()} {err.decode()}")
        return elapsed, out

    def add(self, container_id: str, netns: str) -> tuple[float, dict[str, Any]]:
        """The chain's ADD: (time, the last plugin's result)."""
        total, prev = 0.0, None
        for binary, conf in self.chain:
            stdin = json.dumps(conf if prev is None else {**conf, "prevResult": prev}).encode()
            elapsed, out = self._exec(binary, stdin, "ADD", container_id, netns)
            total += elapsed
            prev = json.loads(out)
        assert prev is not None
        return total, prev

    def delete(self, container_id: str, netns: str, result: dict[str, Any] | None) -> float:
        """The chain's DEL, in reverse, with the ADD result as prevResult where
        the config's version has one (0.4.0 on), as libcni does."""
        total = 0.0
        for binary, conf in reversed(self.chain):
            with_prev = result is not None and conf["cniVersion"] not in ("0.3.0", "0.3.1")
            stdin = json.dumps({**conf, "prevResult": result} if with_prev else conf).encode()
            total += self._exec(binary, stdin, "DEL", container_id, netns)[0]
        return total

    def burst(self, pods: list[Netns], prefix: str) -> tuple[float, list[dict[str, Any]]]:
        """Wall time of len(pods) chained ADDs started at once."""
        with ThreadPoolExecutor(len(pods)) as pool:
            start = time.perf_counter()
            results = list(pool.map(lambda i: self.add(f"{prefix}{i}", pods[i].path)[1],
                                    range(len(pods))))
            return time.perf_counter() - start, results

    def delete_all(self, pods: list[Netns], prefix: str, results: list[dict[str, Any]],
                   workers: int = 8) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: self.delete(f"{prefix}{i}", pods[i].path, results[i]),
                          range(len(pods))))

    def fill(self, pods: list[Netns], prefix: str, workers: int = 4) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda i: self.add(f"{prefix}{i}", pods[i].path)[1],
                                 range(len(pods))))

    def close(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
            self.agent.wait()
        self.node.delete()
        subprocess.run(["rm", "-rf", self.workdir], check=False)


def wait_for(path: str, proc: subprocess.Popen[bytes], what: str, workdir: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(workdir, "agent.log"), encoding="utf-8",
                      errors="replace") as f:
                raise SystemExit(f"{what}: {f.read()[-2000:]}")
        time.sleep(0.02)


# -- the implementations ------------------------------------------------------

def setup_agent_node(runner: Runner, mtu_holder: dict[str, Any]) -> Chain:
    """skein-agent as on a node: it reads this node's Node object, makes the
    VXLAN device and the masquerade rule set, and writes the conflist."""
    plug_underlay(runner.node)
    manifests = os.path.join(runner.workdir, "cluster.yaml")
    with open(manifests, "w", encoding="utf-8") as f:
        json.dump({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench"},
                   "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
                   "status": {"addresses": [{"type": "InternalIP", "address": UNDERLAY_IP}]}},
                  f)  # JSON is YAML
    conf_dir = os.path.join(runner.workdir, "net.d")
    runner.start_agent("--manifests", manifests, "--cni-conf-dir", conf_dir,
                       "--ipam-data-dir", os.path.join(runner.workdir, "ipam"),
                       "--cluster-cidr", CLUSTER_CIDR)
    assert runner.agent is not None
    conflist_path = os.path.join(conf_dir, CONFLIST_NAME)
    wait_for(conflist_path, runner.agent, "skein-agent wrote no conflist", runner.workdir)
    with open(conflist_path, encoding="utf-8") as f:
        conflist = json.load(f)
    mtu_holder["conflist"] = conflist
    return chain_of(conflist, runner.cni_path.split(":"))


def setup_in_process_node(runner: Runner, shipped: dict[str, Any]) -> Chain:
    """The agent's conflist on a node where no agent listens on its socket."""
    plug_underlay(runner.node)
    conflist = json.loads(json.dumps(shipped))
    skein = conflist["plugins"][0]
    skein["agentSocket"] = os.path.join(runner.workdir, "no-agent", "agent.sock")
    skein["ipam"]["dataDir"] = os.path.join(runner.workdir, "ipam")
    return chain_of(conflist, runner.cni_path.split(":"))


def setup_flannel_node(runner: Runner, mtu: int) -> Chain:
    plug_underlay(runner.node)
    return chain_of(flannel_conflist(os.path.join(runner.workdir, "ipam"), mtu),
                    runner.cni_path.split(":"))


def setup_bench_config(runner: Runner, binary: str, ipam: str, agent: bool) -> Chain:
    socket_path = runner.start_agent("--no-overlay") if agent else None
    return [(binary, bench_config(os.path.basename(binary), ipam,
                                  os.path.join(runner.workdir, "ipam"), socket_path))]


# -- measuring ----------------------------------------------------------------

def less_overhead(samples: list[float], overhead: float, calls: int) -> list[float]:
    return [t - overhead * calls for t in samples]


def measure(runners: list[Runner], pods: int, burst: int, rounds: int,
            tag: str) -> dict[str, dict[str, Any]]:
    """Interleaved: pod i is added by every implementation in turn before pod
    i+1, and the bursts alternate, so a machine that drifts faster or slower
    during the run (as shared VMs do) weighs on all of them alike; a call of
    `true` goes between them, for the overhead subtracted.  Burst pods are
    deleted (untimed) after each round: every round starts on an empty node."""
    results: dict[str, dict[str, Any]] = {r.label: {"add": [], "del": [], "burst": []}
                                          for r in runners}
    seq = {r.label: make_namespaces([f"sk{tag}{r.label[:4]}s{i}" for i in range(pods)])
           for r in runners}
    added: dict[str, list[dict[str, Any]]] = {r.label: [] for r in runners}
    spawn: list[float] = []
    try:
        for i in range(pods):
            for r in runners:
                elapsed, result = r.add(f"c{i}", seq[r.label][i].path)
                results[r.label]["add"].append(elapsed)
                added[r.label].append(result)
                spawn.append(r.call_true())
        for i in range(pods):
            for r in runners:
                results[r.label]["del"].append(r.delete(f"c{i}", seq[r.label][i].path,
                                                        added[r.label][i]))
                spawn.append(r.call_true())
        overhead = statistics.median(spawn)
        for r in runners:
            for key in ("add", "del"):
                results[r.label][key] = less_overhead(results[r.label][key], overhead,
                                                      len(r.chain))
        for n in range(rounds):
            for r in runners:
                many = make_namespaces([f"sk{tag}{r.label[:4]}b{n}x{i}" for i in range(burst)])
                try:
                    wall, burst_results = r.burst(many, f"r{n}b")
                    results[r.label]["burst"].append(wall)
                    r.delete_all(many, f"r{n}b", burst_results)
                finally:
                    delete_namespaces(many)
        return results
    finally:
        delete_namespaces([ns for spaces in seq.values() for ns in spaces])


def measure_scale(runners: list[Runner], pods: int, existing: int, settle: float, tag: str
                  ) -> dict[str, dict[int, list[float]]]:
    """ADD times of probe pods on a node holding 0, then `existing`, other pods
    (each probe deleted before the next: every one sees exactly that many).
    After filling, `settle` seconds pass first: a node whose pods have been
    running a while, not one still busy with a thousand pods' first moments
    (every new interface's IPv6 neighbour and multicast messages, which the
    bridge floods to all its ports)."""
    out: dict[str, dict[int, list[float]]] = {r.label: {} for r in runners}
    fillers: dict[str, list[Netns]] = {r.label: [] for r in runners}
    probes = {r.label: make_namespaces([f"sk{tag}{r.label[:4]}p{i}" for i in range(pods)])
              for r in runners}
    try:
        for level in (0, existing):
            for r in runners:
                more = level - len(fillers[r.label])
                spaces = make_namespaces([f"sk{tag}{r.label[:4]}f{len(fillers[r.label]) + i}"
                                          for i in range(more)])
                fillers[r.label].extend(spaces)
                r.fill(spaces, f"f{level}x")
                out[r.label][level] = []
            if level:
                time.sleep(settle)
            spawn: list[float] = []
            for i in range(pods):
                for r in runners:
                    elapsed, result = r.add(f"p{level}x{i}", probes[r.label][i].path)
                    out[r.label][level].append(elapsed)
                    r.delete(f"p{level}x{i}", probes[r.label][i].path, result)
                    spawn.append(r.call_true())
            overhead = statistics.median(spawn)
            for r in runners:
                out[r.label][level] = less_overhead(out[r.label][level], overhead,
                                                    len(r.chain))
        return out
    finally:
        delete_namespaces([ns for spaces in [*fillers.values(), *probes.values()]
                           for ns in spaces])


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]


def median_ratio_interval(ours: list[float], reference: list[float], resamples: int = 2000,
                          seed: int = 8) -> tuple[float, float]:
    """A 90 % bootstrap interval of median(ours) / median(reference).

    The machine's speed wanders between runs, so one ratio of two medians says
    little on its own.  Pod i of both lists was added one right after the
    other, so resampling keeps the pairs together (the same drawn indices for
    both): drift that slowed both is not counted as noise."""
    rng = random.Random(seed)
    indices = range(min(len(ours), len(reference)))
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(indices, k=len(indices))
        ratios.append(statistics.median(ours[i] for i in drawn)
                      / statistics.median(reference[i] for i in drawn))
    ratios.sort()
    return ratios[int(0.05 * resamples)], ratios[int(0.95 * resamples) - 1]


def print_table(title: str, rows: dict[str, dict[str, Any]], names: dict[str, str]) -> None:
    print(title)
    print(f"{'':12} {'ADD med':>8} {'ADD p90':>8} {'DEL med':>8} {'DEL p90':>8} {'burst s':>8}")
    for label, r in rows.items():
        print(f"{names[label]:12} {1000 * statistics.median(r['add']):8.1f} "
              f"{1000 * p90(r['add']):8.1f} {1000 * statistics.median(r['del']):8.1f} "
              f"{1000 * p90(r['del']):8.1f} {r['burst']:8.2f}")


def print_ratio(name: str, ref_name: str, r: dict[str, Any], ref: dict[str, Any],
                suffix: str = "") -> None:
    add_low, add_high = median_ratio_interval(r["add"], ref["add"])
    del_low, del_high = median_ratio_interval(r["del"], ref["del"])
    print(f"ratio {name}/{ref_name}{suffix}: ADD median "
          f"{statistics.median(r['add']) / statistics.median(ref['add']):.2f} "
          f"(90 % bootstrap interval {add_low:.2f}-{add_high:.2f}), "
          f"DEL median {statistics.median(r['del']) / statistics.median(ref['del']):.2f} "
          f"({del_low:.2f}-{del_high:.2f}), burst {r['burst'] / ref['burst']:.2f}")


SHIPPED = ("flannel", "agent", "in-process")
BENCH_CONFIG = ("reference", "bc-agent")
NAMES = {"flannel": "flannel", "agent": "agent", "in-process": "in-process",
         "reference": "reference", "bc-agent": "agent"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="bursts per implementation (alternating); the median counts")
    parser.add_argument("--existing", type=int, default=1000,
                        help="other pods on the node for the second ADD median (0: skip)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds the filled node is left alone before the probes")
    parser.add_argument("--console", action="store_true",
                        help="use pip's console scripts instead of the node zipapps")
    parser.add_argument("--python-dir", default=None,
                        help="find the executables' python3 here first (default: the "
                        "node's PATH, i.e. the system python3)")
    parser.add_argument("--only", type=lambda text: text.split(","),
                        default=[*SHIPPED, *BENCH_CONFIG],
                        help=f"comma-separated implementations to run, of {', '.join(NAMES)} "
                        "(flannel and reference always, when their table runs)")
    args = parser.parse_args()
    unknown = set(args.only) - set(NAMES)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}")
    if args.existing + 1 >= BRIDGE_PORTS or args.burst >= BRIDGE_PORTS:
        raise SystemExit(f"--existing and --burst: a bridge has at most {BRIDGE_PORTS} ports")
    if args.existing + max(args.burst, args.pods) + 2 > ipaddress.ip_network(
            POD_CIDR).num_addresses - 3:
        raise SystemExit(f"--existing: more pods than {POD_CIDR} holds")
    path = os.pathsep.join(filter(None, [args.python_dir, NODE_PATH]))
    python = shutil.which("python3", path=path)
    if python is None:
        raise SystemExit(f"no python3 on {path}")
    tag = new_tag()
    shipped = [label for label in SHIPPED if label in args.only]
    if shipped:
        shipped = ["flannel", *[label for label in shipped if label != "flannel"]]
    bench = [label for label in BENCH_CONFIG if label in args.only]
    if bench:
        bench = ["reference", *[label for label in bench if label != "reference"]]
    with tempfile.TemporaryDirectory(prefix="skein-bench-bin-") as bindir:
        if args.console:
            ours, shebang = scripts_dir(), "pip's console scripts"
        else:
            ours, shebang = bindir, "#!" + build_executables(bindir, python)
        cni_path = f"{ours}:{REFERENCE_CNI_DIR}"
        skein = os.path.join(ours, "skein")
        runners: list[Runner] = []
        try:
            holder: dict[str, Any] = {}
            if shipped:
                # The agent first: the others copy its conflist (and its MTU).
                agent = Runner("agent", tag, cni_path, path,
                               lambda r: setup_agent_node(r, holder))
                conflist = holder["conflist"]
                mtu = int(conflist["plugins"][0]["mtu"])
                runners.append(Runner("flannel", tag, cni_path, path,
                                      lambda r: setup_flannel_node(r, mtu)))
                if "agent" in shipped:
                    runners.append(agent)
                else:
                    agent.close()
                if "in-process" in shipped:
                    runners.append(Runner("in-process", tag, cni_path, path,
                                          lambda r: setup_in_process_node(r, conflist)))
            bridge = os.path.join(REFERENCE_CNI_DIR, "bridge")
            plans = {"reference": (bridge, "host-local", False),
                     "bc-agent": (skein, "skein-ipam", True)}
            for label in bench:
                binary, ipam, with_agent = plans[label]
                runners.append(Runner(label, tag, cni_path, path,
                                      lambda r, b=binary, i=ipam, a=with_agent:
                                      setup_bench_config(r, b, i, a)))
            results = measure(runners, args.pods, args.burst, args.rounds, tag)
            scale_runners = [r for r in runners if r.label in ("flannel", "agent")]
            scale = (measure_scale(scale_runners, args.pods, args.existing, args.settle, tag)
                     if args.existing and scale_runners else {})
        finally:
            for runner in runners:
                runner.close()
        for r in results.values():
            r["burst"] = statistics.median(r["burst"])
    print(f"our executables: {shebang} (the node's python3, found on {path}, by the "
          "absolute path the installer writes)")
    print(f"{args.pods} sequential pods (ms per call chain, less the same calls of `true`); "
          f"burst: {args.burst} parallel ADDs, wall time (median of {args.rounds})")
    if shipped:
        print_table("shipped configuration (the conflist skein-agent writes: skein with vxlan, "
                    "hairpinMode, agentSocket, masquerading by the agent; then portmap) "
                    "against flannel's (bridge + host-local, hairpinMode, isDefaultGateway, "
                    "ipMasq off; then portmap)",
                    {label: results[label] for label in shipped}, NAMES)
        for label in shipped[1:]:
            print_ratio(label, "flannel", results[label], results["flannel"])
        for label, levels in scale.items():
            at0, atn = (statistics.median(levels[level]) for level in (0, args.existing))
            print(f"{label}: ADD median with 0 other pods on the node {1000 * at0:.1f} ms, "
                  f"with {args.existing} {1000 * atn:.1f} ms (ratio {atn / at0:.2f})")
    if bench:
        print_table("bench configuration (one plugin, ipMasq off, no vxlan, no portmap) "
                    "against the reference bridge + host-local on the same config",
                    {label: results[label] for label in bench}, NAMES)
        for label in bench[1:]:
            print_ratio(NAMES[label], "reference", results[label], results["reference"],
                        " (bench configuration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
