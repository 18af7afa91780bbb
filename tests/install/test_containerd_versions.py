"""Skein's installed conflist under containerd 1.6 (Debian's), 1.7 and 2.x (built from their
Go modules by lab.kube.containerd_build), driven through the CRI with crictl.

For each version, a node made for the test: a network namespace with an underlay peer, and a
process tree in its own mount namespace booted by the kube lab's node script (lab.kube.node:
private /run, /var/lib, /etc/cni/net.d, an empty /opt, the host's python3 hidden), stopped
before the kubelet.  containerd starts with the lab's node configuration and an empty CNI
config dir; then install/install_cni.py installs onto the node what the skein-node DaemonSet
installs (skein, skein-ipam, the bundled runtime, loopback and portmap, 10-skein.conflist
with cniVersion 1.0.0 and portmap chained).  The conflist is the installer's, which names
skein-agent's socket; no agent runs here, so the plugin does its work in-process, as on a
node before its agent is up or while it restarts (the agent's fast path is proven in the
kube tier).  Two pod sandboxes (`crictl runp`), each with an address of the node's pod
subnet; they reach each other over cni0 (ping, and TCP with the source address kept); a
hostPort of one is reached on the node's address from the underlay (portmap); `crictl
stopp` and `rmp` free both leases, remove the veths and the hostPort rule (DEL ran).

Network safety: the node and underlay namespaces are sk<tag>n/u; the pods' namespaces are
containerd's, inside the node's mount namespace; processes live under the cgroup
/skein-ctrd-<tag>, killed and removed at teardown, also on failure.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni_plugin.conflist import CNI_VERSION, CONFLIST_NAME, NETWORK_NAME
from lab.cluster import REFERENCE_CNI_DIR
from lab.kube import cgroups
from lab.kube.build import ensure_kubernetes
from lab.kube.cluster import mounts_under
from lab.kube.containerd_build import (
    CONTAINERD_1_7,
    CONTAINERD_2,
    containerd_program,
    crictl_program,
    ensure_containerd,
    ensure_crictl,
    revision_of,
)
from lab.kube.image import ensure_pause_image
from lab.kube.node import CONTAINERD_SOCKET, NodeSpec, boot_script, containerd_config, host_pythons
from lab.kube.node import prepare as prepare_node
from lab.netns import Netns, veth_between
from lab.traffic import ping, start_name_server, tcp_read, tcp_source_seen
from tests.install.helpers import INSTALL

POD_CIDR = "10.78.1.0/24"
CLUSTER_CIDR = "10.78.0.0/16"
NODE_IP, UNDERLAY_IP = "10.79.0.2", "10.79.0.1"
CONTAINER_PORT, HOST_PORT = 8080, 18080
IPAM_DIR = "var-lib/upper/cni/networks/" + NETWORK_NAME  # the node's /var/lib, its overlay
# What the skein image copies beside the installer (install/Containerfile).
REFERENCE_PLUGINS = ("loopback", "portmap")
SYSTEM = "system"


def log(line: str) -> None:
    print(f"[containerd tier] {line}", file=sys.stderr, flush=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.2)


class SandboxNetns(Netns):
    """A pod sandbox's network namespace, entered through its pause process."""

    def __init__(self, name: str, pid: int) -> None:
        super().__init__(name)
        self.pid = pid

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv]


@dataclass
class CriNode:
    spec: NodeSpec
    netns: Netns
    underlay: Netns
    crictl_bin: Path
    boot: subprocess.Popen[bytes]

    def run(self, *argv: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """argv in the node's network and mount namespaces (what its containerd sees)."""
        pid = self.spec.pid_file.read_text().strip()
        proc = subprocess.run(["nsenter", "-t", pid, "-n", "-m", *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()[-2000:]}\n{self.containerd_log()}")
        return proc

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{CONTAINERD_SOCKET}"
        return self.run(str(self.crictl_bin), "--runtime-endpoint", endpoint,
                        "--image-endpoint", endpoint, "--timeout", "60s", *args, check=check)

    def crictl_json(self, command: str, *args: str) -> Any:
        return json.loads(self.crictl(command, "-o", "json", *args).stdout)

    def containerd_log(self, lines: int = 40) -> str:
        path = self.spec.workdir / "log" / "containerd.log"
        text = path.read_text(errors="replace") if path.exists() else "(no containerd.log)"
        return "containerd.log:\n" + "\n".join(text.splitlines()[-lines:])

    def leases(self) -> set[str]:
        """The addresses skein-ipam holds (one file each) in the node's data dir."""
        data = self.spec.workdir / IPAM_DIR
        if not data.is_dir():
            return set()
        out = set()
        for name in os.listdir(data):
            try:
                out.add(str(ipaddress.ip_address(name)))
            except ValueError:
                continue
        return out


def containerd_bin_dir(version: str) -> Path:
    """Where the node finds `containerd` and its shim first: the cache for a built version,
    Debian's /usr/bin for the system's."""
    if version == SYSTEM:
        found = shutil.which("containerd")
        assert found, "containerd is not installed: run install/host-deps.sh"
        return Path(found).parent
    return ensure_containerd(version, log=log)


@pytest.fixture(scope="module")
def pause_archive() -> Path:
    """The kube lab's pause image (its static pause comes with the lab's Kubernetes build)."""
    return ensure_pause_image(ensure_kubernetes(log=log) / "pause", log=log)


@pytest.fixture(scope="module")
def crictl_bin() -> Path:
    return ensure_crictl(log=log) / "crictl"


@pytest.fixture(params=[SYSTEM, CONTAINERD_1_7, CONTAINERD_2])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cri_node(version: str, netns_factory: Any, tag: str, pause_archive: Path,
             crictl_bin: Path) -> Iterator[CriNode]:
    bin_dir = containerd_bin_dir(version)
    node_ns, underlay = netns_factory("n"), netns_factory("u")
    veth_between(node_ns, "eth0", underlay, "up0")
    node_ns.ip("addr", "add", f"{NODE_IP}/24", "dev", "eth0")
    underlay.ip("addr", "add", f"{UNDERLAY_IP}/24", "dev", "up0")
    node_ns.ip("route", "add", "default", "via", UNDERLAY_IP)
    # What the skein-node DaemonSet's `forwarding` init container does (hostPort is DNAT).
    node_ns.sysctl("net.ipv4.ip_forward", "1")
    # Not under /tmp: the node mounts its own /tmp (lab.kube.node.NODE_PRIVATE).
    workdir = Path(tempfile.mkdtemp(prefix=f"skein-ctrd-{tag}-", dir="/var/tmp"))
    top = f"/skein-ctrd-{tag}"
    spec = NodeSpec(name=f"ctrd-{tag}", index=1, netns=node_ns.name, ip=NODE_IP,
                    workdir=workdir, cgroup=f"{top}/pods")
    hier = cgroups.hierarchies()
    boot: subprocess.Popen[bytes] | None = None
    try:
        prepare_node(spec)
        config = containerd_config(spec) + '[debug]\n  level = "debug"\n'
        (workdir / "containerd.toml").write_text(config, encoding="utf-8")
        script = boot_script(spec, bin_dir=bin_dir, images=[pause_archive], hierarchies=hier,
                             pythons=host_pythons())
        # The node as the kube lab boots it, up to its kubelet: none runs here.
        marker = 'echo imported > "$W/images.done"\n'
        assert marker in script, "lab.kube.node.boot_script changed: no images.done line"
        script = script[: script.index(marker) + len(marker)] + "wait\n"
        (workdir / "boot.sh").write_text(script, encoding="utf-8")
        cgroups.create(spec.system_cgroup, hier)
        cgroups.create(spec.cgroup, hier)
        with open(workdir / "boot.log", "ab") as out:
            boot = subprocess.Popen(  # our own argv
                ["nsenter", f"--net=/run/netns/{node_ns.name}", "unshare", "--mount",
                 "--propagation", "slave", "bash", str(workdir / "boot.sh")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: cgroups.join(spec.system_cgroup, 0, hier))
        node = CriNode(spec, node_ns, underlay, crictl_bin, boot)

        def booted() -> bool:
            if boot is not None and boot.poll() is not None:
                raise AssertionError(f"the node's boot script exited {boot.returncode}: "
                                     f"{(workdir / 'boot.log').read_text()[-2000:]}\n"
                                     f"{node.containerd_log()}")
            return (workdir / "images.done").exists()

        wait_for("containerd up and the pause image imported", booted, timeout=180)
        yield node
    finally:
        # What this containerd thought of the node's configuration and the conflist.
        containerd_log = workdir / "log" / "containerd.log"
        if containerd_log.exists():
            for line in containerd_log.read_text(errors="replace").splitlines():
                if "level=warning" in line or "level=error" in line:
                    log(f"containerd {version}: {line}")
        stuck = cgroups.kill_all(top, hier=hier)
        if boot is not None:
            boot.wait(timeout=30)
        stayed = cgroups.remove(top, hier)
        for mount in sorted(mounts_under(workdir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        leftovers = mounts_under(workdir)
        if not leftovers:
            shutil.rmtree(workdir, ignore_errors=True)
        assert not stuck, f"processes that would not die: {sorted(stuck)}"
        assert not stayed, f"cgroups that stayed: {stayed}"
        assert not leftovers, f"mounts that stayed: {leftovers}"


def install_skein(node: CriNode, built: Path, runtime: Path) -> dict[str, Any]:
    """install_cni.py as the DaemonSet runs it, onto the node's /opt/cni/bin and
    /etc/cni/net.d (seen from here under ROOT); returns the conflist it wrote."""
    w = node.spec.workdir
    root = w / "host"
    (root / "opt/cni/bin").mkdir(parents=True)
    (root / "etc/cni").mkdir(parents=True)
    # ROOT/etc/cni/net.d is the node's conf dir, bound to /etc/cni/net.d by its boot script.
    (root / "etc/cni/net.d").symlink_to(w / "cni-conf")
    node.run("mount", "--bind", str(root / "opt/cni/bin"), "/opt/cni/bin")
    plugins = w / "cni-plugins"
    plugins.mkdir()
    for name in REFERENCE_PLUGINS:
        shutil.copy2(Path(REFERENCE_CNI_DIR) / name, plugins / name)
    proc = subprocess.run(
        [sys.executable, str(INSTALL / "install_cni.py"), f"--root={root}",
         f"--bin-src={built}", f"--runtime-src={runtime}", f"--plugins-src={plugins}",
         "--bin-dir=/opt/cni/bin", "--conf-dir=/etc/cni/net.d", f"--pod-cidr={POD_CIDR}",
         f"--cluster-cidr={CLUSTER_CIDR}", "--underlay-device=eth0"],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conflist: dict[str, Any] = json.loads((w / "cni-conf" / CONFLIST_NAME).read_text())
    return conflist


def network_ready(node: CriNode) -> bool:
    info = node.crictl_json("info")
    conditions = {c["type"]: c["status"] for c in info["status"]["conditions"]}
    return bool(conditions.get("NetworkReady"))


def run_pod(node: CriNode, name: str, port_mappings: list[dict[str, int]]) -> str:
    config = {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}-{node.spec.name}",
                     "attempt": 0},
        "hostname": name,
        "log_directory": f"/var/log/pods/{name}",
        "port_mappings": port_mappings,
        "linux": {"cgroup_parent": node.spec.cgroup},
    }
    path = node.spec.workdir / f"pod-{name}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    proc = node.crictl("runp", str(path), check=False)
    assert proc.returncode == 0, f"runp {name}: {proc.stderr}\n{node.containerd_log()}"
    return proc.stdout.strip()


def sandbox(node: CriNode, pod_id: str) -> tuple[str, SandboxNetns]:
    """The sandbox's address (from the CRI status) and its network namespace."""
    data = node.crictl_json("inspectp", pod_id)
    ip = data["status"]["network"]["ip"]
    pid = int(data["info"]["pid"])
    namespaces = data["info"]["runtimeSpec"]["linux"]["namespaces"]
    netns_path = next(n.get("path", "") for n in namespaces if n["type"] == "network")
    # containerd made the pod's netns a file in the node's private /run (never the host's).
    assert netns_path.startswith("/var/run/netns/") or netns_path.startswith("/run/"), \
        netns_path
    return ip, SandboxNetns(pod_id[:12], pid)


def test_conflist_works_with_containerd(version: str, cri_node: CriNode, built: Path,
                                        runtime: Path) -> None:
    node = cri_node
    status = dict(line.split(":", 1) for line in node.crictl("version").stdout.splitlines()
                  if ":" in line)
    expected = "1.6." if version == SYSTEM else version
    assert status["RuntimeName"].strip() == "containerd", status
    assert status["RuntimeVersion"].strip().lstrip("v").startswith(expected.lstrip("v")), status
    # No conflist yet: the runtime says so (a real node is NotReady until install-cni ran).
    assert not network_ready(node)

    conflist = install_skein(node, built, runtime)
    assert conflist["cniVersion"] == CNI_VERSION
    assert [p["type"] for p in conflist["plugins"]] == ["skein", "portmap"]
    assert conflist["plugins"][0]["agentSocket"]  # as a real node's: the agent is named
    wait_for("NetworkReady after the conflist appeared", lambda: network_ready(node))
    info = node.crictl_json("info")
    assert NETWORK_NAME in json.dumps(info.get("cniconfig", {})), info.get("cniconfig")

    pod_a = run_pod(node, "a", [{"protocol": 0, "container_port": CONTAINER_PORT,
                                 "host_port": HOST_PORT}])
    pod_b = run_pod(node, "b", [])
    ip_a, ns_a = sandbox(node, pod_a)
    ip_b, ns_b = sandbox(node, pod_b)
    subnet = ipaddress.ip_network(POD_CIDR)
    assert ipaddress.ip_address(ip_a) in subnet and ipaddress.ip_address(ip_b) in subnet
    assert ip_a != ip_b
    assert node.leases() == {ip_a, ip_b}
    bridged = json.loads(node.netns.ip("-j", "link", "show", "master", "cni0").stdout)
    assert len(bridged) == 2, bridged  # one host-side veth per sandbox
    # Over cni0, not routed or NATed: the server sees the client pod's own address.
    assert ping(ns_a, ip_b) and ping(ns_b, ip_a)
    assert tcp_source_seen(ns_b, ip_b, ns_a, ip_b, port=9090) == ip_a

    # hostPort: the underlay reaches pod a on the node's address (portmap's DNAT).
    server = start_name_server(ns_a, "pod-a", port=CONTAINER_PORT, listen="0.0.0.0")
    try:
        assert tcp_read(node.underlay, NODE_IP, HOST_PORT, timeout=10) == "pod-a", \
            node.run("iptables-save", check=False).stdout
    finally:
        server.kill()
        server.wait()

    for pod in (pod_a, pod_b):
        node.crictl("stopp", pod)
        node.crictl("rmp", pod)
    assert node.crictl_json("pods")["items"] == []
    # DEL ran, for both plugins: the leases are free, the veths and the hostPort rule gone.
    assert node.leases() == set()
    links = json.loads(node.netns.ip("-j", "link", "show").stdout)
    assert [link["ifname"] for link in links if link.get("link_type") == "ether"
            and link["ifname"] not in ("eth0", "cni0")
            and not link["ifname"].startswith("skein.")] == []
    assert tcp_read(node.underlay, NODE_IP, HOST_PORT, timeout=2) is None
    assert f"{HOST_PORT}" not in node.run("iptables-save", check=False).stdout


def test_build_programs() -> None:
    """What lab.kube.containerd_build asks the Go tool for: v2 lives at a /v2 module path,
    each version is its own cache entry, and --version is stamped in."""
    old, new = containerd_program(CONTAINERD_1_7), containerd_program(CONTAINERD_2)
    assert old.module == "github.com/containerd/containerd"
    assert new.module == "github.com/containerd/containerd/v2"
    assert new.import_paths() == ["github.com/containerd/containerd/v2/cmd/containerd",
                                  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"]
    assert old.dir_name != new.dir_name and old.inputs() != new.inputs()
    assert f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_2}" \
        in new.ldflags()
    assert "version.Revision=abc" in new.ldflags("abc")
    assert "-tags=" in " ".join(new.build_flags()) and "-trimpath" in new.build_flags()
    assert crictl_program().binaries == ("crictl",)
    with pytest.raises(ValueError):
        containerd_program("1.7.35")
    assert revision_of('{"Version":"v2.4.2","Origin":{"VCS":"git","Hash":"0123abc"}}') == \
        "0123abc"
    assert revision_of('{"Version":"v2.4.2"}') == revision_of("not json") == ""
