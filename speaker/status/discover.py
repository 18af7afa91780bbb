"""Where the nodes are and what the cluster says about services, for `skeinctl status`.

Why: on a real node the command runs inside the node's own namespace and needs none
of this.  For a lab (every node a network namespace on one machine) it must find each
node's namespace, and it does so from live state: a Node object's InternalIP (from
the manifests file the daemons follow) is looked for on the interfaces of every named
namespace, and the one holding it is that node.  The service CIDR is not visible in
any kernel, so it comes from the cluster's objects when they say it (Calico's
`BGPConfiguration` "default", `serviceClusterIPs`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from foundation.kube.model.calico import DEFAULT_NAME
from foundation.kube.model.cluster import ClusterState, ModelObject, expand_document, parse_object
from foundation.kube.model.errors import ModelError
from foundation.netlink.netns import entered_fd
from speaker.status.collect import NETNS_DIR, NodeTarget

CALICO_SOURCE = "Calico BGPConfiguration default, serviceClusterIPs"
SERVICE_CIDR_SOURCE = "ServiceCIDR objects"


def manifest_documents(path: str) -> list[Any]:
    """Every object of a manifests file (or of `kubectl get ... -o yaml`: Lists
    flattened), as plain data."""
    from foundation.kube.sources.file import yaml_documents

    with open(path, encoding="utf-8") as f:
        docs = yaml_documents(f.read())
    return [item for _, doc in docs for item in expand_document(doc)]


def state_of(docs: Sequence[Any]) -> ClusterState:
    """The objects Skein models (bad documents skipped, as the daemons do)."""
    objects: list[ModelObject] = []
    for item in docs:
        try:
            obj = parse_object(item)
        except ModelError:
            continue
        if obj is not None:
            objects.append(obj)
    return ClusterState.from_objects(objects)


def manifest_state(path: str) -> ClusterState:
    """The objects of a manifests file (bad documents skipped, as the daemons do)."""
    return state_of(manifest_documents(path))


def service_cidrs(state: ClusterState) -> tuple[tuple[str, ...], str]:
    """(CIDRs, where they came from) or ((), "unknown")."""
    for conf in state.bgp_configurations:
        if conf.name == DEFAULT_NAME and conf.service_cluster_ips:
            return tuple(str(c) for c in conf.service_cluster_ips), CALICO_SOURCE
    return (), "unknown"


def service_cidrs_of(docs: Sequence[Any], state: ClusterState | None = None
                     ) -> tuple[tuple[str, ...], str]:
    """The API's ServiceCIDRs, else Calico's serviceClusterIPs, else ((), "unknown")."""
    found: list[str] = []
    for doc in docs:
        if not (isinstance(doc, dict) and doc.get("kind") == "ServiceCIDR"
                and str(doc.get("apiVersion", "")).startswith("networking.k8s.io/")):
            continue
        for cidr in (doc.get("spec") or {}).get("cidrs") or []:
            try:
                found.append(str(ipaddress.ip_network(str(cidr), strict=False)))
            except ValueError:
                continue
    if found:
        return tuple(sorted(set(found))), SERVICE_CIDR_SOURCE
    return service_cidrs(state if state is not None else state_of(docs))


def _holds(path: str, address: str) -> bool:
    from pyroute2 import IPRoute

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered_fd(fd):
            ipr = IPRoute()
    finally:
        os.close(fd)
    try:
        family = 2 if ipaddress.ip_address(address).version == 4 else 10
        return any(m.get("IFA_ADDRESS") == address for m in ipr.get_addr(family=family))
    finally:
        ipr.close()


def netns_holding(address: str, netns_dir: str = NETNS_DIR,
                  names: Sequence[str] | None = None) -> list[str]:
    """The named namespaces with `address` on one of their interfaces."""
    found = []
    for name in sorted(names if names is not None else os.listdir(netns_dir)):
        try:
            if _holds(os.path.join(netns_dir, name), address):
                found.append(name)
        except OSError:
            continue
    return found


def _inode(path: str) -> int:
    """The inode of a namespace file; -1 when it is gone (other labs come and go)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def _cmdlines_by_netns() -> dict[int, list[list[str]]]:
    """Network namespace inode -> the command lines of the processes inside it."""
    out: dict[int, list[list[str]]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        out.setdefault(inode, []).append(argv)
    return out


def _flag(argv: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in a command line."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _runs_daemon_for(argv: list[str], manifests: str, node: str) -> bool:
    """`argv` is a daemon following `manifests` as node `node` (skein-agent, skein-speaker)."""
    path = _flag(argv, "--manifests")
    return (path is not None and _flag(argv, "--node") == node
            and os.path.abspath(path) == os.path.abspath(manifests))


def lab_targets(state: ClusterState, conf_dir_template: str, netns_dir: str = NETNS_DIR,
                manifests: str | None = None) -> tuple[list[NodeTarget], list[str]]:
    """(one target per Node found, problems).  A node's namespace is the named one
    holding its InternalIP; when several do (labs running side by side reuse
    addresses), the one running a daemon for this node and this `manifests` file.
    `conf_dir_template` may name the node as `{node}`."""
    targets, problems = [], []
    names = sorted(os.listdir(netns_dir)) if os.path.isdir(netns_dir) else []
    processes: dict[int, list[list[str]]] | None = None
    for node in state.nodes:
        ip = node.primary_ip
        if ip is None:
            problems.append(f"node {node.name}: no InternalIP; cannot find its namespace")
            continue
        holders = netns_holding(str(ip), netns_dir, names)
        if len(holders) > 1 and manifests:
            if processes is None:
                processes = _cmdlines_by_netns()
            holders = [h for h in holders if any(
                _runs_daemon_for(argv, manifests, node.name)
                for argv in processes.get(_inode(os.path.join(netns_dir, h)), []))]
        if len(holders) != 1:
            problems.append(f"node {node.name}: {len(holders)} namespaces hold {ip} "
                            f"({', '.join(holders) or 'none'}); skipped")
            continue
        targets.append(NodeTarget(node.name, holders[0],
                                  conf_dir_template.replace("{node}", node.name)))
    return targets, problems


def speaker_sockets(targets: Sequence[NodeTarget], netns_dir: str = NETNS_DIR
                    ) -> dict[str, str]:
    """Node name -> the API socket of the skein-speaker running for it inside its
    namespace (its `--api-socket`, else the speaker's default), from /proc."""
    from speaker.api.server import DEFAULT_SOCKET

    processes = _cmdlines_by_netns()
    out: dict[str, str] = {}
    for target in targets:
        if target.netns is None:
            continue
        for argv in processes.get(_inode(os.path.join(netns_dir, target.netns)), []):
            if not any(os.path.basename(a) == "skein-speaker" or a.endswith("speaker.main")
                       for a in argv[:3]) or _flag(argv, "--node") != target.name:
                continue
            path = _flag(argv, "--api-socket") or DEFAULT_SOCKET
            if path not in ("", "none"):
                out[target.name] = path
    return out
