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

from cni_plugin.netns import entered_fd
from speaker.model.calico import DEFAULT_NAME
from speaker.model.cluster import ClusterState, ModelObject, expand_document, parse_object
from speaker.model.errors import ModelError
from speaker.status.collect import NETNS_DIR, NodeTarget

CALICO_SOURCE = "Calico BGPConfiguration default, serviceClusterIPs"


def manifest_state(path: str) -> ClusterState:
    """The objects of a manifests file (bad documents skipped, as the daemons do)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    objects: list[ModelObject] = []
    for doc in docs:
        for item in expand_document(doc):
            try:
                obj = parse_object(item)
            except ModelError:
                continue
            if obj is not None:
                objects.append(obj)
    return ClusterState.from_objects(objects)


def service_cidrs(state: ClusterState) -> tuple[tuple[str, ...], str]:
    """(CIDRs, where they came from) or ((), "unknown")."""
    for conf in state.bgp_configurations:
        if conf.name == DEFAULT_NAME and conf.service_cluster_ips:
            return tuple(str(c) for c in conf.service_cluster_ips), CALICO_SOURCE
    return (), "unknown"


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


def lab_targets(state: ClusterState, conf_dir_template: str,
                netns_dir: str = NETNS_DIR) -> tuple[list[NodeTarget], list[str]]:
    """(one target per Node whose InternalIP exactly one namespace holds, problems).
    `conf_dir_template` may name the node as `{node}`."""
    targets, problems = [], []
    names = sorted(os.listdir(netns_dir)) if os.path.isdir(netns_dir) else []
    for node in state.nodes:
        ip = node.primary_ip
        if ip is None:
            problems.append(f"node {node.name}: no InternalIP; cannot find its namespace")
            continue
        holders = netns_holding(str(ip), netns_dir, names)
        if len(holders) != 1:
            problems.append(f"node {node.name}: {len(holders)} namespaces hold {ip} "
                            f"({', '.join(holders) or 'none'}); skipped")
            continue
        targets.append(NodeTarget(node.name, holders[0],
                                  conf_dir_template.replace("{node}", node.name)))
    return targets, problems
