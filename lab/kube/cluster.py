"""A real Kubernetes cluster in network namespaces: `skein-lab kube up|down|status`.

    client (.100) ─┐
    BIRD (.5) ─────┤ underlay bridge (its own netns, no uplink) 192.168.56.0/24
    control plane ─┤   etcd, kube-apiserver (.2:6443), controller-manager, scheduler
    node1 (.11) ───┤   containerd, kubelet, kube-proxy; Skein from its DaemonSets
    node2 (.12) ───┤
    node3 (.13) ───┘

Upstream binaries only (lab.kube.build: Kubernetes from its Go modules), and
Skein installed as a user installs it: its image imported into every node's
containerd, then `kubectl apply -f install/manifests/` and the L2 and BGP
examples of install/examples (whose addresses are the Vagrant lab's, which this
lab copies: nodes on 192.168.56.0/24, the router at .5).

`up` leaves the cluster running and returns; everything it made is recorded in
WORKDIR/state.json before it is made, so `down` removes all of it (namespaces,
processes, mounts, cgroups) also after a failed or interrupted `up`.  Every
client of a lab address runs inside a lab namespace: from the root namespace
the lab's addresses are routed out through eth0.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundation.files import write_atomically
from lab.kube import cgroups
from lab.kube.node import (
    NODE_PRIVATE,
    NodeSpec,
    boot_script,
    containerd_config,
    host_pythons,
    kube_proxy_config,
    kubelet_config,
    prepare,
)
from lab.kube.pki import Pki, kubeconfig
from lab.netns import Netns, new_tag
from lab.router import BIRD_CONF, NODES_ASN, ROUTER_ASN

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "install" / "manifests"
EXAMPLES = REPO / "install" / "examples"
DEFAULT_WORKDIR = Path("/var/tmp/skein-lab/kube")
UNDERLAY = ipaddress.ip_network("192.168.56.0/24")
CP_INDEX, ROUTER_INDEX, CLIENT_INDEX, FIRST_NODE = 2, 5, 100, 11
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DNS = "10.96.0.10"
BGP_POOL = "198.51.100.0/24"   # install/examples/bgp-peer.yaml
SKEIN_NAMESPACE = "skein-system"

Log = Callable[[str], None]


class KubeLabError(RuntimeError):
    pass


def host(index: int) -> str:
    return str(UNDERLAY.network_address + index)


@dataclass
class State:
    """What a lab is made of; written before each thing is made."""

    tag: str
    nodes: int
    netns: list[str] = field(default_factory=list)
    cgroup: str = ""
    bin_dir: str = ""
    phase: str = "starting"

    @classmethod
    def load(cls, workdir: Path) -> State | None:
        try:
            data = json.loads((workdir / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(**data)

    def save(self, workdir: Path) -> None:
        write_atomically(workdir / "state.json", json.dumps(asdict(self), indent=2) + "\n")


class KubeLab:
    def __init__(self, workdir: Path = DEFAULT_WORKDIR, nodes: int = 3,
                 log: Log = print) -> None:
        self.workdir = workdir.resolve()
        for private in NODE_PRIVATE:
            if self.workdir == Path(private) or Path(private) in self.workdir.parents:
                raise KubeLabError(f"--workdir {self.workdir}: a node mounts its own {private}, "
                                   "so it would not see the lab's files there; pick a directory "
                                   f"outside {', '.join(NODE_PRIVATE)} (default {DEFAULT_WORKDIR})")
        self.node_count = nodes
        self.log = log
        self.state = State.load(self.workdir)

    # -- names ----------------------------------------------------------------
    @property
    def tag(self) -> str:
        if self.state is None:
            raise KubeLabError(f"no kube lab in {self.workdir} (run `skein-lab kube up`)")
        return self.state.tag

    def ns(self, role: str) -> Netns:
        return Netns(f"sk{self.tag}{role}")

    @property
    def cp_ns(self) -> Netns:
        return self.ns("cp")

    @property
    def client_ns(self) -> Netns:
        return self.ns("cl")

    @property
    def router_ns(self) -> Netns:
        return self.ns("r")

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def bird_socket(self) -> Path:
        return self.workdir / "router" / "bird.ctl"

    def node_specs(self) -> list[NodeSpec]:
        assert self.state is not None
        return [NodeSpec(name=f"node{i}", index=i, netns=f"sk{self.tag}n{i}",
                         ip=host(FIRST_NODE + i - 1), workdir=self.workdir / f"node{i}",
                         cgroup=f"{self.state.cgroup}/node{i}")
                for i in range(1, self.state.nodes + 1)]

    # -- clients ----------------------------------------------------------------
    def kubectl_argv(self, *args: str) -> list[str]:
        assert self.state is not None
        return ["ip", "netns", "exec", self.cp_ns.name,
                os.path.join(self.state.bin_dir, "kubectl"), "--kubeconfig",
                str(self.kubeconfig), *args]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.kubectl_argv(*args), capture_output=True, text=True,
                              input=input, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise KubeLabError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    # -- up ---------------------------------------------------------------------
    def up(self, images: Sequence[Path], bin_dir: Path, timeout: float = 300,
           dns: Callable[[KubeLab], None] | None = None) -> None:
        """Start the cluster; `dns` (lab.kube.coredns) deploys its DNS once it runs."""
        if self.state is not None:
            raise KubeLabError(f"a kube lab already runs from {self.workdir} (tag "
                               f"{self.state.tag}); `skein-lab kube down` first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = State(tag=new_tag(), nodes=self.node_count, bin_dir=str(bin_dir))
        self.state.cgroup = f"/skein-lab-{self.state.tag}"
        self.state.save(self.workdir)
        started = time.monotonic()
        self._network()
        pki = self._pki()
        self._control_plane(pki, min(timeout, 120))
        self.log(f"control plane ready at https://{host(CP_INDEX)}:6443 "
                 f"({time.monotonic() - started:.0f} s)")
        for node in self.node_specs():
            self._start_node(node, pki, list(images))
        self._install_skein()
        self._wait_ready(timeout)
        self._routes_to_pods()
        self._router()
        if dns is not None:
            dns(self)
        self.state.phase = "up"
        self.state.save(self.workdir)
        self.log(f"cluster up in {time.monotonic() - started:.0f} s")

    def _record_ns(self, ns: Netns) -> Netns:
        assert self.state is not None
        self.state.netns.append(ns.name)
        self.state.save(self.workdir)
        return ns.create()

    def _plug(self, ns: Netns, index: int, port: str) -> None:
        """ns's eth0 on the underlay bridge, address .index (no default route)."""
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", port,
              "netns", self.ns("u").name)
        self.ns("u").ip("link", "set", port, "master", "br0", "up")
        ns.ip("addr", "add", f"{host(index)}/{UNDERLAY.prefixlen}", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")

    def _network(self) -> None:
        assert self.state is not None
        underlay = self._record_ns(self.ns("u"))
        underlay.ip("link", "add", "br0", "type", "bridge")
        underlay.ip("link", "set", "br0", "up")
        self._plug(self._record_ns(self.cp_ns), CP_INDEX, "cp")
        router = self._record_ns(self.router_ns)
        self._plug(router, ROUTER_INDEX, "r")
        router.sysctl("net.ipv4.ip_forward", "1")
        client = self._record_ns(self.client_ns)
        self._plug(client, CLIENT_INDEX, "cl")
        # BGP-announced addresses are reached through the router (L2 ones directly).
        client.ip("route", "add", BGP_POOL, "via", host(ROUTER_INDEX))
        cgroups.create(self.state.cgroup)
        for node in self.node_specs():
            ns = self._record_ns(Netns(node.netns))
            self._plug(ns, FIRST_NODE + node.index - 1, f"n{node.index}")
            # Nodes have a default route, as every real node: a ClusterIP is routed
            # before kube-proxy's DNAT sees it.  The router has none, so anything for
            # outside the lab gets an unreachable at once and goes no further.
            ns.ip("route", "add", "default", "via", host(ROUTER_INDEX))
        self.write_env()

    def _pki(self) -> Pki:
        pki = Pki(self.workdir / "pki").create()
        server = f"https://{host(CP_INDEX)}:6443"
        pki.issue("apiserver", "kube-apiserver", server=True,
                  sans=(host(CP_INDEX), str(ipaddress.ip_network(SERVICE_CIDR)[1]),
                        "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                        "kubernetes.default.svc.cluster.local", "localhost", "127.0.0.1"))
        pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        for name, cn, org in (("admin", "skein-lab-admin", "system:masters"),
                              ("controller-manager", "system:kube-controller-manager", None),
                              ("scheduler", "system:kube-scheduler", None),
                              ("kube-proxy", "system:kube-proxy", None)):
            kubeconfig(self.workdir / f"{name}.kubeconfig", server, pki.ca.cert,
                       pki.issue(name, cn, org), name)
        for node in self.node_specs():
            prepare(node)
            cred = pki.issue(f"kubelet-{node.name}", f"system:node:{node.name}", "system:nodes")
            kubeconfig(node.workdir / "kubelet.kubeconfig", server, pki.ca.cert, cred,
                       node.name)
            serving = pki.issue(f"kubelet-serving-{node.name}", f"system:node:{node.name}",
                                "system:nodes", sans=(node.ip, node.name), server=True)
            for src, dst in ((serving.cert, "kubelet-serving.crt"),
                             (serving.key, "kubelet-serving.key")):
                shutil.copyfile(src, node.workdir / "pki" / dst)
            shutil.copyfile(self.workdir / "kube-proxy.kubeconfig",
                            node.workdir / "kube-proxy.kubeconfig")
        return pki

    def _spawn(self, netns: str, argv: Sequence[str], log_name: str, cgroup: str) -> int:
        """A process in `netns` and `cgroup` that outlives this command."""
        assert self.state is not None
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        hier = cgroups.hierarchies()
        cgroups.create(cgroup, hier)
        with open(logs / log_name, "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own argv
                ["nsenter", f"--net=/run/netns/{netns}", *argv], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: cgroups.join(cgroup, 0, hier))
        return proc.pid

    def _control_plane(self, pki: Pki, timeout: float) -> None:
        assert self.state is not None
        b = Path(self.state.bin_dir)
        cp = self.cp_ns.name
        cg = f"{self.state.cgroup}/control-plane"
        w = self.workdir
        ip = host(CP_INDEX)
        self._spawn(cp, [str(b / "etcd"), "--name", "lab", "--data-dir", str(w / "etcd"),
                         "--listen-client-urls", "http://127.0.0.1:2379",
                         "--advertise-client-urls", "http://127.0.0.1:2379",
                         "--listen-peer-urls", "http://127.0.0.1:2380",
                         "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                         "--initial-cluster", "lab=http://127.0.0.1:2380",
                         "--unsafe-no-fsync", "--log-level", "warn"], "etcd.log", cg)
        self._spawn(cp, [
            str(b / "kube-apiserver"), "--etcd-servers", "http://127.0.0.1:2379",
            "--advertise-address", ip, "--bind-address", ip, "--secure-port", "6443",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--client-ca-file", str(pki.ca.cert),
            "--tls-cert-file", str(pki.dir / "apiserver.crt"),
            "--tls-private-key-file", str(pki.dir / "apiserver.key"),
            "--kubelet-client-certificate", str(pki.dir / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki.dir / "apiserver-kubelet-client.key"),
            "--kubelet-certificate-authority", str(pki.ca.cert),
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki.sa_pub),
            "--service-account-signing-key-file", str(pki.sa_key),
            "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true", "--profiling=false", "--v=1"], "kube-apiserver.log", cg)
        self._wait(lambda: self.kubectl("get", "--raw", "/readyz", check=False,
                                        timeout=10).returncode == 0, timeout,
                   "kube-apiserver not ready; see " + str(w / "logs" / "kube-apiserver.log"))
        self._spawn(cp, [
            str(b / "kube-controller-manager"),
            "--kubeconfig", str(w / "controller-manager.kubeconfig"),
            "--authentication-kubeconfig", str(w / "controller-manager.kubeconfig"),
            "--authorization-kubeconfig", str(w / "controller-manager.kubeconfig"),
            "--bind-address", "127.0.0.1", "--leader-elect=false",
            "--allocate-node-cidrs", "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", "24",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--service-account-private-key-file", str(pki.sa_key),
            "--root-ca-file", str(pki.ca.cert),
            "--cluster-signing-cert-file", str(pki.ca.cert),
            "--cluster-signing-key-file", str(pki.ca.key),
            "--use-service-account-credentials", "--v=1"], "kube-controller-manager.log", cg)
        self._spawn(cp, [
            str(b / "kube-scheduler"), "--kubeconfig", str(w / "scheduler.kubeconfig"),
            "--authentication-kubeconfig", str(w / "scheduler.kubeconfig"),
            "--authorization-kubeconfig", str(w / "scheduler.kubeconfig"),
            "--bind-address", "127.0.0.1", "--leader-elect=false", "--v=1"],
            "kube-scheduler.log", cg)

    def _start_node(self, node: NodeSpec, pki: Pki, images: list[Path]) -> None:
        assert self.state is not None
        hier = cgroups.hierarchies()
        cgroups.create(node.system_cgroup, hier)
        (node.workdir / "containerd.toml").write_text(containerd_config(node), encoding="utf-8")
        (node.workdir / "kubelet.yaml").write_text(
            kubelet_config(node, pki.ca.cert, CLUSTER_DNS), encoding="utf-8")
        (node.workdir / "kube-proxy.yaml").write_text(kube_proxy_config(node, CLUSTER_CIDR),
                                                      encoding="utf-8")
        script = node.workdir / "boot.sh"
        script.write_text(boot_script(node, bin_dir=Path(self.state.bin_dir), images=images,
                                      hierarchies=hier, pythons=host_pythons()),
                          encoding="utf-8")
        self._spawn(node.netns, ["unshare", "--mount", "--propagation", "slave",
                                 "bash", str(script)], f"{node.name}-boot.log",
                    node.system_cgroup)
        self.log(f"{node.name}: booting ({node.ip})")

    def _install_skein(self) -> None:
        self.kubectl("apply", "-f", str(MANIFESTS))
        self._wait(lambda: self.kubectl("get", "crd", "ipaddresspools.metallb.io",
                                        check=False).returncode == 0, 60, "CRDs not served")
        self._wait(lambda: self.kubectl("apply", "-f", str(EXAMPLES), check=False,
                                        timeout=30).returncode == 0, 60,
                   "install/examples not accepted")
        self.log("Skein installed: kubectl apply -f install/manifests/ install/examples/")

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            nodes = self.kubectl_json("get", "nodes")["items"]
            ok = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                          for c in n["status"].get("conditions", []))]
            pods = self.kubectl_json("-n", SKEIN_NAMESPACE, "get", "pods")["items"]
            running = [p for p in pods if p["status"].get("phase") == "Running" and all(
                c.get("ready") for c in p["status"].get("containerStatuses", []))]
            assert self.state is not None
            return len(ok) == self.state.nodes and len(pods) > 0 and len(running) == len(pods)

        self._wait(ready, timeout, "nodes not Ready or Skein pods not Running; "
                   f"`skein-lab kube status --workdir {self.workdir}` and the logs in "
                   f"{self.workdir}/node*/log")

    def _routes_to_pods(self) -> None:
        """The control plane is no node: it reaches pods (apiserver proxy, exec
        into hostNetwork pods) by a route per node's pod subnet."""
        for n in self.kubectl_json("get", "nodes")["items"]:
            address = next(a["address"] for a in n["status"]["addresses"]
                           if a["type"] == "InternalIP")
            for cidr in n["spec"].get("podCIDRs", []):
                self.cp_ns.ip("route", "replace", cidr, "via", address)

    def _router(self) -> None:
        router = self.router_ns
        rdir = self.workdir / "router"
        rdir.mkdir(exist_ok=True)
        conf = rdir / "bird.conf"
        conf.write_text(BIRD_CONF.format(router_ip=host(ROUTER_INDEX), router_asn=ROUTER_ASN,
                                         nodes_asn=NODES_ASN, underlay=UNDERLAY),
                        encoding="utf-8")
        assert self.state is not None
        self._spawn(router.name, ["bird", "-f", "-c", str(conf), "-s", str(self.bird_socket)],
                    "bird.log", f"{self.state.cgroup}/router")
        self._wait(self.bird_socket.exists, 10, "BIRD did not start")

    @staticmethod
    def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():
                    return
            except (KubeLabError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise KubeLabError(f"timed out after {timeout:.0f} s: {what}")
            time.sleep(0.5)

    def write_env(self) -> Path:
        assert self.state is not None
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECTL": os.path.join(self.state.bin_dir, "kubectl"),
            "LAB_NETNS": self.cp_ns.name,
            "CLIENT_NETNS": self.client_ns.name,
            "ROUTER_NETNS": self.router_ns.name,
            "BIRD_SOCKET": str(self.bird_socket),
            "NODE_NETNS": " ".join(n.netns for n in self.node_specs()),
            "NODES": " ".join(n.name for n in self.node_specs()),
        }
        path = self.workdir / "env"
        path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()),
                        encoding="utf-8")
        return path

    def hint(self) -> str:
        return (f". {self.workdir}/env\n"
                "ip netns exec \"$LAB_NETNS\" \"$KUBECTL\" --kubeconfig \"$KUBECONFIG\" "
                "get pods -A")

    # -- a node's own process tree -----------------------------------------------
    def node_pid(self, node: NodeSpec) -> int:
        return int(node.pid_file.read_text().strip())

    def in_node(self, node: NodeSpec, *argv: str, check: bool = False,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run argv in the node's network and mount namespaces (what its kubelet sees)."""
        return subprocess.run(["nsenter", "-t", str(self.node_pid(node)), "-n", "-m", *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def kill_node(self, node: NodeSpec) -> None:
        """Power a node off: its underlay port down, then every process of it
        killed.  In that order: a node whose processes die first still has a
        kernel on the wire that completes TCP handshakes for its frozen pods."""
        self.ns("u").ip("link", "set", f"n{node.index}", "down")
        cgroups.kill_all(node.cgroup)

    # -- down -------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything the lab made; returns what could not be removed."""
        state = self.state
        if state is None:
            return []
        problems: list[str] = []
        started = time.monotonic()
        if state.cgroup:
            stuck = cgroups.kill_all(state.cgroup)
            self.log(f"processes stopped ({time.monotonic() - started:.1f} s)")
            if stuck:
                problems.append(f"processes that would not die: {sorted(stuck)}")
        for name in reversed(state.netns):
            Netns(name).delete()
            if Netns(name).exists():
                problems.append(f"netns {name} remains")
        self.log(f"namespaces removed ({time.monotonic() - started:.1f} s)")
        if state.cgroup:
            problems += [f"cgroup {d} remains" for d in cgroups.remove(state.cgroup)]
        self.log(f"cgroups removed ({time.monotonic() - started:.1f} s)")
        mounts = mounts_under(self.workdir)
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        if not problems:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.state = None
        return problems


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    prefix = str(path).rstrip("/") + "/"
    return [p for p in points if p.startswith(prefix)]
