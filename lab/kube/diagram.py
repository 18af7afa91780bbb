"""`skein-lab kube diagram FILE`: the kube lab's picture, drawn from what it holds.

The same picture `skeinctl diagram` draws (speaker/status/diagram.py), for a real
cluster: each node read from its kernel (its network namespace entered from here,
its files, pods' namespaces, CNI leases and the speaker's socket through
/proc/PID/root, as the node's own processes see them), the Services, EndpointSlices,
Pods and ServiceCIDRs from the API server (`kubectl get ... -o json`), and what only
the lab knows: its client and the routes its BIRD router holds.

With `--workload` (the default) it first makes sure there is something to see: a
namespace `skein-demo` with a web server on every node (busybox httpd, a
DaemonSet) behind two LoadBalancer Services, one from the L2 pool and one from the
BGP pool of install/examples; it waits until the client reaches both.

    skein-lab kube diagram [--workdir DIR] [--no-workload] FILE.svg|.png|.dot
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from lab.kube.cluster import (
    BGP_POOL,
    CLIENT_INDEX,
    ROUTER_INDEX,
    KubeLab,
    KubeLabError,
    host,
)
from lab.kube.workloads import HOSTNAME_SERVER, daemonset, documents, lb_service, namespace
from lab.router import ROUTER_ASN
from speaker.status.collect import NodeTarget, SpeakerLookup, collect_cluster
from speaker.status.model import Client, ClusterStatus, SpeakerState

DEMO_NAMESPACE = "skein-demo"
WORKLOAD = documents(
    namespace(DEMO_NAMESPACE),
    daemonset(DEMO_NAMESPACE, "web", HOSTNAME_SERVER),
    lb_service(DEMO_NAMESPACE, "web-l2", "l2-pool", "web"),
    lb_service(DEMO_NAMESPACE, "web-bgp", "bgp-pool", "web"))
API_KINDS = "services,endpointslices,pods,servicecidrs"


def targets(lab: KubeLab) -> list[NodeTarget]:
    """Each node: its network namespace, and its files as its own processes see them."""
    out = []
    for spec in lab.node_specs():
        root = f"/proc/{lab.node_pid(spec)}/root"
        out.append(NodeTarget(spec.name, spec.netns, "/etc/cni/net.d", root=root,
                              pod_netns_dir=f"{root}/run/netns"))
    return out


def speakers(lab: KubeLab) -> SpeakerLookup:
    """Each node's skein-speaker on its API socket (the DaemonSet's hostPath
    /run/skein/speaker.sock, in the node's own /run)."""
    from speaker.api.client import Endpoint
    from speaker.status.speaker_state import fetch

    def lookup(target: NodeTarget) -> SpeakerState | None:
        return fetch(Endpoint(socket=f"{target.root}/run/skein/speaker.sock"), target.name)

    return lookup


def api_objects(lab: KubeLab) -> list[Any]:
    items: list[Any] = lab.kubectl_json("get", API_KINDS, "-A")["items"]
    return items


def ensure_workload(lab: KubeLab, timeout: float = 240, log: Any = print) -> dict[str, str]:
    """The demo workload applied and serving: Service name -> its LoadBalancer address,
    each reached from the client."""
    from lab.kube.status import client_connect

    lab.kubectl("apply", "-f", "-", input=WORKLOAD)
    nodes = len(lab.node_specs())
    deadline = time.monotonic() + timeout
    addresses: dict[str, str] = {}
    while True:
        pods = lab.kubectl_json("-n", DEMO_NAMESPACE, "get", "pods", "-l", "app=web")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        services = lab.kubectl_json("-n", DEMO_NAMESPACE, "get", "services")["items"]
        addresses = {s["metadata"]["name"]: ingress[0]["ip"] for s in services
                     if (ingress := s["status"].get("loadBalancer", {}).get("ingress"))}
        if (len(running) == nodes and len(addresses) == 2
                and all(client_connect(lab, ip, 80) for ip in addresses.values())):
            log(f"workload {DEMO_NAMESPACE}: {len(running)} web pods, "
                + ", ".join(f"{k} {v}" for k, v in sorted(addresses.items())))
            return addresses
        if time.monotonic() > deadline:
            raise KubeLabError(f"the {DEMO_NAMESPACE} workload is not served after "
                               f"{timeout:.0f} s ({len(running)}/{nodes} pods running, "
                               f"addresses {addresses or 'none'})")
        time.sleep(2)


def kube_status(lab: KubeLab) -> ClusterStatus:
    """The kube lab as the picture shows it."""
    from lab.status import router_routes
    from speaker.status.discover import service_cidrs_of, state_of
    from speaker.status.services import name_pods, pod_names, service_views

    docs = api_objects(lab)
    cidrs, source = service_cidrs_of(docs)
    cluster = collect_cluster(targets(lab), service_cidrs=cidrs, service_cidrs_source=source,
                              speaker=speakers(lab))
    names = pod_names(docs)
    cluster = name_pods(dataclasses.replace(
        cluster, services=service_views(state_of(docs), names)), names)
    client = Client("client (outside the cluster)", host(CLIENT_INDEX),
                    netns=lab.client_ns.name)
    router = router_routes(lab.router_ns, host(ROUTER_INDEX), f"BIRD (AS {ROUTER_ASN})")
    return dataclasses.replace(cluster, clients=(client,), router_routes=(router,))


def write(lab: KubeLab, path: str, workload: bool = True, log: Any = print) -> ClusterStatus:
    """The kube lab's picture in `path` (.svg, .png, .dot); returns what it shows."""
    from speaker.status.diagram import draw
    from speaker.status.output import write_diagram

    if lab.state is None:
        raise KubeLabError(f"no kube lab in {lab.workdir} (run `skein-lab kube up`)")
    if workload:
        ensure_workload(lab, log=log)
    cluster = kube_status(lab)
    title = (f"Skein in a Kubernetes cluster (kube lab {lab.tag}): what the kernels and "
             "the API hold")
    write_diagram(draw(cluster, title), path)
    log(f"wrote {path}  (the client reaches {BGP_POOL} through the router)")
    return cluster
