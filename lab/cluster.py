"""A Kubernetes-shaped cluster made of network namespaces on one machine.

    underlay netns (bridge br0) ─┬─ veth ─ node 1 netns (eth0 10.99.0.11) ─ cni0 ─ pods
                                 ├─ veth ─ node 2 netns (eth0 10.99.0.12) ─ cni0 ─ pods
                                 └─ ...

The underlay bridge lives in its own namespace, never in the root one.  Pods
are namespaces wired by the real `skein` executable run inside the node
namespace with the node's conflist, exactly as a container runtime would.
Everything carries the lab's tag; `close()` removes all of it (pods are
deleted through CNI DEL first, so leases are released too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass, field
from typing import Any

from cni_plugin.conflist import CONFLIST_NAME, node_conflist, plugin_config, write_atomically
from foundation import files
from lab.netns import Netns, new_tag

REFERENCE_CNI_DIR = "/usr/lib/cni"


def scripts_dir() -> str:
    """Where pip put our console scripts: the interpreter's own scripts dir, not
    shutil.which, which may find a version manager's shim script in front."""
    return sysconfig.get_path("scripts")


class LabError(RuntimeError):
    pass


@dataclass
class Pod:
    name: str
    ns: Netns
    node: Node
    container_id: str
    result: dict[str, Any]

    def address(self, version: int = 4) -> str:
        for ip in self.result.get("ips", []):
            iface = ipaddress.ip_interface(ip["address"])
            if iface.version == version:
                return str(iface.ip)
        raise LabError(f"pod {self.name} has no IPv{version} address")


@dataclass
class Node:
    name: str
    ns: Netns
    underlay_ip: str
    pod_cidr: str
    workdir: str
    cni_path: str
    pods: dict[str, Pod] = field(default_factory=dict)
    agent: subprocess.Popen[Any] | None = None
    pod_cidr6: str | None = None

    @property
    def pod_cidrs(self) -> list[str]:
        return [self.pod_cidr] + ([self.pod_cidr6] if self.pod_cidr6 else [])

    @property
    def conf_dir(self) -> str:
        return os.path.join(self.workdir, "net.d")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.workdir, "ipam")

    @property
    def agent_socket(self) -> str:
        return os.path.join(self.workdir, "run", "agent.sock")

    @property
    def conflist_path(self) -> str:
        return os.path.join(self.conf_dir, CONFLIST_NAME)

    def conflist(self) -> dict[str, Any]:
        with open(self.conflist_path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data

    def cni(self, command: str, container_id: str, netns: str, ifname: str = "eth0",
            prev_result: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        conf = plugin_config(self.conflist(), 0, prev_result)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_PATH": self.cni_path}
        return self.ns.run(os.path.join(scripts_dir(), "skein"), check=False,
                           input=json.dumps(conf), env=env, timeout=120)


class Lab:
    """N nodes on one underlay segment; use as a context manager."""

    def __init__(self, nodes: int = 3, tag: str | None = None,
                 underlay: str = "10.99.0.0/24", cluster_cidr: str = "10.244.0.0/16",
                 cluster_cidr6: str | None = None,
                 workdir: str | None = None) -> None:
        self.tag = tag or new_tag()
        self.prefix = f"sk{self.tag}"
        self.underlay_net = ipaddress.ip_network(underlay)
        self.cluster_cidr = ipaddress.ip_network(cluster_cidr)
        # Dual stack: each node also gets a /64 of this network.
        self.cluster_cidr6 = ipaddress.ip_network(cluster_cidr6) if cluster_cidr6 else None
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"skein-lab-{self.tag}-")
        self.node_count = nodes
        self.underlay = Netns(f"{self.prefix}u")
        self.nodes: dict[str, Node] = {}
        self.extra_ns: list[Netns] = []
        self.processes: list[subprocess.Popen[Any]] = []

    # -- building -----------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.underlay.create()
        self.underlay.ip("link", "add", "br0", "type", "bridge")
        self.underlay.ip("link", "set", "br0", "up")
        subnets = self.cluster_cidr.subnets(new_prefix=24)
        subnets6 = self.cluster_cidr6.subnets(new_prefix=64) if self.cluster_cidr6 else None
        for i in range(1, self.node_count + 1):
            node = self.add_node(f"node{i}", str(next(subnets)))
            if subnets6 is not None:
                node.pod_cidr6 = str(next(subnets6))

    def host(self, index: int) -> str:
        return str(self.underlay_net.network_address + index)

    def add_node(self, name: str, pod_cidr: str) -> Node:
        index = len(self.nodes) + 1
        ns = Netns(f"{self.prefix}n{index}").create()
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"n{index}",
              "netns", self.underlay.name)
        self.underlay.ip("link", "set", f"n{index}", "master", "br0", "up")
        address = self.host(10 + index)
        ns.ip("addr", "add", f"{address}/{self.underlay_net.prefixlen}", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("route", "add", "default", "via", self.host(1))
        workdir = os.path.join(self.workdir, name)
        os.makedirs(workdir, exist_ok=True)
        node = Node(name=name, ns=ns, underlay_ip=address, pod_cidr=pod_cidr, workdir=workdir,
                    cni_path=f"{scripts_dir()}:{REFERENCE_CNI_DIR}")
        self.nodes[name] = node
        return node

    def write_conflist(self, node: Node, **options: Any) -> None:
        """The conflist the node agent would write (used when no agent runs)."""
        write_atomically(node.conflist_path, node_conflist(
            node.pod_cidrs, data_dir=node.data_dir,
            cluster_cidrs=self.cluster_cidrs, **options))

    @property
    def cluster_cidrs(self) -> list[str]:
        return [str(self.cluster_cidr)] + ([str(self.cluster_cidr6)] if self.cluster_cidr6
                                           else [])

    # -- the control plane: a manifests file, one agent per node -------------
    @property
    def manifests_path(self) -> str:
        return os.path.join(self.workdir, "cluster.yaml")

    def node_object(self, node: Node) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
                "spec": {"podCIDR": node.pod_cidr, "podCIDRs": node.pod_cidrs},
                "status": {"addresses": [{"type": "InternalIP", "address": node.underlay_ip},
                                         {"type": "Hostname", "address": node.name}]}}

    def write_manifests(self, nodes: list[Node] | None = None,
                        extra: list[dict[str, Any]] | None = None) -> None:
        """Describe the cluster (these nodes, default all, plus `extra` objects)
        in the manifests file the daemons follow; replaced atomically."""
        import yaml

        docs = [self.node_object(n) for n in (self.nodes.values() if nodes is None else nodes)]
        docs += extra or []
        files.write_atomically(self.manifests_path, yaml.safe_dump_all(docs, sort_keys=False))

    def start_agent(self, node: Node, resync: float = 2.0) -> subprocess.Popen[Any]:
        argv = [os.path.join(scripts_dir(), "skein-agent"), "--node", node.name,
                "--manifests", self.manifests_path, "--cni-conf-dir", node.conf_dir,
                "--ipam-data-dir", node.data_dir,
                *[arg for cidr in self.cluster_cidrs for arg in ("--cluster-cidr", cidr)],
                "--resync", str(resync), "--socket", node.agent_socket]
        proc = self.spawn(node.ns, *argv, log=os.path.join(node.workdir, "agent.log"))
        node.agent = proc
        return proc

    def stop_agent(self, node: Node, kill: bool = False) -> None:
        proc = node.agent
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(timeout=10)
        node.agent = None

    def start_agents(self, timeout: float = 20.0) -> None:
        """Write the manifests, start every node's agent, wait for the conflists."""
        import time

        if not os.path.exists(self.manifests_path):
            self.write_manifests()
        for node in self.nodes.values():
            self.start_agent(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            while not os.path.exists(node.conflist_path):
                if time.monotonic() > deadline:
                    raise LabError(f"agent on {node.name} wrote no conflist; see "
                                   f"{os.path.join(node.workdir, 'agent.log')}")
                time.sleep(0.05)

    def add_client(self, suffix: str, index: int, address6: str | None = None) -> Netns:
        """A namespace on the underlay segment (a client outside the cluster, or a
        router): veth `eth0` plugged into the underlay bridge, address .`index`."""
        ns = self.add_namespace(suffix)
        port = f"c{suffix}"[:15]
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", port,
              "netns", self.underlay.name)
        self.underlay.ip("link", "set", port, "master", "br0", "up")
        ns.ip("addr", "add", f"{self.host(index)}/{self.underlay_net.prefixlen}", "dev", "eth0")
        if address6:
            ns.ip("-6", "addr", "add", address6, "dev", "eth0", "nodad")
        ns.ip("link", "set", "eth0", "up")
        return ns

    def add_namespace(self, suffix: str) -> Netns:
        ns = Netns(f"{self.prefix}{suffix}").create()
        self.extra_ns.append(ns)
        return ns

    def add_pod(self, node: Node, name: str) -> Pod:
        ns = Netns(f"{self.prefix}{node.name[-2:]}{name}"[:30]).create()
        container_id = f"{self.prefix}-{node.name}-{name}"
        proc = node.cni("ADD", container_id, ns.path)
        if proc.returncode != 0:
            ns.delete()
            raise LabError(f"ADD of pod {name} on {node.name} failed: {proc.stdout.strip()}")
        pod = Pod(name=name, ns=ns, node=node, container_id=container_id,
                  result=json.loads(proc.stdout))
        node.pods[name] = pod
        return pod

    def delete_pod(self, pod: Pod) -> None:
        pod.node.cni("DEL", pod.container_id, pod.ns.path)
        pod.ns.delete()
        pod.node.pods.pop(pod.name, None)

    def spawn(self, ns: Netns, *argv: str, log: str | None = None) -> subprocess.Popen[Any]:
        """A background process inside `ns`, killed at close()."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = ns.popen(*argv, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    # -- teardown -----------------------------------------------------------
    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for node in self.nodes.values():
            for pod in list(node.pods.values()):
                try:
                    self.delete_pod(pod)
                except Exception:  # noqa: BLE001 - teardown goes on, the netns goes anyway
                    pod.ns.delete()
        for ns in self.extra_ns:
            ns.delete()
        for node in self.nodes.values():
            node.ns.delete()
        self.underlay.delete()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def leftovers(tag: str) -> list[str]:
    """Namespaces of this lab that still exist (for tests of the teardown)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout.split("\n")
    return [n.split()[0] for n in names if n.startswith(f"sk{tag}")]
