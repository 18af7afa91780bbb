"""One Kubernetes node of the kube lab: its files and the script that boots it.

A node is a network namespace on the lab's underlay plus one process tree
started as `nsenter --net=NODE unshare --mount --propagation slave bash boot.sh`
(shared/DESIGN.md: `ip netns exec` would remount /sys and hide the cgroups).
boot.sh gives the tree a node's view of the machine, in its own mount
namespace only (nothing propagates back to the host):

- a fresh sysfs (this namespace's links) with the host's cgroup hierarchies
  mounted again under it;
- private /run (rshared: containerd's pod netns mounts reach the DaemonSets'
  HostToContainer volumes), /var/log, /tmp, and overlays on /etc and /var/lib,
  all backed by the node's work directory; an empty /opt;
- the /proc/sys values the kubelet insists on, as files bound over the host's;
- every python3 of the host hidden: a node needs no Python of its own.

Then containerd (own root, state and socket), the lab's images imported into
it, the kubelet and kube-proxy.
"""

from __future__ import annotations

import glob
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.kube.cgroups import Hierarchy

SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.1"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
# The kubelet checks these and would write them host-wide.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Paths a node replaces with its own: the lab's work directory must be elsewhere.
NODE_PRIVATE = ("/run", "/var/run", "/var/log", "/var/lib", "/tmp", "/etc", "/opt")
HIDDEN_PYTHON_DIRS = ("/root/.pyenv",)
NO_PYTHON = """#!/bin/sh
echo "python3: not on this node (skein-lab hides the host's Python from its nodes)" >&2
exit 127
"""


@dataclass
class NodeSpec:
    name: str
    index: int
    netns: str
    ip: str
    workdir: Path
    cgroup: str            # the kubelet's --cgroup-root; the node's own processes go in .../system

    @property
    def system_cgroup(self) -> str:
        return f"{self.cgroup}/system"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "boot.pid"


def host_pythons() -> list[str]:
    """The host's python3 executables (resolved), to hide from the nodes."""
    found = set()
    for pattern in ("/usr/bin/python3*", "/usr/local/bin/python3*", "/bin/python3*"):
        for path in glob.glob(pattern):
            real = os.path.realpath(path)
            if os.path.isfile(real) and os.access(real, os.X_OK) and not real.endswith("-config"):
                found.add(real)
    return sorted(found)


def containerd_config(node: NodeSpec) -> str:
    root = node.workdir / "containerd"
    return f"""version = 2
root = "{root}"
state = "/run/containerd"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{node.workdir / 'containerd-opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # No CAP_SYS_RESOURCE for the lab: without this every sandbox fails with
  # "can't get final child's PID from pipe" (shared/DESIGN.md).
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"""


def kubelet_config(node: NodeSpec, ca: Path, cluster_dns: str) -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(node.workdir / "pki" / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(node.workdir / "pki" / "kubelet-serving.key"),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "clusterDNS": [cluster_dns],
        "clusterDomain": "cluster.local",
        "resolvConf": str(node.workdir / "resolv.conf"),
        "failSwapOn": False,
        "failCgroupV1": False,
        # Nothing can be pulled again here: images are never collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "staticPodPath": str(node.workdir / "manifests"),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_config(node: NodeSpec, cluster_cidr: str) -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(node.workdir / "kube-proxy.kubeconfig")},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "healthzBindAddress": f"{node.ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": cluster_cidr,
        "mode": "iptables",
        # nf_conntrack_max is not per network namespace: leave the host's alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def boot_script(node: NodeSpec, *, bin_dir: Path, images: list[Path],
                hierarchies: list[Hierarchy], pythons: list[str]) -> str:
    """The bash script that makes the node (see the module's docstring)."""
    w = node.workdir
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "set -euo pipefail",
        f"W={q(str(w))}",
        "echo $$ > \"$W/boot.pid\"",
        "mount -t sysfs sysfs /sys",
        "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup",
    ]
    for h in hierarchies:
        target = q(str(h.mountpoint))
        lines.append(f"mkdir -p {target}")
        if h.v1:
            opts = h.options
            if opts.startswith("name="):
                opts = "none," + opts
            lines.append(f"mount -t cgroup -o {q(opts)} cgroup {target}")
        else:
            lines.append(f"mount -t cgroup2 cgroup2 {target}")
    lines += [
        "mount --bind \"$W/run\" /run",
        "mount --make-rshared /run",
        "mount --bind \"$W/log\" /var/log",
        "mount --bind \"$W/tmp\" /tmp",
        "mount -t overlay overlay -o \"lowerdir=/var/lib,upperdir=$W/var-lib/upper,"
        "workdir=$W/var-lib/work\" /var/lib",
        "mount --make-rshared /var/lib",
        "mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$W/etc/upper,"
        "workdir=$W/etc/work\" /etc",
        "mount -t tmpfs -o mode=755 opt /opt",
        "mkdir -p /opt/cni/bin /etc/cni/net.d /var/lib/kubelet /run/netns",
        # Only what the node's own installers write: the host's CNI configs
        # (podman's bridge, say) would make the node Ready without Skein.
        "mount --bind \"$W/cni-conf\" /etc/cni/net.d",
    ]
    for key, value in KUBELET_SYSCTLS.items():
        name = key.replace("/", "-")
        lines.append(f"printf '%s\\n' {q(value)} > \"$W/sysctl/{name}\"")
        lines.append(f"mount --bind \"$W/sysctl/{name}\" /proc/sys/{key}")
    for exe in pythons:
        lines.append(f"mount --bind \"$W/no-python\" {q(exe)}")
    for d in HIDDEN_PYTHON_DIRS:
        lines.append(f"if [ -d {q(d)} ]; then mount -t tmpfs -o mode=755 nopython {q(d)}; fi")
    kube = q(str(bin_dir))
    lines += [
        f"export PATH={kube}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "containerd --config \"$W/containerd.toml\" >/var/log/containerd.log 2>&1 &",
        f"for _ in $(seq 300); do [ -S {CONTAINERD_SOCKET} ] && break; sleep 0.1; done",
    ]
    for archive in images:
        lines.append(f"ctr --address {CONTAINERD_SOCKET} -n k8s.io images import "
                     f"--no-unpack=false {q(str(archive))} >>/var/log/images.log 2>&1")
    lines += [
        "echo imported > \"$W/images.done\"",
        "kubelet --config \"$W/kubelet.yaml\" --kubeconfig \"$W/kubelet.kubeconfig\" "
        f"--hostname-override {q(node.name)} --node-ip {q(node.ip)} --v=1 "
        ">/var/log/kubelet.log 2>&1 &",
        "kube-proxy --config \"$W/kube-proxy.yaml\" --v=1 >/var/log/kube-proxy.log 2>&1 &",
        "wait",
    ]
    return "\n".join(lines) + "\n"


def prepare(node: NodeSpec) -> None:
    """The node's directories (mount sources and overlay layers)."""
    for d in ("run", "log", "tmp", "var-lib/upper", "var-lib/work", "etc/upper", "etc/work",
              "sysctl", "containerd", "containerd-opt", "manifests", "pki", "cni-conf"):
        (node.workdir / d).mkdir(parents=True, exist_ok=True)
    no_python = node.workdir / "no-python"
    no_python.write_text(NO_PYTHON, encoding="utf-8")
    no_python.chmod(0o755)
    # Pods' DNS falls back to nothing outside the lab.
    (node.workdir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n",
                                              encoding="utf-8")
