"""The kube lab's cluster DNS: CoreDNS deployed as users deploy it.

- the manifest is upstream's add-on, cluster/addons/dns/coredns/coredns.yaml.base of the
  k8s.io/kubernetes module the lab runs, with its placeholders filled the way
  transforms2sed.sed fills them (the Service kube-dns at the kubelets' clusterDNS, the
  cluster domain, kube-up's memory limit): ServiceAccount, RBAC, the usual Corefile, the
  Deployment and the Service, applied with kubectl;
- its image, COREDNS_IMAGE, is built from the coredns binary of lab.kube.build.ensure_e2e
  (lab.kube.image.ensure_coredns_image) and must be on the nodes before `ensure` runs;
- the add-on's Corefile forwards what is not the cluster's to the node's resolv.conf, as on
  every real node, where that names the site's resolver.  The lab's nodes had 127.0.0.1 there
  (which CoreDNS's `loop` plugin rightly refuses: it would forward to itself), so the lab
  gets a site resolver of its own: a CoreDNS process in the router's namespace that answers
  NXDOMAIN for every name (the lab has no internet), and the kubelets' resolv.conf names it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from foundation.files import write_atomically
from lab.kube.cluster import (
    CLUSTER_DNS,
    ROUTER_INDEX,
    SERVICE_CIDR,
    KubeLab,
    KubeLabError,
    host,
)
from lab.kube.image import COREDNS_IMAGE

ADDON = "cluster/addons/dns/coredns/coredns.yaml.base"
CLUSTER_DOMAIN = "cluster.local"
# kube-up's DNS_MEMORY_LIMIT (cluster/gce/config-default.sh).
MEMORY_LIMIT = "170Mi"
NAMESPACE = "kube-system"
SITE_COREFILE = """\
# The lab's site resolver: no name outside the cluster exists here (no internet).
.:53 {
    template ANY ANY {
        rcode NXDOMAIN
    }
}
"""


def manifest(kubernetes_module: Path, image: str = COREDNS_IMAGE) -> str:
    """Upstream's add-on with its placeholders filled (transforms2sed.sed's substitutions)."""
    path = kubernetes_module / ADDON
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KubeLabError(f"CoreDNS add-on: cannot read {path}: {exc.strerror}") from None
    for placeholder, value in (
            ("__DNS__SERVER__", CLUSTER_DNS),
            ("__DNS__DOMAIN__", CLUSTER_DOMAIN),
            ("__CLUSTER_CIDR__", SERVICE_CIDR),
            ("__DNS__MEMORY__LIMIT__", MEMORY_LIMIT),
            ("__MACHINE_GENERATED_WARNING__", "Warning: This is a file generated from the base "
             "underscore template file: coredns.yaml.base")):
        text = text.replace(placeholder, value)
    if f"image: {image}\n" not in text:
        raise KubeLabError(f"{path} does not run {image}: the lab builds the CoreDNS the "
                           "add-on names (lab.kube.build.COREDNS_VERSION)")
    if "__" in text.replace("__SOURCE_FILENAME__", ""):
        raise KubeLabError(f"{path}: a placeholder the lab does not know is left")
    return text


def site_resolver_address() -> str:
    return host(ROUTER_INDEX)


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"coredns" in cmdline


def start_site_resolver(lab: KubeLab, coredns: Path) -> None:
    """CoreDNS in the router's namespace on :53, NXDOMAIN for everything (idempotent)."""
    assert lab.state is not None
    rdir = lab.workdir / "router"
    rdir.mkdir(exist_ok=True)
    pid_file = rdir / "site-dns.pid"
    if _pid_alive(pid_file):
        return
    conf = rdir / "site-dns.Corefile"
    conf.write_text(SITE_COREFILE, encoding="utf-8")
    pid = lab._spawn(lab.router_ns.name, [str(coredns), "-conf", str(conf), "-dns.port", "53"],
                     "site-dns.log", f"{lab.state.cgroup}/router")
    pid_file.write_text(f"{pid}\n", encoding="utf-8")
    lab.log(f"site resolver: CoreDNS on {site_resolver_address()}:53 in {lab.router_ns.name} "
            "(NXDOMAIN for every name)")


def point_nodes_at_site_resolver(lab: KubeLab) -> None:
    """The kubelets' resolvConf (what dnsPolicy: Default pods, CoreDNS among them, get)."""
    text = f"nameserver {site_resolver_address()}\n"
    for node in lab.node_specs():
        path = node.workdir / "resolv.conf"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)


def ensure(lab: KubeLab, coredns: Path, kubernetes_module: Path, timeout: float = 180) -> None:
    """The cluster's DNS up: the site resolver, the nodes' resolv.conf, the add-on applied
    and its Deployment rolled out.  Idempotent; COREDNS_IMAGE must be on every node."""
    start_site_resolver(lab, coredns)
    point_nodes_at_site_resolver(lab)
    lab.kubectl("apply", "-f", "-", input=manifest(kubernetes_module))
    lab.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/coredns",
                f"--timeout={int(timeout)}s", timeout=timeout + 30)
    lab.log(f"CoreDNS {COREDNS_IMAGE.rsplit(':', 1)[1]} serves {CLUSTER_DOMAIN} at "
            f"{CLUSTER_DNS} (Service {NAMESPACE}/kube-dns)")


def kubernetes_module(log: Callable[[str], None] = print) -> Path:
    """Where the Go module cache holds k8s.io/kubernetes at the cluster's version."""
    from lab.kube.build import KUBERNETES_VERSION, BuildError, module_info

    with tempfile.TemporaryDirectory(prefix="skein-lab-") as tmp:
        try:
            info = module_info("k8s.io/kubernetes", KUBERNETES_VERSION, Path(tmp), log)
        except BuildError as exc:
            raise KubeLabError(str(exc)) from None
    return Path(info["Dir"])


def for_up(log: Callable[[str], None] = print) -> tuple[Path, Callable[[KubeLab], None]]:
    """What `KubeLab.up` needs for the cluster DNS: the CoreDNS image's archive (for the
    nodes' boot) and the `dns` step.  Builds coredns (lab.kube.build.ensure_e2e) once."""
    from lab.kube.build import ensure_e2e
    from lab.kube.image import ensure_coredns_image

    e2e_bin = ensure_e2e(log=log)
    module = kubernetes_module(log)
    archive = ensure_coredns_image(e2e_bin / "coredns", log=log)
    return archive, lambda lab: ensure(lab, e2e_bin / "coredns", module)
